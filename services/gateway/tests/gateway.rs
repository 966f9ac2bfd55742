//! The gateway through its real gRPC API and its JSON API, beside a real
//! register, complaints and feedback service and a small fake KPI service
//! whose figures the tests construct (and which can be made slow): servers
//! on 127.0.0.1:0 over fresh databases (SQLite, or PostgreSQL when
//! TOUCHSTONE_TEST_PG_URL is set), called with real tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;
use touchstone_api::common::v1::Channel as Via;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::gateway::v1 as pb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::kpi::v1 as kpi;
use touchstone_api::kpi::v1::kpi_service_server::{KpiService, KpiServiceServer};
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::{
    AuthConfig, AuthInterceptor, Caller, DevKey, Role, ServiceToken, TokenRequest, Verifier,
};
use touchstone_crypto::MasterKey;
use touchstone_platform::db::Db;
use touchstone_platform::testing::{self, TestDb};

/// One running gRPC server.
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
        db: Option<Db>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let readiness: touchstone_server::Readiness = Arc::new(move || {
            let db = db.clone();
            Box::pin(async move {
                match db {
                    Some(db) => db.ping().await,
                    None => true,
                }
            })
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

    fn url(&self) -> String {
        format!("http://{}", self.addr)
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

/// What the fake KPI service answers, and what it saw.
#[derive(Debug, Default)]
struct KpiState {
    /// Each agency's figure for QueryIndicatorAcrossAgencies.
    across: HashMap<String, kpi::Value>,
    /// The agencies each QueryIndicatorAcrossAgencies asked for.
    asked: Vec<Vec<String>>,
    /// The token subjects of the calls it took.
    subjects: Vec<String>,
    /// How long each call waits before answering.
    delay: Duration,
}

#[derive(Debug, Clone)]
struct FakeKpi(Arc<Mutex<KpiState>>);

fn share(x: i64, n: i64) -> kpi::Value {
    let p = x as f64 / n as f64;
    let half = 1.96 * (p * (1.0 - p) / n as f64).sqrt();
    kpi::Value {
        n,
        suppressed: false,
        value: Some(p),
        lower: Some((p - half).max(0.0)),
        upper: Some((p + half).min(1.0)),
        numerator: Some(x),
        denominator: Some(n),
    }
}

impl FakeKpi {
    async fn enter<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let caller = Caller::from_request(r)?;
        let delay = {
            let mut s = self.0.lock().expect("lock");
            s.subjects.push(caller.subject);
            s.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

const SATISFACTION: &str = "share_satisfied.a11_satisfaction";

#[tonic::async_trait]
impl KpiService for FakeKpi {
    async fn list_indicators(
        &self,
        r: Request<kpi::ListIndicatorsRequest>,
    ) -> Result<Response<kpi::ListIndicatorsResponse>, Status> {
        self.enter(&r).await?;
        let indicator = |id: &str, kind: kpi::IndicatorKind| kpi::Indicator {
            id: id.into(),
            title: id.replace('_', " "),
            formula: String::new(),
            kind: kind as i32,
            source: "feedback".into(),
            segmentable: true,
        };
        Ok(Response::new(kpi::ListIndicatorsResponse {
            indicators: vec![
                indicator(SATISFACTION, kpi::IndicatorKind::Share),
                indicator("nps", kpi::IndicatorKind::Nps),
                indicator("response_rate", kpi::IndicatorKind::Share),
            ],
        }))
    }

    async fn query_indicator(
        &self,
        r: Request<kpi::QueryIndicatorRequest>,
    ) -> Result<Response<kpi::QueryIndicatorResponse>, Status> {
        self.enter(&r).await?;
        let req = r.into_inner();
        Ok(Response::new(kpi::QueryIndicatorResponse {
            indicator: None,
            series: vec![kpi::Series {
                group: String::new(),
                points: vec![kpi::Point {
                    start_date: req.start_date,
                    end_date: req.end_date,
                    value: Some(share(80, 100)),
                    significant_change: false,
                    p_value: None,
                }],
            }],
            min_count: 10,
        }))
    }

    async fn query_indicator_across_agencies(
        &self,
        r: Request<kpi::QueryIndicatorAcrossAgenciesRequest>,
    ) -> Result<Response<kpi::QueryIndicatorAcrossAgenciesResponse>, Status> {
        self.enter(&r).await?;
        let caller = Caller::from_request(&r)?;
        let req = r.into_inner();
        for a in &req.agencies {
            if !caller.acts_in(a) {
                return Err(Status::permission_denied(
                    "the token does not cover the agency",
                ));
            }
        }
        let mut s = self.0.lock().expect("lock");
        s.asked.push(req.agencies.clone());
        let values = req
            .agencies
            .iter()
            .map(|a| kpi::AgencyValue {
                agency: a.clone(),
                value: s.across.get(a).copied(),
            })
            .collect();
        Ok(Response::new(kpi::QueryIndicatorAcrossAgenciesResponse {
            values,
            min_count: 10,
        }))
    }

    async fn get_charter_report(
        &self,
        r: Request<kpi::GetCharterReportRequest>,
    ) -> Result<Response<kpi::CharterReport>, Status> {
        self.enter(&r).await?;
        let req = r.into_inner();
        let previous = req.date.is_some_and(|d| d.month < 7);
        Ok(Response::new(kpi::CharterReport {
            agency: req.agency.clone(),
            start_date: req.date,
            end_date: req.date,
            lines: vec![kpi::CharterLine {
                standard: Some(kpi::Standard {
                    name: format!("{}/standards/ack", req.agency),
                    display_name: "Complaints acknowledged within 2 working days".into(),
                    indicator: "acknowledged_within_standard".into(),
                    comparator: kpi::Comparator::AtLeast as i32,
                    target: 0.9,
                    period: kpi::Granularity::Quarter as i32,
                    published: true,
                    ..Default::default()
                }),
                value: Some(if previous {
                    share(700, 1000)
                } else {
                    share(950, 1000)
                }),
                verdict: kpi::Verdict::Met as i32,
            }],
            min_count: 10,
        }))
    }

    async fn get_equity_report(
        &self,
        r: Request<kpi::GetEquityReportRequest>,
    ) -> Result<Response<kpi::EquityReport>, Status> {
        self.enter(&r).await?;
        let req = r.into_inner();
        let segments = if req.dimension == kpi::Dimension::Disability as i32 {
            vec![kpi::SegmentValue {
                segment: "ANSWER_YES".into(),
                value: Some(share(50, 100)),
                gap: Some(-0.3),
                significant: true,
                p_value: Some(0.001),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(kpi::EquityReport {
            indicator: None,
            whole: Some(share(80, 100)),
            segments,
            min_count: 10,
        }))
    }

    async fn batch_get_figures(
        &self,
        r: Request<kpi::BatchGetFiguresRequest>,
    ) -> Result<Response<kpi::BatchGetFiguresResponse>, Status> {
        // Each part as the fake's own method answers it, all at once.
        fn part<M, T>(from: &Request<T>, m: M) -> Request<M> {
            let mut p = Request::new(m);
            *p.metadata_mut() = from.metadata().clone();
            *p.extensions_mut() = from.extensions().clone();
            p
        }
        let error = |s: Status| kpi::PartError {
            code: s.code() as i32,
            message: s.message().to_string(),
        };
        let mut from = Request::new(());
        *from.metadata_mut() = r.metadata().clone();
        *from.extensions_mut() = r.extensions().clone();
        let req = r.into_inner();
        let from = &from;
        let (queries, charters, equity) = futures::join!(
            futures::future::join_all(
                req.queries
                    .into_iter()
                    .map(|q| self.query_indicator(part(from, q)))
            ),
            futures::future::join_all(
                req.charter_reports
                    .into_iter()
                    .map(|c| self.get_charter_report(part(from, c)))
            ),
            futures::future::join_all(
                req.equity_reports
                    .into_iter()
                    .map(|e| self.get_equity_report(part(from, e)))
            ),
        );
        use kpi::charter_report_result::Result as C;
        use kpi::equity_report_result::Result as E;
        use kpi::query_indicator_result::Result as Q;
        Ok(Response::new(kpi::BatchGetFiguresResponse {
            queries: queries
                .into_iter()
                .map(|r| kpi::QueryIndicatorResult {
                    result: Some(
                        r.map_or_else(|s| Q::Error(error(s)), |r| Q::Response(r.into_inner())),
                    ),
                })
                .collect(),
            charter_reports: charters
                .into_iter()
                .map(|r| kpi::CharterReportResult {
                    result: Some(
                        r.map_or_else(|s| C::Error(error(s)), |r| C::Report(r.into_inner())),
                    ),
                })
                .collect(),
            equity_reports: equity
                .into_iter()
                .map(|r| kpi::EquityReportResult {
                    result: Some(
                        r.map_or_else(|s| E::Error(error(s)), |r| E::Report(r.into_inner())),
                    ),
                })
                .collect(),
        }))
    }

    async fn create_standard(
        &self,
        _: Request<kpi::CreateStandardRequest>,
    ) -> Result<Response<kpi::Standard>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_standard(
        &self,
        _: Request<kpi::GetStandardRequest>,
    ) -> Result<Response<kpi::Standard>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_standards(
        &self,
        _: Request<kpi::ListStandardsRequest>,
    ) -> Result<Response<kpi::ListStandardsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn update_standard(
        &self,
        _: Request<kpi::UpdateStandardRequest>,
    ) -> Result<Response<kpi::Standard>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_standard(
        &self,
        _: Request<kpi::DeleteStandardRequest>,
    ) -> Result<Response<kpi::DeleteStandardResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_events(
        &self,
        _: Request<kpi::ListEventsRequest>,
    ) -> Result<Response<kpi::ListEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchEventsStream = tokio_stream::Empty<Result<touchstone_api::common::v1::Event, Status>>;

    async fn watch_events(
        &self,
        _: Request<kpi::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct Harness {
    dev: Arc<DevKey>,
    _dir: tempfile::TempDir,
    _dbs: Vec<TestDb>,
    register: Server,
    complaints: Server,
    _feedback: Server,
    _kpi: Server,
    kpi: Arc<Mutex<KpiState>>,
    gateway: Server,
    http: std::net::SocketAddr,
    /// The gateway's methods in process, over the same database, for what
    /// has no gRPC face (checking an API key).
    api: touchstone_gateway::api::Gateway,
}

const OFFICER: &[Role] = &[Role::Officer];
const ANALYST: &[Role] = &[Role::Analyst];
const ADMIN: &[Role] = &[Role::AgencyAdmin];
/// What `touchstone up` gives its development user.
const MANAGER: &[Role] = &[Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin];

impl Harness {
    /// Every dashboard computed (no cache), as the tests of what a
    /// dashboard shows need.
    async fn start() -> Harness {
        Harness::start_with(Duration::ZERO).await
    }

    /// The gateway keeping dashboards for `dashboard_cache`.
    async fn start_with(dashboard_cache: Duration) -> Harness {
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
        let keys = MasterKey::generate;

        let register_db = testing::fresh(&touchstone_register::migration_sets()).await;
        let register = Server::start(
            "register",
            touchstone_register::SERVICE_NAME,
            touchstone_register::routes(register_db.db.clone(), keys(), verifier.clone()),
            Some(register_db.db.clone()),
        )
        .await;

        let complaints_db = testing::fresh(&touchstone_complaints::migration_sets()).await;
        let peers =
            touchstone_complaints::Peers::connect(&register.url(), service_token("complaints"))
                .expect("peers");
        let (routes, tasks) =
            touchstone_complaints::start(complaints_db.db.clone(), keys(), verifier.clone(), peers);
        for t in tasks {
            t.abort();
        }
        let complaints = Server::start(
            "complaints",
            touchstone_complaints::SERVICE_NAME,
            routes,
            Some(complaints_db.db.clone()),
        )
        .await;

        let feedback_db = testing::fresh(&touchstone_feedback::migration_sets()).await;
        let peers = touchstone_feedback::Peers::connect(&register.url(), service_token("feedback"))
            .expect("peers");
        let (routes, tasks) =
            touchstone_feedback::start(feedback_db.db.clone(), keys(), verifier.clone(), peers);
        for t in tasks {
            t.abort();
        }
        let feedback = Server::start(
            "feedback",
            touchstone_feedback::SERVICE_NAME,
            routes,
            Some(feedback_db.db.clone()),
        )
        .await;

        let kpi_state = Arc::new(Mutex::new(KpiState::default()));
        let kpi = Server::start(
            "kpi",
            "touchstone.kpi.v1.KpiService",
            tonic::service::Routes::new(KpiServiceServer::with_interceptor(
                FakeKpi(kpi_state.clone()),
                AuthInterceptor::new(verifier.clone()),
            )),
            None,
        )
        .await;

        let gateway_db = testing::fresh(&touchstone_gateway::migration_sets()).await;
        let peers = touchstone_gateway::Peers::connect(
            &register.url(),
            &complaints.url(),
            &feedback.url(),
            &kpi.url(),
            service_token("gateway"),
            10,
        )
        .expect("peers");
        let mut peers = peers;
        peers.dashboard_cache = dashboard_cache;
        let api = touchstone_gateway::api::Gateway::new(
            gateway_db.db.clone(),
            keys(),
            peers.backends.clone(),
            10,
        );
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http");
        let http_addr = http.local_addr().expect("addr");
        let (routes, _tasks) = touchstone_gateway::start(
            gateway_db.db.clone(),
            keys(),
            verifier.clone(),
            peers,
            Some(http),
        );
        let gateway = Server::start(
            "gateway",
            touchstone_gateway::SERVICE_NAME,
            routes,
            Some(gateway_db.db.clone()),
        )
        .await;
        Harness {
            dev,
            _dir: dir,
            _dbs: vec![register_db, complaints_db, feedback_db, gateway_db],
            register,
            complaints,
            _feedback: feedback,
            _kpi: kpi,
            kpi: kpi_state,
            gateway,
            http: http_addr,
            api,
        }
    }

    fn token_as(&self, subject: &str, agency: Option<&str>, roles: &[Role]) -> String {
        self.dev
            .mint(&TokenRequest {
                subject: subject.into(),
                agency: agency.map(str::to_owned),
                agencies: if roles.contains(&Role::HubAdmin) {
                    Some(vec!["*".into()])
                } else {
                    None
                },
                roles: roles.to_vec(),
                ttl: Duration::from_secs(600),
                issuer: DevKey::ISSUER.into(),
                audience: DevKey::AUDIENCE.into(),
            })
            .expect("mint")
    }

    fn token(&self, agency: &str, roles: &[Role]) -> String {
        self.token_as(&format!("tester-{agency}"), Some(agency), roles)
    }

    fn hub(&self) -> String {
        self.token_as("hub-admin", None, &[Role::HubAdmin])
    }

    async fn channel(server: &Server) -> Channel {
        Channel::from_shared(server.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    async fn gateway(&self) -> GatewayServiceClient<Channel> {
        GatewayServiceClient::new(Self::channel(&self.gateway).await)
    }

    async fn complaints_client(&self) -> ComplaintsServiceClient<Channel> {
        ComplaintsServiceClient::new(Self::channel(&self.complaints).await)
    }

    async fn register_client(&self) -> RegisterServiceClient<Channel> {
        RegisterServiceClient::new(Self::channel(&self.register).await)
    }

    /// A raw HTTP/1.1 GET to the dashboard: status and body.
    async fn http_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.http("GET", path, token, None).await
    }

    /// A raw HTTP/1.1 POST of a JSON body to the dashboard: status and body.
    async fn http_post(&self, path: &str, token: &str, body: serde_json::Value) -> (u16, String) {
        self.http("POST", path, Some(token), Some(body)).await
    }

    /// A raw HTTP/1.1 POST of a form body: status, headers and body.
    async fn http_form(&self, path: &str, form: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("connect");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            form.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_string(), body.to_string())
    }

    async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.http)
            .await
            .expect("connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let content = if body.is_empty() {
            String::new()
        } else {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{content}Connection: close\r\n\r\n{body}"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
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

fn complaint(who: cpb::complainant::Who) -> cpb::Complaint {
    cpb::Complaint {
        complainant: Some(cpb::Complainant { who: Some(who) }),
        channel: Via::Web as i32,
        unit: "passports-north".into(),
        service: "passport renewal".into(),
        category: "delay".into(),
        description: "It took months.".into(),
        severity: cpb::Severity::High as i32,
        ..Default::default()
    }
}

/// Audit records in a backend's database, counted as its owner (every
/// agency's).
async fn audit_rows(db: &TestDb) -> i64 {
    let owner = db.admin.as_ref().unwrap_or(&db.db);
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_records")
        .fetch_one(owner.pool())
        .await
        .expect("audit count")
}

async fn file_complaint(h: &Harness, agency: &str, who: cpb::complainant::Who) -> cpb::Complaint {
    h.complaints_client()
        .await
        .create_complaint(req(
            cpb::CreateComplaintRequest {
                parent: format!("agencies/{agency}"),
                complaint: Some(complaint(who)),
                complaint_id: String::new(),
                request_id: String::new(),
            },
            &h.token(agency, OFFICER),
        ))
        .await
        .expect("complaint")
        .into_inner()
}

async fn dashboard(
    h: &Harness,
    agency: &str,
    token: &str,
    timeout: Option<Duration>,
) -> Result<pb::Dashboard, Status> {
    let mut r = req(
        pb::GetDashboardRequest {
            agency: format!("agencies/{agency}"),
            period: "2026-Q3".into(),
        },
        token,
    );
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    h.gateway()
        .await
        .get_dashboard(r)
        .await
        .map(Response::into_inner)
}

/// A dashboard of a quarter that does not exist is refused, naming `period`.
async fn bad_period_is_refused(h: &Harness, token: &str) {
    let e = h
        .gateway()
        .await
        .get_dashboard(req(
            pb::GetDashboardRequest {
                agency: "agencies/passports".into(),
                period: "2026-Q9".into(),
            },
            token,
        ))
        .await
        .expect_err("bad period");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(violations(&e), ["period"]);
}

#[tokio::test]
async fn dashboard_joins_every_backend_with_the_callers_token() {
    let h = Harness::start().await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    file_complaint(&h, "customs", cpb::complainant::Who::Anonymous(true)).await;
    let d = dashboard(
        &h,
        "passports",
        &h.token_as("manager-1", Some("passports"), MANAGER),
        None,
    )
    .await
    .expect("dashboard");
    assert!(d.unreachable.is_empty(), "{:?}", d.unreachable);
    assert!(d.withheld.is_empty(), "{:?}", d.withheld);
    assert_eq!(d.period, "2026-Q3");
    let c = d.complaints.expect("complaints");
    assert_eq!(c.open, 2, "only this agency's complaints");
    assert_eq!(c.queue.len(), 2);
    assert!(
        c.queue
            .iter()
            .all(|q| q.complaint.starts_with("agencies/passports/"))
    );
    assert_eq!(c.counts.len(), 1);
    assert_eq!(c.counts[0].severity, cpb::Severity::High as i32);
    // Charter lines with the trend against the previous quarter.
    assert_eq!(d.headlines.len(), 1);
    assert_eq!(d.headlines[0].trend, pb::Trend::Up as i32);
    assert!(d.headlines[0].significant_change);
    let f = d.feedback.expect("feedback");
    assert_eq!(f.satisfaction.and_then(|v| v.n.into()), Some(100));
    assert_eq!(f.follow_ups_open, 0);
    let significant: Vec<_> = d
        .equity
        .iter()
        .filter(|g| g.segment.as_ref().is_some_and(|s| s.significant))
        .collect();
    assert_eq!(significant.len(), 1);
    // The KPI service saw the caller's own token, not the gateway's.
    let subjects = h.kpi.lock().expect("lock").subjects.clone();
    assert!(!subjects.is_empty());
    assert!(subjects.iter().all(|s| s == "manager-1"), "{subjects:?}");

    // An analyst sees the figures but not the complaints queue or follow-ups.
    let d = dashboard(&h, "passports", &h.token("passports", ANALYST), None)
        .await
        .expect("analyst dashboard");
    assert!(d.complaints.is_none());
    assert!(
        d.withheld.contains(&"complaints".to_string()),
        "{:?}",
        d.withheld
    );
    assert!(
        d.withheld.contains(&"follow_ups".to_string()),
        "{:?}",
        d.withheld
    );
    assert!(d.unreachable.is_empty());
    assert_eq!(d.headlines.len(), 1);

    // Another agency's dashboard, a bad period, a role without dashboards.
    let e = dashboard(&h, "customs", &h.token("passports", MANAGER), None)
        .await
        .expect_err("tenancy");
    assert_eq!(e.code(), Code::PermissionDenied);
    bad_period_is_refused(&h, &h.token("passports", MANAGER)).await;
    let e = dashboard(
        &h,
        "passports",
        &h.token("passports", &[Role::Intake]),
        None,
    )
    .await
    .expect_err("intake");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = h
        .gateway()
        .await
        .get_dashboard(Request::new(pb::GetDashboardRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
}

/// Figures the KPI service was asked for so far.
fn kpi_calls(h: &Harness) -> usize {
    h.kpi.lock().expect("lock").subjects.len()
}

#[tokio::test]
async fn kept_dashboards_are_the_callers_own_and_a_change_through_the_gateway_forgets_them() {
    let h = Harness::start_with(Duration::from_secs(60)).await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    let open = |d: &pb::Dashboard| d.complaints.as_ref().map(|c| c.open);
    // One subject, several role sets and scopes: each its own dashboard.
    let manager = h.token("passports", MANAGER);
    let analyst = h.token("passports", ANALYST);
    let both = h.token("passports", &[Role::Analyst, Role::Officer]);
    let d = dashboard(&h, "passports", &manager, None)
        .await
        .expect("manager");
    assert_eq!(open(&d), Some(2));
    // The KPI calls one dashboard makes (its figures are checked one by one).
    let one = kpi_calls(&h);
    assert!(one > 0);
    let d = dashboard(&h, "passports", &manager, None)
        .await
        .expect("again");
    assert_eq!(open(&d), Some(2));
    assert_eq!(kpi_calls(&h), one, "kept: not computed again");
    let d = dashboard(&h, "passports", &analyst, None)
        .await
        .expect("analyst");
    assert_eq!(
        d.complaints, None,
        "the manager's queue is not the analyst's"
    );
    assert!(d.withheld.contains(&"complaints".to_string()), "{d:?}");
    assert_eq!(kpi_calls(&h), 2 * one);
    let d = dashboard(&h, "passports", &both, None).await.expect("both");
    assert_eq!(open(&d), Some(2));
    assert_eq!(kpi_calls(&h), 3 * one);
    // The manager's roles and subject with a wider agency scope.
    let scoped = h
        .dev
        .mint(&TokenRequest {
            subject: "tester-passports".into(),
            agency: Some("passports".into()),
            agencies: Some(vec!["customs".into()]),
            roles: MANAGER.to_vec(),
            ttl: Duration::from_secs(600),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
        })
        .expect("mint");
    let d = dashboard(&h, "passports", &scoped, None)
        .await
        .expect("scoped");
    assert_eq!(open(&d), Some(2));
    assert_eq!(kpi_calls(&h), 4 * one);
    let d = dashboard(&h, "passports", &analyst, None)
        .await
        .expect("analyst again");
    assert_eq!(d.complaints, None);
    assert_eq!(kpi_calls(&h), 4 * one);
    // Another agency's manager is refused before any kept answer is looked
    // at.
    let e = dashboard(&h, "passports", &h.token("customs", MANAGER), None)
        .await
        .expect_err("another agency's manager");
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "authorized before the cache"
    );
    // A bad period is refused every time, never kept.
    let before = kpi_calls(&h);
    for _ in 0..2 {
        bad_period_is_refused(&h, &manager).await;
    }
    assert_eq!(kpi_calls(&h), before, "refused before any computation");
    // The same quarter spelled another way is the same dashboard.
    let mut r = req(
        pb::GetDashboardRequest {
            agency: "agencies/passports".into(),
            period: " 2026Q3 ".into(),
        },
        &manager,
    );
    r.set_timeout(Duration::from_secs(5));
    let d = h
        .gateway()
        .await
        .get_dashboard(r)
        .await
        .expect("2026Q3")
        .into_inner();
    assert_eq!((d.period.as_str(), open(&d)), ("2026-Q3", Some(2)));
    assert_eq!(kpi_calls(&h), 4 * one);
    let computed = kpi_calls(&h);

    // A complaint made at the complaints service directly shows once the
    // kept answer expires (here, not within the test's minute)...
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    let d = dashboard(&h, "passports", &manager, None)
        .await
        .expect("kept");
    assert_eq!(open(&d), Some(2));
    assert_eq!(kpi_calls(&h), computed);
    // ...and one made through the gateway's desk forgets the agency's
    // dashboards at once, every caller's.
    let record = serde_json::json!({"request_id": "8d3c0d1e-2b4f-4c86-9d41-5d0f6c1d2e05",
        "anonymous": true, "channel": "phone", "category": "delay",
        "description": "Waited at the counter for two hours"});
    let (status, body) = h.http_post("/api/complaints", &manager, record).await;
    assert_eq!(status, 200, "{body}");
    let d = dashboard(&h, "passports", &manager, None)
        .await
        .expect("fresh");
    assert_eq!(open(&d), Some(4));
    let d = dashboard(&h, "passports", &both, None)
        .await
        .expect("fresh");
    assert_eq!(open(&d), Some(4));
    assert_eq!(kpi_calls(&h), computed + 2 * one);
    // So does the agency's entry in the directory (its time zone).
    create_agency(&h, "passports", pb::BenchmarkConsent::Named, &h.hub())
        .await
        .expect("agency");
    dashboard(&h, "passports", &manager, None)
        .await
        .expect("recomputed");
    assert_eq!(kpi_calls(&h), computed + 3 * one);
}

#[tokio::test]
async fn a_stopped_backend_is_named_and_the_rest_stays() {
    let mut h = Harness::start().await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    h.complaints.stop().await;
    let d = dashboard(&h, "passports", &h.token("passports", MANAGER), None)
        .await
        .expect("dashboard");
    assert_eq!(d.unreachable, ["complaints"]);
    assert!(d.complaints.is_none());
    assert_eq!(d.headlines.len(), 1, "the KPI part is intact");
    assert!(d.feedback.is_some());
}

#[tokio::test]
async fn a_slow_backend_does_not_hold_the_callers_deadline() {
    let h = Harness::start().await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    h.kpi.lock().expect("lock").delay = Duration::from_secs(30);
    // The caller gives the gateway two seconds; the KPI service would take
    // thirty. The dashboard comes back (not DEADLINE_EXCEEDED) without it.
    let d = dashboard(
        &h,
        "passports",
        &h.token("passports", MANAGER),
        Some(Duration::from_secs(2)),
    )
    .await
    .expect("an answer within the deadline");
    assert_eq!(d.unreachable, ["kpi"]);
    assert!(d.headlines.is_empty());
    assert_eq!(d.complaints.expect("complaints").open, 1);
}

/// The gateway runs at most four fan-out reads per CPU at once; one more
/// waits a moment for a turn and is then refused with RESOURCE_EXHAUSTED
/// (CONCURRENCY_LIMIT_EXCEEDED), while the admitted ones answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_past_the_fan_out_limit_are_refused_not_queued_forever() {
    let h = Harness::start().await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    // Each admitted dashboard holds its turn until its caller's deadline.
    h.kpi.lock().expect("lock").delay = Duration::from_secs(30);
    let turns = 4 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let token = h.token("passports", MANAGER);
    let h = Arc::new(h);
    let calls: Vec<_> = (0..turns)
        .map(|_| {
            let (h, token) = (h.clone(), token.clone());
            tokio::spawn(async move {
                dashboard(&h, "passports", &token, Some(Duration::from_secs(4))).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = dashboard(&h, "passports", &token, Some(Duration::from_secs(10)))
        .await
        .expect_err("no turn left");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&refused), "CONCURRENCY_LIMIT_EXCEEDED");
    // A bad request is told so, turns or not.
    let bad = h
        .gateway()
        .await
        .get_dashboard(req(
            pb::GetDashboardRequest {
                agency: "agencies/passports".into(),
                period: "someday".into(),
            },
            &token,
        ))
        .await
        .expect_err("a bad period");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    for call in calls {
        // Admitted, each answers by its deadline (on a busy machine other
        // backends may miss it too; the KPI service always does).
        let d = call
            .await
            .expect("task")
            .expect("an admitted dashboard answers");
        assert!(
            d.unreachable.iter().any(|b| b == "kpi"),
            "{:?}",
            d.unreachable
        );
    }
    // With the turns back, the next dashboard is admitted.
    h.kpi.lock().expect("lock").delay = Duration::ZERO;
    dashboard(&h, "passports", &token, None)
        .await
        .expect("admitted again");
}

async fn create_agency(
    h: &Harness,
    id: &str,
    consent: pb::BenchmarkConsent,
    token: &str,
) -> Result<pb::Agency, Status> {
    h.gateway()
        .await
        .create_agency(req(
            pb::CreateAgencyRequest {
                agency: Some(pb::Agency {
                    display_name: format!("Agency {}", id.to_uppercase()),
                    time_zone: "Australia/Sydney".into(),
                    benchmark_consent: consent as i32,
                    ..Default::default()
                }),
                agency_id: id.into(),
                request_id: format!("create-{id}"),
            },
            token,
        ))
        .await
        .map(Response::into_inner)
}

#[tokio::test]
async fn directory_roles_tenancy_and_validation() {
    let h = Harness::start().await;
    let mut g = h.gateway().await;
    let hub = h.hub();
    let a = create_agency(&h, "passports", pb::BenchmarkConsent::Named, &hub)
        .await
        .expect("create");
    assert_eq!(a.name, "agencies/passports");
    assert_eq!(a.benchmark_consent, pb::BenchmarkConsent::Named as i32);
    // A retry returns the first answer.
    let again = create_agency(&h, "passports", pb::BenchmarkConsent::Named, &hub)
        .await
        .expect("retry");
    assert_eq!(again, a);
    let e = g
        .create_agency(req(
            pb::CreateAgencyRequest {
                agency: Some(pb::Agency {
                    display_name: "Other".into(),
                    time_zone: "Australia/Sydney".into(),
                    ..Default::default()
                }),
                agency_id: "passports".into(),
                request_id: "another".into(),
            },
            &hub,
        ))
        .await
        .expect_err("taken");
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = create_agency(
        &h,
        "customs",
        pb::BenchmarkConsent::None,
        &h.token("customs", ADMIN),
    )
    .await
    .expect_err("only hub_admin");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = g
        .create_agency(req(
            pb::CreateAgencyRequest {
                agency: Some(pb::Agency {
                    display_name: String::new(),
                    time_zone: "Mars/Olympus".into(),
                    ..Default::default()
                }),
                agency_id: "Bad Id".into(),
                request_id: String::new(),
            },
            &hub,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&e),
        ["agency_id", "agency.display_name", "agency.time_zone"]
    );
    create_agency(&h, "customs", pb::BenchmarkConsent::Anonymous, &hub)
        .await
        .expect("customs");

    // Reads: own agency, or hub_admin.
    let own = g
        .get_agency(req(
            pb::GetAgencyRequest {
                name: "agencies/passports".into(),
            },
            &h.token("passports", ANALYST),
        ))
        .await
        .expect("own")
        .into_inner();
    assert_eq!(own.display_name, "Agency PASSPORTS");
    let e = g
        .get_agency(req(
            pb::GetAgencyRequest {
                name: "agencies/customs".into(),
            },
            &h.token("passports", ADMIN),
        ))
        .await
        .expect_err("other agency");
    assert_eq!(e.code(), Code::PermissionDenied);
    let all = g
        .list_agencies(req(
            pb::ListAgenciesRequest {
                page_size: 1,
                page_token: String::new(),
            },
            &hub,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.agencies.len(), 1);
    assert!(!all.next_page_token.is_empty());
    let rest = g
        .list_agencies(req(
            pb::ListAgenciesRequest {
                page_size: 1,
                page_token: all.next_page_token,
            },
            &hub,
        ))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.agencies[0].name, "agencies/passports");
    assert!(rest.next_page_token.is_empty());
    let mine = g
        .list_agencies(req(
            pb::ListAgenciesRequest::default(),
            &h.token("customs", ANALYST),
        ))
        .await
        .expect("own list")
        .into_inner();
    assert_eq!(mine.agencies.len(), 1);
    assert_eq!(mine.agencies[0].name, "agencies/customs");

    // Updates with etags.
    let update =
        |etag: &str, consent: pb::BenchmarkConsent, request_id: &str| pb::UpdateAgencyRequest {
            agency: Some(pb::Agency {
                name: "agencies/customs".into(),
                benchmark_consent: consent as i32,
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["benchmark_consent".into()],
            }),
            request_id: request_id.into(),
        };
    let e = g
        .update_agency(req(
            update("\"7\"", pb::BenchmarkConsent::Named, "u1"),
            &hub,
        ))
        .await
        .expect_err("stale");
    assert_eq!(e.code(), Code::Aborted);
    let updated = g
        .update_agency(req(
            update("\"1\"", pb::BenchmarkConsent::Named, "u2"),
            &hub,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        updated.benchmark_consent,
        pb::BenchmarkConsent::Named as i32
    );
    assert_eq!(
        updated.display_name, "Agency CUSTOMS",
        "outside the mask, unchanged"
    );
    let e = g
        .update_agency(req(
            update("", pb::BenchmarkConsent::None, "u3"),
            &h.token("customs", ADMIN),
        ))
        .await
        .expect_err("consent is the hub's");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Units: the agency's own agency_admin.
    let unit = |agency: &str, id: &str| pb::CreateUnitRequest {
        parent: format!("agencies/{agency}"),
        unit: Some(pb::Unit {
            display_name: "Passports North".into(),
            ..Default::default()
        }),
        unit_id: id.into(),
        request_id: String::new(),
    };
    let u = g
        .create_unit(req(
            unit("passports", "north"),
            &h.token("passports", ADMIN),
        ))
        .await
        .expect("unit")
        .into_inner();
    assert_eq!(u.name, "agencies/passports/units/north");
    for (token, code) in [
        (h.token("customs", ADMIN), Code::PermissionDenied),
        (h.token("passports", OFFICER), Code::PermissionDenied),
        (hub.clone(), Code::PermissionDenied),
    ] {
        let e = g
            .create_unit(req(unit("passports", "south"), &token))
            .await
            .expect_err("not the agency's admin");
        assert_eq!(e.code(), code);
    }
    let e = g
        .create_unit(req(unit("unlisted", "x"), &h.token("unlisted", ADMIN)))
        .await
        .expect_err("agency not in the directory");
    assert_eq!(reason(&e), "AGENCY_NOT_IN_DIRECTORY");
    let units = g
        .list_units(req(
            pb::ListUnitsRequest {
                parent: "agencies/passports".into(),
                ..Default::default()
            },
            &h.token("passports", OFFICER),
        ))
        .await
        .expect("units")
        .into_inner();
    assert_eq!(units.units, std::slice::from_ref(&u));
    let e = g
        .list_units(req(
            pb::ListUnitsRequest {
                parent: "agencies/passports".into(),
                ..Default::default()
            },
            &h.token("customs", OFFICER),
        ))
        .await
        .expect_err("another agency's units");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = g
        .list_units(req(
            pb::ListUnitsRequest {
                parent: "agencies/passports".into(),
                page_size: -1,
                ..Default::default()
            },
            &h.token("passports", OFFICER),
        ))
        .await
        .expect_err("negative page size");
    assert_eq!(violations(&e), ["page_size"]);
    g.delete_unit(req(
        pb::DeleteUnitRequest {
            name: u.name.clone(),
            etag: u.etag.clone(),
        },
        &h.token("passports", ADMIN),
    ))
    .await
    .expect("delete");
    let e = g
        .get_unit(req(
            pb::GetUnitRequest { name: u.name },
            &h.token("passports", ADMIN),
        ))
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);

    // Peer groups: members must be in the directory.
    let e = g
        .create_peer_group(req(
            pb::CreatePeerGroupRequest {
                peer_group: Some(pb::PeerGroup {
                    display_name: "Licensing".into(),
                    agencies: vec!["agencies/passports".into(), "agencies/nowhere".into()],
                    ..Default::default()
                }),
                peer_group_id: "licensing".into(),
                request_id: String::new(),
            },
            &hub,
        ))
        .await
        .expect_err("unknown member");
    assert_eq!(violations(&e), ["peer_group.agencies[1]"]);
}

/// A hub of six agencies in one peer group, with the given figures.
async fn benchmark_hub(h: &Harness) {
    let hub = h.hub();
    use pb::BenchmarkConsent::{Anonymous, Named, None as NoConsent};
    for (id, consent) in [
        ("a", Anonymous),
        ("b", Named),
        ("c", Anonymous),
        ("d", NoConsent),
        ("e", Anonymous),
        ("f", Anonymous),
    ] {
        create_agency(h, id, consent, &hub).await.expect("agency");
    }
    create_agency(h, "outsider", Anonymous, &hub)
        .await
        .expect("agency");
    h.gateway()
        .await
        .create_peer_group(req(
            pb::CreatePeerGroupRequest {
                peer_group: Some(pb::PeerGroup {
                    display_name: "Licensing".into(),
                    agencies: ["a", "b", "c", "d", "e", "f"]
                        .iter()
                        .map(|a| format!("agencies/{a}"))
                        .collect(),
                    ..Default::default()
                }),
                peer_group_id: "licensing".into(),
                request_id: String::new(),
            },
            &hub,
        ))
        .await
        .expect("peer group");
    let mut s = h.kpi.lock().expect("lock");
    s.across = HashMap::from([
        ("a".to_string(), share(180, 200)),
        ("b".to_string(), share(120, 150)),
        ("c".to_string(), share(70, 100)),
        ("d".to_string(), share(99, 100)),
        // Below k = 10: withheld by the KPI service, which says nothing more.
        (
            "e".to_string(),
            kpi::Value {
                suppressed: true,
                ..Default::default()
            },
        ),
        ("f".to_string(), share(300, 400)),
    ]);
}

fn benchmark_request() -> pb::GetBenchmarkRequest {
    pb::GetBenchmarkRequest {
        indicator: SATISFACTION.into(),
        period: "2026-Q3".into(),
        peer_group: "peerGroups/licensing".into(),
    }
}

#[tokio::test]
async fn benchmark_discloses_only_what_consent_and_counts_allow() {
    let h = Harness::start().await;
    benchmark_hub(&h).await;
    let mut g = h.gateway().await;
    let b = g
        .get_benchmark(req(
            benchmark_request(),
            &h.token_as("analyst-a", Some("a"), ANALYST),
        ))
        .await
        .expect("benchmark")
        .into_inner();
    assert!(b.unreachable.is_empty());
    // d gave no consent: not asked for, not shown.
    let asked = h.kpi.lock().expect("lock").asked.clone();
    assert_eq!(asked, [vec!["a", "b", "c", "e", "f"]]);
    assert_eq!(b.entries.len(), 5);
    // The gateway read the peers on its own behalf (an analyst's token does
    // not reach other agencies), and the catalogue with the caller's token.
    let subjects = h.kpi.lock().expect("lock").subjects.clone();
    assert!(subjects.contains(&"gateway".to_string()), "{subjects:?}");
    assert!(subjects.contains(&"analyst-a".to_string()), "{subjects:?}");

    let by_label: HashMap<&str, &pb::BenchmarkEntry> =
        b.entries.iter().map(|e| (e.label.as_str(), e)).collect();
    let own = by_label["Agency A"];
    assert_eq!(own.agency, "agencies/a");
    assert_eq!(own.disclosure, pb::Disclosure::Own as i32);
    assert_eq!(own.rank, 1);
    assert_eq!(own.quartile, 1);
    let named = by_label["Agency B"];
    assert_eq!(named.agency, "agencies/b");
    assert_eq!(named.disclosure, pb::Disclosure::Named as i32);
    // Anonymous peers carry neither name nor id.
    let anonymous: Vec<_> = b
        .entries
        .iter()
        .filter(|e| e.disclosure == pb::Disclosure::Anonymous as i32)
        .collect();
    assert_eq!(anonymous.len(), 3);
    assert!(
        anonymous
            .iter()
            .all(|e| e.agency.is_empty() && e.label.starts_with("Peer "))
    );
    assert!(
        !b.entries
            .iter()
            .any(|e| e.label.contains('C') && e.label.contains("Agency"))
    );
    // e is withheld by the KPI service (no count at all); the total minus
    // the published figures would give it away, so the total is withheld
    // and no peer needs to go with it (issue 12).
    let primary: Vec<_> = b
        .entries
        .iter()
        .filter(|e| e.suppression == pb::Suppression::Primary as i32)
        .collect();
    assert_eq!(primary.len(), 1);
    assert!(
        !b.entries
            .iter()
            .any(|e| e.suppression == pb::Suppression::Secondary as i32)
    );
    for e in &primary {
        let v = e.value.expect("value");
        assert!(v.suppressed);
        assert_eq!((v.n, v.value, v.numerator), (0, None, None));
        assert_eq!(e.rank, 0);
    }
    let published_n: i64 = b
        .entries
        .iter()
        .filter_map(|e| e.value.filter(|v| !v.suppressed).map(|v| v.n))
        .sum();
    assert_eq!(published_n, 200 + 150 + 100 + 400);
    assert_eq!((b.total_n, b.pooled_value), (None, None));
    // Median of the published values (0.9, 0.8, 0.75, 0.7) and the comparison.
    assert!((b.peer_median.expect("median") - 0.775).abs() < 1e-9);
    assert_eq!(own.versus_median, pb::Comparison::Above as i32);
    assert_eq!(named.versus_median, pb::Comparison::NotSignificant as i32);

    // A hub_admin sees no one as its own, and reads with its own token.
    let b = g
        .get_benchmark(req(benchmark_request(), &h.hub()))
        .await
        .expect("hub benchmark")
        .into_inner();
    assert!(
        b.entries
            .iter()
            .all(|e| e.disclosure != pb::Disclosure::Own as i32)
    );
    assert_eq!(
        b.entries
            .iter()
            .filter(|e| e.disclosure == pb::Disclosure::Anonymous as i32)
            .count(),
        4
    );

    // Without consent an agency sees no benchmark; outside the group, none either.
    let e = g
        .get_benchmark(req(benchmark_request(), &h.token("d", ANALYST)))
        .await
        .expect_err("no consent");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason(&e), "BENCHMARK_CONSENT_REQUIRED");
    let e = g
        .get_benchmark(req(benchmark_request(), &h.token("outsider", ANALYST)))
        .await
        .expect_err("not a member");
    assert_eq!(e.code(), Code::NotFound);
    let e = g
        .get_benchmark(req(benchmark_request(), &h.token("a", OFFICER)))
        .await
        .expect_err("officers do not benchmark");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = g
        .get_benchmark(req(
            pb::GetBenchmarkRequest {
                indicator: "no_such_thing".into(),
                ..benchmark_request()
            },
            &h.token("a", ANALYST),
        ))
        .await
        .expect_err("unknown indicator");
    assert_eq!(violations(&e), ["indicator"]);
    let e = g
        .get_benchmark(req(
            pb::GetBenchmarkRequest {
                indicator: String::new(),
                period: "soon".into(),
                peer_group: "groups/x".into(),
            },
            &h.token("a", ANALYST),
        ))
        .await
        .expect_err("bad request");
    assert_eq!(violations(&e), ["indicator", "peer_group", "period"]);
}

async fn export(h: &Harness, token: String, name: String) -> Result<pb::ClientDataExport, Status> {
    h.gateway()
        .await
        .export_client_data(req(pb::ExportClientDataRequest { client: name }, &token))
        .await
        .map(Response::into_inner)
}

#[tokio::test]
async fn export_gathers_one_clients_data() {
    let mut h = Harness::start().await;
    let officer = h.token("passports", OFFICER);
    let client = h
        .register_client()
        .await
        .create_client(req(
            reg::CreateClientRequest {
                parent: "agencies/passports".into(),
                client: Some(reg::Client {
                    kind: reg::ClientKind::Person as i32,
                    given_names: "Aroha".into(),
                    family_name: "Ngata".into(),
                    email: "aroha@example.org".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("client")
        .into_inner();
    let mine = file_complaint(
        &h,
        "passports",
        cpb::complainant::Who::Client(client.name.clone()),
    )
    .await;
    file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    let x = export(&h, officer.clone(), client.name.clone())
        .await
        .expect("export");
    assert!(x.unreachable.is_empty());
    assert_eq!(
        x.register.expect("register").client.expect("client").email,
        "aroha@example.org"
    );
    assert_eq!(x.complaints.len(), 1);
    assert_eq!(x.complaints[0].name, mine.name);
    let e = export(&h, h.token("passports", ANALYST), client.name.clone())
        .await
        .expect_err("analyst");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = export(&h, h.token("customs", OFFICER), client.name.clone())
        .await
        .expect_err("tenancy");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = export(
        &h,
        officer.clone(),
        "agencies/passports/clients/nobody".into(),
    )
    .await
    .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    h.complaints.stop().await;
    let x = export(&h, officer, client.name.clone())
        .await
        .expect("partial export");
    assert_eq!(x.unreachable, ["complaints"]);
    assert!(x.register.is_some());
}

#[tokio::test]
async fn json_api_and_pages_answer() {
    let h = Harness::start().await;
    benchmark_hub(&h).await;
    file_complaint(&h, "a", cpb::complainant::Who::Anonymous(true)).await;
    let (status, body) = h.http_get("/", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("<main"), "{body}");
    for asset in ["/assets/app.js", "/assets/app.css"] {
        assert_eq!(h.http_get(asset, None).await.0, 200, "{asset}");
    }
    let (status, body) = h.http_get("/api/dashboard", None).await;
    assert_eq!(status, 401);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["error"]["code"], "Unauthenticated");

    let token = h.token_as("manager-a", Some("a"), &[Role::Officer, Role::AgencyAdmin]);
    let (status, body) = h.http_get("/api/me", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let me: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(me["agency"], "a");

    let (status, body) = h
        .http_get("/api/dashboard?period=2026-Q3", Some(&token))
        .await;
    assert_eq!(status, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(d["agency"], "agencies/a");
    assert_eq!(d["complaints"]["open"], 1);
    assert_eq!(d["complaints"]["queue"][0]["severity"], "HIGH");
    assert_eq!(d["headlines"][0]["verdict"], "MET");
    assert_eq!(d["headlines"][0]["trend"], "UP");
    assert_eq!(d["equity"][0]["dimension"], "DISABILITY");
    assert_eq!(d["start_date"], "2026-07-01");

    let (status, body) = h
        .http_get("/api/dashboard?period=nonsense", Some(&token))
        .await;
    assert_eq!(status, 400);
    let e: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(e["error"]["fields"][0]["field"], "period");

    let (status, body) = h
        .http_get(
            "/api/benchmark?peer_group=peerGroups/licensing&indicator=share_satisfied.a11_satisfaction&period=2026-Q3",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let b: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(b["entries"].as_array().expect("entries").len(), 5);
    assert_eq!(b["entries"][0]["disclosure"], "OWN");
    for path in ["/api/peer-groups", "/api/agencies", "/api/indicators"] {
        let (status, body) = h.http_get(path, Some(&token)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(h.http_get("/nothing-here", None).await.0, 404);
}

#[tokio::test]
async fn api_keys_are_issued_hashed_revoked_and_rate_limited() {
    let h = Harness::start().await;
    let mut g = h.gateway().await;
    create_agency(&h, "passports", pb::BenchmarkConsent::Named, &h.hub())
        .await
        .expect("agency");
    create_agency(&h, "tax", pb::BenchmarkConsent::Named, &h.hub())
        .await
        .expect("agency");
    let admin = h.token("passports", ADMIN);
    let create = |id: &str, rate: i32, request_id: &str| pb::CreateApiKeyRequest {
        parent: "agencies/passports".into(),
        api_key: Some(pb::ApiKey {
            display_name: format!("System {id}"),
            requests_per_minute: rate,
            ..Default::default()
        }),
        api_key_id: id.into(),
        request_id: request_id.into(),
    };
    let made = g
        .create_api_key(req(create("web-forms", 3, "k1"), &admin))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(made.name, "agencies/passports/apiKeys/web-forms");
    assert!(made.key.starts_with("ts311_"), "the key is in the answer");
    assert_eq!(made.requests_per_minute, 3);
    // A retry answers the same key record, without the secret (not kept).
    let again = g
        .create_api_key(req(create("web-forms", 3, "k1"), &admin))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again.name, made.name);
    assert!(again.key.is_empty());
    // Listing never shows the key.
    let listed = g
        .list_api_keys(req(
            pb::ListApiKeysRequest {
                parent: "agencies/passports".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    assert!(listed.api_keys[0].key.is_empty());
    assert_eq!(listed.api_keys[0].requests_per_minute, 3);

    // Only agency_admin of the agency: an officer, or another agency's admin, may not.
    for (token, code) in [
        (h.token("passports", OFFICER), Code::PermissionDenied),
        (h.token("tax", ADMIN), Code::PermissionDenied),
        (h.hub(), Code::PermissionDenied),
    ] {
        let e = g
            .create_api_key(req(create("other", 0, "k2"), &token))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), code);
    }
    let e = g
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                name: made.name.clone(),
                request_id: "r0".into(),
            },
            &h.token("tax", ADMIN),
        ))
        .await
        .expect_err("other agency");
    assert_eq!(e.code(), Code::NotFound);
    // Every bad field is named.
    let e = g
        .create_api_key(req(
            pb::CreateApiKeyRequest {
                parent: "agencies/passports".into(),
                api_key: Some(pb::ApiKey {
                    requests_per_minute: -5,
                    ..Default::default()
                }),
                api_key_id: "Bad Id".into(),
                request_id: "k3".into(),
            },
            &admin,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        violations(&e),
        vec![
            "api_key_id".to_string(),
            "api_key.display_name".to_string(),
            "api_key.requests_per_minute".to_string()
        ]
    );

    // The key names its agency, and its rate holds per minute.
    let grant = h.api.verify_api_key(&made.key).await.expect("valid key");
    assert_eq!(grant.agency, "passports");
    assert_eq!(grant.key, made.name);
    // Rate 3 a minute: within at most two windows a call is refused (the
    // clock's minute may turn between calls, which restarts the count).
    let mut admitted = 1;
    let refused = loop {
        match h.api.verify_api_key(&made.key).await {
            Ok(_) if admitted < 7 => admitted += 1,
            Ok(_) => break None,
            Err(e) => break Some(Status::from(e)),
        }
    };
    assert_eq!(refused.map(|e| e.code()), Some(Code::ResourceExhausted));
    assert!(admitted >= 3, "{admitted}");
    for bad in ["", "ts311_nope", "web-forms"] {
        let e = Status::from(h.api.verify_api_key(bad).await.expect_err("unknown"));
        assert_eq!(e.code(), Code::PermissionDenied);
    }

    // Revoked: refused from then on; a second revocation keeps the first time.
    let revoked = g
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                name: made.name.clone(),
                request_id: "r1".into(),
            },
            &admin,
        ))
        .await
        .expect("revoke")
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    let twice = g
        .revoke_api_key(req(
            pb::RevokeApiKeyRequest {
                name: made.name.clone(),
                request_id: "r2".into(),
            },
            &admin,
        ))
        .await
        .expect("revoke again")
        .into_inner();
    assert_eq!(twice.revoke_time, revoked.revoke_time);
    let e = Status::from(h.api.verify_api_key(&made.key).await.expect_err("revoked"));
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn open311_discovery_services_and_errors_over_raw_http() {
    let h = Harness::start().await;
    let mut g = h.gateway().await;
    create_agency(&h, "passports", pb::BenchmarkConsent::Named, &h.hub())
        .await
        .expect("agency");
    let admin = h.token("passports", ADMIN);
    // Nothing offered yet: an empty list, and the one agency needs no jurisdiction_id.
    assert_eq!(
        h.http_get("/open311/v2/services.json", None).await,
        (200, "[]".to_string())
    );
    let service = |code: &str, request_id: &str| pb::CreateOpen311ServiceRequest {
        parent: "agencies/passports".into(),
        open311_service: Some(pb::Open311Service {
            display_name: "Passport <delays> & waits".into(),
            description: "Your passport is late.".into(),
            group: "passports".into(),
            keywords: vec!["late".into(), "slow".into()],
            complaint_category: "delay".into(),
            ..Default::default()
        }),
        open311_service_id: code.into(),
        request_id: request_id.into(),
    };
    let made = g
        .create_open311_service(req(service("delay", "s1"), &admin))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(made.name, "agencies/passports/open311Services/delay");
    // agency_admin of the agency only; every bad field named.
    let e = g
        .create_open311_service(req(service("other", "s2"), &h.token("passports", OFFICER)))
        .await
        .expect_err("officer");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = g
        .create_open311_service(req(
            pb::CreateOpen311ServiceRequest {
                parent: "agencies/passports".into(),
                open311_service: Some(pb::Open311Service {
                    keywords: vec!["a,b".into()],
                    ..Default::default()
                }),
                open311_service_id: "Bad".into(),
                request_id: "s3".into(),
            },
            &admin,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        violations(&e),
        vec![
            "open311_service_id".to_string(),
            "open311_service.display_name".to_string(),
            "open311_service.keywords[0]".to_string(),
            "open311_service.complaint_category".to_string(),
        ]
    );

    let (status, body) = h.http_get("/open311/v2/services.json", None).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        list,
        serde_json::json!([{
            "service_code": "delay",
            "service_name": "Passport <delays> & waits",
            "description": "Your passport is late.",
            "metadata": false,
            "type": "realtime",
            "keywords": "late, slow",
            "group": "passports",
        }])
    );
    let (status, body) = h.http_get("/open311/v2/services.xml", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<services><service>\
         <service_code>delay</service_code><service_name>Passport &lt;delays&gt; &amp; waits\
         </service_name><description>Your passport is late.</description>\
         <metadata>false</metadata><type>realtime</type><keywords>late, slow</keywords>\
         <group>passports</group></service></services>"
    );
    assert_eq!(
        h.http_get("/open311/v2/services/delay.json", None).await,
        (
            200,
            r#"{"attributes":[],"service_code":"delay"}"#.to_string()
        )
    );
    // Unknown service: 404 as the spec's error list, in the format asked.
    let (status, body) = h.http_get("/open311/v2/services/nope.json", None).await;
    assert_eq!(status, 404);
    let errors: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(errors[0]["code"], 404);
    assert!(
        errors[0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("service_code"))
    );
    let (status, body) = h.http_get("/open311/v2/services/nope.xml", None).await;
    assert_eq!(status, 404);
    assert!(
        body.contains("<errors><error><code>404</code><description>"),
        "{body}"
    );
    let (status, _) = h.http_get("/open311/v2/services.csv", None).await;
    assert_eq!(status, 404);
    // Other paths under the prefix, and a query that is not UTF-8 (read
    // lossily, so an unknown jurisdiction), answer in the spec's form too.
    let (status, body) = h.http_get("/open311/v2/a/b/c.json", None).await;
    assert_eq!(
        (status, body.contains("\"code\":404")),
        (404, true),
        "{body}"
    );
    let (status, body) = h
        .http_get("/open311/v2/services.json?jurisdiction_id=%FF%FE", None)
        .await;
    assert_eq!(
        (status, body.contains("\"code\":404")),
        (404, true),
        "{body}"
    );

    // A second agency: jurisdiction_id is now required; empty counts as absent.
    create_agency(&h, "tax", pb::BenchmarkConsent::Named, &h.hub())
        .await
        .expect("agency");
    for path in [
        "/open311/v2/services.json",
        "/open311/v2/services.json?jurisdiction_id=",
        "/open311/v2/services/delay.json?jurisdiction_id=%20",
    ] {
        let (status, body) = h.http_get(path, None).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("jurisdiction_id"), "{body}");
    }
    let (status, body) = h
        .http_get("/open311/v2/services.json?jurisdiction_id=nowhere", None)
        .await;
    assert_eq!((status, body.contains("\"code\":404")), (404, true));
    let (status, body) = h
        .http_get("/open311/v2/services.json?jurisdiction_id=passports", None)
        .await;
    assert_eq!((status, body.contains("\"delay\"")), (200, true));
    assert_eq!(
        h.http_get("/open311/v2/services.json?jurisdiction_id=tax", None)
            .await,
        (200, "[]".to_string())
    );

    // Discovery names this endpoint and its two formats.
    let (status, body) = h.http_get("/open311/v2/discovery.json", None).await;
    assert_eq!(status, 200);
    let d: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(d["endpoints"][0]["url"], "http://localhost/open311/v2");
    assert_eq!(
        d["endpoints"][0]["formats"],
        serde_json::json!(["text/xml", "application/json"])
    );
    let (status, body) = h.http_get("/open311/v2/discovery.xml", None).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<discovery>"));

    // Withdrawn: its definition is gone.
    g.delete_open311_service(req(
        pb::DeleteOpen311ServiceRequest {
            name: made.name.clone(),
        },
        &admin,
    ))
    .await
    .expect("delete");
    let (status, _) = h
        .http_get(
            "/open311/v2/services/delay.xml?jurisdiction_id=passports",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// The web dashboard's complaint desk forwards to the complaints API with
/// the caller's token: the same roles, tenancy, etags and request ids.
#[tokio::test]
async fn the_complaint_desk_acts_through_the_complaints_api() {
    let h = Harness::start().await;
    let filed = file_complaint(&h, "a", cpb::complainant::Who::Anonymous(true)).await;
    let id = filed.name.rsplit('/').next().expect("id").to_string();
    let officer = h.token_as("officer-a", Some("a"), OFFICER);
    let json = |body: &str| -> serde_json::Value { serde_json::from_str(body).expect("json") };

    // The queue, filtered; a filter value that would change the filter is refused.
    let (status, body) = h
        .http_get(
            "/api/complaints?unit=passports-north&stage=frontline",
            Some(&officer),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["complaints"][0]["complaint"],
        filed.name.as_str()
    );
    let (status, _) = h
        .http_get("/api/complaints?unit=elsewhere", Some(&officer))
        .await;
    assert_eq!(status, 200);
    let (status, body) = h
        .http_get(
            "/api/complaints?unit=x%22%20OR%20unit%3D%22y",
            Some(&officer),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"]["fields"][0]["field"], "unit");

    // Open it: the complaint, its clocks and its history.
    let (status, body) = h
        .http_get(&format!("/api/complaints/{id}"), Some(&officer))
        .await;
    assert_eq!(status, 200, "{body}");
    let opened = json(&body);
    assert_eq!(opened["complaint"]["status"], "RECEIVED");
    assert!(opened["complaint"]["acknowledgement_clock"]["due_date"].is_string());
    assert!(!opened["history"].as_array().expect("history").is_empty());
    let etag = opened["complaint"]["etag"]
        .as_str()
        .expect("etag")
        .to_string();

    // Acknowledge with the etag seen; a retry with the same request id
    // answers the same and does not act twice.
    let ack = serde_json::json!({"etag": etag, "request_id": "7d3c0d1e-2b4f-4c86-9d41-5d0f6c1d2e01", "note": "called"});
    let path = format!("/api/complaints/{id}/acknowledge");
    let (status, body) = h.http_post(&path, &officer, ack.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["complaint"]["status"], "ACKNOWLEDGED");
    let (status, again) = h.http_post(&path, &officer, ack).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        json(&again)["complaint"]["etag"],
        json(&body)["complaint"]["etag"]
    );

    // A stale etag is a conflict the page can explain.
    let stale =
        serde_json::json!({"etag": etag, "request_id": "7d3c0d1e-2b4f-4c86-9d41-5d0f6c1d2e02"});
    let (status, body) = h
        .http_post(&format!("/api/complaints/{id}/start"), &officer, stale)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(json(&body)["error"]["code"], "Aborted");

    // A contact note lands on the complaint.
    let contact = serde_json::json!({"request_id": "7d3c0d1e-2b4f-4c86-9d41-5d0f6c1d2e03",
        "channel": "phone", "direction": "outbound", "note": "Left a message"});
    let (status, body) = h
        .http_post(&format!("/api/complaints/{id}/contact"), &officer, contact)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = h
        .http_get(&format!("/api/complaints/{id}"), Some(&officer))
        .await;
    assert_eq!(json(&body)["contacts"][0]["direction"], "OUTBOUND");

    // The service decides who may: an analyst may not act, another
    // agency's officer does not find it.
    let analyst = h.token_as("analyst-a", Some("a"), ANALYST);
    let any = serde_json::json!({"request_id": "7d3c0d1e-2b4f-4c86-9d41-5d0f6c1d2e04"});
    let (status, body) = h
        .http_post(
            &format!("/api/complaints/{id}/start"),
            &analyst,
            any.clone(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let other = h.token_as("officer-b", Some("b"), OFFICER);
    let (status, _) = h
        .http_get(&format!("/api/complaints/{id}"), Some(&other))
        .await;
    assert_eq!(status, 404);
    let (status, _) = h
        .http_post(
            &format!("/api/complaints/{id}/nonsense"),
            &officer,
            any.clone(),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = h
        .http_post("/api/complaints/..%2Fx/start", &officer, any)
        .await;
    assert_eq!(status, 400, "{body}");

    // An officer records a complaint taken by phone; a retry with the same
    // request id is the same complaint. Bad input names the field.
    let record = serde_json::json!({"request_id": "7d3c0d1e-2b4f-4c86-9d41-5d0f6c1d2e05",
        "anonymous": true, "channel": "phone", "category": "delay",
        "description": "Waited at the counter for two hours"});
    let (status, body) = h
        .http_post("/api/complaints", &officer, record.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    let first = json(&body)["complaint"]["name"].clone();
    assert!(
        first
            .as_str()
            .is_some_and(|n| n.starts_with("agencies/a/complaints/")),
        "{body}"
    );
    assert_eq!(json(&body)["complaint"]["complainant"]["anonymous"], true);
    let (status, again) = h.http_post("/api/complaints", &officer, record).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(json(&again)["complaint"]["name"], first);
    for (bad, field) in [
        (
            serde_json::json!({"request_id": "r1", "anonymous": true, "client": "c1",
            "channel": "phone", "category": "x", "description": "y"}),
            "client",
        ),
        (
            serde_json::json!({"request_id": "r2", "channel": "phone", "category": "x",
            "description": "y"}),
            "client",
        ),
        (
            serde_json::json!({"request_id": "r3", "client": "../x", "channel": "phone",
            "category": "x", "description": "y"}),
            "client",
        ),
        (
            serde_json::json!({"request_id": "r4", "anonymous": true, "channel": "pigeon",
            "category": "x", "description": "y"}),
            "channel",
        ),
    ] {
        let (status, body) = h.http_post("/api/complaints", &officer, bad).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(field), "{field}: {body}");
    }
    let (status, body) = h
        .http_post(
            "/api/complaints",
            &analyst,
            serde_json::json!({"request_id": "r5", "anonymous": true, "channel": "phone",
                "category": "x", "description": "y"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Follow-ups list through the feedback API (none yet).
    let (status, body) = h.http_get("/api/follow-ups", Some(&officer)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["follow_ups"], serde_json::json!([]));
}

/// The dashboard's listener answers `/healthz` and `/metrics` (no token
/// needed): its own requests by route template (never the path sent), and
/// the process-wide metrics every gRPC port shows.
#[tokio::test]
async fn dashboard_port_answers_healthz_and_metrics() {
    let h = Harness::start().await;
    let (status, body) = h.http_get("/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "ok");
    assert_eq!(h.http_get("/api/me", None).await.0, 401);
    assert_eq!(h.http_get("/no/such/page-with-an-id-42", None).await.0, 404);

    let (status, body) = h.http_get("/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    let has = |labels: &[&str]| {
        body.lines().any(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && labels.iter().all(|label| l.contains(label))
        })
    };
    assert!(
        has(&[
            r#"http_request_method="GET""#,
            r#"http_route="/healthz""#,
            r#"http_response_status_code="200""#,
        ]),
        "{body}"
    );
    assert!(
        has(&[
            r#"http_route="/api/me""#,
            r#"http_response_status_code="401""#
        ]),
        "{body}"
    );
    assert!(
        has(&[
            r#"http_route="other""#,
            r#"http_response_status_code="404""#
        ]),
        "{body}"
    );
    assert!(!body.contains("page-with-an-id-42"), "{body}");
    assert!(body.contains("process_resident_memory_bytes "), "{body}");
}

/// An API key of passports (its secret), issued by `admin`.
async fn issue_key(
    g: &mut GatewayServiceClient<Channel>,
    admin: &str,
    id: &str,
    rate: i32,
) -> String {
    g.create_api_key(req(
        pb::CreateApiKeyRequest {
            parent: "agencies/passports".into(),
            api_key: Some(pb::ApiKey {
                display_name: format!("System {id}"),
                requests_per_minute: rate,
                ..Default::default()
            }),
            api_key_id: id.into(),
            request_id: format!("k-{id}"),
        },
        admin,
    ))
    .await
    .expect("key")
    .into_inner()
    .key
}

/// Percent-encodes a form value.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The fields of an Open311 error list, by description prefix.
fn open311_errors(body: &str) -> Vec<(u64, String)> {
    let list: serde_json::Value = serde_json::from_str(body).expect("json error list");
    list.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["code"].as_u64().expect("code"),
                e["description"].as_str().expect("description").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn open311_requests_become_complaints_over_raw_http() {
    let h = Harness::start().await;
    let mut g = h.gateway().await;
    for agency in ["passports", "tax"] {
        create_agency(&h, agency, pb::BenchmarkConsent::Named, &h.hub())
            .await
            .expect("agency");
    }
    let admin = h.token("passports", ADMIN);
    g.create_open311_service(req(
        pb::CreateOpen311ServiceRequest {
            parent: "agencies/passports".into(),
            open311_service: Some(pb::Open311Service {
                display_name: "Passport delays".into(),
                complaint_category: "delay".into(),
                complaint_service: "passport renewal".into(),
                ..Default::default()
            }),
            open311_service_id: "delay".into(),
            request_id: "s1".into(),
        },
        &admin,
    ))
    .await
    .expect("service");
    let secret = issue_key(&mut g, &admin, "web-forms", 1000).await;
    let officer = h.token("passports", OFFICER);
    let count = || async {
        h.complaints_client()
            .await
            .list_complaints(req(
                cpb::ListComplaintsRequest {
                    parent: "agencies/passports".into(),
                    page_size: 1000,
                    ..Default::default()
                },
                &officer,
            ))
            .await
            .expect("list")
            .into_inner()
            .complaints
    };
    let hh = &h;
    let post = |format: &str, form: String| {
        let path = format!("/open311/v2/requests.{format}");
        async move { hh.http_form(&path, &form).await }
    };
    let base = |extra: &str| {
        format!(
            "api_key={}&jurisdiction_id=passports&service_code=delay&lat=-35.28&long=149.13{extra}",
            enc(&secret)
        )
    };

    // No key, an unknown key: 403 in the spec's form, nothing written.
    let (status, _, body) = post("json", "service_code=delay&lat=1&long=2".into()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(open311_errors(&body)[0].0, 403);
    let (status, _, body) = post(
        "xml",
        "api_key=ts311_nope&service_code=delay&lat=1&long=2".into(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("<errors><error><code>403</code>"), "{body}");
    assert!(count().await.is_empty());

    // A request with a person's details: a complaint of the service's
    // category, its contact details sealed in the complaints service.
    let (status, _, body) = post(
        "json",
        base(&format!(
            "&first_name=Ann&last_name=Lee&email={}&phone={}&description={}&address_string={}",
            enc("ann@example.org"),
            enc("+61 2 6000 0000"),
            enc("Still waiting after 9 weeks"),
            enc("1 Civic Square"),
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = answer[0]["service_request_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(
        answer[0].get("token").is_none(),
        "an id or a token, never both"
    );
    let made = count().await;
    assert_eq!(made.len(), 1);
    let complaint = &made[0];
    assert_eq!(
        complaint.name,
        format!("agencies/passports/complaints/{id}")
    );
    assert_eq!(complaint.category, "delay");
    assert_eq!(complaint.service, "passport renewal");
    assert!(
        complaint
            .description
            .starts_with("Still waiting after 9 weeks")
    );
    assert!(complaint.description.contains("address: 1 Civic Square"));
    match complaint.complainant.as_ref().and_then(|c| c.who.as_ref()) {
        Some(cpb::complainant::Who::Contact(c)) => {
            assert_eq!(
                (c.display_name.as_str(), c.email.as_str(), c.phone.as_str()),
                ("Ann Lee", "ann@example.org", "+61 2 6000 0000")
            );
        }
        other => panic!("contact details expected, got {other:?}"),
    }
    // Made by the key, acting as intake through the gateway.
    let history = h
        .complaints_client()
        .await
        .list_complaint_history(req(
            cpb::ListComplaintHistoryRequest {
                parent: complaint.name.clone(),
            },
            &officer,
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        history.entries[0].actor,
        "agencies/passports/apiKeys/web-forms via gateway"
    );

    // Its public status: no name, email, phone or description.
    let (status, body) = h
        .http_get(
            &format!("/open311/v2/requests/{id}.json?jurisdiction_id=passports"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for secret_text in ["Ann", "Lee", "example.org", "6000", "9 weeks"] {
        assert!(!body.contains(secret_text), "{secret_text} leaked: {body}");
    }
    let one: serde_json::Value = serde_json::from_str(&body).expect("json");
    let r = &one[0];
    assert_eq!(r["service_request_id"], id.as_str());
    assert_eq!(r["status"], "open");
    assert_eq!(r["status_notes"], "Received");
    assert_eq!(r["service_code"], "delay");
    assert_eq!(r["service_name"], "Passport delays");
    assert_eq!(r["address"], "1 Civic Square");
    assert_eq!(r["lat"], -35.28);
    assert_eq!(r["long"], 149.13);
    assert!(r.get("description").is_none());
    for field in [
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
    ] {
        let t = r[field].as_str().unwrap_or_else(|| panic!("{field}: {r}"));
        assert!(
            t.ends_with('Z') || t[t.len() - 6..].starts_with(['+', '-']),
            "{field} carries a zone: {t}"
        );
        assert!(t.parse::<jiff::Timestamp>().is_ok(), "{field}: {t}");
    }
    let (status, body) = h
        .http_get(
            &format!("/open311/v2/requests/{id}.xml?jurisdiction_id=passports"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"));
    assert!(body.contains(&format!(
        "<service_requests><request><service_request_id>{id}</service_request_id><status>open</status>"
    )));

    // XML POST, and a retry with the same device and account within the
    // window: the same id, no second complaint; another body is another.
    let retry = base("&device_id=phone-1&account_id=acct-9&description=Queue+too+long");
    let (status, _, first) = post("xml", retry.clone()).await;
    assert_eq!(status, 200, "{first}");
    let xml_id = first
        .split("<service_request_id>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("id")
        .to_string();
    assert!(first.contains("<account_id>acct-9</account_id>"));
    let (_, _, again) = post("xml", retry.clone()).await;
    assert!(again.contains(&format!(
        "<service_request_id>{xml_id}</service_request_id>"
    )));
    // The same fields in another order are the same request.
    let reordered = format!(
        "description=Queue+too+long&account_id=acct-9&device_id=phone-1&{}",
        base("")
    );
    let (_, _, again) = post("xml", reordered).await;
    assert!(again.contains(&format!(
        "<service_request_id>{xml_id}</service_request_id>"
    )));
    assert_eq!(count().await.len(), 2);
    let (_, _, other) = post(
        "xml",
        base("&device_id=phone-1&account_id=acct-9&description=Other"),
    )
    .await;
    assert!(!other.contains(&xml_id));
    // Without a device or account two identical posts are two requests.
    let (_, _, a) = post("json", base("&description=Twice")).await;
    let (_, _, b) = post("json", base("&description=Twice")).await;
    assert_ne!(a, b);
    assert_eq!(count().await.len(), 5);

    // Each malformed field is a 400 naming it; nothing is written.
    let cases = [
        ("&email=not-an-email", "email"),
        ("&phone=12", "phone"),
        ("&first_name=A%00B", "first_name"),
        ("&description=a%01b", "description"),
        ("&media_url=javascript%3Aalert(1)", "media_url"),
        ("&attribute[size]=1", "attribute[size]"),
        ("&attribute[=1", "attribute["),
        ("&email=a%40b.example&email=c%40d.example", "email"),
    ];
    for (extra, field) in cases {
        let (status, _, body) = post("json", base(extra)).await;
        assert_eq!(status, 400, "{extra}: {body}");
        let errors = open311_errors(&body);
        assert!(
            errors
                .iter()
                .any(|(code, d)| *code == 400 && d.starts_with(&format!("{field}: "))),
            "{extra}: {body}"
        );
    }
    let long = "x".repeat(4001);
    let (status, _, body) = post("json", base(&format!("&description={long}"))).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("description: at most 4000 characters"),
        "{body}"
    );
    let exact = "x".repeat(4000);
    let (status, _, _) = post(
        "json",
        base(&format!("&description={exact}&device_id=d-4000")),
    )
    .await;
    assert_eq!(status, 200);
    let no_place = format!("api_key={}&service_code=delay", enc(&secret));
    let (status, _, body) = post("json", no_place).await;
    assert_eq!(status, 400);
    assert!(body.contains("a location is required"), "{body}");
    let (status, _, body) = post("json", base("&lat=").replace("lat=-35.28&", "")).await;
    assert_eq!(status, 400, "{body}");
    // Several at once, each its own error.
    let (_, _, body) = post("json", base("&email=x&phone=y")).await;
    assert_eq!(open311_errors(&body).len(), 2, "{body}");
    // Bytes that are not UTF-8.
    let (status, _, body) = post("json", base("&description=%FF%FE")).await;
    assert_eq!(status, 400);
    assert!(body.contains("description: not valid UTF-8"), "{body}");
    // An unknown service is 404; another agency's jurisdiction is 403.
    let (status, _, body) = post(
        "json",
        base("").replace("service_code=delay", "service_code=nope"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = post(
        "json",
        base("").replace("jurisdiction_id=passports", "jurisdiction_id=tax"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        count().await.len(),
        6,
        "only the 4,000-character request was added"
    );

    // GET requests: filters, pages, and the id list overriding them.
    let list = |query: String| async move {
        let (status, body) = hh
            .http_get(
                &format!("/open311/v2/requests.json?jurisdiction_id=passports{query}"),
                None,
            )
            .await;
        let ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["service_request_id"].as_str().map(str::to_string))
            .collect();
        (status, ids, body)
    };
    let (status, all, _) = list(String::new()).await;
    assert_eq!(status, 200);
    assert_eq!(all.len(), 6);
    assert!(all.contains(&id) && all.contains(&xml_id));
    let (_, page1, _) = list("&page_size=2".into()).await;
    let (_, page2, _) = list("&page_size=2&page=2".into()).await;
    assert_eq!(page1, all[..2].to_vec());
    assert_eq!(page2, all[2..4].to_vec());
    let (_, some, _) = list(format!(
        "&service_request_id={id},{xml_id},nothere&service_code=other"
    ))
    .await;
    assert_eq!(some.len(), 2);
    let (_, none, _) = list("&service_code=other".into()).await;
    assert!(none.is_empty());
    let (_, closed, _) = list("&status=closed".into()).await;
    assert!(closed.is_empty());
    // Withdrawn: closed, with its notes.
    h.complaints_client()
        .await
        .withdraw_complaint(req(
            cpb::WithdrawComplaintRequest {
                name: complaint.name.clone(),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("withdraw");
    let (_, closed, body) = list("&status=closed".into()).await;
    assert_eq!(closed, vec![id.clone()], "{body}");
    assert!(body.contains("\"status_notes\":\"Withdrawn\""), "{body}");
    let (_, open, _) = list("&status=open&page_size=1&page=2".into()).await;
    assert_eq!(open.len(), 1);
    assert_ne!(open[0], id);
    let (_, both, _) = list("&status=open,closed".into()).await;
    assert_eq!(both.len(), 6);
    let (_, past, _) =
        list("&start_date=2020-01-01T00:00:00Z&end_date=2020-02-01T00:00:00Z".into()).await;
    assert!(past.is_empty());
    for (query, field) in [
        ("&start_date=yesterday", "start_date"),
        (
            "&start_date=2026-01-01T00:00:00Z&end_date=2026-06-01T00:00:00Z",
            "end_date",
        ),
        (
            "&start_date=2026-02-01T00:00:00Z&end_date=2026-01-01T00:00:00Z",
            "end_date",
        ),
        ("&status=pending", "status"),
        ("&page_size=1001", "page_size"),
        ("&page=0", "page"),
        ("&service_request_id=Bad%20Id", "service_request_id"),
    ] {
        let (status, _, body) = list(query.into()).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(&format!("\"{field}: ")), "{query}: {body}");
    }
    // Two agencies: a GET names its jurisdiction.
    let (status, _) = h.http_get("/open311/v2/requests.json", None).await;
    assert_eq!(status, 400);

    // Unknown ids and tokens are 404; a token is the id it was answered as.
    for path in [
        "requests/nothere.json",
        "requests/NOT%20AN%20ID.json",
        "tokens/nothere.json",
    ] {
        let (status, body) = h
            .http_get(
                &format!("/open311/v2/{path}?jurisdiction_id=passports"),
                None,
            )
            .await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(open311_errors(&body)[0].0, 404);
    }
    let (status, body) = h
        .http_get(
            &format!("/open311/v2/tokens/{xml_id}.json?jurisdiction_id=passports"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let t: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(t[0]["service_request_id"], xml_id.as_str());
    assert_eq!(t[0]["token"], xml_id.as_str());
    // Another agency's request is not found in this one.
    let (status, _) = h
        .http_get(
            &format!("/open311/v2/requests/{id}.json?jurisdiction_id=tax"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A revoked key is refused and writes nothing.
    g.revoke_api_key(req(
        pb::RevokeApiKeyRequest {
            name: "agencies/passports/apiKeys/web-forms".into(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .expect("revoke");
    let (status, _, _) = post("json", base("&description=After+revocation")).await;
    assert_eq!(status, 403);
    assert_eq!(count().await.len(), 6);

    // Past its rate a key is 429 in the spec's form, with when to retry.
    let tight = issue_key(&mut g, &admin, "tight", 1).await;
    let mut refused = 0;
    for _ in 0..3 {
        let (status, head, body) = post("json", format!("api_key={}", enc(&tight))).await;
        if status == 429 {
            refused += 1;
            assert_eq!(open311_errors(&body)[0].0, 429);
            assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
        } else {
            assert_eq!(status, 400, "the one admitted request is checked: {body}");
        }
    }
    assert!(refused >= 1);
    assert_eq!(count().await.len(), 6);
}

#[tokio::test]
async fn only_a_service_may_act_as_an_agencys_intake() {
    let h = Harness::start().await;
    let create = |token: &str, act_as: &str| {
        let mut r = req(
            cpb::CreateComplaintRequest {
                parent: "agencies/passports".into(),
                complaint: Some(complaint(cpb::complainant::Who::Anonymous(true))),
                ..Default::default()
            },
            token,
        );
        r.metadata_mut()
            .insert("touchstone-act-as", act_as.parse().expect("header"));
        r
    };
    let mut c = h.complaints_client().await;
    // An officer (or an agency admin) cannot become intake of any agency.
    for roles in [OFFICER, ADMIN] {
        let err = c
            .create_complaint(create(
                &h.token("passports", roles),
                "intake agencies/passports k",
            ))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(reason(&err), "ACT_AS_DENIED");
    }
    // A service of one agency acts as that agency's intake only, and only
    // as intake.
    let service = h
        .dev
        .mint(&TokenRequest {
            subject: "gateway".into(),
            agency: None,
            agencies: Some(vec!["passports".into()]),
            roles: vec![Role::Service],
            ttl: Duration::from_secs(600),
            issuer: DevKey::ISSUER.into(),
            audience: DevKey::AUDIENCE.into(),
        })
        .expect("mint");
    let err = c
        .create_complaint(create(&service, "officer agencies/passports k"))
        .await
        .expect_err("only intake");
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut other = create(&service, "intake agencies/tax k");
    other.get_mut().parent = "agencies/tax".into();
    assert_eq!(
        c.create_complaint(other)
            .await
            .expect_err("not its agency")
            .code(),
        Code::PermissionDenied
    );
    let made = c
        .create_complaint(create(&service, "intake agencies/passports k"))
        .await
        .expect("intake of passports")
        .into_inner();
    // Intake may submit, never read: the same token cannot read it back.
    let mut read = req(
        cpb::GetComplaintRequest {
            name: made.name.clone(),
        },
        &service,
    );
    read.metadata_mut().insert(
        "touchstone-act-as",
        "intake agencies/passports k".parse().expect("header"),
    );
    assert_eq!(
        c.get_complaint(read)
            .await
            .expect_err("intake reads nothing")
            .code(),
        Code::PermissionDenied
    );
    // Its public status is readable by the service itself, without an audit
    // of personal data; an officer's token of another agency is refused.
    let statuses = c
        .get_complaint_statuses(req(
            cpb::GetComplaintStatusesRequest {
                parent: "agencies/passports".into(),
                names: vec![
                    made.name.clone(),
                    "agencies/passports/complaints/nothere".into(),
                ],
            },
            &service,
        ))
        .await
        .expect("statuses")
        .into_inner()
        .statuses;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].name, made.name);
    assert_eq!(statuses[0].status, cpb::Status::Received as i32);
    assert!(statuses[0].response_due_time.is_some());
    let err = c
        .get_complaint_statuses(req(
            cpb::GetComplaintStatusesRequest {
                parent: "agencies/passports".into(),
                names: vec![made.name.clone()],
            },
            &h.token("tax", OFFICER),
        ))
        .await
        .expect_err("another agency");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .get_complaint_statuses(req(
            cpb::GetComplaintStatusesRequest {
                parent: "agencies/passports".into(),
                names: vec!["agencies/tax/complaints/x".into()],
            },
            &service,
        ))
        .await
        .expect_err("names of another agency");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn surveys_are_open311_services_whose_questions_are_attributes() {
    use touchstone_api::feedback::v1 as fpb;
    use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
    let h = Harness::start().await;
    let mut g = h.gateway().await;
    create_agency(&h, "passports", pb::BenchmarkConsent::Named, &h.hub())
        .await
        .expect("agency");
    let admin = h.token("passports", ADMIN);
    let mut f = FeedbackServiceClient::new(Harness::channel(&h._feedback).await);
    let question = |key: &str, kind: fpb::QuestionKind, required: bool| fpb::Question {
        key: key.into(),
        text: format!("Question {key}?"),
        kind: kind as i32,
        required,
        ..Default::default()
    };
    let survey = f
        .create_survey(req(
            fpb::CreateSurveyRequest {
                parent: "agencies/passports".into(),
                survey: Some(fpb::Survey {
                    title: "Counter visit".into(),
                    touchpoint: Some(fpb::Touchpoint {
                        service: "passport renewal".into(),
                        unit: "north".into(),
                        channel: Via::InPerson as i32,
                        stage: "collection".into(),
                    }),
                    questions: vec![
                        question("satisfied", fpb::QuestionKind::Satisfaction5, true),
                        question("resolved", fpb::QuestionKind::YesNo, false),
                        fpb::Question {
                            choices: ["web", "counter"]
                                .iter()
                                .map(|k| fpb::Choice {
                                    key: (*k).into(),
                                    label: format!("By {k}"),
                                })
                                .collect(),
                            ..question("how", fpb::QuestionKind::MultipleChoice, false)
                        },
                        question("comment", fpb::QuestionKind::FreeText, false),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("survey")
        .into_inner();
    let map = |survey: &str, id: &str| {
        req(
            pb::CreateOpen311ServiceRequest {
                parent: "agencies/passports".into(),
                open311_service: Some(pb::Open311Service {
                    display_name: "Tell us about your visit".into(),
                    survey: survey.into(),
                    ..Default::default()
                }),
                open311_service_id: id.into(),
                request_id: format!("map-{id}"),
            },
            &admin,
        )
    };
    // A draft takes no responses, so it is no service yet.
    let err = g
        .create_open311_service(map(&survey.name, "visit"))
        .await
        .expect_err("draft");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SURVEY_NOT_PUBLISHED");
    for (bad, field) in [
        (
            "agencies/passports/surveys/nothere",
            "open311_service.survey",
        ),
        ("agencies/tax/surveys/x", "open311_service.survey"),
    ] {
        let err = g
            .create_open311_service(map(bad, "visit"))
            .await
            .expect_err("bad survey");
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(violations(&err), [field], "{bad}");
    }
    let mut both = map(&survey.name, "both");
    if let Some(s) = both.get_mut().open311_service.as_mut() {
        s.complaint_category = "delay".into();
    }
    let err = g.create_open311_service(both).await.expect_err("both");
    assert_eq!(violations(&err), ["open311_service.complaint_category"]);
    f.publish_survey(req(
        fpb::PublishSurveyRequest {
            name: survey.name.clone(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .expect("publish");
    let made = g
        .create_open311_service(map(&survey.name, "visit"))
        .await
        .expect("mapped")
        .into_inner();
    assert_eq!(made.survey, survey.name);

    // The catalogue: metadata true, the questions as attributes.
    let (status, body) = h.http_get("/open311/v2/services.json", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"metadata\":true"), "{body}");
    let (status, body) = h.http_get("/open311/v2/services/visit.json", None).await;
    assert_eq!(status, 200);
    let d: serde_json::Value = serde_json::from_str(&body).expect("json");
    let attrs = d["attributes"].as_array().expect("attributes");
    let shape: Vec<(String, String, bool, u64)> = attrs
        .iter()
        .map(|a| {
            (
                a["code"].as_str().unwrap_or_default().to_string(),
                a["datatype"].as_str().unwrap_or_default().to_string(),
                a["required"].as_bool().unwrap_or_default(),
                a["order"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("satisfied".into(), "number".into(), true, 1),
            ("resolved".into(), "singlevaluelist".into(), false, 2),
            ("how".into(), "multivaluelist".into(), false, 3),
            ("comment".into(), "text".into(), false, 4),
        ]
    );
    assert_eq!(attrs[2]["values"][1]["key"], "counter");
    assert_eq!(attrs[2]["values"][1]["name"], "By counter");
    assert_eq!(attrs[0]["variable"], true);
    let (_, body) = h.http_get("/open311/v2/services/visit.xml", None).await;
    assert!(
        body.contains("<attribute><variable>true</variable><code>satisfied</code><datatype>number</datatype><required>true</required>"),
        "{body}"
    );

    // A POST: a survey response with the attributes as answers and the
    // description as the comment; contact details are not passed on.
    let secret = issue_key(&mut g, &admin, "kiosk", 60).await;
    let base = format!(
        "api_key={}&service_code=visit&address_id=north-counter",
        enc(&secret)
    );
    let (status, _, body) = h
        .http_form(
            "/open311/v2/requests.json",
            &format!(
                "{base}&attribute[satisfied]=4&attribute[resolved]=yes&attribute[how][]=web\
                 &attribute[how][]=counter&description=Quick+and+kind&email=a%40b.example"
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = answer[0]["service_request_id"]
        .as_str()
        .expect("id")
        .to_string();
    let responses = f
        .list_responses(req(
            fpb::ListResponsesRequest {
                parent: survey.name.clone(),
                ..Default::default()
            },
            &h.token("passports", OFFICER),
        ))
        .await
        .expect("responses")
        .into_inner()
        .responses;
    assert_eq!(responses.len(), 1);
    let r = &responses[0];
    assert_eq!(r.name, format!("{}/responses/{id}", survey.name));
    let by_key = |k: &str| r.answers.iter().find(|a| a.question_key == k).cloned();
    assert_eq!(by_key("satisfied").and_then(|a| a.score), Some(4));
    assert_eq!(by_key("resolved").and_then(|a| a.yes), Some(true));
    assert_eq!(
        by_key("how").map(|a| a.choices),
        Some(vec!["web".into(), "counter".into()])
    );
    assert_eq!(
        by_key("comment").map(|a| a.text),
        Some("Quick and kind".into())
    );
    assert!(r.client.is_empty());

    // Public status: closed, received; no comment.
    let (status, body) = h
        .http_get(&format!("/open311/v2/requests/{id}.json"), None)
        .await;
    assert_eq!(status, 200);
    assert!(!body.contains("Quick and kind"), "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(one[0]["status"], "closed");
    assert_eq!(one[0]["status_notes"], "Feedback received");
    assert_eq!(one[0]["service_code"], "visit");
    assert_eq!(one[0]["expected_datetime"], serde_json::Value::Null);
    let (_, body) = h
        .http_get("/open311/v2/requests.json?status=closed", None)
        .await;
    assert!(body.contains(&id), "{body}");

    // Each bad answer is named; nothing is written.
    for (extra, field) in [
        ("&attribute[satisfied]=6", "attribute[satisfied]"),
        ("&attribute[satisfied]=x", "attribute[satisfied]"),
        (
            "&attribute[satisfied][]=1&attribute[satisfied][]=2",
            "attribute[satisfied]",
        ),
        (
            "&attribute[satisfied]=3&attribute[resolved]=maybe",
            "attribute[resolved]",
        ),
        (
            "&attribute[satisfied]=3&attribute[how][]=fax",
            "attribute[how]",
        ),
        (
            "&attribute[satisfied]=3&attribute[colour]=red",
            "attribute[colour]",
        ),
        ("", "attribute[satisfied]"),
        (
            "&attribute[satisfied]=3&attribute[comment]=Fine&description=Also",
            "description",
        ),
    ] {
        let (status, _, body) = h
            .http_form("/open311/v2/requests.json", &format!("{base}{extra}"))
            .await;
        assert_eq!(status, 400, "{extra}: {body}");
        let errors = open311_errors(&body);
        assert!(
            errors
                .iter()
                .any(|(_, d)| d.starts_with(&format!("{field}: "))),
            "{extra}: {body}"
        );
    }
    let count = f
        .list_responses(req(
            fpb::ListResponsesRequest {
                parent: survey.name.clone(),
                ..Default::default()
            },
            &h.token("passports", OFFICER),
        ))
        .await
        .expect("responses")
        .into_inner()
        .responses
        .len();
    assert_eq!(count, 1);
}

/// `survey`, created and published in agency passports by its admin.
async fn published_survey(
    h: &Harness,
    survey: touchstone_api::feedback::v1::Survey,
) -> touchstone_api::feedback::v1::Survey {
    use touchstone_api::feedback::v1 as fpb;
    use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
    let admin = h.token("passports", ADMIN);
    let mut f = FeedbackServiceClient::new(Harness::channel(&h._feedback).await);
    let survey = f
        .create_survey(req(
            fpb::CreateSurveyRequest {
                parent: "agencies/passports".into(),
                survey: Some(survey),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("survey")
        .into_inner();
    f.publish_survey(req(
        fpb::PublishSurveyRequest {
            name: survey.name.clone(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .expect("publish")
    .into_inner()
}

/// The dashboard's topics count the period's comments (not those of another
/// period) and read them in the basic view: a dashboard writes no audit
/// record in the feedback service, where the same list in the full view
/// writes one per response.
#[tokio::test]
async fn dashboard_topics_read_no_personal_data() {
    use touchstone_api::feedback::v1 as fpb;
    use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
    let h = Harness::start().await;
    let mut f = FeedbackServiceClient::new(Harness::channel(&h._feedback).await);
    let survey = published_survey(
        &h,
        fpb::Survey {
            title: "Counter visit".into(),
            questions: vec![fpb::Question {
                key: "comment".into(),
                text: "Anything else?".into(),
                kind: fpb::QuestionKind::FreeText as i32,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    // Two comments about waiting in the dashboard's quarter (2026-Q3), one
    // about the website before it.
    let intake = h.token("passports", &[Role::Intake]);
    for (text, seconds) in [
        ("I waited weeks in the queue", 1_786_000_000),
        ("The wait was long", 1_786_100_000),
        ("The website login failed", 1_770_000_000),
    ] {
        f.submit_response(req(
            fpb::SubmitResponseRequest {
                parent: survey.name.clone(),
                response: Some(fpb::Response {
                    answers: vec![fpb::Answer {
                        question_key: "comment".into(),
                        text: text.into(),
                        ..Default::default()
                    }],
                    submit_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &intake,
        ))
        .await
        .expect("submit");
    }
    let audited = || audit_rows(&h._dbs[2]);
    let before = audited().await;
    let d = dashboard(
        &h,
        "passports",
        &h.token_as("manager-1", Some("passports"), MANAGER),
        None,
    )
    .await
    .expect("dashboard");
    assert_eq!(d.period, "2026-Q3");
    let topics: Vec<(String, i64)> = d
        .topics
        .iter()
        .map(|t| (t.topic.clone(), t.responses))
        .collect();
    assert_eq!(topics, [("waiting_time".to_string(), 2)], "{topics:?}");
    assert_eq!(audited().await, before, "the dashboard read personal data");
    // The same list in the full view is an audited read of each response.
    f.list_responses(req(
        fpb::ListResponsesRequest {
            parent: "agencies/passports/surveys/-".into(),
            ..Default::default()
        },
        &h.token("passports", OFFICER),
    ))
    .await
    .expect("full list");
    assert_eq!(audited().await, before + 3);
}

/// The dashboard's queue of complaints due first shows no personal data, so
/// it reads the complaints in the basic view: no read of them is audited.
#[tokio::test]
async fn dashboard_queue_reads_no_personal_data() {
    let h = Harness::start().await;
    let filed = file_complaint(&h, "passports", cpb::complainant::Who::Anonymous(true)).await;
    let audited = || audit_rows(&h._dbs[1]);
    let before = audited().await;
    let d = dashboard(&h, "passports", &h.token("passports", MANAGER), None)
        .await
        .expect("dashboard");
    let queue = &d.complaints.expect("complaints").queue;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].complaint, filed.name);
    assert!(queue[0].clock.is_some());
    assert_eq!(audited().await, before, "the dashboard read personal data");
}

/// The dashboard's follow-up counts come from feedback's SummarizeFollowUps:
/// a follow-up names a client, and counting them reads none, so a
/// dashboard writes no audit record in the feedback service.
#[tokio::test]
async fn dashboard_follow_up_counts_read_no_personal_data() {
    use touchstone_api::feedback::v1 as fpb;
    use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
    let h = Harness::start().await;
    let officer = h.token("passports", OFFICER);
    let mut r = h.register_client().await;
    let client = r
        .create_client(req(
            reg::CreateClientRequest {
                parent: "agencies/passports".into(),
                client: Some(reg::Client {
                    kind: reg::ClientKind::Person as i32,
                    given_names: "Aroha".into(),
                    family_name: "Ngata".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("client")
        .into_inner();
    r.grant_consent(req(
        reg::GrantConsentRequest {
            name: client.name.clone(),
            purpose: reg::ConsentPurpose::FeedbackSurveys as i32,
            source: "web form".into(),
            ..Default::default()
        },
        &officer,
    ))
    .await
    .expect("consent");
    let mut f = FeedbackServiceClient::new(Harness::channel(&h._feedback).await);
    let survey = published_survey(
        &h,
        fpb::Survey {
            title: "Counter visit".into(),
            questions: vec![fpb::Question {
                key: "agree".into(),
                text: "Staff were helpful".into(),
                kind: fpb::QuestionKind::Agreement5 as i32,
                ..Default::default()
            }],
            follow_up_rules: vec![fpb::FollowUpRule {
                question_key: "agree".into(),
                score_at_most: 2,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    for agree in [1, 2, 5] {
        f.submit_response(req(
            fpb::SubmitResponseRequest {
                parent: survey.name.clone(),
                response: Some(fpb::Response {
                    answers: vec![fpb::Answer {
                        question_key: "agree".into(),
                        score: Some(agree),
                        ..Default::default()
                    }],
                    client: client.name.clone(),
                    contact_agreed: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &h.token("passports", &[Role::Intake]),
        ))
        .await
        .expect("submit");
    }
    let audited = || audit_rows(&h._dbs[2]);
    let before = audited().await;
    let d = dashboard(&h, "passports", &h.token("passports", MANAGER), None)
        .await
        .expect("dashboard");
    let feedback = d.feedback.expect("feedback");
    assert_eq!(
        (feedback.follow_ups_open, feedback.follow_ups_overdue),
        (2, 0)
    );
    assert!(d.unreachable.is_empty() && d.withheld.is_empty(), "{d:?}");
    assert_eq!(audited().await, before, "the dashboard read personal data");
}
