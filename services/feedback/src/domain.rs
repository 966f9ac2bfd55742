//! The feedback domain: what a survey, a question, an answer and a follow-up
//! are, the rules a valid one obeys, the built-in templates, the survey life
//! cycle, the closed-loop rules and who may do what. No I/O here.

use crate::comments;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use touchstone_api::common::v1::Channel;
use touchstone_api::feedback::v1 as pb;
use touchstone_auth::Role;
use touchstone_platform::error::Violations;
use touchstone_platform::times;

pub use pb::{FollowUpStatus, QuestionKind, StandardItem, SurveyState, SurveyTemplate};

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest description or question text, in characters.
pub const MAX_TEXT: usize = 2000;
/// Longest short label (service, unit, stage, choice label, keyword).
pub const MAX_LABEL: usize = 100;
/// Most questions in a survey.
pub const MAX_QUESTIONS: usize = 100;
/// Most choices of a choice question.
pub const MAX_CHOICES: usize = 50;
/// Most closed-loop rules of a survey.
pub const MAX_RULES: usize = 20;
/// Most agency topic rules of a survey.
pub const MAX_TOPIC_RULES: usize = 50;
/// Most keywords of a topic rule.
pub const MAX_KEYWORDS: usize = 50;
/// Most answers in a response.
pub const MAX_ANSWERS: usize = 100;
/// Longest free-text answer (a comment), in characters.
pub const MAX_COMMENT: usize = 5000;
/// Longest transaction id or import row id.
pub const MAX_KEY: usize = 100;
/// Most rows in one ImportResponses stream.
pub const MAX_IMPORT_ROWS: usize = 100_000;
/// Default working days to a follow-up's due date.
pub const DEFAULT_DUE_DAYS: i32 = 5;

/// Where a survey is offered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touchpoint {
    /// Service.
    pub service: String,
    /// Business unit.
    pub unit: String,
    /// `Channel` number.
    pub channel: i32,
    /// Journey stage.
    pub stage: String,
}

impl Touchpoint {
    fn parse(t: Option<&pb::Touchpoint>, prefix: &str, v: &mut Violations) -> Touchpoint {
        let t = t.cloned().unwrap_or_default();
        let tp = Touchpoint {
            service: t.service.trim().to_string(),
            unit: t.unit.trim().to_string(),
            channel: t.channel,
            stage: t.stage.trim().to_string(),
        };
        for (field, value) in [
            ("service", &tp.service),
            ("unit", &tp.unit),
            ("stage", &tp.stage),
        ] {
            check_label(value, &format!("{prefix}.{field}"), v);
        }
        if Channel::try_from(tp.channel).is_err() {
            v.add(format!("{prefix}.channel"), "not a known channel");
        }
        tp
    }

    /// As the API shows it.
    pub fn to_proto(&self) -> pb::Touchpoint {
        pb::Touchpoint {
            service: self.service.clone(),
            unit: self.unit.clone(),
            channel: self.channel,
            stage: self.stage.clone(),
        }
    }
}

fn check_label(value: &str, field: &str, v: &mut Violations) {
    if value.chars().count() > MAX_LABEL {
        v.add(field, format!("at most {MAX_LABEL} characters"));
    } else if value.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

/// Checks a question key, choice key or topic: 1 to 63 of a-z, 0-9, '_', '-'.
fn check_key(value: &str, field: &str, v: &mut Violations) {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok {
        v.add(
            field,
            "must be 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
        );
    }
}

/// One question, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionDef {
    /// Key.
    pub key: String,
    /// Text.
    pub text: String,
    /// `QuestionKind`.
    pub kind: i32,
    /// Required.
    pub required: bool,
    /// `StandardItem` (0 for none).
    pub item: i32,
    /// Choices (key, label).
    pub choices: Vec<(String, String)>,
}

/// The scale of a scored kind: lowest and highest score.
pub fn scale(kind: i32) -> Option<(i32, i32)> {
    match QuestionKind::try_from(kind).ok()? {
        QuestionKind::Agreement5 | QuestionKind::Satisfaction5 => Some((1, 5)),
        QuestionKind::Likelihood11 => Some((0, 10)),
        QuestionKind::Effort7 => Some((1, 7)),
        _ => None,
    }
}

/// The kind a standard item is asked with.
pub fn item_kind(item: StandardItem) -> Option<QuestionKind> {
    use StandardItem as S;
    match item {
        S::Unspecified => None,
        S::A11Satisfaction
        | S::A11Trust
        | S::A11Effectiveness
        | S::A11Ease
        | S::A11Efficiency
        | S::A11Equity
        | S::A11EmployeeHelpfulness => Some(QuestionKind::Agreement5),
        S::Nps => Some(QuestionKind::Likelihood11),
        S::Csat => Some(QuestionKind::Satisfaction5),
        S::Ces => Some(QuestionKind::Effort7),
        S::A11TrustThumbs => Some(QuestionKind::YesNo),
        S::A11PositiveDrivers | S::A11NegativeDrivers => Some(QuestionKind::MultipleChoice),
    }
}

/// The A-11 driver keys (FY2024 on), in the order of the per-response
/// upload's columns; a driver question's choices are drawn from them.
pub const A11_DRIVERS: [&str; 7] = [
    "effectiveness",
    "ease",
    "efficiency",
    "transparency",
    "humanity",
    "employee",
    "other",
];

/// Whether an item is a driver question, whose choice keys are drivers.
fn is_driver_item(item: i32) -> bool {
    item == StandardItem::A11PositiveDrivers as i32
        || item == StandardItem::A11NegativeDrivers as i32
}

