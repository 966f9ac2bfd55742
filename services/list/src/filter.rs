//! AIP-160 filter subset: lexer, recursive-descent parser and compilation to parameterised SQL.
//!
//! Grammar (AIP-160 precedence: OR binds tighter than juxtaposition, which binds tighter
//! than AND):
//!
//! ```text
//! expression  = sequence { "AND" sequence }
//! sequence    = factor { factor }              (implicit AND)
//! factor      = term { "OR" term }
//! term        = { "NOT" | "-" } simple
//! simple      = "(" expression ")" | field comparator value
//! comparator  = "=" | "!=" | "<" | ">" | "<=" | ">="
//! value       = quoted-string | bare-word
//! ```
//!
//! Negation is pushed down to the comparisons while parsing (De Morgan), so the tree holds
//! only AND, OR and comparisons. That gives NULLs one consistent meaning: a comparison on a
//! NULL column is false except for `!=`, which is true, and `NOT` is an exact complement.

use std::fmt::Write as _;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::query::SqlBuilder;
use crate::schema::{Field, FieldType, Schema, SqlValue};
use crate::{ListError, snippet};

pub(crate) const MAX_FILTER_CHARS: usize = 2000;
pub(crate) const MAX_DEPTH: usize = 16;
pub(crate) const MAX_COMPARISONS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Ne => "!=",
            other => other.sql(),
        }
    }

    fn complement(self) -> Op {
        match self {
            Op::Eq => Op::Ne,
            Op::Ne => Op::Eq,
            Op::Lt => Op::Ge,
            Op::Ge => Op::Lt,
            Op::Gt => Op::Le,
            Op::Le => Op::Gt,
        }
    }
}

/// A parsed filter, negations already pushed down to the comparisons.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp {
        field: &'static Field,
        op: Op,
        value: SqlValue,
        /// Whether a NULL column satisfies the comparison (only ever true on nullable fields).
        or_null: bool,
    },
}

impl Expr {
    fn negate(self) -> Expr {
        match self {
            Expr::And(xs) => Expr::Or(xs.into_iter().map(Expr::negate).collect()),
            Expr::Or(xs) => Expr::And(xs.into_iter().map(Expr::negate).collect()),
            Expr::Cmp {
                field,
                op,
                value,
                or_null,
            } => Expr::Cmp {
                field,
                op: op.complement(),
                value,
                or_null: field.may_be_absent() && !or_null,
            },
        }
    }

    fn and(items: Vec<Expr>) -> Expr {
        Self::flatten(items, true)
    }

    fn or(items: Vec<Expr>) -> Expr {
        Self::flatten(items, false)
    }

    /// Merges nested nodes of the same kind so equivalent filters normalise identically.
    fn flatten(items: Vec<Expr>, is_and: bool) -> Expr {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Expr::And(xs) if is_and => out.extend(xs),
                Expr::Or(xs) if !is_and => out.extend(xs),
                other => out.push(other),
            }
        }
        if out.len() == 1
            && let Some(only) = out.pop()
        {
            return only;
        }
        if is_and {
            Expr::And(out)
        } else {
            Expr::Or(out)
        }
    }

    /// Appends the SQL for this expression; compound nodes are always parenthesised so the
    /// result can be combined with other conditions without precedence surprises.
    pub(crate) fn write_sql(&self, out: &mut String, b: &mut SqlBuilder) {
        match self {
            Expr::And(xs) | Expr::Or(xs) => {
                let sep = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push('(');
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    x.write_sql(out, b);
                }
                out.push(')');
            }
            Expr::Cmp {
                field,
                op,
                value,
                or_null,
            } => {
                let p = b.bind(value.clone());
                let col = field.column;
                let op = op.sql();
                if field.ty == FieldType::TimestampOrNever {
                    // "Never" is stored as the largest BIGINT: it answers as NULL would.
                    let never = i64::MAX;
                    if *or_null {
                        let _ = write!(out, "({col} = {never} OR {col} {op} {p})");
                    } else {
                        let _ = write!(out, "({col} {op} {p} AND {col} <> {never})");
                    }
                } else if *or_null {
                    let _ = write!(out, "({col} IS NULL OR {col} {op} {p})");
                } else {
                    let _ = write!(out, "{col} {op} {p}");
                }
            }
        }
    }

    /// Canonical text used in the page-token fingerprint: insensitive to whitespace, quoting
    /// style, enum-name case and redundant parentheses.
    pub(crate) fn write_normalised(&self, out: &mut String) {
        match self {
            Expr::And(xs) | Expr::Or(xs) => {
                out.push_str(if matches!(self, Expr::And(_)) {
                    "and("
                } else {
                    "or("
                });
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    x.write_normalised(out);
                }
                out.push(')');
            }
            Expr::Cmp {
                field,
                op,
                value,
                or_null,
            } => {
                let value = match value {
                    // The request's time is not part of the query: a page token
                    // stays valid on the next page, which compares with its own now.
                    SqlValue::Int(_) if field.ty == FieldType::Passed => "now".to_string(),
                    SqlValue::Int(i) => format!("i{i}"),
                    SqlValue::Bool(v) => format!("b{v}"),
                    SqlValue::Text(s) => format!("s{s:?}"),
                };
                let null = if *or_null { "|null" } else { "" };
                let _ = write!(out, "{}{}{value}{null}", field.name, op.text());
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Cmp(Op),
    Minus,
    Colon,
    And,
    Or,
    Not,
    Word(String),
    Str(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Cmp(op) => format!("'{}'", op.text()),
            Tok::Minus => "'-'".into(),
            Tok::Colon => "':'".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
            Tok::Word(w) => snippet(w),
            Tok::Str(s) => format!("string {}", snippet(s)),
        }
    }
}

fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '=' | '<' | '>' | '!')
}

/// Splits the filter into tokens. Right after a comparator the lexer reads a value, where
/// `-` (negative numbers) and `:` (RFC 3339 times) are ordinary characters; elsewhere they are
/// the negation prefix and the unsupported "has" operator.
fn lex(input: &str) -> Result<Vec<Tok>, ListError> {
    let cs: Vec<char> = input.chars().collect();
    let mut toks = Vec::new();
    let mut value_next = false;
    let mut i = 0;
    while let Some(&c) = cs.get(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let is_value = std::mem::take(&mut value_next);
        let next = cs.get(i + 1).copied();
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '=' => (Tok::Cmp(Op::Eq), 1),
            '!' if next == Some('=') => (Tok::Cmp(Op::Ne), 2),
            '!' => {
                return Err(ListError::filter(
                    "unexpected '!': use '!=' for inequality or NOT / '-' for negation",
                ));
            }
            '<' if next == Some('=') => (Tok::Cmp(Op::Le), 2),
            '<' => (Tok::Cmp(Op::Lt), 1),
            '>' if next == Some('=') => (Tok::Cmp(Op::Ge), 2),
            '>' => (Tok::Cmp(Op::Gt), 1),
            '"' => {
                let (s, len) = lex_string(&cs[i..])?;
                (Tok::Str(s), len)
            }
            '-' if !is_value => (Tok::Minus, 1),
            ':' if !is_value => (Tok::Colon, 1),
            _ => {
                let mut j = i;
                while let Some(&d) = cs.get(j) {
                    if ends_word(d) || (!is_value && d == ':') {
                        break;
                    }
                    j += 1;
                }
                // Unreachable by construction, but guarantees the lexer always advances.
                let j = j.max(i + 1);
                let word: String = cs.get(i..j).unwrap_or_default().iter().collect();
                let tok = match word.as_str() {
                    "AND" if !is_value => Tok::And,
                    "OR" if !is_value => Tok::Or,
                    "NOT" if !is_value => Tok::Not,
                    _ => Tok::Word(word),
                };
                (tok, j - i)
            }
        };
        value_next = matches!(tok, Tok::Cmp(_));
        toks.push(tok);
        i += len;
    }
    Ok(toks)
}

