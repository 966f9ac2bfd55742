//! `touchstone bench --scenario feedback`: the feedback service on a fresh
//! database, measured against baselines in the same run:
//!
//! - `SubmitResponse` (an A-11 response with a comment, anonymous) against
//!   the bare tonic echo, with the same connections and requests in flight;
//! - `ImportResponses` rows per second (one client stream of `--import-rows`
//!   rows) against a raw batched insert of the same rows (multi-row INSERTs
//!   of 200 rows per transaction, split into statements of at most as many
//!   parameters as the service's own store binds) into a scratch table shaped
//!   like `responses`, in the same database.

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
fn raw_params(db: &Db) -> usize {
    match db.backend() {
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
CREATE INDEX bench_raw_responses_by_client ON bench_raw_responses (agency, client_id);";

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
        sqlx::raw_sql(sqlx::AssertSqlSafe(RAW_TABLE.replace("BLOB_TYPE", "BLOB")))
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
            "{}\nGRANT SELECT, INSERT ON bench_raw_responses TO {name};",
            RAW_TABLE.replace("BLOB_TYPE", "BYTEA")
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

/// The raw baseline: the same rows, batched, straight into the scratch table.
async fn raw_insert(db: &Db, survey_id: &str, rows: u64) -> anyhow::Result<Duration> {
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
    let started = Instant::now();
    let mut done = 0u64;
    let per_statement = raw_params(db) / 9;
    while done < rows {
        let n = RAW_BATCH.min((rows - done) as usize);
        let now = touchstone_platform::times::now_millis();
        let mut tx = db
            .write(touchstone_platform::db::Scope::Agency(AGENCY))
            .await?;
        let mut offset = 0;
        while offset < n {
            let m = per_statement.min(n - offset);
            let backend = db.backend();
            let values: Vec<String> = (0..m)
                .map(|i| {
                    let p = |k: usize| backend.param(i * 9 + k);
                    format!(
                        "({}, {}, {}, 2, 'north', {}, NULL, {}, NULL, FALSE, NULL, {}, {}, {}, TRUE, NULL, FALSE, {})",
                        p(1),
                        p(2),
                        p(3),
                        p(4),
                        p(5),
                        p(6),
                        p(7),
                        p(8),
                        p(9)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO bench_raw_responses (agency, id, survey_id, channel, unit, submit_time, \
                 transaction_id, import_key, client_id, contact_agreed, characteristics, answers, \
                 originals, sentiment, anonymous, follow_up_id, erased, create_time) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in 0..m {
                q = q
                    .bind(AGENCY)
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(survey_id)
                    .bind(now)
                    .bind(format!("r:raw-{}", done + (offset + i) as u64))
                    .bind(answers_json.clone())
                    .bind(blob.clone())
                    .bind(10i64)
                    .bind(now);
            }
            q.execute(tx.conn()).await?;
            offset += m;
        }
        tx.commit().await?;
        done += n as u64;
    }
    Ok(started.elapsed())
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
        let raw_time = raw_insert(&fresh.db, &survey_id, args.import_rows).await?;
        Ok::<_, anyhow::Error>((results, import_time, raw_time))
    }
    .await;
    bar.finish_and_clear();
    let _ = served.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), served.task).await;
    echo.stop().await;
    let description = fresh.description.clone();
    fresh.cleanup().await;
    let (results, import_time, raw_time) = outcome?;

    let rate = |name: &str| {
        results
            .iter()
            .find(|m| m.scenario == name)
            .map_or(0.0, |m| m.per_second)
    };
    let import_rate = args.import_rows as f64 / import_time.as_secs_f64();
    let raw_rate = args.import_rows as f64 / raw_time.as_secs_f64();
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
        "raw batched insert{:>10.1} rows/s ({} rows, {} per transaction, {:.2}s)",
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
    println!(
        "  ImportResponses / raw insert  {:.3} (aim >= 0.5)",
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
            "submit_over_echo": rate("submit-response") / rate("echo").max(f64::MIN_POSITIVE),
            "import_over_raw": import_rate / raw_rate,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
