//! The crash suite: the real binary under concurrent CreateClient calls with
//! request ids, then killed with SIGKILL, or given a storage fault that is
//! later removed. Afterwards every acknowledged call, and every call whose
//! outcome was unknown and was retried with the same request id, exists
//! exactly once (DESIGN §5: nothing acknowledged is ever lost).
//!
//! Each test runs on SQLite, and on PostgreSQL when `TOUCHSTONE_TEST_PG_URL`
//! is set (the register's database; the other services stay on SQLite).
//! How faults are injected (see docs/architecture.md):
//! - SQLite: the register's database file and its write-ahead log are made
//!   immutable (`chattr +i`; root on ext4, xfs or btrfs). The process keeps
//!   its open files, and every write to them fails, as on a failing disk.
//!   Where that is not possible the test says so and passes, unless
//!   `TOUCHSTONE_TEST_REQUIRE_FAULTS` is set (CI), when it fails.
//! - PostgreSQL: the database is made read-only
//!   (`default_transaction_read_only`) and the service's sessions are
//!   terminated, as after a failover to a standby; then the setting is reset
//!   *without* ending the sessions opened during the fault, which stay
//!   read-only: the service must stop using them by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions as _;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use touchstone_api::register::v1 as pb;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_e2e::{AGENCY, Up, within};
use touchstone_platform::db::Db;
use touchstone_platform::testing::{PG_URL_VAR, fault};

use super::{mint_token, tempdir, with_token};

/// No crash test may take longer than this, restarts included.
const CRASH_TIMEOUT: Duration = Duration::from_secs(300);

/// Concurrent callers.
const CALLERS: usize = 6;

/// Acknowledged calls to wait for before each step (a crash, a fault, the
/// end of the run).
const STEP: usize = 40;

/// The register's PostgreSQL database, made for one test.
struct PgDatabase {
    server_url: String,
    name: String,
    admin: Db,
}

impl PgDatabase {
    async fn create(server_url: &str) -> PgDatabase {
        let name = format!("tst_crash_{}", std::process::id())
            + &format!("_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let admin = Db::connect(server_url, 1)
            .await
            .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but PostgreSQL is unreachable: {e}"));
        for stmt in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS {name}"),
            format!("CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin_sql(&admin, &stmt).await;
        }
        PgDatabase {
            server_url: server_url.to_string(),
            name,
            admin,
        }
    }

    /// The register's settings: connect as the new role, migrate as the admin.
    fn settings(&self) -> Vec<(String, String)> {
        let base =
            sqlx::postgres::PgConnectOptions::from_str(&self.server_url).expect("a PostgreSQL URL");
        let owner = base.clone().database(&self.name).to_url_lossy().to_string();
        let app = base
            .database(&self.name)
            .username(&self.name)
            .to_url_lossy()
            .to_string();
        vec![
            ("TOUCHSTONE_REGISTER__DATABASE_URL".into(), app),
            ("TOUCHSTONE_REGISTER__MIGRATION_URL".into(), owner),
            ("TOUCHSTONE_REGISTER__APP_ROLE".into(), self.name.clone()),
        ]
    }

    /// Ends every session of the service's role.
    async fn terminate_sessions(&self) {
        admin_sql(
            &self.admin,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
                self.name
            ),
        )
        .await;
    }

    /// Makes new sessions read-only (`on`) or writable again.
    async fn read_only(&self, on: bool) {
        let stmt = if on {
            format!(
                "ALTER DATABASE {} SET default_transaction_read_only = on",
                self.name
            )
        } else {
            format!(
                "ALTER DATABASE {} RESET default_transaction_read_only",
                self.name
            )
        };
        admin_sql(&self.admin, &stmt).await;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        touchstone_platform::testing::drop_on_server(
            self.server_url.clone(),
            vec![
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("DROP ROLE IF EXISTS {name}"),
            ],
        );
    }
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

async fn admin_sql(admin: &Db, stmt: &str) {
    sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
        .execute(admin.pool())
        .await
        .unwrap_or_else(|e| panic!("{stmt}: {e}"));
}

/// Where the register keeps its data in one run.
enum Store {
    Sqlite,
    Postgres(PgDatabase),
}

impl Store {
    fn label(&self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Postgres(_) => "PostgreSQL",
        }
    }

