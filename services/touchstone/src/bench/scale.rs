//! `touchstone bench --scenario scale --backend postgres`: the complaints
//! service of a hub of `--agencies` agencies on one fresh PostgreSQL
//! database, measured at each of `--sizes` stored complaints (default 1M,
//! then 5M), so that how each figure grows with the data is read off one
//! run:
//!
//! - intake: `CreateComplaint` req/s (anonymous, a fresh `request_id` each,
//!   spread over the agencies) at `--connections` × `--in-flight`;
//! - the overdue list: `ListComplaints(filter "overdue = true", order_by
//!   "due_time")`, one page of 50, called one after another, each call for
//!   the next agency in turn: p50 and p99;
//! - what one complaint taken through the API costs PostgreSQL: database
//!   bytes and WAL bytes per complaint over the intake window (the inputs of
//!   the sizing model in docs/operations.md).
//!
//! - why the overdue list grows: `EXPLAIN (ANALYZE, BUFFERS)` of the list's
//!   query for twenty agencies (shared-buffer pages hit and read per call,
//!   execution time), beside the table's size and `shared_buffers`;
//! - with `--responses-per-complaint` above 0, the survey side of the hub
//!   at that many responses per complaint (see `hub`): `QueryIndicator`,
//!   `QueryIndicatorAcrossAgencies` and `GetDashboard`, and the feedback
//!   and KPI databases' sizes.
//!
//! The stored complaints are written straight into the table (one in twenty
//! open and overdue, each with its own sealed document; see
//! `complaints::bulk_load`): the list reads them as it reads any.

use super::complaints::{HAND_SQL, anonymous, bulk_load, schema, token_for};
use super::hub::{Figures, Hub};
use super::load::{self, Measured, Op, Window};
use super::target;
use super::{BackendArg, BenchArgs, connect, spinner, with_auth};
use anyhow::{Context, bail};
use std::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use touchstone_api::complaints::v1 as pb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_auth::{DevKey, Role};
use touchstone_crypto::MasterKey;
use touchstone_platform::config::Settings;
use touchstone_platform::keyring::Keyring;

