//! Per-request observation: a tracing span parented on the caller's trace context, the request
//! metrics, and one log line when the RPC reaches its final status.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Frame, SizeHint};
use tonic::Code;
use tonic::body::Body;
use tracing::{Instrument as _, Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::methods::{KnownMethods, Rpc};
use crate::metrics::{Metrics, code_name};
use crate::telemetry::extract_trace_context;

#[derive(Debug)]
pub(crate) struct Observer {
    /// Short service name, so request lines from several services in one process differ.
    pub(crate) service: &'static str,
    pub(crate) metrics: Metrics,
    pub(crate) methods: KnownMethods,
}

/// Observes every request it passes to `inner`. Sits outside load shedding so that shed
/// requests are counted and logged like any other.
#[derive(Clone, Debug)]
pub(crate) struct Observe<S> {
    observer: Arc<Observer>,
    inner: S,
}

impl<S> Observe<S> {
    pub(crate) fn new(observer: Arc<Observer>, inner: S) -> Self {
        Self { observer, inner }
    }
}

impl<S> tower::Service<Request<Body>> for Observe<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let rpc = self.observer.methods.lookup(request.uri().path());
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %format_args!("{}/{}", rpc.service, rpc.method),
            otel.kind = "server",
            otel.status_code = field::Empty,
            rpc.system = "grpc",
            rpc.service = %rpc.service,
            rpc.method = %rpc.method,
            rpc.grpc.status_code = field::Empty,
        );
        // Without trace export there is no OpenTelemetry layer to take a parent, which is fine.
        let _ = span.set_parent(extract_trace_context(request.headers()));

        let mut record = Record::start(self.observer.clone(), rpc, span.clone());
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let Ok(response) = response.await;
                record.status_from(response.headers());
                if http_body::Body::is_end_stream(response.body()) {
                    // Nothing more will come, so no trailers: the status is all there is.
                    record.code.get_or_insert(Code::Unknown);
                }
                Ok(response.map(|body| Body::new(ObservedBody::new(body, record))))
            }
            .instrument(span),
        )
    }
}

/// One request's accounting; whatever way the request ends (trailers, end of body, or the
/// caller going away and everything being dropped), dropping this records it exactly once.
struct Record {
    observer: Arc<Observer>,
    rpc: Rpc,
    span: Span,
    started: Instant,
    code: Option<Code>,
}

impl Record {
    fn start(observer: Arc<Observer>, rpc: Rpc, span: Span) -> Self {
        observer.metrics.request_started();
        Self {
            observer,
            rpc,
            span,
            started: Instant::now(),
            code: None,
        }
    }

    /// Takes `grpc-status` from response headers (a trailers-only response) or from trailers.
    fn status_from(&mut self, headers: &HeaderMap) {
        if let Some(status) = headers.get("grpc-status") {
            self.code = Some(Code::from_bytes(status.as_bytes()));
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // No status means the body was abandoned: the caller cancelled or the stream broke.
        let code = self.code.unwrap_or(Code::Cancelled);
        let elapsed = self.started.elapsed();
        self.observer
            .metrics
            .request_finished(&self.rpc, code, elapsed);

        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // Per request, so at debug: a terminal running `up` stays readable.
        tracing::debug!(
            parent: &self.span,
            service = self.observer.service,
            rpc.method = %self.rpc.method,
            grpc.code = code_name(code),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "rpc finished"
        );
    }
}

/// The codes OpenTelemetry's semantic conventions count as a server-side failure.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

pin_project_lite::pin_project! {
    /// Response body that finishes the request's record when the final status goes out.
    struct ObservedBody<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
    }
}

impl<B> ObservedBody<B> {
    fn new(inner: B, record: Record) -> Self {
        Self {
            inner,
            record: Some(record),
        }
    }
}

impl<B> http_body::Body for ObservedBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut record) = this.record.take()
                {
                    record.status_from(trailers);
                    record.code.get_or_insert(Code::Unknown);
                }
            }
            Some(Err(_)) => {
                if let Some(mut record) = this.record.take() {
                    record.code.get_or_insert(Code::Internal);
                }
            }
            None => {
                if let Some(mut record) = this.record.take() {
                    record.code.get_or_insert(Code::Unknown);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
