//! The outbox: an append-only `events` table written in the same transaction
//! as the change it describes, served as a change feed (`ListEvents`, and
//! `WatchEvents`, which replays and then follows). A consumer resumes after
//! the last event it applied and misses nothing and sees nothing twice.
//!
//! Feed order is commit order without making writers queue (DESIGN §6). On
//! SQLite there is one writer, so sequence order already is commit order. On
//! PostgreSQL sequences are taken in insert order but become visible in commit
//! order, so each event also carries its transaction's id (`xid`); a reader
//! takes only events whose transaction id is below the oldest transaction
//! still running (that set can no longer grow), ordered by (xid, sequence).
//! The position a consumer passes back is the sequence of the last event it
//! saw; the reader looks up that event's xid to resume after it.

use crate::db::{Backend, Db, Scope, Tx};
use crate::statements::Statements;
use futures::Stream;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
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

/// Appends an event encoded earlier. On PostgreSQL the row's `xid` column
/// defaults to the writing transaction's id; no lock is taken.
pub async fn append_pending(
    tx: &mut Tx,
    agency: &str,
    name: &str,
    event: &Pending,
) -> Result<(), sqlx::Error> {
    append_all(tx, agency, &[(name, event)]).await
}

/// Appends events encoded earlier, in order, in as few statements as the
/// databases' parameter limits allow.
pub async fn append_all(
    tx: &mut Tx,
    agency: &str,
    events: &[(&str, &Pending)],
) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(APPEND_ROWS) {
        let mut s = Statements::new(tx.backend());
        push_append(&mut s, agency, chunk)?;
        s.execute(tx).await?;
        tx.mark_events_appended();
    }
    Ok(())
}

/// Events in one `INSERT` (five parameters each).
pub(crate) const APPEND_ROWS: usize = 500;

/// Adds the statement appending `events` (at most [`APPEND_ROWS`]) to `s`;
/// the caller marks its transaction as having appended events once `s` ran.
pub(crate) fn push_append(
    s: &mut Statements,
    agency: &str,
    events: &[(&str, &Pending)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let now = crate::times::now_millis();
    let mut values = Vec::with_capacity(events.len());
    for (name, event) in events {
        values.push(format!(
            "({}, {}, {}, {}, {})",
            s.value(agency.to_string())?,
            s.value(event.type_name.clone())?,
            s.value(name.to_string())?,
            s.value(now)?,
            s.value(event.payload.clone())?,
        ));
    }
    s.push(format!(
        "INSERT INTO events (agency, type, name, occurred_time, payload) VALUES {}",
        values.join(", ")
    ));
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
) -> Result<EventPage, FeedError> {
    let feed = feed_scope(caller, roles).map_err(FeedError::Denied)?;
    check_after(after_sequence)?;
    let size = touchstone_list::page_size(page_size).map_err(|e| {
        FeedError::Invalid(crate::error::FieldViolation::new(e.field, e.description))
    })?;
    Ok(list_page(db, &feed, after_sequence, size as i64).await?)
}

/// A page of a feed and how many readable events follow it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// The events, in feed order.
    pub events: Vec<Event>,
    /// Readable events after the last of `events`, counted up to
    /// [`REMAINING_COUNTED`]; 0 when the page reached the end.
    pub remaining: i64,
}

impl From<Vec<Event>> for EventPage {
    /// A page whose source does not say what follows it.
    fn from(events: Vec<Event>) -> EventPage {
        EventPage {
            events,
            remaining: 0,
        }
    }
}

/// Most events counted after a page: a backlog past this is reported as
/// this many, so that a far-behind reader does not pay for counting it all.
pub const REMAINING_COUNTED: i64 = 100_000;

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

/// Age of the oldest event written but not yet released to readers at the
/// last PostgreSQL feed read (milliseconds; 0 when none waits): how far the
/// transaction-id horizon lags. A process-wide gauge, exported as
/// `touchstone_outbox_horizon_lag_seconds`.
static HORIZON_LAG_MS: AtomicI64 = AtomicI64::new(0);

