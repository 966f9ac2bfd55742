//! Per-agency data keys for field-level encryption: generated on first use,
//! stored wrapped by the master key in the service's own database, and kept
//! unwrapped in memory only for the life of the process.

use crate::db::{Db, Scope};
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
}

/// The master key and a cache of unwrapped agency keys.
#[derive(Debug)]
pub struct Keyring {
    master: MasterKey,
    cache: RwLock<HashMap<String, Arc<DataKey>>>,
}

impl Keyring {
    /// A keyring over `master`.
    pub fn new(master: MasterKey) -> Self {
        Self {
            master,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The data key of `agency`, creating it on first use. Call it before
    /// opening a write transaction: on SQLite it may need the writer's turn.
    pub async fn data_key(&self, db: &Db, agency: &str) -> Result<Arc<DataKey>, KeyError> {
        if let Some(key) = self.cache.read().ok().and_then(|c| c.get(agency).cloned()) {
            return Ok(key);
        }
        let mut tx = db.read(Scope::Agency(agency)).await?;
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT wrapped_key FROM agency_keys WHERE agency = $1")
                .bind(agency)
                .fetch_optional(tx.conn())
                .await?;
        tx.commit().await?;
        let wrapped = match stored {
            Some(w) => w,
            None => {
                let mut tx = db.write(Scope::Agency(agency)).await?;
                let fresh = DataKey::generate().wrap(&self.master, agency);
                // Two replicas may race to create the key: the first insert
                // wins and both use what was stored.
                sqlx::query(
                    "INSERT INTO agency_keys (agency, wrapped_key, create_time) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(agency)
                .bind(fresh)
                .bind(crate::times::now_millis())
                .execute(tx.conn())
                .await?;
                let w: Vec<u8> =
                    sqlx::query_scalar("SELECT wrapped_key FROM agency_keys WHERE agency = $1")
                        .bind(agency)
                        .fetch_one(tx.conn())
                        .await?;
                tx.commit().await?;
                w
            }
        };
        let key = Arc::new(
            DataKey::unwrap(&self.master, agency, &wrapped).map_err(|_| KeyError::Unwrap)?,
        );
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(agency.to_string(), key.clone());
        }
        Ok(key)
    }
}