    fn settings(&self) -> Vec<(String, String)> {
        match self {
            Store::Sqlite => Vec::new(),
            Store::Postgres(pg) => pg.settings(),
        }
    }
}

/// The backends to run on: SQLite always, PostgreSQL when configured.
async fn stores() -> Vec<Store> {
    let mut stores = vec![Store::Sqlite];
    if let Ok(url) = std::env::var(PG_URL_VAR)
        && !url.is_empty()
    {
        stores.push(Store::Postgres(PgDatabase::create(&url).await));
    }
    stores
}

/// Call `i`: the same request every time it is sent, so that a retry with
/// its request id is the same request.
fn create(i: usize) -> pb::CreateClientRequest {
    pb::CreateClientRequest {
        parent: format!("agencies/{AGENCY}"),
        client: Some(pb::Client {
            kind: pb::ClientKind::Person as i32,
            given_names: "Crash".into(),
            family_name: format!("Testfamily-{i}"),
            ..Default::default()
        }),
        client_id: String::new(),
        request_id: format!("crash-{i}"),
    }
}

/// What the callers saw.
#[derive(Default)]
struct Ledger {
    /// Call → the client it created, as acknowledged.
    acknowledged: BTreeMap<usize, String>,
    /// Calls that failed at least once (outcome unknown until retried).
    unknown: BTreeSet<usize>,
    /// Failures by code.
    failures: BTreeMap<String, usize>,
}