/// The seven A-11 §280 items, in the order the export lists them.
pub const A11_ITEMS: [StandardItem; 7] = [
    StandardItem::A11Satisfaction,
    StandardItem::A11Trust,
    StandardItem::A11Effectiveness,
    StandardItem::A11Ease,
    StandardItem::A11Efficiency,
    StandardItem::A11Equity,
    StandardItem::A11EmployeeHelpfulness,
];

impl QuestionDef {
    fn parse(q: &pb::Question, prefix: &str, v: &mut Violations) -> QuestionDef {
        let mut def = QuestionDef {
            key: q.key.trim().to_string(),
            text: q.text.trim().to_string(),
            kind: q.kind,
            required: q.required,
            item: q.standard_item,
            choices: q
                .choices
                .iter()
                .map(|c| (c.key.trim().to_string(), c.label.trim().to_string()))
                .collect(),
        };
        check_key(&def.key, &format!("{prefix}.key"), v);
        if def.text.is_empty() {
            v.add(format!("{prefix}.text"), "required");
        } else if def.text.chars().count() > MAX_TEXT {
            v.add(
                format!("{prefix}.text"),
                format!("at most {MAX_TEXT} characters"),
            );
        }
        let item = StandardItem::try_from(def.item);
        match item {
            Err(_) => v.add(
                format!("{prefix}.standard_item"),
                "not a known standard item",
            ),
            Ok(item) => {
                if let Some(kind) = item_kind(item) {
                    if def.kind == 0 {
                        def.kind = kind as i32;
                    } else if def.kind != kind as i32 {
                        v.add(
                            format!("{prefix}.kind"),
                            format!(
                                "standard item {} is asked as {}",
                                item.as_str_name(),
                                kind.as_str_name()
                            ),
                        );
                    }
                }
            }
        }
        let kind = QuestionKind::try_from(def.kind);
        match kind {
            Err(_) | Ok(QuestionKind::Unspecified) => v.add(
                format!("{prefix}.kind"),
                "required: one of the question kinds",
            ),
            Ok(QuestionKind::SingleChoice | QuestionKind::MultipleChoice) => {
                if def.choices.len() < 2 || def.choices.len() > MAX_CHOICES {
                    v.add(
                        format!("{prefix}.choices"),
                        format!("a choice question has 2 to {MAX_CHOICES} choices"),
                    );
                }
                let mut seen = HashSet::new();
                for (i, (key, label)) in def.choices.iter().enumerate() {
                    check_key(key, &format!("{prefix}.choices[{i}].key"), v);
                    if is_driver_item(def.item) && !A11_DRIVERS.contains(&key.as_str()) {
                        v.add(
                            format!("{prefix}.choices[{i}].key"),
                            format!(
                                "a driver question's choices are drivers: {}",
                                A11_DRIVERS.join(", ")
                            ),
                        );
                    }
                    if !seen.insert(key.as_str()) {
                        v.add(format!("{prefix}.choices[{i}].key"), "used twice");
                    }
                    if label.is_empty() {
                        v.add(format!("{prefix}.choices[{i}].label"), "required");
                    }
                    check_label(label, &format!("{prefix}.choices[{i}].label"), v);
                }
            }
            Ok(_) => {
                if !def.choices.is_empty() {
                    v.add(
                        format!("{prefix}.choices"),
                        "only choice questions have choices",
                    );
                }
            }
        }
        def
    }

    fn to_proto(&self) -> pb::Question {
        pb::Question {
            key: self.key.clone(),
            text: self.text.clone(),
            kind: self.kind,
            required: self.required,
            standard_item: self.item,
            choices: self
                .choices
                .iter()
                .map(|(key, label)| pb::Choice {
                    key: key.clone(),
                    label: label.clone(),
                })
                .collect(),
        }
    }
}

/// A closed-loop rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDef {
    /// The scored question, or "" for a sentiment rule.
    pub question_key: String,
    /// Score at or below which the rule is met.
    pub score_at_most: i32,
    /// Negative comment sentiment meets the rule.
    pub negative_sentiment: bool,
    /// Working days to the due date.
    pub due_in_days: i32,
}

/// An agency keyword rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRuleDef {
    /// Topic tag.
    pub topic: String,
    /// Lower-case keywords.
    pub keywords: Vec<String>,
}

/// A survey's questions and rules: stored as one document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// Questions in order.
    pub questions: Vec<QuestionDef>,
    /// Closed-loop rules.
    pub rules: Vec<RuleDef>,
    /// Agency topic rules.
    pub topic_rules: Vec<TopicRuleDef>,
}

impl Definition {
    /// The question with `key`.
    pub fn question(&self, key: &str) -> Option<&QuestionDef> {
        self.questions.iter().find(|q| q.key == key)
    }

    /// The standard items the survey measures.
    pub fn items(&self) -> Vec<i32> {
        self.questions
            .iter()
            .filter(|q| q.item != 0)
            .map(|q| q.item)
            .collect()
    }
}

/// A survey's fields that callers set. A value of this type is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyFields {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Touchpoint.
    pub touchpoint: Touchpoint,
    /// Questions and rules.
    pub definition: Definition,
}

/// Survey fields an update mask may name.
pub const SURVEY_MASK_FIELDS: &[&str] = &[
    "title",
    "description",
    "touchpoint",
    "questions",
    "follow_up_rules",
    "topic_rules",
];

