//! Comment analysis, with no I/O: masking personal data in the copy kept for
//! analysis, a lexicon sentiment score, and topic tags. The methods are
//! documented in docs/feedback.md and tested against the labelled comments
//! in tests/data/comments.csv.

use crate::domain::TopicRuleDef;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// Replaces email addresses, phone numbers, card-like and id-like numbers.
/// What is left keeps the comment readable: "[email]", "[phone]", "[card]",
/// "[id]".
pub fn mask(text: &str) -> String {
    let tokens: Vec<String> = split_keep_space(text)
        .into_iter()
        .map(|t| mask_token(&t))
        .collect();
    mask_number_runs(&tokens.concat())
}

/// Splits into alternating runs of whitespace and non-whitespace.
fn split_keep_space(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_space = None;
    for c in text.chars() {
        let space = c.is_whitespace();
        if in_space.is_some_and(|s| s != space) {
            out.push(std::mem::take(&mut current));
        }
        in_space = Some(space);
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Masks a whole token that is an email address or an id-like mix of
/// letters and digits, keeping surrounding punctuation.
fn mask_token(token: &str) -> String {
    if token.chars().all(char::is_whitespace) {
        return token.to_string();
    }
    let start = token
        .find(|c: char| !matches!(c, '(' | '<' | '[' | '"' | '\''))
        .unwrap_or(token.len());
    let end = token
        .rfind(|c: char| {
            !matches!(
                c,
                '.' | ',' | ';' | ':' | '!' | '?' | ')' | '>' | ']' | '"' | '\''
            )
        })
        .map_or(start, |i| {
            i + token[i..].chars().next().map_or(1, char::len_utf8)
        });
    if start >= end {
        return token.to_string();
    }
    let (head, core, tail) = (&token[..start], &token[start..end], &token[end..]);
    if is_email(core) {
        return format!("{head}[email]{tail}");
    }
    let digits = core.chars().filter(char::is_ascii_digit).count();
    let letters = core.chars().filter(|c| c.is_alphabetic()).count();
    let plain = core
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '/');
    if plain && letters > 0 && digits >= 5 {
        return format!("{head}[id]{tail}");
    }
    token.to_string()
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
}

/// Masks runs of digits (with spaces, dashes, dots and brackets between):
/// 13 to 19 digits passing the Luhn check are a card; 8 to 15 digits
/// starting with '+', '0' or '(' are a phone number; any other run of 6 or
/// more digits is an id.
fn mask_number_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (matches!(chars[i], '+' | '(')
                && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        let preceded_by_word = i > 0 && chars[i - 1].is_alphanumeric();
        if !starts || preceded_by_word {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Extend over digits and single separators that are followed by a digit.
        let mut j = i + 1;
        let mut last_digit = if chars[i].is_ascii_digit() { i } else { i + 1 };
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                last_digit = j;
                j += 1;
            } else if is_separator(chars[j])
                && chars
                    .get(j + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '(')
            {
                j += 1;
            } else if is_separator(chars[j])
                && chars.get(j + 1).is_some_and(|c| is_separator(*c))
                && chars.get(j + 2).is_some_and(char::is_ascii_digit)
            {
                j += 2;
            } else {
                break;
            }
        }
        let end = last_digit + 1;
        let run: String = chars[i..end].iter().collect();
        let digits: Vec<u32> = run.chars().filter_map(|c| c.to_digit(10)).collect();
        let followed_by_word = chars.get(end).is_some_and(|c| c.is_alphabetic());
        let label = if followed_by_word {
            None
        } else if (13..=19).contains(&digits.len()) && luhn(&digits) {
            Some("[card]")
        } else if (8..=15).contains(&digits.len())
            && (run.starts_with('+') || run.starts_with('0') || run.starts_with('('))
        {
            Some("[phone]")
        } else if digits.len() >= 6 {
            Some("[id]")
        } else {
            None
        };
        match label {
            Some(l) => out.push_str(l),
            None => out.push_str(&run),
        }
        i = end;
    }
    out
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')')
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Valence of words and phrases, from -3 (very negative) to 3 (very positive).
const LEXICON: &[(&str, f64)] = &[
    // positive
    ("excellent", 3.0),
    ("outstanding", 3.0),
    ("fantastic", 3.0),
    ("amazing", 3.0),
    ("wonderful", 3.0),
    ("brilliant", 3.0),
    ("superb", 3.0),
    ("perfect", 3.0),
    ("great", 2.5),
    ("love", 2.5),
    ("loved", 2.5),
    ("thank", 2.0),
    ("thanks", 2.0),
    ("grateful", 2.5),
    ("appreciate", 2.0),
    ("appreciated", 2.0),
    ("good", 1.9),
    ("happy", 2.0),
    ("pleased", 2.0),
    ("satisfied", 2.0),
    ("helpful", 2.0),
    ("friendly", 2.0),
    ("kind", 2.0),
    ("polite", 1.8),
    ("courteous", 1.8),
    ("respectful", 1.8),
    ("patient", 1.5),
    ("professional", 1.8),
    ("efficient", 1.8),
    ("quick", 1.5),
    ("quickly", 1.5),
    ("fast", 1.5),
    ("prompt", 1.5),
    ("promptly", 1.5),
    ("easy", 1.8),
    ("simple", 1.3),
    ("smooth", 1.5),
    ("clear", 1.3),
    ("clearly", 1.3),
    ("resolved", 1.5),
    ("sorted", 1.3),
    ("nice", 1.8),
    ("best", 2.5),
    ("impressed", 2.5),
    ("recommend", 1.5),
    ("fair", 1.3),
    ("fairly", 1.3),
    ("well", 1.2),
    ("caring", 2.0),
    ("knowledgeable", 2.0),
    ("reassuring", 1.8),
    ("straightforward", 1.5),
    ("painless", 1.8),
    ("seamless", 2.0),
    ("convenient", 1.5),
    ("welcoming", 1.8),
    ("ok", 0.5),
    ("okay", 0.5),
    // negative
    ("terrible", -3.0),
    ("awful", -3.0),
    ("horrible", -3.0),
    ("appalling", -3.0),
    ("disgraceful", -3.0),
    ("useless", -2.8),
    ("worst", -3.0),
    ("hopeless", -2.5),
    ("shocking", -2.5),
    ("pathetic", -2.8),
    ("disgusting", -3.0),
    ("unacceptable", -2.8),
    ("rude", -2.5),
    ("arrogant", -2.3),
    ("dismissive", -2.0),
    ("disrespectful", -2.3),
    ("unhelpful", -2.0),
    ("incompetent", -2.8),
    ("bad", -2.0),
    ("poor", -2.0),
    ("poorly", -2.0),
    ("angry", -2.3),
    ("annoyed", -1.8),
    ("frustrated", -2.0),
    ("frustrating", -2.0),
    ("disappointed", -2.0),
    ("disappointing", -2.0),
    ("upset", -2.0),
    ("confusing", -1.8),
    ("confused", -1.5),
    ("unclear", -1.5),
    ("difficult", -1.5),
    ("hard", -1.0),
    ("slow", -1.5),
    ("delay", -1.5),
    ("delayed", -1.5),
    ("delays", -1.5),
    ("late", -1.2),
    ("lost", -1.8),
    ("wrong", -2.0),
    ("mistake", -1.8),
    ("error", -1.5),
    ("broken", -2.0),
    ("crashed", -2.0),
    ("failed", -2.0),
    ("fail", -2.0),
    ("problem", -1.5),
    ("problems", -1.5),
    ("complaint", -1.5),
    ("ignored", -2.2),
    ("waste", -2.5),
    ("wasted", -2.5),
    ("nightmare", -3.0),
    ("stressful", -2.0),
    ("stress", -1.8),
    ("unfair", -2.3),
    ("unfairly", -2.3),
    ("impossible", -2.0),
    ("never", -1.0),
    ("nobody", -1.5),
    ("ridiculous", -2.5),
    ("hung", -1.2),
    ("forever", -1.5),
    ("ages", -1.5),
    ("endless", -1.8),
    ("uncaring", -2.3),
    // phrases
    ("took ages", -2.0),
    ("waste of time", -3.0),
    ("on hold", -1.5),
    ("no one", -1.5),
    ("not happy", -2.0),
    ("let down", -2.0),
    ("went above and beyond", 3.0),
    ("above and beyond", 3.0),
    ("no help", -2.5),
    ("no problem", 1.0),
    ("no problems", 1.0),
    ("no issues", 1.0),
    ("no fuss", 1.5),
];