/// One size's figures.
struct Row {
    stored: u64,
    load_secs: f64,
    intake: Measured,
    overdue: Measured,
    db_bytes_per_complaint: f64,
    wal_bytes_per_complaint: f64,
    explained: Explained,
    survey: Option<Figures>,
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the overdue list's query, averaged over
/// agencies, with what it reads from.
#[derive(Default)]
struct Explained {
    calls: usize,
    hit: f64,
    read: f64,
    exec_ms: f64,
    table_bytes: i64,
    shared_buffers: String,
}

pub(super) async fn run(
    args: &BenchArgs,
    pg_url: Option<&str>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let (BackendArg::Postgres, Some(url)) = (args.backend, pg_url) else {
        bail!("--scenario scale runs on PostgreSQL: add --backend postgres and --pg-url");
    };
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || args.agencies == 0 {
        bail!("--sizes and --agencies must name at least one size and one agency");
    }
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("touchstone bench --scenario scale ({build} build)");
    println!("command:  {}", super::command_line());
    let pool = args
        .pool
        .unwrap_or(settings.complaints.max_connections)
        .max(1);
    let window = Window {
        warmup: args.warmup,
        duration: args.duration,
    };
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let dev = DevKey::load_or_create(dir.path()).context("creating a signing key")?;
    let agencies: Vec<String> = (0..args.agencies).map(|i| format!("hub-{i:04}")).collect();
    let tokens = agencies
        .iter()
        .map(|a| token_for(&dev, a, &[Role::Officer]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bar = spinner();
    bar.set_message("creating a fresh database");
    let fresh = target::fresh_postgres_with(url, pool, &schema()).await?;
    let admin = fresh
        .admin()
        .context("a PostgreSQL run has an owner connection")?
        .clone();
    println!(
        "database: {}; pool of {pool}; {} agencies",
        fresh.description,
        agencies.len()
    );
    let master = MasterKey::generate();
    let served = super::complaints::serve(&fresh, &master, &dev, settings).await?;
    let keys = Keyring::new(master, fresh.db.clone());
    let mut hub = None;
    let outcome = async {
        if args.responses_per_complaint > 0 {
            bar.set_message("starting feedback, KPI and the gateway; a survey per agency");
            hub = Some(Hub::start(url, pool, settings, &dev, served.addr, &agencies).await?);
        }
        let channels = connect(served.addr, args.connections).await?;
        let mut stored = 0u64;
        let mut rows = Vec::new();
        for &size in &sizes {
            let started = Instant::now();
            let add = size.saturating_sub(stored);
            let per = add / agencies.len() as u64;
            let extra = add % agencies.len() as u64;
            for (i, agency) in agencies.iter().enumerate() {
                let n = per + u64::from((i as u64) < extra);
                bar.set_message(format!(
                    "storing complaints: {} of {size}",
                    stored + per * i as u64
                ));
                if n > 0 {
                    bulk_load(&fresh.db, &keys, agency, n).await?;
                }
            }
            stored = stored.max(size);
            // Statistics for the planner, and the loaded pages written out,
            // so that no checkpoint of the load runs during the measurements.
            for stmt in ["ANALYZE", "CHECKPOINT"] {
                sqlx::query(stmt)
                    .execute(admin.pool())
                    .await
                    .context(stmt)?;
            }
            let load_secs = started.elapsed().as_secs_f64();

            let (db_before, wal_before) = sizes_now(&admin).await?;
            let workers = args.connections * args.in_flight;
            let ops: Vec<_> = (0..workers)
                .map(|w| IntakeOp {
                    client: ComplaintsServiceClient::new(channels[w % channels.len()].clone()),
                    agencies: agencies.clone(),
                    tokens: tokens.clone(),
                    next: w,
                    step: workers,
                })
                .collect();
            bar.set_message(format!("intake at {stored} complaints"));
            let intake = load::run("CreateComplaint", ops, window, &bar).await;
            let (db_after, wal_after) = sizes_now(&admin).await?;
            let created: i64 =
                sqlx::query_scalar("SELECT count(*) FROM complaints WHERE create_time > 0")
                    .fetch_one(admin.pool())
                    .await?;
            let taken = (created as u64).saturating_sub(stored).max(1) as f64;
            stored = created as u64;

            bar.set_message(format!("overdue lists at {stored} complaints"));
            let overdue = load::run(
                "overdue list",
                vec![OverdueOp {
                    client: ComplaintsServiceClient::new(channels[0].clone()),
                    agencies: agencies.clone(),
                    tokens: tokens.clone(),
                    next: 0,
                }],
                window,
                &bar,
            )
            .await;
            let explained = explain_overdue(&admin, &agencies).await?;
            let survey = match hub.as_mut() {
                Some(h) => Some(
                    h.measure(
                        size.saturating_mul(args.responses_per_complaint),
                        window,
                        args.connections * args.in_flight,
                        &bar,
                    )
                    .await?,
                ),
                None => None,
            };
            rows.push(Row {
                stored,
                load_secs,
                intake,
                overdue,
                db_bytes_per_complaint: (db_after - db_before).max(0) as f64 / taken,
                wal_bytes_per_complaint: (wal_after - wal_before).max(0) as f64 / taken,
                explained,
                survey,
            });
        }
        bar.finish_and_clear();
        print_rows(&rows, agencies.len());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Some(h) = hub {
        h.stop().await;
    }
    served.stop().await;
    fresh.cleanup().await;
    outcome
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the overdue list's query for twenty
/// agencies spread over the hub (as the owner, which row-level security
/// does not filter; the query names the agency as the service's does).
async fn explain_overdue(
    admin: &touchstone_platform::db::Db,
    agencies: &[String],
) -> anyhow::Result<Explained> {
    let mut out = Explained::default();
    let step = (agencies.len() / 20).max(1);
    for agency in agencies.iter().step_by(step).take(20) {
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS) {HAND_SQL}"
        )))
        .bind(agency)
        .bind(touchstone_platform::times::now_millis())
        .fetch_all(admin.pool())
        .await
        .context("EXPLAIN of the overdue list")?;
        let (hit, read, exec) = explained(&lines);
        out.hit += hit;
        out.read += read;
        out.exec_ms += exec;
        out.calls += 1;
    }
    let n = out.calls.max(1) as f64;
    out.hit /= n;
    out.read /= n;
    out.exec_ms /= n;
    (out.table_bytes, out.shared_buffers) = sqlx::query_as(
        "SELECT pg_total_relation_size('complaints'), current_setting('shared_buffers')",
    )
    .fetch_one(admin.pool())
    .await
    .context("reading the table's size")?;
    Ok(out)
}

/// The database's size and the WAL position, in bytes.
pub(super) async fn sizes_now(admin: &touchstone_platform::db::Db) -> anyhow::Result<(i64, i64)> {
    let (db, wal): (i64, i64) = sqlx::query_as(
        "SELECT pg_database_size(current_database()), \
         pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::BIGINT",
    )
    .fetch_one(admin.pool())
    .await
    .context("reading the database size and WAL position")?;
    Ok((db, wal))
}

/// From the text of `EXPLAIN (ANALYZE, BUFFERS)`: the top node's shared
/// pages hit and read (its first `Buffers:` line, which includes its
/// children's) and the execution time in ms.
fn explained(lines: &[String]) -> (f64, f64, f64) {
    let field = |line: &str, key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let buffers = lines
        .iter()
        .find(|l| l.trim_start().starts_with("Buffers: shared"))
        .map_or((0.0, 0.0), |l| (field(l, "hit="), field(l, "read=")));
    let exec = lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("Execution Time: "))
        .and_then(|v| v.trim_end_matches(" ms").parse().ok())
        .unwrap_or(0.0);
    (buffers.0, buffers.1, exec)
}

