//! Channels to the other Touchstone services. Every call made through a [`PeerChannel`] carries
//! the W3C trace context (`traceparent`, `tracestate`) of the span current when the call is
//! made, so the callee's server span (see `observe`) joins the caller's trace. This is the one
//! place outbound calls get their trace context; clients are built on it, not on a bare
//! [`Channel`].

use std::task::{Context, Poll};

use tonic::transport::Channel;

use crate::telemetry::inject_trace_headers;

/// A channel to another service that passes the current trace context on with every call.
pub type PeerChannel = TraceContext<Channel>;

/// `channel`, passing the current trace context on with every call made through it.
pub fn traced(channel: Channel) -> PeerChannel {
    TraceContext::new(channel)
}

/// Tower middleware for gRPC clients: writes the current span's trace context into the headers
/// of each outgoing request. Nothing is written while trace export is off (no propagator is
/// installed) or when no span with a trace is current (e.g. a background task).
#[derive(Debug, Clone)]
pub struct TraceContext<S> {
    inner: S,
}

impl<S> TraceContext<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for TraceContext<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // tonic's client calls this from the caller's task, inside the caller's span.
        inject_trace_headers(request.headers_mut());
        self.inner.call(request)
    }
}
