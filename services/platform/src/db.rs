//! One pool type for the embedded SQLite default and for PostgreSQL: the same
//! portable SQL runs on both through sqlx's `Any` driver. Transactions are
//! scoped to a tenant: on PostgreSQL the agency is set with
//! `set_config('touchstone.agency', …, true)` at the start of each
//! transaction so that row-level security backs up the application's own
//! checks; on SQLite, which allows one writer at a time, writers queue on an
//! in-process lock instead of failing with SQLITE_BUSY, and concurrent
//! writers share one transaction, a savepoint each, whose `COMMIT` (and
//! fsync) answers them all (group commit, DESIGN §4; see [`Tx::commit`]).
//!
//! Nothing acknowledged may be lost (DESIGN §5), so a transaction's
//! connection goes back to the pool only when its state is known: committed,
//! or rolled back without error. After any other ending (a failed `COMMIT`
//! or `ROLLBACK`, a storage fault) the connection is closed, never reused.
//! `Tx` issues `BEGIN`/`COMMIT`/`ROLLBACK` itself rather than through sqlx's
//! transaction type, whose depth counter is not told when SQLite rolls a
//! transaction back by itself (it does after an I/O error): the next user
//! of that connection then got a `SAVEPOINT` inside a transaction that never
//! ended, was told OK at its `RELEASE`, and its write was never committed.
//! [`Db::writable`] tells health whether writes can succeed.

use crate::statements::Statements;
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot, watch};

/// A pooled PostgreSQL connection idle this long is pinged before it is
/// handed out (see `Db::connect_via`).
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

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

/// `value` quoted as an SQL string literal, when it is made only of ASCII
/// letters, digits and `-`, `_`, `.`, `*` (so that no quoting rule of any
/// server setting can change its meaning); None otherwise.
pub(crate) fn plain_literal(value: &str) -> Option<String> {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'));
    plain.then(|| format!("'{value}'"))
}

/// The first statement of a write transaction (see [`Db::write_opening`]):
/// with its values bound, and, when every value is a plain name or a
/// number, with them as literals (sent on PostgreSQL in `BEGIN`'s round
/// trip; a statement with parameters cannot be).
#[derive(Debug)]
pub(crate) struct Opening {
    pub(crate) bound: Statements,
    pub(crate) literal: Option<String>,
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
    /// A pooler setting that needs PostgreSQL was given a SQLite URL.
    #[error("a transaction pooler (database_pooler = \"transaction\") needs a postgres: URL")]
    PoolerNeedsPostgres,
    /// Migrating through a transaction pooler would leave the migration
    /// lock (a session-level advisory lock) on a server connection that
    /// other clients then use.
    #[error(
        "migrations need a direct connection to PostgreSQL (setting migration_url), \
         not one through a transaction pooler"
    )]
    MigrateThroughPooler,
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
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pool: AnyPool,
    backend: Backend,
    pooler: Pooler,
    writer: Option<Arc<Mutex<Writer>>>,
    events: watch::Sender<u64>,
    faults: Arc<Faults>,
    /// The group commit of read audit records (`crate::audit::Batch`),
    /// started on first use.
    audit: std::sync::OnceLock<crate::audit::Batch>,
    /// The pool's name in metrics and the consumer name of its change
    /// feeds, once [`Db::set_name`] gave one.
    name: std::sync::OnceLock<String>,
    /// What the pool's metrics count (`crate::metrics`).
    pub(crate) stats: crate::metrics::PoolStats,
}

impl Inner {
    /// A connection from the pool, counted as waiting while it is awaited
    /// and timed for the pool's wait-time histogram.
    async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let _waiting = self.stats.waiting();
        let started = std::time::Instant::now();
        let conn = self.pool.acquire().await;
        self.stats.acquired(started.elapsed(), conn.as_ref().err());
        conn
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.get().map(String::as_str)
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        self.backend == Backend::Sqlite
    }
}

/// How long the write probe of [`Db::writable`] waits for SQLite's writer
/// lock before trusting what the writers ahead of it find instead.
const PROBE_LOCK_WAIT: Duration = Duration::from_millis(500);

/// Whether `e` says the database itself cannot do its work right now (a
/// lost or refused connection, an I/O error, a full disk, a read-only or
/// locked database, a server shutting down) rather than that the request's
/// statement was wrong: callers answer UNAVAILABLE and may retry.
pub fn is_storage_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // SQLSTATE: read-only transaction, connection exceptions,
                // insufficient resources, operator intervention (admin
                // shutdown, terminated backend), system errors.
                code == "25006"
                    || ["08", "53", "57", "58"]
                        .iter()
                        .any(|class| code.starts_with(class))
            } else {
                // SQLite's primary result code is the low byte of the
                // extended one: BUSY, LOCKED, NOMEM, READONLY, IOERR,
                // CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
                code.parse::<u32>()
                    .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26))
            }
        }
        _ => false,
    }
}

/// SQLite's `synchronous` setting (DESIGN §4): FULL syncs the WAL at every
/// commit, so a commit acknowledged is kept through a power loss; NORMAL
/// syncs only at checkpoints, which survives a crash of the process but may
/// lose the last commits when the machine loses power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Durable against a crash of the process only.
    Normal,
    /// Durable against power loss (the default).
    Full,
}

static SYNCHRONOUS_FULL: AtomicBool = AtomicBool::new(true);

/// Sets `synchronous` for SQLite connections opened from now on (the
/// binary sets it from its settings at start-up; benchmarks compare both).
pub fn set_sqlite_synchronous(s: Synchronous) {
    SYNCHRONOUS_FULL.store(s == Synchronous::Full, Ordering::Relaxed);
}

/// The `synchronous` setting SQLite connections are opened with now.
pub fn sqlite_synchronous() -> Synchronous {
    if SYNCHRONOUS_FULL.load(Ordering::Relaxed) {
        Synchronous::Full
    } else {
        Synchronous::Normal
    }
}

