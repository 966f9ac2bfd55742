//! Authentication errors. Messages say what was wrong with a token or key source but never
//! repeat the token, claim values or key material, so they are safe to log and to return.

use std::path::PathBuf;

/// Why configuration, a key source, a token or minting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("auth configuration: {0}")]
    Config(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not fetch JWKS: {0}")]
    JwksFetch(String),
    #[error("invalid JWKS: {0}")]
    JwksInvalid(String),
    #[error("bearer token missing")]
    TokenMissing,
    #[error("authorization header is not a bearer token")]
    NotBearer,
    #[error("token is malformed")]
    Malformed,
    #[error("token key id is missing or unknown")]
    UnknownKey,
    #[error("token algorithm is not allowed for its key")]
    AlgorithmNotAllowed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token is missing the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token claims are invalid: {0}")]
    InvalidClaims(&'static str),
    #[error("development signing key: {0}")]
    DevKey(&'static str),
    #[error("token request: {0}")]
    InvalidRequest(&'static str),
    #[error("token signing failed")]
    Signing,
}

impl AuthError {
    /// The `google.rpc.ErrorInfo` reason that clients act on: fetch a token, fetch a new
    /// one, or give up.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::TokenMissing => "TOKEN_MISSING",
            AuthError::Expired => "TOKEN_EXPIRED",
            _ => "TOKEN_INVALID",
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AuthError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
