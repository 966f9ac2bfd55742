//! What every Touchstone service shares: configuration, errors, storage (one
//! pool type for SQLite and PostgreSQL, migrations, tenant scoping), idempotency
//! records, audit records, the outbox change feed, field-level encryption keys,
//! resource names and times.

pub mod audit;
pub mod change;
pub mod config;
pub mod consumer;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod keyring;
pub mod names;
pub mod outbox;
pub mod testing;
pub mod times;

pub use touchstone_auth as auth;
pub use touchstone_crypto as crypto;
pub use touchstone_list as list;

/// Binds one list parameter to a query.
pub fn list_bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    value: &list::SqlValue,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match value {
        list::SqlValue::Int(i) => q.bind(*i),
        list::SqlValue::Text(s) => q.bind(s.clone()),
        list::SqlValue::Bool(b) => q.bind(*b),
    }
}

/// Reads a boolean column: PostgreSQL stores BOOLEAN, SQLite stores 0 or 1
/// (the `Any` driver cannot decode SQLite's BOOLEAN affinity).
pub fn row_bool(row: &sqlx::any::AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    match row.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}
