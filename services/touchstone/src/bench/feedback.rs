//! `touchstone bench --scenario feedback`: the feedback service on a fresh
//! database, measured against baselines in the same run:
//!
//! - `SubmitResponse` (an A-11 response with a comment, anonymous) against
//!   the bare tonic echo, with the same connections and requests in flight;
//! - `ImportResponses` rows per second (one client stream of `--import-rows`
//!   rows) against two raw batched inserts in the same database (multi-row
//!   INSERTs of 200 responses per transaction, split into statements of at
//!   most as many parameters as the service's own store binds), into scratch
//!   tables shaped like the service's: (1) of everything an imported row
//!   makes durable — its `responses` row, a `response_scores` row per scored
//!   answer, its audit record and its outbox event (of the size the service's
//!   events had) — against which the aim is judged, as a CreateClient is
//!   judged against a raw insert of what it must make durable; and (2) of the
//!   `responses` rows alone, the baseline of earlier runs, kept for
//!   comparison.

use super::load::{self, Measured, Op, Window};
use super::{
    AGENCY, BackendArg, BenchArgs, EchoOp, connect, echo, sample_client, spinner, with_auth,
};
use anyhow::{Context, bail};
use sqlx::ConnectOptions as _;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use touchstone_api::feedback::v1 as pb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_auth::{AuthConfig, DevKey, Role, ServiceToken, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::config::Settings;
use touchstone_platform::db::Db;

/// Rows per transaction of the raw baseline, as the service writes imports.
const RAW_BATCH: usize = 200;
/// Parameters per raw INSERT statement, as the service's store binds them
/// (anonymous `?` on SQLite, see `Backend::values_list`).
fn raw_params(backend: touchstone_platform::db::Backend) -> usize {
    match backend {
        touchstone_platform::db::Backend::Sqlite => 10_000,
        touchstone_platform::db::Backend::Postgres => 30_000,
    }
}

/// The scratch table of the raw baseline: the columns, keys and indexes of `responses`.
const RAW_TABLE: &str = "\
CREATE TABLE bench_raw_responses (
    agency TEXT NOT NULL, id TEXT NOT NULL, survey_id TEXT NOT NULL, channel BIGINT NOT NULL,
    unit TEXT NOT NULL, submit_time BIGINT NOT NULL, transaction_id TEXT, import_key TEXT,
    client_id TEXT, contact_agreed BOOLEAN NOT NULL, characteristics TEXT, answers TEXT NOT NULL,
    originals BLOB_TYPE, sentiment BIGINT, anonymous BOOLEAN NOT NULL, follow_up_id TEXT,
    erased BOOLEAN NOT NULL DEFAULT FALSE, create_time BIGINT NOT NULL,
    PRIMARY KEY (agency, id), UNIQUE (agency, survey_id, transaction_id),
    UNIQUE (agency, survey_id, import_key));
CREATE INDEX bench_raw_responses_by_survey ON bench_raw_responses (agency, survey_id, create_time, id);
CREATE INDEX bench_raw_responses_by_client ON bench_raw_responses (agency, client_id);
CREATE INDEX bench_raw_responses_by_submit_time ON bench_raw_responses (agency, submit_time, id);
CREATE TABLE bench_raw_scores (
    agency TEXT NOT NULL, response_id TEXT NOT NULL, survey_id TEXT NOT NULL,
    item BIGINT NOT NULL, score BIGINT NOT NULL, submit_time BIGINT NOT NULL,
    PRIMARY KEY (agency, response_id, item));
CREATE INDEX bench_raw_scores_by_time ON bench_raw_scores (agency, submit_time);
CREATE TABLE bench_raw_audit (
    agency TEXT NOT NULL, id TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    resource TEXT NOT NULL, request_id TEXT NOT NULL, time BIGINT NOT NULL,
    PRIMARY KEY (agency, id));
