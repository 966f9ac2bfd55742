//! `touchstone bench --scenario gateway`: the gateway in front of the real
//! complaints, feedback and KPI services, each on a fresh SQLite database,
//! all served through `touchstone_server::serve` as in production:
//!
//! - the latency of one dashboard with its backend calls made in parallel
//!   (as `GetDashboard` does) against the same calls made one after another,
//!   both in-process on the same gateway code, and `GetDashboard` over gRPC;
//!   p50 of sequential dashboards;
//! - `GetDashboard` throughput under load against the bare echo server, in
//!   the same run.

use super::load::{self, Op, Window};
use super::target::{self, Served};
use super::{BackendArg, BenchArgs, EchoOp, connect, echo, sample_client, spinner, status_label};
use anyhow::{Context, bail};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::gateway::v1 as pb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::kpi::v1 as kpi;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_auth::{AgencyScope, Caller, DevKey, Role, ServiceToken, TokenRequest};
use touchstone_crypto::MasterKey;
use touchstone_gateway::backends::CallContext;
use touchstone_gateway::domain::Period;
use touchstone_platform::config::Settings;

const AGENCY: &str = "bench";
const PERIOD: &str = "2026-Q3";
/// Open complaints the dashboard counts.
const COMPLAINTS: usize = 300;
const ROLES: [Role; 3] = [Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin];

/// Complaints, feedback, KPI and the gateway on fresh SQLite files, served
/// as in production, the complaints and standards of `seed` filed, and the
/// bare echo server beside them.
struct Stack {
    dbs: Vec<target::FreshDb>,
    complaints: Served,
    feedback: Served,
    kpi_served: Served,
    /// The gateway as configured (`hub.dashboard_cache_ms`: 1 s by default).
    gateway: Served,
    /// The same gateway keeping no dashboard: each one computed.
    uncached: Served,
    /// How long `gateway` keeps a dashboard, in ms.
    cache_ms: u64,
    echo: echo::EchoHandle,
    in_process: touchstone_gateway::api::Gateway,
    auth: MetadataValue<Ascii>,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(settings: &Settings, bar: &indicatif::ProgressBar) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let dev = DevKey::load_or_create(dir.path()).context("creating a signing key")?;
        let token = dev.mint(&TokenRequest {
            subject: "bench".into(),
            agency: Some(AGENCY.into()),
            agencies: None,
            roles: ROLES.to_vec(),
            ttl: Duration::from_secs(3600),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
        })?;
        let auth: MetadataValue<Ascii> = format!("Bearer {token}").parse()?;
        let pool = settings.gateway.max_connections.max(1);
        let mut dbs = Vec::new();
        for (name, sets) in [
            (
                "complaints",
                touchstone_complaints::migration_sets().to_vec(),
            ),
            ("feedback", touchstone_feedback::migration_sets().to_vec()),
            ("kpi", touchstone_kpi::migration_sets().to_vec()),
            ("gateway", touchstone_gateway::migration_sets().to_vec()),
        ] {
            let sub = dir.path().join(name);
            std::fs::create_dir_all(&sub)?;
            dbs.push(target::fresh_sqlite_with(&sub, pool, &target::service_schema(sets)).await?);
        }
        let verifier = target::verifier(&dev)?;
        let keys = MasterKey::generate;
        let limit = settings.max_concurrent_per_connection;
        let nowhere = target::NOWHERE;

        let (routes, tasks) = touchstone_complaints::start(
            dbs[0].db.clone(),
            keys(),
            verifier.clone(),
            touchstone_complaints::Peers::connect(nowhere, ServiceToken::None)?,
        );
        tasks.iter().for_each(|t| t.abort());
        let complaints = Served::start(
            "complaints",
            touchstone_complaints::SERVICE_NAME,
            routes,
            dbs[0].db.clone(),
            limit,
        )
        .await?;
        let feedback = Served::feedback(dbs[1].db.clone(), verifier.clone(), limit).await?;
        let kpi_served = Served::kpi(dbs[2].db.clone(), verifier.clone(), limit).await?;
        let url = |s: &Served| format!("http://{}", s.addr);
        let mut peers = touchstone_gateway::Peers::connect(
            nowhere,
            &url(&complaints),
            &url(&feedback),
            &url(&kpi_served),
            ServiceToken::None,
            10,
        )?;
        peers.dashboard_cache = Duration::from_millis(settings.hub.dashboard_cache_ms);
        let in_process = touchstone_gateway::api::Gateway::new(
            dbs[3].db.clone(),
            keys(),
            peers.backends.clone(),
            10,
        );
        let mut each = peers.clone();
        each.dashboard_cache = Duration::ZERO;
        let mut gateways = Vec::new();
        for (name, peers) in [("gateway", peers), ("gateway (no cache)", each)] {
            let (routes, _) =
                touchstone_gateway::start(dbs[3].db.clone(), keys(), verifier.clone(), peers, None);
            gateways.push(
                Served::start(
                    name,
                    touchstone_gateway::SERVICE_NAME,
                    routes,
                    dbs[3].db.clone(),
                    limit,
                )
                .await?,
            );
        }
        let uncached = gateways.pop().context("two gateways")?;
        let gateway = gateways.pop().context("two gateways")?;
        let echo = echo::start().await.context("starting the echo server")?;

