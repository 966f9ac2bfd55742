//! The register's domain: what a client and a needs record are, the rules a
//! valid one obeys, who may do what, and how search values are normalised.
//! No I/O here.

use serde::{Deserialize, Serialize};
use touchstone_api::common::v1::Channel;
use touchstone_api::register::v1 as pb;
use touchstone_auth::Role;
use touchstone_platform::error::Violations;

/// Longest name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest free-text note or description, in characters.
pub const MAX_TEXT: usize = 4000;
/// Most external references per client.
pub const MAX_EXTERNAL_REFERENCES: usize = 20;
/// Most address lines.
pub const MAX_ADDRESS_LINES: usize = 5;

/// A client's personal data: everything that identifies or describes the
/// person. Stored only as one encrypted document per client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Personal {
    /// Given names.
    pub given_names: String,
    /// Family name.
    pub family_name: String,
    /// Preferred name.
    pub preferred_name: String,
    /// Organisation name.
    pub organisation_name: String,
    /// Email address.
    pub email: String,
    /// Phone number.
    pub phone: String,
    /// Postal address.
    pub postal_address: Option<Address>,
    /// Notes on accessibility needs.
    pub accessibility_notes: String,
    /// Equity characteristics (enum numbers; 0 = not given).
    pub characteristics: Characteristics,
    /// External references (system, id).
    pub external_references: Vec<(String, String)>,
}

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street lines.
    pub lines: Vec<String>,
    /// Locality.
    pub locality: String,
    /// Region.
    pub region: String,
    /// Postcode.
    pub postal_code: String,
    /// CLDR region code.
    pub region_code: String,
}

/// Equity characteristics, as proto enum numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Characteristics {
    /// `AgeBand`.
    pub age_band: i32,
    /// `Gender`.
    pub gender: i32,
    /// `Answer`.
    pub disability: i32,
    /// `Answer`.
    pub first_nations: i32,
    /// `Answer`.
    pub culturally_linguistically_diverse: i32,
    /// `Answer`.
    pub remote_location: i32,
}

/// A client's fields that callers set. A value of this type is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFields {
    /// `ClientKind`, never unspecified.
    pub kind: i32,
    /// `Channel`.
    pub preferred_channel: i32,
    /// BCP 47 tag or "".
    pub preferred_language: String,
    /// Whether an interpreter is needed.
    pub interpreter_needed: bool,
    /// `AccessibilityNeed` values, sorted, without duplicates.
    pub accessibility_needs: Vec<i32>,
    /// Personal data.
    pub personal: Personal,
}

/// Updatable client fields, as named in an update mask.
pub const CLIENT_MASK_FIELDS: &[&str] = &[
    "kind",
    "given_names",
    "family_name",
    "preferred_name",
    "organisation_name",
    "email",
    "phone",
    "postal_address",
    "preferred_channel",
    "preferred_language",
    "interpreter_needed",
    "accessibility_needs",
    "accessibility_notes",
    "characteristics",
    "external_references",
];

/// Output-only client fields: naming one in an update mask is an error.
const CLIENT_OUTPUT_ONLY: &[&str] = &[
    "name",
    "consents",
    "create_time",
    "update_time",
    "etag",
    "erased",
    "erase_time",
];

impl ClientFields {
    /// Parses and checks a client from the API; violations are reported with
    /// paths under `prefix` (e.g. "client").
    pub fn parse(c: &pb::Client, prefix: &str) -> Result<ClientFields, Violations> {
        let mut v = Violations::new();
        let fields = Self::from_proto_unchecked(c);
        fields.check(prefix, &mut v);
        if v.is_empty() { Ok(fields) } else { Err(v) }
    }

