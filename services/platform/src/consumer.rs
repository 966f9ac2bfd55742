//! Consuming another service's change feed exactly once (DESIGN §6). Events
//! are read a page at a time after the stored cursor; each run of consecutive
//! events of one agency is applied in one transaction scoped to that agency,
//! and the cursor moves in the same transaction with a compare-and-set. So an
//! event's effect lands exactly once even when the consumer crashes between
//! effect and commit (the transaction rolls back and the event is read again),
//! and two replicas consuming the same feed cannot both apply a run: the
//! second one's compare-and-set finds the cursor moved and rolls back.

use crate::db::{Db, Scope, Tx};
pub use crate::outbox::EventPage;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use touchstone_api::common::v1::Event;

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Events read per page.
pub const PAGE: i32 = 1000;
/// How long a caught-up consumer waits before asking again.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Longest wait after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the events come from: usually the producing service's `ListEvents`
/// over gRPC, called with the consumer's service token.
pub trait FeedSource: Send + Sync {
    /// Up to `limit` events after `after`, in sequence order, and how many
    /// follow them at the producer (0 if it does not say).
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>>;
}

/// What the consumer does with each event.
pub trait Handler: Send + Sync {
    /// Applies `event` inside `tx`, which is scoped to the event's agency and
    /// will also move the cursor. Types the handler has no use for are
    /// ignored by returning `Ok`.
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), ConsumeError>>;

    /// Applies a run of consecutive events of one agency, in order, inside
    /// `tx`, and returns the malformed ones it skipped. The default applies
    /// them one at a time with [`Handler::apply`]; a handler whose effects
    /// merge (counters) overrides it to write once per run.
    fn apply_run<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [Event],
    ) -> BoxFuture<'a, Result<Vec<Skipped>, ConsumeError>> {
        Box::pin(async move {
            let mut skipped = Vec::new();
            for event in events {
                match self.apply(tx, event).await {
                    Ok(()) => {}
                    Err(ConsumeError::Malformed(why)) => skipped.push(Skipped {
                        sequence: event.sequence,
                        why,
                    }),
                    Err(e) => return Err(e),
                }
            }
            Ok(skipped)
        })
    }
}

/// An event a handler could not understand and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The event's sequence in its feed.
    pub sequence: i64,
    /// Why it was skipped (never the payload).
    pub why: String,
}

/// Why consuming stopped for now.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The producer could not be reached or refused.
    #[error("reading the feed: {0}")]
    Source(tonic::Status),
    /// The consumer's database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An event could not be understood; it is skipped with a warning.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// Another replica moved the cursor first; its work stands, ours rolled back.
    #[error("another consumer advanced the cursor")]
    Overtaken,
}

/// The last sequence applied from `feed` (0 before the first).
pub async fn cursor(db: &Db, feed: &str) -> Result<i64, sqlx::Error> {
    Ok(stored_cursor(db, feed).await?.unwrap_or(0))
}

async fn stored_cursor(db: &Db, feed: &str) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = db.read(Scope::AllAgencies).await?;
    let seq: Option<i64> = sqlx::query_scalar("SELECT sequence FROM feed_cursors WHERE feed = $1")
        .bind(feed)
        .fetch_optional(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(seq)
}

/// Sets the cursor of `feed`, e.g. back to 0 before a rebuild. Run it in the
/// transaction that also clears what the feed's events built.
pub async fn reset(tx: &mut Tx, feed: &str, sequence: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO feed_cursors (feed, sequence, update_time) VALUES ($1, $2, $3) \
         ON CONFLICT (feed) DO UPDATE SET sequence = $2, update_time = $3",
    )
    .bind(feed)
    .bind(sequence)
    .bind(crate::times::now_millis())
    .execute(tx.conn())
    .await?;
    Ok(())
}