/// What stands between a service and PostgreSQL (setting
/// `<service>.database_pooler`, DESIGN §12).
///
/// Through a pooler in transaction mode (PgBouncer, CloudNativePG's
/// `Pooler`), a client's successive transactions run on whichever server
/// connection is free, so nothing may outlive a transaction on the server:
/// tenant settings are already transaction-local (`set_config(…, true)`),
/// and feeds are polled, not LISTENed for. What remains is sqlx's prepared
/// statements: it names them (`sqlx_s_1`, `sqlx_s_2`, …, counted per client
/// connection) and keeps them on the server for its statement cache; through
/// the pooler another client then finds the name taken, or its own missing.
/// sqlx 0.9 names them even with the cache off (capacity 0), and then never
/// closes them. So in `Transaction` mode the cache is off and every
/// transaction starts with `DEALLOCATE ALL` in the same round trip as
/// `BEGIN`: the server connection the pooler lends holds only the
/// statements of the transaction it serves, whose names cannot collide.
/// Every statement with parameters runs inside a transaction (a `Tx`), where
/// the pooler keeps the server connection from `Parse` to `Sync`. Migrations
/// take a session-level advisory lock and need a direct connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// A direct connection, or a pooler in session mode (the default):
    /// prepared statements are cached per connection.
    #[default]
    None,
    /// A pooler in transaction mode that does not track prepared
    /// statements (PgBouncer before 1.21, or `max_prepared_statements = 0`).
    Transaction,
}

/// `url` with `statement-cache-capacity=0`, in place of any capacity it
/// sets (sqlx writes one into the URLs it builds).
fn without_statement_cache(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("statement-cache-capacity="))
        .collect();
    pairs.push("statement-cache-capacity=0");
    format!("{base}?{}", pairs.join("&"))
}

