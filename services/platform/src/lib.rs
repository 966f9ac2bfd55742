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
pub mod keycheck;
pub mod keyring;
pub mod metrics;
pub mod names;
pub mod outbox;
pub mod statements;
pub mod testing;
pub mod times;

pub use touchstone_auth as auth;
pub use touchstone_crypto as crypto;
pub use touchstone_list as list;

/// The `Channel` enum's values as list filters name them (`channel = PHONE`).
pub const CHANNELS: &[(&str, i64)] = &[
    ("WEB", 1),
    ("PHONE", 2),
    ("EMAIL", 3),
    ("IN_PERSON", 4),
    ("LETTER", 5),
    ("SOCIAL_MEDIA", 6),
    ("SMS", 7),
    ("APP", 8),
    ("REFERRAL", 9),
];

/// A listable field stored in a NOT NULL column.
pub const fn list_field(
    name: &'static str,
    column: &'static str,
    ty: list::FieldType,
    sortable: bool,
) -> list::Field {
    list::Field {
        name,
        column,
        ty,
        sortable,
        nullable: false,
    }
}

/// Reads one page of a List over `table`'s rows of `agency`: `columns` must
/// include the query's sort keys. Returns the rows and the next page's token.
pub async fn list_page(
    tx: &mut db::Tx,
    columns: &str,
    table: &str,
    agency: &str,
    query: &list::ListQuery,
) -> Result<(Vec<sqlx::any::AnyRow>, String), sqlx::Error> {
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE agency = $1 AND ({}) ORDER BY {} LIMIT {}",
        query.where_sql(),
        query.order_sql(),
        query.fetch_limit()
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(agency);
    for p in query.params() {
        q = list_bind(q, p);
    }
    let mut rows = q.fetch_all(tx.conn()).await?;
    let next = query.finish(&mut rows)?;
    Ok((rows, next))
}

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

#[cfg(test)]
mod tests {
    use touchstone_api::common::v1::Channel;

    #[test]
    fn channel_filter_names_follow_the_proto_enum() {
        for (name, value) in super::CHANNELS {
            let parsed = Channel::from_str_name(&format!("CHANNEL_{name}"));
            assert_eq!(parsed.map(|c| c as i64), Some(*value), "{name}");
        }
        let highest = super::CHANNELS.iter().map(|(_, v)| *v).max();
        assert!(Channel::try_from(highest.unwrap_or(0) as i32 + 1).is_err());
    }
}
