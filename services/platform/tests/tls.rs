//! TLS to PostgreSQL with `sslmode=verify-full` (DESIGN §12), against a
//! private server that .ci/pg-tls starts with a certificate for `localhost`
//! signed by a CA it makes. Skipped unless `TOUCHSTONE_TEST_PG_TLS_URL` is
//! set: `postgres://user@localhost:PORT/postgres`, with
//! `TOUCHSTONE_TEST_PG_TLS_CA` (the CA's PEM file) and
//! `TOUCHSTONE_TEST_PG_TLS_WRONG_CA` (another CA's, which signed nothing the
//! server has).

use touchstone_platform::db::{Db, DbError, PLATFORM_MIGRATIONS, Scope};

/// Refused for the server's certificate (rustls: an unknown issuer, or not
/// valid for the name), not for another reason.
fn refused_by_tls(connected: Result<Db, DbError>, what: &str) {
    match connected {
        Ok(_) => panic!("{what}: connected"),
        Err(e) if e.to_string().contains("certificate") => eprintln!("{what}: refused: {e}"),
        Err(e) => panic!("{what}: failed, but not for the certificate: {e}"),
    }
}

struct Server {
    url: String,
    ca: String,
    wrong_ca: String,
}

fn server() -> Option<Server> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(url) = var("TOUCHSTONE_TEST_PG_TLS_URL") else {
        eprintln!("skipping: TOUCHSTONE_TEST_PG_TLS_URL is not set (.ci/pg-tls sets it)");
        return None;
    };
    Some(Server {
        url,
        ca: var("TOUCHSTONE_TEST_PG_TLS_CA").expect("TOUCHSTONE_TEST_PG_TLS_CA"),
        wrong_ca: var("TOUCHSTONE_TEST_PG_TLS_WRONG_CA").expect("TOUCHSTONE_TEST_PG_TLS_WRONG_CA"),
    })
}

fn with_tls(url: &str, mode: &str, ca: &str) -> String {
    format!("{url}?sslmode={mode}&sslrootcert={ca}")
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_over_tls() {
    let Some(s) = server() else { return };
    let db = Db::connect(&with_tls(&s.url, "verify-full", &s.ca), 2)
        .await
        .expect("verify-full against the server's CA");
    db.migrate(&[&PLATFORM_MIGRATIONS], None)
        .await
        .expect("migrate over TLS");
    let mut tx = db.read(Scope::AllAgencies).await.expect("begin");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(tx.conn())
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is not encrypted");
    drop(tx);
    assert!(db.writable().await, "writes over TLS");
    db.close().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let Some(s) = server() else { return };
    refused_by_tls(
        Db::connect(&with_tls(&s.url, "verify-full", &s.wrong_ca), 1).await,
        "verify-full with a CA that signed nothing",
    );
    refused_by_tls(
        Db::connect(&with_tls(&s.url, "verify-ca", &s.wrong_ca), 1).await,
        "verify-ca with a CA that signed nothing",
    );
}

#[tokio::test]
async fn a_host_name_the_certificate_does_not_name_is_refused() {
    let Some(s) = server() else { return };
    // The certificate names `localhost` only: the right CA, the wrong name.
    let by_address = s.url.replacen("@localhost:", "@127.0.0.1:", 1);
    assert_ne!(by_address, s.url, "the test URL must name localhost");
    let refused = Db::connect(&with_tls(&by_address, "verify-full", &s.ca), 1).await;
    assert!(
        refused.is_err(),
        "verify-full accepted a name the certificate lacks"
    );
    // verify-ca checks the chain only, so the same address is accepted.
    let db = Db::connect(&with_tls(&by_address, "verify-ca", &s.ca), 1)
        .await
        .expect("verify-ca by address");
    db.close().await;
}