/// Concurrent callers of CreateClient, each sending new calls until stopped.
struct Load {
    ledger: Arc<Mutex<Ledger>>,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the callers. With `retry`, a caller whose call fails sends it
    /// again with the same request id until it succeeds (as the UNAVAILABLE
    /// message advises); without, it moves on and leaves it unknown.
    fn start(channel: Channel, token: &str, retry: bool) -> Load {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let callers = (0..CALLERS)
            .map(|_| {
                let mut client = RegisterServiceClient::new(channel.clone());
                let (ledger, issued, stop) = (ledger.clone(), issued.clone(), stop.clone());
                let token = token.to_string();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        let i = issued.fetch_add(1, Ordering::AcqRel);
                        loop {
                            match client.create_client(with_token(create(i), &token)).await {
                                Ok(created) => {
                                    let name = created.into_inner().name;
                                    lock(&ledger).acknowledged.insert(i, name);
                                    break;
                                }
                                Err(status) => {
                                    let mut ledger = lock(&ledger);
                                    ledger.unknown.insert(i);
                                    *ledger
                                        .failures
                                        .entry(format!("{:?}", status.code()))
                                        .or_default() += 1;
                                }
                            }
                            if !retry || stop.load(Ordering::Acquire) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            ledger,
            issued,
            stop,
            callers,
        }
    }

    fn acknowledged(&self) -> usize {
        lock(&self.ledger).acknowledged.len()
    }

    fn failures(&self) -> usize {
        lock(&self.ledger).failures.values().sum()
    }

    /// Waits until `n` calls in all have been acknowledged.
    async fn until_acknowledged(&self, n: usize) {
        while self.acknowledged() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Tells the callers to send no new call (those in flight go on).
    fn halt(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the callers and returns what they saw and how many calls were
    /// issued.
    async fn stop(self) -> (Ledger, usize) {
        self.halt();
        for caller in self.callers {
            caller.await.expect("a caller");
        }
        let ledger = std::mem::take(&mut *lock(&self.ledger));
        (ledger, self.issued.load(Ordering::Acquire))
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends every one of the `issued` calls again with its request id (retrying
/// while the service is unavailable), then checks: each acknowledged call
/// answers with the client it created, every call created exactly one
/// client, and the agency holds no other client.
async fn check_exactly_once(up: &Up, token: &str, ledger: &Ledger, issued: usize) {
    let mut register = RegisterServiceClient::new(up.channel().await);
    let mut names = BTreeSet::new();
    for i in 0..issued {
        let mut attempts = 0;
        let name = loop {
            match register.create_client(with_token(create(i), token)).await {
                Ok(created) => break created.into_inner().name,
                Err(status) if status.code() == Code::Unavailable && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("retrying call {i}: {status:?}"),
            }
        };
        if let Some(first) = ledger.acknowledged.get(&i) {
            assert_eq!(
                &name, first,
                "call {i} was acknowledged as {first} but its retry answers {name}"
            );
        }
        assert!(names.insert(name.clone()), "calls share the client {name}");
    }
    let mut listed = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = register
            .list_clients(with_token(
                pb::ListClientsRequest {
                    parent: format!("agencies/{AGENCY}"),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("ListClients")
            .into_inner();
        listed.extend(page.clients.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let extra: Vec<_> = listed.difference(&names).collect();
    let missing: Vec<_> = names.difference(&listed).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{issued} calls: clients created twice or by no known call: {extra:?}; \
         clients answered but not listed: {missing:?}"
    );
}

/// Waits until health reports `want` for the register; after two minutes
/// (a hang, not slowness) fails with the server's log.
async fn until_health(up: &Up, want: ServingStatus) {
    for _ in 0..1200 {
        if let Ok(statuses) = up.health().await
            && statuses.iter().all(|s| *s == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = up.proc.stdout() + &up.proc.stderr();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    panic!(
        "health never reported {want:?}; last log lines, newest first:\n{}",
        tail.join("\n")
    );
}

async fn restart(mut up: Up, dir: &Path, store: &Store) -> Up {
    up.proc.kill9().await;
    Up::start_with(dir, &store.settings()).await
}

/// SIGKILL under load, restart, retry every call whose outcome was unknown:
/// every acknowledged and every retried call exists exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_under_load_every_call_exists_exactly_once() {
    touchstone_e2e::touchstone_bin();
    for store in stores().await {
        within(CRASH_TIMEOUT, "kill -9 under load", async {
            let dir = tempdir();
            let up = Up::start_with(dir.path(), &store.settings()).await;
            let token = mint_token(dir.path(), "officer").await;
            let load = Load::start(up.channel().await, &token, false);
            load.until_acknowledged(STEP).await;
            // The calls in flight now are cut off by the kill: their outcome
            // is unknown to the callers.
            load.halt();
            let mut up = up;
            up.proc.kill9().await;
            let (ledger, issued) = load.stop().await;
            let up = Up::start_with(dir.path(), &store.settings()).await;
            check_exactly_once(&up, &token, &ledger, issued).await;
            // And once more after a second crash, with nothing in flight.
            let up = restart(up, dir.path(), &store).await;
            check_exactly_once(&up, &token, &ledger, issued).await;
        })
        .await;
    }
}

/// A storage fault injected and removed under load: health is NOT_SERVING
/// during it, failed calls are UNAVAILABLE, writes succeed again without a
/// restart, and after a restart no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_fault_loses_no_acknowledged_write() {
    touchstone_e2e::touchstone_bin();
    for store in stores().await {
        let dir = tempdir();
        if matches!(store, Store::Sqlite) && !fault::available(dir.path()) {
            continue;
        }
        eprintln!("storage fault on {}", store.label());
        within(CRASH_TIMEOUT, "a storage fault under load", async {
            let up = Up::start_with(dir.path(), &store.settings()).await;
            let token = mint_token(dir.path(), "officer").await;
            let load = Load::start(up.channel().await, &token, true);
            load.until_acknowledged(STEP).await;

            let mut immutable = None;
            match &store {
                Store::Sqlite => {
                    immutable = Some(fault::Immutable::sqlite(&dir.path().join("register.db")));
                }
                Store::Postgres(pg) => {
                    pg.read_only(true).await;
                    pg.terminate_sessions().await;
                }
            }
            eprintln!("fault injected");
            until_health(&up, ServingStatus::NotServing).await;
            eprintln!("NOT_SERVING");
            let failed_before = load.failures();
            while load.failures() == failed_before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            match &store {
                Store::Sqlite => {
                    if let Some(mut immutable) = immutable.take() {
                        immutable.clear();
                    }
                }
                Store::Postgres(pg) => pg.read_only(false).await,
            }

            // Recovered without a restart: SERVING again, and writes succeed.
            eprintln!("fault removed");
            until_health(&up, ServingStatus::Serving).await;
            eprintln!("SERVING");
            let recovered = load.acknowledged();
            load.until_acknowledged(recovered + STEP).await;
            eprintln!("writes succeed again");
            let (ledger, issued) = load.stop().await;
            let codes: Vec<&String> = ledger.failures.keys().collect();
            assert!(
                codes.iter().all(|c| c.as_str() == "Unavailable"),
                "calls failed during the fault with {:?}, not only UNAVAILABLE",
                ledger.failures
            );
            assert!(
                !ledger.unknown.is_empty(),
                "no call failed during the fault"
            );
            check_exactly_once(&up, &token, &ledger, issued).await;

            // Nothing acknowledged was only in memory.
            let up = restart(up, dir.path(), &store).await;
            check_exactly_once(&up, &token, &ledger, issued).await;
            drop(up);
        })
        .await;
    }
}

/// Reads of personal data are answered only once their audit records are
/// durable (DESIGN §4: the audit records of concurrent reads share one
/// group commit): concurrent GetClient calls, SIGKILL while some are in
/// flight, restart; every answered read has its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_under_reads_every_answered_read_was_audited() {
    touchstone_e2e::touchstone_bin();
    for store in stores().await {
        within(CRASH_TIMEOUT, "kill -9 under reads", async {
            let dir = tempdir();
            let up = Up::start_with(dir.path(), &store.settings()).await;
            let officer = mint_token(dir.path(), "officer").await;
            let admin = mint_token(dir.path(), "agency_admin").await;
            let mut register = RegisterServiceClient::new(up.channel().await);
            let mut names = Vec::new();
            for i in 0..5 {
                let created = register
                    .create_client(with_token(create(10_000 + i), &officer))
                    .await
                    .expect("CreateClient")
                    .into_inner();
                names.push(created.name);
            }
            let answered: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
            let total = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..CALLERS * 4)
                .map(|r| {
                    let mut client = register.clone();
                    let (answered, total, stop) = (answered.clone(), total.clone(), stop.clone());
                    let (names, token) = (names.clone(), officer.clone());
                    tokio::spawn(async move {
                        let mut k = r;
                        while !stop.load(Ordering::Acquire) {
                            let name = &names[k % names.len()];
                            k += 1;
                            let req = pb::GetClientRequest { name: name.clone() };
                            if client.get_client(with_token(req, &token)).await.is_ok() {
                                *answered
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .entry(name.clone())
                                    .or_default() += 1;
                                total.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                    })
                })
                .collect();
            while total.load(Ordering::Acquire) < 300 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Reads are in flight now: the kill cuts them off.
            let mut up = up;
            up.proc.kill9().await;
            stop.store(true, Ordering::Release);
            for r in readers {
                r.await.expect("a reader");
            }
            let answered = std::mem::take(&mut *answered.lock().unwrap_or_else(|e| e.into_inner()));
            let up = Up::start_with(dir.path(), &store.settings()).await;
            let mut register = RegisterServiceClient::new(up.channel().await);
            let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
            let mut page_token = String::new();
            loop {
                let page = register
                    .list_audit_records(with_token(
                        pb::ListAuditRecordsRequest {
                            parent: format!("agencies/{AGENCY}"),
                            page_size: 1000,
                            page_token: page_token.clone(),
                            filter: "action = \"GetClient\"".into(),
                        },
                        &admin,
                    ))
                    .await
                    .expect("ListAuditRecords")
                    .into_inner();
                for r in page.audit_records {
                    *recorded.entry(r.resource).or_default() += 1;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            for (name, n) in &answered {
                let have = recorded.get(name).copied().unwrap_or(0);
                assert!(
                    have >= *n,
                    "{name}: {n} reads answered, {have} audit records after the kill"
                );
            }
            drop(up);
        })
        .await;
    }
}
