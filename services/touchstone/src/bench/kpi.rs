//! `touchstone bench --scenario kpi`: the kpi service on a fresh database,
//! measured against baselines in the same run and the same database:
//!
//! - `--kpi-events` survey responses (default 1 million, a year of them)
//!   applied through the real feedback-feed handler and consumer (cursor in
//!   the same transaction, pages of 500), against inserting the same
//!   responses as raw rows, 500 rows per multi-row INSERT and transaction;
//! - `QueryIndicator` for share satisfied, the year by month, through gRPC,
//!   against the same figure computed by a plain SQL aggregate over the raw
//!   rows; and the same split by unit (read from the fine cells). p50 of
//!   sequential calls.

use super::target::{self, Schema, Served};
use super::{BackendArg, BenchArgs, spinner};
use anyhow::{Context, bail};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::Channel;
use touchstone_api::common::v1::{Date, Event};
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::kpi::v1 as pb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_api::register::v1 as reg;
use touchstone_auth::{DevKey, Role, TokenRequest};
use touchstone_crypto::MasterKey;
use touchstone_kpi::feeds;
use touchstone_platform::config::Settings;
use touchstone_platform::consumer::{BoxFuture, EventPage, FeedSource};
use touchstone_platform::db::{Backend, Db};

const AGENCY: &str = "bench";
const UNITS: [&str; 4] = ["north", "south", "east", "west"];

const RAW_SQLITE: &str = "\
CREATE TABLE bench_raw_responses (
    agency TEXT NOT NULL, id BIGINT NOT NULL, day BIGINT NOT NULL, service TEXT NOT NULL,
    unit TEXT NOT NULL, channel BIGINT NOT NULL, segment TEXT NOT NULL, score BIGINT NOT NULL,
    PRIMARY KEY (agency, id));
CREATE INDEX bench_raw_responses_by_day ON bench_raw_responses (agency, day);";

const RAW_POSTGRES: &str = RAW_SQLITE;

/// The baseline: share satisfied per month from raw rows.
const RAW_AGGREGATE: &str = "SELECT day / 100, SUM(CASE WHEN score >= 4 THEN 1 ELSE 0 END), COUNT(*) \
    FROM bench_raw_responses WHERE agency = $1 AND day >= $2 AND day <= $3 GROUP BY 1 ORDER BY 1";

/// The baseline of the split: the same per month and unit.
const RAW_AGGREGATE_BY_UNIT: &str = "SELECT day / 100, unit, SUM(CASE WHEN score >= 4 THEN 1 ELSE 0 END), COUNT(*) \
    FROM bench_raw_responses WHERE agency = $1 AND day >= $2 AND day <= $3 GROUP BY 1, 2 ORDER BY 1, 2";

/// One synthetic response: deterministic in its number.
struct Synthetic {
    day: time::Date,
    unit: &'static str,
    channel: i32,
    segment: Option<reg::Characteristics>,
    satisfaction: i32,
}

/// A 64-bit mix (splitmix64's finaliser): deterministic pseudo-random bits
/// from a counter, for synthetic data.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Response `i` of `n`: submitted in order over 2025, as a feed delivers
/// them (a change feed is in commit order), with its unit, channel, segment
/// and score drawn at random.
fn synthetic(i: u64, n: u64) -> Synthetic {
    let r = mix(i);
    let start =
        time::Date::from_calendar_date(2025, time::Month::January, 1).unwrap_or(time::Date::MIN);
    let segment = !(r >> 20).is_multiple_of(4);
    Synthetic {
        day: start + time::Duration::days((i * 365 / n.max(1)) as i64),
        unit: UNITS[((r >> 9) % 4) as usize],
        channel: 1 + ((r >> 12) % 3) as i32,
        segment: segment.then(|| reg::Characteristics {
            age_band: 1 + ((r >> 14) % 8) as i32,
            disability: 1 + ((r >> 18) % 2) as i32,
            ..Default::default()
        }),
        satisfaction: 1 + ((r >> 24) % 5) as i32,
    }
}

/// A date on the wire.
pub(super) fn wire(d: time::Date) -> Date {
    Date {
        year: d.year(),
        month: i32::from(u8::from(d.month())),
        day: i32::from(d.day()),
    }
}

fn day_key(d: time::Date) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(u8::from(d.month())) * 100 + i64::from(d.day())
}

/// The feedback service's change feed as it would read: `n` responses.
struct Feed {
    n: u64,
}