/// Reads a double-quoted string starting at `cs[0]`; returns its value and length in chars.
fn lex_string(cs: &[char]) -> Result<(String, usize), ListError> {
    let mut out = String::new();
    let mut i = 1;
    loop {
        match cs.get(i) {
            None => {
                let start: String = cs.iter().collect();
                return Err(ListError::filter(format!(
                    "unterminated string starting at {}",
                    snippet(&start)
                )));
            }
            Some('"') => return Ok((out, i + 1)),
            Some('\\') => {
                let escaped = match cs.get(i + 1) {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some(other) => {
                        return Err(ListError::filter(format!(
                            "invalid escape sequence \\{} in string",
                            other.escape_debug()
                        )));
                    }
                    None => {
                        return Err(ListError::filter("unterminated string (ends in '\\')"));
                    }
                };
                out.push(escaped);
                i += 2;
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// Parses a filter; `Ok(None)` for an empty or all-whitespace filter.
pub(crate) fn parse(schema: &Schema, input: &str) -> Result<Option<Expr>, ListError> {
    if input.chars().nth(MAX_FILTER_CHARS).is_some() {
        return Err(ListError::filter(format!(
            "filter is longer than {MAX_FILTER_CHARS} characters"
        )));
    }
    let toks = lex(input)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        schema,
        toks,
        pos: 0,
        comparisons: 0,
    };
    let expr = p.expression(0)?;
    match p.peek() {
        None => Ok(Some(expr)),
        Some(Tok::RParen) => Err(ListError::filter("unbalanced ')' with no matching '('")),
        Some(t) => Err(ListError::filter(format!("unexpected {}", t.describe()))),
    }
}

struct Parser<'s> {
    schema: &'s Schema,
    toks: Vec<Tok>,
    pos: usize,
    comparisons: usize,
}

/// Literal as written: bare words may name enums, dates, numbers and booleans, quoted strings
/// may not be numbers or booleans.
enum Lit {
    Bare(String),
    Quoted(String),
}

impl Lit {
    fn text(&self) -> &str {
        match self {
            Lit::Bare(s) | Lit::Quoted(s) => s,
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn prev_description(&self) -> String {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map_or_else(|| "start of filter".into(), Tok::describe)
    }

    fn expression(&mut self, depth: usize) -> Result<Expr, ListError> {
        let mut items = vec![self.sequence(depth)?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            items.push(self.sequence(depth)?);
        }
        Ok(Expr::and(items))
    }

    fn sequence(&mut self, depth: usize) -> Result<Expr, ListError> {
        let mut items = vec![self.factor(depth)?];
        while matches!(
            self.peek(),
            Some(Tok::LParen | Tok::Minus | Tok::Not | Tok::Word(_) | Tok::Str(_))
        ) {
            items.push(self.factor(depth)?);
        }
        Ok(Expr::and(items))
    }

    fn factor(&mut self, depth: usize) -> Result<Expr, ListError> {
        let mut items = vec![self.term(depth)?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            items.push(self.term(depth)?);
        }
        Ok(Expr::or(items))
    }

    fn term(&mut self, depth: usize) -> Result<Expr, ListError> {
        // Counted rather than recursed so a long run of NOTs cannot exhaust the stack.
        let mut negate = false;
        while matches!(self.peek(), Some(Tok::Not | Tok::Minus)) {
            self.pos += 1;
            negate = !negate;
        }
        let simple = self.simple(depth)?;
        Ok(if negate { simple.negate() } else { simple })
    }

    fn simple(&mut self, depth: usize) -> Result<Expr, ListError> {
        match self.next() {
            Some(Tok::LParen) => {
                if depth >= MAX_DEPTH {
                    return Err(ListError::filter(format!(
                        "parentheses are nested more than {MAX_DEPTH} deep"
                    )));
                }
                let inner = self.expression(depth + 1)?;
                match self.next() {
                    Some(Tok::RParen) => Ok(inner),
                    None => Err(ListError::filter("unbalanced '(': missing ')'")),
                    Some(t) => Err(ListError::filter(format!(
                        "expected ')' but found {}",
                        t.describe()
                    ))),
                }
            }
            Some(Tok::Word(name)) => self.restriction(&name),
            None => Err(ListError::filter(format!(
                "expected a comparison or '(' after {}, but the filter ended",
                self.prev_description()
            ))),
            Some(Tok::RParen) if depth == 0 => {
                Err(ListError::filter("unbalanced ')' with no matching '('"))
            }
            Some(Tok::Str(s)) => Err(ListError::filter(format!(
                "expected a field name but found string {}; comparisons are written field = value",
                snippet(&s)
            ))),
            Some(t) => Err(ListError::filter(format!(
                "expected a comparison or '(' but found {}",
                t.describe()
            ))),
        }
    }

    fn restriction(&mut self, name: &str) -> Result<Expr, ListError> {
        let Some(field) = self.schema.field(name) else {
            if ["and", "or", "not"]
                .iter()
                .any(|k| name.eq_ignore_ascii_case(k))
            {
                return Err(ListError::filter(format!(
                    "unknown field {}; the operators AND, OR and NOT must be upper case",
                    snippet(name)
                )));
            }
            let known: Vec<&str> = self.schema.fields.iter().map(|f| f.name).collect();
            return Err(ListError::filter(format!(
                "unknown field {}; filterable fields are: {}",
                snippet(name),
                known.join(", ")
            )));
        };
        let op = match self.next() {
            Some(Tok::Cmp(op)) => op,
            Some(Tok::Colon) => {
                return Err(ListError::filter(format!(
                    "the ':' (has) operator is not supported; use a comparison such as {name} = ..."
                )));
            }
            None => {
                return Err(ListError::filter(format!(
                    "expected a comparison operator after field {name}"
                )));
            }
            Some(t) => {
                return Err(ListError::filter(format!(
                    "expected a comparison operator after field {name} but found {}",
                    t.describe()
                )));
            }
        };
        let lit = match self.next() {
            Some(Tok::Word(w)) => Lit::Bare(w),
            Some(Tok::Str(s)) => Lit::Quoted(s),
            _ => {
                return Err(ListError::filter(format!(
                    "expected a value after {name} {}",
                    op.text()
                )));
            }
        };
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(ListError::filter(format!(
                "filter has more than {MAX_COMPARISONS} comparisons"
            )));
        }
        comparison(field, op, &lit)
    }
}

/// Type-checks one comparison and converts its literal to the stored representation.
fn comparison(field: &'static Field, op: Op, lit: &Lit) -> Result<Expr, ListError> {
    let name = field.name;
    let equality_only = |kind: &str| {
        if matches!(op, Op::Eq | Op::Ne) {
            Ok(())
        } else {
            Err(ListError::filter(format!(
                "field {name} is {kind} and supports only = and !=, not {}",
                op.text()
            )))
        }
    };
    let (op, value) = match (field.ty, lit) {
        (FieldType::Text, lit) => (op, SqlValue::Text(lit.text().to_owned())),
        (FieldType::Integer, Lit::Bare(w)) => match w.parse::<i64>() {
            Ok(i) => (op, SqlValue::Int(i)),
            Err(_) => {
                return Err(ListError::filter(format!(
                    "field {name} expects an integer, got {}",
                    snippet(w)
                )));
            }
        },
        (FieldType::Integer, Lit::Quoted(s)) => {
            return Err(ListError::filter(format!(
                "field {name} expects an integer, got string {}",
                snippet(s)
            )));
        }
        (FieldType::Bool, lit) => {
            equality_only("a boolean")?;
            match lit {
                Lit::Bare(w) if w.eq_ignore_ascii_case("true") => (op, SqlValue::Bool(true)),
                Lit::Bare(w) if w.eq_ignore_ascii_case("false") => (op, SqlValue::Bool(false)),
                _ => {
                    return Err(ListError::filter(format!(
                        "field {name} expects true or false, got {}",
                        snippet(lit.text())
                    )));
                }
            }
        }
        (FieldType::Passed, lit) => {
            equality_only("a boolean")?;
            let wanted = match lit {
                Lit::Bare(w) if w.eq_ignore_ascii_case("true") => true,
                Lit::Bare(w) if w.eq_ignore_ascii_case("false") => false,
                _ => {
                    return Err(ListError::filter(format!(
                        "field {name} expects true or false, got {}",
                        snippet(lit.text())
                    )));
                }
            };
            let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            // "has passed" is `column <= now`; its negation keeps NULL (never) as false.
            let passed = wanted == (op == Op::Eq);
            return Ok(Expr::Cmp {
                field,
                op: if passed { Op::Le } else { Op::Gt },
                value: SqlValue::Int(now),
                or_null: !passed,
            });
        }
        (FieldType::Timestamp | FieldType::TimestampOrNever, lit) => {
            timestamp(field, op, lit.text())?
        }
        (FieldType::Date, lit) => match date(lit.text()) {
            Some(d) => (op, SqlValue::Int(d)),
            None => {
                return Err(ListError::filter(format!(
                    "field {name} expects a date like \"2026-12-01\", got {}",
                    snippet(lit.text())
                )));
            }
        },
        (FieldType::Enum(table), lit) => {
            equality_only("an enum")?;
            let text = lit.text();
            match table.iter().find(|(n, _)| n.eq_ignore_ascii_case(text)) {
                Some(&(_, v)) => (op, SqlValue::Int(v)),
                None => {
                    let mut allowed: Vec<&str> = table.iter().map(|(n, _)| *n).take(20).collect();
                    if table.len() > allowed.len() {
                        allowed.push("...");
                    }
                    return Err(ListError::filter(format!(
                        "unknown value {} for field {name}; expected one of: {}",
                        snippet(text),
                        allowed.join(", ")
                    )));
                }
            }
        }
    };
    Ok(Expr::Cmp {
        field,
        op,
        value,
        or_null: field.may_be_absent() && op == Op::Ne,
    })
}

/// Converts an RFC 3339 literal to stored milliseconds. Columns hold whole milliseconds, so a
/// literal with a sub-millisecond part is rounded in the direction that keeps range
/// comparisons exact; equality against such a literal could never match and is rejected.
fn timestamp(field: &Field, op: Op, text: &str) -> Result<(Op, SqlValue), ListError> {
    let name = field.name;
    let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ListError::filter(format!(
            "field {name} expects an RFC 3339 timestamp like \"2026-01-01T00:00:00Z\", got {}",
            snippet(text)
        ))
    })?;
    let nanos = parsed.unix_timestamp_nanos();
    let millis = i64::try_from(nanos.div_euclid(1_000_000))
        .map_err(|_| ListError::filter(format!("timestamp for field {name} is out of range")))?;
    let exact = nanos.rem_euclid(1_000_000) == 0;
    let op = match op {
        _ if exact => op,
        Op::Gt | Op::Ge => Op::Gt,
        Op::Lt | Op::Le => Op::Le,
        Op::Eq | Op::Ne => {
            return Err(ListError::filter(format!(
                "field {name} is stored to the millisecond; {} cannot compare a timestamp with finer precision",
                op.text()
            )));
        }
    };
    Ok((op, SqlValue::Int(millis)))
}

/// Parses `YYYY-MM-DD` to the stored yyyymmdd integer, rejecting impossible dates.
fn date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?).ok()?;
    Some(y * 10_000 + m * 100 + d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: &[(&str, i64)] = &[("PERSON", 1), ("ORGANISATION", 2)];
    static SCHEMA: Schema = Schema {
        fields: &[
            Field {
                name: "a",
                column: "col_a",
                ty: FieldType::Integer,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "b",
                column: "col_b",
                ty: FieldType::Integer,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "c",
                column: "col_c",
                ty: FieldType::Integer,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "d",
                column: "col_d",
                ty: FieldType::Integer,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "display_name",
                column: "display_name",
                ty: FieldType::Text,
                sortable: true,
                nullable: true,
            },
            Field {
                name: "active",
                column: "active",
                ty: FieldType::Bool,
                sortable: false,
                nullable: false,
            },
            Field {
                name: "create_time",
                column: "create_time",
                ty: FieldType::Timestamp,
                sortable: true,
                nullable: false,
            },
            Field {
                name: "due_date",
                column: "due_date",
                ty: FieldType::Date,
                sortable: true,
                nullable: true,
            },
            Field {
                name: "kind",
                column: "kind",
                ty: FieldType::Enum(KINDS),
                sortable: true,
                nullable: false,
            },
            Field {
                name: "overdue",
                column: "overdue_from",
                ty: FieldType::Passed,
                sortable: false,
                nullable: true,
            },
            Field {
                name: "due_time",
                column: "due_time",
                ty: FieldType::TimestampOrNever,
                sortable: true,
                nullable: false,
            },
        ],
        id_column: "id",
        default_order: "create_time desc",
    };

    fn sql(filter: &str) -> (String, Vec<SqlValue>) {
        let expr = parse(&SCHEMA, filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .expect("non-empty");
        let mut b = SqlBuilder::new(1);
        let mut out = String::new();
        expr.write_sql(&mut out, &mut b);
        (out, b.into_params())
    }

    fn shape(filter: &str) -> String {
        let expr = parse(&SCHEMA, filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .expect("non-empty");
        let mut out = String::new();
        expr.write_normalised(&mut out);
        out
    }

    fn err(filter: &str) -> String {
        let e = parse(&SCHEMA, filter).expect_err(filter);
        assert_eq!(e.field, "filter");
        e.description
    }

    #[test]
    fn never_is_absent_in_every_comparison() {
        let never = i64::MAX;
        let t = "\"2026-12-01T00:00:00Z\"";
        for op in ["<", "<=", ">", ">=", "="] {
            assert_eq!(
                sql_of(&format!("due_time {op} {t}")),
                format!("(due_time {op} $1 AND due_time <> {never})")
            );
        }
        assert_eq!(
            sql_of(&format!("due_time != {t}")),
            format!("(due_time = {never} OR due_time <> $1)")
        );
        assert_eq!(
            sql_of(&format!("NOT due_time < {t}")),
            format!("(due_time = {never} OR due_time >= $1)")
        );
        assert_eq!(
            shape(&format!("NOT due_time > {t}")),
            "due_time<=i1796083200000|null"
        );
    }

    #[test]
    fn passed_fields_compare_with_now_and_keep_null_false() {
        let (sql, params) = sql("overdue = true");
        assert_eq!(sql, "overdue_from <= $1");
        assert!(matches!(params[0], SqlValue::Int(t) if t > 1_700_000_000_000));
        assert_eq!(
            sql_of("overdue = false"),
            "(overdue_from IS NULL OR overdue_from > $1)"
        );
        assert_eq!(
            sql_of("NOT overdue = true"),
            "(overdue_from IS NULL OR overdue_from > $1)"
        );
        assert_eq!(sql_of("overdue != false"), "overdue_from <= $1");
        assert!(err("overdue > true").contains("supports only"));
        assert!(err("overdue = 3").contains("true or false"));
        let mut a = String::new();
        parse(&SCHEMA, "overdue = true")
            .expect("parses")
            .expect("some")
            .write_normalised(&mut a);
        assert_eq!(a, "overdue<=now");
    }

    fn sql_of(filter: &str) -> String {
        sql(filter).0
    }

    #[test]
    fn empty_filter_is_none() {
        assert!(matches!(parse(&SCHEMA, ""), Ok(None)));
        assert!(matches!(parse(&SCHEMA, "  \t\n "), Ok(None)));
    }

    #[test]
    fn or_binds_tighter_than_and() {
        assert_eq!(shape("a=1 AND b=2 OR c=3"), "and(a=i1,or(b=i2,c=i3))");
        assert_eq!(shape("a=1 OR b=2 AND c=3"), "and(or(a=i1,b=i2),c=i3)");
        assert_eq!(shape("a=1 OR b=2 OR c=3"), "or(a=i1,b=i2,c=i3)");
    }

    #[test]
    fn juxtaposition_is_and_between_or_and_and() {
        assert_eq!(shape("a=1 b=2"), "and(a=i1,b=i2)");
        assert_eq!(shape("a=1 b=2 OR c=3"), "and(a=i1,or(b=i2,c=i3))");
        assert_eq!(shape("a=1 b=2 AND c=3 d=4"), "and(a=i1,b=i2,c=i3,d=i4)");
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(shape("(a=1 AND b=2) OR c=3"), "or(and(a=i1,b=i2),c=i3)");
        assert_eq!(shape("((a=1))"), "a=i1");
        assert_eq!(shape("(a=1)(b=2)"), "and(a=i1,b=i2)");
    }

    #[test]
    fn not_and_minus_negate_with_de_morgan() {
        assert_eq!(shape("NOT a=1"), "a!=i1");
        assert_eq!(shape("-a=1"), "a!=i1");
        assert_eq!(shape("NOT NOT a<1"), "a<i1");
        assert_eq!(shape("- NOT -a<1"), "a>=i1");
        assert_eq!(shape("NOT (a=1 OR b>2)"), "and(a!=i1,b<=i2)");
        assert_eq!(shape("-(a=1 b=2)"), "or(a!=i1,b!=i2)");
        // NOT applies to one term, not to the OR it is part of.
        assert_eq!(shape("NOT a=1 OR b=2"), "or(a!=i1,b=i2)");
        // NOTE is a field-like word, not the keyword.
        assert!(err("NOTE=1").contains("unknown field \"NOTE\""));
        assert!(err("a=1 and b=2").contains("must be upper case"));
    }

    #[test]
    fn negation_on_nullable_columns_keeps_null_meaning() {
        assert_eq!(shape("display_name != \"x\""), "display_name!=s\"x\"|null");
        assert_eq!(shape("NOT display_name != \"x\""), "display_name=s\"x\"");
        assert_eq!(
            shape("NOT display_name < \"x\""),
            "display_name>=s\"x\"|null"
        );
    }

    #[test]
    fn values() {
        assert_eq!(shape("a = -5"), "a=i-5");
        assert_eq!(
            shape(r#"display_name = "a \"b\" \\ c""#),
            r#"display_name=s"a \"b\" \\ c""#
        );
        assert_eq!(shape("display_name = bare"), "display_name=s\"bare\"");
        assert_eq!(shape("active = true"), "active=btrue");
        assert_eq!(shape("active = FALSE"), "active=bfalse");
        assert_eq!(shape("kind = person"), "kind=i1");
        assert_eq!(shape("kind = \"ORGANISATION\""), "kind=i2");
        assert_eq!(shape("due_date >= 2026-12-01"), "due_date>=i20261201");
        assert_eq!(shape("due_date < \"2024-02-29\""), "due_date<i20240229");
        assert_eq!(
            shape("create_time > \"2026-01-01T00:00:00Z\""),
            "create_time>i1767225600000"
        );
        assert_eq!(
            shape("create_time >= 2026-01-01T13:00:00.250+13:00"),
            "create_time>=i1767225600250"
        );
    }

    #[test]
    fn sub_millisecond_timestamps_round_safely() {
        assert_eq!(
            shape("create_time >= \"1970-01-01T00:00:00.0015Z\""),
            "create_time>i1"
        );
        assert_eq!(
            shape("create_time < \"1970-01-01T00:00:00.0015Z\""),
            "create_time<=i1"
        );
        assert_eq!(
            shape("create_time > \"1969-12-31T23:59:59.9995Z\""),
            "create_time>i-1"
        );
        assert!(err("create_time = \"1970-01-01T00:00:00.0015Z\"").contains("millisecond"));
    }

    #[test]
    fn sql_snapshots() {
        assert_eq!(sql("a = 1"), ("col_a = $1".into(), vec![SqlValue::Int(1)]));
        assert_eq!(
            sql("a = 1 AND (kind = PERSON OR display_name != \"O'Brien\")"),
            (
                "(col_a = $1 AND (kind = $2 OR (display_name IS NULL OR display_name <> $3)))"
                    .into(),
                vec![
                    SqlValue::Int(1),
                    SqlValue::Int(1),
                    SqlValue::Text("O'Brien".into())
                ]
            )
        );
        assert_eq!(
            sql("-active = true due_date <= 2026-01-31"),
            (
                "(active <> $1 AND due_date <= $2)".into(),
                vec![SqlValue::Bool(true), SqlValue::Int(20260131)]
            )
        );
        assert_eq!(
            sql("NOT (due_date > 2026-01-01 OR b >= 3)"),
            (
                "((due_date IS NULL OR due_date <= $1) AND col_b < $2)".into(),
                vec![SqlValue::Int(20260101), SqlValue::Int(3)]
            )
        );
    }

    #[test]
    fn injection_attempts_stay_in_parameters() {
        let (s, p) = sql(r#"display_name = "x' OR 1=1; DROP TABLE t; --""#);
        assert_eq!(s, "display_name = $1");
        assert_eq!(
            p,
            vec![SqlValue::Text("x' OR 1=1; DROP TABLE t; --".into())]
        );
        assert!(err("a; DROP TABLE t = 1").contains("unknown field"));
    }

    #[test]
    fn errors() {
        assert!(err("nope = 1").contains("unknown field \"nope\""));
        assert!(err("a = x").contains("field a expects an integer, got \"x\""));
        assert!(err("a = \"1\"").contains("expects an integer, got string"));
        assert!(err("a = 99999999999999999999").contains("expects an integer"));
        assert!(err("active = yes").contains("true or false"));
        assert!(err("active < true").contains("only = and !="));
        assert!(err("kind > PERSON").contains("only = and !="));
        assert!(err("kind = ROBOT").contains("unknown value \"ROBOT\" for field kind"));
        assert!(err("kind = ROBOT").contains("PERSON, ORGANISATION"));
        assert!(err("create_time > yesterday").contains("RFC 3339"));
        assert!(err("create_time > \"2026-13-01T00:00:00Z\"").contains("RFC 3339"));
        assert!(err("due_date = 2026-02-30").contains("expects a date"));
        assert!(err("due_date = 20260201").contains("expects a date"));
        assert!(err("due_date = 2026-2-01").contains("expects a date"));
        assert!(err("(a = 1").contains("missing ')'"));
        assert!(err("a = 1)").contains("unbalanced ')'"));
        assert!(err(")").contains("unbalanced ')'"));
        assert!(err("()").contains("found ')'"));
        assert!(err("a = 1 b").contains("expected a comparison operator after field b"));
        assert!(err("a = 1 AND").contains("filter ended"));
        assert!(err("AND a = 1").contains("found AND"));
        assert!(err("a = 1 OR OR b = 2").contains("found OR"));
        assert!(err("a =").contains("expected a value after a ="));
        assert!(err("a = (1)").contains("expected a value after a ="));
        assert!(err("a 1").contains("expected a comparison operator after field a"));
        assert!(err("= 1").contains("found '='"));
        assert!(err("a = 1 = 2").contains("unexpected '='"));
        assert!(err("a ! 1").contains("unexpected '!'"));
        assert!(err("a:1").contains("':' (has) operator"));
        assert!(err("\"a\" = 1").contains("expected a field name"));
        assert!(err("display_name = \"abc").contains("unterminated string"));
        assert!(err("display_name = \"a\\qb\"").contains("invalid escape"));
        assert!(err("display_name = \"a\\").contains("unterminated"));
        assert!(err("-").contains("filter ended"));
    }

    #[test]
    fn messages_do_not_echo_long_input() {
        let long = "z".repeat(1500);
        for filter in [
            format!("{long} = 1"),
            format!("a = {long}"),
            format!("display_name = \"{long}"),
            format!("kind = {long}"),
        ] {
            let d = err(&filter);
            assert!(d.len() < 200, "{d}");
        }
    }

    #[test]
    fn limits() {
        let ok_len = format!("display_name = \"{}\"", "x".repeat(MAX_FILTER_CHARS - 17));
        assert_eq!(ok_len.chars().count(), MAX_FILTER_CHARS);
        assert!(parse(&SCHEMA, &ok_len).is_ok());
        let too_long = format!("display_name = \"{}\"", "x".repeat(MAX_FILTER_CHARS - 16));
        assert!(err(&too_long).contains("longer than 2000"));

        let nested = |n: usize| format!("{}a=1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&SCHEMA, &nested(MAX_DEPTH)).is_ok());
        assert!(err(&nested(MAX_DEPTH + 1)).contains("nested more than 16"));
        assert!(err(&"(".repeat(1999)).contains("nested"));

        let many = |n: usize| vec!["a=1"; n].join(" OR ");
        assert!(parse(&SCHEMA, &many(MAX_COMPARISONS)).is_ok());
        assert!(err(&many(MAX_COMPARISONS + 1)).contains("more than 50 comparisons"));

        // A thousand negations are counted, not recursed into.
        assert_eq!(shape(&format!("{}a=1", "-".repeat(1000))), "a=i1");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC{0,300}") {
            let _ = parse(&SCHEMA, &s);
        }

        #[test]
        fn never_panics_on_filter_like_input(
            s in r#"([-()!=<>":\\ ]|AND|OR|NOT|a|kind|due_date|create_time|display_name|active|PERSON|true|1|2026-01-01|x){0,40}"#
        ) {
            let _ = parse(&SCHEMA, &s);
        }
    }
}
