//! The Open311 `POST requests` form, parsed: every field checked and named
//! when it is wrong, the complaint it becomes, and the key under which a
//! retried POST finds the first one. Pure: no I/O.

use std::collections::BTreeMap;
use touchstone_platform::error::{FieldViolation, Violations};

/// The most characters of a description (the spec's limit).
pub const MAX_DESCRIPTION: usize = 4_000;
/// The most characters of a short field (names, email, phone, ids).
const MAX_SHORT: usize = 200;
/// The most characters of an address.
const MAX_ADDRESS: usize = 500;
/// The most characters of a media URL.
const MAX_URL: usize = 2_000;
/// The most attributes one request may carry.
const MAX_ATTRIBUTES: usize = 100;
/// The most fields (with repeats) one form may carry.
const MAX_FIELDS: usize = 500;

/// The fields of the spec's POST, each at most once.
const SINGLE: [&str; 16] = [
    "api_key",
    "jurisdiction_id",
    "service_code",
    "lat",
    "long",
    "address_string",
    "address_id",
    "email",
    "device_id",
    "account_id",
    "first_name",
    "last_name",
    "phone",
    "description",
    "media_url",
    "zipcode",
];

/// A form's fields in order, as decoded name and value pairs.
pub type Pairs = Vec<(String, String)>;

/// Decodes `application/x-www-form-urlencoded` text; a name or value that
/// is not UTF-8 once decoded is a violation naming it.
pub fn decode(raw: &[u8]) -> Result<Pairs, FieldViolation> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &[][..]),
        };
        let name = unescape(name)
            .ok_or_else(|| FieldViolation::new("form", "a field name is not valid UTF-8"))?;
        let value =
            unescape(value).ok_or_else(|| FieldViolation::new(name.clone(), "not valid UTF-8"))?;
        out.push((name, value));
        if out.len() > MAX_FIELDS {
            return Err(FieldViolation::new(
                "form",
                format!("at most {MAX_FIELDS} fields"),
            ));
        }
    }
    Ok(out)
}

/// `+` is a space, `%XY` a byte; the bytes must be UTF-8.
fn unescape(raw: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' if i + 2 < raw.len() => {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'%' => return None,
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).ok()
}

/// Where the matter is: the spec requires one of these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Location {
    /// Latitude and longitude as given (checked decimal degrees, WGS84).
    pub lat_long: Option<(String, String)>,
    /// A free-form address.
    pub address_string: String,
    /// An address id of the agency's own address register.
    pub address_id: String,
}

/// A checked POST: what the complaint and the request's public record get.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The api_key as given (checked by the caller, never stored).
    pub api_key: String,
    /// jurisdiction_id, if given.
    pub jurisdiction_id: Option<String>,
    /// service_code.
    pub service_code: String,
    /// Where.
    pub location: Location,
    /// Attributes by code, each with its values.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// first_name and last_name joined.
    pub name: String,
    /// email.
    pub email: String,
    /// phone.
    pub phone: String,
    /// description.
    pub description: String,
    /// media_url.
    pub media_url: String,
    /// device_id.
    pub device_id: String,
    /// account_id.
    pub account_id: String,
    /// Every field but the api_key, sorted: what a retry must repeat.
    pub canonical: String,
}

impl Submission {
    /// Whether a retry of this POST may be recognised: the sender said who
    /// it is (device or account); two identical anonymous posts are two
    /// people until they say otherwise.
    pub fn identifies_sender(&self) -> bool {
        !self.device_id.is_empty() || !self.account_id.is_empty()
    }

    /// The complaint's narrative: the description, then what the officer
    /// needs beside it (where, and the media), which the complaints service
    /// seals like the rest; or a placeholder when none was given.
    pub fn narrative(&self) -> String {
        let mut text = if self.description.is_empty() {
            "(no description was given through Open311)".to_string()
        } else {
            self.description.clone()
        };
        let mut extra = Vec::new();
        if !self.location.address_string.is_empty() {
            extra.push(format!("address: {}", self.location.address_string));
        }
        if !self.location.address_id.is_empty() {
            extra.push(format!("address_id: {}", self.location.address_id));
        }
        if let Some((lat, long)) = &self.location.lat_long {
            extra.push(format!("lat/long: {lat}, {long}"));
        }
        if !self.media_url.is_empty() {
            extra.push(format!("media_url: {}", self.media_url));
        }
        if !extra.is_empty() {
            text.push_str("\n\n[Open311] ");
            text.push_str(&extra.join("; "));
        }
        text
    }
}

