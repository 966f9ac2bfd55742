//! The kpi service's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use touchstone_platform::change::BeginError;
use touchstone_platform::error::{self, FieldViolation};
use touchstone_platform::keyring::KeyError;

/// `ErrorInfo.domain` of every kpi error.
pub const DOMAIN: &str = "kpi.touchstone";

/// Everything that can go wrong in a kpi call.
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
    /// A request id was reused for a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// What the request changed no longer exists.
    #[error("what this request changed was since deleted")]
    Forgotten,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A data key could not be had.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
}

impl Error {
    /// One violation of `field`.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<touchstone_list::ListError> for Error {
    fn from(e: touchstone_list::ListError) -> Self {
        Error::invalid(e.field, e.description)
    }
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
            BeginError::Forgotten => Error::Forgotten,
            BeginError::Database(e) => Error::Database(e),
            BeginError::Keys(e) => Error::Keys(e),
        }
    }
}

impl From<FieldViolation> for Error {
    fn from(v: FieldViolation) -> Self {
        Error::InvalidArgument(vec![v])
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
            Error::Forgotten => simple(
                Code::FailedPrecondition,
                "DELETED",
                "what this request changed was since deleted".into(),
            ),
            Error::Database(e) => error::database(DOMAIN, &e),
            other => error::internal(DOMAIN, &other),
        }
    }
}
