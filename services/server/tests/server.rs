//! End-to-end tests of `touchstone_server::serve` over real sockets on 127.0.0.1: health,
//! reflection, gRPC-Web, metrics, load shedding, deadlines, trace propagation and shutdown.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::server::{NamedService, UnaryService};
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_prost::ProstCodec;
use tonic_types::StatusExt as _;
use touchstone_server::peer::TraceContext;
use touchstone_server::telemetry::TelemetryError;
use touchstone_server::{Readiness, ServeError, ServeOptions, serve};
use tower::ServiceExt as _;

/// Long enough never to fire on a healthy run; only there so a broken build cannot hang CI.
const PATIENCE: Duration = Duration::from_secs(20);

const WORK_PATH: &str = "/touchstone.test.v1.TestService/Work";

#[derive(Clone, PartialEq, prost::Message)]
struct WorkRequest {
    /// Report the call as started, then wait until the test releases it.
    #[prost(bool, tag = "1")]
    hold: bool,
    /// Answer INVALID_ARGUMENT.
    #[prost(bool, tag = "2")]
    fail: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WorkReply {
    /// The `traceparent` this handler would send on a downstream call.
    #[prost(string, tag = "1")]
    traceparent: String,
    /// The `traceparent` a call through a peer channel's middleware carried.
    #[prost(string, tag = "2")]
    peer_traceparent: String,
}

/// A one-method gRPC service written against tonic's server plumbing, so no protoc is needed.
#[derive(Clone)]
struct TestService {
    started: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl NamedService for TestService {
    const NAME: &'static str = "touchstone.test.v1.TestService";
}

impl<B> tower::Service<http::Request<B>> for TestService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WORK_PATH {
            return std::future::ready(Ok(Status::unimplemented("").into_http())).boxed();
        }
        let work = Work(self.clone());
        async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<WorkReply, WorkRequest>::default());
            Ok(grpc.unary(work, request).await)
        }
        .boxed()
    }
}

struct Work(TestService);

impl UnaryService<WorkRequest> for Work {
    type Response = WorkReply;
    type Future = BoxFuture<'static, Result<tonic::Response<WorkReply>, Status>>;

    fn call(&mut self, request: tonic::Request<WorkRequest>) -> Self::Future {
        let service = self.0.clone();
        async move {
            let request = request.into_inner();
            if request.hold {
                let _ = service.started.send(());
                let permit = service
                    .release
                    .acquire()
                    .await
                    .map_err(|_| Status::aborted("released for good"))?;
                permit.forget();
            }
            if request.fail {
                return Err(Status::invalid_argument("asked to fail"));
            }
            let mut downstream = MetadataMap::new();
            touchstone_server::inject_trace_context(&mut downstream);
            let traceparent = downstream
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            // What `touchstone_server::traced` channels add to every outgoing request.
            let capture = tower::service_fn(|request: http::Request<()>| async move {
                Ok::<_, Infallible>(
                    request
                        .headers()
                        .get("traceparent")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                )
            });
            let peer_traceparent = TraceContext::new(capture)
                .oneshot(http::Request::new(()))
                .await
                .unwrap_or_else(|never| match never {});
            Ok(tonic::Response::new(WorkReply {
                traceparent,
                peer_traceparent,
            }))
        }
        .boxed()
    }
}

/// A running `serve` with handles to steer it.
struct TestServer {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    async fn start(ready: bool, tune: impl FnOnce(&mut ServeOptions)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started_tx, started) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let routes = Routes::new(TestService {
            started: started_tx,
            release: release.clone(),
        });

        let mut opts = ServeOptions::new("test", vec![TestService::NAME]);
        opts.readiness_interval = Duration::from_millis(20);
        tune(&mut opts);

        let ready = Arc::new(AtomicBool::new(ready));
        let probe = ready.clone();
        let readiness: Readiness = Arc::new(move || {
            let probe = probe.clone();
            async move { probe.load(Ordering::SeqCst) }.boxed()
        });

        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, routes, opts, readiness, async move {
            let _ = shutdown_rx.await;
        }));
        Self {
            addr,
            ready,
            started,
            release,
            shutdown: Some(shutdown),
            handle,
        }
    }

    /// One HTTP/2 connection; clones share it.
    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    async fn wait_until_held(&mut self) {
        within(self.started.recv()).await.unwrap();
    }

    fn release_held(&self) {
        self.release.add_permits(1);
    }

    fn begin_shutdown(&mut self) {
        let _ = self.shutdown.take().unwrap().send(());
    }

    async fn stopped(self) -> Result<(), ServeError> {
        within(self.handle).await.unwrap()
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out; the server hung")
}