fn print_rows(rows: &[Row], agencies: usize) {
    println!();
    println!(
        "{:>10} {:>9} {:>12} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "stored",
        "load s",
        "intake/s",
        "intake p99",
        "overdue p50",
        "overdue p99",
        "DB B/cmp",
        "WAL B/cmp"
    );
    for r in rows {
        println!(
            "{:>10} {:>9.0} {:>12.0} {:>8.1}ms {:>10.2}ms {:>10.2}ms {:>10.0} {:>10.0}",
            r.stored,
            r.load_secs,
            r.intake.per_second,
            r.intake.p99_ms,
            r.overdue.p50_ms,
            r.overdue.p99_ms,
            r.db_bytes_per_complaint,
            r.wal_bytes_per_complaint
        );
        for (k, v) in r.intake.error_kinds.iter().chain(&r.overdue.error_kinds) {
            println!("  error {k} x{v}");
        }
        let e = &r.explained;
        println!(
            "  overdue list's query, EXPLAIN (ANALYZE, BUFFERS) over {} agencies: {:.1} pages hit, \
             {:.1} read into shared buffers per call, {:.2} ms executing; complaints and its \
             indexes {:.2} GB, shared_buffers {}",
            e.calls,
            e.hit,
            e.read,
            e.exec_ms,
            e.table_bytes as f64 / 1e9,
            e.shared_buffers
        );
        if let Some(f) = &r.survey {
            println!(
                "  survey side at {} responses (stored and rollups rebuilt in {:.0} s; {} rollup \
                 cells; feedback DB {:.2} GB, KPI DB {:.2} GB; {} agencies' figures equal to a \
                 count of the raw responses):",
                f.responses,
                f.load_secs,
                f.rollup_cells,
                f.feedback_bytes as f64 / 1e9,
                f.kpi_bytes as f64 / 1e9,
                f.checked
            );
            println!(
                "    SubmitResponse {:>8.0} req/s (p99 {:.1} ms); {:.0} database and {:.0} WAL bytes per response taken",
                f.submit.per_second,
                f.submit.p99_ms,
                f.db_bytes_per_response,
                f.wal_bytes_per_response
            );
            for m in [&f.query, &f.across, &f.dashboard] {
                println!(
                    "    {:<30} p50 {:>8.2} ms   p99 {:>8.2} ms   ({} calls)",
                    m.scenario, m.p50_ms, m.p99_ms, m.ok
                );
                for (k, v) in &m.error_kinds {
                    println!("      error {k} x{v}");
                }
            }
        }
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let ratio = |a: f64, b: f64| a / b.max(1e-9);
        println!(
            "growth from {} to {} complaints ({agencies} agencies), last / first:",
            first.stored, last.stored
        );
        println!(
            "  intake req/s       {:.2}",
            ratio(last.intake.per_second, first.intake.per_second)
        );
        println!(
            "  overdue list p50   {:.2}",
            ratio(last.overdue.p50_ms, first.overdue.p50_ms)
        );
        println!(
            "  overdue list p99   {:.2}",
            ratio(last.overdue.p99_ms, first.overdue.p99_ms)
        );
        if let (Some(a), Some(b)) = (&first.survey, &last.survey) {
            println!("  from {} to {} responses:", a.responses, b.responses);
            for (x, y) in [
                (&a.query, &b.query),
                (&a.across, &b.across),
                (&a.dashboard, &b.dashboard),
            ] {
                println!(
                    "  {:<30} p50 {:.2}   p99 {:.2}",
                    x.scenario,
                    ratio(y.p50_ms, x.p50_ms),
                    ratio(y.p99_ms, x.p99_ms)
                );
            }
        }
    }
}

/// One `CreateComplaint` for the next agency of this worker's share.
struct IntakeOp {
    client: ComplaintsServiceClient<Channel>,
    agencies: Vec<String>,
    tokens: Vec<MetadataValue<Ascii>>,
    next: usize,
    step: usize,
}

impl Op for IntakeOp {
    async fn call(&mut self) -> Result<(), String> {
        let i = self.next % self.agencies.len();
        self.next = self.next.wrapping_add(self.step.max(1));
        let request = with_auth(
            pb::CreateComplaintRequest {
                parent: format!("agencies/{}", self.agencies[i]),
                complaint: Some(anonymous()),
                complaint_id: String::new(),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
            &self.tokens[i],
        );
        self.client
            .create_complaint(request)
            .await
            .map(drop)
            .map_err(|s| format!("{:?}", s.code()))
    }
}

/// One page of the next agency's overdue list.
struct OverdueOp {
    client: ComplaintsServiceClient<Channel>,
    agencies: Vec<String>,
    tokens: Vec<MetadataValue<Ascii>>,
    next: usize,
}

impl Op for OverdueOp {
    async fn call(&mut self) -> Result<(), String> {
        let i = self.next % self.agencies.len();
        self.next = self.next.wrapping_add(1);
        let request = with_auth(
            pb::ListComplaintsRequest {
                parent: format!("agencies/{}", self.agencies[i]),
                filter: "overdue = true".into(),
                order_by: "due_time".into(),
                page_size: 50,
                ..Default::default()
            },
            &self.tokens[i],
        );
        let page = self
            .client
            .list_complaints(request)
            .await
            .map_err(|s| format!("{:?}", s.code()))?
            .into_inner();
        if page.complaints.is_empty() {
            return Err("empty overdue list".into());
        }
        Ok(())
    }
}