/// A URL for a SQLite file, creating it if it is missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Db {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`),
    /// directly.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        Db::connect_via(url, max_connections, Pooler::None).await
    }

    /// Connects to `url` through `pooler` (see [`Pooler`]).
    pub async fn connect_via(
        url: &str,
        max_connections: u32,
        pooler: Pooler,
    ) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::BadUrl);
        };
        let url = match (pooler, backend) {
            (Pooler::None, _) => url.to_string(),
            (Pooler::Transaction, Backend::Postgres) => without_statement_cache(url),
            (Pooler::Transaction, Backend::Sqlite) => return Err(DbError::PoolerNeedsPostgres),
        };
        let url = url.as_str();
        let faults = Arc::new(Faults::new(
            sqlite_path(url).filter(|_| backend == Backend::Sqlite),
        ));
        // A connection that was open during a storage fault is closed when
        // it is next released (see `Faults::keep`).
        let on_release = faults.clone();
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every connection it hands out, by default: on SQLite
            // a hand-off to the connection's thread and back that tells
            // nothing (the file is local), on PostgreSQL a round trip to the
            // server per transaction. A connection is checked instead only
            // when it has been idle long enough for the server or the network
            // to have dropped it; one dropped sooner fails its first statement
            // and is closed (the transaction's error path, see `end`).
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres && meta.idle_for >= PING_AFTER_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_release(move |_conn, meta| {
                let keep = on_release.keep(meta.age);
                Box::pin(async move { Ok(keep) })
            });
        if backend == Backend::Sqlite {
            if let Some(dir) = sqlite_path(url).and_then(|p| p.parent().map(Path::to_path_buf))
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            // SQLite opens a file it may not write read-only without a word,
            // and such a connection would refuse every write for the rest of
            // its life, long after the fault that caused it is gone; so every
            // connection that was open while the files could not be written is
            // closed when it is next released.
            let on_connect = faults.clone();
            options = options.after_connect(move |conn, _meta| {
                let faults = on_connect.clone();
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; secure_delete
                    // overwrites erased personal data instead of leaving it in
                    // free pages. (No `PRAGMA optimize` here: it writes the
                    // statistics tables outside the in-process writer lock,
                    // and a writer upgrading past it fails with
                    // SQLITE_BUSY_SNAPSHOT.)
                    conn.execute(sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
                    ))
                    .await?;
                    conn.execute(sqlx::raw_sql(if SYNCHRONOUS_FULL.load(Ordering::Relaxed) {
                        "PRAGMA synchronous = FULL;"
                    } else {
                        "PRAGMA synchronous = NORMAL;"
                    }))
                    .await?;
                    faults.files_writable();
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
                pooler,
                writer: (backend == Backend::Sqlite)
                    .then(|| Arc::new(Mutex::new(Writer::default()))),
                events,
                faults,
                audit: std::sync::OnceLock::new(),
                name: std::sync::OnceLock::new(),
                stats: crate::metrics::PoolStats::default(),
            }),
        })
    }

    /// Records reads of personal data, one audit record per resource, in
    /// the next group commit of this database's read audit (DESIGN §4),
    /// returning once that commit is durable. A read's answer is released
    /// only after this returns Ok: no read is answered unrecorded, and
    /// concurrent reads share one write transaction instead of queueing
    /// for the writer one by one.
    pub async fn audit_reads<S: AsRef<str>>(
        &self,
        template: crate::audit::Access<'_>,
        resources: &[S],
    ) -> Result<(), sqlx::Error> {
        let batch = self
            .inner
            .audit
            .get_or_init(|| crate::audit::Batch::start(Arc::downgrade(&self.inner)));
        batch.record(template, resources).await
    }

    /// Whether `other` is this database (the same pool, not merely the same
    /// URL).
    pub fn is_same(&self, other: &Db) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Names this database (the service that owns it, e.g. `register`):
    /// its pool appears in the process's metrics under that name
    /// (`db_client_connection_pool_name`), and its change-feed consumers
    /// under it as `consumer`. The first name given stays; a later pool
    /// given the same name takes its place in the metrics.
    pub fn set_name(&self, name: &str) {
        if self.inner.name.set(name.to_string()).is_ok() {
            crate::metrics::register_pool(name, &self.inner);
        }
    }

    /// The name [`Db::set_name`] gave, if any.
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Db {
        Db { inner }
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

    /// For a read made of **one statement**: on SQLite no transaction is
    /// opened, since a statement alone reads one snapshot (and `BEGIN` and
    /// `COMMIT` would be two more hand-offs to the connection's thread);
    /// on PostgreSQL the same as [`Db::read`] (row-level security needs
    /// the scope set in a transaction). A caller that runs more than one
    /// statement on it must use [`Db::read`] instead: on SQLite each would
    /// see its own snapshot. (Reads of rows written once and never changed,
    /// such as a data key the keyring has not cached yet, may come first.)
    pub async fn read_one(&self, scope: Scope<'_>) -> Result<Tx, sqlx::Error> {
        if self.inner.backend == Backend::Sqlite {
            let conn = self.inner.acquire().await?;
            let mut tx = Tx::new(conn, self.clone(), false);
            tx.autocommit = true;
            return Ok(tx);
        }
        self.begin(scope, false).await
    }

    /// Starts a write transaction (as [`Db::write`]) whose first statement
    /// is `first`, sent in the same hand-off to SQLite's thread as the
    /// transaction's start, or on PostgreSQL in the same round trip as
    /// `BEGIN` when `first` has a literal form; returns the rows `first`
    /// changed. A change claims its request id so (see `change::begin`).
    pub(crate) async fn write_opening(
        &self,
        scope: Scope<'_>,
        first: Opening,
    ) -> Result<(Tx, u64), sqlx::Error> {
        if let Some(lock) = &self.inner.writer {
            let writer = self.take_writer(lock.clone()).await;
            return self.begin_sqlite_write(writer, Some(first.bound)).await;
        }
        let conn = self.acquire_for_write().await?;
        let mut tx = Tx::new(conn, self.clone(), true);
        let begun = match first.literal {
            Some(literal) => tx.start_then(scope, Some(&literal)).await,
            None => match tx.start(scope).await {
                Ok(()) => first.bound.execute(&mut tx).await,
                Err(e) => Err(e),
            },
        };
        match begun {
            Ok(changed) => Ok((tx, changed)),
            Err(e) => {
                self.note_write(&Err(&e));
                Err(e)
            }
        }
    }

    /// A write transaction whose whole work is `s` (statements that need
    /// nothing back, see [`Statements`]), committed: on SQLite its start,
    /// `s` and its savepoint's release are one call on the connection's
    /// thread (one hand-off while the writer lock is held); on PostgreSQL
    /// `s` is one round trip after `BEGIN`'s. `appended_events` says whether
    /// `s` appends outbox events (watchers are woken after the commit). When
    /// `s` fails, nothing of it stays. On SQLite it runs in a task of its
    /// own, like a group's commit (see [`Tx::commit`]): a caller that stops
    /// waiting cannot cut it short between the release and the commit,
    /// which would undo the whole group.
    pub(crate) async fn commit_all(
        &self,
        scope: Scope<'_>,
        s: Statements,
        appended_events: bool,
    ) -> Result<(), sqlx::Error> {
        self.commit_all_then(scope, s, appended_events, || {}).await
    }

    /// [`Db::commit_all`], calling `written` once `s` has run without an
    /// error, before the commit: from then on, a writer that meets the rows
    /// `s` wrote waits for this transaction's end (PostgreSQL) or comes
    /// after it under the writer lock (SQLite).
    pub(crate) async fn commit_all_then(
        &self,
        scope: Scope<'_>,
        mut s: Statements,
        appended_events: bool,
        written: impl FnOnce() + Send + 'static,
    ) -> Result<(), sqlx::Error> {
        if let Some(lock) = self.inner.writer.clone() {
            let db = self.clone();
            let task = async move {
                let writer = db.take_writer(lock).await;
                s.push("RELEASE SAVEPOINT w".to_string());
                let (mut tx, _) = db.begin_sqlite_write(writer, Some(s)).await?;
                tx.released = true;
                tx.appended_events = appended_events;
                written();
                tx.commit_in_group().await
            };
            return tokio::spawn(task)
                .await
                .unwrap_or_else(|e| Err(task_failed(e)));
        }
        let mut tx = self.begin(scope, true).await?;
        if let Err(e) = s.execute(&mut tx).await {
            self.note_write(&Err(&e));
            return Err(e);
        }
        written();
        tx.appended_events = appended_events;
        tx.commit().await
    }

    async fn begin(&self, scope: Scope<'_>, write: bool) -> Result<Tx, sqlx::Error> {
        if write && let Some(lock) = &self.inner.writer {
            let writer = self.take_writer(lock.clone()).await;
            return Ok(self.begin_sqlite_write(writer, None).await?.0);
        }
        let conn = match self.inner.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                if write {
                    self.note_write(&Err(&e));
                }
                return Err(e);
            }
        };
        // From here on, dropping `tx` (on an error, or when the caller gives
        // up) rolls back, or closes the connection if that fails.
        let mut tx = Tx::new(conn, self.clone(), write);
        let begun = tx.start(scope).await;
        if let Err(e) = begun {
            if write {
                self.note_write(&Err(&e));
            }
            return Err(e);
        }
        Ok(tx)
    }

    /// A SQLite write transaction for the holder of the writer lock: it
    /// joins the group transaction other writers left open for their commit
    /// (in a savepoint of its own), or begins one; `first`, if any, runs in
    /// the same call (its changed rows are returned).
    async fn begin_sqlite_write(
        &self,
        mut writer: OwnedMutexGuard<Writer>,
        first: Option<Statements>,
    ) -> Result<(Tx, u64), sqlx::Error> {
        let (mut tx, opening) = match writer.open.take() {
            Some(group) => {
                let mut tx = Tx::new(group.conn, self.clone(), true);
                tx.members = Some(group.members);
                (tx, "SAVEPOINT w")
            }
            None => {
                let conn = self.acquire_for_write().await?;
                let mut tx = Tx::new(conn, self.clone(), true);
                tx.members = Some(Box::new(Members::new()));
                // IMMEDIATE: the group holds SQLite's write lock from the
                // start, so a joiner's first write never meets a snapshot
                // another process made stale. Its work, too, is in
                // savepoint `w`, so that its commit checks (by releasing it)
                // that SQLite has not rolled the transaction back by itself
                // after an I/O error.
                (tx, "BEGIN IMMEDIATE; SAVEPOINT w")
            }
        };
        tx.writer = Some(writer);
        let begun = match first {
            Some(first) => first.execute_sqlite_after(opening, tx.conn()).await,
            None => tx
                .conn()
                .execute(sqlx::raw_sql(opening))
                .await
                .map(|r| r.rows_affected()),
        };
        match begun {
            Ok(changed) => Ok((tx, changed)),
            Err(e) => {
                // Dropping `tx` rolls back to the savepoint if it was made
                // (a joiner's group goes on), and otherwise finds the
                // transaction's state unknown: a new group's connection is
                // closed, a joined group given up and its members told.
                self.note_write(&Err(&e));
                Err(e)
            }
        }
    }

    /// SQLite's writer lock, counted as queued while it is waited for.
    async fn take_writer(&self, lock: Arc<Mutex<Writer>>) -> OwnedMutexGuard<Writer> {
        let queued = self.inner.stats.queued_writer();
        let writer = lock.lock_owned().await;
        drop(queued);
        writer
    }

    /// A pooled connection for a write; failing to get one is noted as a
    /// failed write (see [`Db::writable`]).
    async fn acquire_for_write(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let acquired = self.inner.acquire().await;
        if let Err(e) = &acquired {
            self.note_write(&Err(e));
        }
        acquired
    }

    /// Records how a write ended, for [`Db::writable`].
    fn note_write(&self, outcome: &Result<(), &sqlx::Error>) {
        match outcome {
            Ok(()) => self.inner.faults.committed(),
            Err(e) if is_storage_fault(e) => self.inner.faults.failed(),
            Err(_) => {}
        }
    }

    fn writes_failing(&self) -> bool {
        self.inner.faults.failing.load(Ordering::Acquire)
    }

    /// Whether the database answers a trivial query within two seconds.
    /// Sent with the simple protocol: outside a transaction, through a
    /// transaction pooler, a prepared statement's parts may reach different
    /// server connections (see [`Pooler`]).
    pub async fn ping(&self) -> bool {
        let probe = sqlx::raw_sql("SELECT 1").execute(&self.inner.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(_))
        )
    }

    /// Whether a write would succeed now, for health (DESIGN §5: NOT_SERVING
    /// while writes cannot succeed). When a write has committed since the
    /// last call and none has failed after it, yes without asking; otherwise
    /// a one-row write is tried, so an idle service finds out too. While
    /// other SQLite writers hold the writer lock, their outcome will answer
    /// the next call, and this one goes by whether writes are failing.
    pub async fn writable(&self) -> bool {
        let faults = &self.inner.faults;
        let committed = faults.committed_since_asked.swap(false, Ordering::AcqRel);
        if committed && !self.writes_failing() {
            return true;
        }
        let tx = match &self.inner.writer {
            Some(lock) => {
                match tokio::time::timeout(PROBE_LOCK_WAIT, lock.clone().lock_owned()).await {
                    Ok(writer) => self
                        .begin_sqlite_write(writer, None)
                        .await
                        .map(|(tx, _)| tx),
                    Err(_) => return !self.writes_failing(),
                }
            }
            None => self.begin(Scope::AllAgencies, true).await,
        };
        self.probe_write(tx).await.is_ok()
    }

    async fn probe_write(&self, tx: Result<Tx, sqlx::Error>) -> Result<(), sqlx::Error> {
        let mut tx = tx?;
        let wrote = sqlx::query("UPDATE write_probe SET probe_time = $1 WHERE id = 1")
            .bind(crate::times::now_millis())
            .execute(tx.conn())
            .await;
        if let Err(e) = wrote {
            // Noted before `tx` drops, so that its connection is closed.
            self.note_write(&Err(&e));
            return Err(e);
        }
        tx.commit().await
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
        if self.inner.pooler == Pooler::Transaction {
            return Err(DbError::MigrateThroughPooler);
        }
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

/// What this process knows about the database's ability to take writes,
/// shared by the pool's hooks, the transactions and [`Db::writable`].
#[derive(Debug)]
struct Faults {
    /// A SQLite file and its write-ahead log.
    files: Option<[std::path::PathBuf; 2]>,
    since: std::time::Instant,
    /// Set by a write that failed with a storage fault (or SQLite files
    /// found unwritable); cleared by the next write that commits.
    failing: AtomicBool,
    /// When `failing` was last cleared: microseconds after `since`, plus one
    /// (0 = never).
    ended_at: AtomicU64,
    /// A write committed since [`Db::writable`] last asked.
    committed_since_asked: AtomicBool,
}

impl Faults {
    fn new(sqlite: Option<std::path::PathBuf>) -> Self {
        let files = sqlite.map(|db| {
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            [db, wal.into()]
        });
        Faults {
            files,
            since: std::time::Instant::now(),
            failing: AtomicBool::new(false),
            ended_at: AtomicU64::new(0),
            committed_since_asked: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn failed(&self) {
        self.failing.store(true, Ordering::Release);
    }

    fn committed(&self) {
        self.committed_since_asked.store(true, Ordering::Release);
        if self.failing.swap(false, Ordering::AcqRel) {
            self.ended_at
                .store(self.now().saturating_add(1), Ordering::Release);
        }
    }

    /// Whether this process may write the SQLite files (a missing log
    /// counts as writable; PostgreSQL: always), noting a fault when not.
    /// `access(2)` rather than an open: closing any descriptor of the file
    /// would drop SQLite's locks on it.
    fn files_writable(&self) -> bool {
        let Some(files) = &self.files else {
            return true;
        };
        #[cfg(unix)]
        let writable = files.iter().all(|file| {
            matches!(
                rustix::fs::access(file, rustix::fs::Access::WRITE_OK),
                Ok(()) | Err(rustix::io::Errno::NOENT)
            )
        });
        #[cfg(not(unix))]
        let writable = !files.is_empty();
        if !writable {
            self.failed();
        }
        writable
    }

    /// Whether a connection released after `age` of life may go back to the
    /// pool: not while writes are failing, nor if it was open during a
    /// fault. Such a connection may be in a state nothing can see: a SQLite
    /// file opened read-only because it could not be written then, a
    /// PostgreSQL session made read-only by the server, a transaction the
    /// driver lost track of.
    fn keep(&self, age: Duration) -> bool {
        if !self.files_writable() || self.failing.load(Ordering::Acquire) {
            return false;
        }
        let ended = self.ended_at.load(Ordering::Acquire);
        let opened = self
            .now()
            .saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
        ended == 0 || opened >= ended
    }
}

/// Most writers that share one SQLite transaction: the last one commits it
/// without waiting for more. (No timer is needed: the writer lock is FIFO,
/// so a group holds at most the writers queued when its first member
/// finished, and its commit comes right after them.)
const GROUP_MEMBERS: usize = 256;

/// SQLite's writer lock, and what it guards between writers: the group
/// transaction waiting for its commit, if any.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    open: Option<Group>,
}

/// A SQLite write transaction some writers have finished their part of:
/// each released its savepoint and waits for the `COMMIT`. Held in
/// [`Writer`] only while someone waits for it, whose commit task then takes
/// the writer lock and commits it unless the group was committed first.
#[derive(Debug)]
struct Group {
    conn: PoolConnection<Any>,
    members: Box<Members>,
}

/// The writers waiting for a group's commit.
#[derive(Debug)]
struct Members {
    /// Told once the group's `COMMIT` has run (Ok, or why it failed); a
    /// sender dropped unsent means the transaction was given up.
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
    /// Writes that released their savepoint into the group.
    writes: usize,
    appended_events: bool,
}

impl Members {
    fn new() -> Members {
        Members {
            waiting: Vec::new(),
            writes: 0,
            appended_events: false,
        }
    }
}

/// A transaction bound to a tenant scope. Dropping it without `commit`
/// rolls back.
#[derive(Debug)]
pub struct Tx {
    /// In a transaction until `commit` or drop.
    conn: Option<PoolConnection<Any>>,
    /// SQLite's in-process writer lock, for write transactions.
    writer: Option<OwnedMutexGuard<Writer>>,
    /// SQLite write transactions: the group this one belongs to (its work
    /// is in savepoint `w` of the group's transaction).
    members: Option<Box<Members>>,
    db: Db,
    /// Opened with [`Db::write`].
    write: bool,
    /// Opened by [`Db::read_one`] on SQLite: no transaction to end.
    autocommit: bool,
    /// A SQLite group member whose savepoint was released with its last
    /// statements (see [`Tx::commit_after`]).
    released: bool,
    appended_events: bool,
}

impl Drop for Tx {
    fn drop(&mut self) {
        // While writes are failing, a write that ended without committing
        // may have been cut off by the fault (a lost connection, a session
        // the server made read-only): its connection is not trusted again.
        let trusted = !(self.write && self.db.writes_failing());
        self.end(trusted);
    }
}

impl Tx {
    fn new(conn: PoolConnection<Any>, db: Db, write: bool) -> Tx {
        Tx {
            conn: Some(conn),
            writer: None,
            members: None,
            db,
            write,
            autocommit: false,
            released: false,
            appended_events: false,
        }
    }

    /// Ends the transaction without committing (see [`end_uncommitted`]).
    fn end(&mut self, trusted: bool) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.autocommit {
            // No transaction was opened: its statement ended with itself.
            drop(conn);
            return;
        }
        let ending = Ending {
            members: self.members.take(),
            writer: self.writer.take(),
        };
        match tokio::runtime::Handle::try_current() {
            // The writer lock is released only once the rollback has run:
            // the next writer would otherwise find SQLite still locked.
            Ok(runtime) => {
                runtime.spawn(end_uncommitted(conn, ending, trusted));
            }
            // No runtime left to roll back on: closing the connection rolls
            // back too (and the group's members are told it was given up).
            Err(_) => drop(conn.detach()),
        }
    }
}

/// What a transaction ending uncommitted hands on besides its connection.
struct Ending {
    // Members first: dropped unsent, they are told before the lock goes.
    members: Option<Box<Members>>,
    writer: Option<OwnedMutexGuard<Writer>>,
}

/// Ends a transaction that was not committed: rolled back, its connection
/// goes back to the pool; when the rollback fails, or `trusted` is false, the
/// connection's state is unknown and it is closed instead. A writer in a
/// group others wait for rolls back only its savepoint and leaves the group
/// to them; if that fails, the group is given up and its members told.
async fn end_uncommitted(mut conn: PoolConnection<Any>, ending: Ending, trusted: bool) {
    let Ending { members, writer } = ending;
    let shared = members.as_ref().is_some_and(|m| !m.waiting.is_empty());
    if trusted {
        let rollback = if shared {
            "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w"
        } else {
            "ROLLBACK"
        };
        match conn.execute(sqlx::raw_sql(rollback)).await {
            Ok(_) => {
                match (writer, members) {
                    (Some(mut writer), Some(members)) if shared => {
                        writer.open = Some(Group { conn, members });
                    }
                    (writer, _) => {
                        drop(conn);
                        drop(writer);
                    }
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "rolling back failed; closing the connection"),
        }
    }
    discard(conn).await;
    drop(members);
    drop(writer);
}

/// Commits a SQLite group transaction and tells its members how it went.
async fn commit_group(
    db: &Db,
    writer: OwnedMutexGuard<Writer>,
    mut conn: PoolConnection<Any>,
    members: Box<Members>,
) -> Result<(), sqlx::Error> {
    let committed = conn.execute(sqlx::raw_sql("COMMIT")).await.map(|_| ());
    db.note_write(&committed.as_ref().map(|_| ()));
    if committed.is_ok() {
        db.inner.stats.group_committed(members.writes);
    }
    match &committed {
        Ok(()) => drop(conn),
        Err(_) => discard(conn).await,
    }
    // Members are told before the lock is released: a member whose turn at
    // the lock comes next must find its answer, not an empty `open` (or the
    // next group, which is not its to commit).
    let told = committed.as_ref().map(|_| ()).map_err(|e| e.to_string());
    for member in members.waiting {
        let _ = member.send(told.clone());
    }
    drop(writer);
    if committed.is_ok() && members.appended_events {
        db.notify_events();
    }
    committed
}

/// What a member of a group is told, as its commit's outcome: a failed or
/// abandoned group is a storage fault (UNAVAILABLE; the write may be retried).
fn group_outcome(told: Option<Result<(), String>>) -> Result<(), sqlx::Error> {
    match told {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(sqlx::Error::Io(std::io::Error::other(format!(
            "the shared write transaction did not commit: {e}"
        )))),
        None => Err(sqlx::Error::Io(std::io::Error::other(
            "the shared write transaction was rolled back",
        ))),
    }
}

/// A commit task that panicked or was cancelled (the runtime shutting down).
fn task_failed(e: tokio::task::JoinError) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "the group commit task failed: {e}"
    )))
}

