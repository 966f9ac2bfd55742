//! AIP-155 request ids. A state-changing call claims its `request_id` before
//! any change in its write transaction and stores its response before
//! committing, so a retry, even one racing the first call, gets the first
//! response and changes nothing.

use crate::db::{Backend, Opening, Tx, plain_literal};
use crate::statements::Statements;
use prost::Message;
use touchstone_crypto::DataKey;

/// How long a request id is remembered.
pub const RETENTION_MILLIS: i64 = 7 * 24 * 3600 * 1000;

/// What claiming a request id found.
#[derive(Debug)]
pub enum Claim<R> {
    /// First time: go ahead, then call `complete` before committing.
    Fresh,
    /// Seen before with the same request: return this response.
    Replay(R),
    /// Seen before with a different request body.
    Mismatch,
    /// Seen before, but what it created was since erased: the stored
    /// response (personal data) is gone and must not be recreated.
    Forgotten,
    /// No request id was given: no replay protection.
    None,
}

/// Claims `request_id` for `method` in `agency`. `fingerprints` identify the
/// request's content (e.g. a hash of its encoded form) so that reuse of an id
/// for a different request is refused instead of silently replayed: the
/// first is stored, and a stored one matches if it is any of them (one per
/// key of the agency, so requests made under an older key still replay).
pub async fn claim<R: Message + Default>(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    method: &str,
    request_id: &str,
    fingerprints: &[String],
) -> Result<Claim<R>, sqlx::Error> {
    if request_id.is_empty() {
        return Ok(Claim::None);
    }
    let Some(fingerprint) = fingerprints.first() else {
        return Ok(Claim::Mismatch);
    };
    let inserted = claim_opening(tx.backend(), agency, method, request_id, fingerprint)?
        .bound
        .execute(tx)
        .await?;
    resolve(tx, key, agency, method, request_id, fingerprints, inserted).await
}

/// The statement that claims `request_id` (see [`claim`]), to open a write
/// transaction with (see `Db::write_opening`). On PostgreSQL a concurrent
/// duplicate blocks on it, on the primary key, until the first transaction
/// ends, then sees its row.
pub(crate) fn claim_opening(
    backend: Backend,
    agency: &str,
    method: &str,
    request_id: &str,
    fingerprint: &str,
) -> Result<Opening, sqlx::Error> {
    const INSERT: &str = "INSERT INTO idempotency \
         (agency, method, request_id, fingerprint, resource, response, create_time) VALUES";
    let now = crate::times::now_millis();
    let mut bound = Statements::new(backend);
    let sql = format!(
        "{INSERT} ({}, {}, {}, {}, '', NULL, {}) ON CONFLICT DO NOTHING",
        bound.value(agency.to_string())?,
        bound.value(method.to_string())?,
        bound.value(request_id.to_string())?,
        bound.value(fingerprint.to_string())?,
        bound.value(now)?,
    );
    bound.push(sql);
    let literal = match (
        plain_literal(agency),
        plain_literal(method),
        plain_literal(request_id),
        plain_literal(fingerprint),
    ) {
        (Some(a), Some(m), Some(r), Some(f)) => Some(format!(
            "{INSERT} ({a}, {m}, {r}, {f}, '', NULL, {now}) ON CONFLICT DO NOTHING"
        )),
        _ => None,
    };
    Ok(Opening { bound, literal })
}

/// What a claim found, given the rows its insert changed (1: the request id
/// was free, and is now this request's).
pub(crate) async fn resolve<R: Message + Default>(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    method: &str,
    request_id: &str,
    fingerprints: &[String],
    inserted: u64,
) -> Result<Claim<R>, sqlx::Error> {
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT fingerprint, response FROM idempotency \
         WHERE agency = $1 AND method = $2 AND request_id = $3",
    )
    .bind(agency)
    .bind(method)
    .bind(request_id)
    .fetch_optional(tx.conn())
    .await?;
    match row {
        Some((fp, Some(sealed))) if fingerprints.contains(&fp) => {
            let aad = aad(agency, method, request_id);
            // An unreadable stored response is a server fault (corruption or a
            // different master key), not the caller's.
            let bytes = key
                .open(aad.as_bytes(), &sealed)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let response =
                R::decode(bytes.as_slice()).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok(Claim::Replay(response))
        }
        Some((fp, None)) if fingerprints.contains(&fp) => Ok(Claim::Forgotten),
        _ => Ok(Claim::Mismatch),
    }
}

