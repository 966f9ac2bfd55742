//! AIP-132 `order_by` parsing into sort keys, and the SQL expression each key sorts on.

use crate::schema::{FieldType, Schema, SqlValue};
use crate::{ListError, snippet};

const MAX_ORDER_BY_CHARS: usize = 1000;

/// Sentinel that NULL text sorts as: the highest Unicode scalar value, so NULLs sort after
/// real text under SQLite's binary collation (and consistently somewhere under any Postgres
/// collation, which is all keyset pagination needs).
pub(crate) const TEXT_NULL_SENTINEL: &str = "\u{10FFFF}";

/// How a key's value travels in a page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Int,
    Text,
    Bool,
}

#[derive(Debug, Clone)]
pub(crate) struct SortKey {
    pub(crate) column: &'static str,
    pub(crate) kind: KeyKind,
    pub(crate) nullable: bool,
    pub(crate) desc: bool,
}

impl SortKey {
    /// The expression used in both ORDER BY and the keyset condition; they must agree or
    /// pages would skip or repeat rows. NULLs are mapped to a sentinel so they have a
    /// definite place in the order on both SQLite and PostgreSQL (whose NULL placement differs).
    pub(crate) fn expr(&self) -> String {
        if !self.nullable {
            return self.column.to_owned();
        }
        let sentinel = match self.kind {
            KeyKind::Int => i64::MAX.to_string(),
            KeyKind::Text => format!("'{TEXT_NULL_SENTINEL}'"),
            KeyKind::Bool => "TRUE".to_owned(),
        };
        format!("COALESCE({}, {sentinel})", self.column)
    }

    /// The value a NULL in this key's column stands for, matching [`SortKey::expr`].
    pub(crate) fn null_value(&self) -> SqlValue {
        match self.kind {
            KeyKind::Int => SqlValue::Int(i64::MAX),
            KeyKind::Text => SqlValue::Text(TEXT_NULL_SENTINEL.to_owned()),
            KeyKind::Bool => SqlValue::Bool(true),
        }
    }

    /// Name of the result column holding this key: the column without any table qualifier,
    /// which is what a `SELECT t.col` row is keyed by.
    pub(crate) fn result_name(&self) -> &'static str {
        self.column.rsplit('.').next().unwrap_or(self.column)
    }

    pub(crate) fn direction(&self) -> &'static str {
        if self.desc { "DESC" } else { "ASC" }
    }
}

