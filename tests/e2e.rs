//! End-to-end tests: each starts the real `touchstone` binary as a child
//! process with its own data directory and port, and drives it the way an
//! operator or another service would (gRPC, HTTP, the command line, signals).

// `touchstone up --demo` end to end: a module of this one test binary.
mod demo;
// Every RPC against another agency's data, with every role combination.
mod scope;
// Malformed requests to every method, and reflection per port.
mod wire;
// The crash suite (SIGKILL and storage faults under load), likewise.
mod crash;
// OTLP traces of calls across services, received by a collector in the test.
mod trace;
// Two `serve` replicas of every service on PostgreSQL, one of two killed.
mod replicas;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use touchstone_api::register::v1 as pb;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_e2e::{
    AGENCY, COMMAND_TIMEOUT, Finished, REGISTER_SERVICE, Up, free_port, http_get, run, run_ok,
    touchstone, touchstone_bin, within,
};

/// No test may take longer than this, start-up included.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// How long `touchstone up` may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The columns of the import format (services/touchstone/src/clients.rs COLUMNS).
const COLUMNS: &[&str] = &[
    "client_id",
    "kind",
    "given_names",
    "family_name",
    "preferred_name",
    "organisation_name",
    "email",
    "phone",
    "preferred_language",
    "preferred_channel",
    "interpreter_needed",
    "accessibility_needs",
    "external_system",
    "external_id",
    "address_line1",
    "address_line2",
    "locality",
    "region",
    "postal_code",
    "region_code",
];

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("touchstone-e2e-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// Mints a token with `touchstone token` against the data directory's development key.
async fn mint_token(data_dir: &Path, role: &str) -> String {
    let mut cmd = touchstone(data_dir);
    cmd.args(["token", "--agency", AGENCY, "--role", role]);
    let done = run_ok(cmd).await;
    let token = done.stdout.trim().to_string();
    assert!(
        token.split('.').count() == 3,
        "`touchstone token` did not print a JWT\n{}",
        done.report
    );
    token
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .expect("a token is header text");
    req.metadata_mut().insert("authorization", bearer);
    req.set_timeout(Duration::from_secs(30));
    req
}

/// Every line of a log stream is a JSON object (banner lines on stdout aside).
fn assert_json_logs(stream: &str, text: &str, allow_banner: bool) -> usize {
    // The banner is plain text for people; every log line is a JSON object.
    let banner = |line: &str| allow_banner && !line.trim_start().starts_with('{');
    let mut json = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if banner(line) {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{stream} line is not JSON ({e}): {line:?}\n{text}"));
        assert!(
            value.is_object(),
            "{stream} line is not a JSON object: {line:?}"
        );
        json += 1;
    }
    json
}

/// `touchstone up` end to end: health, banner, reflection, tokens, the
/// register API, metrics, authentication, SIGTERM, and the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_register_end_to_end() {
    touchstone_bin();
    within(TEST_TIMEOUT, "up end to end", async {
        let dir = tempdir();
        let mut up = Up::start(dir.path()).await;

        // The banner names the address and a ready-to-use token.
        up.proc
            .wait_for_stdout(Duration::from_secs(30), |out| {
                out.contains("Stop with Ctrl-C")
            })
            .await;
        let banner = up.proc.stdout();
        assert!(
            banner.contains(&format!("127.0.0.1:{}", up.port)),
            "the banner does not show the address\n{banner}"
        );
        assert!(
            banner
                .lines()
                .any(|l| l.trim_start().starts_with("export TOKEN=ey")),
            "the banner has no `export TOKEN=` line\n{banner}"
        );

        // Server reflection lists the register.
        let channel = up.channel().await;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("ServerReflectionInfo")
            .into_inner();
        let response = responses
            .message()
            .await
            .expect("a reflection response")
            .expect("a reflection response, not the end of the stream");
        let services: Vec<String> = match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection response: {other:?}"),
        };
        assert!(
            services.iter().any(|s| s == REGISTER_SERVICE),
            "reflection does not list {REGISTER_SERVICE}: {services:?}"
        );
        drop(responses);

        // A token minted by the CLI works for CreateClient and GetClient.
        let token = mint_token(dir.path(), "officer").await;
        let mut register = RegisterServiceClient::new(channel.clone());
        let given = "Marama";
        let family = "Testfamily-e2e-7731";
        let email = "marama.e2e-7731@example.org";
        let created = register
            .create_client(with_token(
                pb::CreateClientRequest {
                    parent: format!("agencies/{AGENCY}"),
                    client: Some(pb::Client {
                        kind: pb::ClientKind::Person as i32,
                        given_names: given.into(),
                        family_name: family.into(),
                        email: email.into(),
                        preferred_language: "mi".into(),
                        ..Default::default()
                    }),
                    client_id: String::new(),
                    request_id: "e2e-create-1".into(),
                },
                &token,
            ))
            .await
            .expect("CreateClient")
            .into_inner();
        assert!(
            created
                .name
                .starts_with(&format!("agencies/{AGENCY}/clients/")),
            "unexpected name {:?}",
            created.name
        );
        let fetched = register
            .get_client(with_token(
                pb::GetClientRequest {
                    name: created.name.clone(),
                },
                &token,
            ))
            .await
            .expect("GetClient")
            .into_inner();
        assert_eq!(fetched.name, created.name);
        assert_eq!(fetched.kind, pb::ClientKind::Person as i32);
        assert_eq!(fetched.given_names, given);
        assert_eq!(fetched.family_name, family);
        assert_eq!(fetched.email, email);
        assert_eq!(fetched.preferred_language, "mi");
        assert_eq!(fetched.etag, created.etag);

        // /metrics on the same port counts the call.
        let (status, metrics) = http_get(up.port, "/metrics").await;
        assert!(status.contains(" 200"), "GET /metrics: {status}\n{metrics}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("touchstone_grpc_requests_total{")
                    && l.contains("method=\"CreateClient\"")),
            "no touchstone_grpc_requests_total for CreateClient in /metrics:\n{metrics}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("touchstone_outbox_horizon_lag_seconds ")),
            "no change-feed horizon lag gauge in /metrics:\n{metrics}"
        );
        // The RPC histogram under the OpenTelemetry conventions' names, the
        // process, the register's pool, and the change-feed consumers of
        // the other services in this process.
        for expected in [
            &[
                "rpc_server_duration_seconds_bucket{",
                r#"rpc_system="grpc""#,
                r#"rpc_service="touchstone.register.v1.RegisterService""#,
                r#"rpc_method="CreateClient""#,
                r#"rpc_grpc_status_code="0""#,
            ][..],
            &["process_resident_memory_bytes "],
            &[
                "db_client_connection_count{",
                r#"db_client_connection_pool_name="register""#,
                r#"db_client_connection_state="used""#,
            ],
            &["db_client_connection_pending_requests{", r#"="register""#],
            &[
                "db_client_connection_wait_time_seconds_count{",
                r#"="register""#,
            ],
            &[
                "touchstone_feed_consumer_lag_events{",
                r#"consumer="complaints""#,
                r#"feed="register""#,
            ],
            &[
                "touchstone_feed_consumer_lag_seconds{",
                r#"consumer="kpi""#,
                r#"feed="feedback""#,
            ],
            &["touchstone_complaint_timeframe_breaches_total{"],
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(expected[0])
                        && expected.iter().all(|part| l.contains(part))),
                "no {expected:?} in /metrics:\n{metrics}"
            );
        }

        // Without a token, or with a bad one, the register refuses.
        let mut anonymous = RegisterServiceClient::new(channel.clone());
        let refused = anonymous
            .get_client(pb::GetClientRequest {
                name: created.name.clone(),
            })
            .await
            .expect_err("GetClient without a token must fail");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        let refused = anonymous
            .list_clients(with_token(
                pb::ListClientsRequest {
                    parent: format!("agencies/{AGENCY}"),
                    ..Default::default()
                },
                "not-a-token",
            ))
            .await
            .expect_err("ListClients with a bad token must fail");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        drop((reflection, register, anonymous, channel));

        // SIGTERM stops it cleanly.
        up.proc.terminate();
        let Some(exit) = up.proc.wait(STOP_TIMEOUT).await else {
            panic!(
                "`touchstone up` did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                up.proc.output_report()
            );
        };
        assert!(
            exit.success(),
            "`touchstone up` exited with {exit} after SIGTERM\n{}",
            up.proc.output_report()
        );

        // Logs are JSON lines without the client's personal data.
        let (stdout, stderr) = (up.proc.stdout(), up.proc.stderr());
        let json_lines =
            assert_json_logs("stdout", &stdout, true) + assert_json_logs("stderr", &stderr, false);
        assert!(
            json_lines > 0,
            "no JSON log lines at all\n{}",
            up.proc.output_report()
        );
        assert!(
            stdout.contains("shutting down") || stderr.contains("shutting down"),
            "the shutdown was not logged\n{}",
            up.proc.output_report()
        );
        for secret in [given, family, email] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "the logs contain personal data {secret:?}\n{}",
                up.proc.output_report()
            );
        }
    })
    .await;
}

