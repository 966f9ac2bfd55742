//! The kpi service through its real gRPC API on 127.0.0.1:0 over a fresh
//! database (SQLite, or PostgreSQL when TOUCHSTONE_TEST_PG_URL is set), fed
//! by fake change feeds of hand-built events. Every indicator is checked
//! against a recomputation from the raw events written here, independently
//! of the service's own code path.

#![allow(
    clippy::clone_on_copy,
    clippy::type_complexity,
    clippy::too_many_arguments
)]

// The kpi service fed by the real producers over gRPC; a module of this
// one test binary per crate.
mod producers;

// The attacker of DESIGN §7: every query, then linear algebra and bounds
// over the published figures against each withheld one.
mod attacker;

use prost::Name;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use touchstone_api::common::v1::{Date, Event};
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::kpi::v1 as pb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_api::register::v1 as reg;
use touchstone_auth::{AuthConfig, DevKey, Role, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_kpi::feeds::{self, ComplaintsHandler, FeedbackHandler};
use touchstone_platform::consumer::{
    self, BoxFuture, ConsumeError, EventPage, FeedSource, Handler,
};
use touchstone_platform::db::{Db, Scope, Tx};
use touchstone_platform::testing::{self, TestDb};

// ---------------------------------------------------------------- harness

struct Harness {
    dev: Arc<DevKey>,
    _dir: tempfile::TempDir,
    store: TestDb,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Harness {
    async fn start(min_count: u64) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Arc::new(DevKey::load_or_create(dir.path()).expect("dev key"));
        let verifier = Verifier::from_jwks_json(
            AuthConfig {
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
                jwks_file: None,
                jwks_url: None,
                leeway_secs: 0,
            },
            &dev.jwks_json(),
        )
        .expect("verifier");
        let store = testing::fresh(&touchstone_kpi::migration_sets()).await;
        let keys = MasterKey::generate();
        let routes = touchstone_kpi::routes(store.db.clone(), keys, verifier, min_count);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let db = store.db.clone();
        let readiness: touchstone_server::Readiness = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        });
        let mut opts =
            touchstone_server::ServeOptions::new("kpi", vec![touchstone_kpi::SERVICE_NAME]);
        opts.shutdown_grace = Duration::from_millis(200);
        tokio::spawn(async move {
            touchstone_server::serve(listener, routes, opts, readiness, async move {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Harness {
            dev,
            _dir: dir,
            store,
            addr,
            stop: Some(stop),
        }
    }

    fn db(&self) -> &Db {
        &self.store.db
    }

    async fn client(&self) -> KpiServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        KpiServiceClient::new(channel)
    }

    fn token(&self, agency: &str, roles: &[Role]) -> String {
        self.mint(Some(agency), None, roles)
    }

    fn mint(&self, agency: Option<&str>, agencies: Option<Vec<String>>, roles: &[Role]) -> String {
        self.dev
            .mint(&TokenRequest {
                subject: "tester".into(),
                agency: agency.map(str::to_string),
                agencies,
                roles: roles.to_vec(),
                ttl: Duration::from_secs(600),
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
            })
            .expect("mint")
    }

    async fn feed(&self, complaints: &VecFeed, feedback: &VecFeed) {
        feeds::catch_up_complaints(self.db(), complaints)
            .await
            .expect("complaints feed");
        feeds::catch_up_feedback(self.db(), feedback)
            .await
            .expect("feedback feed");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

fn violations(s: &Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

const ANALYST: &[Role] = &[Role::Analyst];
const ADMIN: &[Role] = &[Role::AgencyAdmin];

fn date(y: i32, m: i32, d: i32) -> Date {
    Date {
        year: y,
        month: m,
        day: d,
    }
}

/// A change feed held in memory, served page by page after a sequence.
#[derive(Debug, Default, Clone)]
struct VecFeed {
    events: Vec<Event>,
    /// Largest page served (0: as many as asked for).
    page: usize,
}

impl FeedSource for VecFeed {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        let page: Vec<Event> = self
            .events
            .iter()
            .filter(|e| e.sequence > after)
            .take(if self.page > 0 {
                self.page
            } else {
                limit.max(1) as usize
            })
            .cloned()
            .collect();
        Box::pin(async move { Ok(page.into()) })
    }
}

/// A producer that sends every event of a page twice and resends the event
/// the consumer's position names. (It does not resend events from before
/// that: a feed's positions are opaque, and on PostgreSQL an event after the
/// position may carry a lower sequence than it, so a consumer cannot tell an
/// old event from a new one by its sequence; the producers never do this.)
#[derive(Debug, Clone)]
struct StutteringFeed(VecFeed);

impl FeedSource for StutteringFeed {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        let from = (after - 1).max(0);
        let page: Vec<Event> = self
            .0
            .events
            .iter()
            .filter(|e| e.sequence > from)
            .take(7)
            .flat_map(|e| [e.clone(), e.clone()])
            .collect();
        let _ = limit;
        Box::pin(async move { Ok(page.into()) })
    }
}

impl VecFeed {
    fn push<M: prost::Message + Name>(&mut self, agency: &str, name: &str, m: &M) {
        let sequence = self.events.len() as i64 + 1;
        self.events.push(Event {
            sequence,
            agency: agency.into(),
            r#type: M::full_name(),
            name: name.into(),
            occurred_time: None,
            payload: Some(prost_types::Any::from_msg(m).expect("any")),
        });
    }
}

/// A small deterministic generator (no dependency on rand's versions).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent as i64
    }
}

fn add_days(d: &Date, days: i64) -> Date {
    let t = time::Date::from_calendar_date(
        d.year,
        time::Month::try_from(d.month as u8).expect("month"),
        d.day as u8,
    )
    .expect("date")
        + time::Duration::days(days);
    date(t.year(), u8::from(t.month()) as i32, t.day() as i32)
}

fn random_day(rng: &mut Lcg) -> Date {
    add_days(&date(2026, 1, 1), rng.below(90))
}

const UNITS: [&str; 2] = ["north", "south"];

fn complaint_facts(
    id: &str,
    unit: &str,
    channel: i32,
    stage: i32,
    day: &Date,
) -> cpb::ComplaintFacts {
    cpb::ComplaintFacts {
        complaint: format!("agencies/a1/complaints/{id}"),
        unit: unit.into(),
        channel,
        category: "delay".into(),
        severity: 2,
        service: "passports".into(),
        receive_time: None,
        stage,
        event_time: None,
        event_date: Some(day.clone()),
    }
}

/// Complaint events of agency `agency`, in an order where steps of one
/// complaint follow its receipt but complaints interleave, so that some
/// steps arrive after later-dated events of others.
fn complaint_events(feed: &mut VecFeed, agency: &str, n: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let mut pending: Vec<Vec<(String, Box<dyn Fn(&mut VecFeed)>)>> = Vec::new();
    for i in 0..n {
        let id = format!("c{seed}-{i}");
        let unit = UNITS[rng.below(2) as usize].to_string();
        let channel = 1 + rng.below(3) as i32;
        let received = random_day(&mut rng);
        let name = format!("agencies/{agency}/complaints/{id}");
        let mut steps: Vec<(String, Box<dyn Fn(&mut VecFeed)>)> = Vec::new();
        let f = complaint_facts(&id, &unit, channel, 1, &received);
        let a = agency.to_string();
        let nm = name.clone();
        steps.push((
            nm.clone(),
            Box::new(move |feed: &mut VecFeed| {
                feed.push(
                    &a,
                    &nm,
                    &cpb::ComplaintReceived {
                        facts: Some(f.clone()),
                        senior_queue: false,
                    },
                )
            }),
        ));
        if rng.chance(90) {
            let day = add_days(&received, rng.below(5));
            let within = rng.chance(70);
            let f = complaint_facts(&id, &unit, channel, 1, &day);
            let (a, nm) = (agency.to_string(), name.clone());
            steps.push((
                nm.clone(),
                Box::new(move |feed: &mut VecFeed| {
                    feed.push(
                        &a,
                        &nm,
                        &cpb::ComplaintAcknowledged {
                            facts: Some(f.clone()),
                            working_days: 1,
                            within_standard: within,
                        },
                    )
                }),
            ));
        }
        let mut stage = 1;
        let mut at = received.clone();
        if rng.chance(30) {
            at = add_days(&at, rng.below(10));
            let f = complaint_facts(&id, &unit, channel, 2, &at);
            let (a, nm) = (agency.to_string(), name.clone());
            steps.push((
                nm.clone(),
                Box::new(move |feed: &mut VecFeed| {
                    feed.push(
                        &a,
                        &nm,
                        &cpb::ComplaintStageChanged {
                            facts: Some(f.clone()),
                            from_stage: 1,
                            referral_body: String::new(),
                        },
                    )
                }),
            ));
            stage = 2;
        }
        let rounds = if rng.chance(80) {
            if rng.chance(20) { 2 } else { 1 }
        } else {
            0
        };
        for round in 0..rounds {
            if round == 1 {
                at = add_days(&at, rng.below(6));
                let f = complaint_facts(&id, &unit, channel, stage, &at);
                let (a, nm) = (agency.to_string(), name.clone());
                steps.push((
                    nm.clone(),
                    Box::new(move |feed: &mut VecFeed| {
                        feed.push(
                            &a,
                            &nm,
                            &cpb::ComplaintReopened {
                                facts: Some(f.clone()),
                            },
                        )
                    }),
                ));
            }
            at = add_days(&at, rng.below(25));
            let f = complaint_facts(&id, &unit, channel, stage, &at);
            let within = rng.chance(60);
            let total = 1 + rng.below(40) as i32;
            let outcome = 1 + rng.below(5) as i32;
            let (a, nm) = (agency.to_string(), name.clone());
            steps.push((
                nm.clone(),
                Box::new(move |feed: &mut VecFeed| {
                    feed.push(
                        &a,
                        &nm,
                        &cpb::ComplaintResolved {
                            facts: Some(f.clone()),
                            outcome,
                            remedies: vec![],
                            stages: vec![],
                            working_days: total,
                            within_standard: within,
                            total_working_days: total,
                            root_causes: vec![],
                        },
                    )
                }),
            ));
        }
        steps.reverse();
        pending.push(steps);
    }
    // Interleave: take the next step of a random complaint until all are out.
    while !pending.is_empty() {
        let i = rng.below(pending.len() as u64) as usize;
        if let Some((_, step)) = pending[i].pop() {
            step(feed);
        }
        if pending[i].is_empty() {
            pending.swap_remove(i);
        }
    }
}

fn feedback_events(feed: &mut VecFeed, agency: &str, n: usize, seed: u64) {
    let mut rng = Lcg(seed);
    for i in 0..n {
        let day = random_day(&mut rng);
        let segment = if rng.chance(30) {
            None
        } else {
            Some(reg::Characteristics {
                age_band: 1 + rng.below(8) as i32,
                gender: 1 + rng.below(2) as i32,
                disability: 1 + rng.below(2) as i32,
                first_nations: 0,
                culturally_linguistically_diverse: 0,
                remote_location: 1 + rng.below(2) as i32,
            })
        };
        // Respondents with a disability are made less satisfied, for the equity test.
        let unhappy = segment.as_ref().is_some_and(|s| s.disability == 1);
        let sat = if unhappy {
            1 + rng.below(4)
        } else {
            2 + rng.below(4)
        } as i32;
        let mut scores = vec![
            fpb::ItemScore {
                item: 1,
                score: sat,
            },
            fpb::ItemScore {
                item: 8,
                score: rng.below(11) as i32,
            },
        ];
        if rng.chance(50) {
            scores.push(fpb::ItemScore {
                item: 10,
                score: 1 + rng.below(7) as i32,
            });
            scores.push(fpb::ItemScore {
                item: 9,
                score: 1 + rng.below(5) as i32,
            });
        }
        for item in 2..=7 {
            if rng.chance(40) {
                scores.push(fpb::ItemScore {
                    item,
                    score: 1 + rng.below(5) as i32,
                });
            }
        }
        let unit = UNITS[rng.below(2) as usize];
        let m = fpb::ResponseSubmitted {
            survey: format!("agencies/{agency}/surveys/s1"),
            response: format!("agencies/{agency}/surveys/s1/responses/r{i}"),
            touchpoint: Some(fpb::Touchpoint {
                service: "passports".into(),
                unit: unit.into(),
                channel: 1,
                stage: String::new(),
            }),
            unit: unit.into(),
            channel: 1 + rng.below(3) as i32,
            day: Some(day),
            submit_time: None,
            scores,
            segment,
            anonymous: false,
            sentiment: None,
            topics: vec![],
        };
        feed.push(agency, &m.response.clone(), &m);
    }
    // Monthly volumes per unit; the first one is corrected afterwards.
    for (month, last) in [(1, 31), (2, 28), (3, 31)] {
        for unit in UNITS {
            let v = fpb::VolumesRecorded {
                survey: format!("agencies/{agency}/surveys/s1"),
                volume: format!("agencies/{agency}/volumes/{unit}-{month}"),
                touchpoint: Some(fpb::Touchpoint {
                    service: "passports".into(),
                    unit: unit.into(),
                    channel: 1,
                    stage: String::new(),
                }),
                start_date: Some(date(2026, month, 1)),
                end_date: Some(date(2026, month, last)),
                customers_served: 10_000 + rng.below(5000),
                customers_offered: 900 + rng.below(400),
            };
            feed.push(agency, &v.volume.clone(), &v);
        }
    }
    let correction = fpb::VolumesRecorded {
        survey: format!("agencies/{agency}/surveys/s1"),
        volume: format!("agencies/{agency}/volumes/north-1"),
        touchpoint: Some(fpb::Touchpoint {
            service: "passports".into(),
            unit: "north".into(),
            channel: 1,
            stage: String::new(),
        }),
        start_date: Some(date(2026, 1, 1)),
        end_date: Some(date(2026, 1, 31)),
        customers_served: 12_345,
        customers_offered: 1_001,
    };
    feed.push(agency, &correction.volume.clone(), &correction);
    for i in 0..120 {
        let opened = random_day(&mut rng);
        let due = add_days(&opened, 5);
        let unit = UNITS[rng.below(2) as usize];
        let name = format!("agencies/{agency}/followUps/f{i}");
        feed.push(
            agency,
            &name,
            &fpb::FollowUpOpened {
                follow_up: name.clone(),
                survey: format!("agencies/{agency}/surveys/s1"),
                unit: unit.into(),
                channel: 2,
                due_date: Some(due),
            },
        );
        // Some due dates are moved (earlier or later) while open, or
        // after the follow-up closed, when the change must not count.
        let moved = rng.chance(30).then(|| add_days(&opened, rng.below(9)));
        let closing = rng.chance(85);
        let moved_after_close = rng.chance(20);
        if let Some(due) = moved.clone().filter(|_| !(closing && moved_after_close)) {
            feed.push(
                agency,
                &name,
                &fpb::FollowUpDueDateChanged {
                    follow_up: name.clone(),
                    survey: format!("agencies/{agency}/surveys/s1"),
                    unit: unit.into(),
                    channel: 2,
                    due_date: Some(due),
                    previous_due_date: None,
                },
            );
        }
        if closing {
            let closed = add_days(&opened, rng.below(9));
            let t = time::Date::from_calendar_date(
                closed.year,
                time::Month::try_from(closed.month as u8).expect("m"),
                closed.day as u8,
            )
            .expect("date")
            .with_hms(12, 0, 0)
            .expect("time")
            .assume_utc()
            .unix_timestamp();
            feed.push(
                agency,
                &name,
                &fpb::FollowUpClosed {
                    follow_up: name.clone(),
                    survey: format!("agencies/{agency}/surveys/s1"),
                    status: 3,
                    unit: unit.into(),
                    channel: 2,
                    open_time: None,
                    close_time: Some(prost_types::Timestamp {
                        seconds: t,
                        nanos: 0,
                    }),
                },
            );
            if let Some(due) = moved.filter(|_| moved_after_close) {
                feed.push(
                    agency,
                    &name,
                    &fpb::FollowUpDueDateChanged {
                        follow_up: name.clone(),
                        survey: format!("agencies/{agency}/surveys/s1"),
                        unit: unit.into(),
                        channel: 2,
                        due_date: Some(due),
                        previous_due_date: None,
                    },
                );
            }
        }
    }
}

// ------------------------------------------- independent recomputation

/// Raw observations per month (yyyymm), for one unit or all.
#[derive(Debug, Default)]
struct Truth {
    scores: HashMap<(i32, i64), Vec<i64>>,
    responses: HashMap<i64, i64>,
    offered: HashMap<i64, i64>,
    served: HashMap<i64, i64>,
    received: HashMap<i64, i64>,
    acks: HashMap<i64, Vec<bool>>,
    resolutions: HashMap<i64, Vec<(i32, bool, i64, i32)>>,
    escalation: HashMap<i64, Vec<bool>>,
    reopen: HashMap<i64, Vec<bool>>,
    follow_ups: HashMap<i64, Vec<bool>>,
}

fn month(d: &Date) -> i64 {
    i64::from(d.year) * 100 + i64::from(d.month)
}

fn truth(complaints: &VecFeed, feedback: &VecFeed, agency: &str, unit: Option<&str>) -> Truth {
    let mut t = Truth::default();
    let keep = |u: &str| unit.is_none_or(|x| x == u);
    let mut volumes: BTreeMap<String, fpb::VolumesRecorded> = BTreeMap::new();
    let mut due: HashMap<String, (Date, String)> = HashMap::new();
    for e in feedback.events.iter().filter(|e| e.agency == agency) {
        let any = e.payload.as_ref().expect("payload");
        match e.r#type.rsplit('.').next().unwrap_or_default() {
            "ResponseSubmitted" => {
                let r: fpb::ResponseSubmitted = any.to_msg().expect("decode");
                if !keep(&r.unit) {
                    continue;
                }
                let m = month(r.day.as_ref().expect("day"));
                *t.responses.entry(m).or_default() += 1;
                for s in &r.scores {
                    t.scores
                        .entry((s.item, m))
                        .or_default()
                        .push(i64::from(s.score));
                }
            }
            "VolumesRecorded" => {
                let v: fpb::VolumesRecorded = any.to_msg().expect("decode");
                volumes.insert(v.volume.clone(), v);
            }
            "FollowUpOpened" => {
                let f: fpb::FollowUpOpened = any.to_msg().expect("decode");
                due.insert(f.follow_up.clone(), (f.due_date.expect("due"), f.unit));
            }
            "FollowUpDueDateChanged" => {
                let f: fpb::FollowUpDueDateChanged = any.to_msg().expect("decode");
                if let Some(open) = due.get_mut(&f.follow_up) {
                    open.0 = f.due_date.expect("due");
                }
            }
            "FollowUpClosed" => {
                let f: fpb::FollowUpClosed = any.to_msg().expect("decode");
                let Some((d, u)) = due.remove(&f.follow_up) else {
                    continue;
                };
                if !keep(&u) {
                    continue;
                }
                let t_close =
                    time::OffsetDateTime::from_unix_timestamp(f.close_time.expect("t").seconds)
                        .expect("ts")
                        .date();
                let closed = date(
                    t_close.year(),
                    u8::from(t_close.month()) as i32,
                    t_close.day() as i32,
                );
                let on_time = (closed.year, closed.month, closed.day) <= (d.year, d.month, d.day);
                t.follow_ups
                    .entry(month(&closed))
                    .or_default()
                    .push(on_time);
            }
            _ => {}
        }
    }
    for v in volumes.values() {
        let tp = v.touchpoint.as_ref().expect("touchpoint");
        if !keep(&tp.unit) {
            continue;
        }
        let m = month(v.start_date.as_ref().expect("start"));
        *t.offered.entry(m).or_default() += v.customers_offered;
        *t.served.entry(m).or_default() += v.customers_served;
    }
    // Complaints: cohorts by receipt and by first resolution.
    let mut receipt: HashMap<String, (i64, bool)> = HashMap::new();
    let mut first_resolution: HashMap<String, (i64, bool)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut resolved_order: Vec<String> = Vec::new();
    for e in complaints.events.iter().filter(|e| e.agency == agency) {
        let any = e.payload.as_ref().expect("payload");
        let kind = e.r#type.rsplit('.').next().unwrap_or_default();
        let facts = |f: Option<cpb::ComplaintFacts>| f.expect("facts");
        match kind {
            "ComplaintReceived" => {
                let c: cpb::ComplaintReceived = any.to_msg().expect("decode");
                let f = facts(c.facts);
                if !keep(&f.unit) {
                    continue;
                }
                let m = month(f.event_date.as_ref().expect("date"));
                *t.received.entry(m).or_default() += 1;
                receipt.insert(f.complaint.clone(), (m, false));
                order.push(f.complaint);
            }
            "ComplaintAcknowledged" => {
                let c: cpb::ComplaintAcknowledged = any.to_msg().expect("decode");
                let f = facts(c.facts);
                if keep(&f.unit) {
                    t.acks
                        .entry(month(f.event_date.as_ref().expect("date")))
                        .or_default()
                        .push(c.within_standard);
                }
            }
            "ComplaintStageChanged" => {
                let c: cpb::ComplaintStageChanged = any.to_msg().expect("decode");
                let f = facts(c.facts);
                if f.stage > c.from_stage
                    && let Some(r) = receipt.get_mut(&f.complaint)
                {
                    r.1 = true;
                }
            }
            "ComplaintResolved" => {
                let c: cpb::ComplaintResolved = any.to_msg().expect("decode");
                let f = facts(c.facts);
                if !keep(&f.unit) {
                    continue;
                }
                let m = month(f.event_date.as_ref().expect("date"));
                t.resolutions.entry(m).or_default().push((
                    f.stage,
                    c.within_standard,
                    i64::from(c.total_working_days),
                    c.outcome,
                ));
                if !first_resolution.contains_key(&f.complaint) {
                    first_resolution.insert(f.complaint.clone(), (m, false));
                    resolved_order.push(f.complaint);
                }
            }
            "ComplaintReopened" => {
                let c: cpb::ComplaintReopened = any.to_msg().expect("decode");
                let f = facts(c.facts);
                if let Some(r) = first_resolution.get_mut(&f.complaint) {
                    r.1 = true;
                }
            }
            _ => {}
        }
    }
    for c in order {
        let (m, esc) = receipt[&c];
        t.escalation.entry(m).or_default().push(esc);
    }
    for c in resolved_order {
        let (m, re) = first_resolution[&c];
        t.reopen.entry(m).or_default().push(re);
    }
    t
}

