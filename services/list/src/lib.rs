//! List plumbing for AIP-158/160/132 List RPCs: page sizes, AIP-160 filters compiled to
//! parameterised SQL, `order_by` parsing and keyset page tokens bound to the query.
//!
//! A store describes its listable columns once in a static [`Schema`], then per request calls
//! [`ListQuery::plan`], splices [`ListQuery::where_sql`] / [`ListQuery::order_sql`] into its own
//! `SELECT`, binds [`ListQuery::params`] (see [`ListQuery::bind`]), fetches at most
//! [`ListQuery::fetch_limit`] rows and hands them to [`ListQuery::finish`].
//!
//! ```
//! use touchstone_list::{Field, FieldType, ListParams, ListQuery, Schema};
//!
//! static SCHEMA: Schema = Schema {
//!     fields: &[
//!         Field { name: "create_time", column: "create_time", ty: FieldType::Timestamp, sortable: true, nullable: false },
//!         Field { name: "display_name", column: "display_name", ty: FieldType::Text, sortable: true, nullable: true },
//!     ],
//!     id_column: "id",
//!     default_order: "create_time desc",
//! };
//!
//! let params = ListParams { filter: r#"display_name = "Aroha""#, order_by: "", page_size: 0, page_token: "" };
//! let q = ListQuery::plan(&SCHEMA, "agencies/dia", &params, 2).expect("valid request");
//! assert_eq!(q.where_sql(), "display_name = $2");
//! assert_eq!(q.order_sql(), "create_time DESC, id ASC");
//! assert_eq!(q.fetch_limit(), 51);
//! ```

mod filter;
mod order;
mod query;
mod schema;
mod token;

pub use query::{ListParams, ListQuery};
pub use schema::{Field, FieldType, Schema, SqlValue};

/// Page size used when the caller sends `page_size = 0` (AIP-158).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Larger requested page sizes are silently reduced to this (AIP-158).
pub const MAX_PAGE_SIZE: usize = 1000;

/// Resolves a requested `page_size`: 0 means the default, anything above the maximum is
/// clamped, and a negative value is an error on field `page_size`.
pub fn page_size(requested: i32) -> Result<usize, ListError> {
    if requested < 0 {
        return Err(ListError::new(
            "page_size",
            format!("must not be negative (got {requested})"),
        ));
    }
    if requested == 0 {
        return Ok(DEFAULT_PAGE_SIZE);
    }
    Ok(usize::try_from(requested).map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)))
}

/// A bad List request. `field` is the request field to report in a `BadRequest` field
/// violation: one of `"filter"`, `"order_by"`, `"page_size"` or `"page_token"`.
/// `description` is safe to return to the caller: it quotes at most a short snippet of their
/// input and never mentions SQL.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct ListError {
    pub field: &'static str,
    pub description: String,
}

impl ListError {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }

    pub(crate) fn filter(description: impl Into<String>) -> Self {
        Self::new("filter", description)
    }

    pub(crate) fn order_by(description: impl Into<String>) -> Self {
        Self::new("order_by", description)
    }

    pub(crate) fn page_token(description: impl Into<String>) -> Self {
        Self::new("page_token", description)
    }
}

/// Quotes user input for an error message, cut short so a huge filter is never echoed back.
pub(crate) fn snippet(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut out: String = s.chars().take(MAX_CHARS).collect();
    if s.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_rules() {
        assert_eq!(page_size(0), Ok(50));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(1000), Ok(1000));
        assert_eq!(page_size(1001), Ok(1000));
        assert_eq!(page_size(i32::MAX), Ok(1000));
        let err = page_size(-1).expect_err("negative");
        assert_eq!(err.field, "page_size");
        assert!(page_size(i32::MIN).is_err());
    }

    #[test]
    fn snippet_is_bounded() {
        assert_eq!(snippet("abc"), "\"abc\"");
        let long = "x".repeat(500);
        let s = snippet(&long);
        assert!(s.chars().count() <= 44, "{s}");
        assert!(s.ends_with("…\""));
    }
}