struct Row<'a> {
    client_id: &'a str,
    kind: &'a str,
    given_names: &'a str,
    family_name: &'a str,
    organisation_name: &'a str,
    email: &'a str,
    phone: &'a str,
    preferred_channel: &'a str,
    interpreter_needed: &'a str,
    accessibility_needs: &'a str,
    external_id: &'a str,
    locality: &'a str,
}

const EMPTY: Row<'static> = Row {
    client_id: "",
    kind: "person",
    given_names: "",
    family_name: "",
    organisation_name: "",
    email: "",
    phone: "",
    preferred_channel: "",
    interpreter_needed: "",
    accessibility_needs: "",
    external_id: "",
    locality: "",
};

impl Row<'_> {
    fn record(&self) -> Vec<String> {
        COLUMNS
            .iter()
            .map(|column| {
                match *column {
                    "client_id" => self.client_id,
                    "kind" => self.kind,
                    "given_names" => self.given_names,
                    "family_name" => self.family_name,
                    "organisation_name" => self.organisation_name,
                    "email" => self.email,
                    "phone" => self.phone,
                    "preferred_channel" => self.preferred_channel,
                    "interpreter_needed" => self.interpreter_needed,
                    "accessibility_needs" => self.accessibility_needs,
                    "external_system" if !self.external_id.is_empty() => "legacy-crm",
                    "external_id" => self.external_id,
                    "locality" => self.locality,
                    "region_code" if !self.locality.is_empty() => "AU",
                    _ => "",
                }
                .to_string()
            })
            .collect()
    }
}