    fn from_proto_unchecked(c: &pb::Client) -> ClientFields {
        let mut needs = c.accessibility_needs.clone();
        needs.sort_unstable();
        needs.dedup();
        let ch = c.characteristics.unwrap_or_default();
        ClientFields {
            kind: c.kind,
            preferred_channel: c.preferred_channel,
            preferred_language: c.preferred_language.trim().to_string(),
            interpreter_needed: c.interpreter_needed,
            accessibility_needs: needs,
            personal: Personal {
                given_names: c.given_names.trim().to_string(),
                family_name: c.family_name.trim().to_string(),
                preferred_name: c.preferred_name.trim().to_string(),
                organisation_name: c.organisation_name.trim().to_string(),
                email: c.email.trim().to_string(),
                phone: c.phone.trim().to_string(),
                postal_address: c.postal_address.as_ref().map(|a| Address {
                    lines: a
                        .address_lines
                        .iter()
                        .map(|l| l.trim().to_string())
                        .collect(),
                    locality: a.locality.trim().to_string(),
                    region: a.region.trim().to_string(),
                    postal_code: a.postal_code.trim().to_string(),
                    region_code: a.region_code.trim().to_string(),
                }),
                accessibility_notes: c.accessibility_notes.trim().to_string(),
                characteristics: Characteristics {
                    age_band: ch.age_band,
                    gender: ch.gender,
                    disability: ch.disability,
                    first_nations: ch.first_nations,
                    culturally_linguistically_diverse: ch.culturally_linguistically_diverse,
                    remote_location: ch.remote_location,
                },
                external_references: c
                    .external_references
                    .iter()
                    .map(|r| (r.system.trim().to_string(), r.id.trim().to_string()))
                    .collect(),
            },
        }
    }

    /// Applies the fields named in `mask` from `patch` onto `self`, then
    /// checks the result. An empty mask means every updatable field that is
    /// set (non-default) in `patch`; "*" means every updatable field.
    pub fn apply_mask(
        &self,
        patch: &pb::Client,
        mask: &[String],
    ) -> Result<(ClientFields, Vec<String>), Violations> {
        let mut v = Violations::new();
        let incoming = Self::from_proto_unchecked(patch);
        let paths: Vec<String> = if mask.is_empty() {
            implicit_mask(patch)
        } else if mask.iter().any(|p| p == "*") {
            CLIENT_MASK_FIELDS.iter().map(|s| s.to_string()).collect()
        } else {
            mask.to_vec()
        };
        let mut next = self.clone();
        for path in &paths {
            let p = &mut next.personal;
            let q = &incoming.personal;
            match path.as_str() {
                "kind" => next.kind = incoming.kind,
                "given_names" => p.given_names = q.given_names.clone(),
                "family_name" => p.family_name = q.family_name.clone(),
                "preferred_name" => p.preferred_name = q.preferred_name.clone(),
                "organisation_name" => p.organisation_name = q.organisation_name.clone(),
                "email" => p.email = q.email.clone(),
                "phone" => p.phone = q.phone.clone(),
                "postal_address" => p.postal_address = q.postal_address.clone(),
                "preferred_channel" => next.preferred_channel = incoming.preferred_channel,
                "preferred_language" => {
                    next.preferred_language = incoming.preferred_language.clone()
                }
                "interpreter_needed" => next.interpreter_needed = incoming.interpreter_needed,
                "accessibility_needs" => {
                    next.accessibility_needs = incoming.accessibility_needs.clone()
                }
                "accessibility_notes" => p.accessibility_notes = q.accessibility_notes.clone(),
                "characteristics" => p.characteristics = q.characteristics,
                "external_references" => p.external_references = q.external_references.clone(),
                other if CLIENT_OUTPUT_ONLY.contains(&other) => {
                    v.add("update_mask", format!("{other} is output only"))
                }
                other => v.add(
                    "update_mask",
                    format!(
                        "unknown or non-updatable field path: {}",
                        truncate(other, 60)
                    ),
                ),
            }
        }
        if !v.is_empty() {
            return Err(v);
        }
        next.check("client", &mut v);
        if v.is_empty() {
            Ok((next, paths))
        } else {
            Err(v)
        }
    }

