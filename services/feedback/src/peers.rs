//! What the feedback service asks of the client register, over its gRPC API
//! with the service's own token: whether a named client consented to have
//! feedback linked to them and to the use of their characteristics in
//! statistics; and the register's change feed, from which `ClientErased`
//! is applied exactly once.

use crate::error::Error;
use crate::store;
use std::time::Duration;
use touchstone_api::common::v1::Event;
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::ServiceToken;
use touchstone_platform::audit::{self, Access};
use touchstone_platform::consumer::{
    self, BoxFuture, ConsumeError, EventPage, FeedSource, Handler,
};
use touchstone_platform::db::Tx;
use touchstone_platform::{idempotency, names, times};
use touchstone_server::PeerChannel;

/// The cursor name of the register's feed in this service's database.
pub const REGISTER_FEED: &str = "register";

/// Longest wait for the register.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a response may keep about the client it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linkage {
    /// The client id, when the client consented to feedback being linked.
    pub client_id: Option<String>,
    /// Their characteristics, when they consented to statistics.
    pub characteristics: Option<reg::Characteristics>,
}

/// The register, called on the service's own behalf.
#[derive(Debug, Clone)]
pub struct Register {
    client: RegisterServiceClient<PeerChannel>,
    token: ServiceToken,
}

impl Register {
    /// The register behind `channel`, called with `token`.
    pub fn new(channel: touchstone_server::peer::Balanced, token: ServiceToken) -> Self {
        Self {
            client: RegisterServiceClient::new(touchstone_server::traced(channel)),
            token,
        }
    }

    /// A request with the service token, due within `deadline` (the
    /// caller's remaining time) or five seconds, whichever is sooner.
    fn request<T>(
        &self,
        message: T,
        deadline: Option<Duration>,
    ) -> Result<tonic::Request<T>, tonic::Status> {
        let mut req = tonic::Request::new(message);
        let header = self.token.header().map_err(|e| {
            tracing::warn!(error = %e, "no service token for the register");
            tonic::Status::unauthenticated("no service token")
        })?;
        req.metadata_mut().insert("authorization", header);
        req.set_timeout(deadline.map_or(CALL_TIMEOUT, |d| d.min(CALL_TIMEOUT)));
        Ok(req)
    }

    /// What a response may keep about client `id` of `agency`: nothing when
    /// the client is erased or consented to neither purpose. An unknown
    /// client is INVALID_ARGUMENT on `field`.
    pub async fn linkage(
        &self,
        agency: &str,
        id: &str,
        field: &str,
        deadline: Option<Duration>,
    ) -> Result<Linkage, Error> {
        let req = self
            .request(
                reg::GetClientRequest {
                    name: format!("agencies/{agency}/clients/{id}"),
                },
                deadline,
            )
            .map_err(|_| Error::Unavailable("the client register"))?;
        let client = match self.client.clone().get_client(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(Error::invalid(field, "no such client"));
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), "the register refused a client lookup");
                return Err(Error::Unavailable("the client register"));
            }
        };
        if client.erased {
            return Ok(Linkage::default());
        }
        let granted = |purpose: reg::ConsentPurpose| {
            client
                .consents
                .iter()
                .any(|c| c.purpose == purpose as i32 && c.granted)
        };
        Ok(Linkage {
            client_id: granted(reg::ConsentPurpose::FeedbackSurveys).then(|| id.to_string()),
            characteristics: if granted(reg::ConsentPurpose::Statistics) {
                client.characteristics
            } else {
                None
            },
        })
    }
}

impl FeedSource for Register {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        Box::pin(async move {
            let req = self.request(
                reg::ListEventsRequest {
                    after_sequence: after,
                    page_size: limit,
                },
                None,
            )?;
            let page = self.client.clone().list_events(req).await?.into_inner();
            Ok(EventPage {
                events: page.events,
                remaining: page.remaining,
            })
        })
    }
}

/// A store error met while applying an event: a database fault is retried,
/// anything else means the event cannot be applied.
fn consume_error(e: Error) -> ConsumeError {
    match e {
        Error::Database(e) => ConsumeError::Database(e),
        other => ConsumeError::Malformed(other.to_string()),
    }
}

/// Applies `touchstone.register.v1.ClientErased`: the comments as written
/// by the client's responses are removed, stored replies naming them are
/// forgotten, and their open follow-ups are closed with no action.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eraser;

/// The event type the eraser applies.
pub const CLIENT_ERASED: &str = "touchstone.register.v1.ClientErased";

impl Handler for Eraser {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), ConsumeError>> {
        Box::pin(async move {
            if event.r#type != CLIENT_ERASED {
                return Ok(());
            }
            let erased: reg::ClientErased = consumer::payload(event)?;
            let ids = names::parse("agencies/{}/clients/{}", &erased.client, false)
                .map_err(|e| ConsumeError::Malformed(e.0))?;
            let (agency, client) = (ids[0], ids[1]);
            if agency != event.agency {
                return Err(ConsumeError::Malformed(
                    "the client is not of the event's agency".into(),
                ));
            }
            let done = store::erase_client(tx, agency, client, times::now_millis())
                .await
                .map_err(consume_error)?;
            for name in &done.responses {
                idempotency::forget_resource(tx, agency, name).await?;
            }
            audit::record(
                tx,
                Access {
                    agency,
                    actor: "register-feed",
                    action: "ClientErased",
                    resource: &erased.client,
                    request_id: "",
                },
            )
            .await?;
            // Each close is announced like any other, in this transaction
            // (so exactly once with the cursor), or the KPI never counts it.
            let events: Vec<store::BatchEvent> = done
                .closed
                .iter()
                .map(|f| store::BatchEvent::new(&f.name(), &crate::api::closed_event(f)))
                .collect();
            store::append_events(tx, agency, &events)
                .await
                .map_err(consume_error)?;
            Ok(())
        })
    }
}