async fn ensure_cursor(db: &Db, feed: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.write(Scope::AllAgencies).await?;
    sqlx::query(
        "INSERT INTO feed_cursors (feed, sequence, update_time) VALUES ($1, 0, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(feed)
    .bind(crate::times::now_millis())
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// The consumer's name in metrics: its database's name, or `unnamed`.
fn lag_of(db: &Db, feed: &'static str) -> Arc<crate::metrics::FeedLag> {
    crate::metrics::feed_lag(db.name().unwrap_or("unnamed"), feed)
}

/// Reads one page after the cursor and applies it. Returns how many events
/// were consumed (0 when caught up). The consumer's lag metrics
/// ([`crate::metrics::encode_feeds`]) follow: what the read returned is
/// pending until each run of it commits.
pub async fn step(
    db: &Db,
    feed: &'static str,
    source: &dyn FeedSource,
    handler: &dyn Handler,
) -> Result<usize, ConsumeError> {
    let lag = lag_of(db, feed);
    let mut at = match stored_cursor(db, feed).await? {
        Some(at) => at,
        None => {
            ensure_cursor(db, feed).await?;
            cursor(db, feed).await?
        }
    };
    let EventPage { events, remaining } =
        source.list(at, PAGE).await.map_err(ConsumeError::Source)?;
    lag.read(&events, remaining);
    let total = events.len();
    let mut rest = events.as_slice();
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|e| e.agency == first.agency).count();
        let (batch, tail) = rest.split_at(run);
        rest = tail;
        let mut tx = db.write(Scope::Agency(&first.agency)).await?;
        // A poison event must not stop the feed for ever; it is named by
        // sequence only (no payload in logs).
        for s in handler.apply_run(&mut tx, batch).await? {
            tracing::warn!(feed, sequence = s.sequence, why = %s.why, "skipping a malformed event");
        }
        let last = batch.last().map_or(at, |e| e.sequence);
        let moved = sqlx::query(
            "UPDATE feed_cursors SET sequence = $1, update_time = $2 \
             WHERE feed = $3 AND sequence = $4",
        )
        .bind(last)
        .bind(crate::times::now_millis())
        .bind(feed)
        .bind(at)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(ConsumeError::Overtaken);
        }
        tx.commit().await?;
        lag.applied(batch.len(), rest);
        at = last;
    }
    Ok(total)
}

/// Applies pages until the feed has nothing more; returns the events consumed.
pub async fn catch_up(
    db: &Db,
    feed: &'static str,
    source: &dyn FeedSource,
    handler: &dyn Handler,
) -> Result<u64, ConsumeError> {
    let mut total = 0u64;
    loop {
        let n = step(db, feed, source, handler).await?;
        total += n as u64;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// Consumes `feed` for as long as the returned task runs (abort it on
/// shutdown), polling when caught up and backing off when the producer or
/// the database is unavailable.
pub fn spawn(
    db: Db,
    feed: &'static str,
    source: Arc<dyn FeedSource>,
    handler: Arc<dyn Handler>,
) -> tokio::task::JoinHandle<()> {
    let lag = lag_of(&db, feed);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match step(&db, feed, source.as_ref(), handler.as_ref()).await {
                Ok(0) => {
                    backoff = Duration::from_millis(250);
                    tokio::time::sleep(IDLE_POLL).await;
                }
                Ok(_) => backoff = Duration::from_millis(250),
                Err(ConsumeError::Overtaken) => {}
                Err(e) => {
                    lag.failed();
                    tracing::warn!(feed, error = %e, retry_in_ms = backoff.as_millis() as u64, "consuming a change feed failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    })
}

/// Decodes an event's payload as `M`, or says why not.
pub fn payload<M: prost::Message + Default>(event: &Event) -> Result<M, ConsumeError> {
    let any = event
        .payload
        .as_ref()
        .ok_or_else(|| ConsumeError::Malformed("no payload".into()))?;
    M::decode(any.value.as_slice()).map_err(|e| ConsumeError::Malformed(e.to_string()))
}
