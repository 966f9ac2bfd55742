//! Calls to the other services with the caller's token and within the
//! caller's time: every call carries the `authorization` header the caller
//! sent (so each service checks it again) and a `grpc-timeout` of what is
//! left of the budget, and is abandoned when the budget is spent. Clients are
//! built on [`touchstone_server::PeerChannel`], so every call also carries the
//! caller's trace context.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request, Status};
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_api::kpi::v1::kpi_service_client::KpiServiceClient;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::{ACT_AS_HEADER, Role, ServiceToken, act_as_value};
use touchstone_server::peer::Balanced;
use touchstone_server::{PeerChannel, traced};

/// The budget of a call whose caller set no deadline.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(5);

/// Time kept back from the caller's deadline to assemble and send the
/// answer: a tenth of it, between these bounds.
const MARGIN: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(500));

/// Channels to the services the gateway joins.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The client register.
    pub register: Balanced,
    /// Complaints.
    pub complaints: Balanced,
    /// Feedback.
    pub feedback: Balanced,
    /// KPIs.
    pub kpi: Balanced,
    /// The gateway's own token, for the one call it makes on its own
    /// behalf: the cross-agency read behind a benchmark, whose answer it
    /// passes on only under disclosure control.
    pub service_token: ServiceToken,
}

impl Backends {
    /// A register client.
    pub fn register(&self) -> RegisterServiceClient<PeerChannel> {
        RegisterServiceClient::new(traced(self.register.clone()))
    }

    /// A complaints client.
    pub fn complaints(&self) -> ComplaintsServiceClient<PeerChannel> {
        ComplaintsServiceClient::new(traced(self.complaints.clone()))
    }

    /// A feedback client.
    pub fn feedback(&self) -> FeedbackServiceClient<PeerChannel> {
        FeedbackServiceClient::new(traced(self.feedback.clone()))
    }

    /// A KPI client.
    pub fn kpi(&self) -> KpiServiceClient<PeerChannel> {
        KpiServiceClient::new(traced(self.kpi.clone()))
    }
}

/// What a call is made with: whose token, and until when.
#[derive(Debug, Clone)]
pub struct CallContext {
    authorization: MetadataValue<Ascii>,
    /// The narrower caller the token's holder acts as, if any.
    act_as: Option<MetadataValue<Ascii>>,
    deadline: Instant,
}

impl CallContext {
    /// The caller's `authorization` header and deadline (its remaining time,
    /// less a margin to answer in, or the default budget).
    pub fn from_request<T>(request: &Request<T>) -> Result<CallContext, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .cloned()
            .ok_or_else(|| Status::unauthenticated("request is not authenticated"))?;
        let budget = touchstone_server::deadline::remaining(request)
            .map(|d| d.saturating_sub((d / 10).clamp(MARGIN.0, MARGIN.1)))
            .unwrap_or(DEFAULT_BUDGET);
        Ok(CallContext {
            authorization,
            act_as: None,
            deadline: Instant::now() + budget,
        })
    }

    /// The gateway on its own behalf, with the default budget: for calls no
    /// caller's token stands behind (Open311 reads of public status).
    pub fn own(token: &ServiceToken) -> Result<CallContext, Status> {
        CallContext {
            authorization: MetadataValue::from_static(""),
            act_as: None,
            deadline: Instant::now() + DEFAULT_BUDGET,
        }
        .with_token(token)
    }

    /// The gateway's token acting as `role` of `agency` for `subject` (an
    /// Open311 API key acting as its agency's `intake`): the services verify
    /// the gateway's token, then see only that narrower caller.
    pub fn acting_as(
        token: &ServiceToken,
        role: Role,
        agency: &str,
        subject: &str,
    ) -> Result<CallContext, Status> {
        let mut ctx = CallContext::own(token)?;
        ctx.act_as =
            Some(act_as_value(role, agency, subject).parse().map_err(|_| {
                Status::invalid_argument("the subject is not a valid header value")
            })?);
        Ok(ctx)
    }

    /// The same deadline with another token.
    pub fn with_token(&self, token: &ServiceToken) -> Result<CallContext, Status> {
        let authorization = token
            .header()
            .map_err(|_| Status::unavailable("the gateway's service token is not available"))?;
        Ok(CallContext {
            authorization,
            act_as: None,
            deadline: self.deadline,
        })
    }

    /// When the time is up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether the time is up.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// A request carrying the token and the time left.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut()
            .insert("authorization", self.authorization.clone());
        if let Some(act_as) = &self.act_as {
            r.metadata_mut().insert(ACT_AS_HEADER, act_as.clone());
        }
        r.set_timeout(self.remaining());
        r
    }

    /// Runs a call, abandoning it when the time is up (DEADLINE_EXCEEDED).
    pub async fn run<T, F>(&self, call: F) -> Result<T, Status>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout_at(self.deadline, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(
                "the service did not answer in time",
            )),
        }
    }
}

/// How a failed backend call shows in a partial answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The service is down, too slow or broken: named in `unreachable`.
    Unreachable,
    /// The caller's roles do not reach this part: named in `withheld`.
    Withheld,
    /// The service answered that it has nothing for this request (e.g. no
    /// data for an indicator): the part is empty, nothing is named.
    Empty,
}

/// Sorts a backend's error into unreachable and withheld.
pub fn classify(status: &Status) -> Failure {
    match status.code() {
        Code::PermissionDenied => Failure::Withheld,
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::OutOfRange => {
            Failure::Empty
        }
        _ => Failure::Unreachable,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn acting_as_carries_the_gateways_token_and_the_narrower_caller() {
        let ctx = CallContext::acting_as(
            &ServiceToken::Fixed("t".into()),
            Role::Intake,
            "a",
            "agencies/a/apiKeys/k",
        )
        .unwrap();
        let r = ctx.request(());
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer t");
        assert_eq!(
            r.metadata().get(ACT_AS_HEADER).unwrap(),
            "intake agencies/a agencies/a/apiKeys/k"
        );
        // Another token for the same deadline acts as itself again.
        let own = ctx.with_token(&ServiceToken::Fixed("u".into())).unwrap();
        assert!(own.request(()).metadata().get(ACT_AS_HEADER).is_none());
        // Without a service token nothing can be done on a key's behalf.
        let err = CallContext::acting_as(&ServiceToken::None, Role::Intake, "a", "k").unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(
            CallContext::own(&ServiceToken::None).unwrap_err().code(),
            Code::Unavailable
        );
    }
}