const NEGATORS: &[&str] = &[
    "not", "no", "never", "cannot", "cant", "can't", "don't", "dont", "didn't", "didnt", "wasn't",
    "wasnt", "isn't", "isnt", "won't", "wont", "couldn't", "couldnt", "wouldn't", "wouldnt",
    "weren't", "aren't", "hardly", "without", "nor",
];

const BOOSTERS: &[&str] = &[
    "very",
    "really",
    "extremely",
    "so",
    "incredibly",
    "totally",
    "absolutely",
    "completely",
    "utterly",
    "super",
    "truly",
    "most",
];

/// The lexicon, for lookups.
static VALENCE: LazyLock<HashMap<&'static str, f64>> =
    LazyLock::new(|| LEXICON.iter().copied().collect());

/// First words of the lexicon's phrases: only after one of them is a
/// phrase looked for.
static PHRASE_HEADS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    LEXICON
        .iter()
        .filter_map(|(p, _)| p.split_once(' ').map(|(head, _)| head))
        .collect()
});

/// A keyword as it is searched for: its words, space-separated and padded.
fn needle(keyword: &str) -> Option<String> {
    let w = words(keyword);
    (!w.is_empty()).then(|| format!(" {} ", w.join(" ")))
}

/// The built-in topics' keywords, normalised once.
static TOPIC_NEEDLES: LazyLock<Vec<(&'static str, Vec<String>)>> = LazyLock::new(|| {
    TOPICS
        .iter()
        .map(|(topic, keywords)| (*topic, keywords.iter().filter_map(|k| needle(k)).collect()))
        .collect()
});