/// The rows of the import file: five good, two bad (lines 4 and 7 of the file).
fn import_rows() -> Vec<Row<'static>> {
    vec![
        Row {
            given_names: "Ana",
            family_name: "Lopez",
            email: "ana.lopez@example.org",
            phone: "+61 2 5550 0101",
            preferred_channel: "email",
            interpreter_needed: "yes",
            accessibility_needs: "large_print;hearing_loop",
            external_id: "C-1001",
            locality: "Sydney",
            ..EMPTY
        },
        Row {
            given_names: "Ben",
            family_name: "Ng",
            email: "ben.ng@example.org",
            ..EMPTY
        },
        Row {
            given_names: "Cara",
            family_name: "Bad-email",
            email: "not-an-email",
            ..EMPTY
        },
        Row {
            kind: "organisation",
            organisation_name: "Harbour Community Group",
            email: "info@harbour.example.org",
            preferred_channel: "letter",
            ..EMPTY
        },
        Row {
            given_names: "Dev",
            family_name: "Patel",
            email: "dev.patel@example.org",
            preferred_channel: "in person",
            ..EMPTY
        },
        Row {
            kind: "robot",
            given_names: "R2",
            family_name: "Unit",
            email: "r2.unit@example.org",
            ..EMPTY
        },
        Row {
            client_id: "e2e-jo-smith",
            kind: "Person",
            family_name: "Smith",
            email: "jo.smith@example.org",
            ..EMPTY
        },
    ]
}

const GOOD_EMAILS: [&str; 5] = [
    "ana.lopez@example.org",
    "ben.ng@example.org",
    "info@harbour.example.org",
    "dev.patel@example.org",
    "jo.smith@example.org",
];

fn import_cmd(dir: &Path, file: &Path, up: &Up) -> std::process::Command {
    let mut cmd = touchstone(dir);
    cmd.args(["clients", "import"])
        .arg(file)
        .args(["--agency", AGENCY, "--addr", &up.url()]);
    cmd
}

/// Checks a failed import: non-zero, and the error report names exactly the
/// two bad rows and their fields.
fn check_failed_import(done: &Finished, errors_path: &Path) {
    assert!(
        !done.status.success(),
        "an import with bad rows must exit non-zero\n{}",
        done.report
    );
    let mut reader = csv::Reader::from_path(errors_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}\n{}", errors_path.display(), done.report));
    let headers = reader.headers().expect("error report header").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        ["row", "field", "error"],
        "error report header"
    );
    let rows: Vec<(String, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.expect("an error report row");
            (r[0].to_string(), r[1].to_string(), r[2].to_string())
        })
        .collect();
    let found: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|(row, field, _)| (row.as_str(), field.as_str()))
        .collect();
    let expected: BTreeSet<(&str, &str)> = [("4", "email"), ("7", "kind")].into();
    assert_eq!(
        found, expected,
        "error report rows: {rows:?}\n{}",
        done.report
    );
    assert!(
        rows.iter().all(|(_, _, message)| !message.is_empty()),
        "every error has a message: {rows:?}"
    );
}

