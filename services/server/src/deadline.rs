//! Enforces the caller's deadline (`grpc-timeout`): a handler that has not answered when the
//! caller's time is up is dropped and the caller gets DEADLINE_EXCEEDED, so no work outlives
//! its purpose. (A response stream already under way is left to the caller to cancel.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

#[derive(Clone, Debug)]
pub(crate) struct Deadline<S> {
    domain: Arc<str>,
    inner: S,
}

impl<S> Deadline<S> {
    pub(crate) fn new(inner: S, domain: Arc<str>) -> Self {
        Self { domain, inner }
    }
}

impl<S> tower::Service<Request<Body>> for Deadline<S>
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
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(parse_timeout);
        let response = self.inner.call(request);
        let Some(timeout) = timeout else {
            return Box::pin(response);
        };
        let domain = self.domain.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, response).await {
                Ok(response) => response,
                Err(_elapsed) => Ok(Status::with_error_details(
                    Code::DeadlineExceeded,
                    "deadline exceeded",
                    ErrorDetails::with_error_info(
                        "DEADLINE_EXCEEDED",
                        &*domain,
                        HashMap::<String, String>::new(),
                    ),
                )
                .into_http()),
            }
        })
    }
}

/// The time the caller has left (its `grpc-timeout`), to pass downstream.
pub fn remaining<T>(request: &tonic::Request<T>) -> Option<Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_timeout(&HeaderValue::from_str(v).ok()?))
}

/// Parses `grpc-timeout` as the gRPC HTTP/2 spec defines it: at most 8 digits and a unit.
/// A malformed value is ignored rather than failing the call, as other gRPC servers do.
fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (amount, unit) = value.split_at(unit_at);
    if amount.is_empty() || amount.len() > 8 || !amount.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(value: &'static str) -> Option<Duration> {
        parse_timeout(&HeaderValue::from_static(value))
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn ignores_malformed_values() {
        for bad in ["", "S", "10", "123456789S", "-1S", "1.5S", "10s", "1 S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