/// Lower-case words, apostrophes kept inside words.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\u{2019}', '\u{2018}'], "'")
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Sentiment of a comment, from -1 (negative) to 1 (positive): the sum of
/// the valences of lexicon words and phrases, each flipped and damped
/// (x -0.74) when one of the three words before it is a negator and
/// strengthened (x 1.3) after a booster; words after "but" count 1.5 times
/// and words before it half; the sum is normalised as s / sqrt(s² + 15).
pub fn sentiment(text: &str) -> f64 {
    let w = words(text);
    let but = w.iter().rposition(|x| x == "but" || x == "however");
    let mut total = 0.0;
    let mut i = 0;
    while i < w.len() {
        // Longest phrase first (up to four words).
        let mut matched = None;
        if PHRASE_HEADS.contains(w[i].as_str()) {
            for len in (2..=4.min(w.len() - i)).rev() {
                if let Some(v) = VALENCE.get(w[i..i + len].join(" ").as_str()) {
                    matched = Some((len, *v));
                    break;
                }
            }
        }
        if matched.is_none() {
            matched = VALENCE.get(w[i].as_str()).map(|v| (1, *v));
        }
        let Some((len, mut value)) = matched else {
            i += 1;
            continue;
        };
        // A phrase that itself starts with a negator already carries it.
        let own_negator = NEGATORS.contains(&w[i].as_str());
        let window = &w[i.saturating_sub(3)..i];
        if !own_negator
            && window
                .iter()
                .any(|x| NEGATORS.contains(&x.as_str()) || x.ends_with("n't"))
        {
            value *= -0.74;
        }
        if i > 0 && BOOSTERS.contains(&w[i - 1].as_str()) {
            value *= 1.3;
        }
        if let Some(b) = but {
            value *= if i > b { 1.5 } else { 0.5 };
        }
        total += value;
        i += len;
    }
    (total / (total * total + 15.0).sqrt()).clamp(-1.0, 1.0)
}

/// Whether a sentiment score is negative (at or below -0.05).
pub fn is_negative(score: f64) -> bool {
    score <= -0.05
}

/// A sentiment score's label: "negative", "neutral" or "positive".
pub fn label(score: f64) -> &'static str {
    if is_negative(score) {
        "negative"
    } else if score >= 0.05 {
        "positive"
    } else {
        "neutral"
    }
}

