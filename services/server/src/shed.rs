//! Load shedding: beyond a fixed number of in-flight requests on one connection, or in the whole
//! server, a request is refused at once with RESOURCE_EXHAUSTED instead of waiting in a queue.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// ErrorInfo reason on a shed request, so clients can tell overload from other exhaustion.
const REASON: &str = "CONCURRENCY_LIMIT_EXCEEDED";

/// Built once per connection: the semaphore is the connection's budget.
#[derive(Clone, Debug)]
pub(crate) struct Shed<S> {
    permits: Arc<Semaphore>,
    /// The server's budget, shared by all its connections.
    server: Arc<Semaphore>,
    limit: usize,
    /// The refusals' headers (connection over its limit, server over its
    /// limit), encoded once per connection: refusing must cost as little
    /// as possible when it is done the most.
    refusals: Arc<[http::HeaderMap; 2]>,
    inner: S,
}

impl<S> Shed<S> {
    pub(crate) fn new(
        inner: S,
        limit: usize,
        (server, total): (Arc<Semaphore>, usize),
        domain: Arc<str>,
    ) -> Self {
        let refusal = |scope: &str, limit: usize, message: &str| {
            let details = ErrorDetails::with_error_info(
                REASON,
                &*domain,
                HashMap::from([
                    ("limit".to_owned(), limit.to_string()),
                    ("scope".to_owned(), scope.to_owned()),
                ]),
            );
            Status::with_error_details(Code::ResourceExhausted, message, details)
                .into_http::<Body>()
                .into_parts()
                .0
                .headers
        };
        // A few permits more than the HTTP/2 streams the connection offers
        // (`limit`): a client may open its next stream as soon as it sees the
        // last one end, a moment before the finished call's permit returns.
        let slack = (limit / 8).clamp(4, 64);
        Self {
            permits: Arc::new(Semaphore::new(limit + slack)),
            server,
            limit,
            refusals: Arc::new([
                refusal(
                    "connection",
                    limit,
                    "too many concurrent requests on this connection; retry with backoff",
                ),
                refusal(
                    "server",
                    total,
                    "the service is at its concurrency limit; retry with backoff",
                ),
            ]),
            inner,
        }
    }

    fn refusal(&self, which: usize) -> Response<Body> {
        refusal(&self.refusals, which)
    }
}

fn refusal(refusals: &[http::HeaderMap; 2], which: usize) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = refusals[which].clone();
    response
}

/// How long a call admitted by its connection may wait for the server's
/// budget before it is shed: a short, bounded queue in front of the
/// service, so that a burst is served in order instead of refused and
/// resent, while a call that cannot start soon is told at once to back off.
const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl<S> tower::Service<Request<Body>> for Shed<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = self.limit,
                "connection at its concurrency limit; shedding"
            );
            return Box::pin(std::future::ready(Ok(self.refusal(0))));
        };
        if let Ok(server_permit) = self.server.clone().try_acquire_owned() {
            let response = self.inner.call(request);
            return Box::pin(async move {
                let Ok(response) = response.await;
                Ok(response.map(|body| {
                    Body::new(PermitBody {
                        inner: body,
                        _permit: (permit, server_permit),
                    })
                }))
            });
        }
        // The server is full: wait a little, in order, for its budget. The
        // service was polled ready, so it is the one that takes the call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let server = self.server.clone();
        let refusals = self.refusals.clone();
        Box::pin(async move {
            let server_permit =
                match tokio::time::timeout(ADMISSION_WAIT, server.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::debug!("server at its concurrency limit; shedding");
                        return Ok(refusal(&refusals, 1));
                    }
                };
            let Ok(response) = inner.call(request).await;
            // A streaming response keeps doing work until its body ends, so it keeps the permit.
            Ok(response.map(|body| {
                Body::new(PermitBody {
                    inner: body,
                    _permit: (permit, server_permit),
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    struct PermitBody<B> {
        #[pin]
        inner: B,
        _permit: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    }
}

impl<B> http_body::Body for PermitBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
