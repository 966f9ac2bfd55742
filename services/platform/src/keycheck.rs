//! The start-up check and repair of the data keys stored in services'
//! databases (DESIGN §5).
//!
//! Before each service kept its own keys, `touchstone up` shared one key
//! cache between its services: a service could seal values with a key stored
//! only in another service's database, and after a restart another key could
//! be chosen, so one database could hold values of an agency sealed with
//! several keys, some stored elsewhere. This module proves, once per
//! database, that every sealed value opens with a key stored in that
//! database. A value that opens only with a key found in another database
//! given to the check (`up` and `touchstone keys repair` give all of them)
//! gets that key written here: as the agency's key if the database has none,
//! else as an older key, which opens values and never seals. A value that no
//! known key opens stops start-up with a message naming the service, table
//! and agency, never the value. From then on a key commits with the first
//! value it seals, so the proof holds and later starts skip the scan; every
//! start still checks that each stored key unwraps with the configured master
//! key, one row per agency.

use crate::db::{Db, Scope};
use crate::keyring;
use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use touchstone_crypto::{DataKey, MasterKey};

/// A column of sealed values and how its associated data is built from the
/// row, as a SQL expression that runs on SQLite and PostgreSQL alike (the
/// store that seals the column builds the same text in Rust).
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    /// Table (with an `agency` column).
    pub table: &'static str,
    /// The sealed column (NULL when there is no value).
    pub column: &'static str,
    /// SQL expression of the associated data, e.g. `'x/' || agency || '/' || id`.
    pub aad: &'static str,
}

/// The platform's own sealed column, in every service's database: the stored
/// first responses of request ids.
pub const IDEMPOTENCY: SealedColumn = SealedColumn {
    table: "idempotency",
    column: "response",
    aad: "'idempotency/' || agency || '/' || method || '/' || request_id",
};

/// One service's database as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Store<'a> {
    /// The service's name, for messages.
    pub service: &'static str,
    /// Its database.
    pub db: &'a Db,
    /// Its sealed columns, besides [`IDEMPOTENCY`].
    pub sealed: &'a [SealedColumn],
}

/// The `key_checks` row that records the one-time proof.
const CHECKED: &str = "sealed-values";

/// Sealed values of one agency in one table that no known key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unopenable {
    /// The agency (an identifier, not personal data).
    pub agency: String,
    /// The table.
    pub table: &'static str,
    /// How many values.
    pub count: u64,
}

impl fmt::Display for Unopenable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in table {} of agency {}",
            self.count, self.table, self.agency
        )
    }
}

/// Why a database must not be served.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The database failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A stored key does not unwrap: most likely the wrong master key.
    #[error(
        "the {service} database holds a data key of agency {agency} that the configured master \
         key does not unwrap: set master_key (TOUCHSTONE_MASTER_KEY) to the key this data was \
         written with"
    )]
    WrongMaster {
        /// The service.
        service: &'static str,
        /// The agency.
        agency: String,
    },
    /// Sealed values that no key known to the check opens.
    #[error(
        "the {service} database holds sealed values that no known data key opens ({}); \
         run `touchstone keys repair` with every service's database configured, which finds \
         keys kept in the other databases, or restore the missing key; the service does not \
         start until then",
        list(.found)
    )]
    Unopenable {
        /// The service.
        service: &'static str,
        /// What was found, per agency and table.
        found: Vec<Unopenable>,
    },
}

fn list(found: &[Unopenable]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the check did to one database.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The proof was already recorded: only the keys were checked.
    pub already_proved: bool,
    /// Sealed values opened.
    pub values_checked: u64,
    /// Keys written to this database (agency, key id), found in another.
    pub keys_added: Vec<(String, String)>,
}

/// An agency's keys stored in one database.
#[derive(Debug, Default)]
struct Stored {
    current: Option<DataKey>,
    older: Vec<DataKey>,
}

impl Stored {
    fn all(&self) -> impl Iterator<Item = &DataKey> {
        self.current.iter().chain(self.older.iter())
    }
}

