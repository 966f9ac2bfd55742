//! Writes to different tables that need nothing from each other, sent to the
//! database as one request: on SQLite one call on the connection's thread
//! (sqlx runs a string of statements in turn, each taking its anonymous
//! parameters in order), on PostgreSQL one statement whose other parts are
//! data-modifying `WITH` clauses, so one round trip. Every change ends with
//! such writes (its audit record, its stored response, its outbox events);
//! made one by one they cost a hand-off each to SQLite's connection thread
//! while the writer lock is held, or a round trip each to PostgreSQL.
//!
//! The parts run in one statement's snapshot on PostgreSQL: none may read
//! what another writes. A failure of any part fails the whole.

use crate::db::{Backend, Tx};
use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Encode, Executor, Type};

/// Statements to send as one (see the module's documentation).
pub struct Statements {
    backend: Backend,
    parts: Vec<String>,
    args: AnyArguments,
    bound: usize,
}

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements")
            .field("parts", &self.parts)
            .field("bound", &self.bound)
            .finish()
    }
}

impl Statements {
    /// No statements yet, for `backend`.
    pub fn new(backend: Backend) -> Statements {
        Statements {
            backend,
            parts: Vec::new(),
            args: AnyArguments::default(),
            bound: 0,
        }
    }

    /// Binds `value` and returns its placeholder. Values must be bound in
    /// the order their placeholders appear in the statements pushed (SQLite
    /// takes anonymous parameters in order): build each statement with
    /// `format!` whose arguments are the calls to `value`, in order.
    pub fn value<'q, T>(&mut self, value: T) -> Result<String, sqlx::Error>
    where
        T: Encode<'q, Any> + Type<Any> + 'q,
    {
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        self.bound += 1;
        Ok(self.backend.param(self.bound))
    }

    /// Adds a statement (an `INSERT`, `UPDATE` or `DELETE` without
    /// `RETURNING`) whose placeholders came from [`Statements::value`].
    pub fn push(&mut self, sql: String) {
        self.parts.push(sql);
    }