fn share(v: Option<&Vec<bool>>) -> (i64, Option<f64>) {
    let v = v.cloned().unwrap_or_default();
    let n = v.len() as i64;
    let x = v.iter().filter(|b| **b).count() as f64;
    (n, (n > 0).then(|| x / n as f64))
}

fn nearest_rank(mut v: Vec<i64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1] as f64)
}

/// The expected (n, value) of `indicator` in month `m`, computed by hand.
fn expected(t: &Truth, indicator: &str, m: i64) -> (i64, Option<f64>) {
    let items: HashMap<&str, i32> = [
        ("a11_satisfaction", 1),
        ("a11_trust", 2),
        ("a11_effectiveness", 3),
        ("a11_ease", 4),
        ("a11_efficiency", 5),
        ("a11_equity", 6),
        ("a11_employee_helpfulness", 7),
        ("nps", 8),
        ("csat", 9),
        ("ces", 10),
    ]
    .into_iter()
    .collect();
    let scores = |item: i32| t.scores.get(&(item, m)).cloned().unwrap_or_default();
    let mean = |v: Vec<i64>| {
        let n = v.len() as i64;
        (n, (n > 0).then(|| v.iter().sum::<i64>() as f64 / n as f64))
    };
    let resolutions = t.resolutions.get(&m).cloned().unwrap_or_default();
    if let Some(key) = indicator.strip_prefix("share_satisfied.") {
        let v = scores(items[key]);
        let flags: Vec<bool> = v.iter().map(|s| *s >= 4).collect();
        return share(Some(&flags));
    }
    if let Some(key) = indicator.strip_prefix("mean_score.") {
        return mean(scores(items[key]));
    }
    if let Some(stage) = indicator.strip_prefix("responded_within_standard.") {
        let s = [
            "frontline",
            "investigation",
            "internal_review",
            "external_review",
        ]
        .iter()
        .position(|x| *x == stage)
        .expect("stage") as i32
            + 1;
        let flags: Vec<bool> = resolutions
            .iter()
            .filter(|r| r.0 == s)
            .map(|r| r.1)
            .collect();
        return share(Some(&flags));
    }
    match indicator {
        "nps" => {
            let v = scores(8);
            let n = v.len() as i64;
            let p = v.iter().filter(|s| **s >= 9).count() as f64;
            let d = v.iter().filter(|s| **s <= 6).count() as f64;
            (n, (n > 0).then(|| 100.0 * (p - d) / n as f64))
        }
        "ces" => mean(scores(10)),
        "response_rate" => {
            let x = t.responses.get(&m).copied().unwrap_or(0);
            let n = t.offered.get(&m).copied().unwrap_or(0);
            (x, (n > 0 && x > 0).then(|| x as f64 / n as f64))
        }
        "follow_ups_closed_on_time" => share(t.follow_ups.get(&m)),
        "complaints_received" => {
            let n = t.received.get(&m).copied().unwrap_or(0);
            (n, (n > 0).then_some(n as f64))
        }
        "complaints_per_1000_served" => {
            let x = t.received.get(&m).copied().unwrap_or(0);
            let n = t.served.get(&m).copied().unwrap_or(0);
            (x, (n > 0 && x > 0).then(|| 1000.0 * x as f64 / n as f64))
        }
        "acknowledged_within_standard" => share(t.acks.get(&m)),
        "responded_within_standard" => {
            let flags: Vec<bool> = resolutions.iter().map(|r| r.1).collect();
            share(Some(&flags))
        }
        "days_to_resolve_median" | "days_to_resolve_p90" => {
            let q = if indicator.ends_with("median") {
                0.5
            } else {
                0.9
            };
            let v: Vec<i64> = resolutions.iter().map(|r| r.2).collect();
            (v.len() as i64, nearest_rank(v, q))
        }
        "share_upheld" => {
            let flags: Vec<bool> = resolutions.iter().map(|r| r.3 == 1 || r.3 == 2).collect();
            share(Some(&flags))
        }
        "escalation_rate" => share(t.escalation.get(&m)),
        "reopen_rate" => share(t.reopen.get(&m)),
        other => panic!("no recomputation for {other}"),
    }
}

