//! Audit records: every read or change of personal data is recorded (who,
//! what, when, agency, request id) in the same transaction as the access.

use crate::db::{Db, Inner, Scope, Tx};
use crate::statements::Statements;
use std::sync::Weak;
use tokio::sync::{mpsc, oneshot};
use touchstone_list::{Field, FieldType, ListQuery, Schema};

/// One access to record.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The agency whose data was touched.
    pub agency: &'a str,
    /// Token subject of the caller.
    pub actor: &'a str,
    /// Method name, e.g. "GetClient".
    pub action: &'a str,
    /// Resource name touched.
    pub resource: &'a str,
    /// The caller's request id, or "".
    pub request_id: &'a str,
}

/// Writes one audit record.
pub async fn record(tx: &mut Tx, access: Access<'_>) -> Result<(), sqlx::Error> {
    record_each(tx, access, &[access.resource]).await
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Token subject.
    pub actor: String,
    /// Method name.
    pub action: String,
    /// Resource name.
    pub resource: String,
    /// Request id or "".
    pub request_id: String,
    /// Milliseconds since the epoch.
    pub time: i64,
}

/// Fields of audit records that lists may filter and order on.
pub static AUDIT_SCHEMA: Schema = Schema {
    fields: &[
        Field {
            name: "actor",
            column: "actor",
            ty: FieldType::Text,
            sortable: false,
            nullable: false,
        },
        Field {
            name: "action",
            column: "action",
            ty: FieldType::Text,
            sortable: false,
            nullable: false,
        },
        Field {
            name: "resource",
            column: "resource",
            ty: FieldType::Text,
            sortable: false,
            nullable: false,
        },
        Field {
            name: "time",
            column: "time",
            ty: FieldType::Timestamp,
            sortable: true,
            nullable: false,
        },
    ],
    id_column: "id",
    default_order: "time desc",
};

/// One page of an agency's audit records.
pub async fn list(
    tx: &mut Tx,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<AuditRow>, String), sqlx::Error> {
    let sql = format!(
        "SELECT agency, id, actor, action, resource, request_id, time FROM audit_records \
         WHERE agency = $1 AND ({}) ORDER BY {} LIMIT {}",
        query.where_sql(),
        query.order_sql(),
        query.fetch_limit()
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(agency);
    for p in query.params() {
        q = crate::list_bind(q, p);
    }
    let mut rows = q.fetch_all(tx.conn()).await?;
    let next = query.finish(&mut rows)?;
    let out = rows
        .iter()
        .map(AuditRow::from_any)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out, next))
}

/// Every audit record about one resource (or its children), oldest first.
pub async fn for_resource(
    tx: &mut Tx,
    agency: &str,
    resource: &str,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    // Resource names hold only a-z, 0-9, '-' and '/', so the prefix needs no
    // LIKE escaping.
    let rows = sqlx::query(
        "SELECT agency, id, actor, action, resource, request_id, time FROM audit_records \
         WHERE agency = $1 AND (resource = $2 OR resource LIKE $3) ORDER BY time, id",
    )
    .bind(agency)
    .bind(resource)
    .bind(format!("{resource}/%"))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(AuditRow::from_any).collect()
}

impl AuditRow {
    fn from_any(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(AuditRow {
            agency: row.try_get("agency")?,
            id: row.try_get("id")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            resource: row.try_get("resource")?,
            request_id: row.try_get("request_id")?,
            time: row.try_get("time")?,
        })
    }
}

/// Writes one audit record per resource (e.g. each client a list showed) in
/// as few statements as the databases' parameter limits allow.
pub async fn record_each<S: AsRef<str>>(
    tx: &mut Tx,
    template: Access<'_>,
    resources: &[S],
) -> Result<(), sqlx::Error> {
    let time = crate::times::now_millis();
    let rows: Vec<(Access<'_>, i64)> = resources
        .iter()
        .map(|r| {
            (
                Access {
                    resource: r.as_ref(),
                    ..template
                },
                time,
            )
        })
        .collect();
    insert(tx, &rows).await
}

/// Audit records in one `INSERT`: seven parameters a row stays far below
/// SQLite's and PostgreSQL's limits.
pub(crate) const INSERT_ROWS: usize = 500;

/// Inserts audit records (each with its time), [`INSERT_ROWS`] to a
/// statement.
async fn insert(tx: &mut Tx, rows: &[(Access<'_>, i64)]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(INSERT_ROWS) {
        let mut s = Statements::new(tx.backend());
        push_insert(&mut s, chunk)?;
        s.execute(tx).await?;
    }
    Ok(())
}

/// Adds the statement that inserts `rows` (at most a few hundred) to `s`.
pub(crate) fn push_insert(
    s: &mut Statements,
    rows: &[(Access<'_>, i64)],
) -> Result<(), sqlx::Error> {
    let mut values = Vec::with_capacity(rows.len());
    for (access, time) in rows {
        values.push(format!(
            "({}, {}, {}, {}, {}, {}, {})",
            s.value(access.agency)?,
            s.value(crate::names::new_id())?,
            s.value(access.actor)?,
            s.value(access.action)?,
            s.value(access.resource)?,
            s.value(access.request_id)?,
            s.value(*time)?
        ));
    }
    s.push(format!(
        "INSERT INTO audit_records (agency, id, actor, action, resource, request_id, time) \
         VALUES {}",
        values.join(", ")
    ));
    Ok(())
}

/// Most values bound in a group commit sent as one request (PostgreSQL
/// allows 65,535 to a statement).
const ONE_REQUEST_BOUND: usize = 30_000;

/// Most records written in one group commit.
const BATCH_ROWS: usize = 5_000;
/// Reads waiting for a group commit before callers wait to queue.
const QUEUE: usize = 4_096;

/// One read's records (its access, once per resource), and whom to tell
/// when they are durable.
#[derive(Debug)]
struct Job {
    agency: String,
    actor: String,
    action: String,
    request_id: String,
    resources: Vec<String>,
    time: i64,
    done: oneshot::Sender<Result<(), String>>,
}

/// The group commit of read audit records of one database: a task takes
/// every job waiting, writes them in one transaction (a statement per
/// agency and chunk, each under that agency's row-level security), and
/// answers each job once the transaction has committed. While one batch
/// commits the next gathers, so the batch grows with the load and no read
/// waits for a timer.
#[derive(Debug)]
pub(crate) struct Batch {
    jobs: mpsc::Sender<Job>,
}

impl Batch {
    /// Starts the task; it ends when the database is dropped.
    pub(crate) fn start(db: Weak<Inner>) -> Batch {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, rx));
        Batch { jobs }
    }

    pub(crate) async fn record<S: AsRef<str>>(
        &self,
        t: Access<'_>,
        resources: &[S],
    ) -> Result<(), sqlx::Error> {
        if resources.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let job = Job {
            agency: t.agency.to_string(),
            actor: t.actor.to_string(),
            action: t.action.to_string(),
            request_id: t.request_id.to_string(),
            resources: resources.iter().map(|r| r.as_ref().to_string()).collect(),
            time: crate::times::now_millis(),
            done,
        };
        let gone = || sqlx::Error::Io(std::io::Error::other("the audit group commit has stopped"));
        self.jobs.send(job).await.map_err(|_| gone())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "audit group commit failed: {e}"
            )))),
            Err(_) => Err(gone()),
        }
    }
}

