//! Canonical forms of searchable values, so that a blind index matches regardless of case,
//! spacing or punctuation that people type differently.

/// Trimmed and lowercased (Unicode).
pub fn email(s: &str) -> String {
    s.trim().to_lowercase()
}

/// ASCII digits only, keeping a `+` if it is the first non-blank character, so
/// `" +61 (02) 9999-0000 "` and `"+610299990000"` compare equal.
pub fn phone(s: &str) -> String {
    let s = s.trim_start();
    let mut out = String::with_capacity(s.len());
    if s.starts_with('+') {
        out.push('+');
    }
    out.extend(s.chars().filter(char::is_ascii_digit));
    out
}

/// Lowercased (Unicode) with inner whitespace runs collapsed to one space and the ends
/// trimmed. No Unicode normalisation (NFC) is applied: composed and decomposed accents still
/// differ.
pub fn full_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.to_lowercase());
    }
    out
}

/// `system` trimmed and lowercased, `:`, then `id` trimmed. The id keeps its case because
/// other systems' identifiers may be case-sensitive.
pub fn external_reference(system: &str, id: &str) -> String {
    // Length-prefixed, so ("a:b", "c") and ("a", "b:c") cannot collide.
    let system = system.trim().to_lowercase();
    format!("{}:{}:{}", system.len(), system, id.trim())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            email("  Ada.Lovelace@Example.ORG \n"),
            "ada.lovelace@example.org"
        );
        assert_eq!(email("ÉLODIE@exemple.fr"), "élodie@exemple.fr");
        assert_eq!(email(""), "");
    }

    #[test]
    fn phones() {
        assert_eq!(phone(" +61 (02) 9999-0000 "), "+610299990000");
        assert_eq!(phone("02 9999 0000"), "0299990000");
        assert_eq!(phone("+1-555-0100"), phone("+1 555 0100"));
        assert_eq!(phone("ext. 12+3"), "123");
        assert_eq!(phone("++44 20"), "+4420");
        assert_eq!(phone(""), "");
        assert_eq!(phone("٣٤٥"), "", "non-ASCII digits are not phone digits");
    }

    #[test]
    fn full_names() {
        assert_eq!(full_name("  Ada   Lovelace "), "ada lovelace");
        assert_eq!(full_name("Zoë\tO'BRIEN\n Smith"), "zoë o'brien smith");
        assert_eq!(full_name("ÅSA\u{00a0}LINDQVIST"), "åsa lindqvist");
        assert_eq!(full_name("   "), "");
    }

    #[test]
    fn external_references() {
        assert_eq!(
            external_reference(" CRM ", "  AbC-123 "),
            "3:crm:AbC-123".to_string()
        );
        assert_ne!(
            external_reference("a:b", "c"),
            external_reference("a", "b:c")
        );
        assert_ne!(
            external_reference("crm", "abc"),
            external_reference("crm", "ABC")
        );
    }
}