impl SurveyFields {
    /// Parses and checks a survey from the API; paths are under `prefix`.
    pub fn parse(s: &pb::Survey, prefix: &str) -> Result<SurveyFields, Violations> {
        let mut v = Violations::new();
        let title = s.title.trim().to_string();
        if title.is_empty() {
            v.add(format!("{prefix}.title"), "required");
        } else if title.chars().count() > MAX_TITLE {
            v.add(
                format!("{prefix}.title"),
                format!("at most {MAX_TITLE} characters"),
            );
        }
        let description = s.description.trim().to_string();
        if description.chars().count() > MAX_TEXT {
            v.add(
                format!("{prefix}.description"),
                format!("at most {MAX_TEXT} characters"),
            );
        }
        let touchpoint = Touchpoint::parse(
            s.touchpoint.as_ref(),
            &format!("{prefix}.touchpoint"),
            &mut v,
        );
        let definition = parse_definition(s, prefix, &mut v);
        if v.is_empty() {
            Ok(SurveyFields {
                title,
                description,
                touchpoint,
                definition,
            })
        } else {
            Err(v)
        }
    }

    /// Applies the fields named in `mask` from `patch`, then checks the
    /// result.
    pub fn apply_mask(
        &self,
        patch: &pb::Survey,
        mask: &[String],
    ) -> Result<SurveyFields, Violations> {
        let paths: Vec<String> = if mask.is_empty() || mask.iter().any(|p| p == "*") {
            SURVEY_MASK_FIELDS.iter().map(|s| s.to_string()).collect()
        } else {
            mask.to_vec()
        };
        let mut v = Violations::new();
        for p in &paths {
            if !SURVEY_MASK_FIELDS.contains(&p.as_str()) {
                v.add("update_mask", format!("{p:?} is not an updatable field"));
            }
        }
        if !v.is_empty() {
            return Err(v);
        }
        let mut merged = self.to_proto_fields();
        for p in &paths {
            match p.as_str() {
                "title" => merged.title = patch.title.clone(),
                "description" => merged.description = patch.description.clone(),
                "touchpoint" => merged.touchpoint = patch.touchpoint.clone(),
                "questions" => merged.questions = patch.questions.clone(),
                "follow_up_rules" => merged.follow_up_rules = patch.follow_up_rules.clone(),
                _ => merged.topic_rules = patch.topic_rules.clone(),
            }
        }
        SurveyFields::parse(&merged, "survey")
    }

