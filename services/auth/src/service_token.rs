//! The bearer token a service presents when it calls another service on its
//! own behalf (reading change feeds, verifying a client reference in the
//! background): minted from the development key under `touchstone up`, or
//! read from a file in production, re-read on every use so that a rotated
//! (e.g. Kubernetes-projected) token is picked up without a restart.

use crate::{AuthError, DevKey, Role, TokenRequest};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a service's own token comes from.
#[derive(Debug, Clone)]
pub enum ServiceToken {
    /// Minted on demand from the development key: `service` role, all agencies.
    Dev {
        /// The development signing key.
        key: Arc<DevKey>,
        /// Issuer the verifiers accept.
        issuer: String,
        /// Audience the verifiers accept.
        audience: String,
        /// Subject, e.g. `complaints`.
        subject: String,
    },
    /// A file holding the token (trailing whitespace ignored).
    File(PathBuf),
    /// A fixed token (tests).
    Fixed(String),
    /// No token: calls on the service's own behalf are not possible.
    None,
}

impl ServiceToken {
    /// The token to present now.
    pub fn bearer(&self) -> Result<String, AuthError> {
        match self {
            ServiceToken::Dev {
                key,
                issuer,
                audience,
                subject,
            } => key.mint(&TokenRequest {
                subject: subject.clone(),
                agency: None,
                agencies: Some(vec!["*".into()]),
                roles: vec![Role::Service],
                ttl: Duration::from_secs(600),
                issuer: issuer.clone(),
                audience: audience.clone(),
            }),
            ServiceToken::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|source| AuthError::Io {
                    action: "reading the service token",
                    path: path.clone(),
                    source,
                }),
            ServiceToken::Fixed(t) => Ok(t.clone()),
            ServiceToken::None => Err(AuthError::Config(
                "no service token is configured (setting service_token_file)".into(),
            )),
        }
    }

    /// The `authorization` header value to present now.
    pub fn header(
        &self,
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, AuthError> {
        format!("Bearer {}", self.bearer()?)
            .parse()
            .map_err(|_| AuthError::Config("the service token is not a valid header value".into()))
    }
}