/// See [`HORIZON_LAG_MS`].
pub fn horizon_lag_seconds() -> f64 {
    HORIZON_LAG_MS.load(Ordering::Relaxed) as f64 / 1000.0
}

type EventRow = (i64, String, String, String, i64, Vec<u8>);

/// Up to `limit` events after the event with sequence `after_sequence` (0:
/// from the start), in feed order.
pub async fn list(
    db: &Db,
    feed: &FeedScope,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    Ok(read_page(db, feed, after_sequence, limit, false)
        .await?
        .events)
}

/// [`list`], and how many readable events follow the page: counted only
/// when the page is full, in the same read transaction, up to
/// [`REMAINING_COUNTED`].
pub async fn list_page(
    db: &Db,
    feed: &FeedScope,
    after_sequence: i64,
    limit: i64,
) -> Result<EventPage, sqlx::Error> {
    read_page(db, feed, after_sequence, limit, true).await
}

/// One page, and what follows it if `count_rest` (else `remaining` is 0).
async fn read_page(
    db: &Db,
    feed: &FeedScope,
    after_sequence: i64,
    limit: i64,
    count_rest: bool,
) -> Result<EventPage, sqlx::Error> {
    let mut tx = db.read(feed.scope()).await?;
    let agency = match feed {
        FeedScope::Agency(a) => Some(a.as_str()),
        FeedScope::All => None,
    };
    let (rows, horizon) = match tx.backend() {
        Backend::Sqlite => (
            list_sqlite(&mut tx, agency, after_sequence, limit).await?,
            None,
        ),
        Backend::Postgres => {
            let (rows, horizon) = list_postgres(&mut tx, agency, after_sequence, limit).await?;
            (rows, Some(horizon))
        }
    };
    let remaining = match rows.last() {
        Some(last) if count_rest && rows.len() as i64 >= limit => match horizon {
            None => remaining_sqlite(&mut tx, agency, last.0).await?,
            Some(horizon) => remaining_postgres(&mut tx, agency, last.0, horizon).await?,
        },
        _ => 0,
    };
    tx.commit().await?;
    Ok(EventPage {
        events: rows.into_iter().map(event_of).collect(),
        remaining,
    })
}

fn event_of((sequence, agency, ty, name, occurred, payload): EventRow) -> Event {
    Event {
        sequence,
        agency,
        name,
        occurred_time: Some(crate::times::timestamp(occurred)),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{ty}"),
            value: payload,
        }),
        r#type: ty,
    }
}

async fn remaining_sqlite(
    tx: &mut Tx,
    agency: Option<&str>,
    after: i64,
) -> Result<i64, sqlx::Error> {
    let later = "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE";
    match agency {
        Some(a) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "{later} agency = $1 AND sequence > $2 LIMIT $3) AS later"
            )))
            .bind(a)
            .bind(after)
            .bind(REMAINING_COUNTED)
            .fetch_one(tx.conn())
            .await
        }
        None => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "{later} sequence > $1 LIMIT $2) AS later"
            )))
            .bind(after)
            .bind(REMAINING_COUNTED)
            .fetch_one(tx.conn())
            .await
        }
    }
}

async fn remaining_postgres(
    tx: &mut Tx,
    agency: Option<&str>,
    after: i64,
    horizon: i64,
) -> Result<i64, sqlx::Error> {
    // After the page's last event in feed order (xid, sequence), below the
    // horizon, as the page itself was read.
    let later = "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE (xid, sequence) > \
                 ((SELECT xid FROM events WHERE sequence = $1), $1) AND xid < $2";
    match agency {
        Some(a) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "{later} AND agency = $3 LIMIT $4) AS later"
            )))
            .bind(after)
            .bind(horizon)
            .bind(a)
            .bind(REMAINING_COUNTED)
            .fetch_one(tx.conn())
            .await
        }
        None => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{later} LIMIT $3) AS later")))
                .bind(after)
                .bind(horizon)
                .bind(REMAINING_COUNTED)
                .fetch_one(tx.conn())
                .await
        }
    }
}