    /// The fields as a proto survey (for merging).
    pub fn to_proto_fields(&self) -> pb::Survey {
        pb::Survey {
            title: self.title.clone(),
            description: self.description.clone(),
            touchpoint: Some(self.touchpoint.to_proto()),
            questions: self
                .definition
                .questions
                .iter()
                .map(QuestionDef::to_proto)
                .collect(),
            follow_up_rules: self
                .definition
                .rules
                .iter()
                .map(|r| pb::FollowUpRule {
                    question_key: r.question_key.clone(),
                    score_at_most: r.score_at_most,
                    negative_sentiment: r.negative_sentiment,
                    due_in_days: r.due_in_days,
                })
                .collect(),
            topic_rules: self
                .definition
                .topic_rules
                .iter()
                .map(|t| pb::TopicRule {
                    topic: t.topic.clone(),
                    keywords: t.keywords.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

fn parse_definition(s: &pb::Survey, prefix: &str, v: &mut Violations) -> Definition {
    if s.questions.is_empty() {
        v.add(format!("{prefix}.questions"), "at least one question");
    } else if s.questions.len() > MAX_QUESTIONS {
        v.add(
            format!("{prefix}.questions"),
            format!("at most {MAX_QUESTIONS} questions"),
        );
    }
    let questions: Vec<QuestionDef> = s
        .questions
        .iter()
        .take(MAX_QUESTIONS)
        .enumerate()
        .map(|(i, q)| QuestionDef::parse(q, &format!("{prefix}.questions[{i}]"), v))
        .collect();
    let mut seen = HashSet::new();
    let mut items = HashSet::new();
    for (i, (q, def)) in questions.iter().zip(&s.questions).enumerate() {
        if !q.key.is_empty() && !seen.insert(q.key.as_str()) {
            v.add(format!("{prefix}.questions[{i}].key"), "used twice");
        }
        // A response scores each standard item once (its score row is
        // keyed by the item).
        if def.standard_item != 0 && !items.insert(def.standard_item) {
            v.add(
                format!("{prefix}.questions[{i}].standard_item"),
                "asked by another question already",
            );
        }
    }
    if s.follow_up_rules.len() > MAX_RULES {
        v.add(
            format!("{prefix}.follow_up_rules"),
            format!("at most {MAX_RULES} rules"),
        );
    }
    let mut rules = Vec::new();
    for (i, r) in s.follow_up_rules.iter().take(MAX_RULES).enumerate() {
        let path = format!("{prefix}.follow_up_rules[{i}]");
        let key = r.question_key.trim().to_string();
        match (key.is_empty(), r.negative_sentiment) {
            (true, false) => v.add(
                path.clone(),
                "name a scored question_key or set negative_sentiment",
            ),
            (false, true) => v.add(
                format!("{path}.negative_sentiment"),
                "a rule looks at a score or at sentiment, not both",
            ),
            (false, false) => match questions
                .iter()
                .find(|q| q.key == key)
                .map(|q| scale(q.kind))
            {
                None => v.add(format!("{path}.question_key"), "no such question"),
                Some(None) => v.add(format!("{path}.question_key"), "not a scored question"),
                Some(Some((lo, hi))) => {
                    if r.score_at_most < lo || r.score_at_most >= hi {
                        v.add(
                            format!("{path}.score_at_most"),
                            format!("must be from {lo} to {} for this question", hi - 1),
                        );
                    }
                }
            },
            (true, true) => {}
        }
        if !(0..=60).contains(&r.due_in_days) {
            v.add(format!("{path}.due_in_days"), "0 to 60 working days");
        }
        rules.push(RuleDef {
            question_key: key,
            score_at_most: r.score_at_most,
            negative_sentiment: r.negative_sentiment,
            due_in_days: if r.due_in_days == 0 {
                DEFAULT_DUE_DAYS
            } else {
                r.due_in_days
            },
        });
    }
    if s.topic_rules.len() > MAX_TOPIC_RULES {
        v.add(
            format!("{prefix}.topic_rules"),
            format!("at most {MAX_TOPIC_RULES} rules"),
        );
    }
    let mut topic_rules = Vec::new();
    for (i, t) in s.topic_rules.iter().take(MAX_TOPIC_RULES).enumerate() {
        let path = format!("{prefix}.topic_rules[{i}]");
        let topic = t.topic.trim().to_string();
        check_key(&topic, &format!("{path}.topic"), v);
        if t.keywords.is_empty() || t.keywords.len() > MAX_KEYWORDS {
            v.add(
                format!("{path}.keywords"),
                format!("1 to {MAX_KEYWORDS} keywords"),
            );
        }
        let mut keywords = Vec::new();
        for (j, k) in t.keywords.iter().take(MAX_KEYWORDS).enumerate() {
            let k = k.trim().to_lowercase();
            if k.is_empty() {
                v.add(format!("{path}.keywords[{j}]"), "must not be empty");
            }
            check_label(&k, &format!("{path}.keywords[{j}]"), v);
            keywords.push(k);
        }
        topic_rules.push(TopicRuleDef { topic, keywords });
    }
    Definition {
        questions,
        rules,
        topic_rules,
    }
}

/// What a survey template creates.
pub fn template(t: SurveyTemplate) -> Option<(String, Definition)> {
    use StandardItem as S;
    let scored = |key: &str, text: &str, item: S| QuestionDef {
        key: key.into(),
        text: text.into(),
        kind: item_kind(item).map_or(0, |k| k as i32),
        required: true,
        item: item as i32,
        choices: Vec::new(),
    };
    // The FY2024 A-11 drivers: optional, asked after the trust question.
    let drivers = |key: &str, text: &str, item: S| QuestionDef {
        key: key.into(),
        text: text.into(),
        kind: QuestionKind::MultipleChoice as i32,
        required: false,
        item: item as i32,
        choices: [
            ("effectiveness", "I got what I needed"),
            ("ease", "It was easy"),
            ("efficiency", "It was quick"),
            ("transparency", "I understood the process"),
            ("humanity", "I was treated with respect"),
            ("employee", "Staff were helpful"),
            ("other", "Something else"),
        ]
        .iter()
        .map(|(k, l)| (k.to_string(), l.to_string()))
        .collect(),
    };
    let comment = QuestionDef {
        key: "comment".into(),
        text: "Is there anything else you would like to tell us?".into(),
        kind: QuestionKind::FreeText as i32,
        required: false,
        item: 0,
        choices: Vec::new(),
    };
    let sentiment_rule = RuleDef {
        question_key: String::new(),
        score_at_most: 0,
        negative_sentiment: true,
        due_in_days: DEFAULT_DUE_DAYS,
    };
    let rule = |key: &str, at_most: i32| RuleDef {
        question_key: key.into(),
        score_at_most: at_most,
        negative_sentiment: false,
        due_in_days: DEFAULT_DUE_DAYS,
    };
    let (title, questions, rules) = match t {
        SurveyTemplate::Unspecified => return None,
        SurveyTemplate::A11 => (
            "Customer experience (A-11)",
            vec![
                scored(
                    "satisfaction",
                    "I am satisfied with the service I received.",
                    S::A11Satisfaction,
                ),
                scored(
                    "trust",
                    "This interaction increased my confidence in the agency.",
                    S::A11Trust,
                ),
                scored(
                    "effectiveness",
                    "My need was addressed.",
                    S::A11Effectiveness,
                ),
                scored(
                    "ease",
                    "It was easy to complete what I needed to do.",
                    S::A11Ease,
                ),
                scored(
                    "efficiency",
                    "It took a reasonable amount of time to do what I needed to do.",
                    S::A11Efficiency,
                ),
                scored("equity", "I was treated fairly.", S::A11Equity),
                scored(
                    "employee_helpfulness",
                    "Employees I interacted with were helpful.",
                    S::A11EmployeeHelpfulness,
                ),
                drivers(
                    "positive_drivers",
                    "What went well? Select all that apply.",
                    S::A11PositiveDrivers,
                ),
                drivers(
                    "negative_drivers",
                    "What could be improved? Select all that apply.",
                    S::A11NegativeDrivers,
                ),
                comment,
            ],
            vec![rule("satisfaction", 2), sentiment_rule],
        ),
        SurveyTemplate::Csat => (
            "Customer satisfaction",
            vec![
                scored(
                    "csat",
                    "Overall, how satisfied are you with the service you received?",
                    S::Csat,
                ),
                comment,
            ],
            vec![rule("csat", 2), sentiment_rule],
        ),
        SurveyTemplate::Nps => (
            "Likelihood to recommend",
            vec![
                scored(
                    "nps",
                    "How likely are you to recommend this service to a friend or colleague?",
                    S::Nps,
                ),
                comment,
            ],
            vec![rule("nps", 6), sentiment_rule],
        ),
        SurveyTemplate::Ces => (
            "Customer effort",
            vec![
                scored(
                    "ces",
                    "How easy was it to get what you needed today?",
                    S::Ces,
                ),
                comment,
            ],
            vec![rule("ces", 2), sentiment_rule],
        ),
    };
    Some((
        title.to_string(),
        Definition {
            questions,
            rules,
            topic_rules: Vec::new(),
        },
    ))
}

/// One answer as stored for analysis: no personal data (comment text masked).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// Question key.
    pub key: String,
    /// `StandardItem` of the question.
    #[serde(default)]
    pub item: i32,
    /// Scale score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i32>,
    /// Yes/no.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes: Option<bool>,
    /// Choice keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Masked comment text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub masked: String,
    /// Comment sentiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<f64>,
    /// Comment topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

/// A response that passed every check, ready to store.
#[derive(Debug, Clone)]
pub struct ResponseInput {
    /// Answers for analysis.
    pub answers: Vec<StoredAnswer>,
    /// Comments as written, by question key (personal data).
    pub originals: BTreeMap<String, String>,
    /// `Channel`.
    pub channel: i32,
    /// Unit.
    pub unit: String,
    /// Millis.
    pub submit_time: i64,
    /// Transaction id.
    pub transaction_id: Option<String>,
    /// The client id, when a client was named (same agency as the survey).
    pub client_id: Option<String>,
    /// Whether the client agreed to be contacted.
    pub contact_agreed: bool,
    /// Mean comment sentiment.
    pub sentiment: Option<f64>,
}

impl ResponseInput {
    /// Comment topics, without duplicates.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.answers.iter().flat_map(|a| a.topics.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Scores of standard items.
    pub fn item_scores(&self) -> Vec<(i32, i32)> {
        self.answers
            .iter()
            .filter_map(|a| {
                (a.item != 0)
                    .then_some(a.score.map(|s| (a.item, s)))
                    .flatten()
            })
            .collect()
    }
}

/// Checks a caller's key (transaction id, row id): at most 100 printable characters.
pub fn check_caller_key(value: &str, field: &str, v: &mut Violations) {
    if value.chars().count() > MAX_KEY || value.chars().any(char::is_control) {
        v.add(field, format!("at most {MAX_KEY} printable characters"));
    }
}

/// Parses and checks a response against its survey. `agency` is the
/// survey's; `prefix` is e.g. "response". Every bad answer is named.
pub fn parse_response(
    r: &pb::Response,
    agency: &str,
    survey: &Definition,
    touchpoint: &Touchpoint,
    prefix: &str,
    now: i64,
) -> Result<ResponseInput, Violations> {
    let mut v = Violations::new();
    if r.answers.len() > MAX_ANSWERS {
        v.add(
            format!("{prefix}.answers"),
            format!("at most {MAX_ANSWERS} answers"),
        );
        return Err(v);
    }
    let mut answered = HashSet::new();
    let mut answers = Vec::new();
    let mut originals = BTreeMap::new();
    for (i, a) in r.answers.iter().enumerate() {
        let path = format!("{prefix}.answers[{i}]");
        let Some(q) = survey.question(a.question_key.trim()) else {
            v.add(
                format!("{path}.question_key"),
                "no such question in the survey",
            );
            continue;
        };
        if !answered.insert(q.key.as_str()) {
            v.add(format!("{path}.question_key"), "question answered twice");
            continue;
        }
        if let Some(stored) = parse_answer(a, q, survey, &path, &mut v) {
            if let Some(original) = stored.1 {
                originals.insert(q.key.clone(), original);
            }
            answers.push(stored.0);
        }
    }
    for q in &survey.questions {
        if q.required && !answered.contains(q.key.as_str()) {
            v.add(
                format!("{prefix}.answers"),
                format!("question {:?} is required", q.key),
            );
        }
    }
    let channel = if r.channel == 0 {
        touchpoint.channel
    } else {
        r.channel
    };
    if Channel::try_from(channel).is_err() {
        v.add(format!("{prefix}.channel"), "not a known channel");
    }
    let unit = r.unit.trim();
    check_label(unit, &format!("{prefix}.unit"), &mut v);
    let unit = if unit.is_empty() {
        touchpoint.unit.clone()
    } else {
        unit.to_string()
    };
    let submit_time = match &r.submit_time {
        None => now,
        Some(ts) => match times::millis(ts) {
            // Not in the future (five minutes' clock skew allowed), not before 2000.
            Some(ms) if ms <= now + 300_000 && ms >= 946_684_800_000 => ms,
            _ => {
                v.add(
                    format!("{prefix}.submit_time"),
                    "must be a real time from 2000 to now",
                );
                now
            }
        },
    };
    let transaction_id = r.transaction_id.trim();
    check_caller_key(transaction_id, &format!("{prefix}.transaction_id"), &mut v);
    let client_id = if r.client.is_empty() {
        None
    } else {
        match touchstone_platform::names::parse("agencies/{}/clients/{}", &r.client, false) {
            Ok(ids) if ids[0] == agency => Some(ids[1].to_string()),
            Ok(_) => {
                v.add(
                    format!("{prefix}.client"),
                    "must be a client of the survey's agency",
                );
                None
            }
            Err(e) => {
                v.add(format!("{prefix}.client"), e.0);
                None
            }
        }
    };
    if !v.is_empty() {
        return Err(v);
    }
    let scores: Vec<f64> = answers.iter().filter_map(|a| a.sentiment).collect();
    let sentiment = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
    Ok(ResponseInput {
        answers,
        originals,
        channel,
        unit,
        submit_time,
        transaction_id: (!transaction_id.is_empty()).then(|| transaction_id.to_string()),
        client_id,
        contact_agreed: r.contact_agreed,
        sentiment,
    })
}

/// Checks one answer against its question; returns the stored answer and the
/// original comment text, if any.
fn parse_answer(
    a: &pb::Answer,
    q: &QuestionDef,
    survey: &Definition,
    path: &str,
    v: &mut Violations,
) -> Option<(StoredAnswer, Option<String>)> {
    let mut bad = false;
    let kind = QuestionKind::try_from(q.kind).unwrap_or(QuestionKind::Unspecified);
    let mut stored = StoredAnswer {
        key: q.key.clone(),
        item: q.item,
        ..Default::default()
    };
    let mut original = None;
    let stray = |v: &mut Violations, bad: &mut bool, field: &str, present: bool| {
        if present {
            note(
                v,
                bad,
                format!("{path}.{field}"),
                format!("not used by a {} question", kind_label(kind)),
            );
        }
    };
    match kind {
        QuestionKind::Agreement5
        | QuestionKind::Satisfaction5
        | QuestionKind::Likelihood11
        | QuestionKind::Effort7 => {
            let (lo, hi) = scale(q.kind).unwrap_or((0, 0));
            match a.score {
                None => note(
                    v,
                    &mut bad,
                    format!("{path}.score"),
                    "required for a scale question",
                ),
                Some(s) if s < lo || s > hi => note(
                    v,
                    &mut bad,
                    format!("{path}.score"),
                    format!("must be from {lo} to {hi}"),
                ),
                Some(s) => stored.score = Some(s),
            }
            stray(v, &mut bad, "yes", a.yes.is_some());
            stray(v, &mut bad, "choices", !a.choices.is_empty());
            stray(v, &mut bad, "text", !a.text.is_empty());
        }
        QuestionKind::YesNo => {
            match a.yes {
                None => note(
                    v,
                    &mut bad,
                    format!("{path}.yes"),
                    "required for a yes/no question",
                ),
                Some(y) => stored.yes = Some(y),
            }
            stray(v, &mut bad, "score", a.score.is_some());
            stray(v, &mut bad, "choices", !a.choices.is_empty());
            stray(v, &mut bad, "text", !a.text.is_empty());
        }
        QuestionKind::SingleChoice | QuestionKind::MultipleChoice => {
            let single = kind == QuestionKind::SingleChoice;
            if a.choices.is_empty() {
                note(
                    v,
                    &mut bad,
                    format!("{path}.choices"),
                    "at least one choice",
                );
            } else if single && a.choices.len() > 1 {
                note(v, &mut bad, format!("{path}.choices"), "exactly one choice");
            }
            let mut seen = HashSet::new();
            for (j, c) in a.choices.iter().enumerate() {
                if !q.choices.iter().any(|(k, _)| k == c) {
                    note(
                        v,
                        &mut bad,
                        format!("{path}.choices[{j}]"),
                        "not one of the question's choices",
                    );
                } else if !seen.insert(c.as_str()) {
                    note(v, &mut bad, format!("{path}.choices[{j}]"), "chosen twice");
                }
            }
            stored.choices = a.choices.clone();
            stray(v, &mut bad, "score", a.score.is_some());
            stray(v, &mut bad, "yes", a.yes.is_some());
            stray(v, &mut bad, "text", !a.text.is_empty());
        }
        QuestionKind::FreeText => {
            let text = a.text.trim();
            if text.is_empty() {
                note(
                    v,
                    &mut bad,
                    format!("{path}.text"),
                    "required for a free-text answer",
                );
            } else if text.chars().count() > MAX_COMMENT {
                note(
                    v,
                    &mut bad,
                    format!("{path}.text"),
                    format!("at most {MAX_COMMENT} characters"),
                );
            } else {
                stored.masked = comments::mask(text);
                stored.sentiment = Some(comments::sentiment(text));
                stored.topics = comments::topics(text, &survey.topic_rules);
                original = Some(text.to_string());
            }
            stray(v, &mut bad, "score", a.score.is_some());
            stray(v, &mut bad, "yes", a.yes.is_some());
            stray(v, &mut bad, "choices", !a.choices.is_empty());
        }
        QuestionKind::Unspecified => note(
            v,
            &mut bad,
            format!("{path}.question_key"),
            "question has no kind",
        ),
    }
    (!bad).then_some((stored, original))
}

fn note(v: &mut Violations, bad: &mut bool, field: String, description: impl Into<String>) {
    *bad = true;
    v.add(field, description);
}

fn kind_label(kind: QuestionKind) -> &'static str {
    match kind {
        QuestionKind::Agreement5
        | QuestionKind::Satisfaction5
        | QuestionKind::Likelihood11
        | QuestionKind::Effort7 => "scale",
        QuestionKind::YesNo => "yes/no",
        QuestionKind::SingleChoice | QuestionKind::MultipleChoice => "choice",
        QuestionKind::FreeText => "free-text",
        QuestionKind::Unspecified => "unknown",
    }
}

/// The first closed-loop rule a response meets: its reason and due days.
pub fn rule_met(def: &Definition, input: &ResponseInput) -> Option<(String, i32)> {
    for rule in &def.rules {
        if rule.negative_sentiment {
            if input.sentiment.is_some_and(comments::is_negative) {
                return Some(("negative comment".to_string(), rule.due_in_days));
            }
        } else if let Some(score) = input
            .answers
            .iter()
            .find(|a| a.key == rule.question_key)
            .and_then(|a| a.score)
            && score <= rule.score_at_most
        {
            return Some((
                format!("{} <= {}", rule.question_key, rule.score_at_most),
                rule.due_in_days,
            ));
        }
    }
    None
}

/// The day (yyyymmdd) `days` working days (Monday to Friday) after the day of `millis`.
pub fn add_working_days(millis: i64, days: i32) -> i64 {
    let mut date = time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    let mut left = days;
    while left > 0 {
        date = date.next_day().unwrap_or(date);
        if !matches!(
            date.weekday(),
            time::Weekday::Saturday | time::Weekday::Sunday
        ) {
            left -= 1;
        }
    }
    date_key(date)
}

/// A `time::Date` as yyyymmdd.
pub fn date_key(d: time::Date) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(u8::from(d.month())) * 100 + i64::from(d.day())
}

/// The day (yyyymmdd, UTC) of a time in millis.
pub fn day_of(millis: i64) -> i64 {
    date_key(
        time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .date(),
    )
}

/// Whether a survey may move from `from` to `to`.
pub fn survey_transition(from: SurveyState, to: SurveyState) -> bool {
    matches!(
        (from, to),
        (SurveyState::Draft, SurveyState::Published)
            | (SurveyState::Published, SurveyState::Closed)
    )
}

/// Whether a follow-up may move from `from` to `to`.
pub fn follow_up_transition(from: FollowUpStatus, to: FollowUpStatus) -> bool {
    use FollowUpStatus as F;
    from == to
        || matches!(
            (from, to),
            (F::Open, F::Contacted | F::Resolved | F::NoAction)
                | (F::Contacted, F::Resolved | F::NoAction)
        )
}

/// Whether a follow-up status is closed.
pub fn is_closed(s: FollowUpStatus) -> bool {
    matches!(s, FollowUpStatus::Resolved | FollowUpStatus::NoAction)
}

/// Volumes that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeInput {
    /// yyyymmdd.
    pub start: i64,
    /// yyyymmdd, inclusive.
    pub end: i64,
    /// Served.
    pub served: i64,
    /// Offered.
    pub offered: i64,
}

/// Parses and checks volumes.
pub fn parse_volume(vol: &pb::Volume, prefix: &str) -> Result<VolumeInput, Violations> {
    let mut v = Violations::new();
    let start = vol.start_date.as_ref().and_then(times::date_key);
    let end = vol.end_date.as_ref().and_then(times::date_key);
    if start.is_none() {
        v.add(
            format!("{prefix}.start_date"),
            "required: a real calendar date",
        );
    }
    if end.is_none() {
        v.add(
            format!("{prefix}.end_date"),
            "required: a real calendar date",
        );
    }
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        v.add(
            format!("{prefix}.end_date"),
            "must not be before start_date",
        );
    }
    if vol.customers_served < 0 {
        v.add(format!("{prefix}.customers_served"), "must not be negative");
    }
    if vol.customers_offered < 0 {
        v.add(
            format!("{prefix}.customers_offered"),
            "must not be negative",
        );
    } else if vol.customers_offered > vol.customers_served {
        v.add(
            format!("{prefix}.customers_offered"),
            "must not exceed customers_served",
        );
    }
    match (start, end) {
        (Some(start), Some(end)) if v.is_empty() => Ok(VolumeInput {
            start,
            end,
            served: vol.customers_served,
            offered: vol.customers_offered,
        }),
        _ => Err(v),
    }
}

/// A reporting quarter: its days and its place in the federal fiscal year,
/// which starts on 1 October (FY2027 Q1 is October to December 2026).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarter {
    /// First day, yyyymmdd.
    pub first_day: i64,
    /// Last day, yyyymmdd.
    pub last_day: i64,
    /// Fiscal year.
    pub fiscal_year: i32,
    /// Quarter of the fiscal year, 1 to 4.
    pub fiscal_quarter: i32,
}