/// Parses the decoded form. Absent and empty are the same (the spec's
/// rule); every malformed field is named, with what is expected.
pub fn parse(pairs: &[(String, String)]) -> Result<Submission, Vec<FieldViolation>> {
    let mut v = Violations::new();
    let mut single: BTreeMap<&str, &str> = BTreeMap::new();
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in pairs {
        if let Some(rest) = name.strip_prefix("attribute") {
            match attribute_code(rest) {
                Some((code, multi)) => {
                    let values = attributes.entry(code.to_string()).or_default();
                    if !multi && !values.is_empty() {
                        v.add(name.as_str(), "given more than once (use attribute[code][] for several values)");
                    }
                    if let Err(e) = plain(value, MAX_SHORT) {
                        v.add(name.as_str(), e);
                    } else if !value.trim().is_empty() {
                        values.push(value.trim().to_string());
                    }
                }
                None => v.add(
                    name.as_str(),
                    "must be attribute[code] or attribute[code][] with a code of letters, digits, '-' and '_'",
                ),
            }
            continue;
        }
        let Some(known) = SINGLE.iter().find(|s| **s == name.as_str()) else {
            // Fields the spec does not define are left alone, as other
            // servers do (clients send extensions of their own).
            continue;
        };
        if single.insert(known, value.as_str()).is_some() {
            v.add(*known, "given more than once");
        }
    }
    attributes.retain(|_, values| !values.is_empty());
    if attributes.len() > MAX_ATTRIBUTES {
        v.add("attribute", format!("at most {MAX_ATTRIBUTES} attributes"));
    }
    let get = |name: &str| single.get(name).map(|s| s.trim()).unwrap_or_default();
    let mut short = |name: &str, max: usize| match plain(get(name), max) {
        Ok(s) => s,
        Err(e) => {
            v.add(name, e);
            String::new()
        }
    };
    let api_key = short("api_key", MAX_SHORT);
    let jurisdiction_id = short("jurisdiction_id", MAX_SHORT);
    let service_code = short("service_code", MAX_SHORT);
    let address_string = short("address_string", MAX_ADDRESS);
    let address_id = short("address_id", MAX_SHORT);
    let first = short("first_name", MAX_SHORT);
    let last = short("last_name", MAX_SHORT);
    let email = short("email", MAX_SHORT);
    let phone = short("phone", MAX_SHORT);
    let media_url = short("media_url", MAX_URL);
    let device_id = short("device_id", MAX_SHORT);
    let account_id = short("account_id", MAX_SHORT);
    let _zipcode = short("zipcode", MAX_SHORT);
    if service_code.is_empty() && !v.names("service_code") {
        v.add("service_code", "required");
    }
    if !email.is_empty() && !is_email(&email) {
        v.add("email", "must be an email address (name@domain)");
    }
    if !phone.is_empty() && !is_phone(&phone) {
        v.add("phone", "must be a phone number of 6 to 15 digits (+, spaces, dots, dashes and brackets allowed)");
    }
    if !media_url.is_empty() && !is_url(&media_url) {
        v.add("media_url", "must be an http or https URL without spaces");
    }
    let description = get("description");
    if description.chars().count() > MAX_DESCRIPTION {
        v.add(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        );
    } else if description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        v.add(
            "description",
            "must not hold control characters other than line breaks and tabs",
        );
    }
    let lat_long = match (get("lat"), get("long")) {
        ("", "") => None,
        (lat, "") if !lat.is_empty() => {
            v.add("long", "required with lat");
            None
        }
        ("", _) => {
            v.add("lat", "required with long");
            None
        }
        (lat, long) => {
            let lat_ok = degrees(lat, 90.0);
            let long_ok = degrees(long, 180.0);
            if !lat_ok {
                v.add("lat", "must be decimal degrees from -90 to 90");
            }
            if !long_ok {
                v.add("long", "must be decimal degrees from -180 to 180");
            }
            // Kept as plain decimals, so JSON shows them as numbers.
            (lat_ok && long_ok).then(|| (plain_degrees(lat), plain_degrees(long)))
        }
    };
    let location = Location {
        lat_long,
        address_string,
        address_id,
    };
    if location == Location::default()
        && !v.names("lat")
        && !v.names("long")
        && !v.names("address_string")
        && !v.names("address_id")
    {
        v.add(
            "lat",
            "a location is required: lat and long, address_string or address_id",
        );
    }
    v.finish()?;
    let canonical = {
        let mut fields: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(n, _)| n != "api_key")
            .map(|(n, value)| (n.as_str(), value.trim()))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        fields.sort_unstable();
        serde_json::to_string(&fields).unwrap_or_default()
    };
    let name = [first, last]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Submission {
        api_key,
        jurisdiction_id: (!jurisdiction_id.is_empty()).then_some(jurisdiction_id),
        service_code,
        location,
        attributes,
        name,
        email,
        phone,
        description: description.to_string(),
        media_url,
        device_id,
        account_id,
        canonical,
    })
}

