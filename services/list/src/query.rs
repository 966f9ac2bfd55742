//! Planning one page of a List RPC: the WHERE/ORDER BY fragments, bound values and the
//! keyset position to resume from, plus producing the next page token from fetched rows.

use std::fmt::Write as _;

use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{Row as _, ValueRef as _};

use crate::order::{self, KeyKind, SortKey};
use crate::schema::{Schema, SqlValue};
use crate::token::{self, Fingerprint};
use crate::{ListError, filter};

/// The list-related fields of a List request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListParams<'a> {
    pub filter: &'a str,
    pub order_by: &'a str,
    pub page_size: i32,
    pub page_token: &'a str,
}

/// Collects bound values and hands out their placeholders.
#[derive(Debug)]
pub(crate) struct SqlBuilder {
    first: usize,
    params: Vec<SqlValue>,
}

impl SqlBuilder {
    pub(crate) fn new(first: usize) -> Self {
        Self {
            first,
            params: Vec::new(),
        }
    }

    pub(crate) fn bind(&mut self, value: SqlValue) -> String {
        let n = self.first + self.params.len();
        self.params.push(value);
        format!("${n}")
    }

    pub(crate) fn into_params(self) -> Vec<SqlValue> {
        self.params
    }
}

/// A planned page query. `scope` is anything that identifies the collection (e.g. the parent
/// name and the caller's agency); it is part of the query fingerprint that page tokens are
/// bound to.
#[derive(Debug)]
pub struct ListQuery {
    where_sql: String,
    order_sql: String,
    params: Vec<SqlValue>,
    page_size: usize,
    keys: Vec<SortKey>,
    fingerprint: Fingerprint,
}

impl ListQuery {
    /// Validates the request and plans the page. Placeholders start at `$first_param` so the
    /// caller can bind its own values (parent, agency) as `$1..` first; 0 is treated as 1.
    pub fn plan(
        schema: &'static Schema,
        scope: &str,
        params: &ListParams<'_>,
        first_param: usize,
    ) -> Result<ListQuery, ListError> {
        let page_size = crate::page_size(params.page_size)?;
        let filter = filter::parse(schema, params.filter)?;
        let keys = if params.order_by.trim().is_empty() {
            order::parse(schema, schema.default_order)?
        } else {
            order::parse(schema, params.order_by)?
        };

        let mut filter_norm = String::new();
        if let Some(f) = &filter {
            f.write_normalised(&mut filter_norm);
        }
        let order_norm = order::normalised(&keys);
        let fingerprint = token::fingerprint(scope, &filter_norm, &order_norm);
        let after = if params.page_token.is_empty() {
            None
        } else {
            Some(token::decode(params.page_token, &fingerprint, &keys)?)
        };

        let mut b = SqlBuilder::new(first_param.max(1));
        let mut where_sql = String::new();
        if let Some(f) = &filter {
            f.write_sql(&mut where_sql, &mut b);
        }
        if let Some(after) = after {
            if !where_sql.is_empty() {
                where_sql.push_str(" AND ");
            }
            write_keyset(&mut where_sql, &keys, after, &mut b);
        }
        if where_sql.is_empty() {
            where_sql.push_str("1=1");
        }

        let order_sql = keys
            .iter()
            .map(|k| format!("{} {}", k.expr(), k.direction()))
            .collect::<Vec<_>>()
            .join(", ");

        Ok(ListQuery {
            where_sql,
            order_sql,
            params: b.into_params(),
            page_size,
            keys,
            fingerprint,
        })
    }

    /// SQL boolean expression (filter AND keyset condition), or "1=1"; uses placeholders
    /// `$first_param`, `$first_param+1`, ... It is either a single comparison or
    /// parenthesised, so it can be joined to other conditions with AND.
    pub fn where_sql(&self) -> &str {
        &self.where_sql
    }

    /// e.g. "update_time DESC, id ASC" (with COALESCE for nullable sort keys).
    pub fn order_sql(&self) -> &str {
        &self.order_sql
    }

    pub fn params(&self) -> &[SqlValue] {
        &self.params
    }

    /// page_size + 1: fetch one extra row to know whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::try_from(self.page_size)
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Result column names [`ListQuery::finish`] reads from each row (sort key columns without
    /// any `table.` qualifier, id last unless ordered by explicitly); the SELECT must include
    /// them under these names.
    pub fn sort_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys.iter().map(SortKey::result_name)
    }