async fn list_emails(up: &Up, token: &str) -> Vec<String> {
    let mut register = RegisterServiceClient::new(up.channel().await);
    let mut emails = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = register
            .list_clients(with_token(
                pb::ListClientsRequest {
                    parent: format!("agencies/{AGENCY}"),
                    page_size: 100,
                    page_token: page_token.clone(),
                    filter: String::new(),
                    order_by: String::new(),
                },
                token,
            ))
            .await
            .expect("ListClients")
            .into_inner();
        emails.extend(page.clients.into_iter().map(|c| c.email));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    emails.sort();
    emails
}

/// `clients import` reports bad rows, re-running it creates nothing twice,
/// and `clients export` writes what was imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_import_and_export() {
    touchstone_bin();
    within(TEST_TIMEOUT, "clients import and export", async {
        let dir = tempdir();
        let up = Up::start(dir.path()).await;

        let file = dir.path().join("clients.csv");
        {
            let mut w = csv::Writer::from_path(&file).expect("creating the CSV");
            w.write_record(COLUMNS).expect("header");
            for row in import_rows() {
                w.write_record(row.record()).expect("row");
            }
            w.flush().expect("flushing the CSV");
        }
        let errors_path = dir.path().join("clients.csv.errors.csv");

        let first = run(import_cmd(dir.path(), &file, &up), COMMAND_TIMEOUT).await;
        check_failed_import(&first, &errors_path);
        assert!(
            first.stdout.contains("5 new, 0 already present"),
            "the summary counts 5 imported clients\n{}",
            first.report
        );

        let token = mint_token(dir.path(), "officer").await;
        let mut expected: Vec<String> = GOOD_EMAILS.iter().map(|e| e.to_string()).collect();
        expected.sort();
        assert_eq!(
            list_emails(&up, &token).await,
            expected,
            "after the first import"
        );

        // Re-running the same file creates nothing twice, and says so. Without
        // --addr the command finds the register through the peers.register
        // setting (here not on the default port).
        std::fs::remove_file(&errors_path).expect("removing the error report");
        let mut again = touchstone(dir.path());
        again
            .args(["clients", "import"])
            .arg(&file)
            .args(["--agency", AGENCY])
            .env("TOUCHSTONE_PEERS__REGISTER", up.url());
        let second = run(again, COMMAND_TIMEOUT).await;
        check_failed_import(&second, &errors_path);
        assert!(
            second.stdout.contains("0 new, 5 already present"),
            "the re-run reports what was already there\n{}",
            second.report
        );
        assert_eq!(list_emails(&up, &token).await, expected, "after the re-run");

        // A token the register refuses (no officer role) stops the import at
        // once with one clear message, and no report of every row.
        std::fs::remove_file(&errors_path).expect("removing the error report");
        let analyst = mint_token(dir.path(), "analyst").await;
        let mut refused = import_cmd(dir.path(), &file, &up);
        refused.args(["--token", &analyst]);
        let refused = run(refused, COMMAND_TIMEOUT).await;
        assert!(!refused.status.success(), "{}", refused.report);
        assert!(
            refused.stderr.contains("the service refused this token"),
            "{}",
            refused.report
        );
        assert!(
            !errors_path.exists(),
            "no per-row report for a refused token\n{}",
            refused.report
        );

        // Export writes the five clients in the import format.
        let out = dir.path().join("out.csv");
        let mut cmd = touchstone(dir.path());
        cmd.args(["clients", "export", "--agency", AGENCY, "--addr", &up.url()])
            .arg("--out")
            .arg(&out);
        let done = run_ok(cmd).await;
        let mut reader = csv::Reader::from_path(&out)
            .unwrap_or_else(|e| panic!("reading {}: {e}\n{}", out.display(), done.report));
        let headers = reader.headers().expect("export header").clone();
        for column in COLUMNS.iter().chain(&["name"]) {
            assert!(
                headers.iter().any(|h| h == *column),
                "export has no column {column}: {headers:?}"
            );
        }
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .expect("a known column")
        };
        let records: Vec<csv::StringRecord> = reader
            .records()
            .map(|r| r.expect("an export row"))
            .collect();
        assert_eq!(records.len(), 5, "export rows: {records:?}");
        let mut emails: Vec<String> = records
            .iter()
            .map(|r| r[col("email")].to_string())
            .collect();
        emails.sort();
        assert_eq!(emails, expected);
        let ana = records
            .iter()
            .find(|r| &r[col("email")] == "ana.lopez@example.org")
            .expect("Ana's row");
        assert_eq!(&ana[col("kind")], "person");
        assert_eq!(&ana[col("family_name")], "Lopez");
        assert_eq!(&ana[col("preferred_channel")], "email");
        assert_eq!(&ana[col("external_system")], "legacy-crm");
        assert_eq!(&ana[col("external_id")], "C-1001");
        assert_eq!(&ana[col("locality")], "Sydney");
        assert_eq!(&ana[col("region_code")], "AU");
        // Times are RFC 3339, as every export writes them.
        let created = &ana[col("create_time")];
        assert!(
            created.len() >= 20 && created.as_bytes()[10] == b'T' && created.ends_with('Z'),
            "create_time is not RFC 3339: {created:?}"
        );
        let jo = records
            .iter()
            .find(|r| &r[col("email")] == "jo.smith@example.org")
            .expect("Jo's row");
        assert_eq!(&jo[col("client_id")], "e2e-jo-smith");
        assert_eq!(
            &jo[col("name")],
            format!("agencies/{AGENCY}/clients/e2e-jo-smith").as_str()
        );
        let harbour = records
            .iter()
            .find(|r| &r[col("email")] == "info@harbour.example.org")
            .expect("the organisation's row");
        assert_eq!(&harbour[col("kind")], "organisation");
        assert_eq!(
            &harbour[col("organisation_name")],
            "Harbour Community Group"
        );
    })
    .await;
}

