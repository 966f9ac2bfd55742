//! The system under test: the register on a fresh database, served through
//! `touchstone_server::serve` as in production, plus the raw-insert baseline
//! on the same database.

use anyhow::Context;
use sqlx::ConnectOptions as _;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use touchstone_auth::{AuthConfig, DevKey, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::db::{Backend, Db};

/// A fresh, migrated database that is removed again by `cleanup`.
pub(super) struct FreshDb {
    /// The service's pool (on PostgreSQL: a role that owns no table, so
    /// row-level security is in force, as in production).
    pub(super) db: Db,
    /// What to tell the reader about where the data lives.
    pub(super) description: String,
    postgres: Option<PgScratch>,
}

struct PgScratch {
    server_url: String,
    name: String,
    admin: Db,
    /// The owner's URL, for a connection of its own (e.g. for COPY).
    admin_url: String,
}

/// The scratch table of the raw-insert baseline: the same columns, SQL types,
/// primary key and indexes as the register's `clients` table.
const RAW_TABLE_SQLITE: &str = "\
CREATE TABLE bench_raw_clients (
    agency TEXT NOT NULL, id TEXT NOT NULL, kind INTEGER NOT NULL,
    preferred_channel INTEGER NOT NULL, preferred_language TEXT NOT NULL,
    interpreter_needed INTEGER NOT NULL, accessibility_needs TEXT NOT NULL, personal BLOB,
    erased INTEGER NOT NULL DEFAULT FALSE, erase_time INTEGER, create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL, revision INTEGER NOT NULL, PRIMARY KEY (agency, id));
CREATE INDEX bench_raw_clients_by_create_time ON bench_raw_clients (agency, create_time, id);
CREATE INDEX bench_raw_clients_by_update_time ON bench_raw_clients (agency, update_time, id);";

const RAW_TABLE_POSTGRES: &str = "\
CREATE TABLE bench_raw_clients (
    agency TEXT NOT NULL, id TEXT NOT NULL, kind BIGINT NOT NULL,
    preferred_channel BIGINT NOT NULL, preferred_language TEXT NOT NULL,
    interpreter_needed BOOLEAN NOT NULL, accessibility_needs TEXT NOT NULL, personal BYTEA,
    erased BOOLEAN NOT NULL DEFAULT FALSE, erase_time BIGINT, create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL, revision BIGINT NOT NULL, PRIMARY KEY (agency, id));
CREATE INDEX bench_raw_clients_by_create_time ON bench_raw_clients (agency, create_time, id);
CREATE INDEX bench_raw_clients_by_update_time ON bench_raw_clients (agency, update_time, id);";

/// The statement the register uses to insert a client, aimed at the scratch table.
pub(super) const RAW_INSERT: &str = "\
INSERT INTO bench_raw_clients (agency, id, kind, preferred_channel, preferred_language, \
interpreter_needed, accessibility_needs, personal, erased, erase_time, create_time, \
update_time, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, NULL, $9, $9, 1)";

/// What a scratch database holds: a service's tables and the baseline's
/// scratch table (per backend; the PostgreSQL one is granted to the role).
pub(super) struct Schema {
    /// The service's migration sets.
    pub(super) sets: Vec<&'static touchstone_platform::db::MigrationSet>,
    /// The scratch table on SQLite.
    pub(super) raw_sqlite: &'static str,
    /// The scratch table on PostgreSQL.
    pub(super) raw_postgres: &'static str,
    /// Its name, for the grant.
    pub(super) raw_table: &'static str,
}

/// The register's tables and its raw-insert baseline.
fn register_schema() -> Schema {
    Schema {
        sets: touchstone_register::migration_sets().to_vec(),
        raw_sqlite: RAW_TABLE_SQLITE,
        raw_postgres: RAW_TABLE_POSTGRES,
        raw_table: "bench_raw_clients",
    }
}

/// A SQLite file in `dir`, migrated, with the scratch table.
pub(super) async fn fresh_sqlite(dir: &std::path::Path, pool: u32) -> anyhow::Result<FreshDb> {
    fresh_sqlite_with(dir, pool, &register_schema()).await
}

