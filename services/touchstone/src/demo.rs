//! `touchstone demo` and `touchstone up --demo`: a hub of several agencies
//! with a year of believable activity (clients, complaints with their
//! lifecycles, survey responses with comments, volumes, standards),
//! created through the services' public gRPC APIs only, so every rule,
//! event and rollup applies as for any other caller.
//!
//! Deterministic and idempotent: the plan comes from a seeded generator
//! and every create carries an id or request id derived from the seed and
//! the item's index, so a re-run creates nothing twice.

mod plan;

use crate::csv_import::bearer;
use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use plan::{AgencyPlan, DAY, Form, PlannedAnswer, timestamp};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_types::StatusExt;
use touchstone_api::common::v1::Date;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_api::gateway::v1 as gpb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::kpi::v1 as kpb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::{DevKey, Role, TokenRequest};
use touchstone_platform::config::Settings;

/// How much demo data to make, and how.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoOptions {
    /// Share of the full volume to create, e.g. 0.02 for a quick test
    /// (more than 0, at most 1).
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub(crate) scale: f64,
    /// Seed of the generator: the same seed gives the same data.
    #[arg(long, default_value_t = 2026)]
    pub(crate) seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) concurrency: u16,
    /// Seconds to wait for the KPI service to count everything (0: don't wait).
    #[arg(long, default_value_t = 120)]
    pub(crate) wait_kpi: u64,
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!("{s:?} is not a number above 0 and at most 1")),
    }
}

/// The services' gRPC addresses (http://host:port).
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    pub(crate) register: String,
    pub(crate) complaints: String,
    pub(crate) feedback: String,
    pub(crate) kpi: String,
    pub(crate) gateway: String,
}

impl Targets {
    /// The addresses the services are configured to reach each other at.
    pub(crate) fn from_settings(settings: &Settings) -> Targets {
        Targets {
            register: settings.peers.register.clone(),
            complaints: settings.peers.complaints.clone(),
            feedback: settings.peers.feedback.clone(),
            kpi: settings.peers.kpi.clone(),
            gateway: settings.peers.gateway.clone(),
        }
    }
}

/// What was created (or found already there) per kind of thing.
#[derive(Debug, Default)]
struct Tally(BTreeMap<&'static str, (u64, u64)>);

impl Tally {
    fn add(&mut self, what: &'static str, done: Done) {
        let e = self.0.entry(what).or_default();
        match done {
            Done::Created => e.0 += 1,
            Done::Existing => e.1 += 1,
        }
    }

    fn add_n(&mut self, what: &'static str, created: u64, existing: u64) {
        let e = self.0.entry(what).or_default();
        e.0 += created;
        e.1 += existing;
    }

    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(what, (created, existing))| {
                if *existing == 0 {
                    format!("{created} {what}")
                } else {
                    format!("{what}: {created} new, {existing} already there")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Created,
    Existing,
}

/// A resource with an output-only creation time.
trait Made {
    fn create_time(&self) -> Option<&prost_types::Timestamp>;
}

macro_rules! made {
    ($($t:ty),*) => {
        $(impl Made for $t {
            fn create_time(&self) -> Option<&prost_types::Timestamp> {
                self.create_time.as_ref()
            }
        })*
    };
}

made!(
    gpb::Agency,
    gpb::Unit,
    gpb::PeerGroup,
    reg::Client,
    cpb::Calendar,
    cpb::Complaint,
    cpb::Issue,
    kpb::Standard,
    fpb::Volume
);

/// A call's result: made now, or already made by an earlier run (a replayed
/// request id returns a resource created before `since_ms`; the same id is
/// ALREADY_EXISTS; the same request id with a different body, from a run on
/// another day, is REQUEST_ID_REUSED), or a failure worth stopping for.
fn settle<T: Made>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    since_ms: i64,
) -> anyhow::Result<Done> {
    match r {
        Ok(made) => {
            let before = made
                .get_ref()
                .create_time()
                .is_some_and(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000) < since_ms);
            Ok(if before {
                Done::Existing
            } else {
                Done::Created
            })
        }
        Err(s) if s.code() == Code::AlreadyExists => Ok(Done::Existing),
        Err(s)
            if s.get_error_details()
                .error_info()
                .is_some_and(|i| i.reason == "REQUEST_ID_REUSED") =>
        {
            Ok(Done::Existing)
        }
        Err(s) => Err(describe(what, &s)),
    }
}

fn describe(what: &str, s: &tonic::Status) -> anyhow::Error {
    let details = s.get_error_details();
    let fields = details
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    anyhow::anyhow!("{what}: {:?}: {} {fields}", s.code(), s.message())
}

fn request<T>(message: T, auth: &MetadataValue<Ascii>) -> tonic::Request<T> {
    crate::csv_import::authorized(message, auth)
}

fn date(ms: i64) -> Date {
    let d = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms);
    Date {
        year: d.year(),
        month: i32::from(u8::from(d.month())),
        day: i32::from(d.day()),
    }
}