/// Stores the response of a fresh claim, in the same transaction as the change.
/// `resource` names what the response is about (e.g. the client), so that
/// erasing it can also remove the stored response.
pub async fn complete<R: Message>(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    method: &str,
    request_id: &str,
    resource: &str,
    response: &R,
) -> Result<(), sqlx::Error> {
    let mut s = Statements::new(tx.backend());
    push_complete(&mut s, key, agency, method, request_id, resource, response)?;
    s.execute(tx).await.map(drop)
}

/// Adds [`complete`]'s statement to `s` (none without a request id).
pub(crate) fn push_complete<R: Message>(
    s: &mut Statements,
    key: &DataKey,
    agency: &str,
    method: &str,
    request_id: &str,
    resource: &str,
    response: &R,
) -> Result<(), sqlx::Error> {
    if request_id.is_empty() {
        return Ok(());
    }
    let sealed = key.seal(
        aad(agency, method, request_id).as_bytes(),
        &response.encode_to_vec(),
    );
    let sql = format!(
        "UPDATE idempotency SET response = {}, resource = {} \
         WHERE agency = {} AND method = {} AND request_id = {}",
        s.value(sealed)?,
        s.value(resource.to_string())?,
        s.value(agency.to_string())?,
        s.value(method.to_string())?,
        s.value(request_id.to_string())?,
    );
    s.push(sql);
    Ok(())
}

/// Adds to `s` the insert of a request id's record complete with its
/// response, for a change that claims it by this insert alone (see
/// `change::write_new`): it fails with a unique violation when the id was
/// claimed before.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_record<R: Message>(
    s: &mut Statements,
    key: &DataKey,
    agency: &str,
    method: &str,
    request_id: &str,
    fingerprint: &str,
    resource: &str,
    response: &R,
) -> Result<(), sqlx::Error> {
    let sealed = key.seal(
        aad(agency, method, request_id).as_bytes(),
        &response.encode_to_vec(),
    );
    let sql = format!(
        "INSERT INTO idempotency \
         (agency, method, request_id, fingerprint, resource, response, create_time) \
         VALUES ({}, {}, {}, {}, {}, {}, {})",
        s.value(agency.to_string())?,
        s.value(method.to_string())?,
        s.value(request_id.to_string())?,
        s.value(fingerprint.to_string())?,
        s.value(resource.to_string())?,
        s.value(sealed)?,
        s.value(crate::times::now_millis())?,
    );
    s.push(sql);
    Ok(())
}

/// A stable fingerprint of a request message.
pub fn fingerprint<M: Message>(request: &M) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(request.encode_to_vec());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn aad(agency: &str, method: &str, request_id: &str) -> String {
    format!("idempotency/{agency}/{method}/{request_id}")
}

/// Drops the stored responses about `resource` and its children (erasure),
/// keeping the request ids so that a late retry cannot recreate the data.
pub async fn forget_resource(tx: &mut Tx, agency: &str, resource: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency SET response = NULL \
         WHERE agency = $1 AND (resource = $2 OR resource LIKE $3)",
    )
    .bind(agency)
    .bind(resource)
    .bind(format!("{resource}/%"))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Removes request ids older than `retention_millis`, in every agency.
pub async fn purge_expired(db: &crate::db::Db, retention_millis: i64) -> Result<u64, sqlx::Error> {
    let cutoff = crate::times::now_millis() - retention_millis;
    let mut tx = db.write(crate::db::Scope::AllAgencies).await?;
    // Markers of erased resources (response gone, resource named) are kept, so
    // a very late retry still cannot recreate an erased client.
    let n = sqlx::query(
        "DELETE FROM idempotency WHERE create_time < $1 \
         AND NOT (response IS NULL AND resource <> '')",
    )
    .bind(cutoff)
    .execute(tx.conn())
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Purges expired request ids now and then every hour, for as long as the
/// returned task runs (abort it on shutdown).
pub fn spawn_purger(db: crate::db::Db) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            match purge_expired(&db, RETENTION_MILLIS).await {
                Ok(n) => tracing::debug!(purged = n, "expired request ids purged"),
                Err(e) => tracing::warn!(error = %e, "purging expired request ids failed"),
            }
        }
    })
}
