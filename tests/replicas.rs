//! Replicas (DESIGN §12): two `touchstone serve` processes of every service
//! on one PostgreSQL, in production mode (master key, JWKS file, service
//! token file), every peer setting naming both replicas of its service.
//! Complaints are created through both complaints replicas while the gateway
//! is asked for the dashboard through both gateway replicas; mid-load one
//! replica of complaints and one of KPI are killed with SIGKILL. Then:
//! - every acknowledged complaint exists exactly once (a call whose outcome
//!   was unknown is retried with its request id, possibly on the other
//!   replica);
//! - the KPI service counted each complaint exactly once although its two
//!   replicas consumed the complaints feed side by side and one died
//!   mid-page;
//! - the gateway answered every dashboard call, and once the dead replicas
//!   were left behind (a few seconds) none of its answers missed a part.
//!
//! Runs when `TOUCHSTONE_TEST_PG_URL` is set (CI's PostgreSQL run); SQLite
//! is one process's file and has no replicas.

use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::gateway::v1 as gpb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::kpi::v1 as kpb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_e2e::{AGENCY, Proc, free_port, run_ok, touchstone, touchstone_bin, within};
use touchstone_platform::db::Db;
use touchstone_platform::testing::PG_URL_VAR;
use touchstone_server::peer::{Balanced, PeerOptions};

use super::{tempdir, with_token};

/// The whole test, start-up included.
const TIMEOUT: Duration = Duration::from_secs(420);
/// Complaints to create.
const COMPLAINTS: usize = 300;
/// Concurrent callers creating them.
const CALLERS: usize = 8;
/// Acknowledged complaints before the complaints replica is killed, and
/// before the KPI replica is.
const KILL_COMPLAINTS_AT: usize = 80;
const KILL_KPI_AT: usize = 160;
/// After the last kill, how long the survivors get before every dashboard
/// must be whole.
const SETTLE: Duration = Duration::from_secs(4);
/// A test key (32 bytes, base64); the master key of every replica.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

const SERVICES: [&str; 5] = ["register", "complaints", "feedback", "kpi", "gateway"];

/// One database per service on the test server, dropped afterwards.
struct Databases {
    server_url: String,
    names: Vec<(&'static str, String)>,
}

impl Databases {
    async fn create(server_url: &str) -> Databases {
        let admin = Db::connect(server_url, 1)
            .await
            .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but PostgreSQL is unreachable: {e}"));
        let mut names = Vec::new();
        for svc in SERVICES {
            let name = format!("tst_rep_{}_{svc}", std::process::id());
            for stmt in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(stmt.clone()))
                    .execute(admin.pool())
                    .await
                    .unwrap_or_else(|e| panic!("{stmt}: {e}"));
            }
            names.push((svc, name));
        }
        admin.close().await;
        Databases {
            server_url: server_url.to_string(),
            names,
        }
    }

    fn url(&self, svc: &str) -> String {
        let name = &self
            .names
            .iter()
            .find(|(s, _)| *s == svc)
            .expect("a service's database")
            .1;
        sqlx::postgres::PgConnectOptions::from_str(&self.server_url)
            .expect("a PostgreSQL URL")
            .database(name)
            .to_url_lossy()
            .to_string()
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        if std::env::var_os("TOUCHSTONE_TEST_KEEP_DBS").is_some() {
            eprintln!("kept databases {:?}", self.names);
            return;
        }
        touchstone_platform::testing::drop_on_server(
            self.server_url.clone(),
            self.names
                .iter()
                .map(|(_, n)| format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
                .collect(),
        );
    }
}

/// A `touchstone token` for the test's data directory.
async fn token(dir: &std::path::Path, args: &[&str]) -> String {
    let mut cmd = touchstone(dir);
    cmd.arg("token").args(args);
    run_ok(cmd).await.stdout.trim().to_string()
}