/// `[code]` or `[code][]` after "attribute": the code, and whether it is
/// the multi-value form.
fn attribute_code(rest: &str) -> Option<(&str, bool)> {
    let (inner, multi) = match rest.strip_suffix("[]") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let code = inner.strip_prefix('[')?.strip_suffix(']')?;
    let ok = !code.is_empty()
        && code.len() <= 63
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((code, multi))
}

/// A one-line text of at most `max` characters with no control characters.
fn plain(s: &str, max: usize) -> Result<String, String> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(format!("at most {max} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not hold control characters".into());
    }
    Ok(s.to_string())
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn is_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    (6..=15).contains(&digits)
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-.()".contains(c))
}

fn is_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

/// Checked degrees as a plain decimal: `+1.50` is `1.5`.
fn plain_degrees(s: &str) -> String {
    s.parse::<f64>().map(|d| d.to_string()).unwrap_or_default()
}

/// Decimal degrees within ±`max`, written plainly (no exponent, no NaN).
fn degrees(s: &str, max: f64) -> bool {
    s.len() <= 20
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
        && s.parse::<f64>()
            .is_ok_and(|d| d.is_finite() && d.abs() <= max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form(text: &str) -> Pairs {
        decode(text.as_bytes()).unwrap()
    }

    fn fields(text: &str) -> Vec<String> {
        let mut out: Vec<String> = parse(&form(text))
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(
            form("a=b+c&d=%C3%A9%26&e&=x&attribute%5Bk%5D%5B%5D=1"),
            vec![
                ("a".to_string(), "b c".to_string()),
                ("d".into(), "é&".into()),
                ("e".into(), "".into()),
                ("".into(), "x".into()),
                ("attribute[k][]".into(), "1".into()),
            ]
        );
        assert_eq!(decode(b"a=%FF").unwrap_err().field, "a");
        assert_eq!(decode(b"a=%4").unwrap_err().field, "a");
        assert_eq!(decode(b"a=%zz").unwrap_err().field, "a");
        assert_eq!(decode(b"%FF=1").unwrap_err().field, "form");
        assert_eq!(decode(b"a=%00").unwrap(), vec![("a".into(), "\0".into())]);
    }

    #[test]
    fn a_full_request_parses() {
        let s = parse(&form(
            "api_key=k&jurisdiction_id=passports&service_code=delay&lat=-35.28&long=149.13\
             &address_string=1+Main+St&email=a%40b.example&first_name=Ann&last_name=Lee\
             &phone=%2B61+2+6000+0000&description=Slow%0Aservice&media_url=https%3A%2F%2Fx.example%2Fp.jpg\
             &device_id=d1&account_id=a1&attribute[x]=1&attribute[y][]=2&attribute[y][]=3",
        ))
        .unwrap();
        assert_eq!(s.api_key, "k");
        assert_eq!(s.jurisdiction_id.as_deref(), Some("passports"));
        assert_eq!(s.name, "Ann Lee");
        assert_eq!(
            s.location.lat_long,
            Some(("-35.28".to_string(), "149.13".to_string()))
        );
        assert_eq!(s.attributes["y"], vec!["2", "3"]);
        assert!(s.identifies_sender());
        assert!(!s.canonical.contains("api_key"));
        let text = s.narrative();
        assert!(text.starts_with("Slow\nservice\n\n[Open311] address: 1 Main St;"));
        assert!(text.contains("media_url: https://x.example/p.jpg"));
        // The same fields in another order are the same request.
        let t = parse(&form(
            "description=Slow%0Aservice&api_key=other&service_code=delay&lat=-35.28&long=149.13\
             &address_string=1+Main+St&email=a%40b.example&first_name=Ann&last_name=Lee\
             &phone=%2B61+2+6000+0000&media_url=https%3A%2F%2Fx.example%2Fp.jpg&jurisdiction_id=passports\
             &device_id=d1&account_id=a1&attribute[y][]=2&attribute[y][]=3&attribute[x]=1",
        ))
        .unwrap();
        assert_eq!(s.canonical, t.canonical);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(fields("api_key=k&lat=1&long=2"), ["service_code"]);
        assert_eq!(fields("service_code=a"), ["lat"]);
        assert_eq!(fields("service_code=a&lat=1"), ["long"]);
        assert_eq!(fields("service_code=a&long=1"), ["lat"]);
        assert_eq!(fields("service_code=a&lat=91&long=1"), ["lat"]);
        assert_eq!(fields("service_code=a&lat=1&long=1e2"), ["long"]);
        assert_eq!(fields("service_code=a&lat=NaN&long=1"), ["lat"]);
        let with_place = |extra: &str| fields(&format!("service_code=a&address_id=x&{extra}"));
        assert_eq!(with_place("email=nope"), ["email"]);
        assert_eq!(with_place("phone=12"), ["phone"]);
        assert_eq!(with_place("phone=call+me"), ["phone"]);
        assert_eq!(with_place("media_url=ftp%3A%2F%2Fx"), ["media_url"]);
        assert_eq!(with_place("first_name=a%00b"), ["first_name"]);
        assert_eq!(with_place("device_id=%1B"), ["device_id"]);
        assert_eq!(with_place("description=a%00b"), ["description"]);
        assert_eq!(
            with_place("email=a%40b.example&email=c%40d.example"),
            ["email"]
        );
        assert_eq!(
            with_place("attribute[a]=1&attribute[a]=2"),
            ["attribute[a]"]
        );
        assert_eq!(with_place("attribute[=1"), ["attribute["]);
        assert_eq!(with_place("attribute[a b]=1"), ["attribute[a b]"]);
        let long = "x".repeat(MAX_DESCRIPTION + 1);
        assert_eq!(with_place(&format!("description={long}")), ["description"]);
        let exact = "é".repeat(MAX_DESCRIPTION);
        assert!(
            parse(&form(&format!(
                "service_code=a&address_id=x&description={exact}"
            )))
            .is_ok()
        );
        // Several at once, each named.
        assert_eq!(
            fields("email=x&phone=y&lat=200&long=0"),
            ["email", "lat", "phone", "service_code"]
        );
    }

    #[test]
    fn coordinates_are_kept_as_plain_decimals() {
        let s = parse(&form("service_code=a&lat=%2B35.10&long=-.5")).unwrap();
        assert_eq!(
            s.location.lat_long,
            Some(("35.1".to_string(), "-0.5".to_string()))
        );
    }

    #[test]
    fn empty_is_absent_and_unknown_fields_are_left_alone() {
        let s = parse(&form(
            "service_code=a&address_string=&address_id=7&email=&lat=&long=&lang=en",
        ))
        .unwrap();
        assert_eq!(s.location.address_id, "7");
        assert!(s.email.is_empty() && s.location.lat_long.is_none());
        assert!(!s.identifies_sender());
        assert_eq!(
            s.narrative(),
            "(no description was given through Open311)\n\n[Open311] address_id: 7"
        );
    }
}
