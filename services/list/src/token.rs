//! Opaque page tokens: the last row's sort key values plus a fingerprint of the query they
//! belong to, as URL-safe base64 of a small versioned JSON document.
//!
//! Tokens are not signed. Forging one only moves the caller's position within the results
//! they are already allowed to list, because scope checks live in the store's own WHERE
//! clause and key values are bound as parameters.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ListError;
use crate::order::{KeyKind, SortKey};
use crate::schema::SqlValue;

const VERSION: u32 = 1;
/// Bounds the work done on a hostile token; real ones carry a few short key values.
const MAX_TOKEN_CHARS: usize = 8192;

pub(crate) type Fingerprint = [u8; 16];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    v: u32,
    /// Base64 of the fingerprint.
    f: String,
    k: Vec<Key>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
enum Key {
    #[serde(rename = "i")]
    Int(i64),
    #[serde(rename = "s")]
    Text(String),
    #[serde(rename = "b")]
    Bool(bool),
}

/// Binds tokens to (scope, filter, order) so a token cannot be replayed against a different
/// query, where its key values would land at a meaningless position. Each part is length
/// prefixed so no two different inputs hash the same byte stream.
pub(crate) fn fingerprint(scope: &str, filter: &str, order: &str) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(b"touchstone-list page token v1");
    for part in [scope, filter, order] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

pub(crate) fn encode(fp: &Fingerprint, values: &[SqlValue]) -> Result<String, serde_json::Error> {
    let body = Body {
        v: VERSION,
        f: URL_SAFE_NO_PAD.encode(fp),
        k: values
            .iter()
            .map(|v| match v {
                SqlValue::Int(i) => Key::Int(*i),
                SqlValue::Text(s) => Key::Text(s.clone()),
                SqlValue::Bool(b) => Key::Bool(*b),
            })
            .collect(),
    };
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body)?))
}

/// Decodes a token and checks it belongs to this query; returns the key values to resume
/// after, one per sort key.
pub(crate) fn decode(
    token: &str,
    fp: &Fingerprint,
    keys: &[SortKey],
) -> Result<Vec<SqlValue>, ListError> {
    let malformed = || ListError::page_token("malformed page token");
    if token.len() > MAX_TOKEN_CHARS {
        return Err(malformed());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let body: Body = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if body.v != VERSION {
        return Err(ListError::page_token(
            "page token is from an unsupported version; restart the listing without a page token",
        ));
    }
    if body.f != URL_SAFE_NO_PAD.encode(fp) {
        return Err(ListError::page_token(
            "page token does not match this request; the parent, filter and order_by must not change between pages",
        ));
    }
    if body.k.len() != keys.len() {
        return Err(malformed());
    }
    body.k
        .into_iter()
        .zip(keys)
        .map(|(k, key)| match (k, key.kind) {
            (Key::Int(i), KeyKind::Int) => Ok(SqlValue::Int(i)),
            (Key::Text(s), KeyKind::Text) => Ok(SqlValue::Text(s)),
            (Key::Bool(b), KeyKind::Bool) => Ok(SqlValue::Bool(b)),
            _ => Err(malformed()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<SortKey> {
        vec![
            SortKey {
                column: "t",
                kind: KeyKind::Int,
                nullable: false,
                desc: true,
            },
            SortKey {
                column: "b",
                kind: KeyKind::Bool,
                nullable: true,
                desc: false,
            },
            SortKey {
                column: "id",
                kind: KeyKind::Text,
                nullable: false,
                desc: false,
            },
        ]
    }

    #[test]
    fn round_trip() {
        let fp = fingerprint("agencies/dia", "a=i1", "t DESC,id ASC");
        let values = vec![
            SqlValue::Int(-7),
            SqlValue::Bool(true),
            SqlValue::Text("0190-\u{10FFFF}\"'".into()),
        ];
        let token = encode(&fp, &values).expect("encode");
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(decode(&token, &fp, &keys()), Ok(values));
    }

    #[test]
    fn fingerprint_separates_parts() {
        assert_ne!(fingerprint("ab", "c", ""), fingerprint("a", "bc", ""));
        assert_ne!(fingerprint("s", "", "x"), fingerprint("s", "x", ""));
    }

    #[test]
    fn mismatch_and_malformed() {
        let fp = fingerprint("s", "", "o");
        let other = fingerprint("s2", "", "o");
        let values = [
            SqlValue::Int(1),
            SqlValue::Bool(false),
            SqlValue::Text("x".into()),
        ];
        let token = encode(&fp, &values).expect("encode");
        let e = decode(&token, &other, &keys()).expect_err("mismatch");
        assert_eq!(e.field, "page_token");
        assert!(e.description.contains("does not match"));

        let wrong_types = encode(
            &fp,
            &[
                SqlValue::Text("1".into()),
                SqlValue::Bool(false),
                SqlValue::Text("x".into()),
            ],
        )
        .expect("encode");
        let short = encode(&fp, &values[..2]).expect("encode");
        let json = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "!!!".to_owned(),
            "abc".to_owned(),
            json("{}"),
            json("[1,2]"),
            json(r#"{"v":1,"f":"","k":[],"x":1}"#),
            wrong_types,
            short,
            format!("{token}="),
            "A".repeat(MAX_TOKEN_CHARS + 4),
        ] {
            let e = decode(&bad, &fp, &keys()).expect_err(&bad);
            assert_eq!(e.field, "page_token");
        }
        let e = decode(&json(r#"{"v":2,"f":"","k":[]}"#), &fp, &keys()).expect_err("version");
        assert!(e.description.contains("version"));
    }
}
