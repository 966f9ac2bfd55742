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
    /// Writes the change's answer needs nothing back from, sent with its
    /// audit record (see [`Change::writes`]).
    writes: Box<Statements>,
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
    let (mut tx, key, claim) = match keys.cached_key_on(db, agency) {
        // The usual case: the agency's key is known (committed, so the same
        // as the transaction would read), and the request id is claimed by
        // the transaction's first statement, sent with its start.
        Some(key) if !request_id.is_empty() => {
            let fingerprints = key.blind_indexes("request-fingerprint", &fingerprint);
            let Some(first) = fingerprints.first() else {
                return Err(BeginError::RequestIdReused);
            };
            let opening =
                idempotency::claim_opening(db.backend(), agency, method, request_id, first)?;
            let (mut tx, inserted) = db.write_opening(Scope::Agency(agency), opening).await?;
            let claim = idempotency::resolve::<R>(
                &mut tx,
                &key,
                agency,
                method,
                request_id,
                &fingerprints,
                inserted,
            )
            .await?;
            (tx, key, claim)
        }
        _ => {
            let mut tx = db.write(Scope::Agency(agency)).await?;
            // Fetched in the change's own transaction: a key created here
            // commits with the first values it seals (DESIGN §5).
            let key = keys.data_key(&mut tx, agency).await?;
            let fingerprints = key.blind_indexes("request-fingerprint", &fingerprint);
            let claim =
                idempotency::claim::<R>(&mut tx, &key, agency, method, request_id, &fingerprints)
                    .await?;
            (tx, key, claim)
        }
    };
    match claim {
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
            writes: Box::new(Statements::new(tx.backend())),
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

/// What a change made only of new rows writes besides its audit record and
/// stored response (see [`write_new`]).
#[derive(Debug)]
pub struct Written<R> {
    /// What the change is about (audited, and named in its stored response).
    pub resource: String,
    /// The answer.
    pub response: R,
    /// Outbox events: (name, payload).
    pub events: Vec<(String, outbox::Pending)>,
}

/// A state-changing call whose work is only writes that need nothing back
/// from the database (new rows: a unique violation is their only expected
/// failure). `build` adds them to the statements it is given, with the
/// agency's data key, and says what it wrote.
///
/// When the agency's key is cached, the whole change is one request: the
/// request id is claimed by inserting its record complete with the
/// response, beside the writes, the audit record and the events (on SQLite
/// one hand-off to the connection's thread under the writer lock, on
/// PostgreSQL one round trip after `BEGIN`). If anything in it is a unique
/// violation (the request id or a chosen id was taken, or a concurrent
/// retry took it first), nothing of it stays and the change is made again
/// the usual way ([`begin`], then [`Change::finish`]), which tells a retry
/// (the first response), a reused request id and a taken name apart;
/// `build` is then called again. In that way, a unique violation of the
/// writes themselves fails with `taken()`.
#[allow(clippy::too_many_arguments)]
pub async fn write_new<R, E>(
    db: &Db,
    keys: &Keyring,
    caller: &Caller,
    agency: &str,
    method: &'static str,
    request_id: &str,
    fingerprint: String,
    build: impl Fn(&DataKey, &mut Statements) -> Result<Written<R>, E>,
    taken: impl Fn() -> E,
) -> Result<R, E>
where
    R: prost::Message + Default + Named,
    E: From<BeginError> + From<sqlx::Error>,
{
    check_request_id(request_id).map_err(BeginError::BadRequestId)?;
    if let Some(key) = keys.cached_key_on(db, agency) {
        let mut s = Statements::new(db.backend());
        let written = build(&key, &mut s)?;
        let fingerprints = key.blind_indexes("request-fingerprint", &fingerprint);
        let one_statement = written.events.len() <= outbox::APPEND_ROWS;
        if let (Some(first), true) = (fingerprints.first(), one_statement) {
            let now = crate::times::now_millis();
            if !request_id.is_empty() {
                idempotency::push_record(
                    &mut s,
                    &key,
                    agency,
                    method,
                    request_id,
                    first,
                    &written.resource,
                    &written.response,
                )?;
            }
            let access = Access {
                agency,
                actor: &caller.subject,
                action: method,
                resource: &written.resource,
                request_id,
            };
            audit::push_insert(&mut s, &[(access, now)])?;
            if !written.events.is_empty() {
                let events: Vec<(&str, &outbox::Pending)> = written
                    .events
                    .iter()
                    .map(|(n, e)| (n.as_str(), e))
                    .collect();
                outbox::push_append(&mut s, agency, &events)?;
            }
            let appended = !written.events.is_empty();
            match db.commit_all(Scope::Agency(agency), s, appended).await {
                Ok(()) => return Ok(written.response),
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut change =
        match begin::<R>(db, keys, caller, agency, method, request_id, fingerprint).await? {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
    let key = change.key.clone();
    let written = build(&key, change.writes())?;
    for (name, event) in written.events {
        change.event_pending(&name, event);
    }
    match change.finish(&written.resource, written.response).await {
        Err(e) if is_unique_violation(&e) => Err(taken()),
        finished => Ok(finished?),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Most values bound in one request of [`commit_with`] before the next part
/// goes in a request of its own (PostgreSQL allows 65,535 to a statement,
/// and a part binds at most 3,500).
const MOST_BOUND: usize = 30_000;

/// Ends a write transaction of a batch (an import): sends `s`, the audit
/// records of `resources` and `events` as one request where the databases'
/// limits allow (on SQLite with the savepoint's release, see
/// [`Tx::commit_after`]), then commits.
pub async fn commit_with<S: AsRef<str>>(
    mut tx: Tx,
    mut s: Statements,
    template: Access<'_>,
    resources: &[S],
    events: &[(&str, &outbox::Pending)],
) -> Result<(), sqlx::Error> {
    let time = crate::times::now_millis();
    let backend = tx.backend();
    let room = async |s: &mut Statements, tx: &mut Tx| {
        if s.bound() > MOST_BOUND {
            std::mem::replace(s, Statements::new(backend))
                .execute(tx)
                .await?;
        }
        Ok::<_, sqlx::Error>(())
    };
    for chunk in resources.chunks(audit::INSERT_ROWS) {
        room(&mut s, &mut tx).await?;
        push_audit(&mut s, template, time, chunk)?;
    }
    for chunk in events.chunks(outbox::APPEND_ROWS) {
        room(&mut s, &mut tx).await?;
        outbox::push_append(&mut s, template.agency, chunk)?;
    }
    if !events.is_empty() {
        tx.mark_events_appended();
    }
    tx.commit_after(s).await
}

/// Adds the audit records of `resources` (at most [`audit::INSERT_ROWS`]),
/// each as `template` at `time`.
fn push_audit<S: AsRef<str>>(
    s: &mut Statements,
    template: Access<'_>,
    time: i64,
    resources: &[S],
) -> Result<(), sqlx::Error> {
    let rows: Vec<(Access<'_>, i64)> = resources
        .iter()
        .map(|r| {
            let access = Access {
                resource: r.as_ref(),
                ..template
            };
            (access, time)
        })
        .collect();
    audit::push_insert(s, &rows)
}

/// A batch (an import) made only of new rows, prepared to be written as one
/// request: see [`NewRows::push_end`] and [`NewRows::commit`].
#[derive(Debug)]
pub struct NewRows {
    s: Statements,
    events: bool,
}

impl NewRows {
    /// Starts from `s`, the batch's inserts of new rows, written without
    /// `ON CONFLICT`: a row that clashes with a stored one must fail the
    /// whole request (a unique violation).
    pub fn new(s: Statements) -> NewRows {
        NewRows { s, events: false }
    }

    /// Adds what ends the batch: the audit records of `resources` (with
    /// `template`, timed now) and `events`. None when the whole would bind
    /// more values than one request takes ([`MOST_BOUND`]): the batch is
    /// then written the usual way.
    pub fn push_end<S: AsRef<str>>(
        mut self,
        template: Access<'_>,
        resources: &[S],
        events: &[(&str, &outbox::Pending)],
    ) -> Result<Option<NewRows>, sqlx::Error> {
        let time = crate::times::now_millis();
        for chunk in resources.chunks(audit::INSERT_ROWS) {
            push_audit(&mut self.s, template, time, chunk)?;
        }
        for chunk in events.chunks(outbox::APPEND_ROWS) {
            outbox::push_append(&mut self.s, template.agency, chunk)?;
        }
        self.events |= !events.is_empty();
        Ok((self.s.bound() <= MOST_BOUND).then_some(self))
    }

    /// Writes and commits the batch as one request (on SQLite one hand-off
    /// to the connection's thread under the writer lock, on PostgreSQL one
    /// round trip after `BEGIN`; see [`Db::commit_all`]), calling `written`
    /// once its rows are written and before the commit (see
    /// [`Db::commit_all_then`]). Ok(false) when any of it was a unique
    /// violation (a row imported before, a repeated key): then nothing of
    /// it stays, `written` was not called, and the caller writes the batch
    /// the usual way, which tells those rows apart.
    pub async fn commit(
        self,
        db: &Db,
        agency: &str,
        written: impl FnOnce() + Send + 'static,
    ) -> Result<bool, sqlx::Error> {
        match db
            .commit_all_then(Scope::Agency(agency), self.s, self.events, written)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Change<'_> {
    /// The change's transaction and its writes (see [`Change::writes`]),
    /// for a store function that runs statements and adds writes.
    pub fn tx_and_writes(&mut self) -> (&mut Tx, &mut Statements) {
        (&mut self.tx, &mut self.writes)
    }

    /// The agency the change is in.
    pub fn agency(&self) -> &str {
        self.agency
    }

    /// The caller making the change.
    pub fn caller(&self) -> &Caller {
        self.caller
    }

    /// Writes to send with the change's audit record, stored response and
    /// events, as one request (see [`Statements`]): ones whose outcome the
    /// change needs before it answers only as success or failure (an
    /// insert of a new row, say). A failing one fails [`Change::finish`]
    /// with its error.
    pub fn writes(&mut self) -> &mut Statements {
        &mut self.writes
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
        let mut s = std::mem::replace(&mut *self.writes, Statements::new(self.tx.backend()));
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
        // A change with more events than one statement holds appends the
        // rest after (rare: most changes have one or two).
        let rest: Vec<(&str, &outbox::Pending)> = chunks.flatten().copied().collect();
        if !events.is_empty() {
            self.tx.mark_events_appended();
        }
        if rest.is_empty() {
            self.tx.commit_after(s).await?;
        } else {
            s.execute(&mut self.tx).await?;
            outbox::append_all(&mut self.tx, self.agency, &rest).await?;
            self.tx.commit().await?;
        }
        Ok(response)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::PLATFORM_MIGRATIONS;
    use touchstone_api::register::v1::Client;
    use touchstone_crypto::MasterKey;

    fn caller() -> Caller {
        Caller {
            subject: "tester".into(),
            agency: Some("a".into()),
            agencies: touchstone_auth::AgencyScope::Own,
            roles: Default::default(),
        }
    }

    #[derive(Debug, PartialEq)]
    enum Failed {
        Taken,
        Begin(String),
        Db(String),
    }
    impl From<BeginError> for Failed {
        fn from(e: BeginError) -> Self {
            Failed::Begin(e.to_string())
        }
    }
    impl From<sqlx::Error> for Failed {
        fn from(e: sqlx::Error) -> Self {
            Failed::Db(e.to_string())
        }
    }

    /// A "new thing" with a chosen id: an audit record whose id is taken
    /// when used twice (its primary key), so a write can collide.
    async fn create(
        db: &Db,
        keys: &Keyring,
        thing: &str,
        request_id: &str,
        body: &str,
    ) -> Result<Client, Failed> {
        let name = format!("agencies/a/things/{thing}");
        write_new(
            db,
            keys,
            &caller(),
            "a",
            "CreateThing",
            request_id,
            format!("{thing}/{body}"),
            |_key, s| {
                let sql = format!(
                    "INSERT INTO audit_records (agency, id, actor, action, resource, request_id, time) \
                     VALUES ({}, {}, 'x', 'Thing', {}, '', 0)",
                    s.value("a".to_string())?,
                    s.value(format!("thing-{thing}"))?,
                    s.value(name.clone())?,
                );
                s.push(sql);
                Ok::<_, Failed>(Written {
                    resource: name.clone(),
                    response: Client {
                        name: name.clone(),
                        given_names: body.to_string(),
                        ..Default::default()
                    },
                    events: vec![(
                        name.clone(),
                        outbox::Pending::new(&prost_types::Timestamp::default()),
                    )],
                })
            },
            || Failed::Taken,
        )
        .await
    }

    async fn count(db: &Db, sql: &'static str) -> i64 {
        let mut tx = db.read(Scope::Agency("a")).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(tx.conn()).await.unwrap();
        tx.commit().await.unwrap();
        n
    }

    /// A batch of "things" (audit records with chosen ids, so they can
    /// clash) prepared as new rows, with its end: an audit record and an
    /// event per thing.
    fn things(db: &Db, ids: &[String]) -> NewRows {
        let mut s = Statements::new(db.backend());
        let mut values = Vec::new();
        for id in ids {
            values.push(format!(
                "({}, {}, 'x', 'Thing', {}, '', 0)",
                s.value("a".to_string()).unwrap(),
                s.value(format!("thing-{id}")).unwrap(),
                s.value(format!("agencies/a/things/{id}")).unwrap(),
            ));
        }
        s.push(format!(
            "INSERT INTO audit_records (agency, id, actor, action, resource, request_id, time) \
             VALUES {}",
            values.join(", ")
        ));
        let names: Vec<String> = ids
            .iter()
            .map(|i| format!("agencies/a/things/{i}"))
            .collect();
        let event = outbox::Pending::new(&prost_types::Timestamp::default());
        let events: Vec<(&str, &outbox::Pending)> =
            names.iter().map(|n| (n.as_str(), &event)).collect();
        let template = Access {
            agency: "a",
            actor: "tester",
            action: "ImportThings",
            resource: "",
            request_id: "",
        };
        NewRows::new(s)
            .push_end(template, &names, &events)
            .unwrap()
            .expect("fits one request")
    }

    /// A batch of new rows is one request that stays whole or not at all:
    /// committed, every row with its audit record and event; a batch in
    /// which one row clashes answers false and leaves nothing, while
    /// batches committed beside it (on SQLite in the same group
    /// transaction) keep theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_new_rows_is_written_whole_or_not_at_all() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let ids =
            |from: usize, to: usize| -> Vec<String> { (from..to).map(|i| i.to_string()).collect() };
        // `written` is called once when the rows are written, never when
        // they clash.
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = || {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        };
        assert!(
            things(&t.db, &ids(0, 3))
                .commit(&t.db, "a", counted())
                .await
                .unwrap()
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            !things(&t.db, &ids(2, 4))
                .commit(&t.db, "a", counted())
                .await
                .unwrap()
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Sixteen batches at once: the odd ones repeat thing 1.
        let mut batches = tokio::task::JoinSet::new();
        for b in 0..16usize {
            let db = t.db.clone();
            let mut mine = ids(10 + 10 * b, 15 + 10 * b);
            if b % 2 == 1 {
                mine.push("1".to_string());
            }
            batches.spawn(
                async move { (b, things(&db, &mine).commit(&db, "a", || {}).await.unwrap()) },
            );
        }
        while let Some(done) = batches.join_next().await {
            let (b, committed) = done.unwrap();
            assert_eq!(committed, b % 2 == 0, "batch {b}");
        }
        let things = count(
            &t.db,
            "SELECT COUNT(*) FROM audit_records WHERE action = 'Thing'",
        )
        .await;
        assert_eq!(things, 3 + 8 * 5, "the first batch and the eight even ones");
        let audited = count(
            &t.db,
            "SELECT COUNT(*) FROM audit_records WHERE action = 'ImportThings'",
        )
        .await;
        assert_eq!(audited, 3 + 8 * 5, "an audit record per thing stored");
        let events = count(
            &t.db,
            "SELECT COUNT(*) FROM events WHERE name LIKE 'agencies/a/things/%'",
        )
        .await;
        assert_eq!(events, 3 + 8 * 5, "an event per thing stored");
    }

    /// A request id that is not a plain name (quotes, semicolons, spaces)
    /// is never written into SQL: on the way where the claim rides with
    /// `BEGIN` it is bound instead, and it still replays exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_id_that_is_not_a_plain_name_is_bound() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let keys = Keyring::new(MasterKey::generate(), t.db.clone());
        let odd = "r'); DELETE FROM audit_records; --";
        assert!(crate::db::plain_literal(odd).is_none());
        create(&t.db, &keys, "0", "r0", "zero").await.unwrap();
        let mut tx = t.db.read(Scope::Agency("a")).await.unwrap();
        keys.data_key(&mut tx, "a").await.unwrap();
        tx.commit().await.unwrap();
        let first = create(&t.db, &keys, "1", odd, "one").await.unwrap();
        let again = create(&t.db, &keys, "1", odd, "one").await.unwrap();
        assert_eq!(again, first);
        // A change that claims first (the thing is taken) with the same id.
        assert_eq!(
            create(&t.db, &keys, "0", odd, "other").await,
            Err(Failed::Begin(BeginError::RequestIdReused.to_string()))
        );
        let things = count(
            &t.db,
            "SELECT COUNT(*) FROM audit_records WHERE action = 'Thing'",
        )
        .await;
        assert_eq!(things, 2, "nothing deleted, each thing once");
    }

    /// Both ways of `write_new` (the key not yet cached: claim first; then
    /// cached: one request) keep AIP-155: a retry gets the first response
    /// and writes nothing, a reused id with another body is refused, a taken
    /// name is `taken`, and a failure leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_of_new_rows_are_exactly_once_both_ways() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let keys = Keyring::new(MasterKey::generate(), t.db.clone());
        // Not cached yet: the usual way.
        let first = create(&t.db, &keys, "1", "r1", "one").await.unwrap();
        assert_eq!(first.given_names, "one");
        // Cached from here on (a read caches a committed key).
        let mut tx = t.db.read(Scope::Agency("a")).await.unwrap();
        keys.data_key(&mut tx, "a").await.unwrap();
        tx.commit().await.unwrap();
        assert!(keys.cached_key_on(&t.db, "a").is_some());
        for _ in 0..2 {
            let second = create(&t.db, &keys, "2", "r2", "two").await.unwrap();
            assert_eq!(second.given_names, "two");
            // A retry of either gets its first response.
            let again = create(&t.db, &keys, "1", "r1", "one").await.unwrap();
            assert_eq!(again, first);
        }
        assert_eq!(
            create(&t.db, &keys, "3", "r2", "other").await,
            Err(Failed::Begin(BeginError::RequestIdReused.to_string())),
            "a request id reused for another request"
        );
        assert_eq!(
            create(&t.db, &keys, "2", "r4", "two again").await,
            Err(Failed::Taken),
            "a name taken"
        );
        assert_eq!(
            create(&t.db, &keys, "2", "", "no request id").await,
            Err(Failed::Taken)
        );
        let things = count(
            &t.db,
            "SELECT COUNT(*) FROM audit_records WHERE action = 'Thing'",
        )
        .await;
        assert_eq!(things, 2, "each thing written once");
        let audited = count(
            &t.db,
            "SELECT COUNT(*) FROM audit_records WHERE action = 'CreateThing'",
        )
        .await;
        assert_eq!(audited, 2 + 3, "two creations and three replays audited");
        let events = count(
            &t.db,
            "SELECT COUNT(*) FROM events WHERE name LIKE 'agencies/a/things/%'",
        )
        .await;
        assert_eq!(events, 2, "one event per thing");
        let ids = count(
            &t.db,
            "SELECT COUNT(*) FROM idempotency WHERE method = 'CreateThing'",
        )
        .await;
        assert_eq!(ids, 2, "r1 and r2; nothing of the refused calls");
        let r4 = count(
            &t.db,
            "SELECT COUNT(*) FROM idempotency WHERE request_id = 'r4'",
        )
        .await;
        assert_eq!(r4, 0, "a failed change leaves no claim");
    }
}