        let stack = Stack {
            dbs,
            complaints,
            feedback,
            kpi_served,
            gateway,
            uncached,
            cache_ms: settings.hub.dashboard_cache_ms,
            echo,
            in_process,
            auth,
            _dir: dir,
        };
        bar.set_message(format!(
            "filing {COMPLAINTS} complaints and three standards"
        ));
        if let Err(e) = seed(&stack.complaints, &stack.kpi_served, &stack.auth).await {
            stack.stop().await;
            return Err(e);
        }
        Ok(stack)
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.uncached.stop().await;
        self.kpi_served.stop().await;
        self.feedback.stop().await;
        self.complaints.stop().await;
        self.echo.stop().await;
        for db in self.dbs {
            db.cleanup().await;
        }
    }

    /// Echo, then GetDashboard, each with `args`' connections and calls in
    /// flight.
    async fn under_load(
        &self,
        args: &BenchArgs,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<(load::Measured, load::Measured, load::Measured)> {
        let window = Window {
            warmup: args.warmup,
            duration: args.duration,
        };
        let workers = args.connections * args.in_flight;
        let channels = connect(self.echo.addr, args.connections).await?;
        let ops: Vec<_> = (0..workers)
            .map(|w| EchoOp {
                client: echo::EchoClient::new(channels[w % channels.len()].clone()),
                message: sample_client(0, 0),
                auth: self.auth.clone(),
            })
            .collect();
        let echo_rate = load::run("echo", ops, window, bar).await;
        drop(channels);
        let mut rates = Vec::new();
        for (name, served) in [
            ("GetDashboard", &self.gateway),
            ("GetDashboard (no cache)", &self.uncached),
        ] {
            let channels = connect(served.addr, args.connections).await?;
            let ops: Vec<_> = (0..workers)
                .map(|w| DashboardOp {
                    client: GatewayServiceClient::new(channels[w % channels.len()].clone()),
                    auth: self.auth.clone(),
                })
                .collect();
            rates.push(load::run(name, ops, window, bar).await);
        }
        let uncached = rates.pop().context("two runs")?;
        let cached = rates.pop().context("two runs")?;
        Ok((echo_rate, cached, uncached))
    }
}