/// A SQLite file in `dir` holding `schema`.
pub(super) async fn fresh_sqlite_with(
    dir: &std::path::Path,
    pool: u32,
    schema: &Schema,
) -> anyhow::Result<FreshDb> {
    let path = dir.join("bench.db");
    let db = Db::connect(&touchstone_platform::db::sqlite_url(&path), pool)
        .await
        .context("opening the SQLite database")?;
    db.migrate(&schema.sets, None)
        .await
        .context("migrating the SQLite database")?;
    sqlx::raw_sql(schema.raw_sqlite)
        .execute(db.pool())
        .await
        .context("creating the raw-insert table")?;
    Ok(FreshDb {
        db,
        description: format!(
            "SQLite file {} (WAL, synchronous={:?})",
            path.display(),
            touchstone_platform::db::sqlite_synchronous()
        ),
        postgres: None,
    })
}

/// A new database and a new login role on the server at `url` (which must be
/// allowed to create both), migrated by the admin connection, with the
/// service connected as the new role.
pub(super) async fn fresh_postgres(url: &str, pool: u32) -> anyhow::Result<FreshDb> {
    fresh_postgres_with(url, pool, &register_schema()).await
}

/// A new database and role on the server at `url` holding `schema`.
pub(super) async fn fresh_postgres_with(
    url: &str,
    pool: u32,
    schema: &Schema,
) -> anyhow::Result<FreshDb> {
    let name = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let server = Db::connect(url, 1)
        .await
        .context("connecting to PostgreSQL (--pg-url / TOUCHSTONE_TEST_PG_URL)")?;
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
    let base = sqlx::postgres::PgConnectOptions::from_str(url).context("a PostgreSQL URL")?;
    let admin_url = base.clone().database(&name).to_url_lossy().to_string();
    let app_url = base
        .clone()
        .database(&name)
        .username(&name)
        .password(&password)
        .to_url_lossy()
        .to_string();
    let scratch = PgScratch {
        server_url: url.to_string(),
        name: name.clone(),
        admin: Db::connect(&admin_url, 1)
            .await
            .context("connecting to the benchmark database")?,
        admin_url: admin_url.clone(),
    };
    let prepared = async {
        scratch
            .admin
            .migrate(&schema.sets, Some(&name))
            .await
            .context("migrating the benchmark database")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "{}\nGRANT SELECT, INSERT ON {} TO {name};",
            schema.raw_postgres, schema.raw_table
        )))
        .execute(scratch.admin.pool())
        .await
        .context("creating the raw-insert table")?;
        Db::connect(&app_url, pool)
            .await
            .context("connecting as the benchmark role")
    }
    .await;
    let db = match prepared {
        Ok(db) => db,
        Err(e) => {
            scratch.drop_all().await;
            return Err(e);
        }
    };
    Ok(FreshDb {
        db,
        description: format!(
            "PostgreSQL database {name} on {}:{} as role {name} (row-level security in force)",
            base.get_host(),
            base.get_port()
        ),
        postgres: Some(scratch),
    })
}

impl PgScratch {
    async fn drop_all(self) {
        self.admin.close().await;
        let dropped = async {
            let server = Db::connect(&self.server_url, 1).await?;
            for stmt in [
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                format!("DROP ROLE IF EXISTS {}", self.name),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(stmt))
                    .execute(server.pool())
                    .await?;
            }
            server.close().await;
            Ok::<_, touchstone_platform::db::DbError>(())
        }
        .await;
        if let Err(e) = dropped {
            eprintln!(
                "touchstone bench: could not drop database and role {}: {e}",
                self.name
            );
        }
    }
}

impl FreshDb {
    /// Closes the pools and, on PostgreSQL, drops the database and the role.
    pub(super) async fn cleanup(self) {
        self.db.close().await;
        if let Some(pg) = self.postgres {
            pg.drop_all().await;
        }
    }

    /// The owner's connection on PostgreSQL (for ANALYZE), None on SQLite.
    pub(super) fn admin(&self) -> Option<&Db> {
        self.postgres.as_ref().map(|p| &p.admin)
    }

    /// A new connection as the owner on PostgreSQL (for COPY, which the
    /// pool's driver-independent connections cannot do).
    pub(super) async fn owner_connection(&self) -> anyhow::Result<sqlx::PgConnection> {
        let pg = self
            .postgres
            .as_ref()
            .context("an owner connection needs PostgreSQL")?;
        <sqlx::PgConnection as sqlx::Connection>::connect(&pg.admin_url)
            .await
            .context("connecting as the owner")
    }

