//! What the complaints service asks of the client register: whether a
//! complainant's client reference is real (and the client's needs, copied at
//! intake), checked again in the background while the register was
//! unavailable; and the register's change feed, whose `ClientErased` removes
//! the complainant's personal data from their complaints.

use crate::error::Error;
use crate::store::{self, Needs};
use std::time::Duration;
use touchstone_api::common::v1::Event;
use touchstone_api::complaints::v1 as pb;
use touchstone_api::register::v1 as reg;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::ServiceToken;
use touchstone_platform::consumer::{
    self, BoxFuture, ConsumeError, EventPage, FeedSource, Handler,
};
use touchstone_platform::db::{Db, Scope, Tx};
use touchstone_platform::idempotency;
use touchstone_platform::{names, times};
use touchstone_server::PeerChannel;

/// Longest wait for the register at intake; a slower register leaves the
/// complaint to be checked in the background.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often pending client references are checked again.
const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// The change feed's name in `feed_cursors`.
pub const REGISTER_FEED: &str = "register";

/// The register, called with this service's own token.
#[derive(Debug, Clone)]
pub struct RegisterClient {
    channel: touchstone_server::peer::Balanced,
    token: ServiceToken,
}

/// What the register said about a client reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The client exists: here are its needs.
    Verified(Needs),
    /// The register has no such client.
    Unknown,
    /// The client was erased.
    Erased,
    /// The register did not answer in time.
    Unavailable,
}

impl RegisterClient {
    /// The register at `channel`, called with `token`.
    pub fn new(channel: touchstone_server::peer::Balanced, token: ServiceToken) -> Self {
        Self { channel, token }
    }

    /// A register client whose calls carry the current trace context.
    fn client(&self) -> RegisterServiceClient<PeerChannel> {
        RegisterServiceClient::new(touchstone_server::traced(self.channel.clone()))
    }

    fn request<T>(&self, message: T, timeout: Duration) -> Option<tonic::Request<T>> {
        let mut r = tonic::Request::new(message);
        match self.token.header() {
            Ok(h) => {
                r.metadata_mut().insert("authorization", h);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no service token for calling the register");
                return None;
            }
        }
        r.set_timeout(timeout);
        Some(r)
    }
}

/// Asks the register about `client` (a resource name), within `deadline`
/// (the caller's remaining time) and at most two seconds.
pub async fn check(register: &RegisterClient, client: &str, deadline: Option<Duration>) -> Checked {
    let timeout = deadline.map_or(CHECK_TIMEOUT, |d| (d / 2).min(CHECK_TIMEOUT));
    let Some(request) = register.request(
        reg::GetClientRequest {
            name: client.to_string(),
        },
        timeout,
    ) else {
        return Checked::Unavailable;
    };
    let mut api = register.client();
    match tokio::time::timeout(timeout, api.get_client(request)).await {
        Ok(Ok(response)) => {
            let c = response.into_inner();
            if c.erased {
                return Checked::Erased;
            }
            Checked::Verified(Needs {
                needs: c.accessibility_needs,
                interpreter_needed: c.interpreter_needed,
                preferred_language: c.preferred_language,
                preferred_channel: c.preferred_channel,
            })
        }
        Ok(Err(status)) if status.code() == tonic::Code::NotFound => Checked::Unknown,
        Ok(Err(status)) => {
            tracing::info!(code = ?status.code(), "the register did not confirm a client reference; checking later");
            Checked::Unavailable
        }
        Err(_) => Checked::Unavailable,
    }
}

/// Checks every pending client reference once; returns how many were settled.
pub async fn verify_pending(db: &Db, register: &RegisterClient) -> Result<usize, Error> {
    let mut tx = db.read(Scope::AllAgencies).await?;
    let pending = store::pending_checks(&mut tx, 200).await?;
    tx.commit().await?;
    let mut settled = 0;
    for (agency, id, client_id) in pending {
        let client = format!("agencies/{agency}/clients/{client_id}");
        let (check, needs) = match check(register, &client, None).await {
            Checked::Verified(needs) => (pb::ClientCheck::Verified, needs),
            Checked::Unknown | Checked::Erased => (pb::ClientCheck::NotFound, Needs::default()),
            Checked::Unavailable => return Ok(settled),
        };
        let mut tx = db.write(Scope::Agency(&agency)).await?;
        if store::settle_client_check(
            &mut tx,
            &agency,
            &id,
            check as i32,
            &needs,
            times::now_millis(),
        )
        .await?
        {
            settled += 1;
        }
        tx.commit().await?;
    }
    Ok(settled)
}

/// Checks pending client references every ten seconds while the task runs.
pub fn spawn_verifier(db: Db, register: RegisterClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RECHECK_EVERY);
        loop {
            every.tick().await;
            match verify_pending(&db, &register).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "pending client references checked"),
                Err(e) => tracing::warn!(error = %e, "checking pending client references failed"),
            }
        }
    })
}

/// The register's change feed, read with this service's token.
#[derive(Debug, Clone)]
pub struct RegisterFeed(pub RegisterClient);

impl FeedSource for RegisterFeed {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        Box::pin(async move {
            let request = self
                .0
                .request(
                    reg::ListEventsRequest {
                        after_sequence: after,
                        page_size: limit,
                    },
                    Duration::from_secs(10),
                )
                .ok_or_else(|| tonic::Status::unauthenticated("no service token"))?;
            let mut api = self.0.client();
            let page = api.list_events(request).await?.into_inner();
            Ok(EventPage {
                events: page.events,
                remaining: page.remaining,
            })
        })
    }
}

/// Applies `ClientErased`: the complainant's personal data, narratives,
/// notes and contact summaries go; the cases stay for statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Erasure;

impl Handler for Erasure {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), ConsumeError>> {
        Box::pin(async move {
            if event.r#type != "touchstone.register.v1.ClientErased" {
                return Ok(());
            }
            let erased: reg::ClientErased = consumer::payload(event)?;
            let ids = names::parse("agencies/{}/clients/{}", &erased.client, false)
                .map_err(|e| ConsumeError::Malformed(e.0))?;
            if ids[0] != event.agency {
                return Err(ConsumeError::Malformed("client of another agency".into()));
            }
            let redacted = store::redact_client(tx, ids[0], ids[1], times::now_millis())
                .await
                .map_err(|e| match e {
                    Error::Database(e) => ConsumeError::Database(e),
                    other => ConsumeError::Malformed(other.to_string()),
                })?;
            for id in redacted {
                idempotency::forget_resource(
                    tx,
                    ids[0],
                    &format!("agencies/{}/complaints/{id}", ids[0]),
                )
                .await?;
            }
            Ok(())
        })
    }
}