fn print_load(args: &BenchArgs, results: [&load::Measured; 3]) {
    println!(
        "\nunder load ({} connections x {} in flight; warm-up {:.0}s, window {:.0}s):",
        args.connections,
        args.in_flight,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    for m in results {
        println!(
            "  {:<24} {:>9.0} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}",
            m.scenario, m.per_second, m.p50_ms, m.p99_ms, m.errors
        );
        for (k, v) in &m.error_kinds {
            println!("    {k} x{v}");
        }
    }
}

/// `touchstone bench --scenario overload`, its GetDashboard part: echo, then
/// GetDashboard, at the overload's connections and calls in flight (50 x
/// 1,000 by default). Aims (issue 13): GetDashboard fails only with
/// RESOURCE_EXHAUSTED (a dashboard with a part unreachable counts as a
/// failure too), and its admitted calls' p99 is at most 1.5 times echo's.
pub(super) async fn overload(args: &BenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let bar = spinner();
    bar.set_message("starting complaints, feedback, KPI and the gateway");
    let stack = Stack::start(settings, &bar).await?;
    let measured = stack.under_load(args, &bar).await;
    bar.finish_and_clear();
    stack.stop().await;
    let (echo_rate, cached, uncached) = measured?;
    println!(
        "\nGetDashboard under overload (gateway, complaints, feedback and KPI in this process, SQLite; \
         dashboards kept {} ms, and by a second gateway keeping none):",
        settings.hub.dashboard_cache_ms
    );
    print_load(args, [&echo_rate, &cached, &uncached]);
    for dash_rate in [&cached, &uncached] {
        let name = &dash_rate.scenario;
        let only_exhausted = dash_rate
            .error_kinds
            .keys()
            .all(|k| k == "ResourceExhausted");
        let ratio = (dash_rate.ok > 0).then(|| dash_rate.p99_ms / echo_rate.p99_ms.max(1e-9));
        println!(
            "  {name} errors only RESOURCE_EXHAUSTED: {}",
            if only_exhausted { "yes" } else { "NO" }
        );
        match ratio {
            Some(r) => println!(
                "  {name} p99 / echo p99  {r:.2}  aim <= 1.50: {}",
                if r <= 1.5 { "met" } else { "NOT met" }
            ),
            None => println!("  {name} p99 / echo p99  not measurable: no dashboard answered"),
        }
    }
    if let Some(mib) = super::peak_rss_mib() {
        println!(
            "  peak memory of this process (all servers and the load generator): {mib:.0} MiB"
        );
    }
    Ok(())
}

pub(super) async fn run(args: &BenchArgs, settings: &Settings) -> anyhow::Result<()> {
    if args.backend == BackendArg::Postgres {
        bail!("--scenario gateway runs on SQLite only");
    }
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("touchstone bench --scenario gateway ({build} build)");
    println!("command:  {}", super::command_line());
    if build == "debug" {
        println!("warning:  a debug build; build with --release for figures worth reporting");
    }
    let bar = spinner();
    bar.set_message("starting complaints, feedback, KPI and the gateway");
    let stack = Stack::start(settings, &bar).await?;
    let outcome = measure(args, &stack, &bar).await;
    bar.finish_and_clear();
    stack.stop().await;
    outcome
}

async fn measure(
    args: &BenchArgs,
    stack: &Stack,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let (in_process, auth) = (&stack.in_process, &stack.auth);
    println!(
        "backends: complaints ({COMPLAINTS} open), feedback (empty), KPI (3 standards), each on its own SQLite file; \
         a dashboard is 5 backend calls (its 11 KPI figures in one BatchGetFigures); one after another, the same figures as 15 calls"
    );

    // Latency: one dashboard at a time.
    let caller = Caller {
        subject: "bench".into(),
        agency: Some(AGENCY.into()),
        agencies: AgencyScope::Own,
        roles: ROLES.into_iter().collect(),
    };
    let mut with_token = Request::new(());
    with_token
        .metadata_mut()
        .insert("authorization", auth.clone());
    let period = Period::parse(PERIOD, touchstone_gateway::domain::today_in("UTC"))
        .map_err(anyhow::Error::msg)?;
    let request = || pb::GetDashboardRequest {
        agency: format!("agencies/{AGENCY}"),
        period: PERIOD.into(),
    };
    bar.set_message("timing dashboards: parallel fan-out, in process");
    let parallel = time(args.duration, || async {
        let ctx = CallContext::from_request(&with_token).map_err(|s| s.to_string())?;
        let d = in_process
            .dashboard(&caller, &ctx, request())
            .await
            .map_err(|e| e.to_string())?;
        if d.unreachable.is_empty() {
            Ok(())
        } else {
            Err(format!("unreachable: {:?}", d.unreachable))
        }
    })
    .await?;
    bar.set_message("timing dashboards: the same calls one after another");
    let sequential = time(args.duration, || async {
        let ctx = CallContext::from_request(&with_token).map_err(|s| s.to_string())?;
        let ok = in_process.dashboard_sequential(&ctx, AGENCY, period).await;
        if ok == 4 {
            Ok(())
        } else {
            Err(format!("{ok} of 4 parts answered"))
        }
    })
    .await?;
    bar.set_message("timing GetDashboard over gRPC");
    // The gateway keeping none: each dashboard computed, as the fan-out's
    // aim is about computing one.
    let channel = connect(stack.uncached.addr, 1).await?.remove(0);
    let over_grpc = time(args.duration, || {
        let mut client = GatewayServiceClient::new(channel.clone());
        let mut r = Request::new(request());
        r.metadata_mut().insert("authorization", auth.clone());
        async move {
            client
                .get_dashboard(r)
                .await
                .map(drop)
                .map_err(|s| status_label(&s))
        }
    })
    .await?;

    // Throughput under load, against the echo baseline.
    let (echo_rate, cached, uncached) = stack.under_load(args, bar).await?;
    bar.finish_and_clear();

    println!(
        "\none dashboard at a time ({:.0}s each):",
        args.duration.as_secs_f64()
    );
    println!(
        "  parallel fan-out (in process)        p50 {:>8.2} ms  ({} dashboards)",
        parallel.0, parallel.1
    );
    println!(
        "  same calls one after another         p50 {:>8.2} ms  ({} dashboards)",
        sequential.0, sequential.1
    );
    println!(
        "  GetDashboard over gRPC (no cache)    p50 {:>8.2} ms  ({} dashboards)",
        over_grpc.0, over_grpc.1
    );
    println!(
        "  ratio parallel / sequential          {:.2}",
        parallel.0 / sequential.0.max(1e-9)
    );
    println!(
        "  ratio GetDashboard / sequential      {:.2}",
        over_grpc.0 / sequential.0.max(1e-9)
    );
    print_load(args, [&echo_rate, &cached, &uncached]);
    println!(
        "  ratio GetDashboard / echo req/s  {:.4}  (dashboards kept {} ms for their caller)",
        cached.per_second / echo_rate.per_second.max(1e-9),
        stack.cache_ms
    );
    println!(
        "  ratio GetDashboard (no cache) / echo req/s  {:.4}  (each dashboard computed)",
        uncached.per_second / echo_rate.per_second.max(1e-9)
    );
    Ok(())
}

/// Complaints to count and standards to report on, through the public APIs.
async fn seed(
    complaints: &Served,
    kpi_served: &Served,
    auth: &MetadataValue<Ascii>,
) -> anyhow::Result<()> {
    let mut c = ComplaintsServiceClient::new(connect(complaints.addr, 1).await?.remove(0));
    for i in 0..COMPLAINTS {
        let mut r = Request::new(cpb::CreateComplaintRequest {
            parent: format!("agencies/{AGENCY}"),
            complaint: Some(cpb::Complaint {
                complainant: Some(cpb::Complainant {
                    who: Some(cpb::complainant::Who::Anonymous(true)),
                }),
                channel: 1,
                unit: ["north", "south", "east"][i % 3].into(),
                service: "passport renewal".into(),
                category: "delay".into(),
                description: "It took months.".into(),
                severity: 1 + (i % 4) as i32,
                ..Default::default()
            }),
            complaint_id: String::new(),
            request_id: String::new(),
        });
        r.metadata_mut().insert("authorization", auth.clone());
        c.create_complaint(r).await.context("filing a complaint")?;
    }
    let mut k = KpiServiceClient::new(connect(kpi_served.addr, 1).await?.remove(0));
    for (id, indicator, target) in [
        ("ack", "acknowledged_within_standard", 0.9),
        ("respond", "responded_within_standard", 0.8),
        ("satisfied", "share_satisfied.a11_satisfaction", 0.75),
    ] {
        let mut r = Request::new(kpi::CreateStandardRequest {
            parent: format!("agencies/{AGENCY}"),
            standard: Some(kpi::Standard {
                display_name: format!("Standard {id}"),
                indicator: indicator.into(),
                comparator: kpi::Comparator::AtLeast as i32,
                target,
                period: kpi::Granularity::Quarter as i32,
                published: true,
                ..Default::default()
            }),
            standard_id: id.into(),
            request_id: String::new(),
        });
        r.metadata_mut().insert("authorization", auth.clone());
        k.create_standard(r).await.context("creating a standard")?;
    }
    Ok(())
}

/// Runs `call` one at a time for `window`: p50 in ms and how many ran.
async fn time<F, Fut>(window: Duration, mut call: F) -> anyhow::Result<(f64, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    // One untimed call warms connections and caches.
    call().await.map_err(anyhow::Error::msg)?;
    let until = Instant::now() + window;
    let mut samples = Vec::new();
    while Instant::now() < until || samples.len() < 5 {
        let started = Instant::now();
        call().await.map_err(anyhow::Error::msg)?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[samples.len() / 2], samples.len()))
}

struct DashboardOp {
    client: GatewayServiceClient<Channel>,
    auth: MetadataValue<Ascii>,
}

impl Op for DashboardOp {
    async fn call(&mut self) -> Result<(), String> {
        let mut r = Request::new(pb::GetDashboardRequest {
            agency: format!("agencies/{AGENCY}"),
            period: PERIOD.into(),
        });
        r.metadata_mut().insert("authorization", self.auth.clone());
        let d = self
            .client
            .get_dashboard(r)
            .await
            .map_err(|s| status_label(&s))?
            .into_inner();
        if d.unreachable.is_empty() {
            Ok(())
        } else {
            Err(format!("unreachable {}", d.unreachable.join(",")))
        }
    }
}
