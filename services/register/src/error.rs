//! The register's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use touchstone_platform::change::BeginError;
use touchstone_platform::error::{self, FieldViolation, Violations};
use touchstone_platform::keyring::KeyError;

/// `ErrorInfo.domain` of every register error.
pub const DOMAIN: &str = "register.touchstone";

/// Everything that can go wrong in a register call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request fields.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    /// The resource does not exist, or belongs to another agency.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A caller-chosen id is taken.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The etag does not match the current version.
    #[error("the etag does not match the current version")]
    StaleEtag,
    /// The caller's roles or agency do not allow this.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// The resource's state does not allow this.
    #[error("{message}")]
    FailedPrecondition {
        /// ErrorInfo reason.
        reason: &'static str,
        /// Safe message.
        message: &'static str,
    },
    /// A request id was reused for a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A data key could not be had.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// Stored data did not decrypt or decode.
    #[error("stored data is unreadable: {0}")]
    Corrupt(&'static str),
}

impl From<touchstone_auth::Denied> for Error {
    fn from(d: touchstone_auth::Denied) -> Self {
        match d {
            touchstone_auth::Denied::NotFound => Error::NotFound("resource"),
            other => Error::PermissionDenied(other.message()),
        }
    }
}

impl From<BeginError> for Error {
    fn from(e: BeginError) -> Self {
        match e {
            BeginError::BadRequestId(v) => Error::InvalidArgument(vec![v]),
            BeginError::RequestIdReused => Error::RequestIdReused,
            BeginError::Forgotten => Error::FailedPrecondition {
                reason: "CLIENT_ERASED",
                message: "what this request changed belongs to a client that was since erased",
            },
            BeginError::Database(e) => Error::Database(e),
            BeginError::Keys(e) => Error::Keys(e),
        }
    }
}

impl From<touchstone_platform::outbox::FeedError> for Error {
    fn from(e: touchstone_platform::outbox::FeedError) -> Self {
        use touchstone_platform::outbox::FeedError;
        match e {
            FeedError::Denied(why) => Error::PermissionDenied(why),
            FeedError::Invalid(v) => Error::InvalidArgument(vec![v]),
            FeedError::Database(e) => Error::Database(e),
        }
    }
}

impl From<Violations> for Error {
    fn from(v: Violations) -> Self {
        Error::InvalidArgument(v.finish().err().unwrap_or_default())
    }
}

impl Error {
    /// One violation of `field`.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// Whether a database error is a primary-key or unique clash.
    pub fn is_unique_violation(e: &sqlx::Error) -> bool {
        e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let simple =
            |code, reason: &str, message: String| error::status(code, DOMAIN, reason, message, &[]);
        match e {
            Error::InvalidArgument(v) => error::invalid_argument(DOMAIN, &v),
            Error::NotFound(what) => {
                simple(Code::NotFound, "NOT_FOUND", format!("{what} not found"))
            }
            Error::AlreadyExists(what) => simple(
                Code::AlreadyExists,
                "ALREADY_EXISTS",
                format!("{what} already exists"),
            ),
            Error::StaleEtag => simple(
                Code::Aborted,
                "ETAG_MISMATCH",
                "the etag does not match the current version; read it again and retry".into(),
            ),
            Error::PermissionDenied(why) => {
                simple(Code::PermissionDenied, "PERMISSION_DENIED", why.to_string())
            }
            Error::FailedPrecondition { reason, message } => {
                simple(Code::FailedPrecondition, reason, message.to_string())
            }
            Error::RequestIdReused => error::status(
                Code::InvalidArgument,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "request_id was already used for a different request",
                &[FieldViolation::new(
                    "request_id",
                    "already used for a different request",
                )],
            ),
            Error::Database(e) => error::database(DOMAIN, &e),
            other => error::internal(DOMAIN, &other),
        }
    }
}