CREATE INDEX bench_raw_audit_by_resource ON bench_raw_audit (agency, resource);
CREATE TABLE bench_raw_events (
    sequence SEQUENCE_TYPE, agency TEXT NOT NULL, type TEXT NOT NULL, name TEXT NOT NULL,
    occurred_time BIGINT NOT NULL, payload BLOB_TYPE NOT NULL XID_COLUMN);
CREATE INDEX bench_raw_events_by_agency ON bench_raw_events (agency, sequence);";

/// The scratch tables for `backend`, with the types and (on PostgreSQL) the
/// transaction-id column and indexes of the service's own tables.
fn raw_tables(backend: touchstone_platform::db::Backend) -> String {
    use touchstone_platform::db::Backend;
    match backend {
        Backend::Sqlite => RAW_TABLE
            .replace("BLOB_TYPE", "BLOB")
            .replace("SEQUENCE_TYPE", "INTEGER PRIMARY KEY AUTOINCREMENT")
            .replace(" XID_COLUMN", ""),
        Backend::Postgres => {
            RAW_TABLE
                .replace("BLOB_TYPE", "BYTEA")
                .replace(
                    "SEQUENCE_TYPE",
                    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                )
                .replace(
                    " XID_COLUMN",
                    ", xid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)",
                )
                + "\nCREATE INDEX bench_raw_events_by_xid ON bench_raw_events (xid, sequence);\n\
                   CREATE INDEX bench_raw_events_by_agency_xid ON bench_raw_events (agency, xid, sequence);"
        }
    }
}

const A11_KEYS: [&str; 7] = [
    "satisfaction",
    "trust",
    "effectiveness",
    "ease",
    "efficiency",
    "equity",
    "employee_helpfulness",
];

const COMMENT: &str = "The staff were friendly but I waited a long time on hold.";

fn answers(i: u64) -> Vec<pb::Answer> {
    let mut a: Vec<pb::Answer> = A11_KEYS
        .iter()
        .enumerate()
        .map(|(k, key)| pb::Answer {
            question_key: (*key).into(),
            score: Some(((i as usize + k) % 5 + 1) as i32),
            ..Default::default()
        })
        .collect();
    a.push(pb::Answer {
        question_key: "comment".into(),
        text: COMMENT.into(),
        ..Default::default()
    });
    a
}

/// A fresh database for the feedback service, removed again by `cleanup`.
struct Fresh {
    db: Db,
    description: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Fresh {
    async fn sqlite(pool: u32) -> anyhow::Result<Fresh> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("feedback.db");
        let db = Db::connect(&touchstone_platform::db::sqlite_url(&path), pool).await?;
        db.migrate(&touchstone_feedback::migration_sets(), None)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(raw_tables(db.backend())))
            .execute(db.pool())
            .await?;
        Ok(Fresh {
            db,
            description: format!(
                "SQLite file {} (WAL, synchronous={:?})",
                path.display(),
                touchstone_platform::db::sqlite_synchronous()
            ),
            _dir: Some(dir),
            postgres: None,
        })
    }

    async fn postgres(url: &str, pool: u32) -> anyhow::Result<Fresh> {
        let name = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
        let password = uuid::Uuid::new_v4().simple().to_string();
        let server = Db::connect(url, 1)
            .await
            .context("connecting to PostgreSQL")?;
        for stmt in [
            format!(
                "CREATE ROLE {name} LOGIN PASSWORD '{password}' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
            ),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(server.pool())
                .await
                .context("creating the benchmark database and role")?;
        }
        server.close().await;
        let base = sqlx::postgres::PgConnectOptions::from_str(url)?;
        let admin = Db::connect(base.clone().database(&name).to_url_lossy().as_ref(), 1).await?;
        admin
            .migrate(&touchstone_feedback::migration_sets(), Some(&name))
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "{}\nGRANT SELECT, INSERT ON bench_raw_responses, bench_raw_scores, bench_raw_audit, \
             bench_raw_events TO {name};",
            raw_tables(touchstone_platform::db::Backend::Postgres)
        )))
        .execute(admin.pool())
        .await?;
        admin.close().await;
        let app_url = base
            .clone()
            .database(&name)
            .username(&name)
            .password(&password)
            .to_url_lossy()
            .to_string();
        Ok(Fresh {
            db: Db::connect(&app_url, pool).await?,
            description: format!(
                "PostgreSQL database {name} on {}:{} (row-level security in force)",
                base.get_host(),
                base.get_port()
            ),
            _dir: None,
            postgres: Some((url.to_string(), name)),
        })
    }

    async fn cleanup(self) {
        self.db.close().await;
        if let Some((url, name)) = self.postgres
            && let Ok(server) = Db::connect(&url, 1).await
        {
            for stmt in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("DROP ROLE IF EXISTS {name}"),
            ] {
                let _ = sqlx::query(sqlx::AssertSqlSafe(stmt))
                    .execute(server.pool())
                    .await;
            }
            server.close().await;
        }
    }
}