impl FeedSource for Feed {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        let from = after.max(0) as u64;
        let to = (from + limit.max(1) as u64).min(self.n);
        let events = (from..to)
            .map(|i| {
                let s = synthetic(i, self.n);
                let m = fpb::ResponseSubmitted {
                    survey: format!("agencies/{AGENCY}/surveys/s"),
                    response: format!("agencies/{AGENCY}/surveys/s/responses/{i}"),
                    touchpoint: Some(fpb::Touchpoint {
                        service: "passports".into(),
                        unit: s.unit.into(),
                        channel: s.channel,
                        stage: String::new(),
                    }),
                    unit: s.unit.into(),
                    channel: s.channel,
                    day: Some(wire(s.day)),
                    scores: vec![fpb::ItemScore {
                        item: fpb::StandardItem::A11Satisfaction as i32,
                        score: s.satisfaction,
                    }],
                    segment: s.segment,
                    ..Default::default()
                };
                Event {
                    sequence: i as i64 + 1,
                    agency: AGENCY.into(),
                    r#type: "touchstone.feedback.v1.ResponseSubmitted".into(),
                    name: m.response.clone(),
                    occurred_time: None,
                    payload: prost_types::Any::from_msg(&m).ok(),
                }
            })
            .collect();
        let page = EventPage {
            events,
            remaining: (self.n - to) as i64,
        };
        Box::pin(async move { Ok(page) })
    }
}

/// Raw rows per INSERT statement and per transaction in the baseline.
const RAW_BATCH: u64 = 500;