    /// Binds [`ListQuery::params`] in order, after any values already bound.
    pub fn bind<'q>(
        &self,
        mut query: Query<'q, Any, AnyArguments>,
    ) -> Query<'q, Any, AnyArguments> {
        for p in &self.params {
            query = match p {
                SqlValue::Int(i) => query.bind(*i),
                SqlValue::Text(s) => query.bind(s.clone()),
                SqlValue::Bool(b) => query.bind(*b),
            };
        }
        query
    }

    /// [`ListQuery::bind`] for `sqlx::query_as`.
    pub fn bind_as<'q, O>(
        &self,
        mut query: QueryAs<'q, Any, O, AnyArguments>,
    ) -> QueryAs<'q, Any, O, AnyArguments> {
        for p in &self.params {
            query = match p {
                SqlValue::Int(i) => query.bind(*i),
                SqlValue::Text(s) => query.bind(s.clone()),
                SqlValue::Bool(b) => query.bind(*b),
            };
        }
        query
    }

    /// Given the fetched rows (at most fetch_limit), truncates to page_size and returns the
    /// next_page_token ("" when this is the last page). Reads the sort key columns from the
    /// last kept row by column name (select them with their column names).
    pub fn finish(&self, rows: &mut Vec<AnyRow>) -> Result<String, sqlx::Error> {
        if rows.len() <= self.page_size {
            return Ok(String::new());
        }
        rows.truncate(self.page_size);
        let Some(last) = rows.last() else {
            return Ok(String::new());
        };
        let values = self
            .keys
            .iter()
            .map(|k| read_key(last, k))
            .collect::<Result<Vec<_>, _>>()?;
        token::encode(&self.fingerprint, &values).map_err(|e| sqlx::Error::Encode(Box::new(e)))
    }
}