/// Parses `field [asc|desc], ...` and appends the id tie-breaker so the order is total.
pub(crate) fn parse(schema: &Schema, input: &str) -> Result<Vec<SortKey>, ListError> {
    if input.chars().nth(MAX_ORDER_BY_CHARS).is_some() {
        return Err(ListError::order_by(format!(
            "order_by is longer than {MAX_ORDER_BY_CHARS} characters"
        )));
    }
    let mut keys: Vec<SortKey> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for item in input.split(',') {
        let mut words = item.split_whitespace();
        let Some(name) = words.next() else {
            return Err(ListError::order_by(
                "empty item; expected \"field\" or \"field desc\" separated by commas",
            ));
        };
        let desc = match words.next() {
            None => false,
            Some(d) if d.eq_ignore_ascii_case("asc") => false,
            Some(d) if d.eq_ignore_ascii_case("desc") => true,
            Some(d) => {
                return Err(ListError::order_by(format!(
                    "expected asc or desc after {}, got {}",
                    snippet(name),
                    snippet(d)
                )));
            }
        };
        if let Some(extra) = words.next() {
            return Err(ListError::order_by(format!(
                "unexpected {} after {}; separate fields with commas",
                snippet(extra),
                snippet(item.trim())
            )));
        }
        let sortable = || {
            schema
                .fields
                .iter()
                .filter(|f| f.sortable)
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(field) = schema.field(name) else {
            return Err(ListError::order_by(format!(
                "unknown field {}; sortable fields are: {}",
                snippet(name),
                sortable()
            )));
        };
        if !field.sortable {
            return Err(ListError::order_by(format!(
                "field {} is not sortable; sortable fields are: {}",
                field.name,
                sortable()
            )));
        }
        if names.contains(&field.name) {
            return Err(ListError::order_by(format!(
                "field {} appears more than once",
                field.name
            )));
        }
        names.push(field.name);
        let kind = match field.ty {
            FieldType::Text => KeyKind::Text,
            FieldType::Bool => KeyKind::Bool,
            FieldType::Integer
            | FieldType::Timestamp
            | FieldType::TimestampOrNever
            | FieldType::Date
            | FieldType::Enum(_)
            | FieldType::Passed => KeyKind::Int,
        };
        keys.push(SortKey {
            column: field.column,
            kind,
            // The id column is unique and non-null whatever the field declares.
            nullable: field.nullable && field.column != schema.id_column,
            desc,
        });
    }
    if !keys.iter().any(|k| k.column == schema.id_column) {
        keys.push(SortKey {
            column: schema.id_column,
            kind: KeyKind::Text,
            nullable: false,
            desc: false,
        });
    }
    Ok(keys)
}

/// Canonical form for the page-token fingerprint.
pub(crate) fn normalised(keys: &[SortKey]) -> String {
    keys.iter()
        .map(|k| format!("{} {}", k.expr(), k.direction()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;

    static SCHEMA: Schema = Schema {
        fields: &[
            Field {
                name: "name",
                column: "id",
                ty: FieldType::Text,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "update_time",
                column: "update_time",
                ty: FieldType::Timestamp,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "title",
                column: "title",
                ty: FieldType::Text,
                sortable: true,
                nullable: true,
            },
            Field {
                name: "priority",
                column: "priority",
                ty: FieldType::Integer,
                sortable: true,
                nullable: true,
            },
            Field {
                name: "urgent",
                column: "urgent",
                ty: FieldType::Bool,
                sortable: true,
                nullable: true,
            },
            Field {
                name: "notes",
                column: "notes",
                ty: FieldType::Text,
                sortable: false,
                nullable: true,
            },
        ],
        id_column: "id",
        default_order: "update_time desc",
    };

    fn order(input: &str) -> String {
        let keys = parse(&SCHEMA, input).unwrap_or_else(|e| panic!("{input}: {e}"));
        keys.iter()
            .map(|k| format!("{} {}", k.expr(), k.direction()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn err(input: &str) -> String {
        let e = parse(&SCHEMA, input).expect_err(input);
        assert_eq!(e.field, "order_by");
        e.description
    }

    #[test]
    fn parses_directions_and_appends_id() {
        assert_eq!(order("update_time desc"), "update_time DESC, id ASC");
        assert_eq!(
            order("  update_time   DESC ,priority"),
            "update_time DESC, COALESCE(priority, 9223372036854775807) ASC, id ASC"
        );
        assert_eq!(
            order("title asc, urgent desc"),
            "COALESCE(title, '\u{10FFFF}') ASC, COALESCE(urgent, TRUE) DESC, id ASC"
        );
    }

    #[test]
    fn explicit_id_is_not_duplicated() {
        assert_eq!(order("name desc"), "id DESC");
        assert_eq!(
            order("priority, name"),
            "COALESCE(priority, 9223372036854775807) ASC, id ASC"
        );
    }

    #[test]
    fn errors() {
        assert!(err("nope").contains("unknown field \"nope\""));
        assert!(err("notes").contains("field notes is not sortable"));
        assert!(err("update_time descending").contains("expected asc or desc"));
        assert!(err("update_time desc title").contains("separate fields with commas"));
        assert!(err("update_time,").contains("empty item"));
        assert!(err(",update_time").contains("empty item"));
        assert!(err("title, title desc").contains("more than once"));
        assert!(err("update_time; DROP TABLE x").contains("expected asc or desc"));
        assert!(err("update_time;DROP").contains("unknown field"));
        assert!(err(&"x".repeat(1001)).contains("longer than"));
    }

    #[test]
    fn schema_validation() {
        assert_eq!(SCHEMA.validate(), Ok(()));
        static BAD: Schema = Schema {
            fields: &[Field {
                name: "x",
                column: "x; DROP TABLE t",
                ty: FieldType::Text,
                sortable: true,
                nullable: false,
            }],
            id_column: "id",
            default_order: "x",
        };
        assert!(BAD.validate().is_err());
        static BAD_ORDER: Schema = Schema {
            fields: &[],
            id_column: "id",
            default_order: "create_time desc",
        };
        assert!(BAD_ORDER.validate().is_err());
    }
}
