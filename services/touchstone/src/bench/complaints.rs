//! `touchstone bench --scenario complaints`: the complaints service on a
//! fresh database, measured against baselines in the same run:
//!
//! - `CreateComplaint` (anonymous, with a request id, as an agency's web form
//!   sends it) against the bare tonic echo, same connections and requests in
//!   flight;
//! - the same against a raw single-row insert of a complaint-shaped row into
//!   a scratch table of the same database, one transaction each;
//! - `ListComplaints` with `overdue = true` ordered by due time, one page of
//!   50, at `--complaints` stored complaints (default 1 million), against the
//!   same query written by hand in SQL on the same pool: p50 latencies of
//!   sequential calls.

use super::load::{self, Measured, Op, Window};
use super::target::{self, Schema, Served};
use super::{
    AGENCY, BackendArg, BenchArgs, EchoOp, connect, echo, sample_client, spinner, with_auth,
};
use anyhow::{Context, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use touchstone_api::complaints::v1 as pb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_auth::{DevKey, Role, ServiceToken, TokenRequest};
use touchstone_complaints::domain::{Standard, State, Status};
use touchstone_crypto::MasterKey;
use touchstone_platform::config::Settings;
use touchstone_platform::db::{Backend, Db, Scope};
use touchstone_platform::keyring::Keyring;

/// The raw baseline's table: the columns, keys and indexes of `complaints`.
const RAW_SQLITE: &str = "\
CREATE TABLE bench_raw_complaints (
    agency TEXT NOT NULL, id TEXT NOT NULL, client_id TEXT NOT NULL, client_check INTEGER NOT NULL,
    anonymous INTEGER NOT NULL, channel INTEGER NOT NULL, service TEXT NOT NULL,
    category TEXT NOT NULL, unit TEXT NOT NULL, officer TEXT NOT NULL, severity INTEGER NOT NULL,
    status INTEGER NOT NULL, stage INTEGER NOT NULL, senior_queue INTEGER NOT NULL,
    receive_time INTEGER NOT NULL, due_time INTEGER NOT NULL, overdue_from INTEGER,
    accessibility TEXT NOT NULL, state TEXT NOT NULL, personal BLOB, redacted INTEGER NOT NULL,
    revision INTEGER NOT NULL, create_time INTEGER NOT NULL, update_time INTEGER NOT NULL,
    PRIMARY KEY (agency, id));
CREATE INDEX bench_raw_complaints_by_receipt ON bench_raw_complaints (agency, receive_time);
CREATE INDEX bench_raw_complaints_by_due ON bench_raw_complaints (agency, due_time, id);
CREATE INDEX bench_raw_complaints_by_officer ON bench_raw_complaints (agency, officer, status);
CREATE INDEX bench_raw_complaints_by_client ON bench_raw_complaints (agency, client_id);";

const RAW_POSTGRES: &str = "\
CREATE TABLE bench_raw_complaints (
    agency TEXT NOT NULL, id TEXT NOT NULL, client_id TEXT NOT NULL, client_check BIGINT NOT NULL,
    anonymous BOOLEAN NOT NULL, channel BIGINT NOT NULL, service TEXT NOT NULL,
    category TEXT NOT NULL, unit TEXT NOT NULL, officer TEXT NOT NULL, severity BIGINT NOT NULL,
    status BIGINT NOT NULL, stage BIGINT NOT NULL, senior_queue BOOLEAN NOT NULL,
    receive_time BIGINT NOT NULL, due_time BIGINT NOT NULL, overdue_from BIGINT,
    accessibility TEXT NOT NULL, state TEXT NOT NULL, personal BYTEA, redacted BOOLEAN NOT NULL,
    revision BIGINT NOT NULL, create_time BIGINT NOT NULL, update_time BIGINT NOT NULL,
    PRIMARY KEY (agency, id));
CREATE INDEX bench_raw_complaints_by_receipt ON bench_raw_complaints (agency, receive_time);
CREATE INDEX bench_raw_complaints_by_due ON bench_raw_complaints (agency, due_time, id);
CREATE INDEX bench_raw_complaints_by_officer ON bench_raw_complaints (agency, officer, status);
CREATE INDEX bench_raw_complaints_by_client ON bench_raw_complaints (agency, client_id);";

const COLUMNS: &str = "agency, id, client_id, client_check, anonymous, channel, service, category, \
    unit, officer, severity, status, stage, senior_queue, receive_time, due_time, overdue_from, \
    accessibility, state, personal, redacted, revision, create_time, update_time";

/// The hand-written query the `overdue` list is compared with: the same
/// page, the same columns.
pub(super) const HAND_SQL: &str = "SELECT agency, id, client_id, client_check, anonymous, channel, service, \
    accessibility, state, personal, redacted, revision, create_time, update_time, due_time \
    FROM complaints WHERE agency = $1 AND overdue_from <= $2 ORDER BY due_time, id LIMIT 51";

