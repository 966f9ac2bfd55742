//! Static description of a listable collection: which request fields map to which columns.

/// How a field is stored and how its filter literals are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Integer,
    Bool,
    /// Stored as INTEGER milliseconds since the epoch (UTC); filter literal is an RFC 3339
    /// string, e.g. `create_time > "2026-01-01T00:00:00Z"`.
    Timestamp,
    /// Like `Timestamp`, but the largest BIGINT (`i64::MAX`) stands for "never" (no value), so
    /// that the column needs no NULL: it sorts last and orders along a plain index. In filters
    /// "never" behaves as an absent value does on a nullable field: it satisfies no comparison
    /// (`due_time > "2026-12-01T00:00:00Z"` leaves it out) and satisfies a negated one.
    TimestampOrNever,
    /// Stored as INTEGER yyyymmdd (e.g. 20261201); filter literal "2026-12-01" (quoted or bare).
    Date,
    /// Stored as INTEGER milliseconds (nullable): the instant from which something holds,
    /// e.g. when a complaint becomes overdue. Filtered as a boolean, `overdue = true`, which
    /// is true once that instant has passed (compared with the time of the request) and false
    /// while it is in the future or NULL. Not sortable.
    Passed,
    /// Stored as INTEGER; filter literal is the enum value name (bare or quoted), matched
    /// case-insensitively against the table, e.g. `kind = PERSON`.
    Enum(&'static [(&'static str, i64)]),
}

/// One filterable (and optionally sortable) request field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Name as used in `filter` and `order_by`.
    pub name: &'static str,
    /// Column (or qualified `alias.column`) it is stored in; the only identifiers that reach SQL.
    pub column: &'static str,
    pub ty: FieldType,
    pub sortable: bool,
    pub nullable: bool,
}

/// The listable fields of one collection.
#[derive(Debug)]
pub struct Schema {
    pub fields: &'static [Field],
    /// Unique, non-null tie-breaker column (TEXT, a UUIDv7 id), always the last sort key,
    /// ascending.
    pub id_column: &'static str,
    /// Used when order_by is empty, e.g. "create_time desc".
    pub default_order: &'static str,
}

impl Field {
    /// Whether the column can hold "no value" (NULL, or the never value), which satisfies no
    /// comparison and every negated one.
    pub(crate) fn may_be_absent(&self) -> bool {
        self.nullable || self.ty == FieldType::TimestampOrNever
    }
}

impl Schema {
    pub(crate) fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks the schema itself (for a store's unit tests): column names are plain
    /// identifiers, field names are unique, and `default_order` parses.
    pub fn validate(&self) -> Result<(), String> {
        fn is_identifier(s: &str) -> bool {
            !s.is_empty()
                && s.split('.').all(|part| {
                    let mut chars = part.chars();
                    chars
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        }
        if !is_identifier(self.id_column) {
            return Err(format!(
                "id_column {:?} is not an identifier",
                self.id_column
            ));
        }
        for (i, f) in self.fields.iter().enumerate() {
            if !is_identifier(f.column) {
                return Err(format!("column {:?} is not an identifier", f.column));
            }
            if f.name.is_empty() || f.name.contains(|c: char| c.is_whitespace() || c == ',') {
                return Err(format!("field name {:?} is not usable", f.name));
            }
            if self.fields[..i].iter().any(|g| g.name == f.name) {
                return Err(format!("field {:?} is declared twice", f.name));
            }
        }
        crate::order::parse(self, self.default_order)
            .map(|_| ())
            .map_err(|e| format!("default_order: {}", e.description))
    }
}

/// A value bound to a query placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Int(i64),
    Text(String),
    Bool(bool),
}
