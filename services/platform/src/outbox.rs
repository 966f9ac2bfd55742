//! The outbox: an append-only `events` table written in the same transaction
//! as the change it describes, served as a change feed (`ListEvents`, and
//! `WatchEvents`, which replays and then follows). Sequences are handed out in
//! commit order, so a consumer that resumes after the last sequence it
//! applied misses nothing and sees nothing twice.

use crate::db::{Backend, Db, Scope, Tx};
use futures::Stream;

use std::collections::VecDeque;
use std::time::Duration;
use touchstone_api::common::v1::Event;

/// How often a watcher re-reads the table when no local commit woke it, so
/// that events written by another replica reach it too.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Events read per query while replaying.
const BATCH: i64 = 500;

/// An encoded event payload with its type, to append later in the
/// transaction.
#[derive(Debug, Clone)]
pub struct Pending {
    type_name: String,
    payload: Vec<u8>,
}

impl Pending {
    /// Encodes `payload`.
    pub fn new<M: prost::Name>(payload: &M) -> Self {
        Self {
            type_name: M::full_name(),
            payload: payload.encode_to_vec(),
        }
    }
}

/// Appends an event encoded earlier. Call it as late in the transaction as
/// possible: on PostgreSQL it takes a lock that is held until commit.
pub async fn append_pending(
    tx: &mut Tx,
    agency: &str,
    name: &str,
    event: &Pending,
) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        // Identity values are taken in insert order but become visible in
        // commit order; holding this lock until commit makes the two agree,
        // so a reader never skips a sequence that commits later.
        sqlx::query("SELECT pg_advisory_xact_lock(7366042)")
            .execute(tx.conn())
            .await?;
    }
    sqlx::query(
        "INSERT INTO events (agency, type, name, occurred_time, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(agency)
    .bind(event.type_name.as_str())
    .bind(name)
    .bind(crate::times::now_millis())
    .bind(event.payload.as_slice())
    .execute(tx.conn())
    .await?;
    tx.mark_events_appended();
    Ok(())
}

/// Whose events a feed carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedScope {
    /// One agency's events.
    Agency(String),
    /// Every agency's events (service callers).
    All,
}

impl FeedScope {
    fn scope(&self) -> Scope<'_> {
        match self {
            FeedScope::Agency(a) => Scope::Agency(a),
            FeedScope::All => Scope::AllAgencies,
        }
    }
}

/// Whose events `caller` may read with one of `roles`: every agency's when one of them
/// applies in every agency (a hub role with `agencies: "*"`), else the caller's own
/// agency's when one of them applies there (DESIGN §4: a role acts only in its scope).
pub fn feed_scope(
    caller: &touchstone_auth::Caller,
    roles: &[touchstone_auth::Role],
) -> Result<FeedScope, &'static str> {
    if !caller.has_any(roles) {
        return Err("the change feed needs the service or agency_admin role");
    }
    if caller.acts_everywhere_as_any(roles) {
        return Ok(FeedScope::All);
    }
    match caller.agency.as_deref() {
        Some(own) if caller.acts_as_any(roles, own) => Ok(FeedScope::Agency(own.to_string())),
        _ => Err("the token's roles do not reach a change feed"),
    }
}

/// Why a change-feed read was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The caller may not read the feed.
    #[error("{0}")]
    Denied(&'static str),
    /// A request field is out of range.
    #[error("{}: {}", .0.field, .0.description)]
    Invalid(crate::error::FieldViolation),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn check_after(after_sequence: i64) -> Result<(), FeedError> {
    if after_sequence < 0 {
        return Err(FeedError::Invalid(crate::error::FieldViolation::new(
            "after_sequence",
            "must not be negative",
        )));
    }
    Ok(())
}

/// Every service's `ListEvents`: one page of the feed `caller` may read
/// with one of `roles`.
pub async fn list_for(
    db: &Db,
    caller: &touchstone_auth::Caller,
    roles: &[touchstone_auth::Role],
    after_sequence: i64,
    page_size: i32,
) -> Result<Vec<Event>, FeedError> {
    let feed = feed_scope(caller, roles).map_err(FeedError::Denied)?;
    check_after(after_sequence)?;
    let size = touchstone_list::page_size(page_size).map_err(|e| {
        FeedError::Invalid(crate::error::FieldViolation::new(e.field, e.description))
    })?;
    Ok(list(db, &feed, after_sequence, size as i64).await?)
}

/// Every service's `WatchEvents`: the feed `caller` may read, replayed from
/// `after_sequence` and then followed.
pub fn watch_for(
    db: Db,
    caller: &touchstone_auth::Caller,
    roles: &[touchstone_auth::Role],
    after_sequence: i64,
) -> Result<impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static, FeedError> {
    let feed = feed_scope(caller, roles).map_err(FeedError::Denied)?;
    check_after(after_sequence)?;
    Ok(watch(db, feed, after_sequence))
}

/// Up to `limit` events after `after_sequence`, in sequence order.
pub async fn list(
    db: &Db,
    feed: &FeedScope,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut tx = db.read(feed.scope()).await?;
    let rows: Vec<(i64, String, String, String, i64, Vec<u8>)> = match feed {
        FeedScope::Agency(a) => {
            sqlx::query_as(
                "SELECT sequence, agency, type, name, occurred_time, payload FROM events \
                 WHERE agency = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
            )
            .bind(a.as_str())
            .bind(after_sequence)
            .bind(limit)
            .fetch_all(tx.conn())
            .await?
        }
        FeedScope::All => {
            sqlx::query_as(
                "SELECT sequence, agency, type, name, occurred_time, payload FROM events \
                 WHERE sequence > $1 ORDER BY sequence LIMIT $2",
            )
            .bind(after_sequence)
            .bind(limit)
            .fetch_all(tx.conn())
            .await?
        }
    };
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(sequence, agency, ty, name, occurred, payload)| Event {
            sequence,
            agency,
            name,
            occurred_time: Some(crate::times::timestamp(occurred)),
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{ty}"),
                value: payload,
            }),
            r#type: ty,
        })
        .collect())
}

struct WatchState {
    db: Db,
    feed: FeedScope,
    cursor: i64,
    buffer: VecDeque<Event>,
    wake: tokio::sync::watch::Receiver<u64>,
}

/// Every event after `after_sequence`, then each new one as it commits. The
/// stream ends only with an error or when the caller drops it.
pub fn watch(
    db: Db,
    feed: FeedScope,
    after_sequence: i64,
) -> impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static {
    let wake = db.subscribe_events();
    let state = WatchState {
        db,
        feed,
        cursor: after_sequence,
        buffer: VecDeque::new(),
        wake,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        loop {
            if let Some(event) = st.buffer.pop_front() {
                st.cursor = event.sequence;
                return Some((Ok(event), Some(st)));
            }
            // Mark the current version seen before reading, so a commit that
            // lands after the read still wakes the wait below.
            st.wake.borrow_and_update();
            match list(&st.db, &st.feed, st.cursor, BATCH).await {
                Ok(events) if !events.is_empty() => st.buffer.extend(events),
                Ok(_) => {
                    tokio::select! {
                        changed = st.wake.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
}