/// Parses a calendar quarter "2026Q3" or "2026-Q3", or a fiscal quarter
/// "FY2027Q1" (also "FY2027-Q1"); case does not matter.
pub fn parse_quarter(q: &str) -> Option<Quarter> {
    let q = q.trim().to_ascii_uppercase();
    let (fiscal, rest) = match q.strip_prefix("FY") {
        Some(rest) => (true, rest),
        None => (false, q.as_str()),
    };
    let (year, quarter) = rest.split_once('Q')?;
    let year = year.strip_suffix('-').unwrap_or(year);
    if year.len() != 4 || quarter.len() != 1 {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    let quarter: i64 = quarter.parse().ok()?;
    if !(2000..=9999).contains(&year) || !(1..=4).contains(&quarter) {
        return None;
    }
    // Fiscal Q1 is calendar Q4 of the year before.
    let (cal_year, cal_quarter) = match (fiscal, quarter) {
        (true, 1) => (year - 1, 4),
        (true, n) => (year, n - 1),
        (false, n) => (year, n),
    };
    let first_month = (cal_quarter - 1) * 3 + 1;
    let last_month = first_month + 2;
    let last_day = match last_month {
        3 | 12 => 31,
        _ => 30,
    };
    let (fiscal_year, fiscal_quarter) = if cal_quarter == 4 {
        (cal_year + 1, 1)
    } else {
        (cal_year, cal_quarter + 1)
    };
    Some(Quarter {
        first_day: cal_year * 10_000 + first_month * 100 + 1,
        last_day: cal_year * 10_000 + last_month * 100 + last_day,
        fiscal_year: i32::try_from(fiscal_year).ok()?,
        fiscal_quarter: fiscal_quarter as i32,
    })
}

/// The canonical name ("2026Q3") of the quarter starting on `first`
/// (yyyymmdd, as [`parse_quarter`] gives it).
pub fn quarter_label(first: i64) -> String {
    format!("{}Q{}", first / 10_000, (first / 100 % 100 - 1) / 3 + 1)
}

/// What a method does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create, change, publish and close surveys.
    ManageSurveys,
    /// Read survey definitions.
    ReadSurveys,
    /// Submit or import responses.
    Submit,
    /// Record volumes.
    RecordVolumes,
    /// Read responses (personal data only for `SeePersonal`).
    ReadResponses,
    /// See personal data in responses: comments as written, client, transaction.
    SeePersonal,
    /// Read and work follow-ups (they name clients).
    FollowUps,
    /// Read aggregate reports.
    Report,
    /// Read the change feed.
    Feed,
}

