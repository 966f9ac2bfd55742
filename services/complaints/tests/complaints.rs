//! The complaints service through its real gRPC API, beside a real client
//! register: servers on 127.0.0.1:0 over fresh databases (SQLite, or
//! PostgreSQL when TOUCHSTONE_TEST_PG_URL is set), called with the generated
//! clients and real tokens.

use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use touchstone_api::common::v1::{Channel as Via, Date};
use touchstone_api::complaints::v1 as pb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::{AuthConfig, DevKey, Role, ServiceToken, TokenRequest, Verifier};
use touchstone_complaints::intake::{self, RegisterClient};
use touchstone_crypto::MasterKey;
use touchstone_platform::consumer;
use touchstone_platform::db::{Db, Scope};
use touchstone_platform::keycheck;
use touchstone_platform::testing::{self, TestDb};

/// One running server.
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(
        name: &'static str,
        grpc: &'static str,
        routes: tonic::service::Routes,
        db: Db,
        addr: &str,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let readiness: touchstone_server::Readiness = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        });
        let mut opts = touchstone_server::ServeOptions::new(name, vec![grpc]);
        opts.shutdown_grace = Duration::from_millis(200);
        let task = tokio::spawn(async move {
            touchstone_server::serve(listener, routes, opts, readiness, async move {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

struct Harness {
    dev: Arc<DevKey>,
    _dir: tempfile::TempDir,
    verifier: Arc<Verifier>,
    register_db: TestDb,
    register_master: MasterKey,
    register: Server,
    store: TestDb,
    complaints_master: MasterKey,
    complaints: Server,
    lookup: RegisterClient,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(MasterKey::generate(), MasterKey::generate()).await
    }

    /// Both services under one master key, as `touchstone up` runs them.
    async fn start_sharing_master() -> Harness {
        let master = MasterKey::generate();
        Harness::start_with(master.clone(), master).await
    }

    async fn start_with(register_master: MasterKey, complaints_master: MasterKey) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Arc::new(DevKey::load_or_create(dir.path()).expect("dev key"));
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
        let register_db = testing::fresh(&touchstone_register::migration_sets()).await;
        let register = Server::start(
            "register",
            touchstone_register::SERVICE_NAME,
            touchstone_register::routes(
                register_db.db.clone(),
                register_master.clone(),
                verifier.clone(),
            ),
            register_db.db.clone(),
            "127.0.0.1:0",
        )
        .await;
        let store = testing::fresh(&touchstone_complaints::migration_sets()).await;
        let token = ServiceToken::Dev {
            key: dev.clone(),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
            subject: "complaints".into(),
        };
        let peers =
            touchstone_complaints::Peers::connect(&format!("http://{}", register.addr), token)
                .expect("peers");
        let lookup = RegisterClient::new(peers.register.clone(), peers.token.clone());
        let (routes, tasks) = touchstone_complaints::start(
            store.db.clone(),
            complaints_master.clone(),
            verifier.clone(),
            peers,
        );
        // The tests drive the background work themselves, step by step.
        for t in tasks {
            t.abort();
        }
        let complaints = Server::start(
            "complaints",
            touchstone_complaints::SERVICE_NAME,
            routes,
            store.db.clone(),
            "127.0.0.1:0",
        )
        .await;
        Harness {
            dev,
            _dir: dir,
            verifier,
            register_db,
            register_master,
            register,
            store,
            complaints_master,
            complaints,
            lookup,
        }
    }

    async fn client(&self) -> ComplaintsServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.complaints.addr))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        ComplaintsServiceClient::new(channel)
    }

    async fn register_client(&self) -> RegisterServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.register.addr))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        RegisterServiceClient::new(channel)
    }

    /// Stops the register, then starts it again on the same address and database.
    async fn restart_register(&mut self) {
        let addr = self.register.addr;
        self.register.stop().await;
        self.register = Server::start(
            "register",
            touchstone_register::SERVICE_NAME,
            touchstone_register::routes(
                self.register_db.db.clone(),
                self.register_master.clone(),
                self.verifier.clone(),
            ),
            self.register_db.db.clone(),
            &addr.to_string(),
        )
        .await;
    }

    /// Stops the complaints service, then starts it again on the same
    /// address and database, as a new process would (nothing kept in memory).
    async fn restart_complaints(&mut self) {
        let addr = self.complaints.addr;
        self.complaints.stop().await;
        let token = ServiceToken::Dev {
            key: self.dev.clone(),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
            subject: "complaints".into(),
        };
        let peers =
            touchstone_complaints::Peers::connect(&format!("http://{}", self.register.addr), token)
                .expect("peers");
        let (routes, tasks) = touchstone_complaints::start(
            self.store.db.clone(),
            self.complaints_master.clone(),
            self.verifier.clone(),
            peers,
        );
        for t in tasks {
            t.abort();
        }
        self.complaints = Server::start(
            "complaints",
            touchstone_complaints::SERVICE_NAME,
            routes,
            self.store.db.clone(),
            &addr.to_string(),
        )
        .await;
    }

    fn token_as(&self, subject: &str, agency: &str, roles: &[Role]) -> String {
        self.dev
            .mint(&TokenRequest {
                subject: subject.into(),
                agency: Some(agency.into()),
                agencies: None,
                roles: roles.to_vec(),
                ttl: Duration::from_secs(600),
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
            })
            .expect("mint")
    }

    fn token(&self, agency: &str, roles: &[Role]) -> String {
        self.token_as(&format!("tester-{agency}"), agency, roles)
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
        self.complaints.stop().await;
        self.register.stop().await;
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
const SENIOR: &[Role] = &[Role::SeniorOfficer];
const ADMIN: &[Role] = &[Role::AgencyAdmin];

fn reason(s: &Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

fn violations(s: &Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn anonymous(description: &str) -> pb::Complaint {
    pb::Complaint {
        complainant: Some(pb::Complainant {
            who: Some(pb::complainant::Who::Anonymous(true)),
        }),
        channel: Via::Web as i32,
        unit: "passports-north".into(),
        service: "passport renewal".into(),
        category: "delay".into(),
        description: description.into(),
        ..Default::default()
    }
}

async fn create(
    c: &mut ComplaintsServiceClient<Channel>,
    token: &str,
    agency: &str,
    complaint: pb::Complaint,
    request_id: &str,
) -> Result<pb::Complaint, Status> {
    c.create_complaint(req(
        pb::CreateComplaintRequest {
            parent: format!("agencies/{agency}"),
            complaint: Some(complaint),
            complaint_id: String::new(),
            request_id: request_id.into(),
        },
        token,
    ))
    .await
    .map(|r| r.into_inner())
}

async fn event_types(h: &Harness, c: &mut ComplaintsServiceClient<Channel>) -> Vec<String> {
    c.list_events(req(
        pb::ListEventsRequest {
            after_sequence: 0,
            page_size: 1000,
        },
        &h.service_token(),
    ))
    .await
    .expect("events")
    .into_inner()
    .events
    .into_iter()
    .map(|e| e.r#type.rsplit('.').next().unwrap_or_default().to_string())
    .collect()
}

/// The stored history of a complaint replays to exactly its stored state.
async fn assert_history_replays(h: &Harness, name: &str) {
    let ids: Vec<&str> = name.split('/').collect();
    let (agency, id) = (ids[1], ids[3]);
    let mut tx = h.store.db.read(Scope::Agency(agency)).await.expect("tx");
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT command, time FROM complaint_history WHERE agency = $1 AND complaint_id = $2 ORDER BY sequence",
    )
    .bind(agency)
    .bind(id)
    .fetch_all(tx.conn())
    .await
    .expect("history");
    let state: String =
        sqlx::query_scalar("SELECT state FROM complaints WHERE agency = $1 AND id = $2")
            .bind(agency)
            .bind(id)
            .fetch_one(tx.conn())
            .await
            .expect("state");
    tx.commit().await.expect("commit");
    let commands: Vec<(touchstone_complaints::domain::Command, i64)> = rows
        .iter()
        .map(|(c, t)| (serde_json::from_str(c).expect("command"), *t))
        .collect();
    let replayed = touchstone_complaints::domain::replay(commands.iter().map(|(c, t)| (c, *t)))
        .expect("replays");
    let stored: touchstone_complaints::domain::State = serde_json::from_str(&state).expect("state");
    assert_eq!(replayed, stored, "history replays to the stored state");
}

#[tokio::test]
async fn lifecycle_history_and_events() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let created = create(&mut c, &t, "dia", anonymous("Waited six weeks."), "")
        .await
        .expect("create");
    assert!(created.name.starts_with("agencies/dia/complaints/"));
    assert_eq!(created.status, pb::Status::Received as i32);
    assert_eq!(created.stage, pb::Stage::Frontline as i32);
    assert_eq!(created.severity, pb::Severity::Medium as i32);
    assert_eq!(created.description, "Waited six weeks.");
    let ack = created.acknowledgement_clock.expect("ack clock");
    assert_eq!(ack.allowed_days, 2);
    assert!(!ack.completed && !ack.breached && ack.due_date.is_some());

    macro_rules! step {
        ($method:ident, $req:expr) => {
            c.$method(req($req, &t)).await.map(|r| r.into_inner())
        };
    }
    let n = created.name.clone();
    let a = step!(
        acknowledge_complaint,
        pb::AcknowledgeComplaintRequest {
            name: n.clone(),
            note: "Called the client".into(),
            etag: created.etag.clone(),
            request_id: String::new(),
        }
    )
    .expect("acknowledge");
    assert_eq!(a.status, pb::Status::Acknowledged as i32);
    assert!(a.acknowledgement_clock.as_ref().expect("clock").completed);
    // A stale etag is refused.
    let stale = step!(
        start_complaint,
        pb::StartComplaintRequest {
            name: n.clone(),
            note: String::new(),
            etag: created.etag.clone(),
            request_id: String::new(),
        }
    )
    .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    step!(
        start_complaint,
        pb::StartComplaintRequest {
            name: n.clone(),
            ..Default::default()
        }
    )
    .expect("start");
    let paused = step!(
        await_client,
        pb::AwaitClientRequest {
            name: n.clone(),
            note: "Asked for the receipt".into(),
            ..Default::default()
        }
    )
    .expect("await");
    assert!(paused.response_clock.as_ref().expect("clock").stopped);
    assert!(
        paused
            .response_clock
            .as_ref()
            .expect("clock")
            .due_date
            .is_none()
    );
    // Resolving while waiting on the client is not in the table.
    let illegal = step!(
        resolve_complaint,
        pb::ResolveComplaintRequest {
            name: n.clone(),
            resolution: Some(pb::Resolution {
                outcome: pb::Outcome::Upheld as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    )
    .expect_err("illegal");
    assert_eq!(illegal.code(), Code::FailedPrecondition);
    assert_eq!(reason(&illegal), "INVALID_TRANSITION");
    step!(
        resume_complaint,
        pb::ResumeComplaintRequest {
            name: n.clone(),
            ..Default::default()
        }
    )
    .expect("resume");
    let resolved = step!(
        resolve_complaint,
        pb::ResolveComplaintRequest {
            name: n.clone(),
            resolution: Some(pb::Resolution {
                outcome: pb::Outcome::PartlyUpheld as i32,
                remedies: vec![pb::Remedy::Apology as i32, pb::Remedy::Explanation as i32],
                root_causes: vec!["staffing".into()],
                summary: "We apologised.".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    )
    .expect("resolve");
    let res = resolved.resolution.clone().expect("resolution");
    assert_eq!(res.outcome, pb::Outcome::PartlyUpheld as i32);
    assert_eq!(res.summary, "We apologised.");
    assert!(resolved.response_clock.as_ref().expect("clock").completed);
    step!(
        close_complaint,
        pb::CloseComplaintRequest {
            name: n.clone(),
            ..Default::default()
        }
    )
    .expect("close");
    // Closed stays closed: only reopening leaves it.
    let again = step!(
        start_complaint,
        pb::StartComplaintRequest {
            name: n.clone(),
            ..Default::default()
        }
    )
    .expect_err("closed");
    assert_eq!(reason(&again), "INVALID_TRANSITION");
    let reopened = step!(
        reopen_complaint,
        pb::ReopenComplaintRequest {
            name: n.clone(),
            note: "New information".into(),
            ..Default::default()
        }
    )
    .expect("reopen");
    assert_eq!(reopened.status, pb::Status::Reopened as i32);
    assert!(reopened.resolution.is_none());
    let withdrawn = step!(
        withdraw_complaint,
        pb::WithdrawComplaintRequest {
            name: n.clone(),
            ..Default::default()
        }
    )
    .expect("withdraw");
    assert_eq!(withdrawn.status, pb::Status::Withdrawn as i32);

    let history = step!(
        list_complaint_history,
        pb::ListComplaintHistoryRequest { parent: n.clone() }
    )
    .expect("history")
    .entries;
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "RECEIVE",
            "ACKNOWLEDGE",
            "START",
            "AWAIT_CLIENT",
            "RESUME",
            "RESOLVE",
            "CLOSE",
            "REOPEN",
            "WITHDRAW"
        ]
    );
    assert_eq!(history[1].note, "Called the client");
    assert_eq!(history[3].to_status, pb::Status::AwaitingClient as i32);
    assert_history_replays(&h, &n).await;

    let types = event_types(&h, &mut c).await;
    assert_eq!(
        types,
        [
            "ComplaintReceived",
            "ComplaintAcknowledged",
            "ComplaintPaused",
            "ComplaintResumed",
            "ComplaintResolved",
            "ComplaintClosed",
            "ComplaintReopened",
            "ComplaintWithdrawn"
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn escalation_and_role_rules() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let officer = h.token("dia", OFFICER);
    let senior = h.token("dia", SENIOR);
    let admin = h.token("dia", ADMIN);
    // The agency sends a category to the senior queue as well as serious ones.
    c.update_complaint_standard(req(
        pb::UpdateComplaintStandardRequest {
            complaint_standard: Some(pb::ComplaintStandard {
                name: "agencies/dia/complaintStandard".into(),
                senior_categories: vec!["privacy".into()],
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .expect("standard");
    let mut serious = anonymous("A serious failure.");
    serious.severity = pb::Severity::Serious as i32;
    let s = create(&mut c, &officer, "dia", serious, "")
        .await
        .expect("serious");
    assert!(s.senior_queue);
    let mut privacy = anonymous("My file was sent to someone else.");
    privacy.category = "Privacy".into();
    let p = create(&mut c, &officer, "dia", privacy, "")
        .await
        .expect("privacy");
    assert!(p.senior_queue);
    let plain = create(&mut c, &officer, "dia", anonymous("Rude staff."), "")
        .await
        .expect("plain");
    assert!(!plain.senior_queue);
    // Raising the severity later sends it to the senior queue too.
    let raised = c
        .update_complaint(req(
            pb::UpdateComplaintRequest {
                complaint: Some(pb::Complaint {
                    name: plain.name.clone(),
                    severity: pb::Severity::Serious as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["severity".into()],
                }),
                request_id: String::new(),
            },
            &officer,
        ))
        .await
        .expect("raise")
        .into_inner();
    assert!(raised.senior_queue);
    let types = event_types(&h, &mut c).await;
    assert_eq!(
        types.iter().filter(|t| *t == "ComplaintEscalated").count(),
        3,
        "{types:?}"
    );

    // Only a senior officer may close a serious complaint.
    let resolve = |name: &str, remedies: Vec<i32>, cents: i64| pb::ResolveComplaintRequest {
        name: name.into(),
        resolution: Some(pb::Resolution {
            outcome: pb::Outcome::Upheld as i32,
            remedies,
            financial_amount_cents: cents,
            ..Default::default()
        }),
        ..Default::default()
    };
    c.resolve_complaint(req(
        resolve(&s.name, vec![pb::Remedy::Apology as i32], 0),
        &officer,
    ))
    .await
    .expect("resolve");
    let denied = c
        .close_complaint(req(
            pb::CloseComplaintRequest {
                name: s.name.clone(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("officer may not close");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "SENIOR_OFFICER_REQUIRED");
    c.close_complaint(req(
        pb::CloseComplaintRequest {
            name: s.name.clone(),
            ..Default::default()
        },
        &senior,
    ))
    .await
    .expect("senior closes");

    // Only a senior officer may approve a financial remedy.
    let financial = resolve(&p.name, vec![pb::Remedy::Financial as i32], 25_000);
    let denied = c
        .resolve_complaint(req(financial.clone(), &officer))
        .await
        .expect_err("officer may not approve money");
    assert_eq!(reason(&denied), "SENIOR_OFFICER_REQUIRED");
    let approved = c
        .resolve_complaint(req(financial, &senior))
        .await
        .expect("senior approves")
        .into_inner();
    let r = approved.resolution.expect("resolution");
    assert_eq!(r.financial_amount_cents, 25_000);
    assert_eq!(r.financial_approver, "tester-dia");

    // Escalation moves to the next stage and starts its clock; external
    // review needs the body and its reference.
    let esc = c
        .escalate_complaint(req(
            pb::EscalateComplaintRequest {
                name: p.name.clone(),
                note: "Client unhappy with the response".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("escalate")
        .into_inner();
    assert_eq!(esc.stage, pb::Stage::Investigation as i32);
    assert_eq!(esc.status, pb::Status::InProgress as i32);
    assert_eq!(esc.response_clock.expect("clock").allowed_days, 20);
    let no_ref = c
        .escalate_complaint(req(
            pb::EscalateComplaintRequest {
                name: p.name.clone(),
                stage: pb::Stage::ExternalReview as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("referral required");
    assert_eq!(violations(&no_ref), ["referral"]);
    let ext = c
        .escalate_complaint(req(
            pb::EscalateComplaintRequest {
                name: p.name.clone(),
                stage: pb::Stage::ExternalReview as i32,
                referral: Some(pb::Referral {
                    body: "Commonwealth Ombudsman".into(),
                    reference: "OMB-2026-118".into(),
                    referral_time: None,
                }),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("external")
        .into_inner();
    let referral = ext.referral.expect("referral");
    assert_eq!(referral.reference, "OMB-2026-118");
    assert!(referral.referral_time.is_some());
    let back = c
        .escalate_complaint(req(
            pb::EscalateComplaintRequest {
                name: p.name.clone(),
                stage: pb::Stage::Investigation as i32,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect_err("not backwards");
    assert_eq!(reason(&back), "INVALID_TRANSITION");

    // Intake systems may submit but not read; analysts see no complaints.
    let intake = h.token("dia", &[Role::Intake]);
    create(&mut c, &intake, "dia", anonymous("From the web form."), "")
        .await
        .expect("intake submits");
    let no = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: s.name.clone(),
            },
            &intake,
        ))
        .await
        .expect_err("intake may not read");
    assert_eq!(no.code(), Code::PermissionDenied);
    let analyst = h.token("dia", &[Role::Analyst]);
    let no = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &analyst,
        ))
        .await
        .expect_err("analyst");
    assert_eq!(no.code(), Code::PermissionDenied);
    // Officers may not change the standard.
    let no = c
        .update_complaint_standard(req(
            pb::UpdateComplaintStandardRequest {
                complaint_standard: Some(pb::ComplaintStandard {
                    name: "agencies/dia/complaintStandard".into(),
                    ..Default::default()
                }),
            },
            &officer,
        ))
        .await
        .expect_err("officer");
    assert_eq!(no.code(), Code::PermissionDenied);
    assert_history_replays(&h, &p.name).await;
    h.stop().await;
}

#[tokio::test]
async fn tenant_isolation_and_validation() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let a = h.token("dia", OFFICER);
    let b = h.token("ato", OFFICER);
    let created = create(&mut c, &a, "dia", anonymous("x"), "")
        .await
        .expect("create");
    let other = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: created.name.clone(),
            },
            &b,
        ))
        .await
        .expect_err("other agency");
    assert_eq!(other.code(), Code::NotFound);
    let other = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &b,
        ))
        .await
        .expect_err("other agency list");
    assert_eq!(other.code(), Code::PermissionDenied);
    let mine = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/ato".into(),
                ..Default::default()
            },
            &b,
        ))
        .await
        .expect("own list")
        .into_inner();
    assert!(mine.complaints.is_empty());

    // Bad input: every bad field named at once.
    let bad = create(
        &mut c,
        &a,
        "dia",
        pb::Complaint {
            channel: 0,
            severity: 99,
            category: "x".repeat(300),
            receive_time: Some(prost_types::Timestamp {
                seconds: 4_102_444_800,
                nanos: 0,
            }),
            ..Default::default()
        },
        "",
    )
    .await
    .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(
        fields,
        [
            "complaint.category",
            "complaint.channel",
            "complaint.complainant",
            "complaint.description",
            "complaint.receive_time",
            "complaint.severity"
        ]
    );
    let bad = create(
        &mut c,
        &a,
        "dia",
        pb::Complaint {
            complainant: Some(pb::Complainant {
                who: Some(pb::complainant::Who::Client(
                    "agencies/ato/clients/x".into(),
                )),
            }),
            ..anonymous("x")
        },
        "",
    )
    .await
    .expect_err("client of another agency");
    assert_eq!(violations(&bad), ["complaint.complainant.client"]);
    let bad = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                filter: "colour = red".into(),
                ..Default::default()
            },
            &a,
        ))
        .await
        .expect_err("bad filter");
    assert_eq!(violations(&bad), ["filter"]);
    let bad = c
        .create_calendar(req(
            pb::CreateCalendarRequest {
                parent: "agencies/dia".into(),
                calendar_id: "nsw".into(),
                calendar: Some(pb::Calendar {
                    time_zone: "Mars/Olympus".into(),
                    weekend_days: vec![8],
                    ..Default::default()
                }),
            },
            &h.token("dia", ADMIN),
        ))
        .await
        .expect_err("bad calendar");
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["calendar.weekend_days[0]"]);
    let bad = c
        .create_calendar(req(
            pb::CreateCalendarRequest {
                parent: "agencies/dia".into(),
                calendar_id: "nsw".into(),
                calendar: Some(pb::Calendar {
                    time_zone: "Mars/Olympus".into(),
                    ..Default::default()
                }),
            },
            &h.token("dia", ADMIN),
        ))
        .await
        .expect_err("bad zone");
    assert_eq!(violations(&bad), ["calendar.time_zone"]);
    h.stop().await;
}

#[tokio::test]
async fn idempotent_intake_under_concurrent_retries() {
    let h = Harness::start().await;
    let t = h.token("dia", OFFICER);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = h.client().await;
        let t = t.clone();
        calls.push(tokio::spawn(async move {
            create(
                &mut c,
                &t,
                "dia",
                anonymous("Sent twice by a flaky form."),
                "form-123",
            )
            .await
        }));
    }
    let mut names = Vec::new();
    for call in calls {
        names.push(call.await.expect("join").expect("create").name);
    }
    names.dedup();
    assert_eq!(names.len(), 1, "every retry got the first response");
    let mut c = h.client().await;
    let listed = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.complaints.len(), 1);
    assert_eq!(
        event_types(&h, &mut c).await,
        ["ComplaintReceived"],
        "one intake, one event"
    );
    // The same request id for a different complaint is refused.
    let reused = create(&mut c, &t, "dia", anonymous("Something else."), "form-123")
        .await
        .expect_err("reused");
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    h.stop().await;
}

async fn register_person(h: &Harness, agency: &str) -> reg::Client {
    let mut r = h.register_client().await;
    r.create_client(req(
        reg::CreateClientRequest {
            parent: format!("agencies/{agency}"),
            client: Some(reg::Client {
                kind: reg::ClientKind::Person as i32,
                given_names: "Aroha".into(),
                family_name: "Ngata".into(),
                email: "aroha@example.org".into(),
                preferred_language: "mi".into(),
                interpreter_needed: true,
                accessibility_needs: vec![reg::AccessibilityNeed::LargePrint as i32],
                ..Default::default()
            }),
            ..Default::default()
        },
        &h.token(agency, OFFICER),
    ))
    .await
    .expect("register client")
    .into_inner()
}

fn from_client(name: &str, description: &str) -> pb::Complaint {
    pb::Complaint {
        complainant: Some(pb::Complainant {
            who: Some(pb::complainant::Who::Client(name.into())),
        }),
        ..anonymous(description)
    }
}

#[tokio::test]
async fn intake_copies_needs_and_survives_the_register_being_down() {
    let mut h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let client = register_person(&h, "dia").await;
    let verified = create(
        &mut c,
        &t,
        "dia",
        from_client(&client.name, "Late letter."),
        "",
    )
    .await
    .expect("create");
    assert_eq!(verified.client_check, pb::ClientCheck::Verified as i32);
    let needs = verified.accessibility.clone().expect("needs copied");
    assert_eq!(needs.needs, [reg::AccessibilityNeed::LargePrint as i32]);
    assert!(needs.interpreter_needed);
    assert_eq!(needs.preferred_language, "mi");
    let unknown = create(
        &mut c,
        &t,
        "dia",
        from_client("agencies/dia/clients/nobody", "x"),
        "",
    )
    .await
    .expect_err("unknown client");
    assert_eq!(violations(&unknown), ["complaint.complainant.client"]);

    // With the register stopped, intake still succeeds, unverified.
    let addr = h.register.addr;
    h.register.stop().await;
    let pending = create(
        &mut c,
        &t,
        "dia",
        from_client(&client.name, "Phone queue."),
        "",
    )
    .await
    .expect("intake with the register down");
    assert_eq!(pending.client_check, pb::ClientCheck::Pending as i32);
    assert_eq!(
        intake::verify_pending(&h.store.db, &h.lookup)
            .await
            .expect("pass"),
        0,
        "still down: nothing settled"
    );
    h.restart_register().await;
    assert_eq!(h.register.addr, addr);
    let mut settled = 0;
    for _ in 0..50 {
        settled += intake::verify_pending(&h.store.db, &h.lookup)
            .await
            .expect("pass");
        if settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled, 1);
    let got = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: pending.name.clone(),
            },
            &t,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.client_check, pb::ClientCheck::Verified as i32);
    assert!(got.accessibility.expect("needs").interpreter_needed);
    // A subject-access search: the client's complaints only.
    create(&mut c, &t, "dia", anonymous("Someone else's."), "")
        .await
        .expect("other");
    let id = client.name.rsplit('/').next().expect("id");
    let theirs = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                filter: format!("client_id = \"{id}\""),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("by client")
        .into_inner()
        .complaints;
    assert_eq!(theirs.len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn erasure_in_the_register_redacts_complaints() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let client = register_person(&h, "dia").await;
    let complaint = create(
        &mut c,
        &t,
        "dia",
        from_client(&client.name, "My neighbour Hemi Walker shouted at me."),
        "",
    )
    .await
    .expect("create");
    c.acknowledge_complaint(req(
        pb::AcknowledgeComplaintRequest {
            name: complaint.name.clone(),
            note: "Spoke to Aroha on 021 555 0101".into(),
            ..Default::default()
        },
        &t,
    ))
    .await
    .expect("ack");
    c.create_contact(req(
        pb::CreateContactRequest {
            parent: complaint.name.clone(),
            contact: Some(pb::Contact {
                channel: Via::Phone as i32,
                direction: pb::contact::Direction::Outbound as i32,
                summary: "Explained the delay to Aroha".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        },
        &t,
    ))
    .await
    .expect("contact");
    let other = create(&mut c, &t, "dia", anonymous("Unrelated."), "")
        .await
        .expect("other");

    let mut r = h.register_client().await;
    r.erase_client(req(
        reg::EraseClientRequest {
            name: client.name.clone(),
            ..Default::default()
        },
        &h.token("dia", SENIOR),
    ))
    .await
    .expect("erase");
    let feed = intake::RegisterFeed(h.lookup.clone());
    let applied = consumer::catch_up(&h.store.db, intake::REGISTER_FEED, &feed, &intake::Erasure)
        .await
        .expect("consume");
    assert!(applied >= 2, "client created and erased");
    // A second pass applies nothing twice.
    assert_eq!(
        consumer::catch_up(&h.store.db, intake::REGISTER_FEED, &feed, &intake::Erasure)
            .await
            .expect("again"),
        0
    );

    let got = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: complaint.name.clone(),
            },
            &t,
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(got.redacted);
    assert!(got.description.is_empty());
    assert_eq!(
        got.status,
        pb::Status::Acknowledged as i32,
        "the case stays"
    );
    let history = c
        .list_complaint_history(req(
            pb::ListComplaintHistoryRequest {
                parent: complaint.name.clone(),
            },
            &t,
        ))
        .await
        .expect("history")
        .into_inner();
    assert!(history.entries.iter().all(|e| e.note.is_empty()));
    let contacts = c
        .list_contacts(req(
            pb::ListContactsRequest {
                parent: complaint.name.clone(),
            },
            &t,
        ))
        .await
        .expect("contacts")
        .into_inner();
    assert_eq!(contacts.contacts.len(), 1);
    assert!(contacts.contacts[0].summary.is_empty());
    let untouched = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: other.name.clone(),
            },
            &t,
        ))
        .await
        .expect("other")
        .into_inner();
    assert!(!untouched.redacted);
    assert_eq!(untouched.description, "Unrelated.");
    // The raw database holds none of the narrative in clear, before or after.
    if let Some(path) = &h.store.sqlite_path {
        let mut bytes = std::fs::read(path).expect("db file");
        if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
            bytes.extend(wal);
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("Hemi Walker"));
        assert!(!text.contains("021 555 0101"));
    }
    h.stop().await;
}

fn day(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

/// Millis of a UTC instant.
fn utc(rfc3339: &str) -> prost_types::Timestamp {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("time");
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    }
}

#[tokio::test]
async fn clocks_follow_the_agency_calendar_and_overdue_lists() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let admin = h.token("dia", ADMIN);
    let t = h.token_as("officer-1", "dia", OFFICER);
    c.create_calendar(req(
        pb::CreateCalendarRequest {
            parent: "agencies/dia".into(),
            calendar_id: "nsw".into(),
            calendar: Some(pb::Calendar {
                display_name: "New South Wales".into(),
                time_zone: "Australia/Sydney".into(),
                holidays: vec![day(2025, 12, 25), day(2025, 12, 26), day(2026, 1, 1)],
                close_minute: 17 * 60,
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .expect("calendar");
    c.update_complaint_standard(req(
        pb::UpdateComplaintStandardRequest {
            complaint_standard: Some(pb::ComplaintStandard {
                name: "agencies/dia/complaintStandard".into(),
                calendar: "agencies/dia/calendars/nsw".into(),
                acknowledge_days: 2,
                frontline_days: 5,
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .expect("standard");
    // Received Tuesday 23 December 2025 at 18:30 Sydney time (07:30Z): after
    // close, so counted from Wednesday 24th. Working days after that: 24 Dec
    // is the receipt day; 25, 26 holidays; 27, 28 weekend; day 1 = Mon 29,
    // day 2 = Tue 30 → acknowledgement due 30 December.
    let mut old = anonymous("Lost application.");
    old.receive_time = Some(utc("2025-12-23T07:30:00Z"));
    let old = create(&mut c, &t, "dia", old, "").await.expect("old");
    let ack = old.acknowledgement_clock.expect("clock");
    assert_eq!(ack.due_date, Some(day(2025, 12, 30)));
    assert!(ack.breached, "long overdue by now");
    // Front line: 5 working days from the same receipt: 29, 30, 31 Dec,
    // (1 Jan holiday) 2 Jan, (3, 4 weekend) 5 Jan → due 5 January 2026.
    let resp = old.response_clock.expect("clock");
    assert_eq!(resp.due_date, Some(day(2026, 1, 5)));
    let fresh = create(&mut c, &t, "dia", anonymous("Just now."), "")
        .await
        .expect("fresh");
    assert!(!fresh.acknowledgement_clock.expect("clock").breached);

    let list = |filter: &str| pb::ListComplaintsRequest {
        parent: "agencies/dia".into(),
        filter: filter.into(),
        order_by: "due_time".into(),
        ..Default::default()
    };
    let overdue = c
        .list_complaints(req(list("overdue = true"), &t))
        .await
        .expect("overdue")
        .into_inner()
        .complaints;
    assert_eq!(
        overdue.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        [old.name.as_str()]
    );
    let not_overdue = c
        .list_complaints(req(list("NOT overdue = true"), &t))
        .await
        .expect("not overdue")
        .into_inner()
        .complaints;
    assert_eq!(
        not_overdue
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        [fresh.name.as_str()]
    );
    let due_before = c
        .list_complaints(req(list("due_time < \"2026-01-01T00:00:00Z\""), &t))
        .await
        .expect("due before")
        .into_inner()
        .complaints;
    assert_eq!(due_before.len(), 1);
    // Acknowledging moves the pending clock to the response; resolving
    // takes it off the overdue list.
    c.acknowledge_complaint(req(
        pb::AcknowledgeComplaintRequest {
            name: old.name.clone(),
            ..Default::default()
        },
        &t,
    ))
    .await
    .expect("ack");
    c.resolve_complaint(req(
        pb::ResolveComplaintRequest {
            name: old.name.clone(),
            resolution: Some(pb::Resolution {
                outcome: pb::Outcome::ResolvedEarly as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
        &t,
    ))
    .await
    .expect("resolve");
    let overdue = c
        .list_complaints(req(list("overdue = true"), &t))
        .await
        .expect("overdue")
        .into_inner()
        .complaints;
    assert!(overdue.is_empty());

    // "My queue": complaints assigned to the caller.
    c.assign_complaint(req(
        pb::AssignComplaintRequest {
            name: fresh.name.clone(),
            assignment: Some(pb::Assignment {
                unit: "passports-south".into(),
                officer: "officer-1".into(),
            }),
            ..Default::default()
        },
        &t,
    ))
    .await
    .expect("assign");
    let mine = c
        .list_complaints(req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                assigned_to_me: true,
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("mine")
        .into_inner()
        .complaints;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        mine[0].assignment.as_ref().expect("a").unit,
        "passports-south"
    );
    let by_status = c
        .list_complaints(req(list("status = RESOLVED AND stage = FRONTLINE"), &t))
        .await
        .expect("status")
        .into_inner()
        .complaints;
    assert_eq!(by_status.len(), 1);

    // The resolved event carries the working days per stage.
    let events = c
        .list_events(req(
            pb::ListEventsRequest {
                after_sequence: 0,
                page_size: 100,
            },
            &h.service_token(),
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    let resolved = events
        .iter()
        .find(|e| e.r#type.ends_with("ComplaintResolved"))
        .expect("resolved event");
    let payload: pb::ComplaintResolved =
        prost::Message::decode(resolved.payload.as_ref().expect("payload").value.as_slice())
            .expect("decode");
    assert!(!payload.within_standard);
    assert_eq!(payload.stages.len(), 1);
    assert!(payload.working_days > 5);
    // ... and the late resolution counts as a breach of the response timeframe
    // (touchstone_complaint_timeframe_breaches_total{timeframe="respond"}).
    assert!(touchstone_complaints::metrics::missed_so_far().respond >= 1);
    h.stop().await;
}

#[tokio::test]
async fn learning_register() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let t = h.token("dia", OFFICER);
    let one = create(&mut c, &t, "dia", anonymous("Form crashed."), "")
        .await
        .expect("one");
    let two = create(&mut c, &t, "dia", anonymous("Form lost my data."), "")
        .await
        .expect("two");
    let issue = c
        .create_issue(req(
            pb::CreateIssueRequest {
                parent: "agencies/dia".into(),
                issue: Some(pb::Issue {
                    title: "Online form loses data".into(),
                    description: "Sessions time out after 10 minutes.".into(),
                    complaints: vec![one.name.clone(), two.name.clone()],
                    recommended_solution: "Save drafts every minute.".into(),
                    owner: "digital-services".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect("issue")
        .into_inner();
    assert_eq!(issue.state, pb::issue::State::Open as i32);
    assert_eq!(issue.complaints.len(), 2);
    let updated = c
        .update_issue(req(
            pb::UpdateIssueRequest {
                issue: Some(pb::Issue {
                    name: issue.name.clone(),
                    state: pb::issue::State::Actioned as i32,
                    etag: issue.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            },
            &t,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.state, pb::issue::State::Actioned as i32);
    assert_eq!(updated.title, "Online form loses data");
    let listed = c
        .list_issues(req(
            pb::ListIssuesRequest {
                parent: "agencies/dia".into(),
                filter: "state = ACTIONED".into(),
                ..Default::default()
            },
            &h.token("dia", &[Role::Analyst]),
        ))
        .await
        .expect("analyst reads the learning register")
        .into_inner();
    assert_eq!(listed.issues.len(), 1);
    let bad = c
        .create_issue(req(
            pb::CreateIssueRequest {
                parent: "agencies/dia".into(),
                issue: Some(pb::Issue {
                    title: "x".into(),
                    complaints: vec!["agencies/dia/complaints/missing".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("missing complaint");
    assert_eq!(violations(&bad), ["issue.complaints[0]"]);
    // A NUL in free text: PostgreSQL cannot store it and SQLite would, so both refuse it
    // before the store, on the field's path.
    let bad = c
        .create_issue(req(
            pb::CreateIssueRequest {
                parent: "agencies/dia".into(),
                issue: Some(pb::Issue {
                    title: "Form loses data".into(),
                    description: "Sessions\0time out.".into(),
                    complaints: vec![one.name.clone()],
                    ..Default::default()
                }),
                request_id: "issue-nul".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .expect_err("a NUL in the description");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violations(&bad), ["issue.description"]);
    h.stop().await;
}

#[tokio::test]
async fn historic_import_keeps_the_old_times() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let admin = h.token("dia", &[Role::AgencyAdmin]);
    use pb::historic_step::Action as A;
    let step = |action: A, at: &str| pb::HistoricStep {
        action: action as i32,
        time: Some(utc(at)),
        ..Default::default()
    };
    let mut complaint = anonymous("Historic: lost passport application.");
    complaint.receive_time = Some(utc("2026-03-02T09:00:00Z"));
    let request = pb::ImportComplaintRequest {
        parent: "agencies/dia".into(),
        complaint: Some(complaint.clone()),
        complaint_id: "cms-00042".into(),
        request_id: "import-CMS-00042".into(),
        steps: vec![
            step(A::Acknowledge, "2026-03-03T10:00:00Z"),
            step(A::Start, "2026-03-03T11:00:00Z"),
            step(A::AwaitClient, "2026-03-04T10:00:00Z"),
            step(A::Resume, "2026-03-10T10:00:00Z"),
            pb::HistoricStep {
                resolution: Some(pb::Resolution {
                    outcome: pb::Outcome::Upheld as i32,
                    remedies: vec![pb::Remedy::Apology as i32],
                    summary: "Apologised and re-issued.".into(),
                    ..Default::default()
                }),
                actor: "jsmith".into(),
                ..step(A::Resolve, "2026-03-12T10:00:00Z")
            },
            step(A::Close, "2026-03-13T10:00:00Z"),
        ],
    };
    let imported = c
        .import_complaint(req(request.clone(), &admin))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(imported.name, "agencies/dia/complaints/cms-00042");
    assert_eq!(imported.status, pb::Status::Closed as i32);
    assert_eq!(imported.etag, "1");
    // Received Monday 2 March (UTC calendar): acknowledged Tuesday 3 = day 1;
    // responded Thursday 12 with the clock stopped from Wednesday 4 to
    // Tuesday 10: counted days are 3, 10, 11, 12 → 4 working days of 5.
    let response = imported.response_clock.expect("clock");
    assert_eq!(response.used_days, 4);
    assert!(response.completed && !response.breached);
    let ack = imported.acknowledgement_clock.expect("clock");
    assert_eq!(ack.used_days, 1);
    assert_eq!(
        imported.resolution.expect("resolution").summary,
        "Apologised and re-issued."
    );
    // Re-running the import changes nothing.
    let again = c
        .import_complaint(req(request, &admin))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.name, imported.name);
    let history = c
        .list_complaint_history(req(
            pb::ListComplaintHistoryRequest {
                parent: imported.name.clone(),
            },
            &h.token("dia", OFFICER),
        ))
        .await
        .expect("history")
        .into_inner()
        .entries;
    assert_eq!(history.len(), 7);
    assert_eq!(history[5].actor, "jsmith");
    assert_eq!(history[5].time, Some(utc("2026-03-12T10:00:00Z")));
    assert_history_replays(&h, &imported.name).await;
    let types = event_types(&h, &mut c).await;
    assert_eq!(
        types,
        [
            "ComplaintReceived",
            "ComplaintAcknowledged",
            "ComplaintPaused",
            "ComplaintResumed",
            "ComplaintResolved",
            "ComplaintClosed"
        ]
    );
    // The resolved event is dated when it happened, not when it was imported.
    let events = c
        .list_events(req(
            pb::ListEventsRequest {
                after_sequence: 0,
                page_size: 10,
            },
            &h.service_token(),
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    let resolved: pb::ComplaintResolved = prost::Message::decode(
        events[4]
            .payload
            .as_ref()
            .expect("payload")
            .value
            .as_slice(),
    )
    .expect("decode");
    let facts = resolved.facts.expect("facts");
    assert_eq!(facts.event_date, Some(day(2026, 3, 12)));
    assert_eq!(resolved.working_days, 4);
    assert!(resolved.within_standard);

    // A step the transition table refuses names the step; nothing is created.
    let bad = c
        .import_complaint(req(
            pb::ImportComplaintRequest {
                parent: "agencies/dia".into(),
                complaint: Some(complaint.clone()),
                complaint_id: "cms-00043".into(),
                request_id: "import-CMS-00043".into(),
                steps: vec![
                    step(A::Acknowledge, "2026-03-03T10:00:00Z"),
                    step(A::Close, "2026-03-04T10:00:00Z"),
                ],
            },
            &admin,
        ))
        .await
        .expect_err("close before resolve");
    assert_eq!(violations(&bad), ["steps[1].action"]);
    let bad = c
        .import_complaint(req(
            pb::ImportComplaintRequest {
                parent: "agencies/dia".into(),
                complaint: Some(complaint.clone()),
                complaint_id: "cms-00044".into(),
                request_id: String::new(),
                steps: vec![step(A::Acknowledge, "2026-03-01T10:00:00Z")],
            },
            &admin,
        ))
        .await
        .expect_err("before receipt");
    assert_eq!(violations(&bad), ["steps[0].time"]);
    let missing = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: "agencies/dia/complaints/cms-00043".into(),
            },
            &h.token("dia", OFFICER),
        ))
        .await
        .expect_err("not created");
    assert_eq!(missing.code(), Code::NotFound);
    // Officers may not import.
    let no = c
        .import_complaint(req(
            pb::ImportComplaintRequest {
                parent: "agencies/dia".into(),
                complaint: Some(complaint),
                ..Default::default()
            },
            &h.token("dia", OFFICER),
        ))
        .await
        .expect_err("officer");
    assert_eq!(no.code(), Code::PermissionDenied);
    h.stop().await;
}

/// DESIGN §5, issue 11 item 3: two services in one process under one master
/// key (as `touchstone up` runs them) use the same agency, complaints first.
/// Each stores the data key it seals with in its own database, so after a
/// restart every record opens whichever service the agency touches first,
/// and request ids still replay their first response.
#[tokio::test]
async fn services_sharing_a_process_keep_their_data_keys_across_restarts() {
    let mut h = Harness::start_sharing_master().await;
    let officer = h.token("k", OFFICER);
    let mut c = h.client().await;
    let complaint = create(
        &mut c,
        &officer,
        "k",
        anonymous("The counter closed early."),
        "rq-complaint",
    )
    .await
    .expect("complaint");
    let new_client = || reg::CreateClientRequest {
        parent: "agencies/k".into(),
        client: Some(reg::Client {
            kind: reg::ClientKind::Person as i32,
            given_names: "Aroha".into(),
            family_name: "Ngata".into(),
            email: "aroha@example.org".into(),
            ..Default::default()
        }),
        request_id: "rq-client".into(),
        ..Default::default()
    };
    let mut r = h.register_client().await;
    let client = r
        .create_client(req(new_client(), &officer))
        .await
        .expect("client")
        .into_inner();
    // A history note and a contact summary: the other sealed columns.
    c.acknowledge_complaint(req(
        pb::AcknowledgeComplaintRequest {
            name: complaint.name.clone(),
            note: "Called back.".into(),
            ..Default::default()
        },
        &officer,
    ))
    .await
    .expect("acknowledge");
    c.create_contact(req(
        pb::CreateContactRequest {
            parent: complaint.name.clone(),
            contact: Some(pb::Contact {
                channel: Via::Phone as i32,
                direction: pb::contact::Direction::Outbound as i32,
                summary: "Explained the delay".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        },
        &officer,
    ))
    .await
    .expect("contact");

    h.restart_register().await;
    h.restart_complaints().await;

    // The register first: it decides nothing about complaints' key.
    let mut r = h.register_client().await;
    let read = r
        .get_client(req(
            reg::GetClientRequest {
                name: client.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("the client reads after the restart")
        .into_inner();
    assert_eq!(read.family_name, "Ngata");
    let replay = r
        .create_client(req(new_client(), &officer))
        .await
        .expect("the client's request id replays")
        .into_inner();
    assert_eq!(replay.name, client.name);
    let mut c = h.client().await;
    let read = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: complaint.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("the complaint reads after the restart")
        .into_inner();
    assert_eq!(read.description, "The counter closed early.");
    let replay = create(
        &mut c,
        &officer,
        "k",
        anonymous("The counter closed early."),
        "rq-complaint",
    )
    .await
    .expect("the complaint's request id replays");
    assert_eq!(replay.name, complaint.name);
    // The start-up check opens every sealed value of both databases with the
    // keys stored in each: its SQL builds the same associated data as the
    // stores (on this backend), and nothing needed copying.
    let stores = [
        keycheck::Store {
            service: "register",
            db: &h.register_db.db,
            sealed: touchstone_register::sealed_columns(),
        },
        keycheck::Store {
            service: "complaints",
            db: &h.store.db,
            sealed: touchstone_complaints::sealed_columns(),
        },
    ];
    let outcomes = keycheck::check_and_repair(&stores, &h.complaints_master, true)
        .await
        .expect("every sealed value opens");
    // Register: the client and its stored response. Complaints: the
    // complaint, its stored response, the note and the contact summary.
    assert_eq!(
        outcomes
            .iter()
            .map(|o| o.values_checked)
            .collect::<Vec<_>>(),
        [2, 4]
    );
    assert!(outcomes.iter().all(|o| o.keys_added.is_empty()));
    h.stop().await;
}

// ------------------------------------------- Get against List, on random histories

/// One random complaint history on a random calendar and standard.
#[derive(Debug, Clone)]
struct ClockCase {
    zone: usize,
    /// Bit `w - 1` set: ISO weekday `w` is weekend (never all seven).
    weekend: u8,
    /// Holidays, as days after the day of receipt (may fall before it).
    holidays: Vec<i64>,
    close_minute: i32,
    /// Acknowledge, frontline, investigation, internal review, external review.
    days: [i32; 5],
    /// Steps: a pick among the actions, and minutes after the previous step.
    steps: Vec<(u8, i64)>,
    /// Minutes between the last step and now.
    rest: i64,
    /// Where the random `due_time` bound falls, in minutes from now.
    bound: i64,
}

const ZONES: [&str; 10] = [
    "UTC",
    "Pacific/Auckland",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/Havana",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Europe/London",
    "America/St_Johns",
];

fn clock_case() -> impl proptest::strategy::Strategy<Value = ClockCase> {
    use proptest::prelude::*;
    const DAY: i64 = 24 * 60;
    (
        (
            0..ZONES.len(),
            0u8..127,
            proptest::collection::vec(-5i64..30, 0..6),
        ),
        prop_oneof![Just(0), 1i32..1440],
        proptest::array::uniform5(1i32..5),
        // Waiting on the client and resuming come up most, to stop clocks.
        proptest::collection::vec((0u8..14, 1i64..4 * DAY), 0..9),
        0i64..4 * DAY,
        -6 * DAY..6 * DAY,
    )
        .prop_map(
            |((zone, weekend, holidays), close_minute, days, steps, rest, bound)| ClockCase {
                zone,
                weekend,
                holidays,
                close_minute,
                days,
                steps,
                rest,
                bound,
            },
        )
}

/// The status table of docs/complaints.md, enough to pick legal steps.
fn next_step(
    status: pb::Status,
    stage: i32,
    pick: u8,
) -> Option<(pb::historic_step::Action, pb::Status)> {
    use pb::Status as S;
    use pb::historic_step::Action as A;
    let open = matches!(
        status,
        S::Received | S::Acknowledged | S::InProgress | S::AwaitingClient | S::Reopened
    );
    let (action, to) = match pick {
        0 | 1 => (A::Acknowledge, S::Acknowledged),
        2 | 3 => (A::Start, S::InProgress),
        4..=6 => (A::AwaitClient, S::AwaitingClient),
        7..=9 => (A::Resume, S::InProgress),
        10 => (A::Resolve, S::Resolved),
        11 => (A::Escalate, S::InProgress),
        12 => (A::Reopen, S::Reopened),
        _ => (A::Withdraw, S::Withdrawn),
    };
    let legal = match action {
        A::Acknowledge => matches!(status, S::Received | S::Reopened),
        A::Start => matches!(status, S::Acknowledged | S::Reopened),
        A::AwaitClient => status == S::InProgress,
        A::Resume => status == S::AwaitingClient,
        A::Resolve => matches!(
            status,
            S::Received | S::Acknowledged | S::InProgress | S::Reopened
        ),
        A::Escalate => (open || status == S::Resolved) && stage < 4,
        A::Reopen => matches!(status, S::Resolved | S::Closed),
        _ => open,
    };
    legal.then_some((action, to))
}

fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn stamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// What GetComplaint shows of the pending clock: its due time, and
/// whether it is running and breached (docs/complaints.md rules 4 and 5).
fn pending_of(c: &pb::Complaint) -> (Option<i64>, bool) {
    use pb::Status as S;
    let open = matches!(
        pb::Status::try_from(c.status).expect("status"),
        S::Received | S::Acknowledged | S::InProgress | S::AwaitingClient | S::Reopened
    );
    let ack = c.acknowledgement_clock.expect("clock");
    let pending = if ack.completed {
        c.response_clock.expect("clock")
    } else {
        ack
    };
    if !open {
        return (None, false);
    }
    (
        pending.due_time.as_ref().map(millis),
        !pending.stopped && pending.breached,
    )
}

async fn run_clock_case(h: &Harness, n: usize, case: ClockCase) -> Result<(), String> {
    let mut c = h.client().await;
    let agency = format!("clk{n}");
    let admin = h.token(&agency, ADMIN);
    let officer = h.token(&agency, OFFICER);
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let span: i64 = case.steps.iter().map(|s| s.1).sum::<i64>() + case.rest + 1;
    let receive = now_ms - span * 60_000;
    let receive_day = time::OffsetDateTime::from_unix_timestamp(receive / 1000)
        .expect("time")
        .date();
    let weekend: Vec<i32> = (1..=7)
        .filter(|w| case.weekend & (1 << (w - 1)) != 0)
        .collect();
    let holidays: Vec<Date> = case
        .holidays
        .iter()
        .map(|d| {
            let d = receive_day + time::Duration::days(*d);
            day(d.year(), i32::from(u8::from(d.month())), i32::from(d.day()))
        })
        .collect();
    c.create_calendar(req(
        pb::CreateCalendarRequest {
            parent: format!("agencies/{agency}"),
            calendar_id: "cal".into(),
            calendar: Some(pb::Calendar {
                display_name: "random".into(),
                time_zone: ZONES[case.zone].into(),
                weekend_days: weekend,
                holidays,
                close_minute: case.close_minute,
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .map_err(|e| format!("calendar: {e}"))?;
    c.update_complaint_standard(req(
        pb::UpdateComplaintStandardRequest {
            complaint_standard: Some(pb::ComplaintStandard {
                name: format!("agencies/{agency}/complaintStandard"),
                calendar: format!("agencies/{agency}/calendars/cal"),
                acknowledge_days: case.days[0],
                frontline_days: case.days[1],
                investigation_days: case.days[2],
                internal_review_days: case.days[3],
                external_review_days: case.days[4],
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .map_err(|e| format!("standard: {e}"))?;
    let (mut status, mut stage, mut at) = (pb::Status::Received, 1, receive);
    let mut steps = Vec::new();
    for (pick, gap) in &case.steps {
        at += gap * 60_000;
        let Some((action, to)) = next_step(status, stage, *pick) else {
            continue;
        };
        let mut step = pb::HistoricStep {
            action: action as i32,
            time: Some(stamp(at)),
            ..Default::default()
        };
        match action {
            pb::historic_step::Action::Resolve => {
                step.resolution = Some(pb::Resolution {
                    outcome: pb::Outcome::ResolvedEarly as i32,
                    ..Default::default()
                });
            }
            pb::historic_step::Action::Escalate => {
                stage += 1;
                if stage == 4 {
                    step.referral = Some(pb::Referral {
                        body: "Ombudsman".into(),
                        reference: "OMB-1".into(),
                        ..Default::default()
                    });
                }
            }
            _ => {}
        }
        steps.push(step);
        status = to;
    }
    let mut complaint = anonymous("A random history.");
    complaint.receive_time = Some(stamp(receive));
    let imported = c
        .import_complaint(req(
            pb::ImportComplaintRequest {
                parent: format!("agencies/{agency}"),
                complaint: Some(complaint),
                complaint_id: "x".into(),
                request_id: String::new(),
                steps,
            },
            &admin,
        ))
        .await
        .map_err(|e| format!("import: {e}"))?
        .into_inner();
    let get = |c: &mut ComplaintsServiceClient<Channel>| {
        let mut c = c.clone();
        let (name, officer) = (imported.name.clone(), officer.clone());
        async move {
            c.get_complaint(req(pb::GetComplaintRequest { name }, &officer))
                .await
                .map(|r| r.into_inner())
                .map_err(|e| format!("get: {e}"))
        }
    };
    let listed = |c: &mut ComplaintsServiceClient<Channel>, filter: String| {
        let mut c = c.clone();
        let (parent, officer) = (format!("agencies/{agency}"), officer.clone());
        async move {
            let r = c
                .list_complaints(req(
                    pb::ListComplaintsRequest {
                        parent,
                        filter: filter.clone(),
                        ..Default::default()
                    },
                    &officer,
                ))
                .await
                .map_err(|e| format!("list {filter}: {e}"))?
                .into_inner();
            Ok::<_, String>(!r.complaints.is_empty())
        }
    };
    let before = get(&mut c).await?;
    let (due, overdue) = pending_of(&before);
    let mut bounds = vec![now_ms + case.bound * 60_000];
    if let Some(d) = due {
        bounds.extend([d - 1, d, d + 1]);
    }
    let mut seen = Vec::new();
    for filter in ["overdue = true", "overdue = false"] {
        seen.push((filter.to_string(), listed(&mut c, filter.into()).await?));
    }
    for b in &bounds {
        for op in ["<", "<=", ">", ">=", "!="] {
            let f = format!("due_time {op} \"{}\"", rfc3339(*b));
            seen.push((f.clone(), listed(&mut c, f).await?));
        }
    }
    let summary = c
        .summarize_complaints(req(
            pb::SummarizeComplaintsRequest {
                parent: format!("agencies/{agency}"),
            },
            &officer,
        ))
        .await
        .map_err(|e| format!("summarize: {e}"))?
        .into_inner();
    let after = get(&mut c).await?;
    let ctx = || format!("{case:?}\nbefore {before:?}\nafter {after:?}");
    // SummarizeComplaints counts what the list shows (the agency holds this
    // complaint only).
    let is_open = |g: &pb::Complaint| {
        matches!(
            pb::Status::try_from(g.status),
            Ok(pb::Status::Received
                | pb::Status::Acknowledged
                | pb::Status::InProgress
                | pb::Status::AwaitingClient
                | pb::Status::Reopened)
        )
    };
    let open: i64 = summary.tallies.iter().map(|t| t.open).sum();
    let late: i64 = summary.tallies.iter().map(|t| t.overdue).sum();
    if open != i64::from(is_open(&after))
        || (pending_of(&after).1 == overdue && late != i64::from(overdue && is_open(&after)))
    {
        return Err(format!(
            "SummarizeComplaints says {open} open, {late} overdue: {}",
            ctx()
        ));
    }
    // Rules 4-5 hold through time: what is due does not move while nothing happens.
    if pending_of(&after).0 != due {
        return Err(format!("due time moved: {}", ctx()));
    }
    for g in [&before, &after] {
        let (d, o) = pending_of(g);
        if g.due_time.as_ref().map(millis) != d || g.overdue != o {
            return Err(format!(
                "due_time/overdue differ from the clocks: {}",
                ctx()
            ));
        }
    }
    // Overdue only changes forwards; the list is compared when it held throughout.
    let stable = pending_of(&after).1 == overdue;
    for (filter, found) in seen {
        let expected = if filter == "overdue = true" {
            if !stable {
                continue;
            }
            overdue
        } else if filter == "overdue = false" {
            if !stable {
                continue;
            }
            !overdue
        } else {
            let (op, rest) = filter
                .trim_start_matches("due_time ")
                .split_once(' ')
                .expect("op");
            let b = bounds
                .iter()
                .copied()
                .find(|b| rest.trim_matches('"') == rfc3339(*b))
                .expect("bound");
            match (op, due) {
                ("!=", None) => true,
                (_, None) => false,
                ("<", Some(d)) => d < b,
                ("<=", Some(d)) => d <= b,
                (">", Some(d)) => d > b,
                (">=", Some(d)) => d >= b,
                (_, Some(d)) => d != b,
            }
        };
        if found != expected {
            return Err(format!(
                "List {filter:?} found it: {found}, GetComplaint says {expected}: {}",
                ctx()
            ));
        }
    }
    Ok(())
}

/// GetComplaint and the list filters (`overdue`, `due_time` ranges) agree on
/// random histories imported through the real service, on random calendars.
#[test]
fn get_and_list_agree_on_random_clock_histories() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(Harness::start());
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&clock_case(), |case| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rt.block_on(run_clock_case(&h, n, case))
            .map_err(TestCaseError::fail)
    });
    rt.block_on(h.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The case of issue 12: due on one day, paused on the first working day
/// after it and resumed on a non-working day is not overdue until another
/// working day is counted — in Get and in List alike. Built around today
/// (T) with a calendar whose weekend is T and the day before, so the test
/// means the same on any day it runs.
#[tokio::test]
async fn a_pause_after_the_due_day_delays_overdue_in_get_and_list() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let officer = h.token("dia", OFFICER);
    let admin = h.token("dia", ADMIN);
    use pb::historic_step::Action as A;
    let today = time::OffsetDateTime::now_utc().date();
    let ago = |n: i64| today - time::Duration::days(n);
    let at = |d: time::Date, h: u8| {
        stamp(
            d.with_hms(h, 0, 0)
                .expect("hms")
                .assume_utc()
                .unix_timestamp()
                * 1000,
        )
    };
    let iso = |d: time::Date| i32::from(d.weekday().number_from_monday());
    c.create_calendar(req(
        pb::CreateCalendarRequest {
            parent: "agencies/dia".into(),
            calendar_id: "t".into(),
            calendar: Some(pb::Calendar {
                display_name: "weekend today".into(),
                time_zone: "UTC".into(),
                weekend_days: vec![iso(today), iso(ago(1))],
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .expect("calendar");
    c.update_complaint_standard(req(
        pb::UpdateComplaintStandardRequest {
            complaint_standard: Some(pb::ComplaintStandard {
                name: "agencies/dia/complaintStandard".into(),
                calendar: "agencies/dia/calendars/t".into(),
                frontline_days: 1,
                ..Default::default()
            }),
        },
        &admin,
    ))
    .await
    .expect("standard");
    let step = |action: A, t| pb::HistoricStep {
        action: action as i32,
        time: Some(t),
        ..Default::default()
    };
    // Received T-4; day 1 (the due day) T-3; T-2, the first working day
    // after it, paused from 09:00 until T-1 00:00 (not a working day).
    let mut complaint = anonymous("Paused after its due day.");
    complaint.receive_time = Some(at(ago(4), 10));
    let imported = c
        .import_complaint(req(
            pb::ImportComplaintRequest {
                parent: "agencies/dia".into(),
                complaint: Some(complaint),
                complaint_id: "late-pause".into(),
                request_id: String::new(),
                steps: vec![
                    step(A::Acknowledge, at(ago(4), 11)),
                    step(A::Start, at(ago(4), 11)),
                    step(A::AwaitClient, at(ago(2), 9)),
                    step(A::Resume, at(ago(1), 0)),
                ],
            },
            &admin,
        ))
        .await
        .expect("import")
        .into_inner();
    let got = c
        .get_complaint(req(
            pb::GetComplaintRequest {
                name: imported.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    let resp = got.response_clock.expect("clock");
    assert_eq!(
        (resp.used_days, resp.breached, resp.stopped),
        (1, false, false)
    );
    assert_eq!(resp.due_time, Some(at(ago(2), 0)));
    assert_eq!((got.due_time, got.overdue), (resp.due_time, false));
    let list = |filter: &str| {
        let mut c = c.clone();
        let r = req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                filter: filter.into(),
                ..Default::default()
            },
            &officer,
        );
        async move {
            c.list_complaints(r)
                .await
                .expect("list")
                .into_inner()
                .complaints
                .len()
        }
    };
    assert_eq!(list("overdue = true").await, 0);
    assert_eq!(list("overdue = false").await, 1);
    // Past its due time all the same, as Get shows.
    let now = rfc3339((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64);
    assert_eq!(list(&format!("due_time < \"{now}\"")).await, 1);
    h.stop().await;
}

/// The basic view of a list returns a complaint's handling and nothing about
/// who complained or what they wrote, and is not an audited read; the full
/// view (the default) is audited once per complaint; an unknown view is
/// INVALID_ARGUMENT naming `view`.
#[tokio::test]
async fn the_basic_view_reads_no_personal_data_and_is_not_audited() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let officer = h.token("dia", OFFICER);
    let intake = h.token("dia", &[Role::Intake]);
    let mut contact = anonymous("My passport took four months; call me on 0400 000 000.");
    contact.complainant = Some(pb::Complainant {
        who: Some(pb::complainant::Who::Contact(pb::ContactDetails {
            display_name: "Mere Tane".into(),
            email: "mere@example.org".into(),
            phone: String::new(),
        })),
    });
    contact.remedy_sought = "An apology".into();
    create(&mut c, &intake, "dia", contact, "")
        .await
        .expect("create");
    let audited = || async {
        let mut tx = h
            .store
            .db
            .read(touchstone_platform::db::Scope::Agency("dia"))
            .await
            .expect("tx");
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records WHERE action = 'ListComplaints'",
        )
        .fetch_one(tx.conn())
        .await
        .expect("count");
        tx.commit().await.expect("commit");
        n
    };
    let list = |view: i32| {
        req(
            pb::ListComplaintsRequest {
                parent: "agencies/dia".into(),
                view,
                ..Default::default()
            },
            &officer,
        )
    };
    let before = audited().await;
    let basic = c
        .list_complaints(list(pb::ComplaintView::Basic as i32))
        .await
        .expect("basic")
        .into_inner();
    let b = &basic.complaints[0];
    assert!(b.complainant.is_none());
    assert!(b.description.is_empty() && b.remedy_sought.is_empty());
    assert_eq!(
        (b.unit.as_str(), b.category.as_str()),
        ("passports-north", "delay")
    );
    assert!(b.response_clock.is_some() && b.due_time.is_some());
    assert_eq!(audited().await, before, "a basic list was audited");
    let full = c
        .list_complaints(list(pb::ComplaintView::Unspecified as i32))
        .await
        .expect("full")
        .into_inner();
    let f = &full.complaints[0];
    assert_eq!(f.remedy_sought, "An apology");
    assert!(f.complainant.is_some());
    assert_eq!(
        (f.name.as_str(), f.stage, f.due_time),
        (b.name.as_str(), b.stage, b.due_time)
    );
    assert_eq!(audited().await, before + 1);
    let e = c.list_complaints(list(9)).await.expect_err("unknown view");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(violations(&e), vec!["view"]);
}