async fn work(channel: Channel, hold: bool, fail: bool) -> Result<WorkReply, Status> {
    work_with(channel, tonic::Request::new(WorkRequest { hold, fail })).await
}

async fn work_with(
    channel: Channel,
    request: tonic::Request<WorkRequest>,
) -> Result<WorkReply, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(WORK_PATH),
        ProstCodec::<WorkRequest, WorkReply>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn check(channel: Channel, service: &str) -> Result<HealthCheckResponse, Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn status_of(channel: Channel, service: &str) -> ServingStatus {
    let response = check(channel, service).await.unwrap();
    ServingStatus::try_from(response.status).unwrap()
}

/// Polls health until `service` reports `expected`.
async fn wait_for_status(channel: &Channel, service: &str, expected: ServingStatus) {
    within(async {
        while status_of(channel.clone(), service).await != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Sends raw bytes over a fresh TCP connection and returns everything the server answers.
async fn raw_http1(addr: SocketAddr, request: &[u8]) -> String {
    within(async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
}

async fn scrape(addr: SocketAddr) -> String {
    raw_http1(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
}

#[tokio::test]
async fn health_is_serving_after_start() {
    let server = TestServer::start(true, |_| {}).await;
    let channel = server.channel().await;

    wait_for_status(&channel, "", ServingStatus::Serving).await;
    wait_for_status(&channel, TestService::NAME, ServingStatus::Serving).await;
    let unknown = check(channel, "no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn health_follows_readiness() {
    let server = TestServer::start(false, |_| {}).await;
    let channel = server.channel().await;

    // Never SERVING before the first probe passes.
    assert_eq!(
        status_of(channel.clone(), "").await,
        ServingStatus::NotServing
    );
    // Alive all the same: liveness does not follow the database.
    assert_eq!(
        status_of(channel.clone(), touchstone_server::LIVENESS).await,
        ServingStatus::Serving
    );

    server.set_ready(true);
    wait_for_status(&channel, "", ServingStatus::Serving).await;
    wait_for_status(&channel, TestService::NAME, ServingStatus::Serving).await;

    server.set_ready(false);
    wait_for_status(&channel, "", ServingStatus::NotServing).await;
    wait_for_status(&channel, TestService::NAME, ServingStatus::NotServing).await;
    assert_eq!(
        status_of(channel.clone(), touchstone_server::LIVENESS).await,
        ServingStatus::Serving
    );

    server.set_ready(true);
    wait_for_status(&channel, "", ServingStatus::Serving).await;
}

#[tokio::test]
async fn a_probe_that_hangs_counts_as_failed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness: Readiness = Arc::new(|| std::future::pending().boxed());
    let mut opts = ServeOptions::new("test", vec![]);
    opts.readiness_interval = Duration::from_millis(20);
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(serve(listener, Routes::default(), opts, readiness, async {
        let _ = stopped.await;
    }));

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        status_of(channel.clone(), "").await,
        ServingStatus::NotServing
    );

    stop.send(()).unwrap();
    within(handle).await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_lists_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};

    let server = TestServer::start(true, |_| {}).await;
    let channel = server.channel().await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    // Only what this port serves: not the five Touchstone services of the descriptor set.
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            TestService::NAME,
        ]
    );

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "grpc.health.v1.Health")
    );
    assert!(
        !list
            .service
            .iter()
            .any(|s| s.name == "touchstone.register.v1.RegisterService")
    );
}

