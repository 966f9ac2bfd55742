//! Resource names (AIP-122): parsing `agencies/{agency}/clients/{client}` and
//! friends into their ids, with the id rules every service shares.

/// Why a resource name was refused; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// The longest id a caller may choose (AIP-122 allows 63).
pub const MAX_ID_LEN: usize = 63;

/// Checks a caller-chosen or path id: 1–63 of `a-z 0-9 -`, starting with a
/// letter or digit. UUIDv7 strings (lower case) pass.
pub fn check_id(id: &str) -> Result<(), NameError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(NameError(
            "must be 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'".into(),
        ))
    }
}

/// Parses `name` against a pattern such as `agencies/{}/clients/{}` and
/// returns the ids in order. `-` is accepted as an id only where `wildcard`
/// allows it (AIP-159 "any parent").
pub fn parse<'a>(pattern: &str, name: &'a str, wildcard: bool) -> Result<Vec<&'a str>, NameError> {
    let want: Vec<&str> = pattern.split('/').collect();
    let got: Vec<&str> = name.split('/').collect();
    if want.len() != got.len() {
        return Err(NameError(format!("must have the form {pattern}")));
    }
    let mut ids = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if *w == "{}" {
            if !(wildcard && *g == "-") {
                check_id(g)
                    .map_err(|e| NameError(format!("must have the form {pattern}: id {e}")))?;
            }
            ids.push(*g);
        } else if w != g {
            return Err(NameError(format!("must have the form {pattern}")));
        }
    }
    Ok(ids)
}

/// Parses the request field `field` against `pattern` (see [`parse`]),
/// naming the field when it does not fit.
pub fn parse_field<'a>(
    field: &str,
    pattern: &str,
    value: &'a str,
) -> Result<Vec<&'a str>, crate::error::FieldViolation> {
    parse(pattern, value, false).map_err(|e| crate::error::FieldViolation::new(field, e.0))
}

/// The id a caller chose in `field`, checked, or a new one when empty.
pub fn chosen_id(field: &str, id: &str) -> Result<String, crate::error::FieldViolation> {
    if id.is_empty() {
        return Ok(new_id());
    }
    check_id(id).map_err(|e| crate::error::FieldViolation::new(field, e.0))?;
    Ok(id.to_string())
}

/// A new server-generated id (UUIDv7: time-ordered, so indexes stay compact).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let ids = parse("agencies/{}/clients/{}", "agencies/dia/clients/c-1", false);
        assert_eq!(ids, Ok(vec!["dia", "c-1"]));
        assert!(parse("agencies/{}/clients/{}", "agencies/dia/clients", false).is_err());
        assert!(parse("agencies/{}/clients/{}", "agencies/DIA/clients/x", false).is_err());
        assert!(parse("agencies/{}/clients/{}", "agencies/dia/needs/x", false).is_err());
        assert!(parse("agencies/{}/clients/{}", "agencies/dia/clients/-", false).is_err());
        assert_eq!(
            parse("agencies/{}/clients/{}", "agencies/dia/clients/-", true),
            Ok(vec!["dia", "-"])
        );
        assert!(check_id(&"a".repeat(64)).is_err());
        assert!(check_id(&new_id()).is_ok());
    }
}