async fn list_sqlite(
    tx: &mut Tx,
    agency: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    const COLUMNS: &str = "SELECT sequence, agency, type, name, occurred_time, payload FROM events";
    match agency {
        Some(a) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE agency = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
            )))
            .bind(a)
            .bind(after)
            .bind(limit)
            .fetch_all(tx.conn())
            .await
        }
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE sequence > $1 ORDER BY sequence LIMIT $2"
            )))
            .bind(after)
            .bind(limit)
            .fetch_all(tx.conn())
            .await
        }
    }
}

/// The horizon: the lowest transaction id, in full 64-bit form, that may still add events
/// to this database (the oldest transaction of this database still running, else the next
/// id to be assigned). Only this database's transactions count, so a long transaction
/// elsewhere on the server does not hold the feed back. Read in a statement of its own,
/// before the events: a transaction that ends between the two statements is then visible
/// to the second, and one that starts later gets an id at or above the horizon.
/// `backend_xid` is 32 bits; it is widened with the epoch of the next id. The service's
/// role must see its own sessions in `pg_stat_activity` (it does: all write as one role).
const HORIZON_SQL: &str = "\
    WITH next AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS n), \
         running AS (SELECT backend_xid::text::bigint AS x FROM pg_stat_activity \
                     WHERE datname = current_database() AND backend_xid IS NOT NULL) \
    SELECT COALESCE(min(CASE WHEN running.x <= next.n % 4294967296 \
                             THEN next.n - next.n % 4294967296 + running.x \
                             ELSE next.n - next.n % 4294967296 - 4294967296 + running.x END), \
                    min(next.n)) \
    FROM next LEFT JOIN running ON true";