    pub(super) fn backend(&self) -> Backend {
        self.db.backend()
    }
}

/// A service served as in production: auth interceptor, health,
/// reflection, metrics, per-connection shedding, deadlines.
pub(super) struct Served {
    pub(super) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), touchstone_server::ServeError>>,
}

/// A verifier of tokens minted by `dev`.
pub(super) fn verifier(dev: &DevKey) -> anyhow::Result<Arc<Verifier>> {
    Ok(Verifier::from_jwks_json(
        AuthConfig {
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
            jwks_file: None,
            jwks_url: None,
            leeway_secs: 30,
        },
        &dev.jwks_json(),
    )?)
}

/// A schema of a service's own tables only (its scratch raw table unused).
pub(super) fn service_schema(sets: Vec<&'static touchstone_platform::db::MigrationSet>) -> Schema {
    Schema {
        sets,
        raw_sqlite: "CREATE TABLE bench_unused (x BIGINT);",
        raw_postgres: "CREATE TABLE bench_unused (x BIGINT);",
        raw_table: "bench_unused",
    }
}

/// A peer address nothing listens on: for peers a benchmark never calls.
pub(super) const NOWHERE: &str = "http://127.0.0.1:9";

impl Served {
    /// The feedback service on `db`, without its background tasks (no
    /// register runs, so its erasure consumer has nothing to read).
    pub(super) async fn feedback(
        db: Db,
        verifier: Arc<Verifier>,
        max_concurrent_per_connection: usize,
    ) -> anyhow::Result<Served> {
        let (routes, tasks) = touchstone_feedback::start(
            db.clone(),
            MasterKey::generate(),
            verifier,
            touchstone_feedback::Peers::connect(NOWHERE, touchstone_auth::ServiceToken::None)?,
        );
        tasks.iter().for_each(|t| t.abort());
        Served::start(
            "feedback",
            touchstone_feedback::SERVICE_NAME,
            routes,
            db,
            max_concurrent_per_connection,
        )
        .await
    }

    /// The KPI service on `db`, without its feed consumers (its rollups are
    /// loaded, or fed, by the benchmark).
    pub(super) async fn kpi(
        db: Db,
        verifier: Arc<Verifier>,
        max_concurrent_per_connection: usize,
    ) -> anyhow::Result<Served> {
        let (routes, tasks) = touchstone_kpi::start(
            db.clone(),
            MasterKey::generate(),
            verifier,
            touchstone_kpi::Peers::connect(NOWHERE, NOWHERE, touchstone_auth::ServiceToken::None)?,
            touchstone_stats::DEFAULT_K,
        );
        tasks.iter().for_each(|t| t.abort());
        Served::start(
            "kpi",
            touchstone_kpi::SERVICE_NAME,
            routes,
            db,
            max_concurrent_per_connection,
        )
        .await
    }

    /// The register on `db`.
    pub(super) async fn register(
        db: Db,
        dev: &DevKey,
        max_concurrent_per_connection: usize,
    ) -> anyhow::Result<Served> {
        let routes = touchstone_register::routes(db.clone(), MasterKey::generate(), verifier(dev)?);
        Served::start(
            "register",
            touchstone_register::SERVICE_NAME,
            routes,
            db,
            max_concurrent_per_connection,
        )
        .await
    }

    /// Serves `routes` on a new loopback port.
    pub(super) async fn start(
        service: &'static str,
        grpc: &'static str,
        routes: tonic::service::Routes,
        db: Db,
        max_concurrent_per_connection: usize,
    ) -> anyhow::Result<Served> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let readiness: touchstone_server::Readiness = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.writable().await })
        });
        let opts = touchstone_server::ServeOptions {
            service,
            grpc_services: vec![grpc],
            max_concurrent_per_connection,
            max_concurrent_total: touchstone_server::ServeOptions::DEFAULT_MAX_CONCURRENT_TOTAL,
            readiness_interval: touchstone_server::ServeOptions::DEFAULT_READINESS_INTERVAL,
            shutdown_grace: Duration::from_secs(5),
        };
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

    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}