#[tokio::test]
async fn metrics_count_requests_by_method_and_code_over_plain_http1() {
    let server = TestServer::start(true, |_| {}).await;
    let channel = server.channel().await;

    check(channel.clone(), "").await.unwrap();
    check(channel.clone(), "").await.unwrap();
    assert_eq!(
        check(channel.clone(), "no.such.Service")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    work(channel.clone(), false, false).await.unwrap();
    assert_eq!(
        work(channel.clone(), false, true).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let response = scrape(server.addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("openmetrics-text"), "{response}");
    for expected in [
        r#"touchstone_grpc_requests_total{service="test",method="Check",code="OK"} 2"#,
        r#"touchstone_grpc_requests_total{service="test",method="Check",code="NOT_FOUND"} 1"#,
        // The test service is not in the served descriptor sets, so its path is not a label.
        r#"touchstone_grpc_requests_total{service="test",method="other",code="OK"} 1"#,
        r#"touchstone_grpc_requests_total{service="test",method="other",code="INVALID_ARGUMENT"} 1"#,
        r#"rpc_server_duration_seconds_count{rpc_system="grpc",rpc_service="grpc.health.v1.Health",rpc_method="Check",rpc_grpc_status_code="0"} 2"#,
        r#"rpc_server_duration_seconds_count{rpc_system="grpc",rpc_service="grpc.health.v1.Health",rpc_method="Check",rpc_grpc_status_code="5"} 1"#,
        r#"touchstone_grpc_in_flight{service="test"} 0"#,
    ] {
        assert!(
            response.contains(expected),
            "missing {expected} in\n{response}"
        );
    }
    assert!(!response.contains("TestService"), "{response}");
}

/// The RPC latency histogram has the OpenTelemetry RPC semantic conventions' name and labels
/// (what stock gRPC dashboards query), and the port also shows the process-wide metrics: the
/// process itself and groups other crates register.
#[tokio::test]
async fn metrics_follow_the_opentelemetry_rpc_conventions_and_show_process_metrics() {
    fn encode_test_group(
        encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        touchstone_server::metrics::encode_gauge(encoder, "touchstone_test_group", "a test", 7.0)
    }
    touchstone_server::register_collector("server-test", encode_test_group);

    let server = TestServer::start(true, |_| {}).await;
    let channel = server.channel().await;
    check(channel.clone(), "").await.unwrap();

    let response = scrape(server.addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let bucket = response
        .lines()
        .find(|l| {
            l.starts_with("rpc_server_duration_seconds_bucket{")
                && [
                    r#"rpc_system="grpc""#,
                    r#"rpc_service="grpc.health.v1.Health""#,
                    r#"rpc_method="Check""#,
                    r#"rpc_grpc_status_code="0""#,
                    r#"le="+Inf""#,
                ]
                .iter()
                .all(|label| l.contains(label))
        })
        .unwrap_or_else(|| panic!("no semantic-convention bucket in\n{response}"));
    assert!(bucket.ends_with(" 1"), "{bucket}");
    for expected in [
        "# TYPE rpc_server_duration_seconds histogram",
        "rpc_server_duration_seconds_sum{",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "touchstone_test_group 7",
    ] {
        assert!(
            response.contains(expected),
            "missing {expected} in\n{response}"
        );
    }
}

#[tokio::test]
async fn grpc_web_works_over_http1() {
    let server = TestServer::start(true, |_| {}).await;

    // An empty HealthCheckRequest, in one uncompressed gRPC frame.
    let frame = [0u8, 0, 0, 0, 0];
    let mut request = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(&frame);

    let response = raw_http1(server.addr, &request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/grpc-web+proto"),
        "{response}"
    );
    // gRPC-Web carries the trailers in the body.
    assert!(response.contains("grpc-status:0"), "{response}");
}

/// The server's own limit holds over all its connections: many connections each under their
/// own limit cannot admit more than the server's total.
#[tokio::test]
async fn sheds_beyond_the_server_limit_across_connections() {
    let mut server = TestServer::start(true, |opts| {
        opts.max_concurrent_per_connection = 10;
        opts.max_concurrent_total = 1;
    })
    .await;
    let channel = server.channel().await;
    let held = tokio::spawn(work(channel.clone(), true, false));
    server.wait_until_held().await;

    // Another connection, far under its own limit, is refused: the server is full.
    let other = server.channel().await;
    let shed = work(other.clone(), false, false).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted);
    let info = shed.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "CONCURRENCY_LIMIT_EXCEEDED");
    assert_eq!(
        info.metadata.get("scope").map(String::as_str),
        Some("server")
    );
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some("1"));

    server.release_held();
    within(held).await.unwrap().unwrap();
    // The server's permit came back with the finished call.
    work(other, false, false).await.unwrap();
}