const DESCRIPTION: &str = "The passport renewal took eleven weeks and nobody answered the phone.";

/// The complaints service on `fresh` with `master`, without its background
/// tasks (no register to check with), accepting tokens of `dev`.
pub(super) async fn serve(
    fresh: &target::FreshDb,
    master: &MasterKey,
    dev: &DevKey,
    settings: &Settings,
) -> anyhow::Result<Served> {
    let peers = touchstone_complaints::Peers::connect("http://127.0.0.1:9", ServiceToken::None)?;
    let (routes, tasks) = touchstone_complaints::start(
        fresh.db.clone(),
        master.clone(),
        target::verifier(dev)?,
        peers,
    );
    for t in tasks {
        t.abort();
    }
    Served::start(
        "complaints",
        touchstone_complaints::SERVICE_NAME,
        routes,
        fresh.db.clone(),
        settings.max_concurrent_per_connection,
    )
    .await
}

/// The complaints service's tables and the raw baseline's.
pub(super) fn schema() -> Schema {
    Schema {
        sets: touchstone_complaints::migration_sets().to_vec(),
        raw_sqlite: RAW_SQLITE,
        raw_postgres: RAW_POSTGRES,
        raw_table: "bench_raw_complaints",
    }
}

pub(super) async fn run(
    args: &BenchArgs,
    pg_url: Option<&str>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("touchstone bench --scenario complaints ({build} build)");
    println!("command:  {}", super::command_line());
    if build == "debug" {
        println!("warning:  a debug build; build with --release for figures worth reporting");
    }
    let pool = args
        .pool
        .unwrap_or(settings.complaints.max_connections)
        .max(1);
    let window = Window {
        warmup: args.warmup,
        duration: args.duration,
    };
    let workers = args.connections * args.in_flight;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let dev = DevKey::load_or_create(dir.path()).context("creating a signing key")?;
    let auth = token(&dev, &[Role::Officer])?;
    let bar = spinner();
    bar.set_message("creating a fresh database");
    let schema = schema();
    let fresh = match (args.backend, pg_url) {
        (BackendArg::Postgres, Some(url)) => {
            target::fresh_postgres_with(url, pool, &schema).await?
        }
        (BackendArg::Postgres, None) => bail!("--backend postgres needs --pg-url"),
        (BackendArg::Sqlite, _) => target::fresh_sqlite_with(dir.path(), pool, &schema).await?,
    };
    println!("database: {}; pool of {pool}", fresh.description);
    println!(
        "load:     {} connections x {} in flight; warm-up {:.1}s, window {:.1}s per scenario",
        args.connections,
        args.in_flight,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    let echo = echo::start().await.context("starting the echo server")?;
    let master = MasterKey::generate();
    let served = serve(&fresh, &master, &dev, settings).await?;
    let outcome = async {
        let mut results: Vec<Measured> = Vec::new();
        let channels = connect(echo.addr, args.connections).await?;
        let ops: Vec<_> = (0..workers)
            .map(|w| EchoOp {
                client: echo::EchoClient::new(channels[w % channels.len()].clone()),
                message: sample_client(0, 0),
                auth: auth.clone(),
            })
            .collect();
        results.push(load::run("echo", ops, window, &bar).await);
        let channels = connect(served.addr, args.connections).await?;
        let ops: Vec<_> = (0..workers)
            .map(|w| CreateOp {
                client: ComplaintsServiceClient::new(channels[w % channels.len()].clone()),
                auth: auth.clone(),
            })
            .collect();
        results.push(load::run("CreateComplaint", ops, window, &bar).await);
        let lock =
            (fresh.backend() == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let ops: Vec<_> = (0..workers)
            .map(|_| RawOp {
                pool: fresh.db.pool().clone(),
                lock: lock.clone(),
            })
            .collect();
        results.push(load::run("raw insert", ops, window, &bar).await);
        print_rates(&results);

        let n = args.complaints;
        bar.set_message(format!("storing {n} complaints for the overdue list"));
        let started = Instant::now();
        let keys = Keyring::new(master, fresh.db.clone());
        let overdue = bulk_load(&fresh.db, &keys, AGENCY, n).await?;
        // Statistics for the planners, as a running system has them
        // (autovacuum on PostgreSQL; the overdue list does not depend on
        // them on SQLite, where only the due-time index serves it).
        let owner = fresh.admin().unwrap_or(&fresh.db);
        sqlx::query("ANALYZE complaints")
            .execute(owner.pool())
            .await?;
        println!(
            "\nstored {n} complaints ({overdue} open and overdue) in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let client = ComplaintsServiceClient::new(channels[0].clone());
        bar.set_message("timing the overdue list");
        let (service, hand, rows) =
            overdue_latency(client, &auth, &fresh.db, args.duration).await?;
        bar.finish_and_clear();
        println!("overdue list, one page of 50 ordered by due time, sequential calls:");
        println!("  ListComplaints (gRPC, audited)  p50 {:.2} ms", service.0);
        println!("  the same query by hand in SQL   p50 {:.2} ms", hand.0);
        println!(
            "  ratio service / hand SQL        {:.2}  ({} and {} calls; {rows} rows per page)",
            service.0 / hand.0.max(1e-9),
            service.1,
            hand.1
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    served.stop().await;
    echo.stop().await;
    fresh.cleanup().await;
    outcome
}

fn token(dev: &DevKey, roles: &[Role]) -> anyhow::Result<MetadataValue<Ascii>> {
    token_for(dev, AGENCY, roles)
}

/// A bearer token of `agency` with `roles`, from the run's signing key.
pub(super) fn token_for(
    dev: &DevKey,
    agency: &str,
    roles: &[Role],
) -> anyhow::Result<MetadataValue<Ascii>> {
    let t = dev.mint(&TokenRequest {
        subject: "bench".into(),
        agency: Some(agency.into()),
        agencies: None,
        roles: roles.to_vec(),
        ttl: Duration::from_secs(3600),
        issuer: DevKey::ISSUER.into(),
        audience: DevKey::AUDIENCE.into(),
    })?;
    Ok(format!("Bearer {t}").parse()?)
}

fn print_rates(results: &[Measured]) {
    println!();
    println!(
        "{:<16} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "scenario", "ok", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
    for m in results {
        println!(
            "{:<16} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            m.scenario, m.ok, m.per_second, m.p50_ms, m.p90_ms, m.p99_ms, m.errors
        );
        for (k, v) in &m.error_kinds {
            println!("  {k} x{v}");
        }
    }
    let rate = |name: &str| {
        results
            .iter()
            .find(|m| m.scenario == name)
            .map(|m| m.per_second)
    };
    if let (Some(c), Some(e), Some(r)) = (rate("CreateComplaint"), rate("echo"), rate("raw insert"))
    {
        println!("ratios of req/s (same run):");
        println!("  CreateComplaint / echo        {:.3}", c / e.max(1e-9));
        println!("  CreateComplaint / raw insert  {:.3}", c / r.max(1e-9));
    }
}

pub(super) fn anonymous() -> pb::Complaint {
    pb::Complaint {
        complainant: Some(pb::Complainant {
            who: Some(pb::complainant::Who::Anonymous(true)),
        }),
        channel: touchstone_api::common::v1::Channel::Web as i32,
        unit: "passports-north".into(),
        service: "passport renewal".into(),
        category: "delay".into(),
        description: DESCRIPTION.into(),
        ..Default::default()
    }
}

struct CreateOp {
    client: ComplaintsServiceClient<Channel>,
    auth: MetadataValue<Ascii>,
}

impl Op for CreateOp {
    async fn call(&mut self) -> Result<(), String> {
        let request = with_auth(
            pb::CreateComplaintRequest {
                parent: format!("agencies/{AGENCY}"),
                complaint: Some(anonymous()),
                complaint_id: String::new(),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
            &self.auth,
        );
        self.client
            .create_complaint(request)
            .await
            .map(drop)
            .map_err(|s| format!("{:?}", s.code()))
    }
}

struct RawOp {
    pool: sqlx::AnyPool,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Op for RawOp {
    async fn call(&mut self) -> Result<(), String> {
        let _writer = match &self.lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let now = touchstone_platform::times::now_millis();
        let state =
            serde_json::to_string(&State::received(now, 2, "delay", "passports-north", false))
                .unwrap_or_default();
        let personal: Vec<u8> = DESCRIPTION.bytes().chain([0u8; 60]).collect();
        let run = async {
            let mut tx = self.pool.begin().await?;
            let sql = format!(
                "INSERT INTO bench_raw_complaints ({COLUMNS}) VALUES ($1, $2, '', 0, $3, 1, \
                 'passport renewal', 'delay', 'passports-north', '', 2, 1, 1, $4, $5, $6, $7, '{{}}', \
                 $8, $9, $10, 1, $5, $5)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(AGENCY)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(true)
                .bind(false)
                .bind(now)
                .bind(now + 172_800_000)
                .bind(now + 259_200_000)
                .bind(state)
                .bind(personal)
                .bind(false)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        run.await.map_err(|e| format!("database: {e}"))
    }
}

/// Stores `n` complaints directly (the list's cost does not depend on how
/// rows arrived), one in twenty open and overdue, the rest resolved long
/// ago; each with its own sealed personal document. Returns how many are
/// overdue.
/// `keys` must be the service's own keyring (over this database with its
/// master key), so the service reads back the key stored here.
pub(super) async fn bulk_load(
    db: &Db,
    keys: &Keyring,
    agency: &str,
    n: u64,
) -> anyhow::Result<u64> {
    const BATCH: u64 = 500;
    let mut tx = db.write(Scope::Agency(agency)).await?;
    let key = keys.data_key(&mut tx, agency).await?;
    tx.commit().await?;
    let year_ms: i64 = 365 * 86_400_000;
    let now = touchstone_platform::times::now_millis();
    let standard = Standard::default();
    let cal = touchstone_complaints::domain::default_calendar();
    let mut overdue = 0u64;
    let mut i = 0u64;
    while i < n {
        let rows = BATCH.min(n - i);
        let placeholders: Vec<String> = (0..rows)
            .map(|r| {
                let b = r * 12;
                format!(
                    "(${}, ${}, '', 0, ${}, 1, 'passport renewal', 'delay', 'passports-north', '', 2, \
                     ${}, 1, ${}, ${}, ${}, ${}, '{{}}', ${}, ${}, ${}, 1, ${}, ${})",
                    b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11, b + 12, b + 12
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO complaints ({COLUMNS}) VALUES {}",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in 0..rows {
            let k = i + r;
            let id = uuid::Uuid::now_v7().to_string();
            let receive = now - year_ms + (k as i64 * year_ms) / n as i64;
            let is_overdue = k.is_multiple_of(20) && receive < now - 30 * 86_400_000;
            let mut state = State::received(receive, 2, "delay", "passports-north", false);
            if !is_overdue {
                state.status = Status::Closed;
                state.acknowledge_time = Some(receive + 86_400_000);
                state.resolve_time = Some(receive + 5 * 86_400_000);
                state.end_time = Some(receive + 6 * 86_400_000);
            }
            let clocks = state.clocks(&cal, &standard, now);
            if is_overdue {
                overdue += 1;
            }
            let personal = serde_json::json!({
                "contact": null, "description": DESCRIPTION,
                "remedy_sought": "", "resolution_summary": ""
            });
            let sealed = key.seal(
                format!("complaints/{agency}/{id}/personal").as_bytes(),
                personal.to_string().as_bytes(),
            );
            q = q
                .bind(agency)
                .bind(id)
                .bind(true)
                .bind(state.status.proto() as i64)
                .bind(false)
                .bind(receive)
                .bind(clocks.due_time.unwrap_or(i64::MAX))
                .bind(clocks.overdue_from)
                .bind(serde_json::to_string(&state)?)
                .bind(sealed)
                .bind(false)
                .bind(receive);
        }
        let mut tx = db.write(Scope::Agency(agency)).await?;
        q.execute(tx.conn()).await?;
        tx.commit().await?;
        i += rows;
    }
    Ok(overdue)
}

/// p50 and count of sequential `ListComplaints(overdue = true)` calls and of
/// the hand-written query, each for about `window`.
async fn overdue_latency(
    mut client: ComplaintsServiceClient<Channel>,
    auth: &MetadataValue<Ascii>,
    db: &Db,
    window: Duration,
) -> anyhow::Result<((f64, usize), (f64, usize), usize)> {
    let request = || {
        with_auth(
            pb::ListComplaintsRequest {
                parent: format!("agencies/{AGENCY}"),
                filter: "overdue = true".into(),
                order_by: "due_time".into(),
                page_size: 50,
                ..Default::default()
            },
            auth,
        )
    };
    let mut rows = 0;
    let mut service = Vec::new();
    let until = Instant::now() + window;
    while Instant::now() < until || service.len() < 20 {
        let t = Instant::now();
        let page = client.list_complaints(request()).await?.into_inner();
        service.push(t.elapsed().as_secs_f64() * 1000.0);
        rows = page.complaints.len();
    }
    let mut hand = Vec::new();
    let until = Instant::now() + window;
    while Instant::now() < until || hand.len() < 20 {
        let t = Instant::now();
        let mut tx = db.read(Scope::Agency(AGENCY)).await?;
        let found = sqlx::query(HAND_SQL)
            .bind(AGENCY)
            .bind(touchstone_platform::times::now_millis())
            .fetch_all(tx.conn())
            .await?;
        tx.commit().await?;
        hand.push(t.elapsed().as_secs_f64() * 1000.0);
        if found.is_empty() {
            bail!("the hand-written query found nothing");
        }
    }
    Ok((
        (median(&mut service), service.len()),
        (median(&mut hand), hand.len()),
        rows,
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