impl Action {
    /// Roles allowed to do this. `analyst` is never among the roles that see
    /// personal data; `intake` may only submit.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::ManageSurveys => &[Role::AgencyAdmin],
            Action::ReadSurveys => &[
                Role::Officer,
                Role::SeniorOfficer,
                Role::Analyst,
                Role::AgencyAdmin,
            ],
            Action::Submit => &[Role::Intake, Role::Officer, Role::SeniorOfficer],
            Action::RecordVolumes => &[
                Role::Intake,
                Role::Officer,
                Role::SeniorOfficer,
                Role::AgencyAdmin,
            ],
            Action::ReadResponses => &[
                Role::Officer,
                Role::SeniorOfficer,
                Role::Analyst,
                Role::AgencyAdmin,
            ],
            Action::SeePersonal | Action::FollowUps => &[Role::Officer, Role::SeniorOfficer],
            Action::Report => &[
                Role::Officer,
                Role::SeniorOfficer,
                Role::Analyst,
                Role::AgencyAdmin,
            ],
            Action::Feed => &[Role::Service, Role::AgencyAdmin],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey() -> Definition {
        let (_, def) = template(SurveyTemplate::A11).expect("template");
        def
    }

    #[test]
    fn templates_are_valid_surveys() {
        for t in [
            SurveyTemplate::A11,
            SurveyTemplate::Csat,
            SurveyTemplate::Nps,
            SurveyTemplate::Ces,
        ] {
            let (title, def) = template(t).expect("template");
            let fields = SurveyFields {
                title,
                description: String::new(),
                touchpoint: Touchpoint::default(),
                definition: def,
            };
            let parsed = SurveyFields::parse(&fields.to_proto_fields(), "survey").expect("valid");
            assert_eq!(parsed, fields);
        }
        assert_eq!(survey().items().len(), 9);
    }