/// A connection's calls beyond its limit wait in the client for an HTTP/2 stream (the server
/// offers as many streams as its limit) instead of being refused and resent, and are served in
/// turn; another connection is unaffected.
#[tokio::test]
async fn a_connection_at_its_limit_makes_further_calls_wait_for_a_stream() {
    let mut server = TestServer::start(true, |opts| opts.max_concurrent_per_connection = 1).await;
    let channel = server.channel().await;

    let held = tokio::spawn(work(channel.clone(), true, false));
    server.wait_until_held().await;

    let waiting = tokio::spawn(work(channel.clone(), false, false));
    // The limit is per connection: another connection is unaffected.
    let other = server.channel().await;
    work(other, false, false).await.unwrap();
    assert!(
        !waiting.is_finished(),
        "a call past the limit was not made to wait"
    );

    server.release_held();
    within(held).await.unwrap().unwrap();
    within(waiting).await.unwrap().unwrap();

    let metrics = scrape(server.addr).await;
    assert!(
        !metrics.contains(r#"code="RESOURCE_EXHAUSTED""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_call_past_its_deadline_gets_deadline_exceeded() {
    let mut server = TestServer::start(true, |_| {}).await;

    // tonic's client enforces `grpc-timeout` itself (answering CANCELLED), so this goes over
    // raw gRPC-Web to see what the server does on its own. The request is `hold: true`.
    let frame = [0u8, 0, 0, 0, 2, 0x08, 0x01];
    let mut request = format!(
        "POST {WORK_PATH} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/grpc-web+proto\r\ngrpc-timeout: 50m\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(&frame);
    let addr = server.addr;
    let call = tokio::spawn(async move { raw_http1(addr, &request).await });
    server.wait_until_held().await;

    let response = within(call).await.unwrap().to_ascii_lowercase();
    assert!(
        response.contains("grpc-status: 4") || response.contains("grpc-status:4"),
        "{response}"
    );
}

/// A call waiting for the server's budget is still bound by its deadline: it gets
/// DEADLINE_EXCEEDED when that passes, not a late RESOURCE_EXHAUSTED or a late answer.
#[tokio::test]
async fn waiting_for_admission_counts_against_the_deadline() {
    let mut server = TestServer::start(true, |opts| opts.max_concurrent_total = 1).await;
    let channel = server.channel().await;
    let held = tokio::spawn(work(channel, true, false));
    server.wait_until_held().await;

    // Raw gRPC-Web (tonic's client would enforce the timeout itself); `hold: false`.
    let frame = [0u8, 0, 0, 0, 2, 0x08, 0x00];
    let mut request = format!(
        "POST {WORK_PATH} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/grpc-web+proto\r\ngrpc-timeout: 50m\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(&frame);
    let response = raw_http1(server.addr, &request).await.to_ascii_lowercase();
    assert!(
        response.contains("grpc-status: 4") || response.contains("grpc-status:4"),
        "{response}"
    );

    server.release_held();
    within(held).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_goes_not_serving_then_lets_in_flight_calls_finish() {
    let mut server = TestServer::start(true, |opts| {
        opts.shutdown_grace = Duration::from_secs(60);
    })
    .await;
    let channel = server.channel().await;
    wait_for_status(&channel, "", ServingStatus::Serving).await;

    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let update = within(watch.message()).await.unwrap().unwrap();
        if update.status == ServingStatus::Serving as i32 {
            break;
        }
    }

    let held = tokio::spawn(work(channel.clone(), true, false));
    server.wait_until_held().await;
    server.begin_shutdown();

    let update = within(watch.message()).await.unwrap().unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // Watches end so they do not hold the drain open.
    assert!(within(watch.message()).await.unwrap().is_none());

    assert!(
        !server.handle.is_finished(),
        "returned with a call in flight"
    );
    server.release_held();
    let reply = within(held).await.unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    server.stopped().await.unwrap();
}

#[tokio::test]
async fn drain_gives_up_at_the_grace_deadline() {
    let mut server = TestServer::start(true, |opts| {
        opts.shutdown_grace = Duration::from_millis(100);
    })
    .await;
    let channel = server.channel().await;

    let held = tokio::spawn(work(channel, true, false));
    server.wait_until_held().await;
    server.begin_shutdown();

    server.stopped().await.unwrap();
    assert!(within(held).await.unwrap().is_err());
}

#[tokio::test]
async fn zero_concurrency_is_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut opts = ServeOptions::new("test", vec![]);
    opts.max_concurrent_per_connection = 0;
    let readiness: Readiness = Arc::new(|| async { true }.boxed());
    let result = serve(listener, Routes::default(), opts, readiness, async {}).await;
    assert!(matches!(result, Err(ServeError::NoConcurrency)));
}

// The only test that installs process-global telemetry, so it also covers the second call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_crosses_the_hop_and_telemetry_installs_once() {
    // Nothing listens on port 1: spans fail to export, which must not affect serving.
    let guard = touchstone_server::telemetry::init(
        "touchstone-server-test",
        true,
        "info",
        Some(touchstone_server::telemetry::Otlp {
            endpoint: "http://127.0.0.1:1",
            ca_pem: None,
        }),
    )
    .unwrap();
    let again = touchstone_server::telemetry::init("again", true, "info", None);
    assert!(matches!(again, Err(TelemetryError::AlreadyInitialised)));

    let server = TestServer::start(true, |_| {}).await;
    let channel = server.channel().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(WorkRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let reply = work_with(channel, request).await.unwrap();

    let downstream: Vec<&str> = reply.traceparent.split('-').collect();
    assert_eq!(downstream.len(), 4, "{}", reply.traceparent);
    assert_eq!(
        downstream[1], trace_id,
        "the callee must join the caller's trace"
    );
    assert_ne!(
        downstream[2], caller_span,
        "the callee must have its own span"
    );
    assert_eq!(
        reply.peer_traceparent, reply.traceparent,
        "a call through a peer channel carries the handler's trace context"
    );
    drop(guard);
}
