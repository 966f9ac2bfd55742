//! tonic interceptor that authenticates every request and hands the [`Caller`] to handlers.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::caller::Caller;
use crate::delegation::ACT_AS_HEADER;
use crate::error::AuthError;
use crate::verifier::Verifier;

/// `google.rpc.ErrorInfo.domain` of authentication failures.
pub const ERROR_DOMAIN: &str = "auth.touchstone";

/// Verifies `authorization: Bearer <jwt>` and stores the [`Caller`] in the request
/// extensions, where [`Caller::from_request`] finds it. Failures are `UNAUTHENTICATED` with
/// an `ErrorInfo` reason of `TOKEN_MISSING`, `TOKEN_INVALID` or `TOKEN_EXPIRED`. With a
/// `touchstone-act-as` header the stored caller is the narrower one the token's holder may
/// act as ([`Caller::act_as`]); a refused one is `PERMISSION_DENIED`, reason
/// `ACT_AS_DENIED`, and the call goes no further.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    verifier: Arc<Verifier>,
}

impl AuthInterceptor {
    pub fn new(v: Arc<Verifier>) -> Self {
        AuthInterceptor { verifier: v }
    }

    fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, AuthError> {
        let value = req
            .metadata()
            .get("authorization")
            .ok_or(AuthError::TokenMissing)?;
        let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let token = bearer_token(value).ok_or(AuthError::NotBearer)?;
        self.verifier.verify(token)
    }
}

/// The token of a `Bearer` credential; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_start();
    (!token.is_empty()).then_some(token)
}

/// The status a client receives for an authentication failure.
pub(crate) fn unauthenticated(err: &AuthError) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        err.to_string(),
        ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, HashMap::new()),
    )
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        match self.authenticate(&req) {
            Ok(caller) => {
                let caller = match req.metadata().get(ACT_AS_HEADER) {
                    None => caller,
                    Some(value) => value
                        .to_str()
                        .map_err(|_| crate::DelegationError::Malformed)
                        .and_then(|v| caller.act_as(v))
                        .map_err(|e| {
                            Status::with_error_details(
                                Code::PermissionDenied,
                                e.message(),
                                ErrorDetails::with_error_info(
                                    "ACT_AS_DENIED",
                                    ERROR_DOMAIN,
                                    HashMap::new(),
                                ),
                            )
                        })?,
                };
                req.extensions_mut().insert(caller);
                Ok(req)
            }
            Err(err) => {
                tracing::debug!(reason = err.reason(), error = %err, "request not authenticated");
                Err(unauthenticated(&err))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn status_carries_error_info() {
        let status = unauthenticated(&AuthError::Expired);
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "TOKEN_EXPIRED");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }
}
