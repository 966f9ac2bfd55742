//! Per-agency data keys for field-level encryption: generated on first use,
//! stored wrapped by the master key in the service's own database, and kept
//! unwrapped in memory only for the life of the process.
//!
//! A keyring belongs to one database (DESIGN §5): its cache holds only keys
//! that are committed in that database, and a key is fetched inside the
//! transaction that uses it. A write transaction that finds no key stores a
//! new one itself, so the key commits with the first value sealed by it and
//! the database can always be read with itself and the master key alone.
//! Services never share a keyring, even in one process (`touchstone up`):
//! a shared cache once let one service seal with a key stored only in
//! another's database.

use crate::db::{Backend, Db, Scope, Tx};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use touchstone_crypto::{DataKey, MasterKey};

/// Why a data key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The stored key does not unwrap with this master key.
    #[error("the agency's data key cannot be unwrapped with the configured master key")]
    Unwrap,
    /// A transaction on another database was passed: a programming error,
    /// refused because a key used there would not be stored here.
    #[error("the transaction is not on this keyring's database")]
    OtherDatabase,
}

/// The master key, the database the keys are stored in, and a cache of the
/// unwrapped keys committed there.
#[derive(Debug)]
pub struct Keyring {
    master: MasterKey,
    db: Db,
    cache: RwLock<HashMap<String, Arc<DataKey>>>,
}

impl Keyring {
    /// A keyring over `master` for the keys stored in `db`.
    pub fn new(master: MasterKey, db: Db) -> Self {
        Self {
            master,
            db,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The master key (for start-up checks and repair).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The data key of `agency`, read in `tx`, which must be on this
    /// keyring's database. In a write transaction a missing key is created
    /// and stored in `tx`, so it commits (or rolls back) with what `tx`
    /// seals. In a read transaction a missing key is created in a short
    /// write transaction of its own, committed before it is returned.
    pub async fn data_key(&self, tx: &mut Tx, agency: &str) -> Result<Arc<DataKey>, KeyError> {
        if !tx.is_on(&self.db) {
            return Err(KeyError::OtherDatabase);
        }
        if let Some(key) = self.cached(agency) {
            return Ok(key);
        }
        if let Some(wrapped) = stored(tx, agency).await? {
            let older = stored_older(tx, agency).await?;
            // Visible to `tx` and not inserted by it (an insert below is
            // never cached): committed, so safe to cache; except in a
            // SQLite write, which may share its group's transaction with a
            // writer that inserted the key and has not committed yet (and
            // whose group may yet fail to): cached only once a read sees it.
            if tx.is_write() && tx.backend() == Backend::Sqlite {
                let key = Arc::new(self.unwrap_all(agency, &wrapped, &older)?);
                if self.committed(agency, &wrapped).await
                    && let Ok(mut cache) = self.cache.write()
                {
                    cache.insert(agency.to_string(), key.clone());
                }
                return Ok(key);
            }
            return self.remember(agency, &wrapped, &older);
        }
        if tx.is_write() {
            let wrapped = create(tx, &self.master, agency).await?;
            // Not cached: it is stored only if `tx` commits. The next
            // transaction reads it back (or creates another if `tx` failed).
            return Ok(Arc::new(self.unwrap(agency, &wrapped)?));
        }
        let mut own = self.db.write(Scope::Agency(agency)).await?;
        let wrapped = create(&mut own, &self.master, agency).await?;
        own.commit().await?;
        self.remember(agency, &wrapped, &[])
    }

    /// The data key of `agency` if it is cached (committed, and so the same
    /// as any transaction would read) and `db` is this keyring's database.
    pub fn cached_key_on(&self, db: &Db, agency: &str) -> Option<Arc<DataKey>> {
        if !self.db.is_same(db) {
            return None;
        }
        self.cached(agency)
    }

    fn cached(&self, agency: &str) -> Option<Arc<DataKey>> {
        self.cache.read().ok().and_then(|c| c.get(agency).cloned())
    }

    fn unwrap(&self, agency: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        DataKey::unwrap(&self.master, agency, wrapped).map_err(|_| KeyError::Unwrap)
    }

    /// Whether `wrapped` is the committed key of `agency`, as a read of its
    /// own sees (at most a second's wait for a connection; no answer is
    /// taken as no).
    async fn committed(&self, agency: &str, wrapped: &[u8]) -> bool {
        let read = async {
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let seen = stored(&mut tx, agency).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(seen)
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), read).await,
            Ok(Ok(Some(seen))) if seen == wrapped
        )
    }

