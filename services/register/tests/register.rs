//! The register through its real gRPC API: a server on 127.0.0.1:0 over a
//! fresh database (SQLite, or PostgreSQL when TOUCHSTONE_TEST_PG_URL is set),
//! called with the generated client and real tokens.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use touchstone_api::register::v1 as pb;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::{AuthConfig, DevKey, Role, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::testing::{self, TestDb};

struct Harness {
    addr: std::net::SocketAddr,
    dev: DevKey,
    dir: tempfile::TempDir,
    store: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = DevKey::load_or_create(dir.path()).expect("dev key");
        let verifier = Verifier::from_jwks_json(
            AuthConfig {
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
                jwks_file: None,
                jwks_url: None,
                leeway_secs: 0,
            },
            &dev.jwks_json(),
        )
        .expect("verifier");
        let store = testing::fresh(&touchstone_register::migration_sets()).await;
        let keys = MasterKey::generate();
        let routes = touchstone_register::routes(store.db.clone(), keys, verifier);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let db = store.db.clone();
        let readiness: touchstone_server::Readiness = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        });
        let mut opts = touchstone_server::ServeOptions::new(
            "register",
            vec![touchstone_register::SERVICE_NAME],
        );
        opts.shutdown_grace = Duration::from_secs(1);
        let task = tokio::spawn(async move {
            touchstone_server::serve(listener, routes, opts, readiness, async move {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Harness {
            addr,
            dev,
            dir,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn client(&self) -> RegisterServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        RegisterServiceClient::new(channel)
    }

    fn token(&self, agency: &str, roles: &[Role]) -> String {
        self.dev
            .mint(&TokenRequest {
                subject: format!("tester-{agency}"),
                agency: Some(agency.into()),
                agencies: None,
                roles: roles.to_vec(),
                ttl: Duration::from_secs(600),
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
            })
            .expect("mint")
    }

    fn service_token(&self) -> String {
        self.dev
            .mint(&TokenRequest {
                subject: "svc".into(),
                agency: None,
                agencies: Some(vec!["*".into()]),
                roles: vec![Role::Service],
                ttl: Duration::from_secs(600),
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
            })
            .expect("mint")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

const OFFICER: &[Role] = &[Role::Officer];
const ADMIN: &[Role] = &[Role::AgencyAdmin];
const SENIOR: &[Role] = &[Role::SeniorOfficer];

fn person(given: &str, family: &str, email: &str) -> pb::Client {
    pb::Client {
        kind: pb::ClientKind::Person as i32,
        given_names: given.into(),
        family_name: family.into(),
        email: email.into(),
        phone: "+61 2 6123 4567".into(),
        preferred_language: "en".into(),
        preferred_channel: touchstone_api::common::v1::Channel::Email as i32,
        accessibility_needs: vec![pb::AccessibilityNeed::LargePrint as i32],
        ..Default::default()
    }
}

async fn create(
    c: &mut RegisterServiceClient<Channel>,
    token: &str,
    agency: &str,
    client: pb::Client,
) -> Result<pb::Client, Status> {
    c.create_client(req(
        pb::CreateClientRequest {
            parent: format!("agencies/{agency}"),
            client: Some(client),
            ..Default::default()
        },
        token,
    ))
    .await
    .map(|r| r.into_inner())
}

/// SearchClients by email in `agency`.
async fn search_email(
    c: &mut RegisterServiceClient<Channel>,
    token: &str,
    agency: &str,
    email: &str,
) -> Result<pb::SearchClientsResponse, Status> {
    c.search_clients(req(
        pb::SearchClientsRequest {
            parent: format!("agencies/{agency}"),
            query: Some(pb::search_clients_request::Query::Email(email.into())),
        },
        token,
    ))
    .await
    .map(|r| r.into_inner())
}

fn violations(s: &Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn reason(s: &Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

async fn event_types(h: &Harness, c: &mut RegisterServiceClient<Channel>) -> Vec<(String, String)> {
    let events = c
        .list_events(req(
            pb::ListEventsRequest {
                after_sequence: 0,
                page_size: 1000,
            },
            &h.service_token(),
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    events.into_iter().map(|e| (e.r#type, e.name)).collect()
}

#[tokio::test]
async fn crud_with_masks_and_etags() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let created = create(
        &mut c,
        &t,
        "dia",
        person("Aroha", "Ngata", "aroha@example.org"),
    )
    .await
    .expect("create");
    assert!(created.name.starts_with("agencies/dia/clients/"));
    assert_eq!(created.etag, "1");
    let got = c
        .get_client(req(
            pb::GetClientRequest {
                name: created.name.clone(),
            },
            &t,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.email, "aroha@example.org");
    assert_eq!(
        got.accessibility_needs,
        vec![pb::AccessibilityNeed::LargePrint as i32]
    );

    let patch = pb::Client {
        name: created.name.clone(),
        etag: got.etag.clone(),
        email: "aroha.ngata@example.org".into(),
        family_name: "Ignored".into(),
        ..Default::default()
    };
    let updated = c
        .update_client(req(
            pb::UpdateClientRequest {
                client: Some(patch.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                request_id: String::new(),
            },
            &t,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.email, "aroha.ngata@example.org");
    assert_eq!(updated.family_name, "Ngata");
    assert_eq!(updated.etag, "2");

    let stale = c
        .update_client(req(
            pb::UpdateClientRequest {
                client: Some(patch),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                request_id: String::new(),
            },
            &t,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);

    let bad_mask = c
        .update_client(req(
            pb::UpdateClientRequest {
                client: Some(pb::Client {
                    name: created.name.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["create_time".into()],
                }),
                request_id: String::new(),
            },
            &t,
        ))
        .await
        .expect_err("output-only path");
    assert_eq!(bad_mask.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad_mask), vec!["update_mask"]);

    // Exact search by each kind of key, after normalisation.
    use pb::search_clients_request::Query;
    let with_ref = pb::Client {
        external_references: vec![pb::ExternalReference {
            system: "CMS".into(),
            id: "A-17".into(),
        }],
        ..person("Wiremu", "Tane", "wiremu@example.org")
    };
    let other = create(&mut c, &t, "dia", with_ref).await.expect("create");
    for (query, want) in [
        (
            Query::Email(" ARoha.Ngata@Example.org ".into()),
            &created.name,
        ),
        (Query::FullName("  aroha   NGATA ".into()), &created.name),
        (
            Query::ExternalReference(pb::ExternalReference {
                system: "cms".into(),
                id: "A-17".into(),
            }),
            &other.name,
        ),
    ] {
        let found = c
            .search_clients(req(
                pb::SearchClientsRequest {
                    parent: "agencies/dia".into(),
                    query: Some(query.clone()),
                },
                &t,
            ))
            .await
            .expect("search")
            .into_inner();
        let names: Vec<String> = found.clients.into_iter().map(|c| c.name).collect();
        assert_eq!(names, vec![want.clone()], "{query:?}");
    }
    let by_phone = c
        .search_clients(req(
            pb::SearchClientsRequest {
                parent: "agencies/dia".into(),
                query: Some(Query::Phone("+61 (2) 6123-4567".into())),
            },
            &t,
        ))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(by_phone.clients.len(), 2, "both share the phone number");
    let none = c
        .search_clients(req(
            pb::SearchClientsRequest {
                parent: "agencies/dia".into(),
                query: Some(Query::Email("aroha@example.org".into())),
            },
            &t,
        ))
        .await
        .expect("search")
        .into_inner();
    assert!(
        none.clients.is_empty(),
        "the old email no longer finds the client"
    );

    let missing = c
        .get_client(req(
            pb::GetClientRequest {
                name: "agencies/dia/clients/nope".into(),
            },
            &t,
        ))
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = c
        .get_client(req(
            pb::GetClientRequest {
                name: "clients/x".into(),
            },
            &t,
        ))
        .await
        .expect_err("bad name");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violations(&malformed), vec!["name"]);
    h.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_each_named_and_nothing_is_written() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let mut bad = person("A", "B", "not-an-email");
    bad.phone = "12".into();
    bad.preferred_channel = 42;
    bad.given_names = "x".repeat(300);
    bad.postal_address = Some(pb::PostalAddress {
        region_code: "australia".into(),
        ..Default::default()
    });
    let e = create(&mut c, &t, "dia", bad).await.expect_err("invalid");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "INVALID_ARGUMENT");
    let fields: BTreeSet<String> = violations(&e).into_iter().collect();
    for want in [
        "client.email",
        "client.phone",
        "client.preferred_channel",
        "client.given_names",
        "client.postal_address.region_code",
    ] {
        assert!(fields.contains(want), "{want} not in {fields:?}");
    }
    let e = create(&mut c, &t, "dia", pb::Client::default())
        .await
        .expect_err("kind missing");
    assert_eq!(violations(&e), vec!["client.kind"]);
    let e = c
        .create_client(req(
            pb::CreateClientRequest {
                parent: "agencies/dia".into(),
                client: None,
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("client missing");
    assert_eq!(violations(&e), vec!["client"]);
    let e = c
        .create_client(req(
            pb::CreateClientRequest {
                parent: "agencies/dia".into(),
                client: Some(person("A", "B", "a@b.org")),
                client_id: "Not Valid!".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("bad id");
    assert_eq!(violations(&e), vec!["client_id"]);
    let listed = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.clients.is_empty(), "nothing written");
    assert!(event_types(&h, &mut c).await.is_empty(), "no events");
    h.stop().await;
}

#[tokio::test]
async fn pagination_filters_and_order() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let mut people = BTreeSet::new();
    for i in 0..23 {
        let client = if i % 3 == 0 {
            pb::Client {
                kind: pb::ClientKind::Organisation as i32,
                organisation_name: format!("Org {i}"),
                ..Default::default()
            }
        } else {
            person("P", &format!("N{i}"), &format!("p{i}@example.org"))
        };
        let made = create(&mut c, &t, "dia", client).await.expect("create");
        if i % 3 != 0 {
            people.insert(made.name);
        }
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_clients(req(
                pb::ListClientsRequest {
                    parent: "agencies/dia".into(),
                    page_size: 4,
                    page_token: token.clone(),
                    filter: "kind = PERSON AND erased = false".into(),
                    order_by: "create_time desc".into(),
                },
                &t,
            ))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(page.clients.len() <= 4);
        seen.extend(
            page.clients
                .into_iter()
                .map(|c| (c.create_time.expect("time"), c.name)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 4, "several pages: {pages}");
    let names: BTreeSet<String> = seen.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(names.len(), seen.len(), "no client twice");
    assert_eq!(names, people, "every person, no organisation");
    let times: Vec<(i64, i32)> = seen.iter().map(|(t, _)| (t.seconds, t.nanos)).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    for (filter, order_by, page_token, field) in [
        ("nonsense = 1", "", "", "filter"),
        ("kind = ROBOT", "", "", "filter"),
        ("", "email", "", "order_by"),
        ("", "", "garbage!!", "page_token"),
    ] {
        let e = c
            .list_clients(req(
                pb::ListClientsRequest {
                    parent: "agencies/dia".into(),
                    page_size: 4,
                    page_token: page_token.into(),
                    filter: filter.into(),
                    order_by: order_by.into(),
                },
                &t,
            ))
            .await
            .expect_err("bad list");
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "{filter} {order_by} {page_token}"
        );
        assert_eq!(violations(&e), vec![field.to_string()]);
    }
    let first = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/dia".into(),
                page_size: 2,
                filter: "kind = PERSON".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("first")
        .into_inner();
    let e = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/dia".into(),
                page_size: 2,
                filter: "kind = ORGANISATION".into(),
                page_token: first.next_page_token,
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("token of another query");
    assert_eq!(violations(&e), vec!["page_token"]);
    let e = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/dia".into(),
                page_size: -1,
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("negative page size");
    assert_eq!(violations(&e), vec!["page_size"]);
    h.stop().await;
}

#[tokio::test]
async fn request_ids_make_creates_idempotent_even_concurrently() {
    let h = Harness::start().await;
    let c = h.client().await;
    let t = h.token("dia", OFFICER);
    let request = pb::CreateClientRequest {
        parent: "agencies/dia".into(),
        client: Some(person("Tui", "Walker", "tui@example.org")),
        client_id: String::new(),
        request_id: "retry-me-1".into(),
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = c.clone();
        let r = request.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            c.create_client(req(r, &t)).await.map(|r| r.into_inner())
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("join").expect("create"));
    }
    let mut c = c;
    let again = c
        .create_client(req(request.clone(), &t))
        .await
        .expect("retry")
        .into_inner();
    results.push(again);
    let admin = h.token("dia", ADMIN);
    let audits = c
        .list_audit_records(req(
            pb::ListAuditRecordsRequest {
                parent: "agencies/dia".into(),
                filter: "action = \"CreateClient\"".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("audit")
        .into_inner();
    assert_eq!(
        audits.audit_records.len(),
        9,
        "the first call and every replay are audited"
    );
    assert!(
        results.iter().all(|r| *r == results[0]),
        "every retry gets the first response"
    );
    let listed = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.clients.len(), 1, "one client");
    let created_events = event_types(&h, &mut c)
        .await
        .into_iter()
        .filter(|(ty, _)| ty.ends_with("ClientCreated"))
        .count();
    assert_eq!(created_events, 1, "one event");
    let mut other = request;
    other.client = Some(person("Someone", "Else", "else@example.org"));
    let e = c
        .create_client(req(other, &t))
        .await
        .expect_err("reused id");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(reason(&e), "REQUEST_ID_REUSED");
    // Once expired and purged (across agencies, as the hourly purger does), an id is free.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let purged = touchstone_platform::idempotency::purge_expired(&h.store.db, 0)
        .await
        .expect("purge");
    assert_eq!(purged, 1, "the one request id used");
    h.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_and_analysts_see_no_personal_data() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let a = h.token("agency-a", OFFICER);
    let b = h.token(
        "agency-b",
        &[Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin],
    );
    let mine = create(
        &mut c,
        &a,
        "agency-a",
        person("Ana", "Lopez", "ana@example.org"),
    )
    .await
    .expect("create");
    create(
        &mut c,
        &b,
        "agency-b",
        person("Ben", "Ngo", "ben@example.org"),
    )
    .await
    .expect("create b");

    let e = c
        .get_client(req(
            pb::GetClientRequest {
                name: mine.name.clone(),
            },
            &b,
        ))
        .await
        .expect_err("get");
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .update_client(req(
            pb::UpdateClientRequest {
                client: Some(pb::Client {
                    name: mine.name.clone(),
                    email: "x@y.org".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &b,
        ))
        .await
        .expect_err("update");
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .erase_client(req(
            pb::EraseClientRequest {
                name: mine.name.clone(),
                request_id: String::new(),
            },
            &b,
        ))
        .await
        .expect_err("erase");
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/agency-a".into(),
                ..Default::default()
            },
            &b,
        ))
        .await
        .expect_err("list");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = search_email(&mut c, &b, "agency-a", "ana@example.org")
        .await
        .expect_err("search");
    assert_eq!(e.code(), Code::PermissionDenied);
    let found = search_email(&mut c, &b, "agency-b", "ANA@example.org")
        .await
        .expect("search own");
    assert!(
        found.clients.is_empty(),
        "b's search never finds a's client"
    );
    let own = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/agency-b".into(),
                ..Default::default()
            },
            &b,
        ))
        .await
        .expect("list own")
        .into_inner();
    assert_eq!(own.clients.len(), 1);

    let analyst = h.token("agency-a", &[Role::Analyst]);
    let e = c
        .get_client(req(
            pb::GetClientRequest {
                name: mine.name.clone(),
            },
            &analyst,
        ))
        .await
        .expect_err("analyst get");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .list_clients(req(
            pb::ListClientsRequest {
                parent: "agencies/agency-a".into(),
                ..Default::default()
            },
            &analyst,
        ))
        .await
        .expect_err("analyst list");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = create(&mut c, &analyst, "agency-a", person("X", "Y", "x@y.org"))
        .await
        .expect_err("analyst create");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .export_client(req(
            pb::ExportClientRequest {
                name: mine.name.clone(),
            },
            &analyst,
        ))
        .await
        .expect_err("analyst export");
    assert_eq!(e.code(), Code::PermissionDenied);

    if let Some(admin) = &h.store.admin {
        // The application role, without a tenant set, sees no rows at all;
        // with one set, it sees only that tenant's.
        let app = &h.store.db;
        // Outside a transaction, and so possibly through a transaction
        // pooler: only the simple protocol, no prepared statement
        // (touchstone_platform::db::Pooler).
        let n: i64 = sqlx::raw_sql("SELECT count(*) FROM clients")
            .fetch_one(app.pool())
            .await
            .and_then(|row| sqlx::Row::try_get(&row, 0))
            .expect("count");
        assert_eq!(n, 0, "row-level security hides every row without a tenant");
        let mut tx = app
            .read(touchstone_platform::db::Scope::Agency("agency-a"))
            .await
            .expect("tx");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clients")
            .fetch_one(tx.conn())
            .await
            .expect("count");
        assert_eq!(n, 1, "one tenant's rows");
        drop(tx);
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM clients")
            .fetch_one(admin.pool())
            .await
            .expect("count");
        assert_eq!(total, 2);
        let owner: bool = sqlx::raw_sql(
            "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'clients'",
        )
        .fetch_one(app.pool())
        .await
        .and_then(|row| sqlx::Row::try_get(&row, 0))
        .expect("owner");
        assert!(!owner, "the service role owns no table");
    }
    h.stop().await;
}

fn craft(header: serde_json::Value, claims: serde_json::Value, pem: &[u8]) -> String {
    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = header["kid"].as_str().map(str::to_string);
    if header["alg"] == "none" {
        return format!("{}.{}.", b64(&header), b64(&claims));
    }
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(pem).expect("pem"),
    )
    .expect("sign")
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let pem = std::fs::read(h.dir.path().join("dev-signing-key.pem")).expect("pem");
    let jwks: serde_json::Value = serde_json::from_str(&h.dev.jwks_json()).expect("jwks");
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let claims = |iss: &str, aud: &str, exp: Option<u64>| {
        let mut c = serde_json::json!({"sub": "x", "iss": iss, "aud": aud, "agency": "dia", "roles": ["officer"], "iat": now});
        if let Some(exp) = exp {
            c["exp"] = exp.into();
        }
        c
    };
    let good = craft(
        serde_json::json!({"alg": "ES256", "kid": kid}),
        claims(DevKey::ISSUER, DevKey::AUDIENCE, Some(now + 300)),
        &pem,
    );
    let cases = [
        (
            "expired",
            craft(
                serde_json::json!({"alg": "ES256", "kid": kid}),
                claims(DevKey::ISSUER, DevKey::AUDIENCE, Some(now - 120)),
                &pem,
            ),
        ),
        (
            "wrong audience",
            craft(
                serde_json::json!({"alg": "ES256", "kid": kid}),
                claims(DevKey::ISSUER, "someone-else", Some(now + 300)),
                &pem,
            ),
        ),
        (
            "wrong issuer",
            craft(
                serde_json::json!({"alg": "ES256", "kid": kid}),
                claims("https://evil.example", DevKey::AUDIENCE, Some(now + 300)),
                &pem,
            ),
        ),
        (
            "no exp",
            craft(
                serde_json::json!({"alg": "ES256", "kid": kid}),
                claims(DevKey::ISSUER, DevKey::AUDIENCE, None),
                &pem,
            ),
        ),
        (
            "alg none",
            craft(
                serde_json::json!({"alg": "none", "kid": kid}),
                claims(DevKey::ISSUER, DevKey::AUDIENCE, Some(now + 300)),
                &pem,
            ),
        ),
        (
            "unknown kid",
            craft(
                serde_json::json!({"alg": "ES256", "kid": "not-a-key"}),
                claims(DevKey::ISSUER, DevKey::AUDIENCE, Some(now + 300)),
                &pem,
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    let list = |t: &str| {
        req(
            pb::ListClientsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            t,
        )
    };
    for (what, token) in &cases {
        let e = c.list_clients(list(token)).await.expect_err(what);
        assert_eq!(e.code(), Code::Unauthenticated, "{what}");
    }
    let e = c
        .list_clients(Request::new(pb::ListClientsRequest {
            parent: "agencies/dia".into(),
            ..Default::default()
        }))
        .await
        .expect_err("none");
    assert_eq!(e.code(), Code::Unauthenticated);
    c.list_clients(list(&good))
        .await
        .expect("the well-formed token works");
    h.stop().await;
}

async fn raw_store_bytes(h: &Harness) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(path) = &h.store.sqlite_path {
        for suffix in ["", "-wal"] {
            let p = format!("{}{suffix}", path.display());
            if let Ok(b) = std::fs::read(&p) {
                bytes.extend(b);
            }
        }
    } else if let Some(admin) = &h.store.admin {
        // Everything the register keeps, as the database returns it.
        for table in [
            "clients",
            "client_lookup",
            "needs",
            "consent_changes",
            "idempotency",
            "events",
            "audit_records",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(t.* AS TEXT) FROM {table} t"
            )))
            .fetch_all(admin.pool())
            .await
            .expect("dump");
            for r in rows {
                bytes.extend(r.into_bytes());
            }
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn erasure_removes_personal_data_and_feeds_resume_exactly() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", &[Role::Officer, Role::SeniorOfficer]);
    let mut client = person("Zebediah", "Quillfeather", "zebediah.quill@example.org");
    client.phone = "+61 400 987 654".into();
    let original = pb::CreateClientRequest {
        parent: "agencies/dia".into(),
        client: Some(client),
        client_id: String::new(),
        request_id: "erase-me".into(),
    };
    let made = c
        .create_client(req(original.clone(), &t))
        .await
        .expect("create")
        .into_inner();
    c.create_need(req(
        pb::CreateNeedRequest {
            parent: made.name.clone(),
            need: Some(pb::Need {
                category: "housing".into(),
                description: "Quillfeather needs a ramp".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        &t,
    ))
    .await
    .expect("need");
    c.grant_consent(req(
        pb::GrantConsentRequest {
            name: made.name.clone(),
            purpose: pb::ConsentPurpose::Contact as i32,
            source: "phone".into(),
            request_id: String::new(),
        },
        &t,
    ))
    .await
    .expect("consent");
    let before = raw_store_bytes(&h).await;
    for secret in [
        "Zebediah",
        "Quillfeather",
        "zebediah.quill@example.org",
        "400 987 654",
    ] {
        assert!(!contains(&before, secret), "{secret} is stored in clear");
    }
    let erased = c
        .erase_client(req(
            pb::EraseClientRequest {
                name: made.name.clone(),
                request_id: "erase-1".into(),
            },
            &t,
        ))
        .await
        .expect("erase")
        .into_inner();
    assert!(erased.erased);
    assert!(erased.family_name.is_empty() && erased.email.is_empty() && erased.phone.is_empty());
    let again = c
        .get_client(req(
            pb::GetClientRequest {
                name: made.name.clone(),
            },
            &t,
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(
        again.erased && again.given_names.is_empty(),
        "pseudonymous id kept, data gone"
    );
    let found = search_email(&mut c, &t, "dia", "zebediah.quill@example.org")
        .await
        .expect("search");
    assert!(found.clients.is_empty());
    let replay = c
        .create_client(req(original, &t))
        .await
        .expect_err("a retry after erasure must not recreate the client");
    assert_eq!(replay.code(), Code::FailedPrecondition);
    assert_eq!(reason(&replay), "CLIENT_ERASED");
    let after = raw_store_bytes(&h).await;
    for secret in [
        "Zebediah",
        "Quillfeather",
        "zebediah.quill@example.org",
        "400 987 654",
        "ramp",
    ] {
        assert!(!contains(&after, secret), "{secret} survives erasure");
    }
    if let Some(admin) = &h.store.admin {
        let personal: Option<Vec<u8>> = sqlx::query_scalar("SELECT personal FROM clients")
            .fetch_one(admin.pool())
            .await
            .expect("row");
        assert!(personal.is_none());
    }
    let events = event_types(&h, &mut c).await;
    assert!(
        events
            .iter()
            .any(|(ty, name)| ty == "touchstone.register.v1.ClientErased" && *name == made.name),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn watch_replays_then_follows_and_resumes_without_gaps_or_repeats() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let svc = h.service_token();
    for i in 0..5 {
        create(
            &mut c,
            &t,
            "dia",
            person("W", &format!("Watcher{i}"), &format!("w{i}@example.org")),
        )
        .await
        .expect("create");
    }
    let mut stream = c
        .watch_events(req(pb::WatchEventsRequest { after_sequence: 0 }, &svc))
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("item")
            .expect("event");
        seen.push(e);
    }
    drop(stream);
    let cursor = seen.last().expect("last").sequence;
    for i in 5..8 {
        create(
            &mut c,
            &t,
            "dia",
            person("W", &format!("Watcher{i}"), &format!("w{i}@example.org")),
        )
        .await
        .expect("create");
    }
    let mut stream = c
        .watch_events(req(
            pb::WatchEventsRequest {
                after_sequence: cursor,
            },
            &svc,
        ))
        .await
        .expect("resume")
        .into_inner();
    for _ in 0..5 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("item")
            .expect("event");
        seen.push(e);
    }
    let mut c2 = c.clone();
    let t2 = t.clone();
    let live = tokio::spawn(async move {
        create(&mut c2, &t2, "dia", person("L", "Live", "live@example.org"))
            .await
            .expect("live")
    });
    let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("live tail in time")
        .expect("item")
        .expect("event");
    let live = live.await.expect("join");
    assert_eq!(e.name, live.name, "the live event arrives");
    seen.push(e);
    let seqs: Vec<i64> = seen.iter().map(|e| e.sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    let all = c
        .list_events(req(
            pb::ListEventsRequest {
                after_sequence: 0,
                page_size: 100,
            },
            &svc,
        ))
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        seqs,
        "nothing missed, nothing twice"
    );
    assert!(all.iter().all(|e| {
        e.payload
            .as_ref()
            .is_some_and(|p| p.type_url.ends_with("ClientCreated"))
    }));
    let officer_feed = c
        .list_events(req(pb::ListEventsRequest::default(), &t))
        .await
        .expect_err("officers do not read feeds");
    assert_eq!(officer_feed.code(), Code::PermissionDenied);
    h.stop().await;
}

#[tokio::test]
async fn needs_consents_export_and_audit() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let made = create(&mut c, &t, "dia", person("Nia", "Rangi", "nia@example.org"))
        .await
        .expect("create");
    let due = touchstone_api::common::v1::Date {
        year: 2026,
        month: 1,
        day: 15,
    };
    let later = touchstone_api::common::v1::Date {
        year: 2027,
        month: 6,
        day: 1,
    };
    let mut needs = Vec::new();
    for (cat, date) in [
        ("housing", Some(due)),
        ("income", Some(later)),
        ("health", None),
    ] {
        let n = c
            .create_need(req(
                pb::CreateNeedRequest {
                    parent: made.name.clone(),
                    need: Some(pb::Need {
                        category: cat.into(),
                        description: format!("{cat} support"),
                        next_review_date: date,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &t,
            ))
            .await
            .expect("need")
            .into_inner();
        assert_eq!(n.status, pb::NeedStatus::Open as i32);
        needs.push(n);
    }
    let e = c
        .create_need(req(
            pb::CreateNeedRequest {
                parent: made.name.clone(),
                need: Some(pb::Need {
                    category: String::new(),
                    next_review_date: Some(touchstone_api::common::v1::Date {
                        year: 2026,
                        month: 2,
                        day: 30,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("bad need");
    let fields: BTreeSet<String> = violations(&e).into_iter().collect();
    assert!(
        fields.contains("need.category") && fields.contains("need.next_review_date"),
        "{fields:?}"
    );
    let due_list = c
        .list_needs_due_for_review(req(
            pb::ListNeedsDueForReviewRequest {
                parent: "agencies/dia".into(),
                review_on_or_before: Some(touchstone_api::common::v1::Date {
                    year: 2026,
                    month: 12,
                    day: 31,
                }),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("due")
        .into_inner();
    assert_eq!(
        due_list
            .needs
            .iter()
            .map(|n| n.category.as_str())
            .collect::<Vec<_>>(),
        vec!["housing"]
    );
    let met = c
        .update_need(req(
            pb::UpdateNeedRequest {
                need: Some(pb::Need {
                    name: needs[0].name.clone(),
                    etag: needs[0].etag.clone(),
                    status: pb::NeedStatus::Met as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["status".into()],
                }),
                request_id: String::new(),
            },
            &t,
        ))
        .await
        .expect("update need")
        .into_inner();
    assert_eq!(met.status, pb::NeedStatus::Met as i32);
    assert_eq!(met.description, "housing support");
    let e = c
        .delete_need(req(
            pb::DeleteNeedRequest {
                name: needs[0].name.clone(),
                etag: needs[0].etag.clone(),
            },
            &t,
        ))
        .await
        .expect_err("stale delete");
    assert_eq!(e.code(), Code::Aborted);
    c.delete_need(req(
        pb::DeleteNeedRequest {
            name: needs[2].name.clone(),
            etag: String::new(),
        },
        &t,
    ))
    .await
    .expect("delete");
    let all = c
        .list_needs(req(
            pb::ListNeedsRequest {
                parent: "agencies/dia/clients/-".into(),
                order_by: "category".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        all.needs
            .iter()
            .map(|n| n.category.as_str())
            .collect::<Vec<_>>(),
        vec!["housing", "income"]
    );

    c.grant_consent(req(
        pb::GrantConsentRequest {
            name: made.name.clone(),
            purpose: pb::ConsentPurpose::FeedbackSurveys as i32,
            source: "web".into(),
            request_id: String::new(),
        },
        &t,
    ))
    .await
    .expect("grant");
    let withdrawn = c
        .withdraw_consent(req(
            pb::WithdrawConsentRequest {
                name: made.name.clone(),
                purpose: pb::ConsentPurpose::FeedbackSurveys as i32,
                source: "phone".into(),
                request_id: String::new(),
            },
            &t,
        ))
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawn.consents.len(), 1);
    assert!(!withdrawn.consents[0].granted);
    // GetClient reads the client and its consent history in one statement
    // (a join, oldest change first): the latest change is the one shown.
    let read = c
        .get_client(req(
            pb::GetClientRequest {
                name: made.name.clone(),
            },
            &t,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(read.consents, withdrawn.consents);
    assert_eq!(read.email, "nia@example.org");
    let other = create(&mut c, &t, "dia", person("Ari", "Moana", "ari@example.org"))
        .await
        .expect("create another");
    let read = c
        .get_client(req(
            pb::GetClientRequest {
                name: other.name.clone(),
            },
            &t,
        ))
        .await
        .expect("get a client without consents")
        .into_inner();
    assert!(read.consents.is_empty());
    assert_eq!(read.family_name, "Moana");
    // A client id taken is ALREADY_EXISTS, and the failed create leaves no
    // lookup digest behind (its insert and its digests are one request).
    let taken = other
        .name
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let e = c
        .create_client(req(
            pb::CreateClientRequest {
                parent: "agencies/dia".into(),
                client: Some(person("Tui", "Moana", "tui@example.org")),
                client_id: taken,
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("the id is taken");
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    let found = search_email(&mut c, &t, "dia", "tui@example.org")
        .await
        .expect("search");
    assert!(found.clients.is_empty());
    let e = c
        .grant_consent(req(
            pb::GrantConsentRequest {
                name: made.name.clone(),
                purpose: 99,
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("bad purpose");
    assert_eq!(violations(&e), vec!["purpose"]);

    let export = c
        .export_client(req(
            pb::ExportClientRequest {
                name: made.name.clone(),
            },
            &t,
        ))
        .await
        .expect("export")
        .into_inner();
    assert_eq!(export.client.expect("client").email, "nia@example.org");
    assert_eq!(export.needs.len(), 2);
    assert_eq!(
        export
            .consent_history
            .iter()
            .map(|c| c.granted)
            .collect::<Vec<_>>(),
        vec![true, false]
    );
    assert!(
        export
            .audit_records
            .iter()
            .any(|a| a.action == "CreateClient")
    );

    let e = c
        .list_audit_records(req(
            pb::ListAuditRecordsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("officer");
    assert_eq!(e.code(), Code::PermissionDenied);
    let admin = h.token("dia", ADMIN);
    let audits = c
        .list_audit_records(req(
            pb::ListAuditRecordsRequest {
                parent: "agencies/dia".into(),
                filter: "action = \"GetNeed\" OR action = \"ExportClient\"".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("audit")
        .into_inner();
    assert_eq!(audits.audit_records.len(), 1);
    assert_eq!(audits.audit_records[0].actor, "tester-dia");
    assert_eq!(audits.audit_records[0].resource, made.name);
    let senior = h.token("dia", SENIOR);
    c.erase_client(req(
        pb::EraseClientRequest {
            name: made.name.clone(),
            request_id: String::new(),
        },
        &senior,
    ))
    .await
    .expect("senior erases");
    let e = c
        .create_need(req(
            pb::CreateNeedRequest {
                parent: made.name.clone(),
                need: Some(pb::Need {
                    category: "x".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("erased");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .update_need(req(
            pb::UpdateNeedRequest {
                need: Some(pb::Need {
                    name: needs[1].name.clone(),
                    description: "new personal detail".into(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            &t,
        ))
        .await
        .expect_err("an erased client's need takes no new personal data");
    assert_eq!(e.code(), Code::FailedPrecondition);
    h.stop().await;
}