/// Whether the server on `port` reports SERVING.
async fn serving(port: u16) -> bool {
    let Ok(endpoint) = Channel::from_shared(format!("http://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

/// Both replicas of `svc` as one balanced channel, as the services see them.
fn both(ports: &[(&str, [u16; 2])], svc: &str) -> String {
    let [a, b] = ports
        .iter()
        .find(|(s, _)| *s == svc)
        .expect("a service's ports")
        .1;
    format!("http://127.0.0.1:{a},http://127.0.0.1:{b}")
}

/// The agency's dashboard for the current quarter.
fn dashboard_request(user: &str) -> tonic::Request<gpb::GetDashboardRequest> {
    with_token(
        gpb::GetDashboardRequest {
            agency: format!("agencies/{AGENCY}"),
            period: String::new(),
        },
        user,
    )
}

fn create_request(i: usize) -> cpb::CreateComplaintRequest {
    cpb::CreateComplaintRequest {
        parent: format!("agencies/{AGENCY}"),
        complaint: Some(cpb::Complaint {
            complainant: Some(cpb::Complainant {
                who: Some(cpb::complainant::Who::Anonymous(true)),
            }),
            channel: touchstone_api::common::v1::Channel::Phone as i32,
            category: "delay".into(),
            description: format!("replica test complaint {i}"),
            ..Default::default()
        }),
        request_id: format!("replicas-{i}"),
        ..Default::default()
    }
}

/// The sum of `complaints_received` over this year and its neighbours.
async fn kpi_received(kpi: &mut KpiServiceClient<Balanced>, token: &str) -> Option<i64> {
    kpi_series(kpi, token).await.map(|series| {
        series
            .iter()
            .flat_map(|s| &s.points)
            .filter_map(|p| p.value.as_ref())
            .map(|v| v.n)
            .sum()
    })
}

async fn kpi_series(kpi: &mut KpiServiceClient<Balanced>, token: &str) -> Option<Vec<kpb::Series>> {
    let year = 1970 + (time_now_secs() / 31_556_952) as i32;
    let date = |year, month, day| touchstone_api::common::v1::Date { year, month, day };
    let series = kpi
        .query_indicator(with_token(
            kpb::QueryIndicatorRequest {
                agency: format!("agencies/{AGENCY}"),
                indicator: "complaints_received".into(),
                start_date: Some(date(year - 1, 1, 1)),
                end_date: Some(date(year + 1, 12, 31)),
                granularity: kpb::Granularity::Year as i32,
                ..Default::default()
            },
            token,
        ))
        .await
        .ok()?
        .into_inner()
        .series;
    Some(series)
}

fn time_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_of_every_service_lose_one_of_complaints_and_kpi_and_nothing() {
    let Some(server_url) = std::env::var(PG_URL_VAR).ok().filter(|u| !u.is_empty()) else {
        eprintln!("replicas: skipped; set {PG_URL_VAR} to run two replicas on PostgreSQL");
        return;
    };
    touchstone_bin();
    within(TIMEOUT, "replicas", async {
        let dbs = Databases::create(&server_url).await;
        let dir = tempdir();
        // The development key's JWKS stands for the identity provider.
        let service_token = token(
            dir.path(),
            &[
                "--agencies",
                "*",
                "--role",
                "service",
                "--subject",
                "replicas",
                "--hours",
                "2",
            ],
        )
        .await;
        let token_file = dir.path().join("service.token");
        std::fs::write(&token_file, &service_token).expect("writing the service token");
        let user = token(
            dir.path(),
            &[
                "--agency",
                AGENCY,
                "--role",
                "officer",
                "--role",
                "senior_officer",
                "--role",
                "analyst",
            ],
        )
        .await;

        let ports: Vec<(&str, [u16; 2])> = SERVICES
            .iter()
            .map(|s| (*s, [free_port(), free_port()]))
            .collect();
        let mut procs: Vec<(&str, usize, Proc)> = Vec::new();
        for (svc, pair) in &ports {
            for (replica, port) in pair.iter().enumerate() {
                let upper = svc.to_ascii_uppercase();
                let mut cmd = touchstone(dir.path());
                cmd.args(["serve", svc])
                    .env("TOUCHSTONE_MASTER_KEY", MASTER_KEY)
                    .env(
                        "TOUCHSTONE_AUTH__JWKS_FILE",
                        dir.path().join("dev-jwks.json"),
                    )
                    .env("TOUCHSTONE_SERVICE_TOKEN_FILE", &token_file)
                    .env(format!("TOUCHSTONE_{upper}__DATABASE_URL"), dbs.url(svc))
                    .env(
                        format!("TOUCHSTONE_{upper}__LISTEN"),
                        format!("127.0.0.1:{port}"),
                    )
                    .env("TOUCHSTONE_HUB__DASHBOARD", "false")
                    // Every dashboard computed: the test is of the calls
                    // behind it going round the replicas.
                    .env("TOUCHSTONE_HUB__DASHBOARD_CACHE_MS", "0")
                    // Every figure published (no disclosure control): the
                    // count is compared with the complaints, not protected.
                    .env("TOUCHSTONE_HUB__MIN_COUNT", "1");
                for peer in SERVICES {
                    cmd.env(
                        format!("TOUCHSTONE_PEERS__{}", peer.to_ascii_uppercase()),
                        both(&ports, peer),
                    );
                }
                procs.push((svc, replica, Proc::spawn(cmd)));
            }
        }
        let started = Instant::now();
        for (svc, pair) in &ports {
            for port in pair {
                while !serving(*port).await {
                    for (s, r, p) in procs.iter_mut() {
                        if s == svc && p.try_status().is_some() {
                            panic!(
                                "{svc} replica {r} exited before serving\n{}",
                                p.output_report()
                            );
                        }
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "{svc} on {port} is not serving after 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }

        let peer = |svc: &str| {
            Balanced::connect(&both(&ports, svc), PeerOptions::default()).expect("peer URLs")
        };
        let complaints = ComplaintsServiceClient::new(peer("complaints"));
        let gateway = GatewayServiceClient::new(peer("gateway"));
        let mut kpi = KpiServiceClient::new(peer("kpi"));

        // The load: every complaint created once, each call retried with
        // its request id until it is acknowledged.
        let next = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));
        let retried = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for _ in 0..CALLERS {
            let (next, acked, names, retried) =
                (next.clone(), acked.clone(), names.clone(), retried.clone());
            let mut client = complaints.clone();
            let user = user.clone();
            callers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= COMPLAINTS {
                        return;
                    }
                    let mut attempts = 0;
                    let name = loop {
                        attempts += 1;
                        match client
                            .create_complaint(with_token(create_request(i), &user))
                            .await
                        {
                            Ok(r) => break r.into_inner().name,
                            Err(s) => {
                                assert!(
                                    matches!(
                                        s.code(),
                                        tonic::Code::Unavailable
                                            | tonic::Code::Unknown
                                            | tonic::Code::Cancelled
                                            | tonic::Code::DeadlineExceeded
                                            | tonic::Code::Aborted
                                    ),
                                    "complaint {i}: {s:?}"
                                );
                                assert!(attempts < 100, "complaint {i} never acknowledged: {s:?}");
                                retried.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    };
                    names.lock().expect("names").push((i, name));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }

        // The dashboard, asked through both gateways all along.
        let stop = Arc::new(AtomicBool::new(false));
        let last_kill: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let watcher = {
            let (stop, last_kill) = (stop.clone(), last_kill.clone());
            let mut gateway = gateway.clone();
            let user = user.clone();
            tokio::spawn(async move {
                let (mut asked, mut whole_after_settle) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = gateway
                        .get_dashboard(dashboard_request(&user))
                        .await
                        .unwrap_or_else(|s| panic!("the gateway did not answer: {s:?}"))
                        .into_inner();
                    asked += 1;
                    let settled = last_kill
                        .lock()
                        .expect("last kill")
                        .is_some_and(|k| sent >= k + SETTLE);
                    if settled {
                        if !answer.unreachable.is_empty() {
                            return Err(format!(
                                "{:?} unreachable {:?} after the last kill",
                                answer.unreachable,
                                sent.duration_since(last_kill.lock().expect("kill").expect("k"))
                            ));
                        }
                        whole_after_settle += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok((asked, whole_after_settle))
            })
        };

        // The kills.
        for (svc, at) in [("complaints", KILL_COMPLAINTS_AT), ("kpi", KILL_KPI_AT)] {
            while acked.load(Ordering::Relaxed) < at {
                if callers.iter().any(tokio::task::JoinHandle::is_finished) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (_, _, victim) = procs
                .iter_mut()
                .find(|(s, r, _)| *s == svc && *r == 0)
                .expect("replica 0");
            victim.kill9().await;
            *last_kill.lock().expect("last kill") = Some(Instant::now());
        }
        for c in callers {
            c.await.expect("a caller panicked");
        }
        let names = std::mem::take(&mut *names.lock().expect("names"));
        assert_eq!(names.len(), COMPLAINTS);
        let distinct: BTreeSet<&String> = names.iter().map(|(_, n)| n).collect();
        assert_eq!(
            distinct.len(),
            COMPLAINTS,
            "two requests were acknowledged with the same complaint"
        );

        // Exactly once in the complaints database.
        let stored: i64 = {
            let db = Db::connect(&dbs.url("complaints"), 1)
                .await
                .expect("complaints db");
            let n = sqlx::query_scalar("SELECT count(*) FROM complaints")
                .fetch_one(db.pool())
                .await
                .expect("count");
            db.close().await;
            n
        };
        assert_eq!(stored, COMPLAINTS as i64, "complaints stored");

        // KPI: every complaint counted once, by whichever replica applied it.
        let deadline = Instant::now() + Duration::from_secs(90);
        let counted = loop {
            let n = kpi_received(&mut kpi, &user).await;
            if n == Some(COMPLAINTS as i64) || Instant::now() > deadline {
                break n;
            }
            assert!(
                n.is_none_or(|n| n <= COMPLAINTS as i64),
                "KPI counted {n:?} of {COMPLAINTS} complaints: some twice"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if counted != Some(COMPLAINTS as i64) {
            let logs: Vec<String> = procs
                .iter()
                .filter(|(s, _, _)| *s == "kpi")
                .map(|(_, r, p)| format!("kpi replica {r}:\n{}", p.output_report()))
                .collect();
            let kpi_db = Db::connect(&dbs.url("kpi"), 1).await.expect("kpi db");
            let cursors: Vec<(String, i64)> =
                sqlx::query_as("SELECT feed, sequence FROM feed_cursors")
                    .fetch_all(kpi_db.pool())
                    .await
                    .expect("cursors");
            let cells: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT agency, measure, sum(count)::BIGINT, count(*) FROM kpi_cells \
                 GROUP BY agency, measure",
            )
            .fetch_all(kpi_db.pool())
            .await
            .expect("cells");
            let kc: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_complaints")
                .fetch_one(kpi_db.pool())
                .await
                .expect("kpi_complaints");
            eprintln!("KPI cells: {cells:?}; kpi_complaints {kc}");
            let c_db = Db::connect(&dbs.url("complaints"), 1)
                .await
                .expect("complaints db");
            let events: Vec<(String, i64)> =
                sqlx::query_as("SELECT type, count(*) FROM events GROUP BY type")
                    .fetch_all(c_db.pool())
                    .await
                    .expect("events");
            panic!(
                "KPI complaints_received is {counted:?}, not {COMPLAINTS}; KPI cursors \
                 {cursors:?}; complaints events {events:?}; series {:?}\n{}",
                kpi_series(&mut kpi, &user).await,
                logs.join("\n")
            );
        }
        // And no more later (a page applied twice would show now).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(kpi_received(&mut kpi, &user).await, Some(COMPLAINTS as i64));

        // Keep the dashboard going until it has been whole after the kills.
        let settle_end = Instant::now() + SETTLE + Duration::from_secs(2);
        while Instant::now() < settle_end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (asked, whole) = match watcher.await.expect("the dashboard watcher panicked") {
            Ok(counts) => counts,
            Err(e) => {
                let logs: Vec<String> = procs
                    .iter()
                    .filter(|(s, _, _)| *s == "gateway")
                    .map(|(_, r, p)| format!("gateway replica {r}:\n{}", p.output_report()))
                    .collect();
                panic!("{e}\n{}", logs.join("\n"));
            }
        };
        assert!(
            whole >= 5,
            "only {whole} of {asked} dashboards after settling"
        );

        // The dashboard's open complaints are the ones created.
        let mut gateway = gateway.clone();
        let dashboard = gateway
            .get_dashboard(dashboard_request(&user))
            .await
            .expect("GetDashboard")
            .into_inner();
        assert_eq!(
            dashboard.complaints.as_ref().map(|c| c.open),
            Some(COMPLAINTS as i64),
            "{dashboard:?}"
        );
        eprintln!(
            "replicas: {COMPLAINTS} complaints, {} calls retried after the kills, {asked} \
             dashboards answered ({whole} after settling)",
            retried.load(Ordering::Relaxed)
        );
        for (_, _, p) in &mut procs {
            if p.try_status().is_none() {
                p.terminate();
            }
        }
    })
    .await;
}
