//! The feedback service through its real gRPC API: the feedback server and
//! the client register, each on 127.0.0.1:0 over its own fresh database
//! (SQLite, or PostgreSQL when TOUCHSTONE_TEST_PG_URL is set), called with
//! the generated clients and real tokens; the feedback service reaches the
//! register over gRPC with its own service token, as in production.

use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use touchstone_api::common::v1::{Channel as Via, Date};
use touchstone_api::feedback::v1 as pb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::{AuthConfig, DevKey, Role, ServiceToken, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_feedback::peers::{self, Eraser, REGISTER_FEED};
use touchstone_platform::consumer::{self, ConsumeError};
use touchstone_platform::testing::{self, TestDb};

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
        db: touchstone_platform::db::Db,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let readiness: touchstone_server::Readiness = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        });
        let mut opts = touchstone_server::ServeOptions::new(name, vec![grpc]);
        opts.shutdown_grace = Duration::from_secs(1);
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

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

struct Harness {
    dev: DevKey,
    _dir: tempfile::TempDir,
    store: TestDb,
    _register_store: TestDb,
    feedback: Server,
    register: Server,
    register_channel: Channel,
    register_addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn verifier(dev: &DevKey) -> Arc<Verifier> {
    Verifier::from_jwks_json(
        AuthConfig {
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
            jwks_file: None,
            jwks_url: None,
            leeway_secs: 0,
        },
        &dev.jwks_json(),
    )
    .expect("verifier")
}

impl Harness {
    async fn start() -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = DevKey::load_or_create(dir.path()).expect("dev key");

        let register_store = testing::fresh(&touchstone_register::migration_sets()).await;
        let register_routes = touchstone_register::routes(
            register_store.db.clone(),
            MasterKey::generate(),
            verifier(&dev),
        );
        let register = Server::start(
            "register",
            touchstone_register::SERVICE_NAME,
            register_routes,
            register_store.db.clone(),
        )
        .await;
        let register_channel = connect(register.addr).await;

        let store = testing::fresh(&touchstone_feedback::migration_sets()).await;
        let service_token = ServiceToken::Fixed(mint_service(&dev));
        let peers = touchstone_feedback::Peers {
            register: peer(register.addr),
            token: service_token,
        };
        let (routes, tasks) = touchstone_feedback::start(
            store.db.clone(),
            MasterKey::generate(),
            verifier(&dev),
            peers,
        );
        let feedback = Server::start(
            "feedback",
            touchstone_feedback::SERVICE_NAME,
            routes,
            store.db.clone(),
        )
        .await;
        Harness {
            dev,
            _dir: dir,
            store,
            _register_store: register_store,
            feedback,
            register_addr: register.addr,
            register,
            register_channel,
            tasks,
        }
    }

    async fn client(&self) -> FeedbackServiceClient<Channel> {
        FeedbackServiceClient::new(connect(self.feedback.addr).await)
    }

    fn register_client(&self) -> RegisterServiceClient<Channel> {
        RegisterServiceClient::new(self.register_channel.clone())
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
        mint_service(&self.dev)
    }

    /// Applies the register's feed now. The background consumer may be
    /// applying it at the same time; whichever moves the cursor first wins.
    async fn consume_register_feed(&self) {
        let source = peers::Register::new(
            peer(self.register_addr),
            ServiceToken::Fixed(self.service_token()),
        );
        for _ in 0..50 {
            match consumer::catch_up(&self.store.db, REGISTER_FEED, &source, &Eraser).await {
                Ok(_) => return,
                Err(ConsumeError::Overtaken) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("consuming the register feed: {e}"),
            }
        }
        panic!("could not catch up with the register feed");
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.feedback.stop().await;
        self.register.stop().await;
    }
}

fn mint_service(dev: &DevKey) -> String {
    dev.mint(&TokenRequest {
        subject: "feedback".into(),
        agency: None,
        agencies: Some(vec!["*".into()]),
        roles: vec![Role::Service],
        ttl: Duration::from_secs(600),
        issuer: DevKey::ISSUER.into(),
        audience: DevKey::AUDIENCE.into(),
    })
    .expect("mint")
}

