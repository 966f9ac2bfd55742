//! The life of a state-changing call, shared by every service: in one write
//! transaction, read (or store) the agency's data key, claim the request id
//! before any change (AIP-155), do the work, then write the audit record,
//! the stored response and the outbox events, and commit. A retry gets the first response and changes nothing.

use crate::audit::{self, Access};
use crate::db::{Db, Scope, Tx};
use crate::error::FieldViolation;
use crate::idempotency::{self, Claim};
use crate::keyring::{KeyError, Keyring};
use crate::outbox;
use crate::statements::Statements;
use std::sync::Arc;
use touchstone_api::Named;
use touchstone_auth::Caller;
use touchstone_crypto::DataKey;

/// Longest request id.
pub const MAX_REQUEST_ID: usize = 100;

/// Why a change could not begin.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// `request_id` is too long or not printable.
    #[error("invalid request_id")]
    BadRequestId(FieldViolation),
    /// The request id was used before for a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// The request id's first response was about something since erased.
    #[error("what this request changed was since erased")]
    Forgotten,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The agency's data key could not be had.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
}

/// A state-changing call in progress: its write transaction, the agency's
/// data key, and what its audit and idempotency records will say.
#[derive(Debug)]
pub struct Change<'a> {
    /// The write transaction.
    pub tx: Tx,
    /// The agency's data key.
    pub key: Arc<DataKey>,
    /// Outbox events, appended last, just before commit: on PostgreSQL the
    /// outbox's ordering lock is then held for as short a time as possible.
    events: Vec<(String, outbox::Pending)>,
    caller: &'a Caller,
    agency: &'a str,
    method: &'static str,
    request_id: &'a str,
}

/// What starting a state-changing call found.
#[derive(Debug)]
pub enum Begun<'a, R> {
    /// A new request: go ahead.
    Fresh(Change<'a>),
    /// A retry: here is the first response.
    Replay(R),
}

/// Checks a caller's `request_id`: at most 100 printable characters.
pub fn check_request_id(request_id: &str) -> Result<(), FieldViolation> {
    if request_id.len() > MAX_REQUEST_ID || request_id.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            "request_id",
            "at most 100 printable characters",
        ));
    }
    Ok(())
}

/// Opens the write transaction of a state-changing call and claims its
/// request id. `fingerprint` identifies the request's content (see
/// [`idempotency::fingerprint`]); it is stored keyed, so it cannot be used to
/// test guesses of the personal data in a request.
pub async fn begin<'a, R: prost::Message + Default + Named>(
    db: &Db,
    keys: &Keyring,
    caller: &'a Caller,
    agency: &'a str,
    method: &'static str,
    request_id: &'a str,
    fingerprint: String,
) -> Result<Begun<'a, R>, BeginError> {
    check_request_id(request_id).map_err(BeginError::BadRequestId)?;
    let mut tx = db.write(Scope::Agency(agency)).await?;
    // Fetched in the change's own transaction: a key created here commits
    // with the first values it seals (DESIGN §5).
    let key = keys.data_key(&mut tx, agency).await?;
    let fingerprints = key.blind_indexes("request-fingerprint", &fingerprint);
    match idempotency::claim::<R>(&mut tx, &key, agency, method, request_id, &fingerprints).await? {
        Claim::Replay(r) => {
            // A replay hands out the first response again: audit it like a read.
            let access = Access {
                agency,
                actor: &caller.subject,
                action: method,
                resource: r.resource_name(),
                request_id,
            };
            audit::record(&mut tx, access).await?;
            tx.commit().await?;
            Ok(Begun::Replay(r))
        }
        Claim::Mismatch => Err(BeginError::RequestIdReused),
        Claim::Forgotten => Err(BeginError::Forgotten),
        Claim::Fresh | Claim::None => Ok(Begun::Fresh(Change {
            tx,
            events: Vec::new(),
            key,
            caller,
            agency,
            method,
            request_id,
        })),
    }
}

impl Change<'_> {
    /// The agency the change is in.
    pub fn agency(&self) -> &str {
        self.agency
    }

    /// The caller making the change.
    pub fn caller(&self) -> &Caller {
        self.caller
    }

    /// Queues an outbox event about `name`, written with the change.
    pub fn event<M: prost::Name>(&mut self, name: &str, payload: &M) {
        self.events
            .push((name.to_string(), outbox::Pending::new(payload)));
    }

    /// Queues an event encoded earlier.
    pub fn event_pending(&mut self, name: &str, event: outbox::Pending) {
        self.events.push((name.to_string(), event));
    }

    /// Writes the audit record, the stored response and the queued events
    /// (sent to the database as one request, see [`Statements`]), and
    /// commits.
    pub async fn finish<R: prost::Message>(
        mut self,
        resource: &str,
        response: R,
    ) -> Result<R, sqlx::Error> {
        let access = Access {
            agency: self.agency,
            actor: &self.caller.subject,
            action: self.method,
            resource,
            request_id: self.request_id,
        };
        let mut s = Statements::new(self.tx.backend());
        audit::push_insert(&mut s, &[(access, crate::times::now_millis())])?;
        idempotency::push_complete(
            &mut s,
            &self.key,
            self.agency,
            self.method,
            self.request_id,
            resource,
            &response,
        )?;
        let events: Vec<(&str, &outbox::Pending)> =
            self.events.iter().map(|(n, e)| (n.as_str(), e)).collect();
        let mut chunks = events.chunks(outbox::APPEND_ROWS);
        if let Some(first) = chunks.next() {
            outbox::push_append(&mut s, self.agency, first)?;
        }
        s.execute(&mut self.tx).await?;
        // A change with more events than one statement holds appends the
        // rest after (rare: most changes have one or two).
        let rest: Vec<(&str, &outbox::Pending)> = chunks.flatten().copied().collect();
        outbox::append_all(&mut self.tx, self.agency, &rest).await?;
        if !events.is_empty() {
            self.tx.mark_events_appended();
        }
        self.tx.commit().await?;
        Ok(response)
    }
}