/// Connections to every service, and a token per agency with the roles the
/// demo's calls need.
struct Apis {
    register: RegisterServiceClient<Channel>,
    complaints: ComplaintsServiceClient<Channel>,
    feedback: FeedbackServiceClient<Channel>,
    kpi: KpiServiceClient<Channel>,
    gateway: GatewayServiceClient<Channel>,
    tokens: BTreeMap<&'static str, MetadataValue<Ascii>>,
    /// hub_admin of every agency, for the hub directory.
    hub_token: MetadataValue<Ascii>,
    /// When this run started: resources created before it were already there.
    since_ms: i64,
}

impl Apis {
    fn token(&self, agency: &str) -> &MetadataValue<Ascii> {
        &self.tokens[agency]
    }
}

/// Creates the demo hub on the services at `targets`; prints what it made
/// and how long it took.
///
/// `announce` prints the ready-made sign-in token at the end; `up --demo`
/// leaves that to its banner, so that the banner shows one token.
pub(crate) async fn run(
    settings: &Settings,
    targets: &Targets,
    options: &DemoOptions,
    announce: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if !DevKey::jwks_path(&settings.data_dir).exists() {
        bail!(
            "the demo signs its tokens with the development key that `touchstone up` keeps in \
             its data directory, and there is none in {} (setting data_dir): run it with the \
             configuration of `touchstone up`",
            settings.data_dir.display()
        );
    }
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    // The year of activity ends at the start of today (UTC), so a re-run on
    // the same day sends exactly the same requests.
    let anchor_ms = now_ms - now_ms.rem_euclid(DAY);
    let plans = plan::plan(options.seed, options.scale, anchor_ms);
    let connect = |addr: &str, what: &str| {
        let addr = addr.to_string();
        let what = what.to_string();
        async move { crate::csv_import::connect(&addr, &what).await }
    };
    let mut tokens = BTreeMap::new();
    for p in &plans {
        tokens.insert(
            p.spec.id,
            bearer(
                None,
                p.spec.id,
                settings,
                vec![Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin],
            )?,
        );
    }
    let apis = Apis {
        register: RegisterServiceClient::new(connect(&targets.register, "register").await?),
        complaints: ComplaintsServiceClient::new(
            connect(&targets.complaints, "complaints service").await?,
        ),
        feedback: FeedbackServiceClient::new(connect(&targets.feedback, "feedback service").await?)
            .max_decoding_message_size(64 << 20),
        kpi: KpiServiceClient::new(connect(&targets.kpi, "KPI service").await?),
        gateway: GatewayServiceClient::new(connect(&targets.gateway, "gateway").await?),
        tokens,
        hub_token: hub_admin(settings)?,
        since_ms: now_ms,
    };
    let concurrency = usize::from(options.concurrency);
    let clients: usize = plans.iter().map(|p| p.clients.len()).sum();
    let consents: usize = plans
        .iter()
        .flat_map(|p| &p.clients)
        .map(|c| c.consents.len())
        .sum();
    let complaints: usize = plans.iter().map(|p| p.complaints.len()).sum();
    let responses: usize = plans.iter().map(|p| p.responses.len()).sum();
    let bar = ProgressBar::new((clients + consents + complaints + responses) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} demo [{bar:40}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut tally = Tally::default();

    bar.set_message("hub directory, calendars, standards, surveys");
    set_up_hub(&apis, &plans, options.seed, &mut tally).await?;
    let mut surveys = BTreeMap::new();
    for p in &plans {
        set_up_complaints(&apis, p, anchor_ms, &mut tally).await?;
        set_up_standards(&apis, p, &mut tally).await?;
        surveys.insert(
            p.spec.id,
            set_up_surveys(&apis, p, options.seed, &mut tally).await?,
        );
    }

    bar.set_message("clients");
    create_clients(&apis, &plans, options.seed, concurrency, &bar, &mut tally).await?;

    bar.set_message("complaints and responses");
    let (complaints_done, responses_done) = tokio::join!(
        import_complaints(&apis, &plans, options.seed, concurrency, &bar),
        import_responses(&apis, &plans, &surveys, &bar),
    );
    let (c_new, c_old) = complaints_done?;
    tally.add_n("complaints", c_new, c_old);
    let (r_new, r_old, submitted) = responses_done?;
    tally.add_n("survey responses", r_new, r_old);
    let closed = close_follow_ups(&apis, &plans, &submitted, anchor_ms, concurrency).await?;
    tally.add_n("follow-ups worked", closed, 0);
    let (v_new, v_old) = record_volumes(
        &apis,
        &plans,
        &surveys,
        options.seed,
        anchor_ms,
        concurrency,
    )
    .await?;
    tally.add_n("volume records", v_new, v_old);
    for p in &plans {
        record_issues(&apis, p, &mut tally).await?;
    }
    bar.finish_and_clear();
    let seeded = started.elapsed();
    println!(
        "Demo hub: {} agencies ({}) seeded in {:.1} s: {}.",
        plans.len(),
        plans
            .iter()
            .map(|p| p.spec.id)
            .collect::<Vec<_>>()
            .join(", "),
        seeded.as_secs_f64(),
        tally.line()
    );
    if options.wait_kpi > 0 {
        let waited = Instant::now();
        match wait_for_kpi(
            &apis,
            &plans,
            anchor_ms,
            Duration::from_secs(options.wait_kpi),
        )
        .await
        {
            Ok(()) => println!(
                "The KPI service counted every complaint and response {:.1} s later.",
                waited.elapsed().as_secs_f64()
            ),
            Err(e) => println!("The KPI service has not caught up yet: {e:#}"),
        }
    }
    if !announce {
        return Ok(());
    }
    let sign_in = DevKey::load_or_create(&settings.data_dir)?.mint(&TokenRequest {
        subject: "demo-manager".into(),
        agency: Some(SIGN_IN_AGENCY.into()),
        agencies: None,
        roles: SIGN_IN_ROLES.to_vec(),
        ttl: Duration::from_secs(12 * 3600),
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
    })?;
    println!(
        "Demo token (agency \"{SIGN_IN_AGENCY}\"; roles officer, senior_officer, analyst, \
         agency_admin; 12 hours), for the dashboard's sign-in or the APIs:"
    );
    println!("  export DEMO_TOKEN={sign_in}");
    println!(
        "Other demo agencies: {}; mint their tokens with \
         `touchstone token --agency AGENCY --role analyst --role officer`.",
        plans
            .iter()
            .map(|p| p.spec.id)
            .filter(|a| *a != SIGN_IN_AGENCY)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The agency whose ready-made token the demo prints.
pub(crate) const SIGN_IN_AGENCY: &str = "passports";

/// The roles of that token: enough to see every page of the dashboard.
pub(crate) const SIGN_IN_ROLES: &[Role] = &[
    Role::Officer,
    Role::SeniorOfficer,
    Role::Analyst,
    Role::AgencyAdmin,
];

/// A hub_admin token for every agency, minted with the local development key.
fn hub_admin(settings: &Settings) -> anyhow::Result<MetadataValue<Ascii>> {
    let key = DevKey::load_or_create(&settings.data_dir)
        .context("loading the development signing key")?;
    let token = key.mint(&TokenRequest {
        subject: "touchstone-demo".into(),
        agency: None,
        agencies: Some(vec!["*".into()]),
        roles: vec![Role::HubAdmin],
        ttl: Duration::from_secs(3600),
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
    })?;
    format!("Bearer {token}")
        .parse()
        .context("the token is not valid header text")
}

/// The gateway's hub directory: the agencies with their benchmarking
/// consent, their units, and two peer groups.
async fn set_up_hub(
    apis: &Apis,
    plans: &[AgencyPlan],
    seed: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    use gpb::BenchmarkConsent as B;
    let mut gateway = apis.gateway.clone();
    for p in plans {
        let agency = p.spec.id;
        let consent = match p.spec.consent {
            plan::Consent::None => B::None,
            plan::Consent::Anonymous => B::Anonymous,
            plan::Consent::Named => B::Named,
        };
        let req = gpb::CreateAgencyRequest {
            agency_id: agency.into(),
            request_id: format!("demo-{seed}-agency-{agency}"),
            agency: Some(gpb::Agency {
                display_name: p.spec.display_name.into(),
                time_zone: p.spec.time_zone.into(),
                benchmark_consent: consent as i32,
                ..Default::default()
            }),
        };
        let done = settle(
            "CreateAgency",
            gateway.create_agency(request(req, &apis.hub_token)).await,
            apis.since_ms,
        )?;
        tally.add("agencies", done);
        for (unit, display_name) in p.spec.units {
            let req = gpb::CreateUnitRequest {
                parent: format!("agencies/{agency}"),
                unit_id: (*unit).into(),
                request_id: format!("demo-{seed}-unit-{agency}-{unit}"),
                unit: Some(gpb::Unit {
                    display_name: (*display_name).into(),
                    ..Default::default()
                }),
            };
            let done = settle(
                "CreateUnit",
                gateway.create_unit(request(req, apis.token(agency))).await,
                apis.since_ms,
            )?;
            tally.add("units", done);
        }
    }
    let everyone: Vec<&str> = plans.iter().map(|p| p.spec.id).collect();
    let groups: [(&str, &str, &[&str]); 2] = [
        ("all-agencies", "Every agency of the hub", &everyone),
        (
            "identity-and-border",
            "Identity, licensing and border services",
            &["passports", "customs", "licensing"],
        ),
    ];
    for (id, display_name, members) in groups {
        let req = gpb::CreatePeerGroupRequest {
            peer_group_id: id.into(),
            request_id: format!("demo-{seed}-peer-group-{id}"),
            peer_group: Some(gpb::PeerGroup {
                display_name: display_name.into(),
                agencies: members.iter().map(|a| format!("agencies/{a}")).collect(),
                ..Default::default()
            }),
        };
        let done = settle(
            "CreatePeerGroup",
            gateway
                .create_peer_group(request(req, &apis.hub_token))
                .await,
            apis.since_ms,
        )?;
        tally.add("peer groups", done);
    }
    Ok(())
}

/// The agency's working-day calendar (its time zone and public holidays)
/// and its complaint standard on that calendar.
async fn set_up_complaints(
    apis: &Apis,
    p: &AgencyPlan,
    anchor_ms: i64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let agency = p.spec.id;
    let this_year = date(anchor_ms).year;
    let holidays = [this_year - 1, this_year]
        .into_iter()
        .flat_map(|year| {
            p.spec.holidays.iter().map(move |(m, d)| Date {
                year,
                month: i32::from(*m),
                day: i32::from(*d),
            })
        })
        .collect();
    let calendar = cpb::CreateCalendarRequest {
        parent: format!("agencies/{agency}"),
        calendar_id: "main".into(),
        calendar: Some(cpb::Calendar {
            display_name: format!("{} working days", p.spec.display_name),
            time_zone: p.spec.time_zone.into(),
            holidays,
            close_minute: 17 * 60,
            ..Default::default()
        }),
    };
    let done = settle(
        "CreateCalendar",
        apis.complaints
            .clone()
            .create_calendar(request(calendar, apis.token(agency)))
            .await,
        apis.since_ms,
    )?;
    tally.add("calendars", done);
    let standard = cpb::UpdateComplaintStandardRequest {
        complaint_standard: Some(cpb::ComplaintStandard {
            name: format!("agencies/{agency}/complaintStandard"),
            calendar: format!("agencies/{agency}/calendars/main"),
            acknowledge_days: 2,
            frontline_days: 5,
            investigation_days: 20,
            internal_review_days: 20,
            external_review_days: 30,
            target_share: 0.9,
            senior_categories: vec!["privacy-breach".into()],
            ..Default::default()
        }),
    };
    apis.complaints
        .clone()
        .update_complaint_standard(request(standard, apis.token(agency)))
        .await
        .map_err(|s| describe("UpdateComplaintStandard", &s))?;
    Ok(())
}

/// The agency's service charter: published standards over KPI indicators.
async fn set_up_standards(apis: &Apis, p: &AgencyPlan, tally: &mut Tally) -> anyhow::Result<()> {
    use kpb::{Comparator as C, Granularity as G};
    let agency = p.spec.id;
    let standards: [(&str, &str, &str, C, f64, G); 6] = [
        (
            "acknowledged-on-time",
            "Complaints acknowledged within 2 working days",
            "acknowledged_within_standard",
            C::AtLeast,
            0.95,
            G::Quarter,
        ),
        (
            "responded-on-time",
            "Complaints answered within our published timeframes",
            "responded_within_standard",
            C::AtLeast,
            0.9,
            G::Quarter,
        ),
        (
            "satisfied",
            "Four in five clients satisfied with the service",
            "share_satisfied.a11_satisfaction",
            C::AtLeast,
            0.8,
            G::Quarter,
        ),
        (
            "nps",
            "Net Promoter Score of at least 20",
            "nps",
            C::AtLeast,
            20.0,
            G::Quarter,
        ),
        (
            "resolved-p90",
            "Nine in ten complaints resolved within 20 working days",
            "days_to_resolve_p90",
            C::AtMost,
            20.0,
            G::Quarter,
        ),
        (
            "csat-monthly",
            "Three in four clients satisfied overall, every month",
            "share_satisfied.csat",
            C::AtLeast,
            0.75,
            G::Month,
        ),
    ];
    for (id, title, indicator, comparator, target, period) in standards {
        let req = kpb::CreateStandardRequest {
            parent: format!("agencies/{agency}"),
            standard_id: id.into(),
            request_id: format!("demo-standard-{agency}-{id}"),
            standard: Some(kpb::Standard {
                display_name: title.into(),
                description: format!(
                    "{} commits to this in its service charter.",
                    p.spec.display_name
                ),
                indicator: indicator.into(),
                comparator: comparator as i32,
                target,
                period: period as i32,
                published: true,
                ..Default::default()
            }),
        };
        let done = settle(
            "CreateStandard",
            apis.kpi
                .clone()
                .create_standard(request(req, apis.token(agency)))
                .await,
            apis.since_ms,
        )?;
        tally.add("standards", done);
    }
    Ok(())
}

/// The agency's four template surveys (A-11, CSAT, NPS, CES), published;
/// found again by their touchpoint on a re-run.
async fn set_up_surveys(
    apis: &Apis,
    p: &AgencyPlan,
    seed: u64,
    tally: &mut Tally,
) -> anyhow::Result<Vec<String>> {
    let agency = p.spec.id;
    let token = apis.token(agency);
    let touchpoint = fpb::Touchpoint {
        service: p.spec.services[0].into(),
        unit: String::new(),
        channel: touchstone_api::common::v1::Channel::Web as i32,
        stage: "after-service".into(),
    };
    let listed = apis
        .feedback
        .clone()
        .list_surveys(request(
            fpb::ListSurveysRequest {
                parent: format!("agencies/{agency}"),
                page_size: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .map_err(|s| describe("ListSurveys", &s))?
        .into_inner();
    let mut existing: Vec<fpb::Survey> = listed
        .surveys
        .into_iter()
        .filter(|s| s.touchpoint.as_ref() == Some(&touchpoint) && s.previous_version.is_empty())
        .collect();
    existing.sort_by(|a, b| a.name.cmp(&b.name));
    let surveys = if existing.len() >= Form::ALL.len() {
        tally.add_n("surveys", 0, Form::ALL.len() as u64);
        let by_title = |title: &str| {
            existing
                .iter()
                .find(|s| s.title == title)
                .cloned()
                .with_context(|| format!("the demo survey {title:?} of {agency} is missing"))
        };
        vec![
            by_title("Customer experience (A-11)")?,
            by_title("Customer satisfaction")?,
            by_title("Likelihood to recommend")?,
            by_title("Customer effort")?,
        ]
    } else {
        use fpb::SurveyTemplate as T;
        let created = apis
            .feedback
            .clone()
            .create_template_surveys(request(
                fpb::CreateTemplateSurveysRequest {
                    parent: format!("agencies/{agency}"),
                    templates: vec![T::A11 as i32, T::Csat as i32, T::Nps as i32, T::Ces as i32],
                    touchpoint: Some(touchpoint),
                    request_id: format!("demo-{seed}-surveys-{agency}"),
                },
                token,
            ))
            .await
            .map_err(|s| describe("CreateTemplateSurveys", &s))?
            .into_inner();
        tally.add_n("surveys", created.surveys.len() as u64, 0);
        created.surveys
    };
    if surveys.len() != Form::ALL.len() {
        bail!(
            "{agency}: expected {} template surveys, got {}",
            Form::ALL.len(),
            surveys.len()
        );
    }
    for s in &surveys {
        if s.state != fpb::SurveyState::Published as i32 {
            apis.feedback
                .clone()
                .publish_survey(request(
                    fpb::PublishSurveyRequest {
                        name: s.name.clone(),
                        etag: String::new(),
                        request_id: format!("demo-{seed}-publish-{}", s.name.replace('/', "-")),
                    },
                    token,
                ))
                .await
                .map_err(|e| describe("PublishSurvey", &e))?;
        }
    }
    Ok(surveys.into_iter().map(|s| s.name).collect())
}

/// Every agency's register clients and their consents, `concurrency` at a time.
async fn create_clients(
    apis: &Apis,
    plans: &[AgencyPlan],
    seed: u64,
    concurrency: usize,
    bar: &ProgressBar,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let jobs = plans.iter().flat_map(|p| {
        p.clients.iter().map(move |c| {
            let agency = p.spec.id;
            let mut register = apis.register.clone();
            let token = apis.token(agency);
            async move {
                let created = settle(
                    "CreateClient",
                    register
                        .create_client(request(
                            reg::CreateClientRequest {
                                parent: format!("agencies/{agency}"),
                                client: Some(c.client.clone()),
                                client_id: c.id.clone(),
                                request_id: format!("demo-{seed}-client-{agency}-{}", c.id),
                            },
                            token,
                        ))
                        .await,
                    apis.since_ms,
                )?;
                bar.inc(1);
                for purpose in &c.consents {
                    register
                        .grant_consent(request(
                            reg::GrantConsentRequest {
                                name: format!("agencies/{agency}/clients/{}", c.id),
                                purpose: *purpose as i32,
                                source: "demo".into(),
                                request_id: format!(
                                    "demo-{seed}-consent-{agency}-{}-{}",
                                    c.id, *purpose as i32
                                ),
                            },
                            token,
                        ))
                        .await
                        .map_err(|s| describe("GrantConsent", &s))?;
                    bar.inc(1);
                }
                anyhow::Ok(created)
            }
        })
    });
    let mut results = stream::iter(jobs).buffer_unordered(concurrency);
    while let Some(done) = results.next().await {
        tally.add("clients", done?);
    }
    Ok(())
}

/// Every agency's historic complaints through ImportComplaint.
async fn import_complaints(
    apis: &Apis,
    plans: &[AgencyPlan],
    seed: u64,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let jobs = plans.iter().flat_map(|p| {
        p.complaints.iter().map(move |c| {
            let agency = p.spec.id;
            let mut complaints = apis.complaints.clone();
            let token = apis.token(agency);
            async move {
                let done = settle(
                    "ImportComplaint",
                    complaints
                        .import_complaint(request(
                            cpb::ImportComplaintRequest {
                                parent: format!("agencies/{agency}"),
                                complaint: Some(c.complaint.clone()),
                                complaint_id: c.id.clone(),
                                request_id: format!("demo-{seed}-complaint-{agency}-{}", c.id),
                                steps: c.steps.clone(),
                            },
                            token,
                        ))
                        .await,
                    apis.since_ms,
                )
                .with_context(|| format!("complaint {} of {agency}", c.id))?;
                bar.inc(1);
                anyhow::Ok(done)
            }
        })
    });
    let mut results = stream::iter(jobs).buffer_unordered(concurrency);
    let (mut created, mut existing) = (0, 0);
    while let Some(done) = results.next().await {
        match done? {
            Done::Created => created += 1,
            Done::Existing => existing += 1,
        }
    }
    Ok((created, existing))
}

/// Every agency's survey responses: one ImportResponses stream per agency,
/// all agencies at once.
async fn import_responses(
    apis: &Apis,
    plans: &[AgencyPlan],
    surveys: &BTreeMap<&'static str, Vec<String>>,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, u64, HashMap<String, i64>)> {
    let streams = plans.iter().map(|p| {
        let agency = p.spec.id;
        let names = &surveys[agency];
        let rows: Vec<fpb::ImportResponsesRequest> = p
            .responses
            .iter()
            .map(|r| fpb::ImportResponsesRequest {
                parent: names[r.form.index()].clone(),
                row_id: r.row_id.clone(),
                response: Some(fpb::Response {
                    answers: r
                        .answers
                        .iter()
                        .map(|a| match a {
                            PlannedAnswer::Score(key, score) => fpb::Answer {
                                question_key: (*key).into(),
                                score: Some(*score),
                                ..Default::default()
                            },
                            PlannedAnswer::Comment(text) => fpb::Answer {
                                question_key: "comment".into(),
                                text: text.clone(),
                                ..Default::default()
                            },
                        })
                        .collect(),
                    channel: r.channel as i32,
                    unit: r.unit.into(),
                    submit_time: Some(timestamp(r.submit_ms)),
                    transaction_id: r.row_id.clone(),
                    client: r
                        .client
                        .as_ref()
                        .map(|c| format!("agencies/{agency}/clients/{c}"))
                        .unwrap_or_default(),
                    contact_agreed: r.contact_agreed,
                    ..Default::default()
                }),
            })
            .collect();
        let mut feedback = apis.feedback.clone();
        let token = apis.token(agency).clone();
        let bar = bar.clone();
        async move {
            let counted = stream::iter(rows).inspect(move |_| bar.inc(1));
            let mut req = tonic::Request::new(counted);
            req.metadata_mut().insert("authorization", token);
            req.set_timeout(Duration::from_secs(600));
            let out = feedback
                .import_responses(req)
                .await
                .map_err(|s| describe("ImportResponses", &s))
                .with_context(|| format!("responses of {agency}"))?
                .into_inner();
            if out.rejected > 0 {
                let first = out
                    .results
                    .iter()
                    .find(|r| r.outcome == fpb::RowOutcome::Rejected as i32)
                    .map(|r| {
                        let why = r
                            .violations
                            .iter()
                            .map(|v| format!("{}: {}", v.field, v.description))
                            .collect::<Vec<_>>()
                            .join("; ");
                        format!("row {}: {why}", r.row_id)
                    })
                    .unwrap_or_default();
                bail!(
                    "{agency}: {} responses were rejected, e.g. {first}",
                    out.rejected
                );
            }
            // When each stored response was submitted, by its name.
            let submitted: Vec<(String, i64)> = out
                .results
                .iter()
                .filter_map(|r| {
                    let planned = p.responses.get(usize::try_from(r.row).ok()?)?;
                    Some((r.response.clone(), planned.submit_ms))
                })
                .collect();
            anyhow::Ok((out.created as u64, out.already_imported as u64, submitted))
        }
    });
    let mut results = stream::iter(streams).buffer_unordered(plans.len());
    let (mut created, mut existing, mut submitted) = (0, 0, HashMap::new());
    while let Some(done) = results.next().await {
        let (c, e, s) = done?;
        created += c;
        existing += e;
        submitted.extend(s);
    }
    Ok((created, existing, submitted))
}

/// Follow-ups the responses opened, dealt with as an agency would: those
/// opened by responses more than three weeks old are closed (mostly
/// resolved, some with no action) or under way, recent ones stay open.
async fn close_follow_ups(
    apis: &Apis,
    plans: &[AgencyPlan],
    submitted: &HashMap<String, i64>,
    anchor_ms: i64,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let mut jobs = Vec::new();
    for p in plans {
        let agency = p.spec.id;
        let mut page_token = String::new();
        loop {
            let page = apis
                .feedback
                .clone()
                .list_follow_ups(request(
                    fpb::ListFollowUpsRequest {
                        parent: format!("agencies/{agency}"),
                        page_size: 1000,
                        page_token: page_token.clone(),
                        filter: "status = OPEN".into(),
                        order_by: String::new(),
                    },
                    apis.token(agency),
                ))
                .await
                .map_err(|s| describe("ListFollowUps", &s))?
                .into_inner();
            for f in page.follow_ups {
                let Some(at) = submitted.get(&f.response) else {
                    continue;
                };
                if anchor_ms - at < 21 * DAY {
                    continue;
                }
                // One in ten is still being worked on (the client was
                // contacted), one in eight could not be reached (closed
                // with no action).
                let status = if at % 10 == 0 {
                    fpb::FollowUpStatus::Contacted
                } else if at % 8 == 1 {
                    fpb::FollowUpStatus::NoAction
                } else {
                    fpb::FollowUpStatus::Resolved
                };
                let req = fpb::UpdateFollowUpRequest {
                    request_id: format!("demo-close-{}", f.name.replace('/', "-")),
                    follow_up: Some(fpb::FollowUp {
                        name: f.name,
                        status: status as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["status".into()],
                    }),
                };
                let mut feedback = apis.feedback.clone();
                let token = apis.token(agency);
                jobs.push(async move {
                    feedback
                        .update_follow_up(request(req, token))
                        .await
                        .map_err(|s| describe("UpdateFollowUp", &s))
                });
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    let mut results = stream::iter(jobs).buffer_unordered(concurrency);
    let mut closed = 0;
    while let Some(done) = results.next().await {
        done?;
        closed += 1;
    }
    Ok(closed)
}

/// The learning register: systemic issues found across the agency's
/// complaints, with the solutions recommended and where each stands.
async fn record_issues(apis: &Apis, p: &AgencyPlan, tally: &mut Tally) -> anyhow::Result<()> {
    use cpb::issue::State;
    let agency = p.spec.id;
    let issues = [
        (
            "online-uploads",
            "Online form loses uploaded documents",
            "Clients complain that documents uploaded through the online form are lost when \
             the session times out, so they have to apply again.",
            "online-service",
            "Save drafts automatically and extend the upload time-out; tell clients when an \
             upload has been received.",
            p.spec.units[p.spec.units.len() - 1].0,
            State::Actioned,
        ),
        (
            "first-response-delays",
            "Slow first response at peak times",
            "Acknowledgements and first responses run late in the weeks after public \
             holidays, when intake doubles.",
            p.spec.categories[0],
            "Roster extra staff after public holidays and send an automatic acknowledgement \
             that gives the expected timeframe.",
            p.spec.units[0].0,
            State::Open,
        ),
        (
            "plain-language-decisions",
            "Decisions not explained in plain language",
            "Complainants say decision letters do not explain why or what they can do next.",
            "staff-conduct",
            "Rewrite the decision letter templates in plain language and train staff to \
             explain review rights.",
            "quality-and-training",
            State::Closed,
        ),
    ];
    for (id, title, description, category, solution, owner, state) in issues {
        let mut complaints: Vec<String> = p
            .complaints
            .iter()
            .filter(|c| c.complaint.category == category)
            .take(5)
            .map(|c| format!("agencies/{agency}/complaints/{}", c.id))
            .collect();
        if complaints.is_empty() {
            complaints.extend(
                p.complaints
                    .iter()
                    .take(2)
                    .map(|c| format!("agencies/{agency}/complaints/{}", c.id)),
            );
        }
        let req = cpb::CreateIssueRequest {
            parent: format!("agencies/{agency}"),
            issue_id: id.into(),
            request_id: format!("demo-issue-{agency}-{id}"),
            issue: Some(cpb::Issue {
                title: title.into(),
                description: description.into(),
                complaints,
                recommended_solution: solution.into(),
                owner: owner.into(),
                state: state as i32,
                ..Default::default()
            }),
        };
        let done = settle(
            "CreateIssue",
            apis.complaints
                .clone()
                .create_issue(request(req, apis.token(agency)))
                .await,
            apis.since_ms,
        )?;
        tally.add("learning-register issues", done);
    }
    Ok(())
}

/// Customers served and offered each survey per month, consistent with the
/// responses (a response rate of 15–30%), so response rates and complaints
/// per 1,000 customers can be computed.
async fn record_volumes(
    apis: &Apis,
    plans: &[AgencyPlan],
    surveys: &BTreeMap<&'static str, Vec<String>>,
    seed: u64,
    anchor_ms: i64,
    concurrency: usize,
) -> anyhow::Result<(u64, u64)> {
    let last_day = date(anchor_ms - DAY);
    let mut jobs = Vec::new();
    for p in plans {
        let agency = p.spec.id;
        let mut months: BTreeMap<(usize, i32, i32), i64> = BTreeMap::new();
        for r in &p.responses {
            let d = date(r.submit_ms);
            *months.entry((r.form.index(), d.year, d.month)).or_default() += 1;
        }
        for ((form, year, month), responses) in months {
            // A fixed per-month rate, derived from the seed: re-runs agree.
            let mix = (seed ^ (year as u64 * 12 + month as u64) ^ ((form as u64) << 20))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let rate = 0.15 + (mix >> 40) as f64 / (1u64 << 24) as f64 * 0.15;
            let offered = (responses as f64 / rate).ceil() as i64;
            let served = (offered as f64 / 0.55).ceil() as i64;
            let month_u8 = u8::try_from(month).unwrap_or(1);
            let days_in = time::Month::try_from(month_u8)
                .map(|m| time::util::days_in_month(m, year))
                .unwrap_or(28);
            let start = Date {
                year,
                month,
                day: 1,
            };
            let end = if (year, month) == (last_day.year, last_day.month) {
                last_day
            } else {
                Date {
                    year,
                    month,
                    day: i32::from(days_in),
                }
            };
            let survey = surveys[agency][form].clone();
            let req = fpb::RecordVolumesRequest {
                parent: survey,
                request_id: format!("demo-{seed}-volume-{agency}-{form}-{year}-{month:02}"),
                volume: Some(fpb::Volume {
                    start_date: Some(start),
                    end_date: Some(end),
                    customers_served: served,
                    customers_offered: offered,
                    ..Default::default()
                }),
            };
            let mut feedback = apis.feedback.clone();
            let token = apis.token(agency);
            jobs.push(async move {
                settle(
                    "RecordVolumes",
                    feedback.record_volumes(request(req, token)).await,
                    apis.since_ms,
                )
            });
        }
    }
    let mut results = stream::iter(jobs).buffer_unordered(concurrency);
    let (mut created, mut existing) = (0, 0);
    while let Some(done) = results.next().await {
        match done? {
            Done::Created => created += 1,
            Done::Existing => existing += 1,
        }
    }
    Ok((created, existing))
}

/// Waits until the KPI service's rollups count every demo complaint and
/// response (it follows the change feeds in the background).
///
/// Figures come whole years at a time (the grid of periods), and a year the
/// KPI service withholds (the demo's first days of a year may be too few
/// for the hub's k) says nothing: those years are skipped, and a published
/// year must count at least the demo's records dated in it. Records within a
/// day of New Year are left out of the expectation, as an agency's local
/// date may fall in the other year.
async fn wait_for_kpi(
    apis: &Apis,
    plans: &[AgencyPlan],
    anchor_ms: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let first = date(anchor_ms - (plan::HISTORY_DAYS + 2) * DAY);
    let last = date(anchor_ms + DAY);
    let start = Date {
        year: first.year,
        month: 1,
        day: 1,
    };
    let end = Date {
        year: last.year,
        month: 12,
        day: 31,
    };
    // Records per year, away from New Year.
    let per_year = |times: &mut dyn Iterator<Item = i64>| {
        let mut out: BTreeMap<i32, i64> = BTreeMap::new();
        for ms in times {
            let (before, after) = (date(ms - DAY), date(ms + DAY));
            if before.year == after.year {
                *out.entry(before.year).or_default() += 1;
            }
        }
        out
    };
    let mut checked = 0;
    for p in plans {
        let agency = p.spec.id;
        let complaints = per_year(
            &mut p
                .complaints
                .iter()
                .filter_map(|c| c.complaint.receive_time.as_ref().map(|t| t.seconds * 1000)),
        );
        let responses = per_year(&mut p.responses.iter().map(|r| r.submit_ms));
        for (indicator, want) in [
            ("complaints_received", complaints),
            ("response_rate", responses),
        ] {
            loop {
                let series = apis
                    .kpi
                    .clone()
                    .query_indicator(request(
                        kpb::QueryIndicatorRequest {
                            agency: format!("agencies/{agency}"),
                            indicator: indicator.into(),
                            start_date: Some(start),
                            end_date: Some(end),
                            granularity: kpb::Granularity::Year as i32,
                            ..Default::default()
                        },
                        apis.token(agency),
                    ))
                    .await
                    .map_err(|s| describe("QueryIndicator", &s))?
                    .into_inner()
                    .series;
                let mut short = Vec::new();
                let mut published = 0;
                for pt in series.iter().flat_map(|s| &s.points) {
                    let (Some(v), Some(d)) = (pt.value.as_ref(), pt.start_date.as_ref()) else {
                        continue;
                    };
                    if v.suppressed {
                        continue;
                    }
                    published += 1;
                    let w = want.get(&d.year).copied().unwrap_or(0);
                    if v.n < w {
                        short.push(format!("{}: {} of {w}", d.year, v.n));
                    }
                }
                if short.is_empty() && published > 0 {
                    checked += 1;
                    break;
                }
                // Every year withheld (too few records for the hub's k): there
                // is nothing to compare. Once other figures have been seen
                // complete, the KPI service is following the feeds: go on.
                if published == 0 && checked > 0 {
                    println!("{agency}: {indicator} is withheld in every year; not checked.");
                    break;
                }
                if Instant::now() >= deadline {
                    if published == 0 {
                        bail!("{agency}: every year of {indicator} is withheld after {limit:?}");
                    }
                    bail!(
                        "{agency}: {indicator} counts {} after {limit:?}",
                        short.join(", ")
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}