/// The feedback service served as in production.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), touchstone_server::ServeError>>,
}

async fn serve(db: Db, dev: &DevKey, per_connection: usize) -> anyhow::Result<Served> {
    let verifier = Verifier::from_jwks_json(
        AuthConfig {
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
            jwks_file: None,
            jwks_url: None,
            leeway_secs: 30,
        },
        &dev.jwks_json(),
    )?;
    // Responses in the benchmark name no client, so the register is never called.
    let peers = touchstone_feedback::Peers::connect("http://127.0.0.1:9", ServiceToken::None)?;
    let (routes, background) =
        touchstone_feedback::start(db.clone(), MasterKey::generate(), verifier, peers);
    // No register runs here, so the erasure consumer has nothing to read.
    for task in &background {
        task.abort();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let readiness: touchstone_server::Readiness = Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.writable().await })
    });
    let mut opts =
        touchstone_server::ServeOptions::new("feedback", vec![touchstone_feedback::SERVICE_NAME]);
    opts.max_concurrent_per_connection = per_connection;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(touchstone_server::serve(
        listener,
        routes,
        opts,
        readiness,
        async move {
            let _ = rx.await;
        },
    ));
    Ok(Served { addr, stop, task })
}

fn token(dev: &DevKey, roles: Vec<Role>) -> anyhow::Result<MetadataValue<Ascii>> {
    let t = dev.mint(&TokenRequest {
        subject: "bench".into(),
        agency: Some(AGENCY.into()),
        agencies: None,
        roles,
        ttl: Duration::from_secs(3600),
        issuer: DevKey::ISSUER.into(),
        audience: DevKey::AUDIENCE.into(),
    })?;
    Ok(format!("Bearer {t}").parse()?)
}

struct SubmitOp {
    client: FeedbackServiceClient<Channel>,
    survey: String,
    sequence: u64,
    auth: MetadataValue<Ascii>,
}

impl Op for SubmitOp {
    async fn call(&mut self) -> Result<(), String> {
        self.sequence += 1;
        let request = with_auth(
            pb::SubmitResponseRequest {
                parent: self.survey.clone(),
                response: Some(pb::Response {
                    answers: answers(self.sequence),
                    ..Default::default()
                }),
                request_id: uuid::Uuid::new_v4().to_string(),
            },
            &self.auth,
        );
        self.client
            .submit_response(request)
            .await
            .map(drop)
            .map_err(|s| format!("{:?}", s.code()))
    }
}

/// What a raw baseline writes per response.
#[derive(Debug, Clone, Copy)]
enum Raw {
    /// The `responses` row alone (the baseline of earlier runs).
    ResponsesOnly,
    /// Everything an imported row makes durable: the `responses` row, its
    /// seven score rows, an audit record and an outbox event of
    /// `event_bytes` bytes.
    Durable { event_bytes: usize },
}