/// Checks every database in `stores` and repairs what can be repaired with
/// keys found in the others (see the module's documentation). Writes nothing
/// when any database holds a value no known key opens. With `rescan`, opens
/// every sealed value even where the proof is recorded (an operator's
/// explicit repair); without it, a recorded proof skips the scan.
pub async fn check_and_repair(
    stores: &[Store<'_>],
    master: &MasterKey,
    rescan: bool,
) -> Result<Vec<Outcome>, CheckError> {
    let mut stored = Vec::with_capacity(stores.len());
    for store in stores {
        stored.push(load_keys(store, master).await?);
    }
    // Every key known anywhere, per agency, once each.
    let mut known: BTreeMap<String, Vec<DataKey>> = BTreeMap::new();
    for keys in &stored {
        for (agency, s) in keys {
            let entry = known.entry(agency.clone()).or_default();
            for k in s.all() {
                if !entry.iter().any(|e| e.id() == k.id()) {
                    entry.push(k.clone());
                }
            }
        }
    }
    let mut plans = Vec::with_capacity(stores.len());
    let mut failure = None;
    for (store, keys) in stores.iter().zip(&stored) {
        if !rescan && proved(store.db).await? {
            plans.push((
                Outcome {
                    already_proved: true,
                    ..Outcome::default()
                },
                BTreeMap::new(),
            ));
            continue;
        }
        let (outcome, adopt, found) = scan(store, keys, &known).await?;
        if !found.is_empty() && failure.is_none() {
            failure = Some(CheckError::Unopenable {
                service: store.service,
                found,
            });
        }
        plans.push((outcome, adopt));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut outcomes = Vec::with_capacity(stores.len());
    for ((store, keys), (mut outcome, adopt)) in stores.iter().zip(&stored).zip(plans) {
        if outcome.already_proved {
            outcomes.push(outcome);
            continue;
        }
        for (agency, adopted) in adopt {
            let has_current = keys.get(&agency).is_some_and(|s| s.current.is_some());
            write_keys(store.db, master, &agency, has_current, &adopted).await?;
            outcome
                .keys_added
                .extend(adopted.iter().map(|k| (agency.clone(), k.id())));
        }
        record_proof(store.db).await?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Every stored key of the database, unwrapped.
async fn load_keys(
    store: &Store<'_>,
    master: &MasterKey,
) -> Result<BTreeMap<String, Stored>, CheckError> {
    let mut tx = store.db.read(Scope::AllAgencies).await?;
    let current: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT agency, wrapped_key FROM agency_keys")
            .fetch_all(tx.conn())
            .await?;
    let older: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT agency, wrapped_key FROM agency_older_keys")
            .fetch_all(tx.conn())
            .await?;
    tx.commit().await?;
    let unwrap = |agency: &str, wrapped: &[u8]| {
        DataKey::unwrap(master, agency, wrapped).map_err(|_| CheckError::WrongMaster {
            service: store.service,
            agency: agency.to_string(),
        })
    };
    let mut keys: BTreeMap<String, Stored> = BTreeMap::new();
    for (agency, wrapped) in current {
        let key = unwrap(&agency, &wrapped)?;
        keys.entry(agency).or_default().current = Some(key);
    }
    for (agency, wrapped) in older {
        let key = unwrap(&agency, &wrapped)?;
        keys.entry(agency).or_default().older.push(key);
    }
    Ok(keys)
}

async fn proved(db: &Db) -> Result<bool, sqlx::Error> {
    let mut tx = db.read(Scope::AllAgencies).await?;
    let row: Option<i64> = sqlx::query_scalar("SELECT check_time FROM key_checks WHERE name = $1")
        .bind(CHECKED)
        .fetch_optional(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(row.is_some())
}

async fn record_proof(db: &Db) -> Result<(), sqlx::Error> {
    let mut tx = db.write(Scope::AllAgencies).await?;
    sqlx::query(
        "INSERT INTO key_checks (name, check_time) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET check_time = excluded.check_time",
    )
    .bind(CHECKED)
    .bind(crate::times::now_millis())
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// The agencies with rows in the database. On PostgreSQL row-level security
/// hides agency tables from a cross-agency read, except the keys, the outbox
/// and the request ids, which every agency that sealed anything has.
async fn agencies(store: &Store<'_>) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut tables = vec![
        "agency_keys",
        "agency_older_keys",
        "events",
        IDEMPOTENCY.table,
    ];
    tables.extend(store.sealed.iter().map(|c| c.table));
    let mut found = BTreeSet::new();
    let mut tx = store.db.read(Scope::AllAgencies).await?;
    for table in tables {
        let sql = format!("SELECT DISTINCT agency FROM {table}");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(tx.conn())
            .await?;
        found.extend(rows);
    }
    tx.commit().await?;
    Ok(found)
}

type Scanned = (Outcome, BTreeMap<String, Vec<DataKey>>, Vec<Unopenable>);

/// Opens every sealed value of the database with its own keys, then with
/// the others `known`; returns what was checked, the keys to adopt and what
/// nothing opens.
async fn scan(
    store: &Store<'_>,
    keys: &BTreeMap<String, Stored>,
    known: &BTreeMap<String, Vec<DataKey>>,
) -> Result<Scanned, sqlx::Error> {
    let mut outcome = Outcome::default();
    let mut adopt: BTreeMap<String, Vec<DataKey>> = BTreeMap::new();
    let mut found = Vec::new();
    let columns: Vec<SealedColumn> = std::iter::once(IDEMPOTENCY)
        .chain(store.sealed.iter().copied())
        .collect();
    for agency in agencies(store).await? {
        let mut own: Vec<DataKey> = keys
            .get(&agency)
            .map(|s| s.all().cloned().collect())
            .unwrap_or_default();
        let elsewhere: &[DataKey] = known.get(&agency).map_or(&[], Vec::as_slice);
        let mut adopted: Vec<DataKey> = Vec::new();
        for column in &columns {
            let sql = format!(
                "SELECT {aad}, {col} FROM {table} WHERE agency = $1 AND {col} IS NOT NULL",
                aad = column.aad,
                col = column.column,
                table = column.table,
            );
            let mut unopened = 0u64;
            let mut tx = store.db.read(Scope::Agency(&agency)).await?;
            {
                let mut rows = sqlx::query_as::<_, (String, Vec<u8>)>(sqlx::AssertSqlSafe(sql))
                    .bind(&agency)
                    .fetch(tx.conn());
                while let Some((aad, sealed)) = rows.try_next().await? {
                    outcome.values_checked += 1;
                    if own.iter().any(|k| k.open(aad.as_bytes(), &sealed).is_ok()) {
                        continue;
                    }
                    match elsewhere
                        .iter()
                        .find(|k| k.open(aad.as_bytes(), &sealed).is_ok())
                    {
                        Some(k) => {
                            own.push(k.clone());
                            adopted.push(k.clone());
                        }
                        None => unopened += 1,
                    }
                }
            }
            tx.commit().await?;
            if unopened > 0 {
                found.push(Unopenable {
                    agency: agency.clone(),
                    table: column.table,
                    count: unopened,
                });
            }
        }
        if !adopted.is_empty() {
            adopt.insert(agency, adopted);
        }
    }
    Ok((outcome, adopt, found))
}

/// Writes keys found elsewhere: the first as the agency's key when the
/// database has none (values it seals from now on then match the values
/// already there), the rest as older keys.
async fn write_keys(
    db: &Db,
    master: &MasterKey,
    agency: &str,
    has_current: bool,
    adopted: &[DataKey],
) -> Result<(), sqlx::Error> {
    let mut tx = db.write(Scope::Agency(agency)).await?;
    let now = crate::times::now_millis();
    let mut rest = adopted;
    if !has_current
        && keyring::stored(&mut tx, agency).await?.is_none()
        && let Some((first, others)) = adopted.split_first()
    {
        sqlx::query(
            "INSERT INTO agency_keys (agency, wrapped_key, create_time) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(agency)
        .bind(first.wrap(master, agency))
        .bind(now)
        .execute(tx.conn())
        .await?;
        rest = others;
    }
    for key in rest {
        sqlx::query(
            "INSERT INTO agency_older_keys (agency, key_id, wrapped_key, create_time) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(agency)
        .bind(key.id())
        .bind(key.wrap(master, agency))
        .bind(now)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Store tests (SQLite, and PostgreSQL when `TOUCHSTONE_TEST_PG_URL` is
    //! set): data directories in the state the shared key cache of
    //! `touchstone up` left them, built with the calls it made.

    use super::*;
    use crate::db::PLATFORM_MIGRATIONS;
    use crate::idempotency::{self, Claim};
    use crate::keyring::Keyring;
    use crate::testing::{self, TestDb};
    use prost_types::Timestamp;

    const AGENCY: &str = "k";

    /// One state-changing call as the old code made it in `db`: sealed with
    /// `key`, whichever database that key was stored in.
    async fn change_sealed_with(db: &Db, key: &DataKey, request_id: &str, seconds: i64) {
        let mut tx = db.write(Scope::Agency(AGENCY)).await.unwrap();
        let fingerprints = vec![key.blind_index("request-fingerprint", request_id)];
        let claim = idempotency::claim::<Timestamp>(
            &mut tx,
            key,
            AGENCY,
            "Test",
            request_id,
            &fingerprints,
        )
        .await
        .unwrap();
        assert!(matches!(claim, Claim::Fresh));
        let response = Timestamp { seconds, nanos: 0 };
        idempotency::complete(&mut tx, key, AGENCY, "Test", request_id, "r", &response)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// The key the old shared cache handed out after finding or creating it
    /// in `db` (the first service to touch the agency).
    async fn first_touch(db: &Db, master: &MasterKey) -> Arc<DataKey> {
        let keys = Keyring::new(master.clone(), db.clone());
        let mut tx = db.write(Scope::Agency(AGENCY)).await.unwrap();
        let key = keys.data_key(&mut tx, AGENCY).await.unwrap();
        tx.commit().await.unwrap();
        key
    }

    /// What a new process reads back for `request_id` in `db`: the first
    /// response's seconds, or why not.
    async fn replay(db: &Db, master: &MasterKey, request_id: &str) -> Result<i64, String> {
        let keys = Keyring::new(master.clone(), db.clone());
        let mut tx = db.write(Scope::Agency(AGENCY)).await.unwrap();
        let key = keys.data_key(&mut tx, AGENCY).await.unwrap();
        let fingerprints = key.blind_indexes("request-fingerprint", request_id);
        let claim = idempotency::claim::<Timestamp>(
            &mut tx,
            &key,
            AGENCY,
            "Test",
            request_id,
            &fingerprints,
        )
        .await;
        match claim {
            Ok(Claim::Replay(t)) => Ok(t.seconds),
            Ok(Claim::Mismatch) => Err("request id refused".into()),
            Ok(_) => Err("request id unknown".into()),
            Err(e) => Err(format!("does not open: {e}")),
        }
    }

    use std::sync::Arc;

    async fn two() -> (TestDb, TestDb) {
        (
            testing::fresh(&[&PLATFORM_MIGRATIONS]).await,
            testing::fresh(&[&PLATFORM_MIGRATIONS]).await,
        )
    }

    fn stores<'a>(a: &'a TestDb, b: &'a TestDb) -> [Store<'a>; 2] {
        [
            Store {
                service: "complaints",
                db: &a.db,
                sealed: &[],
            },
            Store {
                service: "register",
                db: &b.db,
                sealed: &[],
            },
        ]
    }

    #[tokio::test]
    async fn repair_copies_keys_between_databases_so_every_value_opens() {
        let master = MasterKey::generate();
        let (a, b) = two().await;
        // First run: complaints (a) touches the agency first and stores k1;
        // the register (b) seals with the cached k1 and stores none.
        let k1 = first_touch(&a.db, &master).await;
        change_sealed_with(&a.db, &k1, "a-1", 1).await;
        change_sealed_with(&b.db, &k1, "b-1", 2).await;
        // Second run: the register touches it first and stores k2; both seal
        // with k2, and complaints keeps k1 as its stored key.
        let k2 = first_touch(&b.db, &master).await;
        assert_ne!(k1.id(), k2.id());
        change_sealed_with(&a.db, &k2, "a-2", 3).await;
        change_sealed_with(&b.db, &k2, "b-2", 4).await;
        // What a restart of the old code then found.
        assert!(replay(&b.db, &master, "b-1").await.is_err());
        assert!(replay(&a.db, &master, "a-2").await.is_err());

        let outcomes = check_and_repair(&stores(&a, &b), &master, false)
            .await
            .unwrap();
        assert_eq!(outcomes[0].keys_added, [(AGENCY.to_string(), k2.id())]);
        assert_eq!(outcomes[1].keys_added, [(AGENCY.to_string(), k1.id())]);
        assert_eq!(outcomes[0].values_checked, 2);
        for (db, id, seconds) in [
            (&a.db, "a-1", 1),
            (&a.db, "a-2", 3),
            (&b.db, "b-1", 2),
            (&b.db, "b-2", 4),
        ] {
            assert_eq!(replay(db, &master, id).await, Ok(seconds), "{id}");
        }
        // Proved once: the next start only checks the keys unwrap.
        let again = check_and_repair(&stores(&a, &b), &master, false)
            .await
            .unwrap();
        assert!(
            again
                .iter()
                .all(|o| o.already_proved && o.keys_added.is_empty())
        );
        // An explicit repair opens every value again, and finds nothing to add.
        let full = check_and_repair(&stores(&a, &b), &master, true)
            .await
            .unwrap();
        assert_eq!(
            full.iter().map(|o| o.values_checked).collect::<Vec<_>>(),
            [2, 2]
        );
        assert!(
            full.iter()
                .all(|o| !o.already_proved && o.keys_added.is_empty())
        );
    }

    #[tokio::test]
    async fn repair_gives_a_database_without_a_key_the_one_its_values_use() {
        let master = MasterKey::generate();
        let (a, b) = two().await;
        let k1 = first_touch(&a.db, &master).await;
        change_sealed_with(&b.db, &k1, "b-1", 2).await;
        check_and_repair(&stores(&a, &b), &master, false)
            .await
            .unwrap();
        // b's stored key is now k1 itself: what b seals from now on matches
        // what it already holds, with no older key needed.
        assert_eq!(first_touch(&b.db, &master).await.id(), k1.id());
        assert_eq!(replay(&b.db, &master, "b-1").await, Ok(2));
        let mut tx = b.db.read(Scope::Agency(AGENCY)).await.unwrap();
        assert!(
            keyring::stored_older(&mut tx, AGENCY)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_value_no_known_key_opens_stops_the_start_with_a_clear_message() {
        let master = MasterKey::generate();
        let (a, b) = two().await;
        let stored = first_touch(&a.db, &master).await;
        change_sealed_with(&a.db, &stored, "a-1", 1).await;
        // Sealed with a key kept nowhere (e.g. its database was lost).
        let lost = DataKey::generate();
        change_sealed_with(&b.db, &lost, "b-1", 2).await;
        change_sealed_with(&b.db, &lost, "b-2", 3).await;

        let err = check_and_repair(&stores(&a, &b), &master, false)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, CheckError::Unopenable { service: "register", found }
                if found == &[Unopenable { agency: AGENCY.into(), table: "idempotency", count: 2 }]),
            "{message}"
        );
        assert!(message.contains("the register database"), "{message}");
        assert!(
            message.contains("2 in table idempotency of agency k"),
            "{message}"
        );
        assert!(message.contains("touchstone keys repair"), "{message}");
        // Nothing was written or recorded: the next start checks again.
        let mut tx = b.db.read(Scope::Agency(AGENCY)).await.unwrap();
        assert!(keyring::stored(&mut tx, AGENCY).await.unwrap().is_none());
        tx.commit().await.unwrap();
        assert!(!proved(&b.db).await.unwrap());
        assert!(!proved(&a.db).await.unwrap());
        // Alone (as `serve` sees it) the database stops the start as well.
        let alone = check_and_repair(&stores(&a, &b)[1..], &master, false).await;
        assert!(matches!(alone, Err(CheckError::Unopenable { .. })));
    }

    #[tokio::test]
    async fn a_key_the_master_key_does_not_unwrap_stops_the_start() {
        let master = MasterKey::generate();
        let (a, b) = two().await;
        let key = first_touch(&a.db, &master).await;
        change_sealed_with(&a.db, &key, "a-1", 1).await;
        check_and_repair(&stores(&a, &b), &master, false)
            .await
            .unwrap();
        let err = check_and_repair(&stores(&a, &b), &MasterKey::generate(), false)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CheckError::WrongMaster { service: "complaints", agency } if agency == AGENCY),
            "{err}"
        );
        assert!(err.to_string().contains("master_key"), "{err}");
    }
}