    /// The database the statements are for.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many values are bound so far.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Whether no statement was pushed.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The request sent: on SQLite the statements in turn; on PostgreSQL
    /// the last one, the others as `WITH` clauses before it.
    fn sql(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.parts.join(";\n"),
            Backend::Postgres => {
                let Some((last, before)) = self.parts.split_last() else {
                    return String::new();
                };
                if before.is_empty() {
                    return last.clone();
                }
                let clauses: Vec<String> = before
                    .iter()
                    .enumerate()
                    .map(|(i, part)| format!("w{i} AS ({part})"))
                    .collect();
                format!("WITH {} {last}", clauses.join(", "))
            }
        }
    }

    /// Sends the statements in `tx`, as one request; returns the rows they
    /// changed, together.
    pub async fn execute(self, tx: &mut Tx) -> Result<u64, sqlx::Error> {
        if self.parts.is_empty() {
            return Ok(0);
        }
        let sql = self.sql();
        Ok(tx
            .conn()
            .execute(sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args))
            .await?
            .rows_affected())
    }

    /// On SQLite: `opening` (statements without parameters, such as
    /// `SAVEPOINT`), then these statements, in one call on `conn`'s
    /// thread; returns the rows the last statement changed. (Not summed
    /// over all: SQLite reports for `BEGIN IMMEDIATE` the rows of the
    /// connection's previous change.)
    pub(crate) async fn execute_sqlite_after(
        self,
        opening: &str,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<u64, sqlx::Error> {
        debug_assert_eq!(self.backend, Backend::Sqlite);
        let sql = if self.parts.is_empty() {
            opening.to_string()
        } else {
            format!("{opening};\n{}", self.sql())
        };
        let mut results = conn.execute_many(sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args));
        let mut last = 0;
        while let Some(result) = futures::StreamExt::next(&mut results).await {
            last = result?.rows_affected();
        }
        Ok(last)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::Access;
    use crate::db::{PLATFORM_MIGRATIONS, Scope};
    use crate::outbox::Pending;

    fn access(resource: &str) -> Access<'_> {
        Access {
            agency: "a",
            actor: "someone",
            action: "Test",
            resource,
            request_id: "",
        }
    }

    /// Counted as agency `a` (row-level security is in force on PostgreSQL).
    async fn count(t: &crate::testing::TestDb, sql: &'static str) -> i64 {
        let mut tx = t.db.read(Scope::Agency("a")).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(tx.conn()).await.unwrap();
        tx.commit().await.unwrap();
        n
    }

    /// On the database under test: the parts all take effect, each with its
    /// own values; and when one part fails, the others are rolled back with
    /// the transaction, not left half done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_parts_run_together_and_fail_together() {
        let t = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        let event = Pending::new(&prost_types::Timestamp {
            seconds: 7,
            nanos: 0,
        });
        let mut tx = t.db.write(Scope::Agency("a")).await.unwrap();
        let mut s = Statements::new(tx.backend());
        crate::audit::push_insert(
            &mut s,
            &[(access("agencies/a/x/1"), 1), (access("agencies/a/x/2"), 2)],
        )
        .unwrap();
        crate::outbox::push_append(
            &mut s,
            "a",
            &[("agencies/a/x/1", &event), ("agencies/a/x/2", &event)],
        )
        .unwrap();
        s.execute(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            count(
                &t,
                "SELECT COUNT(*) FROM audit_records WHERE resource LIKE 'agencies/a/x/%'"
            )
            .await,
            2
        );
        assert_eq!(
            count(
                &t,
                "SELECT COUNT(*) FROM events WHERE name LIKE 'agencies/a/x/%'"
            )
            .await,
            2
        );
        let mut tx = t.db.read(Scope::Agency("a")).await.unwrap();
        let times: Vec<i64> = sqlx::query_scalar(
            "SELECT time FROM audit_records WHERE resource LIKE 'agencies/a/x/%' ORDER BY resource",
        )
        .fetch_all(tx.conn())
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(times, vec![1, 2], "each row keeps its own values");

        // The last part fails (its event's agency is NULL): nothing of the
        // request stays.
        let mut tx = t.db.write(Scope::Agency("a")).await.unwrap();
        let mut s = Statements::new(tx.backend());
        crate::audit::push_insert(&mut s, &[(access("agencies/a/y/1"), 3)]).unwrap();
        let v = s.value(Option::<String>::None).unwrap();
        s.push(format!(
            "INSERT INTO events (agency, type, name, occurred_time, payload) VALUES ({v}, 't', 'n', 0, NULL)"
        ));
        assert!(s.execute(&mut tx).await.is_err());
        drop(tx);
        let mut tx = t.db.write(Scope::Agency("a")).await.unwrap();
        crate::audit::record(&mut tx, access("agencies/a/z/1"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            count(
                &t,
                "SELECT COUNT(*) FROM audit_records WHERE resource LIKE 'agencies/a/y/%'"
            )
            .await,
            0,
            "the failed request's first part was rolled back"
        );
        assert_eq!(
            count(
                &t,
                "SELECT COUNT(*) FROM audit_records WHERE resource LIKE 'agencies/a/z/%'"
            )
            .await,
            1
        );
    }

    #[test]
    fn postgres_sends_the_others_as_with_clauses() {
        let mut s = Statements::new(Backend::Postgres);
        let a = s.value(1i64).unwrap();
        s.push(format!("INSERT INTO a (x) VALUES ({a})"));
        let (b, c) = (s.value("b").unwrap(), s.value(2i64).unwrap());
        s.push(format!("UPDATE b SET y = {b} WHERE z = {c}"));
        let d = s.value("d").unwrap();
        s.push(format!("INSERT INTO d (x) VALUES ({d})"));
        assert_eq!(
            s.sql(),
            "WITH w0 AS (INSERT INTO a (x) VALUES ($1)), w1 AS (UPDATE b SET y = $2 WHERE z = $3) \
             INSERT INTO d (x) VALUES ($4)"
        );
        let mut one = Statements::new(Backend::Postgres);
        let v = one.value(1i64).unwrap();
        one.push(format!("INSERT INTO a (x) VALUES ({v})"));
        assert_eq!(one.sql(), "INSERT INTO a (x) VALUES ($1)");
    }

    #[test]
    fn sqlite_sends_them_in_turn_with_anonymous_parameters() {
        let mut s = Statements::new(Backend::Sqlite);
        let a = s.value(1i64).unwrap();
        s.push(format!("INSERT INTO a (x) VALUES ({a})"));
        let b = s.value("b").unwrap();
        s.push(format!("INSERT INTO b (y) VALUES ({b})"));
        assert_eq!(
            s.sql(),
            "INSERT INTO a (x) VALUES (?);\nINSERT INTO b (y) VALUES (?)"
        );
    }
}
