//! The kpi service fed by the real complaints and feedback services: both
//! run on 127.0.0.1:0 beside a real register, are driven through their own
//! APIs, and their change feeds are read over gRPC with a service token,
//! exactly as `touchstone up` wires them.

use std::sync::Arc;
use std::time::Duration;
use tonic::Request;
use tonic::transport::Channel;
use touchstone_api::common::v1::{Channel as Via, Date};
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_api::kpi::v1 as pb;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_auth::{AuthConfig, DevKey, Role, ServiceToken, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_kpi::feeds::{self, ComplaintsFeed, FeedbackFeed};
use touchstone_platform::db::Db;
use touchstone_platform::testing::{self, TestDb};

async fn serve(
    name: &'static str,
    grpc: &'static str,
    routes: tonic::service::Routes,
    db: Db,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
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
    opts.shutdown_grace = Duration::from_millis(200);
    tokio::spawn(async move {
        touchstone_server::serve(listener, routes, opts, readiness, async move {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    (addr, stop)
}

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// The question keys of the A-11 template, all required.
const ITEMS: [&str; 7] = [
    "satisfaction",
    "trust",
    "effectiveness",
    "ease",
    "efficiency",
    "equity",
    "employee_helpfulness",
];

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

fn wire(d: time::Date) -> Date {
    Date {
        year: d.year(),
        month: i32::from(u8::from(d.month())),
        day: i32::from(d.day()),
    }
}

#[tokio::test]
async fn figures_from_the_real_producers_over_grpc() {
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
    let service_token = |subject: &str| ServiceToken::Dev {
        key: dev.clone(),
        issuer: DevKey::ISSUER.into(),
        audience: DevKey::AUDIENCE.into(),
        subject: subject.into(),
    };
    let mint = |roles: &[Role]| {
        dev.mint(&TokenRequest {
            subject: "tester".into(),
            agency: Some("dia".into()),
            agencies: None,
            roles: roles.to_vec(),
            ttl: Duration::from_secs(600),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
        })
        .expect("mint")
    };

    let register_db: TestDb = testing::fresh(&touchstone_register::migration_sets()).await;
    let (register_addr, _r) = serve(
        "register",
        touchstone_register::SERVICE_NAME,
        touchstone_register::routes(
            register_db.db.clone(),
            MasterKey::generate(),
            verifier.clone(),
        ),
        register_db.db.clone(),
    )
    .await;
    let register_url = format!("http://{register_addr}");

    let complaints_db = testing::fresh(&touchstone_complaints::migration_sets()).await;
    let peers = touchstone_complaints::Peers::connect(&register_url, service_token("complaints"))
        .expect("peers");
    let (routes, tasks) = touchstone_complaints::start(
        complaints_db.db.clone(),
        MasterKey::generate(),
        verifier.clone(),
        peers,
    );
    for t in tasks {
        t.abort();
    }
    let (complaints_addr, _c) = serve(
        "complaints",
        touchstone_complaints::SERVICE_NAME,
        routes,
        complaints_db.db.clone(),
    )
    .await;

    let feedback_db = testing::fresh(&touchstone_feedback::migration_sets()).await;
    let peers = touchstone_feedback::Peers::connect(&register_url, service_token("feedback"))
        .expect("peers");
    let (routes, tasks) = touchstone_feedback::start(
        feedback_db.db.clone(),
        MasterKey::generate(),
        verifier.clone(),
        peers,
    );
    for t in tasks {
        t.abort();
    }
    let (feedback_addr, _f) = serve(
        "feedback",
        touchstone_feedback::SERVICE_NAME,
        routes,
        feedback_db.db.clone(),
    )
    .await;

    let kpi_db = testing::fresh(&touchstone_kpi::migration_sets()).await;
    let (kpi_addr, _k) = serve(
        "kpi",
        touchstone_kpi::SERVICE_NAME,
        touchstone_kpi::routes(
            kpi_db.db.clone(),
            MasterKey::generate(),
            verifier.clone(),
            1,
        ),
        kpi_db.db.clone(),
    )
    .await;

    // Complaints: three taken in, two acknowledged, two resolved (one upheld).
    let officer = mint(&[Role::Officer]);
    let mut complaints = ComplaintsServiceClient::new(channel(complaints_addr).await);
    let mut names = Vec::new();
    for i in 0..3 {
        let c = complaints
            .create_complaint(req(
                cpb::CreateComplaintRequest {
                    parent: "agencies/dia".into(),
                    complaint: Some(cpb::Complaint {
                        complainant: Some(cpb::Complainant {
                            who: Some(cpb::complainant::Who::Anonymous(true)),
                        }),
                        channel: Via::Web as i32,
                        unit: "north".into(),
                        service: "passports".into(),
                        category: "delay".into(),
                        description: format!("complaint {i}"),
                        ..Default::default()
                    }),
                    complaint_id: String::new(),
                    request_id: format!("c{i}"),
                },
                &officer,
            ))
            .await
            .expect("create")
            .into_inner();
        names.push(c.name);
    }
    for (i, name) in names.iter().take(2).enumerate() {
        complaints
            .acknowledge_complaint(req(
                cpb::AcknowledgeComplaintRequest {
                    name: name.clone(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("acknowledge");
        complaints
            .start_complaint(req(
                cpb::StartComplaintRequest {
                    name: name.clone(),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("start");
        let outcome = if i == 0 {
            cpb::Outcome::Upheld
        } else {
            cpb::Outcome::NotUpheld
        };
        complaints
            .resolve_complaint(req(
                cpb::ResolveComplaintRequest {
                    name: name.clone(),
                    resolution: Some(cpb::Resolution {
                        outcome: outcome as i32,
                        remedies: vec![cpb::Remedy::Apology as i32],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("resolve");
    }

    // Feedback: an A-11 survey, twelve responses, the month's volumes.
    let admin = mint(&[Role::AgencyAdmin]);
    let mut feedback = FeedbackServiceClient::new(channel(feedback_addr).await);
    let surveys = feedback
        .create_template_surveys(req(
            fpb::CreateTemplateSurveysRequest {
                parent: "agencies/dia".into(),
                templates: vec![fpb::SurveyTemplate::A11 as i32],
                touchpoint: Some(fpb::Touchpoint {
                    service: "passports".into(),
                    unit: "north".into(),
                    channel: Via::Web as i32,
                    stage: String::new(),
                }),
                request_id: "t1".into(),
            },
            &admin,
        ))
        .await
        .expect("templates")
        .into_inner()
        .surveys;
    let survey = feedback
        .publish_survey(req(
            fpb::PublishSurveyRequest {
                name: surveys[0].name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("publish")
        .into_inner();
    let scores = [5, 5, 4, 4, 4, 3, 3, 5, 2, 4, 5, 1];
    for (i, s) in scores.iter().enumerate() {
        feedback
            .submit_response(req(
                fpb::SubmitResponseRequest {
                    parent: survey.name.clone(),
                    response: Some(fpb::Response {
                        answers: ITEMS
                            .iter()
                            .map(|k| fpb::Answer {
                                question_key: (*k).into(),
                                score: Some(*s),
                                ..Default::default()
                            })
                            .collect(),
                        channel: Via::Web as i32,
                        unit: "north".into(),
                        ..Default::default()
                    }),
                    request_id: format!("r{i}"),
                },
                &officer,
            ))
            .await
            .expect("submit");
    }
    feedback
        .record_volumes(req(
            fpb::RecordVolumesRequest {
                parent: survey.name.clone(),
                volume: Some(fpb::Volume {
                    start_date: Some(wire(today())),
                    end_date: Some(wire(today())),
                    customers_served: 500,
                    customers_offered: 120,
                    ..Default::default()
                }),
                request_id: "v1".into(),
            },
            &admin,
        ))
        .await
        .expect("volumes");

    // The kpi service reads both feeds over gRPC with its own token.
    let kpi_token = service_token("kpi");
    let c_feed = ComplaintsFeed {
        channel: peer(complaints_addr),
        token: kpi_token.clone(),
    };
    let f_feed = FeedbackFeed {
        channel: peer(feedback_addr),
        token: kpi_token,
    };
    let applied = feeds::catch_up_complaints(&kpi_db.db, &c_feed)
        .await
        .expect("complaints feed");
    assert!(applied >= 7, "{applied} complaints events");
    let applied = feeds::catch_up_feedback(&kpi_db.db, &f_feed)
        .await
        .expect("feedback feed");
    assert!(applied >= 13, "{applied} feedback events");

    let analyst = mint(&[Role::Analyst]);
    let kpi = KpiServiceClient::new(channel(kpi_addr).await);
    // The calendar year of today: single figures are released on the grid
    // of periods.
    let start = time::Date::from_ordinal_date(today().year(), 1).expect("1 January");
    let end = time::Date::from_ordinal_date(today().year() + 1, 1).expect("1 January")
        - time::Duration::days(1);
    let value = |indicator: &'static str| {
        let r = req(
            pb::QueryIndicatorRequest {
                agency: "agencies/dia".into(),
                indicator: indicator.into(),
                start_date: Some(wire(start)),
                end_date: Some(wire(end)),
                ..Default::default()
            },
            &analyst,
        );
        let mut kpi = kpi.clone();
        async move {
            let r = kpi.query_indicator(r).await.expect(indicator).into_inner();
            r.series[0].points[0].value.expect("value")
        }
    };
    let received = value("complaints_received").await;
    assert_eq!((received.n, received.value), (3, Some(3.0)));
    assert_eq!(value("acknowledged_within_standard").await.n, 2);
    let upheld = value("share_upheld").await;
    assert_eq!((upheld.numerator, upheld.denominator), (Some(1), Some(2)));
    assert_eq!(value("days_to_resolve_median").await.n, 2);
    let satisfied = value("share_satisfied.a11_satisfaction").await;
    let top_two = scores.iter().filter(|s| **s >= 4).count() as i64;
    assert_eq!(
        (satisfied.numerator, satisfied.denominator),
        (Some(top_two), Some(12))
    );
    let mean = value("mean_score.a11_satisfaction").await;
    let expected = scores.iter().sum::<i32>() as f64 / 12.0;
    assert!((mean.value.expect("mean") - expected).abs() < 1e-9);
    let rate = value("response_rate").await;
    assert_eq!((rate.numerator, rate.denominator), (Some(12), Some(120)));
    let per_1000 = value("complaints_per_1000_served").await;
    assert!((per_1000.value.expect("rate") - 6.0).abs() < 1e-9);

    // The same service wired as `touchstone up` wires it: `start` spawns both
    // consumers, which reach the same figures on their own.
    let started_db = testing::fresh(&touchstone_kpi::migration_sets()).await;
    let peers = touchstone_kpi::Peers::connect(
        &format!("http://{complaints_addr}"),
        &format!("http://{feedback_addr}"),
        service_token("kpi"),
    )
    .expect("peers");
    let (routes, tasks) = touchstone_kpi::start(
        started_db.db.clone(),
        MasterKey::generate(),
        verifier.clone(),
        peers,
        // k = 1 (no disclosure control), so that the small counts show.
        1,
    );
    assert_eq!(tasks.len(), 2);
    let (started_addr, _s) = serve(
        "kpi",
        touchstone_kpi::SERVICE_NAME,
        routes,
        started_db.db.clone(),
    )
    .await;
    let mut started = KpiServiceClient::new(channel(started_addr).await);
    let mut seen = (0, 0);
    for _ in 0..300 {
        let n = |indicator: &str| {
            req(
                pb::QueryIndicatorRequest {
                    agency: "agencies/dia".into(),
                    indicator: indicator.into(),
                    start_date: Some(wire(start)),
                    end_date: Some(wire(end)),
                    ..Default::default()
                },
                &analyst,
            )
        };
        let c = started
            .query_indicator(n("complaints_received"))
            .await
            .expect("query");
        let f = started
            .query_indicator(n("share_satisfied.a11_satisfaction"))
            .await
            .expect("query");
        let count = |r: pb::QueryIndicatorResponse| r.series[0].points[0].value.map_or(0, |v| v.n);
        seen = (count(c.into_inner()), count(f.into_inner()));
        if seen == (3, 12) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, (3, 12));
    for t in tasks {
        t.abort();
    }
}

/// A service as the KPI service reaches it.
fn peer(addr: std::net::SocketAddr) -> touchstone_server::peer::Balanced {
    touchstone_server::peer::Balanced::connect(&format!("http://{addr}"), Default::default())
        .expect("peer")
}