/// Built-in topics and their keywords (whole words or phrases).
pub const TOPICS: &[(&str, &[&str])] = &[
    (
        "waiting_time",
        &[
            "wait",
            "waited",
            "waiting",
            "queue",
            "queued",
            "queues",
            "on hold",
            "delay",
            "delayed",
            "delays",
            "slow",
            "forever",
            "ages",
            "hours",
            "weeks",
            "months",
            "long time",
            "took too long",
            "quick",
            "quickly",
            "fast",
            "promptly",
            "prompt",
            "timely",
            "waiting time",
        ],
    ),
    (
        "staff_attitude",
        &[
            "rude",
            "friendly",
            "polite",
            "helpful",
            "unhelpful",
            "courteous",
            "respectful",
            "disrespectful",
            "dismissive",
            "kind",
            "patient",
            "impatient",
            "attitude",
            "staff",
            "officer",
            "employee",
            "employees",
            "arrogant",
            "caring",
            "uncaring",
            "manner",
        ],
    ),
    (
        "website",
        &[
            "website",
            "online",
            "web",
            "site",
            "portal",
            "login",
            "log in",
            "page",
            "link",
            "app",
            "password",
            "browser",
            "internet",
            "online form",
            "crashed",
        ],
    ),
    (
        "outcome",
        &[
            "outcome",
            "decision",
            "result",
            "approved",
            "denied",
            "rejected",
            "refused",
            "refund",
            "resolved",
            "unresolved",
            "granted",
            "declined",
            "appeal",
            "fixed",
            "sorted",
        ],
    ),
    (
        "communication",
        &[
            "told",
            "explained",
            "explain",
            "informed",
            "update",
            "updates",
            "call back",
            "called back",
            "email",
            "emails",
            "letter",
            "letters",
            "communication",
            "contact",
            "contacted",
            "replied",
            "reply",
            "respond",
            "confusing",
            "unclear",
            "information",
        ],
    ),
    (
        "accessibility",
        &[
            "accessible",
            "accessibility",
            "wheelchair",
            "ramp",
            "interpreter",
            "deaf",
            "hearing",
            "blind",
            "vision",
            "large print",
            "disability",
            "disabled",
            "braille",
            "step free",
            "lift",
            "elevator",
            "captions",
        ],
    ),
];

/// Topic tags of a comment: built-in topics, then the agency's rules, each
/// once, sorted.
pub fn topics(text: &str, rules: &[TopicRuleDef]) -> Vec<String> {
    let haystack = format!(" {} ", words(text).join(" "));
    let mut found: Vec<String> = TOPIC_NEEDLES
        .iter()
        .filter(|(_, needles)| needles.iter().any(|n| haystack.contains(n.as_str())))
        .map(|(t, _)| t.to_string())
        .collect();
    for rule in rules {
        if rule
            .keywords
            .iter()
            .filter_map(|k| needle(k))
            .any(|n| haystack.contains(&n))
        {
            found.push(rule.topic.clone());
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_personal_data() {
        let cases = [
            (
                "email me at jo.smith+x@example.gov.au.",
                "email me at [email].",
            ),
            ("call 021 555 0199 please", "call [phone] please"),
            ("ring +64 4 555 0123", "ring [phone]"),
            (
                "card 4111 1111 1111 1111 was charged",
                "card [card] was charged",
            ),
            ("my client number is 88234571", "my client number is [id]"),
            ("passport LA1234567 expired", "passport [id] expired"),
            (
                "I waited 3 hours on 12/03/2026",
                "I waited 3 hours on 12/03/2026",
            ),
            ("paid $1,200 in 2025", "paid $1,200 in 2025"),
            ("(09) 555-0199 is my number", "[phone] is my number"),
        ];
        for (input, want) in cases {
            assert_eq!(mask(input), want, "{input}");
        }
    }

    #[test]
    fn sentiment_basics() {
        assert!(sentiment("The staff were very helpful and friendly") > 0.5);
        assert!(sentiment("Rude staff and a terrible wait") < -0.5);
        assert!(is_negative(sentiment("The officer was not helpful")));
        assert!(sentiment("I went to the office on Tuesday").abs() < 0.05);
        assert!(sentiment("It was slow but the staff were great") > 0.0);
    }

    #[test]
    fn topic_tags() {
        let rules = vec![TopicRuleDef {
            topic: "parking".into(),
            keywords: vec!["car park".into(), "parking".into()],
        }];
        assert_eq!(
            topics("Waited on hold for ages; the car park was full", &rules),
            vec!["parking", "waiting_time"]
        );
        assert_eq!(
            topics("The website login kept failing", &[]),
            vec!["website"]
        );
        assert!(topics("nothing to add", &rules).is_empty());
    }
}