    fn check(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        match pb::ClientKind::try_from(self.kind) {
            Ok(pb::ClientKind::Unspecified) => v.add(f("kind"), "required"),
            Err(_) => v.add(f("kind"), "unknown value"),
            Ok(pb::ClientKind::Person) => {
                if self.personal.given_names.is_empty() && self.personal.family_name.is_empty() {
                    v.add(f("family_name"), "a person needs a given or family name");
                }
                if !self.personal.organisation_name.is_empty() {
                    v.add(f("organisation_name"), "only for organisations");
                }
            }
            Ok(pb::ClientKind::Organisation) => {
                if self.personal.organisation_name.is_empty() {
                    v.add(f("organisation_name"), "required for an organisation");
                }
            }
        }
        if Channel::try_from(self.preferred_channel).is_err() {
            v.add(f("preferred_channel"), "unknown value");
        }
        if !self.preferred_language.is_empty() && !is_language_tag(&self.preferred_language) {
            v.add(
                f("preferred_language"),
                "must be a BCP 47 language tag, e.g. en or zh-Hant",
            );
        }
        for (i, need) in self.accessibility_needs.iter().enumerate() {
            match pb::AccessibilityNeed::try_from(*need) {
                Ok(pb::AccessibilityNeed::Unspecified) | Err(_) => v.add(
                    format!("{prefix}.accessibility_needs[{i}]"),
                    "unknown value",
                ),
                Ok(_) => {}
            }
        }
        let p = &self.personal;
        text(v, &f("given_names"), &p.given_names, MAX_NAME);
        text(v, &f("family_name"), &p.family_name, MAX_NAME);
        text(v, &f("preferred_name"), &p.preferred_name, MAX_NAME);
        text(v, &f("organisation_name"), &p.organisation_name, MAX_NAME);
        text(
            v,
            &f("accessibility_notes"),
            &p.accessibility_notes,
            MAX_TEXT,
        );
        if !p.email.is_empty() && !is_email(&p.email) {
            v.add(f("email"), "must be an email address like name@example.org");
        }
        if !p.phone.is_empty() && !is_phone(&p.phone) {
            v.add(f("phone"), "must be a phone number of 6 to 15 digits");
        }
        if let Some(a) = &p.postal_address {
            if a.lines.len() > MAX_ADDRESS_LINES {
                v.add(f("postal_address.address_lines"), "at most 5 lines");
            }
            for (i, line) in a.lines.iter().enumerate() {
                text(
                    v,
                    &format!("{prefix}.postal_address.address_lines[{i}]"),
                    line,
                    MAX_NAME,
                );
            }
            text(v, &f("postal_address.locality"), &a.locality, 100);
            text(v, &f("postal_address.region"), &a.region, 100);
            text(v, &f("postal_address.postal_code"), &a.postal_code, 16);
            let code_ok =
                a.region_code.len() == 2 && a.region_code.bytes().all(|b| b.is_ascii_uppercase());
            if !a.region_code.is_empty() && !code_ok {
                v.add(
                    f("postal_address.region_code"),
                    "must be a two-letter CLDR region code, e.g. AU",
                );
            }
        }
        let ch = &p.characteristics;
        for (name, value, ok) in [
            (
                "age_band",
                ch.age_band,
                pb::AgeBand::try_from(ch.age_band).is_ok(),
            ),
            ("gender", ch.gender, pb::Gender::try_from(ch.gender).is_ok()),
            (
                "disability",
                ch.disability,
                pb::Answer::try_from(ch.disability).is_ok(),
            ),
            (
                "first_nations",
                ch.first_nations,
                pb::Answer::try_from(ch.first_nations).is_ok(),
            ),
            (
                "culturally_linguistically_diverse",
                ch.culturally_linguistically_diverse,
                pb::Answer::try_from(ch.culturally_linguistically_diverse).is_ok(),
            ),
            (
                "remote_location",
                ch.remote_location,
                pb::Answer::try_from(ch.remote_location).is_ok(),
            ),
        ] {
            if !ok {
                v.add(
                    format!("{prefix}.characteristics.{name}"),
                    format!("unknown value {value}"),
                );
            }
        }
        if p.external_references.len() > MAX_EXTERNAL_REFERENCES {
            v.add(f("external_references"), "at most 20 references");
        }
        for (i, (system, id)) in p.external_references.iter().enumerate() {
            let at = format!("{prefix}.external_references[{i}]");
            if system.is_empty() {
                v.add(format!("{at}.system"), "required");
            }
            if id.is_empty() {
                v.add(format!("{at}.id"), "required");
            }
            text(v, &format!("{at}.system"), system, 100);
            text(v, &format!("{at}.id"), id, 100);
        }
    }