/// Runs `touchstone up` with `vars` and expects it to refuse to start with a
/// message naming `setting`.
async fn expect_refused(args: &[&str], vars: &[(&str, String)], setting: &str) {
    let dir = tempdir();
    let mut cmd = touchstone(dir.path());
    cmd.args(args);
    for (key, value) in vars {
        cmd.env(key, value);
    }
    let done = run(cmd, COMMAND_TIMEOUT).await;
    assert!(
        !done.status.success(),
        "{args:?} with {vars:?} must fail\n{}",
        done.report
    );
    assert!(
        done.stderr.to_lowercase().contains(setting),
        "the error for {vars:?} does not name {setting}\n{}",
        done.report
    );
}

/// A bad setting stops start-up with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_names_the_setting() {
    touchstone_bin();
    within(TEST_TIMEOUT, "bad configuration", async {
        let listen = || {
            (
                "TOUCHSTONE_REGISTER__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
        };
        expect_refused(
            &["up"],
            &[("TOUCHSTONE_REGISTER__LISTEN", "nowhere".into())],
            "register.listen",
        )
        .await;
        expect_refused(
            &["up"],
            &[listen(), ("TOUCHSTONE_MASTER_KEY", "short".into())],
            "master_key",
        )
        .await;
        expect_refused(
            &["up"],
            &[listen(), ("TOUCHSTONE_LOG_FORMAT", "xml".into())],
            "log_format",
        )
        .await;
        expect_refused(
            &["up"],
            &[
                listen(),
                ("TOUCHSTONE_REGISTER__DATABASE_URL", "mysql://db/x".into()),
            ],
            "register.database_url",
        )
        .await;

        // A port that is already taken is reported against register.listen too.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        let port = taken.local_addr().expect("local address").port();
        expect_refused(
            &["up"],
            &[("TOUCHSTONE_REGISTER__LISTEN", format!("127.0.0.1:{port}"))],
            "register.listen",
        )
        .await;
        drop(taken);
    })
    .await;
}

/// `serve` refuses to run without production settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_requires_a_master_key() {
    touchstone_bin();
    within(TEST_TIMEOUT, "serve without a master key", async {
        let listen = (
            "TOUCHSTONE_REGISTER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        );
        expect_refused(
            &["serve", "register"],
            std::slice::from_ref(&listen),
            "master_key",
        )
        .await;

        // With a master key, the JWKS source is the next thing it asks for.
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_string();
        expect_refused(
            &["serve", "register"],
            &[listen, ("TOUCHSTONE_MASTER_KEY", key)],
            "auth.jwks",
        )
        .await;
    })
    .await;
}

