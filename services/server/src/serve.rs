//! The accept loop: one port for a service's gRPC routes plus health, reflection, gRPC-Web and
//! `/metrics`, with a middleware stack built per connection and a bounded graceful drain.
//!
//! tonic's own `Server` applies `Server::layer` once and shares the result across connections,
//! and its built-in per-connection limit sits outside those layers (so shed requests would be
//! invisible to metrics). Owning the loop lets each connection get its own budget beneath the
//! observation layer, HTTP/1 for `/metrics` and gRPC-Web, and a drain that ends at a deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::service::Routes;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::Layer as _;

use crate::deadline::Deadline;
use crate::health::Health;
use crate::methods::KnownMethods;
use crate::metrics::Metrics;
use crate::observe::{Observe, Observer};
use crate::shed::Shed;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A readiness probe (e.g. `SELECT 1` on the service's database). While it returns false, or
/// takes longer than 2 s, the server reports NOT_SERVING; it reports SERVING again once the
/// probe passes.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// How one service is served.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Short service name, e.g. `"register"`: the `service` metric label, and the ErrorInfo
    /// domain (`register.touchstone`) on statuses the server itself returns.
    pub service: &'static str,
    /// Full gRPC service names reported by health, e.g. `"touchstone.register.v1.RegisterService"`.
    pub grpc_services: Vec<&'static str>,
    /// In-flight requests allowed on one connection before more are shed with RESOURCE_EXHAUSTED.
    pub max_concurrent_per_connection: usize,
    /// In-flight requests allowed in this server over all its connections before more are shed
    /// with RESOURCE_EXHAUSTED: many connections each under their own limit must not admit more
    /// work than the service can finish in good time.
    pub max_concurrent_total: usize,
    /// How often the readiness probe runs.
    pub readiness_interval: Duration,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

impl ServeOptions {
    pub const DEFAULT_MAX_CONCURRENT_PER_CONNECTION: usize = 256;
    pub const DEFAULT_MAX_CONCURRENT_TOTAL: usize = 1024;
    pub const DEFAULT_READINESS_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

    /// Options with the defaults: 256 per connection, 1,024 in all, a probe every 5 s, a 20 s
    /// drain.
    pub fn new(service: &'static str, grpc_services: Vec<&'static str>) -> Self {
        Self {
            service,
            grpc_services,
            max_concurrent_per_connection: Self::DEFAULT_MAX_CONCURRENT_PER_CONNECTION,
            max_concurrent_total: Self::DEFAULT_MAX_CONCURRENT_TOTAL,
            readiness_interval: Self::DEFAULT_READINESS_INTERVAL,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("max_concurrent_per_connection and max_concurrent_total must be at least 1")]
    NoConcurrency,
    #[error("cannot build server reflection from the descriptor sets")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("cannot read the gRPC methods from the descriptor sets")]
    Descriptors(#[source] prost::DecodeError),
}

/// Descriptor sets of everything served: the Touchstone APIs and the gRPC health service.
/// The reflection builders add their own.
const SERVED_DESCRIPTORS: [&[u8]; 2] = [
    touchstone_api::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
];

/// How long to pause after an accept error that is not about one connection (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `routes` (the service's tonic routes, already wrapped in its auth interceptor) on
/// `listener` until `shutdown` completes, then drains.
///
/// On the same port: the routes; `grpc.health.v1` for `""` and every name in
/// `opts.grpc_services`, following `readiness`; server reflection v1 and v1alpha; gRPC-Web over
/// HTTP/1.1; and `GET /metrics`. `routes` must not already contain health or reflection.
///
/// When `shutdown` completes: health goes NOT_SERVING, the listener closes, connections are
/// asked to finish (HTTP/2 GOAWAY), and in-flight calls get up to `opts.shutdown_grace` before
/// the remaining connections are closed. Returns once that is done.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    opts: ServeOptions,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if opts.max_concurrent_per_connection == 0 || opts.max_concurrent_total == 0 {
        return Err(ServeError::NoConcurrency);
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(reporter, &opts.grpc_services).await;

    let routes = routes
        .add_service(health_service)
        .add_service(
            reflection(&opts.grpc_services)
                .build_v1()
                .map_err(ServeError::Reflection)?,
        )
        .add_service(
            reflection(&opts.grpc_services)
                .build_v1alpha()
                .map_err(ServeError::Reflection)?,
        )
        .prepare();
    let methods = KnownMethods::from_descriptor_sets(&[
        touchstone_api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
    .map_err(ServeError::Descriptors)?;
    let stack = Stack {
        observer: Arc::new(Observer {
            service: opts.service,
            metrics: Metrics::new(opts.service),
            methods,
        }),
        routes,
        limit: opts.max_concurrent_per_connection,
        server: Arc::new(Semaphore::new(opts.max_concurrent_total)),
        total: opts.max_concurrent_total,
        domain: format!("{}.touchstone", opts.service).into(),
    };

    let readiness_task = AbortOnDrop(health.watch_readiness(readiness, opts.readiness_interval));
    let builder = connection_builder(opts.max_concurrent_per_connection);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    match listener.local_addr() {
        Ok(address) => tracing::info!(service = opts.service, %address, "serving"),
        Err(error) => tracing::info!(service = opts.service, %error, "serving"),
    }

    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(finished) = connections.join_next() => {
                note_connection_end(finished);
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                // gRPC messages are small and latency-bound; Nagle only delays them.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                connections.spawn(serve_connection(
                    builder.clone(),
                    stream,
                    stack.for_connection(),
                    drain_rx.clone(),
                ));
            }
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "connection failed during accept");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept connections; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    tracing::info!(
        connections = connections.len(),
        "shutting down: NOT_SERVING, then draining"
    );
    readiness_task.stop().await;
    health.stop_serving().await;
    drop(listener);
    drain_tx.send_replace(true);
    health.close_watches().await;

    let drained = tokio::time::timeout(opts.shutdown_grace, async {
        while let Some(finished) = connections.join_next().await {
            note_connection_end(finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace_ms = opts.shutdown_grace.as_millis(),
            "drain deadline passed; closing the remaining connections"
        );
        connections.shutdown().await;
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Reflection for this port: every descriptor stays resolvable (one set holds all the
/// Touchstone protos), but `ListServices` names only what the port serves, as a client that
/// discovers services through it would otherwise call services that answer UNIMPLEMENTED here.
fn reflection(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = SERVED_DESCRIPTORS.into_iter().fold(
        tonic_reflection::server::Builder::configure(),
        tonic_reflection::server::Builder::register_encoded_file_descriptor_set,
    );
    served.iter().copied().chain(ALWAYS_SERVED).fold(
        builder,
        tonic_reflection::server::Builder::with_service_name,
    )
}

/// What every port serves beside its own services.
const ALWAYS_SERVED: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

fn connection_builder(limit: usize) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // With a timer hyper enforces its HTTP/1 header read timeout (slow-loris protection).
    builder.http1().timer(TokioTimer::new());
    // HTTP/2 lets each connection open as many streams as its concurrency limit: an
    // overloaded client's further calls wait in the client for a stream. A cap above the limit
    // let every caller over it be refused and resend: at 50 connections x 1,000 calls the
    // refusals took both CPUs and no admitted call completed (BENCHMARKS.md, overload). The
    // limit still sheds what reaches it (gRPC-Web over HTTP/1.1, a client ignoring the cap).
    let streams = u32::try_from(limit).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    builder
}

/// SETTINGS_INITIAL_WINDOW_SIZE: the request bytes one stream may send before the handler
/// reads them. Requests are small, so HTTP/2's own default is plenty for full speed.
const STREAM_WINDOW: u32 = 64 * 1024;

/// The connection's receive window, sized for h2's flood protection rather than for bytes.
///
/// h2 charges every DATA frame under 256 bytes `256 - len` against a per-connection budget
/// while the frame waits to be read, and closes the connection with GOAWAY ENHANCE_YOUR_CALM
/// `too_many_data_frames` when the budget runs out. The budget cannot be set through hyper; h2
/// makes it half the connection window. A client streaming small messages (grpcio sends one
/// DATA frame per ImportResponses row of ~40 bytes) fills a stream's window with up to
/// `STREAM_WINDOW / 5` frames (a gRPC frame is at least its 5-byte prefix) while the handler is
/// busy writing a batch, which with hyper's 1 MiB default cut grpcio imports off after 7-9k
/// rows. Half of this window covers a whole stream window of the smallest gRPC frames
/// (`64 KiB / 5 * 251` is about 3.3 MB) with room to spare, and the stream window still bounds
/// what each stream holds.
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

fn note_connection_end(finished: Result<(), JoinError>) {
    if let Err(error) = finished
        && error.is_panic()
    {
        tracing::error!(%error, "connection task panicked");
    }
}

async fn serve_connection(
    builder: Builder<TokioExecutor>,
    stream: TcpStream,
    service: Connection,
    mut drain: watch::Receiver<bool>,
) {
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut connection = pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection closed with an error");
            }
            return;
        }
        // A closed channel means the server is gone; drain then too.
        _ = drain.wait_for(|draining| *draining) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection closed with an error while draining");
    }
}

/// What every connection shares; `for_connection` adds what each connection owns.
struct Stack {
    observer: Arc<Observer>,
    routes: Routes,
    limit: usize,
    /// The server's budget over all connections, and its size.
    server: Arc<Semaphore>,
    total: usize,
    domain: Arc<str>,
}

impl Stack {
    fn for_connection(&self) -> Connection {
        // The deadline outside the admission: time spent waiting for the
        // server's budget counts against the call's deadline.
        let admitted = Deadline::new(
            Shed::new(
                self.routes.clone(),
                self.limit,
                (self.server.clone(), self.total),
                self.domain.clone(),
            ),
            self.domain.clone(),
        );
        Connection {
            observer: self.observer.clone(),
            grpc: GrpcWebLayer::new().layer(Observe::new(self.observer.clone(), admitted)),
        }
    }
}

/// One connection's service: `GET /metrics` directly, everything else through the gRPC stack
/// (gRPC-Web translation outermost, so the layers beneath only ever see gRPC).
#[derive(Clone, Debug)]
struct Connection {
    observer: Arc<Observer>,
    grpc: GrpcWebService<Observe<Deadline<Shed<Routes>>>>,
}

impl<B> tower::Service<Request<B>> for Connection
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<Body>>::poll_ready(&mut self.grpc, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            return Box::pin(std::future::ready(Ok(self.observer.metrics.response())));
        }
        Box::pin(self.grpc.call(request.map(Body::new)))
    }
}

/// The readiness task must not outlive `serve`, even when the caller drops its future.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn stop(mut self) {
        self.0.abort();
        // Waiting makes sure no probe result lands after the drain's NOT_SERVING.
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