/// Appends the "row sorts strictly after `after`" condition, nested as
/// `k1 > v1 OR (k1 = v1 AND (k2 > v2 OR (k2 = v2 AND ...)))` with `<` for descending keys.
/// Each value is bound once and its placeholder reused.
fn write_keyset(out: &mut String, keys: &[SortKey], after: Vec<SqlValue>, b: &mut SqlBuilder) {
    let placeholders: Vec<String> = after.into_iter().map(|v| b.bind(v)).collect();
    let parts: Vec<(String, &'static str, &String)> = keys
        .iter()
        .zip(&placeholders)
        .map(|(k, p)| (k.expr(), if k.desc { "<" } else { ">" }, p))
        .collect();
    let mut cond = String::new();
    for (i, (expr, op, p)) in parts.iter().enumerate().rev() {
        cond = if i + 1 == parts.len() {
            format!("{expr} {op} {p}")
        } else {
            format!("({expr} {op} {p} OR ({expr} = {p} AND {cond}))")
        };
    }
    let _ = write!(out, "{cond}");
}

fn read_key(row: &AnyRow, key: &SortKey) -> Result<SqlValue, sqlx::Error> {
    let name = key.result_name();
    let value = match key.kind {
        KeyKind::Int => row.try_get::<Option<i64>, _>(name)?.map(SqlValue::Int),
        KeyKind::Text => row.try_get::<Option<String>, _>(name)?.map(SqlValue::Text),
        KeyKind::Bool => read_bool(row, name)?.map(SqlValue::Bool),
    };
    match value {
        Some(v) => Ok(v),
        None if key.nullable => Ok(key.null_value()),
        // Without COALESCE a NULL key compares as unknown and the next page would lose rows.
        None => Err(sqlx::Error::ColumnDecode {
            index: name.to_owned(),
            source: "NULL in a sort column declared non-nullable".into(),
        }),
    }
}

/// SQLite has no boolean storage class, so its booleans arrive as integers.
fn read_bool(row: &AnyRow, column: &str) -> Result<Option<bool>, sqlx::Error> {
    let raw = row.try_get_raw(column)?;
    if raw.is_null() {
        return Ok(None);
    }
    if raw.type_info().kind().is_integer() {
        Ok(Some(row.try_get::<i64, _>(column)? != 0))
    } else {
        row.try_get::<bool, _>(column).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Field, FieldType};

    const STATES: &[(&str, i64)] = &[("OPEN", 1), ("CLOSED", 2)];
    static SCHEMA: Schema = Schema {
        fields: &[
            Field {
                name: "update_time",
                column: "update_time",
                ty: FieldType::Timestamp,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "priority",
                column: "priority",
                ty: FieldType::Integer,
                sortable: true,
                nullable: true,
            },
            Field {
                name: "state",
                column: "state",
                ty: FieldType::Enum(STATES),
                sortable: true,
                nullable: false,
            },
        ],
        id_column: "id",
        default_order: "update_time desc",
    };

    fn params<'a>(filter: &'a str, order_by: &'a str, page_token: &'a str) -> ListParams<'a> {
        ListParams {
            filter,
            order_by,
            page_size: 10,
            page_token,
        }
    }

    fn token_for(q: &ListQuery, values: &[SqlValue]) -> String {
        token::encode(&q.fingerprint, values).expect("encode")
    }

    #[test]
    fn first_page() {
        let q = ListQuery::plan(&SCHEMA, "s", &params("", "", ""), 1).expect("plan");
        assert_eq!(q.where_sql(), "1=1");
        assert_eq!(q.order_sql(), "update_time DESC, id ASC");
        assert!(q.params().is_empty());
        assert_eq!(q.fetch_limit(), 11);
        assert_eq!(q.page_size(), 10);
        assert_eq!(q.sort_columns().collect::<Vec<_>>(), ["update_time", "id"]);
    }

    #[test]
    fn keyset_snapshot() {
        let p = params("state = OPEN", "priority desc, update_time", "");
        let q = ListQuery::plan(&SCHEMA, "s", &p, 3).expect("plan");
        assert_eq!(q.where_sql(), "state = $3");
        assert_eq!(
            q.order_sql(),
            "COALESCE(priority, 9223372036854775807) DESC, update_time ASC, id ASC"
        );
        let token = token_for(
            &q,
            &[
                SqlValue::Int(5),
                SqlValue::Int(1000),
                SqlValue::Text("01J".into()),
            ],
        );
        let p = params(" state=open ", "priority  DESC,update_time asc", &token);
        let q = ListQuery::plan(&SCHEMA, "s", &p, 3).expect("plan with token");
        assert_eq!(
            q.where_sql(),
            "state = $3 AND (COALESCE(priority, 9223372036854775807) < $4 OR \
             (COALESCE(priority, 9223372036854775807) = $4 AND \
             (update_time > $5 OR (update_time = $5 AND id > $6))))"
        );
        assert_eq!(
            q.params(),
            [
                SqlValue::Int(1),
                SqlValue::Int(5),
                SqlValue::Int(1000),
                SqlValue::Text("01J".into())
            ]
        );
    }

    #[test]
    fn keyset_without_filter_and_page_size_may_change() {
        let q = ListQuery::plan(&SCHEMA, "s", &params("", "", ""), 1).expect("plan");
        let token = token_for(&q, &[SqlValue::Int(7), SqlValue::Text("x".into())]);
        let mut p = params("", "update_time desc", &token);
        p.page_size = 500;
        let q = ListQuery::plan(&SCHEMA, "s", &p, 1).expect("plan");
        assert_eq!(
            q.where_sql(),
            "(update_time < $1 OR (update_time = $1 AND id > $2))"
        );
        assert_eq!(q.page_size(), 500);
    }

    #[test]
    fn token_bound_to_scope_filter_and_order() {
        let q = ListQuery::plan(&SCHEMA, "s", &params("state = OPEN", "", ""), 1).expect("plan");
        let token = token_for(&q, &[SqlValue::Int(7), SqlValue::Text("x".into())]);
        for (scope, filter, order_by) in [
            ("other", "state = OPEN", ""),
            ("s", "state = CLOSED", ""),
            ("s", "", ""),
            ("s", "state = OPEN", "update_time"),
        ] {
            let e = ListQuery::plan(&SCHEMA, scope, &params(filter, order_by, &token), 1)
                .expect_err("mismatch");
            assert_eq!(e.field, "page_token");
        }
        let e = ListQuery::plan(&SCHEMA, "s", &params("", "", "garbage"), 1).expect_err("bad");
        assert_eq!(e.field, "page_token");
    }

    #[test]
    fn errors_name_the_request_field() {
        let mut p = params("", "", "");
        p.page_size = -1;
        assert_eq!(
            ListQuery::plan(&SCHEMA, "s", &p, 1).expect_err("neg").field,
            "page_size"
        );
        assert_eq!(
            ListQuery::plan(&SCHEMA, "s", &params("x = 1", "", ""), 1)
                .expect_err("f")
                .field,
            "filter"
        );
        assert_eq!(
            ListQuery::plan(&SCHEMA, "s", &params("", "x", ""), 1)
                .expect_err("o")
                .field,
            "order_by"
        );
    }
}