/// Closes a connection whose state is unknown instead of returning it to the
/// pool, which opens a fresh one when it next needs one.
async fn discard(conn: PoolConnection<Any>) {
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing a discarded connection failed");
    }
}

impl Tx {
    async fn start(&mut self, scope: Scope<'_>) -> Result<(), sqlx::Error> {
        self.start_then(scope, None).await.map(drop)
    }

    /// Begins, and on PostgreSQL sends `then` (an SQL statement with its
    /// values as literals) in the same round trip as `BEGIN` when the
    /// scope is a plain name; returns the rows `then` changed.
    async fn start_then(
        &mut self,
        scope: Scope<'_>,
        then: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        let backend = self.backend();
        let begin = match self.db.inner.pooler {
            Pooler::None => "BEGIN",
            // See `Pooler`: this transaction's server connection keeps no
            // statement another client prepared on it.
            Pooler::Transaction => "BEGIN; DEALLOCATE ALL",
        };
        let conn = self.conn();
        if backend == Backend::Postgres {
            // The scope is set in the same round trip as `BEGIN` when it is
            // a plain name (every agency id is); anything else is bound.
            if let Some(literal) = plain_literal(scope.setting()) {
                let mut sql =
                    format!("{begin}; SELECT set_config('touchstone.agency', {literal}, true)");
                if let Some(then) = then {
                    sql.push_str("; ");
                    sql.push_str(then);
                }
                // The rows changed by the last statement alone.
                let mut results = conn.execute_many(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)));
                let mut last = 0;
                while let Some(result) = futures::StreamExt::next(&mut results).await {
                    last = result?.rows_affected();
                }
                return Ok(if then.is_some() { last } else { 0 });
            }
            conn.execute(sqlx::raw_sql(begin)).await?;
            sqlx::query("SELECT set_config('touchstone.agency', $1, true)")
                .bind(scope.setting())
                .execute(&mut *conn)
                .await?;
        } else {
            conn.execute(sqlx::raw_sql(begin)).await?;
        }
        match then {
            Some(then) => Ok(self
                .conn()
                .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(then.to_string())))
                .await?
                .rows_affected()),
            None => Ok(0),
        }
    }

    /// Changes which agency's rows the rest of this transaction sees (on
    /// PostgreSQL; SQLite has no row-level security).
    pub(crate) async fn set_scope(&mut self, scope: Scope<'_>) -> Result<(), sqlx::Error> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT set_config('touchstone.agency', $1, true)")
                .bind(scope.setting())
                .execute(self.conn())
                .await?;
        }
        Ok(())
    }

    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        self.conn
            .as_deref_mut()
            .expect("a Tx holds its connection until commit or drop")
    }

    /// The database this transaction runs on.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Whether this transaction runs on `db` (the same pool, not merely the
    /// same URL).
    pub fn is_on(&self, db: &Db) -> bool {
        self.db.is_same(db)
    }

    /// Whether it was opened with [`Db::write`].
    pub fn is_write(&self) -> bool {
        self.write
    }

    /// Sends `s` (the last statements, see [`Statements`]) as one request,
    /// then commits ([`Tx::commit`]). A SQLite write in a group releases its
    /// savepoint in the same call, saving a hand-off to SQLite's thread
    /// while the writer lock is held; both run in a task of their own, as
    /// the group's commit does: a caller that stopped waiting after the
    /// release but before the commit would otherwise roll back to a
    /// savepoint already released, and so give up the whole group.
    pub(crate) async fn commit_after(mut self, mut s: Statements) -> Result<(), sqlx::Error> {
        if self.members.is_none() {
            s.execute(&mut self).await?;
            return self.commit().await;
        }
        let task = async move {
            s.push("RELEASE SAVEPOINT w".to_string());
            if let Err(e) = s.execute(&mut self).await {
                self.db.note_write(&Err(&e));
                return Err(e);
            }
            self.released = true;
            self.commit_in_group().await
        };
        tokio::spawn(task)
            .await
            .unwrap_or_else(|e| Err(task_failed(e)))
    }

    pub(crate) fn mark_events_appended(&mut self) {
        self.appended_events = true;
    }

    /// Commits, then wakes change-feed watchers if events were appended. Ok
    /// means the transaction is committed; an error means it may or may not
    /// be (a connection lost during `COMMIT`), and the connection is closed.
    ///
    /// A SQLite write commits in a group (DESIGN §4): its savepoint is
    /// released, the transaction is left open for the writers queued behind
    /// it, and this returns once a `COMMIT` that includes it has run. The
    /// group is committed by the first of its members whose turn at the
    /// writer lock comes round again: by then every writer that was queued
    /// when the group's first member finished has had its turn, so the group
    /// grows with the load and no writer waits for a timer. A member whose
    /// statement fails rolls back only its savepoint.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        if self.members.is_some() {
            // In a task of its own, so that a caller that stops waiting
            // (its deadline passed) cannot cut the release or the group's
            // commit short and make the whole group roll back.
            return tokio::spawn(self.commit_in_group())
                .await
                .unwrap_or_else(|e| Err(task_failed(e)));
        }
        if self.autocommit {
            drop(self.conn.take());
            return Ok(());
        }
        let committed = self.conn().execute(sqlx::raw_sql("COMMIT")).await;
        if self.write {
            self.db.note_write(&committed.as_ref().map(|_| ()));
        }
        if let Err(e) = committed {
            self.end(false);
            return Err(e);
        }
        drop(self.conn.take());
        drop(self.writer.take());
        if self.appended_events {
            self.db.notify_events();
        }
        Ok(())
    }

    async fn commit_in_group(mut self) -> Result<(), sqlx::Error> {
        // Fails if SQLite rolled the transaction back by itself: then the
        // group is given up (see `end`), and nobody is told it committed.
        // (Released already if its last statements did so.)
        if !self.released
            && let Err(e) = self
                .conn()
                .execute(sqlx::raw_sql("RELEASE SAVEPOINT w"))
                .await
        {
            self.db.note_write(&Err(&e));
            self.end(false);
            return Err(e);
        }
        let (Some(conn), Some(mut writer), Some(mut members)) =
            (self.conn.take(), self.writer.take(), self.members.take())
        else {
            unreachable!("a SQLite write transaction holds its connection, lock and group");
        };
        members.appended_events |= self.appended_events;
        members.writes += 1;
        let db = self.db.clone();
        if members.writes >= GROUP_MEMBERS {
            return commit_group(&db, writer, conn, members).await;
        }
        let (done, mut told) = oneshot::channel();
        members.waiting.push(done);
        writer.open = Some(Group { conn, members });
        let lock = OwnedMutexGuard::mutex(&writer).clone();
        drop(writer);
        // This runs in a task of its own (see `commit`), so the group is
        // committed even if this member's caller stops waiting.
        let commit = async move {
            let turn = tokio::select! {
                biased;
                outcome = &mut told => return group_outcome(outcome.ok()),
                writer = lock.lock_owned() => writer,
            };
            match told.try_recv() {
                Ok(outcome) => group_outcome(Some(outcome)),
                Err(oneshot::error::TryRecvError::Empty) => {
                    // Not answered yet, so the group is open, waiting: its
                    // members are answered before the lock is released.
                    let mut writer = turn;
                    match writer.open.take() {
                        Some(group) => commit_group(&db, writer, group.conn, group.members).await,
                        None => {
                            drop(writer);
                            group_outcome(told.await.ok())
                        }
                    }
                }
                Err(oneshot::error::TryRecvError::Closed) => group_outcome(None),
            }
        };
        commit.await
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

/// The platform's own tables: outbox, idempotency records, data keys, audit,
/// feed cursors and the write probe.
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
            name: "write probe",
            sql: include_str!("../migrations/sqlite/0003_write_probe.sql"),
        },
        Migration {
            version: 4,
            name: "key repair",
            sql: include_str!("../migrations/sqlite/0004_key_repair.sql"),
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
            name: "feed transaction ids",
            sql: include_str!("../migrations/postgres/0003_feed_xid.sql"),
        },
        Migration {
            version: 4,
            name: "write probe",
            sql: include_str!("../migrations/postgres/0004_write_probe.sql"),
        },
        Migration {
            version: 5,
            name: "key repair",
            sql: include_str!("../migrations/postgres/0005_key_repair.sql"),
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
    use futures::future::BoxFuture;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/register.db?mode=rwc"),
            Some("data/register.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    async fn insert(db: Db, id: i64) -> Result<(), sqlx::Error> {
        let mut tx = db.write(Scope::AllAgencies).await?;
        sqlx::query("INSERT INTO t (id) VALUES ($1)")
            .bind(id)
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }

    async fn count(db: &Db) -> Result<i64, sqlx::Error> {
        let mut tx = db.read(Scope::AllAgencies).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(tx.conn())
            .await
    }

    /// The SQLite file and its log refuse writes for a while: every write
    /// acknowledged before, during or after the fault is still there when the
    /// database is opened again, `writable` says no during the fault, and
    /// writes succeed again as soon as it is gone, without reopening
    /// anything. (Before `Tx` managed its own transactions, writes failed with
    /// "database is locked" long after the fault, and writes acknowledged
    /// after it were lost.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storage_fault_loses_no_acknowledged_write() {
        use crate::testing::fault;
        let dir = tempfile::tempdir().expect("temporary directory");
        if !fault::available(dir.path()) {
            return;
        }
        let path = dir.path().join("fault.db");
        let url = sqlite_url(&path);
        let db = Db::connect(&url, 4).await.expect("open");
        db.migrate(&[&PLATFORM_MIGRATIONS], None)
            .await
            .expect("migrate");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(db.pool())
            .await
            .expect("create");
        let mut acknowledged = Vec::new();
        for id in 0..10 {
            insert(db.clone(), id)
                .await
                .expect("a write before the fault");
            acknowledged.push(id);
        }

        let mut immutable = fault::Immutable::sqlite(&path);
        let mut during = tokio::task::JoinSet::new();
        for id in 100..120 {
            let writer = db.clone();
            during.spawn(async move { (id, insert(writer, id).await) });
            let reader = db.clone();
            during.spawn(async move { (-1, count(&reader).await.map(|_| ())) });
        }
        let mut failed = 0;
        while let Some(joined) = during.join_next().await {
            match joined.expect("a task") {
                (id, Ok(())) if id >= 0 => acknowledged.push(id),
                (_, Ok(())) => {}
                (_, Err(_)) => failed += 1,
            }
        }
        assert!(failed > 0, "no write failed while the files were immutable");
        assert!(
            !db.writable().await,
            "writable while the files are immutable"
        );
        assert!(
            !db.writable().await,
            "writable while the files are immutable"
        );
        immutable.clear();
        assert!(db.writable().await, "not writable once the fault is gone");

        for id in 200..210 {
            insert(db.clone(), id)
                .await
                .unwrap_or_else(|e| panic!("write {id} after the fault: {e}"));
            acknowledged.push(id);
            count(&db).await.expect("a read after the fault");
        }
        db.close().await;

        let reopened = Db::connect(&url, 1).await.expect("reopen");
        let mut missing = Vec::new();
        for id in &acknowledged {
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE id = $1")
                .bind(id)
                .fetch_one(reopened.pool())
                .await
                .expect("read back");
            if found != 1 {
                missing.push(*id);
            }
        }
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    }

    /// Writers queued behind another share its transaction and its one
    /// COMMIT, each in a savepoint: one whose statement fails leaves the
    /// others' writes in the group, and every write acknowledged is there
    /// when the file is opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_sqlite_writers_commit_as_one_group() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (db, url) = table_t(&dir, "group", 4).await;
        let stats = &db.inner.stats;
        let commits_before = stats.group_commits.load(Ordering::Relaxed);

        let mut first = db.write(Scope::AllAgencies).await.expect("begin");
        sqlx::query("INSERT INTO t (id) VALUES (0)")
            .execute(first.conn())
            .await
            .expect("insert 0");
        // Three writers queue behind it; the second repeats id 0, which the
        // first has written in the shared transaction.
        let mut queued = tokio::task::JoinSet::new();
        for id in [1, 0, 2] {
            let db = db.clone();
            queued.spawn(async move { (id, insert(db, id).await) });
            while stats.writers_queued.load(Ordering::Relaxed) < queued.len() as i64 {
                tokio::task::yield_now().await;
            }
        }
        first.commit().await.expect("the first write commits");
        let mut outcomes = Vec::new();
        while let Some(joined) = queued.join_next().await {
            let (id, outcome) = joined.expect("a writer");
            outcomes.push((id, outcome.is_ok()));
        }
        outcomes.sort();
        assert_eq!(outcomes, vec![(0, false), (1, true), (2, true)]);
        assert_eq!(
            stats.group_commits.load(Ordering::Relaxed) - commits_before,
            1,
            "the three writes that succeeded shared one COMMIT"
        );
        assert_eq!(stats.group_writes.load(Ordering::Relaxed), 3);
        db.close().await;

        let reopened = Db::connect(&url, 1).await.expect("reopen");
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM t ORDER BY id")
            .fetch_all(reopened.pool())
            .await
            .expect("read back");
        assert_eq!(ids, vec![0, 1, 2]);
    }

    /// A member whose caller stops waiting in the middle of its commit (its
    /// deadline passed) does not make the group roll back: the others'
    /// writes and its own are committed. (Its savepoint used to be released
    /// in the caller's future; dropped there, the rollback that followed
    /// found no savepoint and gave the whole group up.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::async_yields_async)] // the commit future is polled by hand
    async fn a_member_that_stops_waiting_does_not_undo_its_group() {
        group_with_an_impatient_member("cancelled", |mut tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (id) VALUES (1)")
                    .execute(tx.conn())
                    .await
                    .expect("insert 1");
                let commit: BoxFuture<'static, _> = Box::pin(tx.commit());
                commit
            })
        })
        .await;
    }

    /// Many writers at once, round after round: every one is answered and
    /// every write is there. (Members were once answered after the lock was
    /// released, and a member whose turn came first found no group.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_sqlite_writers_are_all_answered() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (db, _) = table_t(&dir, "many", 4).await;
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..64 {
            let db = db.clone();
            writers.spawn(async move {
                for i in 0..50 {
                    insert(db.clone(), w * 100 + i).await?;
                }
                Ok::<_, sqlx::Error>(())
            });
        }
        while let Some(joined) = writers.join_next().await {
            joined.expect("a writer").expect("every write commits");
        }
        assert_eq!(count(&db).await.expect("count"), 64 * 50);
        let stats = &db.inner.stats;
        assert_eq!(stats.group_writes.load(Ordering::Relaxed), 64 * 50);
    }

    /// A writer that stops waiting for its group's commit (its caller gave
    /// up) does not leave the group open: it is committed all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commits_when_its_writers_stop_waiting() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (db, _) = table_t(&dir, "abandoned", 2).await;
        let mut tx = db.write(Scope::AllAgencies).await.expect("begin");
        sqlx::query("INSERT INTO t (id) VALUES (7)")
            .execute(tx.conn())
            .await
            .expect("insert");
        // The caller polls the commit once and drops it.
        let mut commit = Box::pin(tx.commit());
        let _ = futures_poll_once(commit.as_mut()).await;
        drop(commit);
        // Another process-less reader sees it once committed; the writer
        // lock is free again.
        let mut seen = 0;
        while seen == 0 {
            seen = count(&db).await.expect("count");
            tokio::task::yield_now().await;
        }
        insert(db.clone(), 8).await.expect("a later write");
        assert_eq!(count(&db).await.expect("count"), 2);
    }

    /// A SQLite database in `dir` with a table `t (id)`, and its URL.
    /// A member whose caller stops waiting while its last statements (and
    /// its savepoint's release, sent with them) run must not undo its
    /// group: rolled back to a savepoint already released, the group would
    /// be given up and its other members told their writes failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::async_yields_async)] // the commit future is polled by hand
    async fn a_member_cancelled_with_its_last_statements_does_not_undo_its_group() {
        group_with_an_impatient_member("cancelled_last", |tx| {
            Box::pin(async move {
                let mut s = Statements::new(Backend::Sqlite);
                let v = s.value(1_i64).expect("bind");
                s.push(format!("INSERT INTO t (id) VALUES ({v})"));
                let commit: BoxFuture<'static, _> = Box::pin(tx.commit_after(s));
                commit
            })
        })
        .await;
    }

    /// Writer 0 leaves a group open for its commit; writer 1 joins it, and
    /// `last` writes row 1 and gives the future that commits it, which is
    /// polled once and dropped (its caller gave up). Both rows must commit.
    async fn group_with_an_impatient_member(
        name: &str,
        last: impl FnOnce(Tx) -> BoxFuture<'static, BoxFuture<'static, Result<(), sqlx::Error>>>
        + Send
        + 'static,
    ) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (db, _) = table_t(&dir, name, 4).await;
        let stats = &db.inner.stats;
        let mut first = db.write(Scope::AllAgencies).await.expect("begin");
        sqlx::query("INSERT INTO t (id) VALUES (0)")
            .execute(first.conn())
            .await
            .expect("insert 0");
        let impatient = {
            let db = db.clone();
            tokio::spawn(async move {
                let tx = db.write(Scope::AllAgencies).await.expect("begin");
                let mut commit = last(tx).await;
                let _ = futures_poll_once(commit.as_mut()).await;
                drop(commit);
            })
        };
        while stats.writers_queued.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        let first = tokio::spawn(first.commit());
        impatient.await.expect("the impatient writer");
        first
            .await
            .expect("the first writer")
            .expect("the first write commits although a member gave up waiting");
        while count(&db).await.expect("count") < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(count(&db).await.expect("count"), 2);
    }

    async fn table_t(dir: &tempfile::TempDir, name: &str, pool: u32) -> (Db, String) {
        let url = sqlite_url(&dir.path().join(format!("{name}.db")));
        let db = Db::connect(&url, pool).await.expect("open");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(db.pool())
            .await
            .expect("create");
        (db, url)
    }

    /// Polls a future once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    /// A database that refuses writes is a storage fault on both backends
    /// (PostgreSQL's SQLSTATE 25006 once passed for a SQLite code); a
    /// statement that is wrong is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storage_faults_are_told_from_bad_statements() {
        assert!(is_storage_fault(&sqlx::Error::PoolTimedOut));
        assert!(!is_storage_fault(&sqlx::Error::RowNotFound));
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let mut tx = t.db.write(Scope::AllAgencies).await.expect("begin");
        let bad = sqlx::query("SELECT * FROM no_such_table")
            .execute(tx.conn())
            .await
            .expect_err("no such table");
        assert!(!is_storage_fault(&bad), "{bad}");
        drop(tx);
        let mut tx = t.db.write(Scope::AllAgencies).await.expect("begin");
        let (read_only, writable) = match t.db.backend() {
            Backend::Sqlite => ("PRAGMA query_only = 1", "PRAGMA query_only = 0"),
            Backend::Postgres => ("SET TRANSACTION READ ONLY", "SELECT 1"),
        };
        tx.conn()
            .execute(sqlx::raw_sql(read_only))
            .await
            .expect("read-only");
        let refused = sqlx::query("UPDATE write_probe SET probe_time = 1")
            .execute(tx.conn())
            .await
            .expect_err("a write in a read-only transaction");
        assert!(is_storage_fault(&refused), "{refused}");
        let _ = tx.conn().execute(sqlx::raw_sql(writable)).await;
    }

    /// Health's questions hold up through a transaction pooler too (CI runs
    /// this with the connection through PgBouncer): `ping` runs outside any
    /// transaction, where a prepared statement's `Parse` and `Bind` may reach
    /// different server connections, and the probe write in one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_probes_hold_through_a_pooler() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let mut probes = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let db = t.db.clone();
            probes.spawn(async move {
                for i in 0..25 {
                    assert!(db.ping().await, "ping {i}");
                    assert!(db.writable().await, "writable {i}");
                }
            });
        }
        while let Some(done) = probes.join_next().await {
            done.expect("probes");
        }
    }

    #[test]
    fn a_pooled_url_has_no_statement_cache() {
        assert_eq!(
            without_statement_cache("postgres://a@h/db"),
            "postgres://a@h/db?statement-cache-capacity=0"
        );
        assert_eq!(
            without_statement_cache(
                "postgres://a@h/db?sslmode=verify-full&statement-cache-capacity=100"
            ),
            "postgres://a@h/db?sslmode=verify-full&statement-cache-capacity=0"
        );
    }

    /// The embedded SQLite is the one `.cargo/config.toml` asks for:
    /// without memory statistics, whose mutex every SQLite allocation in
    /// the process would otherwise take.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_is_built_without_memory_statistics() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url, 1).await.expect("connect");
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(db.pool())
            .await
            .expect("compile options");
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        db.close().await;
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