async fn raw_insert(db: &Db, n: u64) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let end = (i + RAW_BATCH).min(n);
        let sql = format!(
            "INSERT INTO bench_raw_responses (agency, id, day, service, unit, channel, segment, score) \
             VALUES {}",
            db.backend().values_list((end - i) as usize, 8)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in i..end {
            let s = synthetic(j, n);
            let segment = s
                .segment
                .map(|c| format!("a{}d{}", c.age_band, c.disability))
                .unwrap_or_default();
            q = q
                .bind(AGENCY)
                .bind(j as i64)
                .bind(day_key(s.day))
                .bind("passports")
                .bind(s.unit)
                .bind(i64::from(s.channel))
                .bind(segment)
                .bind(i64::from(s.satisfaction));
        }
        let mut tx = db.pool().begin().await?;
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        i = end;
    }
    Ok(())
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Sequential calls of `f` for about `budget` (at least 5), in ms: p50 and count.
async fn time_calls<F, Fut>(budget: Duration, mut f: F) -> anyhow::Result<(f64, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?;
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (started.elapsed() < budget && times.len() < 200) {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let n = times.len();
    Ok((p50(times), n))
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
    println!("touchstone bench --scenario kpi ({build} build)");
    println!("command:  {}", super::command_line());
    if build == "debug" {
        println!("warning:  a debug build; build with --release for figures worth reporting");
    }
    let pool = args.pool.unwrap_or(settings.kpi.max_connections).max(1);
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let dev = DevKey::load_or_create(dir.path()).context("creating a signing key")?;
    let bar = spinner();
    bar.set_message("creating a fresh database");
    let schema = Schema {
        sets: touchstone_kpi::migration_sets().to_vec(),
        raw_sqlite: RAW_SQLITE,
        raw_postgres: RAW_POSTGRES,
        raw_table: "bench_raw_responses",
    };
    let fresh = match (args.backend, pg_url) {
        (BackendArg::Postgres, Some(url)) => {
            target::fresh_postgres_with(url, pool, &schema).await?
        }
        (BackendArg::Postgres, None) => bail!("--backend postgres needs --pg-url"),
        (BackendArg::Sqlite, _) => target::fresh_sqlite_with(dir.path(), pool, &schema).await?,
    };
    println!("database: {}; pool of {pool}", fresh.description);
    let routes = touchstone_kpi::routes(
        fresh.db.clone(),
        MasterKey::generate(),
        target::verifier(&dev)?,
        touchstone_stats::DEFAULT_K,
    );
    let served = Served::start(
        "kpi",
        touchstone_kpi::SERVICE_NAME,
        routes,
        fresh.db.clone(),
        settings.max_concurrent_per_connection,
    )
    .await?;
    let outcome = async {
        let n = args.kpi_events;
        bar.set_message(format!("applying {n} ResponseSubmitted events through the feedback-feed consumer"));
        let started = Instant::now();
        let applied = feeds::catch_up_feedback(&fresh.db, &Feed { n })
            .await
            .map_err(|e| anyhow::anyhow!("consuming: {e}"))?;
        let consume_s = started.elapsed().as_secs_f64();
        bar.set_message(format!("inserting {n} raw rows"));
        let started = Instant::now();
        raw_insert(&fresh.db, n).await?;
        let raw_s = started.elapsed().as_secs_f64();
        if let Some(admin) = fresh.admin() {
            for t in [
                "kpi_cells",
                "kpi_unit_days",
                "kpi_day_totals",
                "bench_raw_responses",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {t}")))
                    .execute(admin.pool())
                    .await?;
            }
        }
        let cells: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM kpi_cells")
            .fetch_one(fresh.admin().unwrap_or(&fresh.db).pool())
            .await
            .unwrap_or(-1);
        bar.finish_and_clear();
        println!("\n{applied} events applied in {consume_s:.1}s: {:.0} events/s", applied as f64 / consume_s);
        println!("{n} raw rows inserted in {raw_s:.1}s: {:.0} rows/s", n as f64 / raw_s);
        println!(
            "ratio events applied / raw rows inserted per second: {:.2}  ({cells} rollup cells for {n} events)",
            (applied as f64 / consume_s) / (n as f64 / raw_s)
        );

        let token = dev.mint(&TokenRequest {
            subject: "bench".into(),
            agency: Some(AGENCY.into()),
            agencies: None,
            roles: vec![Role::Analyst],
            ttl: Duration::from_secs(3600),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
        })?;
        let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}").parse()?;
        let channel = Channel::from_shared(format!("http://{}", served.addr))?.connect().await?;
        let client = KpiServiceClient::new(channel);
        let (from, to) = (20250101_i64, 20251231_i64);
        let budget = args.duration;
        // The timed call: share satisfied for 2025 by month.
        let request = |group_by: pb::Dimension| {
            let mut r = Request::new(pb::QueryIndicatorRequest {
                agency: format!("agencies/{AGENCY}"),
                indicator: "share_satisfied.a11_satisfaction".into(),
                start_date: Some(Date { year: 2025, month: 1, day: 1 }),
                end_date: Some(Date { year: 2025, month: 12, day: 31 }),
                granularity: pb::Granularity::Month as i32,
                group_by: group_by as i32,
                scope: None,
            });
            r.metadata_mut().insert("authorization", header.clone());
            r
        };
        let mut results = Vec::new();
        for (label, group_by, raw_sql) in [
            ("year by month", pb::Dimension::Unspecified, RAW_AGGREGATE),
            ("year by month, split by unit", pb::Dimension::Unit, RAW_AGGREGATE_BY_UNIT),
        ] {
            let service = time_calls(budget, || {
                let mut client = client.clone();
                let r = request(group_by);
                async move {
                    let out = client.query_indicator(r).await?.into_inner();
                    anyhow::ensure!(!out.series.is_empty(), "no series");
                    Ok(())
                }
            })
            .await?;
            let hand = time_calls(budget, || {
                let pool = fresh.db.pool().clone();
                async move {
                    let rows = sqlx::query(raw_sql)
                        .bind(AGENCY)
                        .bind(from)
                        .bind(to)
                        .fetch_all(&pool)
                        .await?;
                    anyhow::ensure!(!rows.is_empty(), "no rows");
                    Ok(())
                }
            })
            .await?;
            // Cold: the agency's rollup version moved before each call (as
            // after a feed page), so the table is read and decided again.
            // (As the tables' owner: on PostgreSQL the service's role sees
            // no agency's row outside a transaction scoped to it.)
            let owner = fresh.admin().unwrap_or(&fresh.db);
            let mut cold_times = Vec::new();
            for _ in 0..20 {
                let bumped =
                    sqlx::query("UPDATE kpi_versions SET version = version + 1 WHERE agency = $1")
                        .bind(AGENCY)
                        .execute(owner.pool())
                        .await?;
                anyhow::ensure!(bumped.rows_affected() == 1, "no rollup version to move");
                let r = request(group_by);
                let t = Instant::now();
                client.clone().query_indicator(r).await?;
                cold_times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let cold = (p50(cold_times), 20);
            results.push((label, service, hand, cold));
        }
        println!("\nshare satisfied, 2025 by month, at {n} responses (p50 of sequential calls):");
        for (label, service, hand, cold) in &results {
            println!(
                "  {label:<30} QueryIndicator (gRPC) {:>9.2} ms ({} calls)   raw SQL aggregate {:>9.2} ms ({} calls)   ratio {:.1}x",
                service.0, service.1, hand.0, hand.1, hand.0 / service.0.max(1e-9)
            );
            println!(
                "  {:<30} QueryIndicator, rollups changed before each call {:>9.2} ms ({} calls)   ratio {:.1}x",
                "", cold.0, cold.1, hand.0 / cold.0.max(1e-9)
            );
        }
        if fresh.backend() == Backend::Sqlite {
            println!("(SQLite: the raw aggregate runs in-process, without gRPC, auth or interval computation)");
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    served.stop().await;
    fresh.cleanup().await;
    outcome
}