    /// The key and its older keys, unwrapped.
    fn unwrap_all(
        &self,
        agency: &str,
        wrapped: &[u8],
        older: &[Vec<u8>],
    ) -> Result<DataKey, KeyError> {
        let older = older
            .iter()
            .map(|w| self.unwrap(agency, w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.unwrap(agency, wrapped)?.with_older(older))
    }

    fn remember(
        &self,
        agency: &str,
        wrapped: &[u8],
        older: &[Vec<u8>],
    ) -> Result<Arc<DataKey>, KeyError> {
        let key = Arc::new(self.unwrap_all(agency, wrapped, older)?);
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(agency.to_string(), key.clone());
        }
        Ok(key)
    }
}

/// The wrapped key of `agency` that `tx` sees, if any.
pub async fn stored(tx: &mut Tx, agency: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT wrapped_key FROM agency_keys WHERE agency = $1")
        .bind(agency)
        .fetch_optional(tx.conn())
        .await
}

/// The wrapped older keys of `agency` (see [`crate::keycheck`]) that `tx` sees.
pub async fn stored_older(tx: &mut Tx, agency: &str) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT wrapped_key FROM agency_older_keys WHERE agency = $1")
        .bind(agency)
        .fetch_all(tx.conn())
        .await
}

/// Stores a fresh key for `agency` in `tx` unless one is there, and returns
/// what is stored. Two replicas may race to create the key: the first insert
/// wins (on PostgreSQL the second waits for the first to commit) and both use
/// what was stored.
async fn create(tx: &mut Tx, master: &MasterKey, agency: &str) -> Result<Vec<u8>, sqlx::Error> {
    let fresh = DataKey::generate().wrap(master, agency);
    sqlx::query(
        "INSERT INTO agency_keys (agency, wrapped_key, create_time) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(agency)
    .bind(fresh)
    .bind(crate::times::now_millis())
    .execute(tx.conn())
    .await?;
    sqlx::query_scalar("SELECT wrapped_key FROM agency_keys WHERE agency = $1")
        .bind(agency)
        .fetch_one(tx.conn())
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::{PLATFORM_MIGRATIONS, sqlite_url};
    use std::sync::atomic::Ordering;

    /// On SQLite a write that joins a group shares its transaction with
    /// earlier members: it can see a key a member created that is not
    /// committed (and whose group may fail). Such a key is used but not
    /// cached; once committed, a later transaction caches it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_seen_before_its_group_commits_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&sqlite_url(&dir.path().join("k.db")), 4)
            .await
            .unwrap();
        db.migrate(&[&PLATFORM_MIGRATIONS], None).await.unwrap();
        let keys = Arc::new(Keyring::new(MasterKey::generate(), db.clone()));
        let mut creator = db.write(Scope::Agency("a")).await.unwrap();
        let created = keys.data_key(&mut creator, "a").await.unwrap();
        let joiner = {
            let (db, keys) = (db.clone(), keys.clone());
            tokio::spawn(async move {
                // Queued behind the creator: joins its group once the
                // creator has released its part, before the group commits.
                let mut tx = db.write(Scope::Agency("a")).await.unwrap();
                let seen = keys.data_key(&mut tx, "a").await.unwrap();
                let cached = keys.cached_key_on(&db, "a").is_some();
                tx.commit().await.unwrap();
                (seen, cached)
            })
        };
        while db.inner.stats.writers_queued.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        let committed = tokio::spawn(creator.commit());
        let (seen, cached) = joiner.await.unwrap();
        committed.await.unwrap().unwrap();
        let text = b"sealed by the creator";
        let sealed = created.seal(b"aad", text);
        assert_eq!(seen.open(b"aad", &sealed).unwrap(), text, "the same key");
        assert!(!cached, "not cached while its group had not committed");
        let mut tx = db.read(Scope::Agency("a")).await.unwrap();
        keys.data_key(&mut tx, "a").await.unwrap();
        tx.commit().await.unwrap();
        assert!(
            keys.cached_key_on(&db, "a").is_some(),
            "cached once committed"
        );
    }
}
