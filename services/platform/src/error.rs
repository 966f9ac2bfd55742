//! The one mapping from a service's domain error to `tonic::Status` (AIP-193):
//! a canonical code, an `ErrorInfo{reason, domain}` always, and a `BadRequest`
//! field violation per bad field. Handlers never build a `Status` by hand.

use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One bad field of a request, named by its path in the request message
/// (e.g. `client.email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `client.postal_address.postal_code`.
    pub field: String,
    /// What is wrong with it, safe to show the caller (no personal data).
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects violations while a request is parsed, so that the caller hears
/// about every bad field at once rather than one per round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the error of `result` against `field`, passing the value on.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// Whether a violation of `field` was recorded.
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|v| v.field == field)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when nothing was recorded, else the list.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Builds the status every service returns. `message` must be safe to show a
/// caller: no SQL, no internals, no personal data.
pub fn status(
    code: Code,
    domain: &str,
    reason: &str,
    message: impl Into<String>,
    violations: &[FieldViolation],
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, domain, HashMap::<String, String>::new());
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT with one violation per bad field.
pub fn invalid_argument(domain: &str, violations: &[FieldViolation]) -> Status {
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    status(
        Code::InvalidArgument,
        domain,
        "INVALID_ARGUMENT",
        format!("invalid request: {}", fields.join(", ")),
        violations,
    )
}

/// The status of a failed database call. A storage fault (see
/// [`crate::db::is_storage_fault`]) is UNAVAILABLE: the caller retries with
/// backoff and the same `request_id`, which is safe whether or not the failed
/// call's transaction committed. Anything else is INTERNAL.
pub fn database(domain: &str, e: &sqlx::Error) -> Status {
    if !crate::db::is_storage_fault(e) {
        return internal(domain, e);
    }
    let (reason, message) = match e {
        sqlx::Error::PoolTimedOut => ("DATABASE_BUSY", "the database is busy; retry with backoff"),
        _ => (
            "DATABASE_UNAVAILABLE",
            "the database is unavailable; retry with backoff and the same request_id",
        ),
    };
    tracing::warn!(error = %e, "database unavailable");
    status(Code::Unavailable, domain, reason, message, &[])
}

/// Logs an internal failure with an id the operator can grep for, and returns
/// an INTERNAL status that carries only that id.
pub fn internal(domain: &str, cause: &dyn std::fmt::Display) -> Status {
    let incident = uuid::Uuid::now_v7();
    tracing::error!(%incident, error = %cause, "internal error");
    status(
        Code::Internal,
        domain,
        "INTERNAL",
        format!("internal error (incident {incident})"),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_error_info_and_violations() {
        let s = invalid_argument(
            "register.touchstone",
            &[
                FieldViolation::new("client.email", "not an email address"),
                FieldViolation::new("client.kind", "required"),
            ],
        );
        assert_eq!(s.code(), Code::InvalidArgument);
        let details = s.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "register.touchstone");
        let bad = details.bad_request().expect("bad request");
        assert_eq!(bad.field_violations.len(), 2);
        assert_eq!(bad.field_violations[0].field, "client.email");
    }
}
