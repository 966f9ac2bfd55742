//! Fresh databases for tests: a SQLite file in a temporary directory, or,
//! when `TOUCHSTONE_TEST_PG_URL` points at a PostgreSQL server, a new
//! database and a new login role (no superuser, no BYPASSRLS) made for this
//! test alone, migrated by the admin connection, with the service connected
//! as the new role so that row-level security is really in force. When
//! `TOUCHSTONE_TEST_PG_POOLER_URL` also points at a transaction pooler in
//! front of that server (PgBouncer in transaction mode, as .ci/run starts),
//! the service's connection goes through it, as in production behind
//! CloudNativePG's `Pooler`; the admin connection, which migrates, stays
//! direct.

use crate::db::{Db, MigrationSet, Pooler};
use sqlx::ConnectOptions;
use std::path::PathBuf;
use std::str::FromStr;

/// The environment variable CI sets to run store tests on PostgreSQL.
pub const PG_URL_VAR: &str = "TOUCHSTONE_TEST_PG_URL";

/// The environment variable CI sets to run the service's side of store
/// tests through a transaction pooler in front of [`PG_URL_VAR`]'s server
/// (its host, port and user are used; the database is the test's own).
pub const PG_POOLER_URL_VAR: &str = "TOUCHSTONE_TEST_PG_POOLER_URL";

/// A migrated, empty database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// The service's connection (the application role on PostgreSQL).
    pub db: Db,
    /// The SQLite file, when on SQLite.
    pub sqlite_path: Option<PathBuf>,
    /// An admin connection to the same database, when on PostgreSQL.
    pub admin: Option<Db>,
    /// The application role's name, when on PostgreSQL.
    pub app_role: Option<String>,
    server_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestDb {
    /// Drops the PostgreSQL database and role made for the test, so a server
    /// that outlives test runs does not fill up. Best effort: CI also sweeps
    /// leftovers (prefix `tst_`).
    fn drop(&mut self) {
        let (Some(url), Some(name)) = (self.server_url.take(), self.app_role.clone()) else {
            return;
        };
        drop_on_server(
            url,
            vec![
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("DROP ROLE IF EXISTS {name}"),
            ],
        );
    }
}

/// Runs `statements` on the PostgreSQL server at `url`, best effort, from a
/// `Drop` inside a test's runtime (which cannot be blocked on: a thread with
/// its own small runtime does the work, and this waits for it).
pub fn drop_on_server(url: String, statements: Vec<String>) {
    let cleanup = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(server) = Db::connect(&url, 1).await else {
                return;
            };
            for stmt in statements {
                let _ = sqlx::query(sqlx::AssertSqlSafe(stmt))
                    .execute(server.pool())
                    .await;
            }
            server.close().await;
        });
    });
    let _ = cleanup.join();
}

/// Creates a fresh database with `sets` migrated. Panics (the test fails
/// loudly) when `TOUCHSTONE_TEST_PG_URL` is set but the server cannot be used.
pub async fn fresh(sets: &[&MigrationSet]) -> TestDb {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => fresh_postgres(&url, sets).await,
        _ => fresh_sqlite(sets).await,
    }
}

async fn fresh_sqlite(sets: &[&MigrationSet]) -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("test.db");
    let db = Db::connect(&crate::db::sqlite_url(&path), 4)
        .await
        .expect("open SQLite");
    db.migrate(sets, None).await.expect("migrate SQLite");
    TestDb {
        db,
        sqlite_path: Some(path),
        admin: None,
        app_role: None,
        server_url: None,
        _dir: Some(dir),
    }
}

async fn fresh_postgres(url: &str, sets: &[&MigrationSet]) -> TestDb {
    let name = format!("tst_{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let server = Db::connect(url, 1)
        .await
        .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but PostgreSQL is unreachable: {e}"));
    for stmt in [
        format!("CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(server.pool())
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database: {e}"));
    }
    server.close().await;
    let base = sqlx::postgres::PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
    let admin_url = base.clone().database(&name).to_url_lossy().to_string();
    let (app_base, pooler) = match std::env::var(PG_POOLER_URL_VAR) {
        Ok(pooled) if !pooled.is_empty() => (
            sqlx::postgres::PgConnectOptions::from_str(&pooled)
                .unwrap_or_else(|e| panic!("{PG_POOLER_URL_VAR} is not a PostgreSQL URL: {e}")),
            Pooler::Transaction,
        ),
        _ => (base.clone(), Pooler::None),
    };
    let app_url = app_base
        .database(&name)
        .username(&name)
        .to_url_lossy()
        .to_string();
    let admin = Db::connect(&admin_url, 2).await.expect("connect as admin");
    admin
        .migrate(sets, Some(&name))
        .await
        .expect("migrate PostgreSQL");
    let db = Db::connect_via(&app_url, 4, pooler)
        .await
        .expect("connect as the app role");
    TestDb {
        db,
        sqlite_path: None,
        admin: Some(admin),
        app_role: Some(name),
        server_url: Some(url.to_string()),
        _dir: None,
    }
}

/// Storage faults for tests: a SQLite database file and its write-ahead log
/// made immutable (`chattr +i`), so that every write to them fails with
/// EPERM while the process keeps its open handles, as a failing disk would
/// behave; removed with `chattr -i`. Needs root on a filesystem with
/// extended attributes (ext4, xfs, btrfs).
pub mod fault {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// Set when a run must inject faults (CI): a test that cannot then fails
    /// instead of skipping.
    pub const REQUIRE_VAR: &str = "TOUCHSTONE_TEST_REQUIRE_FAULTS";

    fn chattr(flag: &str, path: &Path) -> bool {
        Command::new("chattr")
            .arg(flag)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether files in `dir` can be made immutable here. When they cannot
    /// and [`REQUIRE_VAR`] is set, panics; otherwise prints why the caller
    /// skips.
    pub fn available(dir: &Path) -> bool {
        let probe = dir.join("fault-probe");
        let ok = std::fs::write(&probe, b"probe").is_ok() && chattr("+i", &probe) && {
            let refused = std::fs::OpenOptions::new()
                .append(true)
                .open(&probe)
                .is_err();
            chattr("-i", &probe) && refused
        };
        let _ = std::fs::remove_file(&probe);
        if !ok {
            let why = format!(
                "cannot make files in {} immutable (needs root and chattr on ext4/xfs/btrfs)",
                dir.display()
            );
            assert!(
                std::env::var_os(REQUIRE_VAR).is_none(),
                "{REQUIRE_VAR} is set but {why}"
            );
            eprintln!("skipping the storage-fault test: {why}");
        }
        ok
    }

    /// A SQLite file and its `-wal` made immutable until `clear` or drop.
    #[derive(Debug)]
    pub struct Immutable {
        paths: Vec<PathBuf>,
    }

    impl Immutable {
        /// Makes `db` and `db-wal` immutable.
        pub fn sqlite(db: &Path) -> Immutable {
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            let paths = vec![db.to_path_buf(), PathBuf::from(wal)];
            for p in &paths {
                assert!(chattr("+i", p), "chattr +i {} failed", p.display());
            }
            Immutable { paths }
        }

        /// Makes the files writable again.
        pub fn clear(&mut self) {
            for p in self.paths.drain(..) {
                assert!(chattr("-i", &p), "chattr -i {} failed", p.display());
            }
        }
    }

    impl Drop for Immutable {
        fn drop(&mut self) {
            for p in self.paths.drain(..) {
                let _ = chattr("-i", &p);
            }
        }
    }
}