    /// The normalised values exact-match search finds this client by, as
    /// (kind, value) pairs.
    pub fn search_keys(&self) -> Vec<(&'static str, String)> {
        use touchstone_crypto::normalise;
        let p = &self.personal;
        let mut keys = Vec::new();
        if !p.email.is_empty() {
            keys.push((SEARCH_EMAIL, normalise::email(&p.email)));
        }
        if !p.phone.is_empty() {
            keys.push((SEARCH_PHONE, normalise::phone(&p.phone)));
        }
        if let Some(name) = full_name(p) {
            keys.push((SEARCH_NAME, normalise::full_name(&name)));
        }
        for (system, id) in &p.external_references {
            keys.push((SEARCH_EXTERNAL, normalise::external_reference(system, id)));
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Search kinds.
pub const SEARCH_EMAIL: &str = "email";
/// Search kinds.
pub const SEARCH_PHONE: &str = "phone";
/// Search kinds.
pub const SEARCH_NAME: &str = "name";
/// Search kinds.
pub const SEARCH_EXTERNAL: &str = "external";

/// "Given Family" for a person, the organisation name for an organisation.
pub fn full_name(p: &Personal) -> Option<String> {
    if !p.organisation_name.is_empty() {
        return Some(p.organisation_name.clone());
    }
    let joined = format!("{} {}", p.given_names, p.family_name);
    let trimmed = joined.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn implicit_mask(c: &pb::Client) -> Vec<String> {
    let mut paths = Vec::new();
    let mut push = |set: bool, name: &str| {
        if set {
            paths.push(name.to_string());
        }
    };
    push(c.kind != 0, "kind");
    push(!c.given_names.is_empty(), "given_names");
    push(!c.family_name.is_empty(), "family_name");
    push(!c.preferred_name.is_empty(), "preferred_name");
    push(!c.organisation_name.is_empty(), "organisation_name");
    push(!c.email.is_empty(), "email");
    push(!c.phone.is_empty(), "phone");
    push(c.postal_address.is_some(), "postal_address");
    push(c.preferred_channel != 0, "preferred_channel");
    push(!c.preferred_language.is_empty(), "preferred_language");
    push(c.interpreter_needed, "interpreter_needed");
    push(!c.accessibility_needs.is_empty(), "accessibility_needs");
    push(!c.accessibility_notes.is_empty(), "accessibility_notes");
    push(c.characteristics.is_some(), "characteristics");
    push(!c.external_references.is_empty(), "external_references");
    paths
}

fn text(v: &mut Violations, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.add(field, format!("at most {max} characters"));
    } else if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        v.add(field, "must not contain control characters");
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A pragmatic check: one '@', a non-empty local part without spaces, and a
/// dotted domain. Deliverability is the mail system's business.
pub fn is_email(s: &str) -> bool {
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

/// Digits with the usual separators; 6 to 15 digits (E.164 allows 15).
pub fn is_phone(s: &str) -> bool {
    if s.len() > 32 {
        return false;
    }
    let allowed = s
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_digit() || " -().".contains(c) || (c == '+' && i == 0));
    let digits = s.chars().filter(char::is_ascii_digit).count();
    allowed && (6..=15).contains(&digits)
}

/// A BCP 47-shaped tag: 2–3 letter language, then subtags of 1–8
/// alphanumerics.
pub fn is_language_tag(s: &str) -> bool {
    if s.len() > 35 {
        return false;
    }
    let mut parts = s.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    lang_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A needs record's fields that callers set. A value of this type is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedFields {
    /// Category, 1–100 characters.
    pub category: String,
    /// `NeedStatus`, never unspecified.
    pub status: i32,
    /// yyyymmdd.
    pub next_review_date: Option<i64>,
    /// Personal part (encrypted).
    pub personal: NeedPersonal,
}

/// The encrypted part of a needs record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeedPersonal {
    /// Description.
    pub description: String,
    /// Agreed service option.
    pub agreed_service_option: String,
}

/// Updatable need fields.
pub const NEED_MASK_FIELDS: &[&str] = &[
    "category",
    "description",
    "agreed_service_option",
    "status",
    "next_review_date",
];

impl NeedFields {
    /// Parses and checks a need from the API.
    pub fn parse(n: &pb::Need, prefix: &str) -> Result<NeedFields, Violations> {
        let mut v = Violations::new();
        let mut fields = Self::unchecked(n, prefix, &mut v);
        if fields.status == pb::NeedStatus::Unspecified as i32 {
            fields.status = pb::NeedStatus::Open as i32;
        }
        fields.check(prefix, &mut v);
        if v.is_empty() { Ok(fields) } else { Err(v) }
    }

    fn unchecked(n: &pb::Need, prefix: &str, v: &mut Violations) -> NeedFields {
        let next_review_date = match &n.next_review_date {
            None => None,
            Some(d) => {
                let key = touchstone_platform::times::date_key(d);
                if key.is_none() {
                    v.add(
                        format!("{prefix}.next_review_date"),
                        "not a valid calendar date",
                    );
                }
                key
            }
        };
        NeedFields {
            category: n.category.trim().to_string(),
            status: n.status,
            next_review_date,
            personal: NeedPersonal {
                description: n.description.trim().to_string(),
                agreed_service_option: n.agreed_service_option.trim().to_string(),
            },
        }
    }

    /// Applies a masked update and checks the result.
    pub fn apply_mask(&self, patch: &pb::Need, mask: &[String]) -> Result<NeedFields, Violations> {
        let mut v = Violations::new();
        let incoming = Self::unchecked(patch, "need", &mut v);
        let paths: Vec<String> = if mask.is_empty() {
            // AIP-134: no mask means the fields the request sets.
            [
                (!patch.category.is_empty(), "category"),
                (!patch.description.is_empty(), "description"),
                (
                    !patch.agreed_service_option.is_empty(),
                    "agreed_service_option",
                ),
                (patch.status != 0, "status"),
                (patch.next_review_date.is_some(), "next_review_date"),
            ]
            .into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| name.to_string())
            .collect()
        } else if mask.iter().any(|p| p == "*") {
            NEED_MASK_FIELDS.iter().map(|s| s.to_string()).collect()
        } else {
            mask.to_vec()
        };
        let mut next = self.clone();
        for path in &paths {
            match path.as_str() {
                "category" => next.category = incoming.category.clone(),
                "description" => next.personal.description = incoming.personal.description.clone(),
                "agreed_service_option" => {
                    next.personal.agreed_service_option =
                        incoming.personal.agreed_service_option.clone()
                }
                "status" => next.status = incoming.status,
                "next_review_date" => next.next_review_date = incoming.next_review_date,
                other => v.add(
                    "update_mask",
                    format!(
                        "unknown or non-updatable field path: {}",
                        truncate(other, 60)
                    ),
                ),
            }
        }
        next.check("need", &mut v);
        if v.is_empty() { Ok(next) } else { Err(v) }
    }

    fn check(&self, prefix: &str, v: &mut Violations) {
        if self.category.is_empty() {
            v.add(format!("{prefix}.category"), "required");
        }
        text(v, &format!("{prefix}.category"), &self.category, 100);
        text(
            v,
            &format!("{prefix}.description"),
            &self.personal.description,
            MAX_TEXT,
        );
        text(
            v,
            &format!("{prefix}.agreed_service_option"),
            &self.personal.agreed_service_option,
            MAX_TEXT,
        );
        match pb::NeedStatus::try_from(self.status) {
            Ok(pb::NeedStatus::Unspecified) => v.add(format!("{prefix}.status"), "required"),
            Err(_) => v.add(format!("{prefix}.status"), "unknown value"),
            Ok(_) => {}
        }
    }
}

/// Parses a consent purpose.
pub fn consent_purpose(value: i32) -> Result<i32, &'static str> {
    match pb::ConsentPurpose::try_from(value) {
        Ok(pb::ConsentPurpose::Unspecified) => Err("required"),
        Ok(_) => Ok(value),
        Err(_) => Err("unknown value"),
    }
}

/// What a method does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read personal data.
    Read,
    /// Create or change clients, needs, consents.
    Write,
    /// Erase a client.
    Erase,
    /// Export a client (subject access).
    Export,
    /// Read audit records.
    Audit,
    /// Read the change feed.
    Feed,
}