async fn run(db: Weak<Inner>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut rows = first.resources.len();
        let mut jobs = vec![first];
        while rows < BATCH_ROWS {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.resources.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = db.upgrade() else {
            break;
        };
        let result = write(&Db::from_inner(inner), &jobs).await;
        let answer = result.map_err(|e| e.to_string());
        for job in jobs {
            let _ = job.done.send(answer.clone());
        }
    }
}

/// Writes every job's records in one transaction, a run of statements per
/// agency under that agency's row-level security.
async fn write(db: &Db, jobs: &[Job]) -> Result<(), sqlx::Error> {
    let mut by_agency: std::collections::BTreeMap<&str, Vec<(Access<'_>, i64)>> =
        std::collections::BTreeMap::new();
    for job in jobs {
        let rows = by_agency.entry(job.agency.as_str()).or_default();
        for resource in &job.resources {
            let access = Access {
                agency: &job.agency,
                actor: &job.actor,
                action: &job.action,
                resource,
                request_id: &job.request_id,
            };
            rows.push((access, job.time));
        }
    }
    let first = by_agency.keys().next().copied().unwrap_or_default();
    // One request, and on SQLite one hand-off under the writer lock, when
    // every record can go under one scope (on SQLite the scope is not
    // needed; on PostgreSQL, one agency's) and within one request's limits.
    if db.backend() == crate::db::Backend::Sqlite || by_agency.len() == 1 {
        let mut s = Statements::new(db.backend());
        for rows in by_agency.values() {
            for chunk in rows.chunks(INSERT_ROWS) {
                push_insert(&mut s, chunk)?;
            }
        }
        if s.bound() <= ONE_REQUEST_BOUND {
            return db.commit_all(Scope::Agency(first), s, false).await;
        }
    }
    let mut tx = db.write(Scope::Agency(first)).await?;
    for (agency, rows) in &by_agency {
        tx.set_scope(Scope::Agency(agency)).await?;
        insert(&mut tx, rows).await?;
    }
    tx.commit().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::PLATFORM_MIGRATIONS;

    /// Reads audited at once, in one agency and then across three: every
    /// record is stored once, under its own agency (on PostgreSQL
    /// row-level security refuses a record written under another agency's
    /// scope), whichever way its group commit went (one request when one
    /// scope serves, a statement run per agency otherwise).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_are_each_recorded_once_under_their_agency() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let agencies = ["a", "b", "c"];
        for (round, spread) in [(0, 1), (1, agencies.len())] {
            let mut reads = tokio::task::JoinSet::new();
            for i in 0..120usize {
                let db = t.db.clone();
                let agency = agencies[i % spread];
                reads.spawn(async move {
                    let resource = format!("agencies/{agency}/things/{round}-{i}");
                    let access = Access {
                        agency,
                        actor: "reader",
                        action: "GetThing",
                        resource: "",
                        request_id: "",
                    };
                    db.audit_reads(access, &[resource.as_str(), "extra"]).await
                });
            }
            while let Some(done) = reads.join_next().await {
                done.unwrap().unwrap();
            }
        }
        for agency in agencies {
            let mut tx = t.db.read(Scope::Agency(agency)).await.unwrap();
            let (all, own, distinct): (i64, i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), \
                 SUM(CASE WHEN resource LIKE 'agencies/' || $1 || '/%' THEN 1 ELSE 0 END), \
                 COUNT(DISTINCT resource) FROM audit_records \
                 WHERE agency = $1 AND action = 'GetThing' AND resource <> 'extra'",
            )
            .bind(agency)
            .fetch_one(tx.conn())
            .await
            .unwrap();
            tx.commit().await.unwrap();
            let expected = if agency == "a" { 120 + 40 } else { 40 };
            assert_eq!(
                (all, own, distinct),
                (expected, expected, expected),
                "{agency}"
            );
        }
    }
}
