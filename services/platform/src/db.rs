//! One pool type for the embedded SQLite default and for PostgreSQL: the same
//! portable SQL runs on both through sqlx's `Any` driver. Transactions are
//! scoped to a tenant: on PostgreSQL the agency is set with
//! `set_config('touchstone.agency', …, true)` at the start of each
//! transaction so that row-level security backs up the application's own
//! checks; on SQLite, which allows one writer at a time, writers queue on an
//! in-process lock instead of failing with SQLITE_BUSY.

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

/// The database product behind a `Db`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite, one file per service.
    Sqlite,
    /// PostgreSQL, one database per service.
    Postgres,
}

impl Backend {
    /// The `n`th (1-based) parameter of a statement: `$n` on PostgreSQL,
    /// an anonymous `?` on SQLite (see [`Backend::values_list`]), so
    /// statements built with it bind their values in the order they appear
    /// and use each once.
    pub fn param(self, n: usize) -> String {
        match self {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${n}"),
        }
    }

    /// Placeholders for a multi-row `VALUES` list: `rows` tuples of `cols`,
    /// which must be the statement's only parameters, bound row by row.
    /// `$1, $2, …` on PostgreSQL; anonymous `?` on SQLite, whose driver
    /// looks every numbered `$n` up by name, a scan over all of a
    /// statement's parameters that made binding a 500-row insert cost more
    /// than running it.
    pub fn values_list(self, rows: usize, cols: usize) -> String {
        let mut sql = String::with_capacity(rows * (cols * 6 + 4));
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..cols {
                if c > 0 {
                    sql.push_str(", ");
                }
                match self {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => {
                        use std::fmt::Write as _;
                        let _ = write!(sql, "${}", r * cols + c + 1);
                    }
                }
            }
            sql.push(')');
        }
        sql
    }
}

/// Which rows a transaction may see.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One agency's rows only.
    Agency(&'a str),
    /// Every agency's rows: only for change feeds read by `service` callers.
    AllAgencies,
}

impl Scope<'_> {
    fn setting(&self) -> &str {
        match self {
            Scope::Agency(a) => a,
            Scope::AllAgencies => "*",
        }
    }
}

/// Errors opening or migrating a database. Messages name the setting or
/// migration involved but never echo credentials.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not one Touchstone understands.
    #[error("database URL must start with sqlite: or postgres:")]
    BadUrl,
    /// Could not connect or run a statement.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Creating the directory of a SQLite file failed.
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A migration that was applied earlier has changed since.
    #[error("migration {component}/{version} was changed after it was applied")]
    MigrationChanged {
        /// Component (platform or a service).
        component: String,
        /// Version number.
        version: i64,
    },
}

/// A connection pool plus what the service needs around it.
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    writer: Option<Arc<Mutex<()>>>,
    events: watch::Sender<u64>,
}

/// A URL for a SQLite file, creating it if it is missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::BadUrl);
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            if let Some(dir) = sqlite_path(url).and_then(|p| p.parent().map(Path::to_path_buf))
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; secure_delete
                    // overwrites erased personal data instead of leaving it in
                    // free pages. (No `PRAGMA optimize` here: it writes the
                    // statistics tables outside the in-process writer lock,
                    // and a writer upgrading past it fails with
                    // SQLITE_BUSY_SNAPSHOT.)
                    conn.execute(sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                         PRAGMA secure_delete = ON;",
                    ))
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let (events, _) = watch::channel(0);
        Ok(Db {
            inner: Arc::new(Inner {
                pool,
                backend,
                writer: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
                events,
            }),
        })
    }

    /// The database product.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The underlying pool, for benchmarks and tests that need raw SQL.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Starts a read transaction that sees `scope`'s rows.
    pub async fn read(&self, scope: Scope<'_>) -> Result<Tx, sqlx::Error> {
        self.begin(scope, false).await
    }

    /// Starts a write transaction that sees `scope`'s rows. On SQLite it
    /// waits its turn behind other writers of this process.
    pub async fn write(&self, scope: Scope<'_>) -> Result<Tx, sqlx::Error> {
        self.begin(scope, true).await
    }

    async fn begin(&self, scope: Scope<'_>, write: bool) -> Result<Tx, sqlx::Error> {
        let guard = match (&self.inner.writer, write) {
            (Some(lock), true) => Some(lock.clone().lock_owned().await),
            _ => None,
        };
        let mut tx = self.inner.pool.begin().await?;
        if self.inner.backend == Backend::Postgres {
            sqlx::query("SELECT set_config('touchstone.agency', $1, true)")
                .bind(scope.setting())
                .execute(&mut *tx)
                .await?;
        }
        Ok(Tx {
            tx: Some(tx),
            writer: guard,
            db: self.clone(),
            write,
            appended_events: false,
        })
    }

    /// Whether the database answers a trivial query within two seconds.
    pub async fn ping(&self) -> bool {
        let probe = sqlx::query("SELECT 1").execute(&self.inner.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(_))
        )
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// A receiver that changes whenever a transaction that appended events
    /// commits, so that change-feed watchers wake without polling.
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.inner.events.subscribe()
    }

    /// Wakes change-feed watchers, e.g. after events were written by another
    /// process sharing this database.
    pub fn notify_events(&self) {
        self.inner.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs each set's migrations that have not run yet, in version order,
    /// each in its own transaction, and then (PostgreSQL) grants the
    /// application role what it needs on the tables, which it does not own.
    pub async fn migrate(
        &self,
        sets: &[&MigrationSet],
        app_role: Option<&str>,
    ) -> Result<(), DbError> {
        let mut conn = self.inner.pool.acquire().await?;
        if self.inner.backend == Backend::Postgres {
            // Replicas starting together must not migrate at the same time.
            sqlx::query("SELECT pg_advisory_lock(7366041)")
                .execute(&mut *conn)
                .await?;
        }
        let result = run_migrations(&mut conn, self.inner.backend, sets, app_role).await;
        if self.inner.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock(7366041)")
                .execute(&mut *conn)
                .await?;
        }
        result
    }
}

fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// A transaction bound to a tenant scope. Dropping it without `commit`
/// rolls back.
#[derive(Debug)]
pub struct Tx {
    /// Open until `commit` or drop.
    tx: Option<sqlx::Transaction<'static, Any>>,
    /// SQLite's in-process writer lock, for write transactions.
    writer: Option<OwnedMutexGuard<()>>,
    db: Db,
    /// Opened with [`Db::write`].
    write: bool,
    appended_events: bool,
}

impl Drop for Tx {
    fn drop(&mut self) {
        // sqlx only queues the rollback of a dropped transaction. Releasing
        // SQLite's writer lock before it has run would let the next writer
        // find the database still locked and fail with SQLITE_BUSY at its
        // first write; so an uncommitted writer rolls back first, then
        // releases the lock.
        if let (Some(tx), Some(writer)) = (self.tx.take(), self.writer.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = tx.rollback().await {
                    tracing::warn!(error = %e, "rolling back a dropped transaction failed");
                }
                drop(writer);
            });
        }
    }
}

impl Tx {
    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.tx
            .as_deref_mut()
            .expect("a Tx holds its transaction until commit")
    }

    /// The database this transaction runs on.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Whether this transaction runs on `db` (the same pool, not merely the
    /// same URL).
    pub fn is_on(&self, db: &Db) -> bool {
        Arc::ptr_eq(&self.db.inner, &db.inner)
    }

    /// Whether it was opened with [`Db::write`].
    pub fn is_write(&self) -> bool {
        self.write
    }

    pub(crate) fn mark_events_appended(&mut self) {
        self.appended_events = true;
    }

    /// Commits, then wakes change-feed watchers if events were appended.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        self.writer.take();
        if self.appended_events {
            self.db.notify_events();
        }
        Ok(())
    }
}

/// One schema change, for one backend.
#[derive(Debug)]
pub struct Migration {
    /// Applied in increasing order.
    pub version: i64,
    /// Short description.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// The migrations of one component (the platform or a service), per backend.
#[derive(Debug)]
pub struct MigrationSet {
    /// e.g. "platform", "register".
    pub component: &'static str,
    /// SQLite migrations.
    pub sqlite: &'static [Migration],
    /// PostgreSQL migrations.
    pub postgres: &'static [Migration],
}

/// The platform's own tables: outbox, idempotency records, data keys, audit.
pub static PLATFORM_MIGRATIONS: MigrationSet = MigrationSet {
    component: "platform",
    sqlite: &[
        Migration {
            version: 1,
            name: "platform",
            sql: include_str!("../migrations/sqlite/0001_platform.sql"),
        },
        Migration {
            version: 2,
            name: "feed cursors",
            sql: include_str!("../migrations/sqlite/0002_feed_cursors.sql"),
        },
        Migration {
            version: 3,
            name: "key repair",
            sql: include_str!("../migrations/sqlite/0003_key_repair.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            name: "platform",
            sql: include_str!("../migrations/postgres/0001_platform.sql"),
        },
        Migration {
            version: 2,
            name: "feed cursors",
            sql: include_str!("../migrations/postgres/0002_feed_cursors.sql"),
        },
        Migration {
            version: 3,
            name: "key repair",
            sql: include_str!("../migrations/postgres/0003_key_repair.sql"),
        },
    ],
};

fn checksum(sql: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(sql.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

async fn run_migrations(
    conn: &mut AnyConnection,
    backend: Backend,
    sets: &[&MigrationSet],
    app_role: Option<&str>,
) -> Result<(), DbError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
           component TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, \
           checksum TEXT NOT NULL, applied_time BIGINT NOT NULL, \
           PRIMARY KEY (component, version))",
    )
    .await?;
    for set in sets {
        let list = match backend {
            Backend::Sqlite => set.sqlite,
            Backend::Postgres => set.postgres,
        };
        for m in list {
            let sum = checksum(m.sql);
            let applied: Option<String> = sqlx::query_scalar(
                "SELECT checksum FROM schema_migrations WHERE component = $1 AND version = $2",
            )
            .bind(set.component)
            .bind(m.version)
            .fetch_optional(&mut *conn)
            .await?;
            match applied {
                Some(existing) if existing == sum => continue,
                Some(_) => {
                    return Err(DbError::MigrationChanged {
                        component: set.component.to_string(),
                        version: m.version,
                    });
                }
                None => {}
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            tx.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql)))
                .await?;
            sqlx::query(
                "INSERT INTO schema_migrations (component, version, name, checksum, applied_time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(set.component)
            .bind(m.version)
            .bind(m.name)
            .bind(&sum)
            .bind(crate::times::now_millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                component = set.component,
                version = m.version,
                "migration applied"
            );
        }
    }
    if let (Backend::Postgres, Some(role)) = (backend, app_role) {
        let role = quote_ident(role);
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}; \
             REVOKE ALL ON schema_migrations FROM {role};"
        ))))
        .await?;
    }
    Ok(())
}

/// Quotes a PostgreSQL identifier (a role name from configuration).
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/register.db?mode=rwc"),
            Some("data/register.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn values_lists() {
        assert_eq!(Backend::Sqlite.values_list(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(
            Backend::Postgres.values_list(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Backend::Postgres.values_list(1, 1), "($1)");
        assert_eq!(Backend::Sqlite.values_list(0, 4), "");
        assert_eq!(Backend::Postgres.param(7), "$7");
        assert_eq!(Backend::Sqlite.param(7), "?");
    }
}