impl Action {
    /// Roles allowed to do this. `analyst` is never among the roles that see
    /// personal data.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Read => &[Role::Officer, Role::SeniorOfficer, Role::Service],
            Action::Write => &[Role::Officer, Role::SeniorOfficer],
            Action::Erase => &[Role::SeniorOfficer, Role::AgencyAdmin],
            Action::Export => &[Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin],
            Action::Audit => &[Role::AgencyAdmin],
            Action::Feed => &[Role::Service, Role::AgencyAdmin],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> pb::Client {
        pb::Client {
            kind: pb::ClientKind::Person as i32,
            given_names: "Mere".into(),
            family_name: "Parata".into(),
            email: "mere@example.org".into(),
            phone: "+64 21 555 0199".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_client_parses() {
        let f = ClientFields::parse(&person(), "client").expect("valid");
        assert_eq!(full_name(&f.personal).as_deref(), Some("Mere Parata"));
        assert_eq!(f.search_keys().len(), 3);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut c = person();
        c.email = "not-an-email".into();
        c.phone = "12".into();
        c.preferred_channel = 99;
        c.accessibility_needs = vec![0, 3, 77];
        c.given_names = "x".repeat(MAX_NAME + 1);
        c.characteristics = Some(pb::Characteristics {
            gender: 42,
            ..Default::default()
        });
        c.external_references = vec![pb::ExternalReference {
            system: "".into(),
            id: "1".into(),
        }];
        let v = ClientFields::parse(&c, "client")
            .expect_err("invalid")
            .finish()
            .expect_err("list");
        let fields: Vec<&str> = v.iter().map(|x| x.field.as_str()).collect();
        for want in [
            "client.email",
            "client.phone",
            "client.preferred_channel",
            "client.accessibility_needs[0]",
            "client.accessibility_needs[2]",
            "client.given_names",
            "client.characteristics.gender",
            "client.external_references[0].system",
        ] {
            assert!(fields.contains(&want), "{want} missing from {fields:?}");
        }
    }

    #[test]
    fn kind_is_required_and_shapes_names() {
        let mut c = person();
        c.kind = 0;
        assert!(ClientFields::parse(&c, "client").is_err());
        c.kind = pb::ClientKind::Organisation as i32;
        let e = ClientFields::parse(&c, "client")
            .expect_err("no org name")
            .finish()
            .expect_err("v");
        assert_eq!(e[0].field, "client.organisation_name");
    }

    #[test]
    fn masks_apply_only_named_fields() {
        let f = ClientFields::parse(&person(), "client").expect("valid");
        let patch = pb::Client {
            email: "new@example.org".into(),
            family_name: "Other".into(),
            ..Default::default()
        };
        let (next, paths) = f.apply_mask(&patch, &["email".into()]).expect("ok");
        assert_eq!(next.personal.email, "new@example.org");
        assert_eq!(next.personal.family_name, "Parata");
        assert_eq!(paths, vec!["email".to_string()]);
        assert!(f.apply_mask(&patch, &["etag".into()]).is_err());
        assert!(f.apply_mask(&patch, &["nonsense".into()]).is_err());
        let (all, _) = f.apply_mask(&patch, &[]).expect("implicit");
        assert_eq!(all.personal.family_name, "Other");
    }

    #[test]
    fn format_checks() {
        assert!(is_email("a.b+c@example.gov.au"));
        for bad in [
            "a@b",
            "@example.org",
            "a@@example.org",
            "a b@example.org",
            "a@.org",
            "a@example..org",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_phone("(02) 6123 4567"));
        assert!(!is_phone("12345"));
        assert!(!is_phone("02 6123 4567 ext 3"));
        assert!(is_language_tag("zh-Hant-TW"));
        assert!(!is_language_tag("english"));
    }

    #[test]
    fn analysts_never_read_personal_data() {
        for a in [Action::Read, Action::Write, Action::Erase, Action::Export] {
            assert!(!a.roles().contains(&Role::Analyst));
        }
    }
}