async fn query(
    c: &mut KpiServiceClient<Channel>,
    token: &str,
    agency: &str,
    indicator: &str,
    start: Date,
    end: Date,
    granularity: pb::Granularity,
    group_by: pb::Dimension,
    unit: &str,
) -> Result<pb::QueryIndicatorResponse, Status> {
    c.query_indicator(req(
        pb::QueryIndicatorRequest {
            agency: format!("agencies/{agency}"),
            indicator: indicator.into(),
            start_date: Some(start),
            end_date: Some(end),
            granularity: granularity as i32,
            group_by: group_by as i32,
            scope: Some(pb::Scope {
                service: String::new(),
                unit: unit.into(),
                channel: 0,
            }),
        },
        token,
    ))
    .await
    .map(|r| r.into_inner())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Every value of every indicator of every month, whole agency and one unit.
async fn snapshot(
    h: &Harness,
    agency: &str,
) -> Vec<(String, String, i64, Option<f64>, Option<f64>)> {
    let mut c = h.client().await;
    let token = h.token(agency, ANALYST);
    let list = c
        .list_indicators(req(pb::ListIndicatorsRequest {}, &token))
        .await
        .expect("catalogue")
        .into_inner()
        .indicators;
    let mut out = Vec::new();
    for i in &list {
        for unit in ["", "north"] {
            let r = query(
                &mut c,
                &token,
                agency,
                &i.id,
                date(2026, 1, 1),
                date(2026, 5, 31),
                pb::Granularity::Month,
                pb::Dimension::Unspecified,
                unit,
            )
            .await
            .expect("query");
            for s in r.series {
                for p in s.points {
                    let v = p.value.expect("value");
                    out.push((
                        format!("{}/{unit}", i.id),
                        format!("{:?}", p.start_date),
                        v.n,
                        v.value,
                        v.lower,
                    ));
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn every_indicator_matches_a_recomputation_from_raw_events() {
    let h = Harness::start(1).await;
    let (mut complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    complaint_events(&mut complaints, "a1", 400, 7);
    complaint_events(&mut complaints, "a2", 50, 8);
    feedback_events(&mut feedback, "a1", 1500, 9);
    feedback_events(&mut feedback, "a2", 100, 10);
    h.feed(&complaints, &feedback).await;

    let mut c = h.client().await;
    let token = h.token("a1", ANALYST);
    let catalogue = c
        .list_indicators(req(pb::ListIndicatorsRequest {}, &token))
        .await
        .expect("catalogue")
        .into_inner()
        .indicators;
    assert!(catalogue.len() >= 30);
    let mut checked = 0;
    for unit in [None, Some("north")] {
        let t = truth(&complaints, &feedback, "a1", unit);
        for indicator in &catalogue {
            let r = query(
                &mut c,
                &token,
                "a1",
                &indicator.id,
                date(2026, 1, 1),
                date(2026, 5, 31),
                pb::Granularity::Month,
                pb::Dimension::Unspecified,
                unit.unwrap_or(""),
            )
            .await
            .expect("query");
            assert_eq!(r.series.len(), 1);
            let points = &r.series[0].points;
            assert_eq!(points.len(), 5, "{}", indicator.id);
            for p in points {
                let start = p.start_date.as_ref().expect("start");
                let (n, value) = expected(&t, &indicator.id, month(start));
                let got = p.value.as_ref().expect("value");
                assert_eq!(
                    got.n, n,
                    "{} n in {}-{} unit {unit:?}",
                    indicator.id, start.year, start.month
                );
                match (got.value, value) {
                    (Some(a), Some(b)) => assert!(
                        close(a, b),
                        "{} {a} vs {b} in {}-{} unit {unit:?}",
                        indicator.id,
                        start.year,
                        start.month
                    ),
                    (None, None) => {}
                    (a, b) => panic!(
                        "{}: {a:?} vs {b:?} in {}-{} unit {unit:?}",
                        indicator.id, start.year, start.month
                    ),
                }
                if let (Some(v), Some(lo), Some(hi)) = (got.value, got.lower, got.upper) {
                    assert!(
                        lo <= v + 1e-9 && v <= hi + 1e-9,
                        "{}: interval",
                        indicator.id
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 300);
    // Shares carry their Wilson interval, computed from the published counts.
    let r = query(
        &mut c,
        &token,
        "a1",
        "share_satisfied.a11_satisfaction",
        date(2026, 1, 1),
        date(2026, 1, 31),
        pb::Granularity::Unspecified,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect("query");
    let v = r.series[0].points[0].value.clone().expect("value");
    let w = touchstone_stats::wilson(
        v.numerator.expect("x") as u64,
        v.denominator.expect("n") as u64,
    )
    .expect("wilson");
    assert!(close(v.lower.expect("lower"), w.low) && close(v.upper.expect("upper"), w.high));
    // The other agency's figures are its own.
    let t2 = truth(&complaints, &feedback, "a2", None);
    let r = query(
        &mut c,
        &h.token("a2", ANALYST),
        "a2",
        "complaints_received",
        date(2026, 1, 1),
        date(2026, 1, 31),
        pb::Granularity::Month,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect("query");
    assert_eq!(
        r.series[0].points[0].value.as_ref().expect("v").n,
        expected(&t2, "complaints_received", 202601).0
    );
    // Split by unit: the groups add up to the whole for counts.
    let r = query(
        &mut c,
        &token,
        "a1",
        "complaints_received",
        date(2026, 1, 1),
        date(2026, 3, 31),
        pb::Granularity::Quarter,
        pb::Dimension::Unit,
        "",
    )
    .await
    .expect("query");
    let groups: Vec<&str> = r.series.iter().map(|s| s.group.as_str()).collect();
    assert_eq!(groups, vec!["north", "south"]);
    let sum: i64 = r
        .series
        .iter()
        .map(|s| s.points[0].value.as_ref().expect("v").n)
        .sum();
    let t = truth(&complaints, &feedback, "a1", None);
    let whole: i64 = [202601, 202602, 202603]
        .iter()
        .map(|m| t.received.get(m).copied().unwrap_or(0))
        .sum();
    assert_eq!(sum, whole);

    // A range with partial months at both ends, by unit: whole months come
    // from the monthly sums, the ends from the days; the same counts as the
    // days alone.
    for indicator in ["complaints_received", "acknowledged_within_standard"] {
        let by = |granularity| {
            let mut c = c.clone();
            let token = token.clone();
            async move {
                let r = query(
                    &mut c,
                    &token,
                    "a1",
                    indicator,
                    date(2026, 1, 1),
                    date(2026, 3, 31),
                    granularity,
                    pb::Dimension::Unit,
                    "",
                )
                .await
                .expect("query");
                let mut n: BTreeMap<(String, i32, i32), i64> = BTreeMap::new();
                for s in &r.series {
                    for p in &s.points {
                        let d = p.start_date.as_ref().expect("start");
                        *n.entry((s.group.clone(), d.year, d.month)).or_default() +=
                            p.value.as_ref().map_or(0, |v| v.n);
                    }
                }
                n
            }
        };
        let months = by(pb::Granularity::Month).await;
        assert_eq!(months, by(pb::Granularity::Day).await, "{indicator}");
        assert_eq!(months.len(), 6, "{indicator}: 2 units x 3 months");
        assert!(months.values().all(|n| *n > 0), "{indicator}: {months:?}");
    }
}

/// A handler that fails after applying the effect of every `every`-th
/// event, before the transaction commits.
struct Flaky<H> {
    inner: H,
    calls: AtomicUsize,
    every: usize,
    /// Whole runs through the handler's own `apply_run` (as the consumer
    /// drives it), or one event at a time through `apply`.
    batched: bool,
}

impl<H: Handler> Handler for Flaky<H> {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), ConsumeError>> {
        Box::pin(async move {
            self.inner.apply(tx, event).await?;
            if self.calls.fetch_add(1, Ordering::SeqCst) % self.every == self.every - 1 {
                return Err(ConsumeError::Source(tonic::Status::unavailable(
                    "crash between effect and commit",
                )));
            }
            Ok(())
        })
    }

    fn apply_run<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<consumer::Skipped>, ConsumeError>> {
        Box::pin(async move {
            if !self.batched {
                return consumer::Handler::apply_run(&PerEvent(self), tx, events).await;
            }
            let skipped = self.inner.apply_run(tx, events).await?;
            let before = self.calls.fetch_add(events.len(), Ordering::SeqCst);
            if (before + events.len()) / self.every > before / self.every {
                return Err(ConsumeError::Source(tonic::Status::unavailable(
                    "crash between effect and commit",
                )));
            }
            Ok(skipped)
        })
    }
}

/// A handler seen only through its one-event `apply`, so that the
/// platform's default `apply_run` drives it.
struct PerEvent<'h, H>(&'h H);

impl<H: Handler> Handler for PerEvent<'_, H> {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), ConsumeError>> {
        self.0.apply(tx, event)
    }
}

async fn consume_through_failures<H: Handler>(
    db: &Db,
    feed: &'static str,
    source: &VecFeed,
    handler: &Flaky<H>,
) {
    // Small pages, so that every page can get through between two failures.
    let source = &VecFeed {
        events: source.events.clone(),
        page: 10,
    };
    let mut failures = 0;
    loop {
        match consumer::catch_up(db, feed, source, handler).await {
            Ok(_) => break,
            Err(ConsumeError::Source(_)) => failures += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(failures < 10_000, "never caught up");
    }
    assert!(failures > 0, "the failure was never injected");
}

async fn rollup_rows(
    h: &Harness,
) -> Vec<(String, String, i64, String, String, i64, String, i64, i64)> {
    // Every rollup table, with the columns a coarser one lacks left empty.
    let tables = [
        "SELECT 'cells', measure, day, service, unit, channel, segment, value, count FROM kpi_cells",
        "SELECT 'unit days', measure, day, service, unit, channel, '', value, count FROM kpi_unit_days",
        "SELECT 'unit months', measure, day, service, unit, channel, '', value, count FROM kpi_unit_months",
        "SELECT 'totals', measure, day, '', '', 0, '', value, count FROM kpi_day_totals",
    ];
    let mut out = Vec::new();
    for agency in ["a1", "a2"] {
        let mut tx = h.db().read(Scope::Agency(agency)).await.expect("tx");
        for select in tables {
            let sql =
                format!("{select} WHERE agency = $1 AND count <> 0 ORDER BY 2, 3, 4, 5, 6, 7, 8");
            let rows: Vec<(String, String, i64, String, String, i64, String, i64, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(agency)
                    .fetch_all(tx.conn())
                    .await
                    .expect("rows");
            out.extend(rows);
        }
        tx.commit().await.expect("commit");
    }
    out
}

#[tokio::test]
async fn exactly_once_across_crashes_duplicates_and_rebuild() {
    let (mut complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    complaint_events(&mut complaints, "a1", 150, 21);
    complaint_events(&mut complaints, "a2", 40, 22);
    feedback_events(&mut feedback, "a1", 400, 23);
    feedback_events(&mut feedback, "a2", 60, 24);

    // Reference: a clean run.
    let clean = Harness::start(1).await;
    clean.feed(&complaints, &feedback).await;
    let reference = snapshot(&clean, "a1").await;
    let reference_rows = rollup_rows(&clean).await;
    assert!(!reference_rows.is_empty());

    // A consumer that crashes between effect and commit, again and again:
    // one event at a time, then whole runs at once.
    for batched in [false, true] {
        let crashy = Harness::start(1).await;
        let c = Flaky {
            inner: ComplaintsHandler,
            calls: AtomicUsize::new(0),
            every: 37,
            batched,
        };
        let f = Flaky {
            inner: FeedbackHandler,
            calls: AtomicUsize::new(0),
            every: 53,
            batched,
        };
        consume_through_failures(crashy.db(), feeds::COMPLAINTS_FEED, &complaints, &c).await;
        consume_through_failures(crashy.db(), feeds::FEEDBACK_FEED, &feedback, &f).await;
        assert_eq!(
            snapshot(&crashy, "a1").await,
            reference,
            "batched {batched}"
        );
        assert_eq!(
            rollup_rows(&crashy).await,
            reference_rows,
            "batched {batched}"
        );
    }

    // A malformed event in the middle of a page is skipped; its neighbours
    // in the same run still count once.
    let poisoned = Harness::start(1).await;
    let mut with_poison = feedback.clone();
    let at = with_poison.events.len() / 2;
    let mut poison = with_poison.events[at].clone();
    if let Some(p) = poison.payload.as_mut() {
        p.value = vec![0xff, 0xff, 0xff];
    }
    with_poison.events.insert(at, poison);
    for (i, e) in with_poison.events.iter_mut().enumerate() {
        e.sequence = i as i64 + 1;
    }
    poisoned.feed(&complaints, &with_poison).await;
    assert_eq!(
        consumer::cursor(poisoned.db(), feeds::FEEDBACK_FEED)
            .await
            .expect("cursor"),
        with_poison.events.len() as i64
    );
    assert_eq!(rollup_rows(&poisoned).await, reference_rows);

    // A producer that resends events: each still counts once.
    let stutter = Harness::start(1).await;
    feeds::catch_up_complaints(stutter.db(), &StutteringFeed(complaints.clone()))
        .await
        .expect("complaints");
    feeds::catch_up_feedback(stutter.db(), &StutteringFeed(feedback.clone()))
        .await
        .expect("feedback");
    assert_eq!(rollup_rows(&stutter).await, reference_rows);
    // Catching up again when there is nothing new changes nothing.
    stutter.feed(&complaints, &feedback).await;
    assert_eq!(rollup_rows(&stutter).await, reference_rows);

    // A rebuild from the start gives the same numbers as incremental consumption.
    let (nc, nf) = feeds::rebuild(poisoned.db(), &complaints, &feedback)
        .await
        .expect("rebuild");
    assert_eq!(
        (nc as usize, nf as usize),
        (complaints.events.len(), feedback.events.len())
    );
    assert_eq!(rollup_rows(&poisoned).await, reference_rows);
    assert_eq!(snapshot(&poisoned, "a1").await, reference);
}

#[tokio::test]
async fn late_events_land_in_their_own_period() {
    let h = Harness::start(1).await;
    let (mut complaints, feedback) = (VecFeed::default(), VecFeed::default());
    let oct = date(2026, 10, 20);
    let f = |id: &str, d: &Date| complaint_facts(id, "north", 1, 1, d);
    complaints.push(
        "a1",
        "c1",
        &cpb::ComplaintReceived {
            facts: Some(f("late", &oct)),
            senior_queue: false,
        },
    );
    // November business arrives first...
    for i in 0..3 {
        let nov = date(2026, 11, 3 + i);
        let id = format!("nov{i}");
        complaints.push(
            "a1",
            &id,
            &cpb::ComplaintReceived {
                facts: Some(f(&id, &nov)),
                senior_queue: false,
            },
        );
        complaints.push(
            "a1",
            &id,
            &cpb::ComplaintResolved {
                facts: Some(f(&id, &nov)),
                outcome: 3,
                total_working_days: 2,
                within_standard: true,
                ..Default::default()
            },
        );
    }
    h.feed(&complaints, &feedback).await;
    // ...then, in December, the October resolution is recorded with its own date.
    complaints.push(
        "a1",
        "late",
        &cpb::ComplaintResolved {
            facts: Some(f("late", &date(2026, 10, 30))),
            outcome: 1,
            total_working_days: 8,
            within_standard: false,
            ..Default::default()
        },
    );
    h.feed(&complaints, &feedback).await;

    let mut c = h.client().await;
    let token = h.token("a1", ANALYST);
    let r = query(
        &mut c,
        &token,
        "a1",
        "share_upheld",
        date(2026, 10, 1),
        date(2026, 11, 30),
        pb::Granularity::Month,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect("query");
    let points = &r.series[0].points;
    let oct_v = points[0].value.as_ref().expect("oct");
    let nov_v = points[1].value.as_ref().expect("nov");
    assert_eq!((oct_v.n, oct_v.value), (1, Some(1.0)));
    assert_eq!((nov_v.n, nov_v.value), (3, Some(0.0)));
    let r = query(
        &mut c,
        &token,
        "a1",
        "days_to_resolve_median",
        date(2026, 10, 1),
        date(2026, 10, 31),
        pb::Granularity::Month,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect("query");
    assert_eq!(
        r.series[0].points[0].value.as_ref().expect("v").value,
        Some(8.0)
    );
}

#[tokio::test]
async fn a_moved_due_date_decides_whether_a_follow_up_closed_on_time() {
    // Twelve follow-ups opened on 2 November 2026, due on the 9th, all
    // closed on the 6th; four had their due date moved to the 4th first, so
    // they closed late: 8 of 12 on time (not 12 of 12).
    let h = Harness::start(1).await;
    let (complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    let noon_6th = time::macros::datetime!(2026-11-06 12:00 UTC).unix_timestamp();
    for i in 0..12 {
        let name = format!("agencies/a1/followUps/f{i}");
        let common = |due| fpb::FollowUpDueDateChanged {
            follow_up: name.clone(),
            survey: "agencies/a1/surveys/s1".into(),
            unit: "north".into(),
            channel: 2,
            due_date: Some(due),
            previous_due_date: None,
        };
        let opened = common(date(2026, 11, 9));
        feedback.push(
            "a1",
            &name,
            &fpb::FollowUpOpened {
                follow_up: opened.follow_up,
                survey: opened.survey,
                unit: opened.unit,
                channel: opened.channel,
                due_date: opened.due_date,
            },
        );
        if i % 3 == 0 {
            feedback.push("a1", &name, &common(date(2026, 11, 4)));
        }
        feedback.push(
            "a1",
            &name,
            &fpb::FollowUpClosed {
                follow_up: name.clone(),
                survey: "agencies/a1/surveys/s1".into(),
                status: 3,
                unit: "north".into(),
                channel: 2,
                open_time: None,
                close_time: Some(prost_types::Timestamp {
                    seconds: noon_6th,
                    nanos: 0,
                }),
            },
        );
        // A change after the close is too late to matter.
        feedback.push("a1", &name, &common(date(2026, 11, 1)));
    }
    h.feed(&complaints, &feedback).await;
    let mut c = h.client().await;
    let on_time = |r: pb::QueryIndicatorResponse| {
        let v = r.series[0].points[0].value.clone().expect("value");
        (v.numerator, v.denominator)
    };
    let ask = |c: &mut KpiServiceClient<Channel>| {
        let mut c = c.clone();
        let token = h.token("a1", ANALYST);
        async move {
            query(
                &mut c,
                &token,
                "a1",
                "follow_ups_closed_on_time",
                date(2026, 11, 1),
                date(2026, 11, 30),
                pb::Granularity::Month,
                pb::Dimension::Unspecified,
                "",
            )
            .await
            .expect("query")
        }
    };
    assert_eq!(on_time(ask(&mut c).await), (Some(8), Some(12)));
    // Rebuilt from the feeds: the same.
    feeds::rebuild(h.db(), &complaints, &feedback)
        .await
        .expect("rebuild");
    assert_eq!(on_time(ask(&mut c).await), (Some(8), Some(12)));
}

fn response(
    agency: &str,
    i: usize,
    day: Date,
    sat: i32,
    disability: i32,
) -> fpb::ResponseSubmitted {
    fpb::ResponseSubmitted {
        response: format!("agencies/{agency}/surveys/s/responses/{i}"),
        unit: "north".into(),
        channel: 1,
        day: Some(day),
        scores: vec![
            fpb::ItemScore {
                item: 1,
                score: sat,
            },
            fpb::ItemScore {
                item: 8,
                score: if sat >= 4 { 10 } else { 3 },
            },
        ],
        segment: Some(reg::Characteristics {
            disability,
            age_band: 3,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn suppression_significance_and_equity_on_constructed_data() {
    let h = Harness::start(10).await;
    let (complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    let mut i = 0;
    let mut add =
        |feed: &mut VecFeed, day: Date, satisfied: usize, total: usize, disability: i32| {
            for k in 0..total {
                i += 1;
                let sat = if k < satisfied { 5 } else { 2 };
                feed.push("a1", "r", &response("a1", i, day.clone(), sat, disability));
            }
        };
    add(&mut feedback, date(2026, 1, 10), 50, 100, 2); // January: 50%
    add(&mut feedback, date(2026, 2, 10), 80, 100, 2); // February: 80% (a real change)
    add(&mut feedback, date(2026, 3, 10), 79, 100, 2); // March: 79% (no real change)
    add(&mut feedback, date(2026, 4, 10), 9, 9, 2); // April: 9 answers, below k
    // May: the whole is 70%, respondents with a disability 40%.
    add(&mut feedback, date(2026, 5, 10), 16, 40, 1);
    add(&mut feedback, date(2026, 5, 11), 89, 110, 2);
    // June: 20 answers, so that the second quarter has a month smaller than
    // May to withhold beside April (else May would go with it).
    add(&mut feedback, date(2026, 6, 10), 10, 20, 2);
    h.feed(&complaints, &feedback).await;

    let mut c = h.client().await;
    let token = h.token("a1", ANALYST);
    let r = query(
        &mut c,
        &token,
        "a1",
        "share_satisfied.a11_satisfaction",
        date(2026, 1, 1),
        date(2026, 4, 30),
        pb::Granularity::Month,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect("query");
    assert_eq!(r.min_count, 10);
    let p = &r.series[0].points;
    assert!(
        !p[0].significant_change && p[0].p_value.is_none(),
        "nothing before January"
    );
    assert!(p[1].significant_change, "50% to 80% of 100 is significant");
    assert!(!p[2].significant_change && p[2].p_value.is_some_and(|v| v > 0.5));
    let april = p[3].value.as_ref().expect("april");
    assert!(april.suppressed);
    // Withheld: no value, interval or count of any kind (not even n).
    assert_eq!(
        (april.n, april.value, april.lower, april.numerator),
        (0, None, None, None)
    );
    assert!(!p[3].significant_change);
    // NPS too carries its test: 50 and 80 promoters per 100, the rest detractors.
    let r = query(
        &mut c,
        &token,
        "a1",
        "nps",
        date(2026, 2, 1),
        date(2026, 2, 28),
        pb::Granularity::Month,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect("query");
    let feb = &r.series[0].points[0];
    assert!(close(
        feb.value.as_ref().expect("v").value.expect("nps"),
        60.0
    ));
    assert!(feb.significant_change);
    let se = ((0.8 + 0.2 - 0.36_f64) / 100.0).sqrt() * 100.0;
    assert!(close(
        feb.value.as_ref().expect("v").upper.expect("upper"),
        60.0 + touchstone_stats::Z95 * se
    ));

    // Equity: disability gap in May.
    let e = c
        .get_equity_report(req(
            pb::GetEquityReportRequest {
                agency: "agencies/a1".into(),
                indicator: "share_satisfied.a11_satisfaction".into(),
                start_date: Some(date(2026, 5, 1)),
                end_date: Some(date(2026, 5, 31)),
                dimension: pb::Dimension::Disability as i32,
                scope: None,
            },
            &token,
        ))
        .await
        .expect("equity")
        .into_inner();
    let whole = e.whole.expect("whole");
    assert_eq!((whole.n, whole.value), (150, Some(0.7)));
    let yes = e
        .segments
        .iter()
        .find(|s| s.segment == "ANSWER_YES")
        .expect("yes");
    let no = e
        .segments
        .iter()
        .find(|s| s.segment == "ANSWER_NO")
        .expect("no");
    assert_eq!(yes.value.as_ref().expect("v").value, Some(0.4));
    assert!(close(yes.gap.expect("gap"), -0.3));
    assert!(yes.significant && no.significant);
    // Splitting a complaints indicator by a characteristic is refused, naming the field.
    let err = c
        .get_equity_report(req(
            pb::GetEquityReportRequest {
                agency: "agencies/a1".into(),
                indicator: "complaints_received".into(),
                start_date: Some(date(2026, 5, 1)),
                end_date: Some(date(2026, 5, 31)),
                dimension: pb::Dimension::AgeBand as i32,
                scope: None,
            },
            &token,
        ))
        .await
        .expect_err("not segmentable");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["dimension"]);
}

#[tokio::test]
async fn standards_charter_roles_and_validation() {
    let h = Harness::start(10).await;
    let (mut complaints, feedback) = (VecFeed::default(), VecFeed::default());
    for i in 0..20 {
        let id = format!("k{i}");
        let d = date(2026, 7, 1 + i);
        let f = complaint_facts(&id, "north", 1, 1, &d);
        complaints.push(
            "a1",
            &id,
            &cpb::ComplaintReceived {
                facts: Some(f.clone()),
                senior_queue: false,
            },
        );
        complaints.push(
            "a1",
            &id,
            &cpb::ComplaintAcknowledged {
                facts: Some(f),
                working_days: 1,
                within_standard: i < 18,
            },
        );
    }
    h.feed(&complaints, &feedback).await;
    let mut c = h.client().await;
    let admin = h.token("a1", ADMIN);
    let analyst = h.token("a1", ANALYST);
    let standard = |name: &str, indicator: &str, target: f64, published: bool| pb::Standard {
        display_name: name.into(),
        indicator: indicator.into(),
        comparator: pb::Comparator::AtLeast as i32,
        target,
        period: pb::Granularity::Quarter as i32,
        published,
        ..Default::default()
    };
    let create = |s: pb::Standard, id: &str, request_id: &str| pb::CreateStandardRequest {
        parent: "agencies/a1".into(),
        standard: Some(s),
        standard_id: id.into(),
        request_id: request_id.into(),
    };
    // Analysts read, they do not manage standards.
    let err = c
        .create_standard(req(
            create(
                standard("Ack", "acknowledged_within_standard", 0.85, true),
                "ack",
                "r0",
            ),
            &analyst,
        ))
        .await
        .expect_err("analyst");
    assert_eq!(err.code(), Code::PermissionDenied);
    let ack = c
        .create_standard(req(
            create(
                standard("Ack", "acknowledged_within_standard", 0.85, true),
                "ack",
                "r1",
            ),
            &admin,
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(ack.name, "agencies/a1/standards/ack");
    // A retry with the same request id returns the first response.
    let again = c
        .create_standard(req(
            create(
                standard("Ack", "acknowledged_within_standard", 0.85, true),
                "ack",
                "r1",
            ),
            &admin,
        ))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, ack);
    c.create_standard(req(
        create(
            standard("Strict", "acknowledged_within_standard", 0.95, true),
            "strict",
            "r2",
        ),
        &admin,
    ))
    .await
    .expect("create");
    c.create_standard(req(
        create(standard("NPS", "nps", 30.0, true), "nps", "r3"),
        &admin,
    ))
    .await
    .expect("create");
    c.create_standard(req(
        create(
            standard("Internal", "complaints_received", 1.0, false),
            "internal",
            "r4",
        ),
        &admin,
    ))
    .await
    .expect("create");
    // Bad input names the field.
    let mut bad = standard("", "no_such_indicator", f64::NAN, true);
    bad.period = pb::Granularity::Day as i32;
    let err = c
        .create_standard(req(create(bad, "bad", "r5"), &admin))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "standard.comparator",
            "standard.display_name",
            "standard.indicator",
            "standard.period",
            "standard.target"
        ]
        .into_iter()
        .filter(|f| *f != "standard.comparator")
        .collect::<Vec<_>>()
    );
    // Update with a stale etag is refused; with the current one it works.
    let mut changed = ack.clone();
    changed.target = 0.8;
    changed.etag = "999".into();
    let err = c
        .update_standard(req(
            pb::UpdateStandardRequest {
                standard: Some(changed.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["target".into()],
                }),
                request_id: "u1".into(),
            },
            &admin,
        ))
        .await
        .expect_err("stale");
    assert_eq!(err.code(), Code::Aborted);
    changed.etag = ack.etag.clone();
    let updated = c
        .update_standard(req(
            pb::UpdateStandardRequest {
                standard: Some(changed),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["target".into()],
                }),
                request_id: "u2".into(),
            },
            &admin,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        (updated.target, updated.display_name.as_str()),
        (0.8, "Ack")
    );
    assert_ne!(updated.etag, ack.etag);

    let report = c
        .get_charter_report(req(
            pb::GetCharterReportRequest {
                agency: "agencies/a1".into(),
                period: pb::Granularity::Quarter as i32,
                date: Some(date(2026, 8, 15)),
            },
            &analyst,
        ))
        .await
        .expect("charter")
        .into_inner();
    assert_eq!(report.start_date, Some(date(2026, 7, 1)));
    assert_eq!(report.end_date, Some(date(2026, 9, 30)));
    let verdicts: Vec<(String, i32)> = report
        .lines
        .iter()
        .map(|l| (l.standard.as_ref().expect("s").name.clone(), l.verdict))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (
                "agencies/a1/standards/ack".to_string(),
                pb::Verdict::Met as i32
            ),
            (
                "agencies/a1/standards/nps".to_string(),
                pb::Verdict::InsufficientData as i32
            ),
            (
                "agencies/a1/standards/strict".to_string(),
                pb::Verdict::NotMet as i32
            ),
        ]
    );
    assert_eq!(report.lines[0].value.as_ref().expect("v").value, Some(0.9));

    // Tenancy: another agency's analyst cannot read a1, nor its standards.
    let other = h.token("a2", ANALYST);
    let err = c
        .get_charter_report(req(
            pb::GetCharterReportRequest {
                agency: "agencies/a1".into(),
                period: pb::Granularity::Quarter as i32,
                date: Some(date(2026, 8, 15)),
            },
            &other,
        ))
        .await
        .expect_err("other agency");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .get_standard(req(
            pb::GetStandardRequest {
                name: "agencies/a1/standards/ack".into(),
            },
            &other,
        ))
        .await
        .expect_err("other agency");
    assert_eq!(err.code(), Code::NotFound);
    let listed = c
        .list_standards(req(
            pb::ListStandardsRequest {
                parent: "agencies/a1".into(),
                page_size: 2,
                ..Default::default()
            },
            &analyst,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.standards.len(), 2);
    let rest = c
        .list_standards(req(
            pb::ListStandardsRequest {
                parent: "agencies/a1".into(),
                page_size: 2,
                page_token: listed.next_page_token.clone(),
                ..Default::default()
            },
            &analyst,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(rest.standards.len(), 2);
    assert!(rest.next_page_token.is_empty());
    // Filtered and ordered; a page token serves only the query it came from.
    let list = |filter: &str, order_by: &str, page_size: i32, page_token: &str| {
        req(
            pb::ListStandardsRequest {
                parent: "agencies/a1".into(),
                page_size,
                page_token: page_token.into(),
                filter: filter.into(),
                order_by: order_by.into(),
            },
            &analyst,
        )
    };
    let acks = c
        .list_standards(list(
            r#"indicator = "acknowledged_within_standard" AND period = QUARTER"#,
            "display_name desc",
            1,
            "",
        ))
        .await
        .expect("filtered")
        .into_inner();
    let names: Vec<&str> = acks
        .standards
        .iter()
        .map(|s| s.display_name.as_str())
        .collect();
    assert_eq!(names, vec!["Strict"]);
    let second = c
        .list_standards(list(
            r#"indicator = "acknowledged_within_standard" AND period = QUARTER"#,
            "display_name desc",
            1,
            &acks.next_page_token,
        ))
        .await
        .expect("second page")
        .into_inner();
    let names: Vec<&str> = second
        .standards
        .iter()
        .map(|s| s.display_name.as_str())
        .collect();
    assert_eq!(names, vec!["Ack"]);
    for (filter, order_by, token, field) in [
        ("", "", acks.next_page_token.as_str(), "page_token"),
        ("target > 1", "", "", "filter"),
        ("period = DAY", "", "", "filter"),
        ("", "target", "", "order_by"),
        ("", "", "after:ack", "page_token"),
    ] {
        let err = c
            .list_standards(list(filter, order_by, 0, token))
            .await
            .expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{filter} {order_by}");
        assert_eq!(
            violations(&err),
            vec![field.to_string()],
            "{filter} {order_by}"
        );
    }
    assert_eq!(
        c.list_standards(list("", "", -1, ""))
            .await
            .expect_err("negative page size")
            .code(),
        Code::InvalidArgument
    );
    c.delete_standard(req(
        pb::DeleteStandardRequest {
            name: "agencies/a1/standards/internal".into(),
            etag: String::new(),
        },
        &admin,
    ))
    .await
    .expect("delete");

    // Query validation names the field.
    for (r, field) in [
        (
            pb::QueryIndicatorRequest {
                agency: "agencies/a1".into(),
                indicator: "nope".into(),
                start_date: Some(date(2026, 1, 1)),
                end_date: Some(date(2026, 1, 2)),
                ..Default::default()
            },
            "indicator",
        ),
        (
            pb::QueryIndicatorRequest {
                agency: "agencies/a1".into(),
                indicator: "nps".into(),
                start_date: Some(date(2026, 2, 30)),
                end_date: Some(date(2026, 3, 2)),
                ..Default::default()
            },
            "start_date",
        ),
        (
            // Before the common era: `time` takes it, google.type.Date does not.
            pb::QueryIndicatorRequest {
                agency: "agencies/a1".into(),
                indicator: "nps".into(),
                start_date: Some(date(-1, 1, 1)),
                end_date: Some(date(2026, 1, 2)),
                ..Default::default()
            },
            "start_date",
        ),
        (
            // A NUL in a scope: refused by the shared codec, on the field's path.
            pb::QueryIndicatorRequest {
                agency: "agencies/a1".into(),
                indicator: "nps".into(),
                start_date: Some(date(2026, 1, 1)),
                end_date: Some(date(2026, 1, 2)),
                scope: Some(pb::Scope {
                    service: "pass\0ports".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "scope.service",
        ),
        (
            pb::QueryIndicatorRequest {
                agency: "agencies/a1".into(),
                indicator: "nps".into(),
                start_date: Some(date(2026, 3, 1)),
                end_date: Some(date(2026, 1, 2)),
                ..Default::default()
            },
            "end_date",
        ),
        (
            pb::QueryIndicatorRequest {
                agency: "agencies/a1".into(),
                indicator: "nps".into(),
                start_date: Some(date(2020, 1, 1)),
                end_date: Some(date(2026, 1, 2)),
                granularity: pb::Granularity::Day as i32,
                ..Default::default()
            },
            "granularity",
        ),
        (
            pb::QueryIndicatorRequest {
                agency: "a1".into(),
                indicator: "nps".into(),
                start_date: Some(date(2026, 1, 1)),
                end_date: Some(date(2026, 1, 2)),
                ..Default::default()
            },
            "agency",
        ),
    ] {
        let err = c.query_indicator(req(r, &analyst)).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violations(&err), vec![field.to_string()]);
    }
    // Officers do not read KPIs.
    let err = query(
        &mut c,
        &h.token("a1", &[Role::Officer]),
        "a1",
        "nps",
        date(2026, 1, 1),
        date(2026, 1, 2),
        pb::Granularity::Unspecified,
        pb::Dimension::Unspecified,
        "",
    )
    .await
    .expect_err("officer");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn hub_reads_one_indicator_across_agencies() {
    let h = Harness::start(10).await;
    let (mut complaints, feedback) = (VecFeed::default(), VecFeed::default());
    complaint_events(&mut complaints, "a1", 200, 31);
    complaint_events(&mut complaints, "a2", 5, 32);
    h.feed(&complaints, &feedback).await;
    let mut c = h.client().await;
    let request = pb::QueryIndicatorAcrossAgenciesRequest {
        agencies: vec!["a1".into(), "a2".into(), "a3".into()],
        indicator: "complaints_received".into(),
        start_date: Some(date(2026, 1, 1)),
        end_date: Some(date(2026, 3, 31)),
        scope: None,
    };
    let hub = h.mint(None, Some(vec!["*".into()]), &[Role::HubAdmin]);
    let r = c
        .query_indicator_across_agencies(req(request.clone(), &hub))
        .await
        .expect("hub")
        .into_inner();
    let t = truth(&complaints, &VecFeed::default(), "a1", None);
    let n1: i64 = [202601, 202602, 202603]
        .iter()
        .map(|m| t.received.get(m).copied().unwrap_or(0))
        .sum();
    let got: Vec<(String, i64, bool)> = r
        .values
        .iter()
        .map(|v| {
            (
                v.agency.clone(),
                v.value.as_ref().expect("v").n,
                v.value.as_ref().expect("v").suppressed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a1".into(), n1, false),
            ("a2".into(), 0, true),
            ("a3".into(), 0, true)
        ]
    );
    // An analyst, even of a listed agency, may not.
    let err = c
        .query_indicator_across_agencies(req(request.clone(), &h.token("a1", ANALYST)))
        .await
        .expect_err("analyst");
    assert_eq!(err.code(), Code::PermissionDenied);
    // A hub admin limited to some agencies may not read others.
    let partial = h.mint(None, Some(vec!["a1".into()]), &[Role::HubAdmin]);
    let err = c
        .query_indicator_across_agencies(req(request, &partial))
        .await
        .expect_err("partial");
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// Issue 12, items 1 and 2: total 45/53, north 27/35, east 6/6 and south
/// 12/12. East is below k; withholding south beside it (the smallest other
/// unit) would leave a hidden remainder of 18 of 18, both cells pinned at
/// 100%. South is 100% itself, so north goes too; and no withheld cell
/// carries its count.
#[tokio::test]
async fn a_suppressed_group_cannot_be_recovered_from_the_total() {
    let h = Harness::start(10).await;
    let (complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    let mut i = 0;
    for (unit, n, satisfied) in [("north", 35, 27), ("south", 12, 12), ("east", 6, 6)] {
        for k in 0..n {
            i += 1;
            let score = if k < satisfied { 4 + (k % 2) } else { 2 };
            let mut r = response("a1", i, date(2026, 6, 1 + (k % 28)), score, 2);
            r.unit = unit.into();
            feedback.push("a1", "r", &r);
        }
    }
    h.feed(&complaints, &feedback).await;
    let mut c = h.client().await;
    let token = h.token("a1", ANALYST);
    let split = |dim| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            query(
                &mut c,
                &token,
                "a1",
                "share_satisfied.a11_satisfaction",
                date(2026, 6, 1),
                date(2026, 6, 30),
                pb::Granularity::Month,
                dim,
                "",
            )
            .await
            .expect("query")
        }
    };
    let r = split(pb::Dimension::Unit).await;
    let cells: Vec<(String, i64, bool, Option<f64>, Option<i64>)> = r
        .series
        .iter()
        .map(|s| {
            let v = s.points[0].value.as_ref().expect("value");
            (s.group.clone(), v.n, v.suppressed, v.value, v.numerator)
        })
        .collect();
    assert_eq!(
        cells,
        vec![
            ("east".to_string(), 0, true, None, None),
            ("north".to_string(), 0, true, None, None),
            ("south".to_string(), 0, true, None, None),
        ]
    );
    let whole = split(pb::Dimension::Unspecified).await;
    let v = whole.series[0].points[0].value.clone().expect("v");
    assert_eq!((v.n, v.numerator), (53, Some(45)));
    // The mean on the same answers hides the same cells.
    let r = query(
        &mut c,
        &token,
        "a1",
        "mean_score.a11_satisfaction",
        date(2026, 6, 1),
        date(2026, 6, 30),
        pb::Granularity::Month,
        pb::Dimension::Unit,
        "",
    )
    .await
    .expect("query");
    assert!(
        r.series
            .iter()
            .all(|s| s.points[0].value.as_ref().expect("v").suppressed)
    );
}

/// Issue 12, item 3: a month withheld inside a published quarter is not
/// the quarter minus the other months, and ranges off the grid of periods
/// are refused (an arbitrary range minus another would isolate any day).
#[tokio::test]
async fn a_withheld_month_cannot_be_recovered_from_its_quarter() {
    let h = Harness::start(10).await;
    let (complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    let mut i = 0;
    for (month, n) in [(7, 20), (8, 30), (9, 4)] {
        for k in 0..n {
            i += 1;
            let score = if k % 3 == 0 { 2 } else { 5 };
            feedback.push(
                "a1",
                "r",
                &response("a1", i, date(2026, month, 10), score, 2),
            );
        }
    }
    h.feed(&complaints, &feedback).await;
    let mut c = h.client().await;
    let token = h.token("a1", ANALYST);
    let ask = |c: &mut KpiServiceClient<Channel>, g, from: Date, to: Date| {
        let token = token.clone();
        let mut c = c.clone();
        async move {
            query(
                &mut c,
                &token,
                "a1",
                "share_satisfied.a11_satisfaction",
                from,
                to,
                g,
                pb::Dimension::Unspecified,
                "",
            )
            .await
        }
    };
    let quarter = ask(
        &mut c,
        pb::Granularity::Quarter,
        date(2026, 7, 1),
        date(2026, 9, 30),
    )
    .await
    .expect("quarter");
    let q3 = quarter.series[0].points[0].value.clone().expect("q3");
    assert_eq!((q3.suppressed, q3.n), (false, 54));
    let months = ask(
        &mut c,
        pb::Granularity::Month,
        date(2026, 7, 1),
        date(2026, 9, 30),
    )
    .await
    .expect("months");
    let withheld: Vec<bool> = months.series[0]
        .points
        .iter()
        .map(|p| p.value.as_ref().expect("v").suppressed)
        .collect();
    // September (4) and the smallest other month of the quarter (July, 20).
    assert_eq!(withheld, vec![true, false, true]);
    for (g, from, to, field) in [
        (
            pb::Granularity::Unspecified,
            date(2026, 9, 1),
            date(2026, 11, 30),
            "granularity",
        ),
        (
            pb::Granularity::Month,
            date(2026, 9, 2),
            date(2026, 11, 30),
            "start_date",
        ),
        (
            pb::Granularity::Week,
            date(2026, 9, 7),
            date(2026, 9, 13),
            "granularity",
        ),
    ] {
        let err = ask(&mut c, g, from, to).await.expect_err("off the grid");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violations(&err), vec![field]);
    }
}

/// A stage's figure beside the all-stage figure: with two stages, a
/// withheld stage would be the whole minus the other, so the other is
/// withheld too (decided with the all-stage table fixed).
#[tokio::test]
async fn a_withheld_stage_cannot_be_recovered_from_the_whole() {
    let h = Harness::start(10).await;
    let (mut complaints, feedback) = (VecFeed::default(), VecFeed::default());
    let day = date(2026, 6, 10);
    for (i, (stage, within)) in std::iter::repeat_n((1, true), 20)
        .chain(std::iter::repeat_n((1, false), 10))
        .chain(std::iter::repeat_n((2, true), 4))
        .enumerate()
    {
        let id = format!("s{i}");
        let name = format!("agencies/a1/complaints/{id}");
        complaints.push(
            "a1",
            &name,
            &cpb::ComplaintReceived {
                facts: Some(complaint_facts(&id, "north", 1, 1, &day)),
                senior_queue: false,
            },
        );
        if stage == 2 {
            complaints.push(
                "a1",
                &name,
                &cpb::ComplaintStageChanged {
                    facts: Some(complaint_facts(&id, "north", 1, 2, &day)),
                    from_stage: 1,
                    referral_body: String::new(),
                },
            );
        }
        complaints.push(
            "a1",
            &name,
            &cpb::ComplaintResolved {
                facts: Some(complaint_facts(&id, "north", 1, stage, &day)),
                outcome: 1 + (i % 3) as i32,
                remedies: vec![],
                stages: vec![],
                working_days: 3 + (i % 5) as i32,
                within_standard: within,
                total_working_days: 3 + (i % 5) as i32,
                root_causes: vec![],
            },
        );
    }
    h.feed(&complaints, &feedback).await;
    let c = h.client().await;
    let token = h.token("a1", ANALYST);
    let figure = |indicator: &'static str| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            let r = query(
                &mut c,
                &token,
                "a1",
                indicator,
                date(2026, 6, 1),
                date(2026, 6, 30),
                pb::Granularity::Month,
                pb::Dimension::Unspecified,
                "",
            )
            .await
            .expect("query");
            r.series[0].points[0].value.clone().expect("value")
        }
    };
    let whole = figure("responded_within_standard").await;
    assert_eq!(
        (whole.suppressed, whole.n, whole.numerator),
        (false, 34, Some(24))
    );
    // Investigation: 4 resolutions, withheld; frontline (30) with it.
    assert!(
        figure("responded_within_standard.investigation")
            .await
            .suppressed
    );
    assert!(
        figure("responded_within_standard.frontline")
            .await
            .suppressed
    );
}

/// Protected tables are reused only while the agency's rollups are
/// unchanged: a query after new events sees them at once.
#[tokio::test]
async fn figures_follow_the_rollup_at_once() {
    let h = Harness::start(10).await;
    let (complaints, mut feedback) = (VecFeed::default(), VecFeed::default());
    let mut c = h.client().await;
    let token = h.token("a1", ANALYST);
    let mut seen = Vec::new();
    for round in 0..3 {
        for k in 0..12 {
            let i = round * 100 + k;
            let score = if k % 3 == 0 { 2 } else { 5 };
            feedback.push("a1", "r", &response("a1", i, date(2026, 6, 10), score, 2));
        }
        h.feed(&complaints, &feedback).await;
        for _ in 0..2 {
            let r = query(
                &mut c,
                &token,
                "a1",
                "share_satisfied.a11_satisfaction",
                date(2026, 6, 1),
                date(2026, 6, 30),
                pb::Granularity::Month,
                pb::Dimension::Unspecified,
                "",
            )
            .await
            .expect("query");
            seen.push(r.series[0].points[0].value.clone().expect("value").n);
        }
    }
    assert_eq!(seen, vec![12, 12, 24, 24, 36, 36]);
}

/// BatchGetFigures answers each part exactly as its own method does (an
/// answer or the same error), and checks the batch as a whole: one agency
/// the caller may read, 1 to 50 parts.
#[tokio::test]
async fn batch_get_figures_answers_each_part_as_its_method() {
    let h = Harness::start(10).await;
    let (mut complaints, feedback) = (VecFeed::default(), VecFeed::default());
    for i in 0..20 {
        let id = format!("k{i}");
        let d = date(2026, 7, 1 + i);
        let f = complaint_facts(&id, "north", 1, 1, &d);
        complaints.push(
            "a1",
            &id,
            &cpb::ComplaintReceived {
                facts: Some(f.clone()),
                senior_queue: false,
            },
        );
        complaints.push(
            "a1",
            &id,
            &cpb::ComplaintAcknowledged {
                facts: Some(f),
                working_days: 1,
                within_standard: i < 18,
            },
        );
    }
    h.feed(&complaints, &feedback).await;
    let mut c = h.client().await;
    let analyst = h.token("a1", ANALYST);
    let query = |indicator: &str| pb::QueryIndicatorRequest {
        agency: "agencies/a1".into(),
        indicator: indicator.into(),
        start_date: Some(date(2026, 7, 1)),
        end_date: Some(date(2026, 9, 30)),
        ..Default::default()
    };
    let charter = pb::GetCharterReportRequest {
        agency: "agencies/a1".into(),
        period: pb::Granularity::Quarter as i32,
        date: Some(date(2026, 8, 15)),
    };
    let equity = pb::GetEquityReportRequest {
        agency: "agencies/a1".into(),
        indicator: "share_satisfied.a11_satisfaction".into(),
        start_date: Some(date(2026, 7, 1)),
        end_date: Some(date(2026, 9, 30)),
        dimension: pb::Dimension::Disability as i32,
        scope: None,
    };
    let batch = pb::BatchGetFiguresRequest {
        queries: vec![
            query("acknowledged_within_standard"),
            query("no_such_indicator"),
            query("complaints_received"),
        ],
        charter_reports: vec![charter.clone()],
        equity_reports: vec![equity.clone()],
    };
    let answer = c
        .batch_get_figures(req(batch.clone(), &analyst))
        .await
        .expect("batch")
        .into_inner();
    let part_error = |s: Status| pb::PartError {
        code: s.code() as i32,
        message: s.message().to_string(),
    };
    use pb::charter_report_result::Result as C;
    use pb::equity_report_result::Result as E;
    use pb::query_indicator_result::Result as Q;
    assert_eq!(answer.queries.len(), 3);
    for (q, got) in batch.queries.iter().zip(&answer.queries) {
        let want = match c.query_indicator(req(q.clone(), &analyst)).await {
            Ok(r) => Q::Response(r.into_inner()),
            Err(s) => Q::Error(part_error(s)),
        };
        assert_eq!(got.result.as_ref(), Some(&want), "{}", q.indicator);
    }
    assert!(
        matches!(&answer.queries[1].result, Some(Q::Error(e)) if e.code == Code::InvalidArgument as i32),
        "an unknown indicator fails its part only"
    );
    assert!(matches!(&answer.queries[0].result, Some(Q::Response(_))));
    let want = match c.get_charter_report(req(charter.clone(), &analyst)).await {
        Ok(r) => C::Report(r.into_inner()),
        Err(s) => C::Error(part_error(s)),
    };
    assert_eq!(answer.charter_reports[0].result.as_ref(), Some(&want));
    let want = match c.get_equity_report(req(equity.clone(), &analyst)).await {
        Ok(r) => E::Report(r.into_inner()),
        Err(s) => E::Error(part_error(s)),
    };
    assert_eq!(answer.equity_reports[0].result.as_ref(), Some(&want));

    // Two agencies in one batch: the first part naming the second is named.
    let mut mixed = batch.clone();
    mixed.charter_reports[0].agency = "agencies/a2".into();
    let err = c
        .batch_get_figures(req(mixed, &analyst))
        .await
        .expect_err("two agencies");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["charter_reports[0].agency"]);
    // Nothing to do, or too much.
    let err = c
        .batch_get_figures(req(pb::BatchGetFiguresRequest::default(), &analyst))
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    let many = pb::BatchGetFiguresRequest {
        queries: vec![query("complaints_received"); 51],
        ..Default::default()
    };
    let err = c
        .batch_get_figures(req(many, &analyst))
        .await
        .expect_err("51 parts");
    assert_eq!(err.code(), Code::InvalidArgument);
    // Another agency's analyst gets nothing, not a list of part errors.
    let outsider = h.token("a2", ANALYST);
    let err = c
        .batch_get_figures(req(batch, &outsider))
        .await
        .expect_err("outsider");
    assert_eq!(err.code(), Code::PermissionDenied);
}