async fn list_postgres(
    tx: &mut Tx,
    agency: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<(Vec<EventRow>, i64), sqlx::Error> {
    // Where to resume: the xid of the event the consumer saw last (or, for a
    // position that names no event, of the nearest one before it).
    let after_xid: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT xid FROM events WHERE sequence <= $1          ORDER BY sequence DESC LIMIT 1), 0)",
    )
    .bind(after)
    .fetch_one(tx.conn())
    .await?;
    let horizon: i64 = sqlx::query_scalar(HORIZON_SQL).fetch_one(tx.conn()).await?;
    let oldest_waiting: Option<i64> =
        sqlx::query_scalar("SELECT min(occurred_time) FROM events WHERE xid >= $1")
            .bind(horizon)
            .fetch_one(tx.conn())
            .await?;
    HORIZON_LAG_MS.store(
        oldest_waiting.map_or(0, |t| (crate::times::now_millis() - t).max(0)),
        Ordering::Relaxed,
    );
    const COLUMNS: &str = "SELECT sequence, agency, type, name, occurred_time, payload FROM events";
    let rows = match agency {
        Some(a) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE agency = $1 AND (xid, sequence) > ($2, $3) AND xid < $4 \
                 ORDER BY xid, sequence LIMIT $5"
            )))
            .bind(a)
            .bind(after_xid)
            .bind(after)
            .bind(horizon)
            .bind(limit)
            .fetch_all(tx.conn())
            .await?
        }
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE (xid, sequence) > ($1, $2) AND xid < $3 \
                 ORDER BY xid, sequence LIMIT $4"
            )))
            .bind(after_xid)
            .bind(after)
            .bind(horizon)
            .bind(limit)
            .fetch_all(tx.conn())
            .await?
        }
    };
    Ok((rows, horizon))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::PLATFORM_MIGRATIONS;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// The marker a test event carries, to tell events apart.
    fn marker(e: &Event) -> i64 {
        let any = e.payload.as_ref().unwrap();
        <prost_types::Timestamp as prost::Message>::decode(any.value.as_slice())
            .unwrap()
            .seconds
    }

    /// A full page says how many readable events follow it (what a
    /// consumer reports as its lag); a page that reaches the end says none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_says_how_many_events_follow() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        for id in 0..10 {
            let agency = if id % 3 == 0 { "b" } else { "a" };
            let mut tx = t.db.write(Scope::Agency(agency)).await.unwrap();
            let event = Pending::new(&prost_types::Timestamp {
                seconds: id,
                nanos: 0,
            });
            append_pending(&mut tx, agency, "agencies/x", &event)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let all = FeedScope::All;
        let page = list_page(&t.db, &all, 0, 4).await.unwrap();
        assert_eq!((page.events.len(), page.remaining), (4, 6));
        let last = page.events.last().unwrap().sequence;
        let rest = list_page(&t.db, &all, last, 6).await.unwrap();
        assert_eq!((rest.events.len(), rest.remaining), (6, 0));
        let more = list_page(&t.db, &all, last, 100).await.unwrap();
        assert_eq!((more.events.len(), more.remaining), (6, 0));
        // Agency a has 6 of the 10 (ids 1 2 4 5 7 8).
        let a = FeedScope::Agency("a".into());
        let page = list_page(&t.db, &a, 0, 4).await.unwrap();
        assert_eq!((page.events.len(), page.remaining), (4, 2));
        assert!(page.events.iter().all(|e| e.agency == "a"));
    }

    /// Many writers commit (or roll back) in random order with random delays
    /// between append and commit while consumers read the feed a few events at
    /// a time: each consumer sees every committed event exactly once and no
    /// rolled-back one, on both backends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_never_make_a_consumer_skip_or_repeat() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let db = t.db.clone();
        const WRITERS: i64 = 12;
        const EACH: i64 = 15;
        let done = Arc::new(AtomicBool::new(false));
        let consume = |feed: FeedScope| {
            let db = db.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let (mut cursor, mut seen) = (0i64, Vec::new());
                loop {
                    // Read the flag before the page: once the writers are done
                    // and a page comes back empty, nothing is left.
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let page = list(&db, &feed, cursor, 7).await.unwrap();
                    if page.is_empty() && finished {
                        return seen;
                    }
                    for e in &page {
                        seen.push(marker(e));
                        cursor = e.sequence;
                    }
                    if page.is_empty() {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }
            })
        };
        let all = consume(FeedScope::All);
        let only_a = consume(FeedScope::Agency("a".into()));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let db = db.clone();
            writers.push(tokio::spawn(async move {
                let mut committed = Vec::new();
                for i in 0..EACH {
                    let id = w * 1000 + i;
                    let agency = if id % 3 == 0 { "b" } else { "a" };
                    let mut tx = db.write(Scope::Agency(agency)).await.unwrap();
                    let event = Pending::new(&prost_types::Timestamp {
                        seconds: id,
                        nanos: 0,
                    });
                    append_pending(&mut tx, agency, "agencies/x", &event)
                        .await
                        .unwrap();
                    // A pseudo-random delay between append and commit, so that
                    // later sequences often commit first.
                    let delay = (id * 7919) % 23;
                    tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                    if id % 11 == 5 {
                        drop(tx);
                    } else {
                        tx.commit().await.unwrap();
                        committed.push((id, agency));
                    }
                }
                committed
            }));
        }
        let mut committed = Vec::new();
        for w in writers {
            committed.extend(w.await.unwrap());
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let all = all.await.unwrap();
        let only_a = only_a.await.unwrap();
        for (seen, want) in [
            (all, committed.iter().map(|c| c.0).collect::<BTreeSet<_>>()),
            (
                only_a,
                committed
                    .iter()
                    .filter(|c| c.1 == "a")
                    .map(|c| c.0)
                    .collect(),
            ),
        ] {
            let unique: BTreeSet<i64> = seen.iter().copied().collect();
            assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
            assert_eq!(unique, want, "the feed skipped or invented events");
        }
    }
}