    /// The fields `fields` is refused for, as a survey.
    fn violated(fields: &SurveyFields) -> Vec<String> {
        SurveyFields::parse(&fields.to_proto_fields(), "survey")
            .expect_err("refused")
            .finish()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn item_fixes_kind() {
        let mut s = template(SurveyTemplate::Nps).expect("nps").1;
        s.questions[0].kind = QuestionKind::Agreement5 as i32;
        let fields = SurveyFields {
            title: "t".into(),
            description: String::new(),
            touchpoint: Touchpoint::default(),
            definition: s,
        };
        let fields = violated(&fields);
        assert!(
            fields.contains(&"survey.questions[0].kind".to_string()),
            "{fields:?}"
        );
    }

    /// Two questions may not score the same standard item: a response's
    /// score rows are keyed by the item.
    #[test]
    fn a_standard_item_is_asked_once() {
        let mut s = survey();
        let mut again = s.questions[0].clone();
        assert_ne!(
            again.item, 0,
            "the template's first question is a standard item"
        );
        again.key = "asked_again".into();
        s.questions.push(again);
        let last = s.questions.len() - 1;
        let fields = SurveyFields {
            title: "t".into(),
            description: String::new(),
            touchpoint: Touchpoint::default(),
            definition: s,
        };
        let fields = violated(&fields);
        assert_eq!(
            fields,
            vec![format!("survey.questions[{last}].standard_item")]
        );
    }

    #[test]
    fn quarters() {
        let days = |q: &str| parse_quarter(q).map(|q| (q.first_day, q.last_day));
        assert_eq!(days("2026Q3"), Some((20260701, 20260930)));
        assert_eq!(days("2026-Q3"), Some((20260701, 20260930)));
        assert_eq!(days("2026Q1"), Some((20260101, 20260331)));
        assert_eq!(days("2026Q4"), Some((20261001, 20261231)));
        assert_eq!(days("FY2027Q1"), Some((20261001, 20261231)));
        assert_eq!(days("fy2027-q2"), Some((20270101, 20270331)));
        assert_eq!(days("FY2027Q4"), Some((20270701, 20270930)));
        let q = parse_quarter("2026Q4").expect("quarter");
        assert_eq!((q.fiscal_year, q.fiscal_quarter), (2027, 1));
        let q = parse_quarter("2026-Q3").expect("quarter");
        assert_eq!((q.fiscal_year, q.fiscal_quarter), (2026, 4));
        for bad in [
            "2026Q5", "Q3", "2026Q", "FY2027", "2026--Q3", "26Q3", "2026Q03", "FYQ1", "",
        ] {
            assert_eq!(parse_quarter(bad), None, "{bad}");
        }
    }

    #[test]
    fn working_days_skip_weekends() {
        // Friday 2026-11-20 12:00 UTC + 1 working day = Monday 23rd.
        let friday = 1_795_176_000_000;
        assert_eq!(day_of(friday), 20261120);
        assert_eq!(add_working_days(friday, 1), 20261123);
        assert_eq!(add_working_days(friday, 5), 20261127);
    }

    #[test]
    fn follow_up_life_cycle() {
        use FollowUpStatus as F;
        assert!(follow_up_transition(F::Open, F::Contacted));
        assert!(follow_up_transition(F::Contacted, F::Resolved));
        assert!(!follow_up_transition(F::Resolved, F::Open));
        assert!(!follow_up_transition(F::NoAction, F::Contacted));
        assert!(survey_transition(
            SurveyState::Draft,
            SurveyState::Published
        ));
        assert!(!survey_transition(
            SurveyState::Closed,
            SurveyState::Published
        ));
        assert!(!survey_transition(SurveyState::Draft, SurveyState::Closed));
    }
}
