//! The gateway's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use touchstone_platform::change::BeginError;
use touchstone_platform::error::{self, FieldViolation};
use touchstone_platform::keyring::KeyError;

/// `ErrorInfo.domain` of every gateway error.
pub const DOMAIN: &str = "gateway.touchstone";

/// Everything that can go wrong in a gateway call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request fields.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    /// The resource does not exist, or the caller may not know it does.
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
    /// The state of the directory does not allow this.
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
    /// An API key made more requests this minute than its rate allows.
    #[error("the api_key's rate is spent for this minute")]
    RateLimited,
    /// As many fan-out reads (dashboards, benchmarks) as the gateway runs
    /// at once are running, and none ended within the wait.
    #[error("the gateway is at its limit of fan-out reads")]
    FanOutsExhausted,
    /// A service the call depends on answered with an error of its own,
    /// passed on as it is (its status is already safe to show).
    #[error("{0}")]
    Backend(Status),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A data key could not be had.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
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
                reason: "FORGOTTEN",
                message: "what this request changed was since removed",
            },
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
            Error::RateLimited => simple(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                "the api_key's requests per minute are spent; retry in the next minute".into(),
            ),
            Error::FanOutsExhausted => simple(
                Code::ResourceExhausted,
                "CONCURRENCY_LIMIT_EXCEEDED",
                "the gateway is running as many dashboards and benchmarks as it can; retry with \
                 backoff"
                    .into(),
            ),
            Error::Backend(status) => status,
            Error::Database(e) => error::database(DOMAIN, &e),
            other => error::internal(DOMAIN, &other),
        }
    }
}