/// `migrate` creates the databases in a fresh data directory and can run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_repeatable() {
    touchstone_bin();
    within(TEST_TIMEOUT, "migrate", async {
        let dir = tempdir();
        let data = dir.path().join("fresh");
        for attempt in 1..=2 {
            let mut cmd = touchstone(&data);
            cmd.current_dir(dir.path()).arg("migrate");
            let done = run(cmd, COMMAND_TIMEOUT).await;
            assert!(
                done.status.success(),
                "migrate run {attempt} failed\n{}",
                done.report
            );
            assert!(
                done.stdout.contains("register: migrated"),
                "migrate run {attempt} did not report the register\n{}",
                done.report
            );
            assert!(
                data.join("register.db").is_file(),
                "migrate run {attempt} left no register.db in {}\n{}",
                data.display(),
                done.report
            );
        }
        let mut cmd = touchstone(&data);
        cmd.current_dir(dir.path()).args(["migrate", "register"]);
        run_ok(cmd).await;
    })
    .await;
}

/// `touchstone up` runs the complaints service beside the register: a
/// complaint from a register client is checked and takes the client's needs,
/// moves through its lifecycle, and `touchstone complaints import` brings in
/// a historic one with its own times (and a bad row is reported, not stored).
#[tokio::test]
async fn up_serves_complaints_and_imports_history() {
    use touchstone_api::complaints::v1 as cpb;
    use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
    within(TEST_TIMEOUT, "up_serves_complaints_and_imports_history", async {
        let dir = tempdir();
        let mut up = Up::start(dir.path()).await;
        let officer = mint_token(dir.path(), "officer").await;
        let mut register = RegisterServiceClient::new(up.channel().await);
        let client = register
            .create_client(with_token(
                pb::CreateClientRequest {
                    parent: format!("agencies/{AGENCY}"),
                    client: Some(pb::Client {
                        kind: pb::ClientKind::Person as i32,
                        given_names: "Mere".into(),
                        family_name: "Parata".into(),
                        accessibility_needs: vec![pb::AccessibilityNeed::EasyRead as i32],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("create client")
            .into_inner();
        let channel = tonic::transport::Channel::from_shared(format!(
            "http://127.0.0.1:{}",
            up.port_of("complaints")
        ))
        .expect("url")
        .connect()
        .await
        .expect("connect to complaints");
        let mut complaints = ComplaintsServiceClient::new(channel);
        let created = complaints
            .create_complaint(with_token(
                cpb::CreateComplaintRequest {
                    parent: format!("agencies/{AGENCY}"),
                    complaint: Some(cpb::Complaint {
                        complainant: Some(cpb::Complainant {
                            who: Some(cpb::complainant::Who::Client(client.name.clone())),
                        }),
                        channel: touchstone_api::common::v1::Channel::Phone as i32,
                        category: "delay".into(),
                        description: "My renewal has taken ten weeks.".into(),
                        ..Default::default()
                    }),
                    request_id: "e2e-1".into(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("create complaint")
            .into_inner();
        assert_eq!(created.client_check, cpb::ClientCheck::Verified as i32);
        assert_eq!(
            created.accessibility.expect("needs").needs,
            [pb::AccessibilityNeed::EasyRead as i32]
        );
        let acked = complaints
            .acknowledge_complaint(with_token(
                cpb::AcknowledgeComplaintRequest {
                    name: created.name.clone(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("acknowledge")
            .into_inner();
        assert_eq!(acked.status, cpb::Status::Acknowledged as i32);

        let file = dir.path().join("complaints.csv");
        std::fs::write(
            &file,
            "reference,received,channel,category,description,acknowledged,resolved,outcome,remedies\n\
             OLD-1,2026-03-02T09:00:00+11:00,letter,fees,Charged twice,2026-03-03T10:00:00+11:00,2026-03-09T10:00:00+11:00,upheld,apology;decision_changed\n\
             OLD-2,2026-03-02T09:00:00+11:00,letter,fees,Closed before resolved,,,,\n\
             OLD-3,2026-03-02T09:00:00+11:00,pigeon,fees,Unknown channel,,,,\n",
        )
        .expect("write csv");
        let mut cmd = touchstone(dir.path());
        cmd.args([
            "complaints",
            "import",
            file.to_str().expect("path"),
            "--agency",
            AGENCY,
            "--addr",
            &format!("http://127.0.0.1:{}", up.port_of("complaints")),
        ]);
        let done = run(cmd, COMMAND_TIMEOUT).await;
        assert!(!done.status.success(), "a bad row fails the import\n{}", done.report);
        assert!(
            done.stdout.contains(": 2 new, 0 already present"),
            "{}",
            done.report
        );
        let report = std::fs::read_to_string(dir.path().join("complaints.csv.errors.csv"))
            .expect("error report");
        assert!(report.contains("4,channel,"), "{report}");
        let old = complaints
            .get_complaint(with_token(
                cpb::GetComplaintRequest {
                    name: format!("agencies/{AGENCY}/complaints/old-1"),
                },
                &officer,
            ))
            .await
            .expect("imported complaint")
            .into_inner();
        assert_eq!(old.status, cpb::Status::Resolved as i32);
        // Received Monday 2 March, responded Monday 9 March: 5 working days.
        assert_eq!(old.response_clock.expect("clock").used_days, 5);
        // Running the same file again creates nothing twice.
        let mut cmd = touchstone(dir.path());
        cmd.args([
            "complaints",
            "import",
            file.to_str().expect("path"),
            "--agency",
            AGENCY,
            "--addr",
            &format!("http://127.0.0.1:{}", up.port_of("complaints")),
        ]);
        run(cmd, COMMAND_TIMEOUT).await;
        let listed = complaints
            .list_complaints(with_token(
                cpb::ListComplaintsRequest {
                    parent: format!("agencies/{AGENCY}"),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.complaints.len(), 3, "one live, two imported");
        up.proc.terminate();
        up.proc.wait(STOP_TIMEOUT).await;
    })
    .await;
}

/// Mints a token for `agency` with `touchstone token`.
async fn token_for(data_dir: &Path, agency: &str, role: &str) -> String {
    let mut cmd = touchstone(data_dir);
    cmd.args(["token", "--agency", agency, "--role", role]);
    run_ok(cmd).await.stdout.trim().to_string()
}

/// DESIGN §5 (issue 11 item 3): `up` restarted, with agencies used by
/// several services in either order, still opens every record whichever
/// service an agency touches first, and request ids still replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarted_keeps_every_record_readable() {
    use touchstone_api::complaints::v1 as cpb;
    use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
    within(
        TEST_TIMEOUT,
        "up_restarted_keeps_every_record_readable",
        async {
            let dir = tempdir();
            let new_client = |agency: &str| pb::CreateClientRequest {
                parent: format!("agencies/{agency}"),
                client: Some(pb::Client {
                    kind: pb::ClientKind::Person as i32,
                    given_names: "Hana".into(),
                    family_name: format!("Tane-{agency}"),
                    email: format!("hana@{agency}.example.org"),
                    ..Default::default()
                }),
                request_id: format!("client-{agency}"),
                ..Default::default()
            };
            let new_complaint = |agency: &str| cpb::CreateComplaintRequest {
                parent: format!("agencies/{agency}"),
                complaint: Some(cpb::Complaint {
                    complainant: Some(cpb::Complainant {
                        who: Some(cpb::complainant::Who::Anonymous(true)),
                    }),
                    channel: touchstone_api::common::v1::Channel::Web as i32,
                    category: "delay".into(),
                    description: format!("Waited a month in {agency}."),
                    ..Default::default()
                }),
                request_id: format!("complaint-{agency}"),
                ..Default::default()
            };
            let complaints_of = |up: &Up| {
                let url = format!("http://127.0.0.1:{}", up.port_of("complaints"));
                async move {
                    ComplaintsServiceClient::new(
                        tonic::transport::Channel::from_shared(url)
                            .expect("url")
                            .connect()
                            .await
                            .expect("connect to complaints"),
                    )
                }
            };
            // Agency k: complaints first (the issue's repro); agency m: the
            // register first.
            let agencies = ["k", "m"];
            let mut tokens = Vec::new();
            for agency in agencies {
                tokens.push(token_for(dir.path(), agency, "officer").await);
            }
            let mut up = Up::start(dir.path()).await;
            let mut register = RegisterServiceClient::new(up.channel().await);
            let mut complaints = complaints_of(&up).await;
            let mut clients = Vec::new();
            let mut filed = Vec::new();
            for (agency, token) in agencies.iter().zip(&tokens) {
                let complaint_first = *agency == "k";
                if complaint_first {
                    filed.push(
                        complaints
                            .create_complaint(with_token(new_complaint(agency), token))
                            .await
                            .expect("create complaint")
                            .into_inner(),
                    );
                }
                clients.push(
                    register
                        .create_client(with_token(new_client(agency), token))
                        .await
                        .expect("create client")
                        .into_inner(),
                );
                if !complaint_first {
                    filed.push(
                        complaints
                            .create_complaint(with_token(new_complaint(agency), token))
                            .await
                            .expect("create complaint")
                            .into_inner(),
                    );
                }
            }
            up.proc.terminate();
            up.proc.wait(STOP_TIMEOUT).await;

            // The explicit repair opens every sealed value of every service.
            let mut cmd = touchstone(dir.path());
            cmd.args(["keys", "repair"]);
            let done = run_ok(cmd).await;
            assert!(
                done.stdout
                    .contains("open with keys stored in its own database"),
                "{}",
                done.report
            );

            let mut up = Up::start(dir.path()).await;
            // The register first, in every agency.
            let mut register = RegisterServiceClient::new(up.channel().await);
            for ((agency, token), client) in agencies.iter().zip(&tokens).zip(&clients) {
                let read = register
                    .get_client(with_token(
                        pb::GetClientRequest {
                            name: client.name.clone(),
                        },
                        token,
                    ))
                    .await
                    .unwrap_or_else(|s| panic!("client of {agency} after the restart: {s:?}"))
                    .into_inner();
                assert_eq!(read.family_name, format!("Tane-{agency}"));
                let replay = register
                    .create_client(with_token(new_client(agency), token))
                    .await
                    .unwrap_or_else(|s| panic!("client replay in {agency}: {s:?}"))
                    .into_inner();
                assert_eq!(replay.name, client.name);
            }
            let mut complaints = complaints_of(&up).await;
            for ((agency, token), complaint) in agencies.iter().zip(&tokens).zip(&filed) {
                let read = complaints
                    .get_complaint(with_token(
                        cpb::GetComplaintRequest {
                            name: complaint.name.clone(),
                        },
                        token,
                    ))
                    .await
                    .unwrap_or_else(|s| panic!("complaint of {agency} after the restart: {s:?}"))
                    .into_inner();
                assert_eq!(read.description, format!("Waited a month in {agency}."));
                let replay = complaints
                    .create_complaint(with_token(new_complaint(agency), token))
                    .await
                    .unwrap_or_else(|s| panic!("complaint replay in {agency}: {s:?}"))
                    .into_inner();
                assert_eq!(replay.name, complaint.name);
            }
            up.proc.terminate();
            up.proc.wait(STOP_TIMEOUT).await;
        },
    )
    .await;
}

/// A data directory whose stored data keys the master key does not unwrap
/// (here: `master.key` replaced) stops `up` before it serves, with a message
/// that names the service, the agency and the setting, and no personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_refuses_keys_the_master_key_does_not_unwrap() {
    within(
        TEST_TIMEOUT,
        "up_refuses_keys_the_master_key_does_not_unwrap",
        async {
            let dir = tempdir();
            let token = token_for(dir.path(), "k", "officer").await;
            let mut up = Up::start(dir.path()).await;
            let mut register = RegisterServiceClient::new(up.channel().await);
            register
                .create_client(with_token(
                    pb::CreateClientRequest {
                        parent: "agencies/k".into(),
                        client: Some(pb::Client {
                            kind: pb::ClientKind::Person as i32,
                            given_names: "Wiremu".into(),
                            family_name: "Rata".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .expect("create client");
            up.proc.terminate();
            up.proc.wait(STOP_TIMEOUT).await;

            // Another master key: base64 of 32 bytes, not the one the data has.
            std::fs::write(
                dir.path().join("master.key"),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .expect("replace master.key");
            let mut cmd = touchstone(dir.path());
            cmd.arg("up");
            for service in ["register", "complaints", "feedback", "kpi", "gateway"] {
                let upper = service.to_ascii_uppercase();
                cmd.env(
                    format!("TOUCHSTONE_{upper}__LISTEN"),
                    format!("127.0.0.1:{}", free_port()),
                );
            }
            cmd.env(
                "TOUCHSTONE_HUB__HTTP_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            );
            let done = run(cmd, Duration::from_secs(60)).await;
            assert!(!done.status.success(), "{}", done.report);
            assert!(
                done.stderr
                    .contains("the register database holds a data key of agency k")
                    && done.stderr.contains("master_key"),
                "{}",
                done.report
            );
            assert!(!done.report.contains("Wiremu") && !done.report.contains("Rata"));
            assert!(!done.stdout.contains("Touchstone is up"), "{}", done.report);
        },
    )
    .await;
}