/// Inserts `rows` rows of `cols` columns into `table` in statements of at
/// most `raw_params` parameters, `bind` binding row `i`'s values in order.
async fn insert_rows<'q>(
    tx: &mut touchstone_platform::db::Tx,
    table: &str,
    cols: usize,
    rows: usize,
    bind: impl Fn(
        usize,
        sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> anyhow::Result<()> {
    let per_statement = raw_params(tx.backend()) / cols;
    let mut offset = 0;
    while offset < rows {
        let m = per_statement.min(rows - offset);
        let sql = format!(
            "INSERT INTO {table} VALUES {}",
            tx.backend().values_list(m, cols)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in offset..offset + m {
            q = bind(i, q);
        }
        q.execute(tx.conn()).await?;
        offset += m;
    }
    Ok(())
}

/// The raw baseline: the same rows, batched, straight into the scratch
/// tables, `what` says which.
async fn raw_insert(db: &Db, survey_id: &str, rows: u64, what: Raw) -> anyhow::Result<Duration> {
    let blob: Vec<u8> = (0..COMMENT.len() + 60)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let answers_json = serde_json::to_string(&serde_json::json!([
        {"key": "satisfaction", "item": 1, "score": 4},
        {"key": "trust", "item": 2, "score": 4},
        {"key": "effectiveness", "item": 3, "score": 4},
        {"key": "ease", "item": 4, "score": 4},
        {"key": "efficiency", "item": 5, "score": 4},
        {"key": "equity", "item": 6, "score": 4},
        {"key": "employee_helpfulness", "item": 7, "score": 4},
        {"key": "comment", "masked": COMMENT, "sentiment": 0.1, "topics": ["staff_attitude", "waiting_time"]},
    ]))?;
    let tag = match what {
        Raw::ResponsesOnly => "raw",
        Raw::Durable { .. } => "durable",
    };
    let started = Instant::now();
    let mut done = 0u64;
    while done < rows {
        let n = RAW_BATCH.min((rows - done) as usize);
        let now = touchstone_platform::times::now_millis();
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let mut tx = db
            .write(touchstone_platform::db::Scope::Agency(AGENCY))
            .await?;
        insert_rows(
            &mut tx,
            "bench_raw_responses (agency, id, survey_id, channel, unit, submit_time, \
             transaction_id, import_key, client_id, contact_agreed, characteristics, answers, \
             originals, sentiment, anonymous, follow_up_id, erased, create_time)",
            18,
            n,
            |i, q| {
                q.bind(AGENCY)
                    .bind(ids[i].clone())
                    .bind(survey_id)
                    .bind(2i64)
                    .bind("north")
                    .bind(now)
                    .bind(Option::<String>::None)
                    .bind(format!("r:{tag}-{}", done + i as u64))
                    .bind(Option::<String>::None)
                    .bind(false)
                    .bind(Option::<String>::None)
                    .bind(answers_json.clone())
                    .bind(blob.clone())
                    .bind(10i64)
                    .bind(true)
                    .bind(Option::<String>::None)
                    .bind(false)
                    .bind(now)
            },
        )
        .await?;
        if let Raw::Durable { event_bytes } = what {
            let items = A11_KEYS.len();
            insert_rows(
                &mut tx,
                "bench_raw_scores (agency, response_id, survey_id, item, score, submit_time)",
                6,
                n * items,
                |i, q| {
                    q.bind(AGENCY)
                        .bind(ids[i / items].clone())
                        .bind(survey_id)
                        .bind((i % items + 1) as i64)
                        .bind(4i64)
                        .bind(now)
                },
            )
            .await?;
            insert_rows(
                &mut tx,
                "bench_raw_audit (agency, id, actor, action, resource, request_id, time)",
                7,
                n,
                |i, q| {
                    q.bind(AGENCY)
                        .bind(uuid::Uuid::now_v7().to_string())
                        .bind("bench-intake")
                        .bind("ImportResponses")
                        .bind(format!(
                            "agencies/{AGENCY}/surveys/{survey_id}/responses/{}",
                            ids[i]
                        ))
                        .bind("")
                        .bind(now)
                },
            )
            .await?;
            let payload = vec![7u8; event_bytes];
            insert_rows(
                &mut tx,
                "bench_raw_events (agency, type, name, occurred_time, payload)",
                5,
                n,
                |i, q| {
                    q.bind(AGENCY)
                        .bind("touchstone.feedback.v1.ResponseSubmitted")
                        .bind(format!(
                            "agencies/{AGENCY}/surveys/{survey_id}/responses/{}",
                            ids[i]
                        ))
                        .bind(now)
                        .bind(payload.clone())
                },
            )
            .await?;
        }
        tx.commit().await?;
        done += n as u64;
    }
    Ok(started.elapsed())
}

/// The mean size of the events the service wrote for its responses.
async fn event_bytes(db: &Db) -> anyhow::Result<usize> {
    let mut tx = db
        .read(touchstone_platform::db::Scope::Agency(AGENCY))
        .await?;
    let mean: Option<f64> = sqlx::query_scalar(
        "SELECT CAST(AVG(LENGTH(payload)) AS DOUBLE PRECISION) FROM events WHERE type LIKE '%ResponseSubmitted'",
    )
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(mean.unwrap_or(0.0).round() as usize)
}

/// Runs the feedback scenarios and prints (and optionally writes) the results.
pub(super) async fn run(
    args: &BenchArgs,
    pg_url: Option<&str>,
    settings: &Settings,
) -> anyhow::Result<()> {
    if args.import_rows == 0 {
        bail!("--import-rows must be at least 1");
    }
    let pool = args
        .pool
        .unwrap_or(settings.feedback.max_connections)
        .max(1);
    let window = Window {
        warmup: args.warmup,
        duration: args.duration,
    };
    let workers = args.connections * args.in_flight;
    let bar = spinner();
    bar.set_message("creating a fresh database");
    let fresh = match (args.backend, pg_url) {
        (BackendArg::Postgres, Some(url)) => Fresh::postgres(url, pool).await?,
        _ => Fresh::sqlite(pool).await?,
    };
    let dir = tempfile::tempdir()?;
    let dev = DevKey::load_or_create(dir.path())?;
    let echo = echo::start().await?;
    let served = serve(
        fresh.db.clone(),
        &dev,
        settings.max_concurrent_per_connection,
    )
    .await?;
    let outcome = async {
        let admin = token(&dev, vec![Role::AgencyAdmin])?;
        let intake = token(&dev, vec![Role::Intake])?;
        let channels = connect(served.addr, args.connections).await?;
        let mut c = FeedbackServiceClient::new(channels[0].clone());
        let made = c
            .create_template_surveys(with_auth(
                pb::CreateTemplateSurveysRequest {
                    parent: format!("agencies/{AGENCY}"),
                    templates: vec![pb::SurveyTemplate::A11 as i32],
                    ..Default::default()
                },
                &admin,
            ))
            .await?
            .into_inner();
        let survey = made
            .surveys
            .first()
            .context("the A-11 template")?
            .name
            .clone();
        c.publish_survey(with_auth(
            pb::PublishSurveyRequest {
                name: survey.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await?;

        let mut results: Vec<Measured> = Vec::new();
        let echo_channels = connect(echo.addr, args.connections).await?;
        let message = sample_client(0, 0);
        let ops: Vec<_> = (0..workers)
            .map(|w| EchoOp {
                client: echo::EchoClient::new(echo_channels[w % echo_channels.len()].clone()),
                message: message.clone(),
                auth: intake.clone(),
            })
            .collect();
        results.push(load::run("echo", ops, window, &bar).await);
        let ops: Vec<_> = (0..workers)
            .map(|w| SubmitOp {
                client: FeedbackServiceClient::new(channels[w % channels.len()].clone()),
                survey: survey.clone(),
                sequence: (w as u64) << 32,
                auth: intake.clone(),
            })
            .collect();
        results.push(load::run("submit-response", ops, window, &bar).await);

        bar.set_message(format!("importing {} rows in one stream", args.import_rows));
        let rows: Vec<pb::ImportResponsesRequest> = (0..args.import_rows)
            .map(|i| pb::ImportResponsesRequest {
                parent: survey.clone(),
                row_id: format!("bench-{i}"),
                response: Some(pb::Response {
                    answers: answers(i),
                    ..Default::default()
                }),
            })
            .collect();
        let started = Instant::now();
        let imported = c
            .import_responses(with_auth(tokio_stream::iter(rows), &intake))
            .await?
            .into_inner();
        let import_time = started.elapsed();
        if imported.created != args.import_rows as i64 {
            bail!(
                "the import stored {} of {} rows ({} rejected)",
                imported.created,
                args.import_rows,
                imported.rejected
            );
        }
        bar.set_message(format!("raw batched insert of {} rows", args.import_rows));
        let survey_id = survey.rsplit('/').next().unwrap_or_default().to_string();
        let event_bytes = event_bytes(&fresh.db).await?;
        let durable_time = raw_insert(
            &fresh.db,
            &survey_id,
            args.import_rows,
            Raw::Durable { event_bytes },
        )
        .await?;
        let raw_time =
            raw_insert(&fresh.db, &survey_id, args.import_rows, Raw::ResponsesOnly).await?;
        Ok::<_, anyhow::Error>((results, import_time, durable_time, raw_time, event_bytes))
    }
    .await;
    bar.finish_and_clear();
    let _ = served.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), served.task).await;
    echo.stop().await;
    let description = fresh.description.clone();
    fresh.cleanup().await;
    let (results, import_time, durable_time, raw_time, event_bytes) = outcome?;

    let rate = |name: &str| {
        results
            .iter()
            .find(|m| m.scenario == name)
            .map_or(0.0, |m| m.per_second)
    };
    let import_rate = args.import_rows as f64 / import_time.as_secs_f64();
    let raw_rate = args.import_rows as f64 / raw_time.as_secs_f64();
    let durable_rate = args.import_rows as f64 / durable_time.as_secs_f64();
    println!(
        "touchstone bench --scenario feedback ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("database: {description}; pool {pool}");
    println!(
        "load:     {} connections x {} in flight; warm-up {:.1}s, window {:.1}s",
        args.connections,
        args.in_flight,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    println!(
        "{:<18} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "scenario", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for m in &results {
        println!(
            "{:<18} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            m.scenario, m.per_second, m.p50_ms, m.p99_ms, m.max_ms, m.errors
        );
    }
    println!(
        "import            {:>10.1} rows/s ({} rows in one stream, {:.2}s)",
        import_rate,
        args.import_rows,
        import_time.as_secs_f64()
    );
    println!(
        "raw batched insert{:>10.1} rows/s ({} rows, {} per transaction, {:.2}s): what an \
         imported row makes durable (its response, {} score rows, an audit record, an event of \
         {} bytes)",
        durable_rate,
        args.import_rows,
        RAW_BATCH,
        durable_time.as_secs_f64(),
        A11_KEYS.len(),
        event_bytes
    );
    println!(
        "raw batched insert{:>10.1} rows/s ({} rows, {} per transaction, {:.2}s): the \
         responses rows alone",
        raw_rate,
        args.import_rows,
        RAW_BATCH,
        raw_time.as_secs_f64()
    );
    println!("ratios:");
    println!(
        "  SubmitResponse / echo         {:.3}",
        rate("submit-response") / rate("echo").max(f64::MIN_POSITIVE)
    );
    let verdict = |ratio: f64| if ratio >= 0.8 { "met" } else { "NOT met" };
    println!(
        "  ImportResponses / raw insert of what it makes durable  {:.3}  aim >= 0.80: {}",
        import_rate / durable_rate,
        verdict(import_rate / durable_rate)
    );
    println!(
        "  ImportResponses / raw insert of the responses alone    {:.3}",
        import_rate / raw_rate
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "scenario": "feedback",
            "database": description,
            "results": results,
            "import_rows": args.import_rows,
            "import_rows_per_second": import_rate,
            "raw_insert_rows_per_second": raw_rate,
            "raw_durable_insert_rows_per_second": durable_rate,
            "event_bytes": event_bytes,
            "import_over_raw_durable": import_rate / durable_rate,
            "submit_over_echo": rate("submit-response") / rate("echo").max(f64::MIN_POSITIVE),
            "import_over_raw": import_rate / raw_rate,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