/// The register as the feedback service reaches it.
fn peer(addr: std::net::SocketAddr) -> touchstone_server::peer::Balanced {
    touchstone_server::peer::Balanced::connect(&format!("http://{addr}"), Default::default())
        .expect("peer")
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

const ADMIN: &[Role] = &[Role::AgencyAdmin];
const OFFICER: &[Role] = &[Role::Officer];
const SENIOR: &[Role] = &[Role::SeniorOfficer];
const ANALYST: &[Role] = &[Role::Analyst];
const INTAKE: &[Role] = &[Role::Intake];

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

fn question(key: &str, kind: pb::QuestionKind, required: bool) -> pb::Question {
    pb::Question {
        key: key.into(),
        text: format!("Question {key}?"),
        kind: kind as i32,
        required,
        ..Default::default()
    }
}

fn choices(keys: &[&str]) -> Vec<pb::Choice> {
    keys.iter()
        .map(|k| pb::Choice {
            key: (*k).into(),
            label: k.to_uppercase(),
        })
        .collect()
}

/// A survey with one question of every kind.
fn every_kind() -> pb::Survey {
    use pb::QuestionKind as K;
    pb::Survey {
        title: "Every kind".into(),
        touchpoint: Some(pb::Touchpoint {
            service: "licensing".into(),
            unit: "north".into(),
            channel: Via::InPerson as i32,
            stage: "renewal".into(),
        }),
        questions: vec![
            pb::Question {
                standard_item: pb::StandardItem::A11Satisfaction as i32,
                ..question("agree", K::Agreement5, true)
            },
            pb::Question {
                standard_item: pb::StandardItem::Csat as i32,
                ..question("csat", K::Satisfaction5, false)
            },
            pb::Question {
                standard_item: pb::StandardItem::Nps as i32,
                ..question("nps", K::Likelihood11, false)
            },
            pb::Question {
                standard_item: pb::StandardItem::Ces as i32,
                ..question("ces", K::Effort7, false)
            },
            question("resolved", K::YesNo, false),
            pb::Question {
                choices: choices(&["web", "phone", "counter"]),
                ..question("how", K::SingleChoice, false)
            },
            pb::Question {
                choices: choices(&["forms", "fees", "hours"]),
                ..question("topics", K::MultipleChoice, false)
            },
            question("comment", K::FreeText, false),
        ],
        follow_up_rules: vec![
            pb::FollowUpRule {
                question_key: "agree".into(),
                score_at_most: 2,
                ..Default::default()
            },
            pb::FollowUpRule {
                negative_sentiment: true,
                ..Default::default()
            },
        ],
        topic_rules: vec![pb::TopicRule {
            topic: "parking".into(),
            keywords: vec!["car park".into(), "parking".into()],
        }],
        ..Default::default()
    }
}

async fn create_published(
    c: &mut FeedbackServiceClient<Channel>,
    admin: &str,
    agency: &str,
    survey: pb::Survey,
) -> pb::Survey {
    let created = c
        .create_survey(req(
            pb::CreateSurveyRequest {
                parent: format!("agencies/{agency}"),
                survey: Some(survey),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("create survey")
        .into_inner();
    c.publish_survey(req(
        pb::PublishSurveyRequest {
            name: created.name.clone(),
            ..Default::default()
        },
        admin,
    ))
    .await
    .expect("publish")
    .into_inner()
}

fn score(key: &str, s: i32) -> pb::Answer {
    pb::Answer {
        question_key: key.into(),
        score: Some(s),
        ..Default::default()
    }
}

fn text(key: &str, t: &str) -> pb::Answer {
    pb::Answer {
        question_key: key.into(),
        text: t.into(),
        ..Default::default()
    }
}

async fn submit(
    c: &mut FeedbackServiceClient<Channel>,
    token: &str,
    survey: &str,
    response: pb::Response,
) -> Result<pb::Response, Status> {
    c.submit_response(req(
        pb::SubmitResponseRequest {
            parent: survey.into(),
            response: Some(response),
            ..Default::default()
        },
        token,
    ))
    .await
    .map(|r| r.into_inner())
}

async fn events(
    h: &Harness,
    c: &mut FeedbackServiceClient<Channel>,
) -> Vec<touchstone_api::common::v1::Event> {
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
}

fn decode<M: Message + Default>(e: &touchstone_api::common::v1::Event) -> M {
    M::decode(e.payload.as_ref().expect("payload").value.as_slice()).expect("decode")
}

/// Creates a client in the register, granting the given consents.
async fn register_client(h: &Harness, agency: &str, consents: &[reg::ConsentPurpose]) -> String {
    let officer = h.token(agency, OFFICER);
    let mut r = h.register_client();
    let client = r
        .create_client(req(
            reg::CreateClientRequest {
                parent: format!("agencies/{agency}"),
                client: Some(reg::Client {
                    kind: reg::ClientKind::Person as i32,
                    given_names: "Aroha".into(),
                    family_name: "Ngata".into(),
                    email: "aroha@example.org".into(),
                    characteristics: Some(reg::Characteristics {
                        age_band: reg::AgeBand::AgeBand3544 as i32,
                        gender: reg::Gender::Woman as i32,
                        disability: reg::Answer::No as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("create client")
        .into_inner();
    for purpose in consents {
        r.grant_consent(req(
            reg::GrantConsentRequest {
                name: client.name.clone(),
                purpose: *purpose as i32,
                source: "web form".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("grant consent");
    }
    client.name
}

#[tokio::test]
async fn surveys_life_cycle_versions_and_templates() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let admin = h.token("dia", ADMIN);

    // Every bad field is named at once.
    let mut bad = every_kind();
    bad.title = String::new();
    bad.questions[1].kind = pb::QuestionKind::Agreement5 as i32; // CSAT is asked on the satisfaction scale
    bad.questions[5].choices.truncate(1);
    bad.questions
        .push(question("agree", pb::QuestionKind::YesNo, false));
    bad.follow_up_rules[0].score_at_most = 9;
    let err = c
        .create_survey(req(
            pb::CreateSurveyRequest {
                parent: "agencies/dia".into(),
                survey: Some(bad),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violations(&err);
    for f in [
        "survey.title",
        "survey.questions[1].kind",
        "survey.questions[5].choices",
        "survey.questions[8].key",
        "survey.follow_up_rules[0].score_at_most",
    ] {
        assert!(
            fields.contains(&f.to_string()),
            "{f} missing from {fields:?}"
        );
    }

    // Only an agency admin manages surveys.
    let denied = c
        .create_survey(req(
            pb::CreateSurveyRequest {
                parent: "agencies/dia".into(),
                survey: Some(every_kind()),
                ..Default::default()
            },
            &h.token("dia", OFFICER),
        ))
        .await
        .expect_err("officer");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let draft = c
        .create_survey(req(
            pb::CreateSurveyRequest {
                parent: "agencies/dia".into(),
                survey: Some(every_kind()),
                survey_id: "kinds".into(),
                request_id: "create-kinds".into(),
            },
            &admin,
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(draft.name, "agencies/dia/surveys/kinds");
    assert_eq!(draft.state, pb::SurveyState::Draft as i32);
    assert_eq!(draft.version, 1);

    // A draft takes no responses.
    let err = submit(
        &mut c,
        &h.token("dia", INTAKE),
        &draft.name,
        pb::Response {
            answers: vec![score("agree", 4)],
            ..Default::default()
        },
    )
    .await
    .expect_err("draft");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SURVEY_NOT_PUBLISHED");

    // A draft's questions change freely.
    let mut patch = draft.clone();
    patch
        .questions
        .push(question("extra", pb::QuestionKind::YesNo, false));
    let updated = c
        .update_survey(req(
            pb::UpdateSurveyRequest {
                survey: Some(patch),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["questions".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("update draft")
        .into_inner();
    assert_eq!(updated.questions.len(), 9);

    let published = c
        .publish_survey(req(
            pb::PublishSurveyRequest {
                name: draft.name.clone(),
                etag: updated.etag.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.state, pb::SurveyState::Published as i32);
    assert!(published.publish_time.is_some());

    // A published survey's questions never change; its title may.
    let mut patch = published.clone();
    patch.questions[0].text = "Changed?".into();
    let err = c
        .update_survey(req(
            pb::UpdateSurveyRequest {
                survey: Some(patch),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("frozen");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SURVEY_PUBLISHED");
    let mut patch = published.clone();
    patch.title = "Renamed".into();
    let renamed = c
        .update_survey(req(
            pb::UpdateSurveyRequest {
                survey: Some(patch),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("rename")
        .into_inner();
    assert_eq!(renamed.title, "Renamed");

    // Publishing twice is an illegal transition; a stale etag is ABORTED.
    let err = c
        .publish_survey(req(
            pb::PublishSurveyRequest {
                name: draft.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("twice");
    assert_eq!(reason(&err), "INVALID_TRANSITION");
    let err = c
        .close_survey(req(
            pb::CloseSurveyRequest {
                name: draft.name.clone(),
                etag: published.etag.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("stale");
    assert_eq!(err.code(), Code::Aborted);

    // A new version is a new draft survey with the same questions.
    let v2 = c
        .create_survey_version(req(
            pb::CreateSurveyVersionRequest {
                name: draft.name.clone(),
                survey_id: "kinds-v2".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("version")
        .into_inner();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.previous_version, draft.name);
    assert_eq!(v2.state, pb::SurveyState::Draft as i32);
    assert_eq!(v2.questions, renamed.questions);

    // A response accepted while the survey was open...
    let before_close = pb::SubmitResponseRequest {
        parent: draft.name.clone(),
        response: Some(pb::Response {
            answers: vec![score("agree", 5)],
            ..Default::default()
        }),
        request_id: "submitted-before-close".into(),
    };
    let first = c
        .submit_response(req(before_close.clone(), &h.token("dia", INTAKE)))
        .await
        .expect("submit while open")
        .into_inner();
    let closed = c
        .close_survey(req(
            pb::CloseSurveyRequest {
                name: draft.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("close")
        .into_inner();
    assert_eq!(closed.state, pb::SurveyState::Closed as i32);
    // ...is still its answer when retried after the survey closed.
    let retried = c
        .submit_response(req(before_close, &h.token("dia", INTAKE)))
        .await
        .expect("retry after close")
        .into_inner();
    assert_eq!(retried, first);
    let err = submit(
        &mut c,
        &h.token("dia", INTAKE),
        &draft.name,
        pb::Response {
            answers: vec![score("agree", 4)],
            ..Default::default()
        },
    )
    .await
    .expect_err("closed");
    assert_eq!(reason(&err), "SURVEY_NOT_PUBLISHED");

    // Templates: A-11, CSAT, NPS and CES in one call, idempotently.
    let templates = pb::CreateTemplateSurveysRequest {
        parent: "agencies/dia".into(),
        touchpoint: Some(pb::Touchpoint {
            service: "passports".into(),
            channel: Via::Web as i32,
            ..Default::default()
        }),
        request_id: "templates-1".into(),
        ..Default::default()
    };
    let made = c
        .create_template_surveys(req(templates.clone(), &admin))
        .await
        .expect("templates")
        .into_inner();
    let again = c
        .create_template_surveys(req(templates, &admin))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(made, again);
    assert_eq!(made.surveys.len(), 4);
    let items: Vec<Vec<i32>> = made
        .surveys
        .iter()
        .map(|s| {
            s.questions
                .iter()
                .map(|q| q.standard_item)
                .filter(|i| *i != 0)
                .collect()
        })
        .collect();
    // The seven older A-11 items, then the FY2024 positive and negative drivers.
    assert_eq!(items[0], (1..=7).chain([12, 13]).collect::<Vec<i32>>());
    assert_eq!(items[1], vec![pb::StandardItem::Csat as i32]);
    assert_eq!(items[2], vec![pb::StandardItem::Nps as i32]);
    assert_eq!(items[3], vec![pb::StandardItem::Ces as i32]);
    assert_eq!(
        made.surveys[2].questions[0].kind,
        pb::QuestionKind::Likelihood11 as i32
    );

    // Listing with a filter; analysts read survey definitions.
    let listed = c
        .list_surveys(req(
            pb::ListSurveysRequest {
                parent: "agencies/dia".into(),
                filter: "state = DRAFT AND touchpoint.service = \"passports\"".into(),
                ..Default::default()
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.surveys.len(), 4);
    let err = c
        .list_surveys(req(
            pb::ListSurveysRequest {
                parent: "agencies/dia".into(),
                filter: "colour = \"red\"".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("unknown field");
    assert_eq!(err.code(), Code::InvalidArgument);
    // Intake may only submit.
    let err = c
        .get_survey(req(
            pb::GetSurveyRequest {
                name: draft.name.clone(),
            },
            &h.token("dia", INTAKE),
        ))
        .await
        .expect_err("intake reads");
    assert_eq!(err.code(), Code::PermissionDenied);

    let published_events: Vec<pb::SurveyPublished> = events(&h, &mut c)
        .await
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.SurveyPublished")
        .map(decode)
        .collect();
    assert_eq!(published_events.len(), 1);
    assert_eq!(published_events[0].items.len(), 4);
    h.stop().await;
}

#[tokio::test]
async fn every_answer_is_validated_against_its_question() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let intake = h.token("dia", INTAKE);

    let bad = pb::Response {
        answers: vec![
            score("csat", 6), // 0: out of range
            score("nps", -1), // 1: out of range
            score("ces", 4),  // 2: fine
            pb::Answer {
                question_key: "resolved".into(),
                score: Some(1),
                ..Default::default()
            }, // 3: yes/no needs `yes`, not a score
            pb::Answer {
                question_key: "how".into(),
                choices: vec!["web".into(), "phone".into()],
                ..Default::default()
            }, // 4: single choice, two chosen
            pb::Answer {
                question_key: "topics".into(),
                choices: vec!["forms".into(), "parking".into(), "forms".into()],
                ..Default::default()
            }, // 5: unknown and repeated choice
            text("comment", &"x".repeat(5001)), // 6: too long
            score("nope", 3), // 7: no such question
            score("ces", 5),  // 8: answered twice
        ],
        channel: 99,
        ..Default::default()
    };
    let err = submit(&mut c, &intake, &survey.name, bad)
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violations(&err);
    let want = [
        "response.answers[0].score",
        "response.answers[1].score",
        "response.answers[3].yes",
        "response.answers[3].score",
        "response.answers[4].choices",
        "response.answers[5].choices[1]",
        "response.answers[5].choices[2]",
        "response.answers[6].text",
        "response.answers[7].question_key",
        "response.answers[8].question_key",
        "response.answers", // the required "agree" is missing
        "response.channel",
    ];
    for f in want {
        assert!(
            fields.contains(&f.to_string()),
            "{f} missing from {fields:?}"
        );
    }
    assert!(
        !fields.iter().any(|f| f == "response.answers[2].score"),
        "{fields:?}"
    );
    // No personal data (the comment) in the error.
    assert!(!err.message().contains("xxxxx"));

    // Too many answers is refused before anything else.
    let many = pb::Response {
        answers: (0..101).map(|_| score("agree", 3)).collect(),
        ..Default::default()
    };
    let err = submit(&mut c, &intake, &survey.name, many)
        .await
        .expect_err("too many");
    assert_eq!(violations(&err), vec!["response.answers".to_string()]);

    // A future submit time is refused; a client of another agency too.
    let err = submit(
        &mut c,
        &intake,
        &survey.name,
        pb::Response {
            answers: vec![score("agree", 3)],
            submit_time: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            client: "agencies/other/clients/c1".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("future");
    let fields = violations(&err);
    assert!(
        fields.contains(&"response.submit_time".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"response.client".to_string()),
        "{fields:?}"
    );

    // A good response of every kind.
    let good = submit(
        &mut c,
        &intake,
        &survey.name,
        pb::Response {
            answers: vec![
                score("agree", 4),
                score("csat", 5),
                score("nps", 0),
                score("ces", 7),
                pb::Answer {
                    question_key: "resolved".into(),
                    yes: Some(true),
                    ..Default::default()
                },
                pb::Answer {
                    question_key: "how".into(),
                    choices: vec!["counter".into()],
                    ..Default::default()
                },
                pb::Answer {
                    question_key: "topics".into(),
                    choices: vec!["forms".into(), "hours".into()],
                    ..Default::default()
                },
                text("comment", "Friendly staff, but the car park was full."),
            ],
            ..Default::default()
        },
    )
    .await
    .expect("good");
    assert!(
        good.name
            .starts_with(&format!("{}/responses/", survey.name))
    );
    // Channel and unit default to the survey's touchpoint.
    assert_eq!(good.channel, Via::InPerson as i32);
    assert_eq!(good.unit, "north");
    let comment = &good.answers[7];
    assert_eq!(
        comment.topics,
        vec!["parking".to_string(), "staff_attitude".to_string()]
    );
    assert!(comment.sentiment > 0.0);
    h.stop().await;
}

#[tokio::test]
async fn one_response_per_transaction_and_request_ids_replay() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let other = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let intake = h.token("dia", INTAKE);
    // A submission is one request (`change::write_new`: the agency's data
    // key is cached by now); a replay, a reused request id and a repeated
    // transaction each clash in it and are told apart the usual way. Twice,
    // so that the second round meets the first's rows too.
    for round in 0..2 {
        let response = pb::Response {
            answers: vec![score("agree", 5)],
            transaction_id: format!("TXN-42-{round}"),
            ..Default::default()
        };
        let request = pb::SubmitResponseRequest {
            parent: survey.name.clone(),
            response: Some(response.clone()),
            request_id: format!("r-1-{round}"),
        };
        let first = c
            .submit_response(req(request.clone(), &intake))
            .await
            .expect("first")
            .into_inner();
        // The same request again is a replay, not a duplicate.
        let replay = c
            .submit_response(req(request.clone(), &intake))
            .await
            .expect("replay")
            .into_inner();
        assert_eq!(first, replay, "round {round}");
        // The same request id with another body is refused.
        let mut reused = request.clone();
        reused.response = Some(pb::Response {
            answers: vec![score("agree", 1)],
            ..response.clone()
        });
        let err = c
            .submit_response(req(reused, &intake))
            .await
            .expect_err("reused request id");
        assert_eq!(err.code(), Code::InvalidArgument, "round {round}");
        // Another submission for the same transaction is refused...
        let err = submit(&mut c, &intake, &survey.name, response.clone())
            .await
            .expect_err("duplicate");
        assert_eq!(err.code(), Code::AlreadyExists, "round {round}");
        // ...but the same transaction id in another survey is fine.
        submit(&mut c, &intake, &other.name, response)
            .await
            .expect("other survey");
        let listed = c
            .list_responses(req(
                pb::ListResponsesRequest {
                    parent: "agencies/dia/surveys/-".into(),
                    ..Default::default()
                },
                &h.token("dia", OFFICER),
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.responses.len(), 2 * (round + 1), "round {round}");
        let submitted = events(&h, &mut c)
            .await
            .iter()
            .filter(|e| e.r#type == "touchstone.feedback.v1.ResponseSubmitted")
            .count();
        assert_eq!(submitted, 2 * (round + 1), "round {round}");
    }
    h.stop().await;
}

#[tokio::test]
async fn clients_are_linked_only_with_consent() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let intake = h.token("dia", INTAKE);
    let officer = h.token("dia", OFFICER);

    let without = register_client(&h, "dia", &[]).await;
    let linked_only = register_client(&h, "dia", &[reg::ConsentPurpose::FeedbackSurveys]).await;
    let both = register_client(
        &h,
        "dia",
        &[
            reg::ConsentPurpose::FeedbackSurveys,
            reg::ConsentPurpose::Statistics,
        ],
    )
    .await;

    let answer = |client: &str| pb::Response {
        answers: vec![score("agree", 4)],
        client: client.into(),
        ..Default::default()
    };
    // No consent: stored, but anonymously.
    let r = submit(&mut c, &intake, &survey.name, answer(&without))
        .await
        .expect("anonymous");
    let got = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.client, "");
    assert!(got.characteristics.is_none());

    // Consent to feedback surveys: linked, no characteristics.
    let r = submit(&mut c, &intake, &survey.name, answer(&linked_only))
        .await
        .expect("linked");
    let got = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.client, linked_only);
    assert!(got.characteristics.is_none());

    // And to statistics: the characteristics are snapshotted.
    let r = submit(&mut c, &intake, &survey.name, answer(&both))
        .await
        .expect("both");
    let got = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.client, both);
    let ch = got.characteristics.expect("snapshot");
    assert_eq!(ch.age_band, reg::AgeBand::AgeBand3544 as i32);
    assert_eq!(ch.gender, reg::Gender::Woman as i32);

    // An analyst sees neither the client nor the characteristics.
    let seen = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect("analyst")
        .into_inner();
    assert_eq!(seen.client, "");
    assert!(seen.characteristics.is_none());

    // An unknown client is a bad request, naming the field.
    let err = submit(
        &mut c,
        &intake,
        &survey.name,
        answer("agencies/dia/clients/nobody"),
    )
    .await
    .expect_err("unknown client");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["response.client".to_string()]);

    // The KPI event carries the segment only with consent, and never the client.
    let submitted: Vec<pb::ResponseSubmitted> = events(&h, &mut c)
        .await
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.ResponseSubmitted")
        .map(decode)
        .collect();
    assert_eq!(submitted.len(), 3);
    assert!(submitted[0].anonymous && submitted[0].segment.is_none());
    assert!(!submitted[1].anonymous && submitted[1].segment.is_none());
    assert_eq!(
        submitted[2].segment.map(|s| s.age_band),
        Some(reg::AgeBand::AgeBand3544 as i32)
    );
    assert_eq!(
        submitted[2].scores,
        vec![pb::ItemScore {
            item: pb::StandardItem::A11Satisfaction as i32,
            score: 4
        }]
    );
    h.stop().await;
}

#[tokio::test]
async fn comments_are_masked_for_analysis_and_sealed_at_rest() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let comment = "Please ring me on 021 555 0199 or mail aroha.ngata@example.org about \
                   client number 88234571; my card 4111 1111 1111 1111 was charged twice.";
    let r = submit(
        &mut c,
        &h.token("dia", INTAKE),
        &survey.name,
        pb::Response {
            answers: vec![score("agree", 3), text("comment", comment)],
            ..Default::default()
        },
    )
    .await
    .expect("submit");
    let masked = "Please ring me on [phone] or mail [email] about client number [id]; \
                  my card [card] was charged twice.";
    // Intake may not see personal data: it gets the analysis copy.
    assert_eq!(r.answers[1].text, "");
    assert_eq!(r.answers[1].masked_text, masked);

    let officer = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &h.token("dia", OFFICER),
        ))
        .await
        .expect("officer")
        .into_inner();
    assert_eq!(officer.answers[1].text, comment);
    assert_eq!(officer.answers[1].masked_text, masked);
    let analyst = c
        .list_responses(req(
            pb::ListResponsesRequest {
                parent: survey.name.clone(),
                ..Default::default()
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect("analyst")
        .into_inner();
    assert_eq!(analyst.responses[0].answers[1].text, "");
    assert_eq!(analyst.responses[0].answers[1].masked_text, masked);

    // An officer's list in the basic view holds no comment as written and
    // writes no audit record; the full view (the default) holds it, and
    // each response so read is audited.
    let owner = h.store.admin.as_ref().unwrap_or(&h.store.db).clone();
    let audited = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit_records WHERE action = 'ListResponses'",
        )
        .fetch_one(owner.pool())
        .await
        .expect("audit count")
    };
    let list = |view: pb::ResponseView| {
        req(
            pb::ListResponsesRequest {
                parent: survey.name.clone(),
                view: view as i32,
                ..Default::default()
            },
            &h.token("dia", OFFICER),
        )
    };
    let before = audited().await;
    let basic = c
        .list_responses(list(pb::ResponseView::Basic))
        .await
        .expect("basic")
        .into_inner();
    assert_eq!(basic.responses[0].answers[1].text, "");
    assert_eq!(basic.responses[0].answers[1].masked_text, masked);
    assert_eq!(audited().await, before);
    let full = c
        .list_responses(list(pb::ResponseView::Unspecified))
        .await
        .expect("full")
        .into_inner();
    assert_eq!(full.responses[0].answers[1].text, comment);
    assert_eq!(audited().await, before + 1);
    let mut bad = list(pb::ResponseView::Basic);
    bad.get_mut().view = 7;
    let err = c.list_responses(bad).await.expect_err("unknown view");
    assert_eq!(violations(&err), vec!["view".to_string()]);

    // At rest: nothing of the original in clear text anywhere in the row.
    let rows: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT answers, originals FROM responses")
            .fetch_all(h.store.admin.as_ref().unwrap_or(&h.store.db).pool())
            .await
            .expect("raw read");
    assert_eq!(rows.len(), 1);
    let (answers, sealed) = &rows[0];
    assert!(!answers.contains("example.org") && !answers.contains("0199"));
    let sealed = sealed.as_ref().expect("sealed original");
    assert!(!String::from_utf8_lossy(sealed).contains("example.org"));

    // The response event carries no text at all.
    let all = events(&h, &mut c).await;
    for e in &all {
        let bytes = &e.payload.as_ref().expect("payload").value;
        assert!(!String::from_utf8_lossy(bytes).contains("example.org"));
    }
    h.stop().await;
}

fn read_labelled() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/comments.csv");
    let text = std::fs::read_to_string(path).expect("labelled set");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (label, comment) = l.split_once(',').expect("label,comment");
            let comment = comment
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .map_or_else(|| comment.to_string(), |c| c.replace("\"\"", "\""));
            (label.to_string(), comment)
        })
        .collect()
}

#[test]
fn sentiment_and_topics_on_the_labelled_set() {
    use touchstone_feedback::comments;
    let set = read_labelled();
    assert!(
        set.len() >= 40,
        "the labelled set has {} comments",
        set.len()
    );
    let mut right = 0;
    let mut wrong = Vec::new();
    for (label, comment) in &set {
        let got = comments::label(comments::sentiment(comment));
        if got == label {
            right += 1;
        } else {
            wrong.push(format!("{label} -> {got}: {comment}"));
        }
        // Never the opposite polarity.
        assert!(
            [label.as_str(), got] != ["positive", "negative"]
                && [label.as_str(), got] != ["negative", "positive"],
            "polarity flipped: {label} -> {got}: {comment}"
        );
    }
    let accuracy = right as f64 / set.len() as f64;
    assert!(accuracy >= 0.9, "accuracy {accuracy:.2}; wrong: {wrong:#?}");

    let tags = |c: &str| comments::topics(c, &[]);
    assert_eq!(tags(&set[0].1), vec!["communication", "staff_attitude"]);
    assert_eq!(
        tags("I waited on hold for over an hour and nobody answered."),
        vec!["waiting_time"]
    );
    assert_eq!(
        tags("The website kept crashing, total waste of time."),
        vec!["website"]
    );
    assert_eq!(
        tags("There was no interpreter even though I asked for one."),
        vec!["accessibility"]
    );
    assert_eq!(
        tags("Very pleased. My refund arrived quickly."),
        vec!["outcome", "waiting_time"]
    );
}

/// Agency `dia`'s open follow-ups, oldest first.
async fn open_follow_ups(
    c: &mut FeedbackServiceClient<Channel>,
    officer: &str,
) -> pb::ListFollowUpsResponse {
    c.list_follow_ups(req(
        pb::ListFollowUpsRequest {
            parent: "agencies/dia".into(),
            filter: "status = OPEN".into(),
            order_by: "create_time".into(),
            ..Default::default()
        },
        officer,
    ))
    .await
    .expect("list")
    .into_inner()
}

#[tokio::test]
async fn rules_open_follow_ups_for_clients_who_agreed_to_contact() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let intake = h.token("dia", INTAKE);
    let officer = h.token("dia", OFFICER);
    let client = register_client(&h, "dia", &[reg::ConsentPurpose::FeedbackSurveys]).await;
    let unlinked = register_client(&h, "dia", &[]).await;

    let respond = |agree: i32, comment: Option<&str>, client: &str, contact: bool| pb::Response {
        answers: std::iter::once(score("agree", agree))
            .chain(comment.map(|t| text("comment", t)))
            .collect(),
        client: client.into(),
        contact_agreed: contact,
        ..Default::default()
    };
    // Low score, linked, agreed to contact: a follow-up.
    let low = submit(
        &mut c,
        &intake,
        &survey.name,
        respond(1, None, &client, true),
    )
    .await
    .expect("low");
    assert!(!low.follow_up.is_empty());
    // Negative comment, linked, agreed: a follow-up.
    let angry = submit(
        &mut c,
        &intake,
        &survey.name,
        respond(
            4,
            Some("The staff member was rude and dismissive."),
            &client,
            true,
        ),
    )
    .await
    .expect("angry");
    assert!(!angry.follow_up.is_empty());
    // No follow-up: no contact agreement, no linked client, or no rule met.
    for r in [
        respond(1, None, &client, false),
        respond(1, None, &unlinked, true),
        respond(1, None, "", true),
        respond(4, Some("Lovely, friendly people."), &client, true),
    ] {
        let got = submit(&mut c, &intake, &survey.name, r)
            .await
            .expect("submit");
        assert!(got.follow_up.is_empty());
    }

    let listed = open_follow_ups(&mut c, &officer).await;
    assert_eq!(listed.follow_ups.len(), 2);
    let first = &listed.follow_ups[0];
    assert_eq!(first.name, low.follow_up);
    assert_eq!(first.reason, "agree <= 2");
    assert_eq!(first.client, client);
    assert_eq!(first.response, low.name);
    assert!(first.due_date.is_some());
    assert_eq!(listed.follow_ups[1].reason, "negative comment");

    // Analysts never see follow-ups (they name clients).
    let err = c
        .list_follow_ups(req(
            pb::ListFollowUpsRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect_err("analyst");
    assert_eq!(err.code(), Code::PermissionDenied);

    // Work it: assign and contact, then resolve; closed is final.
    let contacted = c
        .update_follow_up(req(
            pb::UpdateFollowUpRequest {
                follow_up: Some(pb::FollowUp {
                    name: first.name.clone(),
                    status: pb::FollowUpStatus::Contacted as i32,
                    assignee: "kiri".into(),
                    etag: first.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["status".into(), "assignee".into()],
                }),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("contacted")
        .into_inner();
    assert_eq!(contacted.assignee, "kiri");
    let by_assignee = c
        .list_follow_ups(req(
            pb::ListFollowUpsRequest {
                parent: "agencies/dia".into(),
                filter: "assignee = \"kiri\" AND status = CONTACTED".into(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(by_assignee.follow_ups.len(), 1);
    let resolve = |etag: String| pb::UpdateFollowUpRequest {
        follow_up: Some(pb::FollowUp {
            name: first.name.clone(),
            status: pb::FollowUpStatus::Resolved as i32,
            etag,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["status".into()],
        }),
        ..Default::default()
    };
    let stale = c
        .update_follow_up(req(resolve(first.etag.clone()), &officer))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    let resolved = c
        .update_follow_up(req(resolve(contacted.etag.clone()), &officer))
        .await
        .expect("resolve")
        .into_inner();
    assert!(resolved.close_time.is_some());
    let err = c
        .update_follow_up(req(resolve(String::new()), &officer))
        .await
        .expect_err("closed");
    assert_eq!(reason(&err), "FOLLOW_UP_CLOSED");

    let all = events(&h, &mut c).await;
    let opened = all
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.FollowUpOpened")
        .count();
    let closed: Vec<pb::FollowUpClosed> = all
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.FollowUpClosed")
        .map(decode)
        .collect();
    assert_eq!(opened, 2);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, pb::FollowUpStatus::Resolved as i32);

    // Imported rows open follow-ups by the same rules, in their batch's
    // one request: each with its row's response and its event.
    let rows: Vec<pb::ImportResponsesRequest> = (0..3)
        .map(|i| pb::ImportResponsesRequest {
            parent: survey.name.clone(),
            row_id: format!("rule-{i}"),
            // Rows 0 and 2 qualify; row 1 did not agree to contact.
            response: Some(respond(1, None, &client, i != 1)),
        })
        .collect();
    let imported = c
        .import_responses(req(tokio_stream::iter(rows), &intake))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(imported.created, 3);
    let listed = open_follow_ups(&mut c, &officer).await;
    let from_import: Vec<&str> = listed
        .follow_ups
        .iter()
        .filter(|f| f.name != angry.follow_up)
        .map(|f| f.response.as_str())
        .collect();
    assert_eq!(
        from_import,
        vec![
            imported.results[0].response.as_str(),
            imported.results[2].response.as_str()
        ]
    );
    let opened = events(&h, &mut c)
        .await
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.FollowUpOpened")
        .count();
    assert_eq!(opened, 2 + 2);

    // SummarizeFollowUps counts what ListFollowUps lists as still to work,
    // overdue against the day given, and reads (so audits) nothing.
    let working = c
        .list_follow_ups(req(
            pb::ListFollowUpsRequest {
                parent: "agencies/dia".into(),
                filter: "status = OPEN OR status = CONTACTED".into(),
                page_size: 1000,
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("list")
        .into_inner()
        .follow_ups
        .len() as i64;
    assert!(working >= 3, "{working}");
    let audit_records = async || {
        let mut tx = h
            .store
            .db
            .read(touchstone_platform::db::Scope::Agency("dia"))
            .await
            .expect("tx");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_records WHERE agency = 'dia'")
            .fetch_one(tx.conn())
            .await
            .expect("count");
        n
    };
    let audited = audit_records().await;
    let summary = |as_of: Option<Date>| {
        req(
            pb::SummarizeFollowUpsRequest {
                parent: "agencies/dia".into(),
                as_of,
            },
            &officer,
        )
    };
    let day = |year| Date {
        year,
        month: 1,
        day: 1,
    };
    let later = c
        .summarize_follow_ups(summary(Some(day(2999))))
        .await
        .expect("summary")
        .into_inner();
    assert_eq!((later.open, later.overdue), (working, working));
    let earlier = c
        .summarize_follow_ups(summary(Some(day(2000))))
        .await
        .expect("summary")
        .into_inner();
    assert_eq!((earlier.open, earlier.overdue), (working, 0));
    let today = c
        .summarize_follow_ups(summary(None))
        .await
        .expect("summary")
        .into_inner();
    assert_eq!(today.open, working);
    assert_eq!(audit_records().await, audited, "counting audits nothing");
    let err = c
        .summarize_follow_ups(summary(Some(Date {
            year: 2026,
            month: 2,
            day: 30,
        })))
        .await
        .expect_err("no such day");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .summarize_follow_ups(req(
            pb::SummarizeFollowUpsRequest {
                parent: "agencies/dia".into(),
                as_of: None,
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect_err("analyst");
    assert_eq!(err.code(), Code::PermissionDenied);
    h.stop().await;
}

#[tokio::test]
async fn follow_ups_fall_due_from_submission_and_announce_due_date_changes() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let officer = h.token("dia", OFFICER);
    let client = register_client(&h, "dia", &[reg::ConsentPurpose::FeedbackSurveys]).await;
    // Answered at noon on Monday 1 June 2026 and submitted months later:
    // five weekdays from the answer is Monday 8 June, whenever it arrives.
    let r = submit(
        &mut c,
        &h.token("dia", INTAKE),
        &survey.name,
        pb::Response {
            answers: vec![score("agree", 1)],
            client: client.clone(),
            contact_agreed: true,
            submit_time: at(2026, 6, 1),
            ..Default::default()
        },
    )
    .await
    .expect("submit");
    let get = |name: String| pb::GetFollowUpRequest { name };
    let f = c
        .get_follow_up(req(get(r.follow_up.clone()), &officer))
        .await
        .expect("follow-up")
        .into_inner();
    let june = |day| {
        Some(Date {
            year: 2026,
            month: 6,
            day,
        })
    };
    assert_eq!(f.due_date, june(8));

    // A new due date is announced with the one it replaces; setting the
    // same date again, or changing only the assignee, announces nothing.
    let update = |etag: String, due: Option<Date>, status: pb::FollowUpStatus, paths: &[&str]| {
        pb::UpdateFollowUpRequest {
            follow_up: Some(pb::FollowUp {
                name: f.name.clone(),
                status: status as i32,
                assignee: "kiri".into(),
                due_date: due,
                etag,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
            ..Default::default()
        }
    };
    let open = pb::FollowUpStatus::Open;
    let moved = c
        .update_follow_up(req(
            update(f.etag.clone(), june(3), open, &["due_date"]),
            &officer,
        ))
        .await
        .expect("move")
        .into_inner();
    assert_eq!(moved.due_date, june(3));
    let same = c
        .update_follow_up(req(
            update(moved.etag.clone(), june(3), open, &["due_date", "assignee"]),
            &officer,
        ))
        .await
        .expect("same date")
        .into_inner();
    // Moved again and resolved in one call: the date goes out before the close.
    c.update_follow_up(req(
        update(
            same.etag.clone(),
            june(4),
            pb::FollowUpStatus::Resolved,
            &["due_date", "status"],
        ),
        &officer,
    ))
    .await
    .expect("move and resolve");

    let mine: Vec<_> = events(&h, &mut c)
        .await
        .into_iter()
        .filter(|e| e.name == f.name)
        .collect();
    let kinds: Vec<&str> = mine
        .iter()
        .map(|e| e.r#type.rsplit('.').next().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "FollowUpOpened",
            "FollowUpDueDateChanged",
            "FollowUpDueDateChanged",
            "FollowUpClosed"
        ]
    );
    let opened: pb::FollowUpOpened = decode(&mine[0]);
    assert_eq!(opened.due_date, june(8));
    let first: pb::FollowUpDueDateChanged = decode(&mine[1]);
    assert_eq!(
        (first.due_date, first.previous_due_date, first.unit),
        (june(3), june(8), f.unit.clone())
    );
    let second: pb::FollowUpDueDateChanged = decode(&mine[2]);
    assert_eq!(
        (second.due_date, second.previous_due_date),
        (june(4), june(3))
    );
    h.stop().await;
}

fn row(
    row_id: &str,
    survey: &str,
    answers: Vec<pb::Answer>,
    txn: &str,
) -> pb::ImportResponsesRequest {
    pb::ImportResponsesRequest {
        parent: survey.into(),
        row_id: row_id.into(),
        response: Some(pb::Response {
            answers,
            transaction_id: txn.into(),
            channel: Via::Phone as i32,
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn import_reports_bad_rows_and_a_retried_stream_adds_nothing() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let intake = h.token("dia", INTAKE);
    let rows = vec![
        row("line-1", &survey.name, vec![score("agree", 5)], ""),
        row("line-2", &survey.name, vec![score("agree", 9)], ""), // bad score
        row("", &survey.name, vec![score("agree", 4)], "T-3"),    // keyed by transaction
        row("", &survey.name, vec![score("agree", 4)], ""),       // no key at all
        row(
            "line-5",
            "agencies/dia/surveys/missing",
            vec![score("agree", 4)],
            "",
        ),
        row(
            "line-6",
            &survey.name,
            vec![score("agree", 2), text("comment", "slow")],
            "T-6",
        ),
        row("line-7", &survey.name, vec![score("agree", 3)], "T-6"), // same transaction as line-6
    ];
    let first = c
        .import_responses(req(tokio_stream::iter(rows.clone()), &intake))
        .await
        .expect("import")
        .into_inner();
    assert_eq!(
        (first.created, first.already_imported, first.rejected),
        (3, 0, 4)
    );
    let outcomes: Vec<i32> = first.results.iter().map(|r| r.outcome).collect();
    use pb::RowOutcome as O;
    assert_eq!(
        outcomes,
        vec![
            O::Created as i32,
            O::Rejected as i32,
            O::Created as i32,
            O::Rejected as i32,
            O::Rejected as i32,
            O::Created as i32,
            O::Rejected as i32,
        ]
    );
    let fields = |i: usize| -> Vec<String> {
        first.results[i]
            .violations
            .iter()
            .map(|v| v.field.clone())
            .collect()
    };
    assert_eq!(fields(1), vec!["response.answers[0].score"]);
    assert_eq!(fields(3), vec!["row_id"]);
    assert_eq!(fields(4), vec!["parent"]);
    assert_eq!(fields(6), vec!["response.transaction_id"]);

    // The same stream again: every good row is already there, none twice.
    let second = c
        .import_responses(req(tokio_stream::iter(rows), &intake))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        (second.created, second.already_imported, second.rejected),
        (0, 3, 4)
    );
    for i in [0, 2, 5] {
        assert_eq!(second.results[i].response, first.results[i].response);
    }
    let listed = c
        .list_responses(req(
            pb::ListResponsesRequest {
                parent: survey.name.clone(),
                filter: "channel = PHONE".into(),
                ..Default::default()
            },
            &h.token("dia", OFFICER),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.responses.len(), 3);
    let submitted = events(&h, &mut c)
        .await
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.ResponseSubmitted")
        .count();
    assert_eq!(submitted, 3);

    // The same key twice in one stream lands once; a stream longer than one
    // write batch (200 rows), retried, lands every row once.
    let twice = c
        .import_responses(req(
            tokio_stream::iter(vec![
                row("dup", &survey.name, vec![score("agree", 5)], ""),
                row("dup", &survey.name, vec![score("agree", 1)], ""),
            ]),
            &intake,
        ))
        .await
        .expect("twice")
        .into_inner();
    assert_eq!((twice.created, twice.already_imported), (1, 1));
    assert_eq!(twice.results[1].response, twice.results[0].response);
    // Rows that repeat a row of an earlier batch (written at the same time
    // as it, or just after) meet it: a repeated row id is the same
    // response, a repeated transaction id is refused.
    let crossing: Vec<pb::ImportResponsesRequest> = (0..450usize)
        .map(|i| {
            let id = match i {
                200 | 250 | 300 | 350 => format!("cross-{}", i - 200),
                _ => format!("cross-{i}"),
            };
            let txn = if i == 20 || i == 220 { "cross-txn" } else { "" };
            row(&id, &survey.name, vec![score("agree", 3)], txn)
        })
        .collect();
    let crossed = c
        .import_responses(req(tokio_stream::iter(crossing), &intake))
        .await
        .expect("crossing batches")
        .into_inner();
    assert_eq!(
        (crossed.created, crossed.already_imported, crossed.rejected),
        (445, 4, 1)
    );
    for i in [200usize, 250, 300, 350] {
        let (again, first) = (&crossed.results[i], &crossed.results[i - 200]);
        assert_eq!(again.outcome, O::AlreadyImported as i32, "row {i}");
        assert_eq!(again.response, first.response, "row {i}");
    }
    assert_eq!(crossed.results[20].outcome, O::Created as i32);
    assert_eq!(crossed.results[220].outcome, O::Rejected as i32);
    assert_eq!(
        crossed.results[220].violations[0].field,
        "response.transaction_id"
    );
    // More batches than are written and checked ahead at once (two written,
    // three waiting), so the stream is also read while every turn is taken.
    const BULK: i64 = 1_250;
    let many: Vec<pb::ImportResponsesRequest> = (0..BULK)
        .map(|i| {
            row(
                &format!("bulk-{i}"),
                &survey.name,
                vec![score("agree", (i % 5 + 1) as i32)],
                "",
            )
        })
        .collect();
    let bulk = c
        .import_responses(req(tokio_stream::iter(many.clone()), &intake))
        .await
        .expect("bulk")
        .into_inner();
    assert_eq!((bulk.created, bulk.rejected), (BULK, 0));
    let rows: Vec<i64> = bulk.results.iter().map(|r| r.row).collect();
    assert_eq!(rows, (0..BULK).collect::<Vec<i64>>());
    let again = c
        .import_responses(req(tokio_stream::iter(many), &intake))
        .await
        .expect("bulk again")
        .into_inner();
    assert_eq!((again.created, again.already_imported), (0, BULK));
    let mut tx = h
        .store
        .db
        .read(touchstone_platform::db::Scope::Agency("dia"))
        .await
        .expect("tx");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM responses WHERE agency = 'dia'")
        .fetch_one(tx.conn())
        .await
        .expect("count");
    assert_eq!(stored, 3 + 1 + 445 + BULK);
    let scores: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM response_scores WHERE agency = 'dia'")
            .fetch_one(tx.conn())
            .await
            .expect("count");
    assert_eq!(scores, 3 + 1 + 445 + BULK);
    // Each stored row (all were imported) has its event and its audit
    // record, written with it.
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE agency = 'dia' AND type LIKE '%ResponseSubmitted'",
    )
    .fetch_one(tx.conn())
    .await
    .expect("count");
    assert_eq!(events, 3 + 1 + 445 + BULK);
    let audited: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_records WHERE agency = 'dia' AND action = 'ImportResponses'",
    )
    .fetch_one(tx.conn())
    .await
    .expect("count");
    assert_eq!(audited, 3 + 1 + 445 + BULK, "every imported row");
    drop(tx);

    // Analysts may not import; rows for another agency are refused.
    let err = c
        .import_responses(req(
            tokio_stream::iter(vec![row("x", &survey.name, vec![score("agree", 5)], "")]),
            &h.token("dia", ANALYST),
        ))
        .await
        .expect_err("analyst");
    assert_eq!(err.code(), Code::PermissionDenied);
    let other = c
        .import_responses(req(
            tokio_stream::iter(vec![row("x", &survey.name, vec![score("agree", 5)], "")]),
            &h.token("moj", INTAKE),
        ))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(other.rejected, 1);
    h.stop().await;
}

#[tokio::test]
async fn agencies_are_isolated() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let r = submit(
        &mut c,
        &h.token("dia", INTAKE),
        &survey.name,
        pb::Response {
            answers: vec![score("agree", 1)],
            ..Default::default()
        },
    )
    .await
    .expect("submit");

    let err = c
        .get_survey(req(
            pb::GetSurveyRequest {
                name: survey.name.clone(),
            },
            &h.token("moj", ADMIN),
        ))
        .await
        .expect_err("other agency");
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &h.token("moj", OFFICER),
        ))
        .await
        .expect_err("other agency");
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .list_surveys(req(
            pb::ListSurveysRequest {
                parent: "agencies/dia".into(),
                ..Default::default()
            },
            &h.token("moj", ADMIN),
        ))
        .await
        .expect_err("other agency");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = submit(
        &mut c,
        &h.token("moj", INTAKE),
        &survey.name,
        pb::Response {
            answers: vec![score("agree", 1)],
            ..Default::default()
        },
    )
    .await
    .expect_err("other agency");
    assert_eq!(err.code(), Code::NotFound);

    // The other agency's own lists are empty; its feed shows none of dia's events.
    let own = c
        .list_surveys(req(
            pb::ListSurveysRequest {
                parent: "agencies/moj".into(),
                ..Default::default()
            },
            &h.token("moj", ADMIN),
        ))
        .await
        .expect("own")
        .into_inner();
    assert!(own.surveys.is_empty());
    let feed = c
        .list_events(req(
            pb::ListEventsRequest::default(),
            &h.token("moj", ADMIN),
        ))
        .await
        .expect("feed")
        .into_inner();
    assert!(feed.events.is_empty());
    let report = c
        .get_a11_report(req(
            pb::GetA11ReportRequest {
                parent: "agencies/moj".into(),
                quarter: "2026Q4".into(),
            },
            &h.token("moj", ANALYST),
        ))
        .await
        .expect("report")
        .into_inner();
    assert!(report.collections.is_empty() && report.responses.is_empty());

    // On PostgreSQL, row-level security hides dia's rows even from a query
    // that forgets the agency.
    if h.store.admin.is_some() {
        let mut tx = h
            .store
            .db
            .read(touchstone_platform::db::Scope::Agency("moj"))
            .await
            .expect("tx");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM responses")
            .fetch_one(tx.conn())
            .await
            .expect("count");
        assert_eq!(n, 0);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM surveys")
            .fetch_one(tx.conn())
            .await
            .expect("count");
        assert_eq!(n, 0);
    }
    h.stop().await;
}

#[tokio::test]
async fn erasure_in_the_register_removes_comments_and_stops_follow_ups() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let officer = h.token("dia", OFFICER);
    let client = register_client(&h, "dia", &[reg::ConsentPurpose::FeedbackSurveys]).await;
    let request = pb::SubmitResponseRequest {
        parent: survey.name.clone(),
        response: Some(pb::Response {
            answers: vec![
                score("agree", 1),
                text("comment", "Call me on 021 555 0199, it was awful."),
            ],
            client: client.clone(),
            contact_agreed: true,
            ..Default::default()
        }),
        request_id: "erase-me".into(),
    };
    let r = c
        .submit_response(req(request.clone(), &h.token("dia", INTAKE)))
        .await
        .expect("submit")
        .into_inner();
    assert!(!r.follow_up.is_empty());

    h.register_client()
        .erase_client(req(
            reg::EraseClientRequest {
                name: client.clone(),
                ..Default::default()
            },
            &h.token("dia", SENIOR),
        ))
        .await
        .expect("erase");
    h.consume_register_feed().await;

    let got = c
        .get_response(req(
            pb::GetResponseRequest {
                name: r.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(got.erased);
    assert_eq!(got.answers[1].text, "");
    assert_eq!(
        got.answers[1].masked_text,
        "Call me on [phone], it was awful."
    );
    assert_eq!(got.answers[0].score, Some(1), "statistics stay whole");
    let follow_up = c
        .get_follow_up(req(
            pb::GetFollowUpRequest {
                name: r.follow_up.clone(),
            },
            &officer,
        ))
        .await
        .expect("follow-up")
        .into_inner();
    assert_eq!(follow_up.status, pb::FollowUpStatus::NoAction as i32);
    // The close is announced like any other, so the KPI counts it.
    let closed = |all: Vec<touchstone_api::common::v1::Event>| -> Vec<pb::FollowUpClosed> {
        all.iter()
            .filter(|e| e.r#type == "touchstone.feedback.v1.FollowUpClosed")
            .map(decode)
            .collect()
    };
    let announced = closed(events(&h, &mut c).await);
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].follow_up, r.follow_up);
    assert_eq!(announced[0].status, pb::FollowUpStatus::NoAction as i32);
    assert_eq!(announced[0].close_time, follow_up.close_time);
    assert!(announced[0].open_time.is_some());
    // The stored reply (which held the comment) is forgotten too.
    let err = c
        .submit_response(req(request, &h.token("dia", INTAKE)))
        .await
        .expect_err("forgotten");
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Consuming again changes nothing and announces nothing more.
    h.consume_register_feed().await;
    assert_eq!(closed(events(&h, &mut c).await).len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn volumes_are_checked_and_announced() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let survey = create_published(&mut c, &h.token("dia", ADMIN), "dia", every_kind()).await;
    let day = |m, d| {
        Some(Date {
            year: 2026,
            month: m,
            day: d,
        })
    };
    let err = c
        .record_volumes(req(
            pb::RecordVolumesRequest {
                parent: survey.name.clone(),
                volume: Some(pb::Volume {
                    start_date: day(7, 31),
                    end_date: day(7, 1),
                    customers_served: 10,
                    customers_offered: 11,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &h.token("dia", INTAKE),
        ))
        .await
        .expect_err("bad");
    let fields = violations(&err);
    assert!(
        fields.contains(&"volume.end_date".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"volume.customers_offered".to_string()),
        "{fields:?}"
    );
    let v = c
        .record_volumes(req(
            pb::RecordVolumesRequest {
                parent: survey.name.clone(),
                volume: Some(pb::Volume {
                    start_date: day(7, 1),
                    end_date: day(7, 31),
                    customers_served: 1000,
                    customers_offered: 400,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &h.token("dia", INTAKE),
        ))
        .await
        .expect("record")
        .into_inner();
    assert!(v.name.starts_with(&format!("{}/volumes/", survey.name)));
    let recorded: Vec<pb::VolumesRecorded> = events(&h, &mut c)
        .await
        .iter()
        .filter(|e| e.r#type == "touchstone.feedback.v1.VolumesRecorded")
        .map(decode)
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].customers_offered, 400);
    assert_eq!(
        recorded[0].touchpoint.as_ref().map(|t| t.unit.as_str()),
        Some("north")
    );
    h.stop().await;
}

fn at(year: i32, month: u8, day: u8) -> Option<prost_types::Timestamp> {
    let month = time::Month::try_from(month).expect("month");
    let date = time::Date::from_calendar_date(year, month, day).expect("date");
    Some(prost_types::Timestamp {
        seconds: date.midnight().assume_utc().unix_timestamp() + 12 * 3600,
        nanos: 0,
    })
}

#[tokio::test]
async fn a11_files_match_the_hand_made_files() {
    use pb::StandardItem as I;
    let h = Harness::start().await;
    let mut c = h.client().await;
    let admin = h.token("dia", ADMIN);
    let intake = h.token("dia", INTAKE);
    // The A-11 template: the older seven items and the FY2024 drivers.
    let made = c
        .create_template_surveys(req(
            pb::CreateTemplateSurveysRequest {
                parent: "agencies/dia".into(),
                templates: vec![pb::SurveyTemplate::A11 as i32],
                touchpoint: Some(pb::Touchpoint {
                    service: "passports".into(),
                    unit: "wellington".into(),
                    channel: Via::InPerson as i32,
                    stage: "collection".into(),
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("template")
        .into_inner();
    let counter = made.surveys[0].name.clone();
    c.publish_survey(req(
        pb::PublishSurveyRequest {
            name: counter.clone(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .expect("publish");
    let item = |key: &str, text: &str, item: I| pb::Question {
        key: key.into(),
        text: text.into(),
        standard_item: item as i32,
        ..Default::default()
    };
    // The FY2024 set: thumbs trust and drivers offering some choices.
    let thumbs = create_published(
        &mut c,
        &admin,
        "dia",
        pb::Survey {
            title: "Online thumbs".into(),
            touchpoint: Some(pb::Touchpoint {
                service: "passports".into(),
                unit: "online".into(),
                channel: Via::Web as i32,
                stage: "application".into(),
            }),
            questions: vec![
                item(
                    "trust",
                    "I trust the agency to meet my needs.",
                    I::A11TrustThumbs,
                ),
                pb::Question {
                    choices: choices(&["effectiveness", "ease", "other"]),
                    ..item("good", "What went well?", I::A11PositiveDrivers)
                },
                pb::Question {
                    choices: choices(&["ease", "transparency", "humanity"]),
                    ..item("bad", "What could be better?", I::A11NegativeDrivers)
                },
                question("comment", pb::QuestionKind::FreeText, false),
            ],
            ..Default::default()
        },
    )
    .await;
    // An older survey: 5-point trust, equity and employee helpfulness.
    let legacy = create_published(
        &mut c,
        &admin,
        "dia",
        pb::Survey {
            title: "Legacy A-11".into(),
            touchpoint: Some(pb::Touchpoint {
                service: "passports".into(),
                unit: "contact-centre".into(),
                channel: Via::Phone as i32,
                stage: "enquiry".into(),
            }),
            questions: vec![
                item(
                    "trust",
                    "This interaction increased my confidence.",
                    I::A11Trust,
                ),
                item("fair", "I was treated fairly.", I::A11Equity),
                item("staff", "Staff were helpful.", I::A11EmployeeHelpfulness),
            ],
            ..Default::default()
        },
    )
    .await;

    let a11 = |s: [i32; 7]| -> Vec<pb::Answer> {
        [
            "satisfaction",
            "trust",
            "effectiveness",
            "ease",
            "efficiency",
            "equity",
            "employee_helpfulness",
        ]
        .iter()
        .zip(s)
        .map(|(k, v)| score(k, v))
        .collect()
    };
    let picked = |key: &str, keys: &[&str]| pb::Answer {
        question_key: key.into(),
        choices: keys.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    };
    let yes = |key: &str, y: bool| pb::Answer {
        question_key: key.into(),
        yes: Some(y),
        ..Default::default()
    };
    let with = |mut a: Vec<pb::Answer>, more: Vec<pb::Answer>| {
        a.extend(more);
        a
    };
    // Counter: three in 2026Q3, one in Q2 and one in Q4 (FY2027Q1).
    let responses = [
        (
            &counter,
            "T1",
            at(2026, 7, 2),
            with(
                a11([5, 4, 5, 5, 4, 5, 5]),
                vec![
                    picked("positive_drivers", &["ease", "employee"]),
                    text("comment", "Friendly staff, call me on 021 555 0199"),
                ],
            ),
        ),
        (
            &counter,
            "T2",
            at(2026, 8, 15),
            with(
                a11([4, 4, 3, 2, 2, 4, 5]),
                vec![
                    picked("positive_drivers", &["effectiveness"]),
                    picked("negative_drivers", &["ease", "efficiency"]),
                ],
            ),
        ),
        (&counter, "T3", at(2026, 9, 30), a11([1, 2, 2, 1, 1, 3, 2])),
        (&counter, "Q2", at(2026, 6, 30), a11([5, 5, 5, 5, 5, 5, 5])),
        (&counter, "Q4", at(2026, 10, 1), a11([1, 1, 1, 1, 1, 1, 1])),
        (
            &thumbs.name,
            "W1",
            at(2026, 7, 20),
            vec![
                yes("trust", true),
                picked("good", &["ease", "other"]),
                text("comment", "Easy, \"fast\""),
            ],
        ),
        (
            &thumbs.name,
            "W2",
            at(2026, 9, 1),
            vec![yes("trust", false), picked("bad", &["transparency"])],
        ),
        (
            &legacy.name,
            "L1",
            at(2026, 8, 3),
            vec![score("trust", 2), score("fair", 1), score("staff", 4)],
        ),
    ];
    for (survey, id, when, answers) in responses {
        submit(
            &mut c,
            &intake,
            survey,
            pb::Response {
                answers,
                submit_time: when,
                transaction_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .expect("response");
    }
    let volume = |survey: &str, m: i32, served: i64, offered: i64| pb::RecordVolumesRequest {
        parent: survey.into(),
        volume: Some(pb::Volume {
            start_date: Some(Date {
                year: 2026,
                month: m,
                day: 1,
            }),
            end_date: Some(Date {
                year: 2026,
                month: m,
                day: 28,
            }),
            customers_served: served,
            customers_offered: offered,
            ..Default::default()
        }),
        ..Default::default()
    };
    for v in [
        volume(&counter, 7, 1200, 300),
        volume(&counter, 8, 1100, 250),
        volume(&counter, 9, 900, 200),
        volume(&counter, 10, 5000, 5000), // Q4: left out
        volume(&thumbs.name, 7, 40000, 2000),
    ] {
        c.record_volumes(req(v, &intake)).await.expect("volumes");
    }

    let data = |name: &str| {
        std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
            .expect("expected file")
    };
    for quarter in ["2026Q3", "2026-Q3", "fy2026q4"] {
        let report = c
            .get_a11_report(req(
                pb::GetA11ReportRequest {
                    parent: "agencies/dia".into(),
                    quarter: quarter.into(),
                },
                &h.token("dia", ANALYST),
            ))
            .await
            .expect("report")
            .into_inner();
        assert_eq!((report.fiscal_year, report.fiscal_quarter), (2026, 4));
        let summary = touchstone_feedback::a11::summary_csv(&report);
        assert_eq!(summary, data("a11_summary_FY2026Q4.csv"), "{quarter}");
        let uploads = touchstone_feedback::a11::responses_csv(&report);
        assert_eq!(uploads, data("a11_responses_FY2026Q4.csv"), "{quarter}");
        // The header row is the one Touchpoints' upload check accepts.
        let header = uploads.lines().next().unwrap_or_default();
        let mut got: Vec<&str> = header.split(',').collect();
        got.sort();
        let mut want = vec![
            "external_id",
            "question_1",
            "positive_effectiveness",
            "positive_ease",
            "positive_efficiency",
            "positive_transparency",
            "positive_humanity",
            "positive_employee",
            "positive_other",
            "negative_effectiveness",
            "negative_ease",
            "negative_efficiency",
            "negative_transparency",
            "negative_humanity",
            "negative_employee",
            "negative_other",
            "question_4",
        ];
        want.sort();
        assert_eq!(got, want);
    }
    // FY2027 Q1 is October to December 2026: only the counter's Q4 response.
    let report = c
        .get_a11_report(req(
            pb::GetA11ReportRequest {
                parent: "agencies/dia".into(),
                quarter: "FY2027Q1".into(),
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!((report.fiscal_year, report.fiscal_quarter), (2027, 1));
    let ids: Vec<&str> = report
        .responses
        .iter()
        .map(|r| r.external_id.as_str())
        .collect();
    assert_eq!(ids, vec!["Q4"]);
    assert_eq!(report.collections.len(), 1);
    assert_eq!(report.collections[0].volume_of_customers, 5000);

    let err = c
        .get_a11_report(req(
            pb::GetA11ReportRequest {
                parent: "agencies/dia".into(),
                quarter: "2026Q7".into(),
            },
            &h.token("dia", ANALYST),
        ))
        .await
        .expect_err("bad quarter");
    assert_eq!(violations(&err), vec!["quarter".to_string()]);
    h.stop().await;
}

/// A list across surveys, filtered to a period and ordered by submit time
/// (what the dashboard's topics read), pages through exactly the period's
/// responses of every survey, latest first; a list of one survey keeps to it.
#[tokio::test]
async fn lists_across_surveys_follow_submit_time() {
    let h = Harness::start().await;
    let mut c = h.client().await;
    let admin = h.token("dia", ADMIN);
    let intake = h.token("dia", INTAKE);
    let officer = h.token("dia", OFFICER);
    let first = create_published(&mut c, &admin, "dia", every_kind()).await;
    let second = create_published(&mut c, &admin, "dia", every_kind()).await;
    // Day d of a past month, alternately in each survey, submitted out of order.
    let day = 86_400i64;
    let base = 1_700_000_000i64;
    let mut expected = Vec::new();
    for d in [7i64, 2, 9, 4, 1, 8, 3, 6, 5, 0, 11, 10] {
        let survey = if d % 2 == 0 { &first } else { &second };
        let made = submit(
            &mut c,
            &intake,
            &survey.name,
            pb::Response {
                answers: vec![score("agree", 4)],
                submit_time: Some(prost_types::Timestamp {
                    seconds: base + d * day,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("submit");
        if (2..10).contains(&d) {
            expected.push((d, made.name.clone()));
        }
    }
    expected.sort_by_key(|e| std::cmp::Reverse(e.0));
    let expected: Vec<String> = expected.into_iter().map(|(_, n)| n).collect();
    let stamp = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let filter = format!(
        "submit_time >= \"{}\" AND submit_time < \"{}\"",
        stamp(base + 2 * day),
        stamp(base + 10 * day)
    );
    let list = |parent: &str, token: String| pb::ListResponsesRequest {
        parent: parent.into(),
        page_size: 3,
        page_token: token,
        filter: filter.clone(),
        order_by: "submit_time desc".into(),
        view: pb::ResponseView::Full as i32,
    };
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_responses(req(list("agencies/dia/surveys/-", token), &officer))
            .await
            .expect("list")
            .into_inner();
        assert!(page.responses.len() <= 3);
        names.extend(page.responses.into_iter().map(|r| r.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(names, expected);
    let one = c
        .list_responses(req(list(&first.name, String::new()), &officer))
        .await
        .expect("one survey")
        .into_inner();
    assert!(!one.responses.is_empty());
    assert!(
        one.responses
            .iter()
            .all(|r| r.name.starts_with(&format!("{}/", first.name)))
    );
    h.stop().await;
}
