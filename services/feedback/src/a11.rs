//! The quarterly OMB Circular A-11 §280 customer experience data in the two
//! files GSA's Touchpoints takes: the CX collection summary (one row per
//! survey: volumes and the 1–5 counts of the standard questions) and the
//! per-response upload (trust answer, drivers, comment), whose header row
//! Touchpoints checks. Surveys with the older item names (equity, employee
//! helpfulness, 5-point drivers) are mapped onto the current set here, in
//! one place; docs/feedback.md gives the mapping.

use crate::domain::{A11_DRIVERS, Definition, StandardItem};
use crate::store::A11Data;
use std::collections::{BTreeMap, HashMap};
use touchstone_api::common::v1::Channel;
use touchstone_api::feedback::v1 as pb;

/// The standard 5-point questions of the summary, by position (q1 .. q7).
/// Older surveys' equity is position 6 (transparency) and employee
/// helpfulness position 7 (employee), as A-11 groups them.
const SUMMARY_ITEMS: [(i32, StandardItem); 7] = [
    (1, StandardItem::A11Satisfaction),
    (2, StandardItem::A11Trust),
    (3, StandardItem::A11Effectiveness),
    (4, StandardItem::A11Ease),
    (5, StandardItem::A11Efficiency),
    (6, StandardItem::A11Equity),
    (7, StandardItem::A11EmployeeHelpfulness),
];

/// Older 5-point items read as drivers of the per-response upload.
const LEGACY_DRIVERS: [(StandardItem, &str); 5] = [
    (StandardItem::A11Effectiveness, "effectiveness"),
    (StandardItem::A11Ease, "ease"),
    (StandardItem::A11Efficiency, "efficiency"),
    (StandardItem::A11Equity, "transparency"),
    (StandardItem::A11EmployeeHelpfulness, "employee"),
];

/// The per-response upload's header row, exactly as Touchpoints expects it.
pub const RESPONSES_HEADER: [&str; 17] = [
    "external_id",
    "question_1",
    "positive_effectiveness",
    "positive_ease",
    "positive_efficiency",
    "positive_transparency",
    "positive_humanity",
    "positive_employee",
    "positive_other",
    "negative_effectiveness",
    "negative_ease",
    "negative_efficiency",
    "negative_transparency",
    "negative_humanity",
    "negative_employee",
    "negative_other",
    "question_4",
];

/// The columns of the summary before the per-question counts.
const SUMMARY_LEAD: [&str; 13] = [
    "fiscal_year",
    "quarter",
    "service_provider_name",
    "service_name",
    "transaction_point",
    "channel",
    "service_stage_name",
    "survey_title",
    "survey_type",
    "trust_question_text",
    "volume_of_customers",
    "volume_of_customers_provided_survey_opportunity",
    "volume_of_respondents",
];

/// The summary's header row: the lead columns, then `qN_text, qN_1 .. qN_5`
/// for N = 1 to 7.
pub fn summary_header() -> Vec<String> {
    let mut h: Vec<String> = SUMMARY_LEAD.iter().map(|c| c.to_string()).collect();
    for (n, _) in SUMMARY_ITEMS {
        h.push(format!("q{n}_text"));
        h.extend((1..=5).map(|p| format!("q{n}_{p}")));
    }
    h
}

fn has_item(def: &Definition, item: StandardItem) -> Option<&str> {
    def.questions
        .iter()
        .find(|q| q.item == item as i32)
        .map(|q| q.text.as_str())
}

/// Builds the report from what the store read.
pub fn report(parent: &str, quarter: &str, fiscal: (i32, i32), data: &A11Data) -> pb::A11Report {
    let mut counts: HashMap<(&str, i32), [i64; 5]> = HashMap::new();
    for (survey, item, score, n) in &data.counts {
        if (1..=5).contains(score) {
            counts.entry((survey.as_str(), *item)).or_default()[(*score - 1) as usize] += n;
        }
    }
    let volumes: HashMap<&str, (i64, i64)> = data
        .volumes
        .iter()
        .map(|(s, served, offered)| (s.as_str(), (*served, *offered)))
        .collect();
    let respondents: HashMap<&str, i64> = data
        .respondents
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    let mut collections: Vec<pb::A11Collection> = data
        .surveys
        .iter()
        .map(|s| {
            let def = &s.fields.definition;
            let thumbs = has_item(def, StandardItem::A11TrustThumbs);
            let (served, offered) = volumes.get(s.id.as_str()).copied().unwrap_or_default();
            pb::A11Collection {
                survey: crate::store::survey_name(&s.agency, &s.id),
                survey_title: s.fields.title.clone(),
                touchpoint: Some(s.fields.touchpoint.to_proto()),
                survey_type: if thumbs.is_some() {
                    "thumbs up/down"
                } else {
                    "likert scale"
                }
                .to_string(),
                trust_question_text: thumbs
                    .or_else(|| has_item(def, StandardItem::A11Trust))
                    .unwrap_or_default()
                    .to_string(),
                volume_of_customers: served,
                volume_of_customers_provided_survey_opportunity: offered,
                volume_of_respondents: respondents.get(s.id.as_str()).copied().unwrap_or(0),
                questions: SUMMARY_ITEMS
                    .iter()
                    .filter_map(|(position, item)| {
                        has_item(def, *item).map(|text| pb::A11QuestionCounts {
                            position: *position,
                            text: text.to_string(),
                            counts: counts
                                .get(&(s.id.as_str(), *item as i32))
                                .copied()
                                .unwrap_or_default()
                                .to_vec(),
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    collections.sort_by(|a, b| {
        let key = |c: &pb::A11Collection| {
            let t = c.touchpoint.clone().unwrap_or_default();
            (t.service, t.unit, t.channel, t.stage, c.survey.clone())
        };
        key(a).cmp(&key(b))
    });
    let surveys: HashMap<&str, &Definition> = data
        .surveys
        .iter()
        .map(|s| (s.id.as_str(), &s.fields.definition))
        .collect();
    let responses = data
        .responses
        .iter()
        .map(|(id, survey, answers)| {
            response_row(id, surveys.get(survey.as_str()).copied(), answers)
        })
        .collect();
    pb::A11Report {
        parent: parent.to_string(),
        quarter: quarter.to_string(),
        fiscal_year: fiscal.0,
        fiscal_quarter: fiscal.1,
        collections,
        responses,
    }
}

/// One response as an upload row.
fn response_row(
    id: &str,
    def: Option<&Definition>,
    answers: &[crate::domain::StoredAnswer],
) -> pb::A11Response {
    let by_item = |item: StandardItem| answers.iter().find(|a| a.item == item as i32);
    let question_1 = match (
        by_item(StandardItem::A11TrustThumbs).and_then(|a| a.yes),
        by_item(StandardItem::A11Trust).and_then(|a| a.score),
    ) {
        (Some(up), _) => if up { "1" } else { "0" }.to_string(),
        (None, Some(score)) => score.to_string(),
        (None, None) => String::new(),
    };
    let asks =
        |item: StandardItem| def.is_some_and(|d| d.questions.iter().any(|q| q.item == item as i32));
    let drivers = |item: StandardItem| -> pb::A11Drivers {
        // A driver question offers its choices; unanswered, nothing was offered.
        let Some(answer) = by_item(item) else {
            return pb::A11Drivers::default();
        };
        let offered = def
            .and_then(|d| d.questions.iter().find(|q| q.item == item as i32))
            .map(|q| q.choices.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        pb::A11Drivers {
            offered,
            selected: answer.choices.clone(),
        }
    };
    let (mut positive, mut negative) = (
        drivers(StandardItem::A11PositiveDrivers),
        drivers(StandardItem::A11NegativeDrivers),
    );
    // An older survey, without driver questions: its 5-point items are the
    // drivers, agreement (4, 5) positive and disagreement (1, 2) negative.
    if !asks(StandardItem::A11PositiveDrivers) && !asks(StandardItem::A11NegativeDrivers) {
        for (item, driver) in LEGACY_DRIVERS {
            if let Some(score) = by_item(item).and_then(|a| a.score) {
                for side in [&mut positive, &mut negative] {
                    side.offered.push(driver.to_string());
                }
                if score >= 4 {
                    positive.selected.push(driver.to_string());
                } else if score <= 2 {
                    negative.selected.push(driver.to_string());
                }
            }
        }
    }
    let question_4 = answers
        .iter()
        .find(|a| a.item == 0 && !a.masked.is_empty())
        .map(|a| a.masked.clone())
        .unwrap_or_default();
    pb::A11Response {
        external_id: id.to_string(),
        question_1,
        positive: Some(positive),
        negative: Some(negative),
        question_4,
    }
}

/// A channel as Touchpoints writes it: lower case, e.g. "in_person".
fn channel_label(channel: i32) -> String {
    match Channel::try_from(channel) {
        Ok(Channel::Unspecified) | Err(_) => String::new(),
        Ok(c) => c
            .as_str_name()
            .trim_start_matches("CHANNEL_")
            .to_ascii_lowercase(),
    }
}

/// One CSV field, quoted when it must be (RFC 4180).
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn line(out: &mut String, fields: &[String]) {
    let quoted: Vec<String> = fields.iter().map(|f| quote(f)).collect();
    out.push_str(&quoted.join(","));
    out.push('\n');
}

/// The CX collection summary as CSV: a header, one row per survey, "\n"
/// line ends, fields quoted as RFC 4180 says. The quarter column is the fiscal quarter (1 to 4)
/// of `fiscal_year`, as Touchpoints numbers collections. A question the
/// survey does not ask has empty cells, not zeros.
pub fn summary_csv(report: &pb::A11Report) -> String {
    let mut out = String::new();
    line(&mut out, &summary_header());
    let agency = report
        .parent
        .strip_prefix("agencies/")
        .unwrap_or(&report.parent);
    for c in &report.collections {
        let tp = c.touchpoint.clone().unwrap_or_default();
        let mut f = vec![
            report.fiscal_year.to_string(),
            report.fiscal_quarter.to_string(),
            agency.to_string(),
            tp.service,
            tp.unit,
            channel_label(tp.channel),
            tp.stage,
            c.survey_title.clone(),
            c.survey_type.clone(),
            c.trust_question_text.clone(),
            c.volume_of_customers.to_string(),
            c.volume_of_customers_provided_survey_opportunity
                .to_string(),
            c.volume_of_respondents.to_string(),
        ];
        let asked: BTreeMap<i32, &pb::A11QuestionCounts> =
            c.questions.iter().map(|q| (q.position, q)).collect();
        for (n, _) in SUMMARY_ITEMS {
            match asked.get(&n) {
                Some(q) => {
                    f.push(q.text.clone());
                    f.extend((0..5).map(|i| q.counts.get(i).copied().unwrap_or(0).to_string()));
                }
                None => f.extend(std::iter::repeat_n(String::new(), 6)),
            }
        }
        line(&mut out, &f);
    }
    out
}

/// The per-response upload as CSV: Touchpoints' header row, one row per
/// response; a driver is 1 if chosen, 0 if offered and not chosen, empty if
/// not offered.
pub fn responses_csv(report: &pb::A11Report) -> String {
    let mut out = String::new();
    line(&mut out, &RESPONSES_HEADER.map(str::to_string));
    for r in &report.responses {
        let mut f = vec![r.external_id.clone(), r.question_1.clone()];
        for side in [&r.positive, &r.negative] {
            let side = side.clone().unwrap_or_default();
            for driver in A11_DRIVERS {
                let cell = if side.selected.iter().any(|d| d == driver) {
                    "1"
                } else if side.offered.iter().any(|d| d == driver) {
                    "0"
                } else {
                    ""
                };
                f.push(cell.to_string());
            }
        }
        f.push(r.question_4.clone());
        line(&mut out, &f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_the_one_touchpoints_checks() {
        // The list Touchpoints compares (sorted) with an upload's headers,
        // in its controller's order.
        let mut checked = vec![
            "external_id",
            "question_1",
            "positive_effectiveness",
            "positive_ease",
            "positive_efficiency",
            "positive_transparency",
            "positive_humanity",
            "positive_employee",
            "positive_other",
            "negative_effectiveness",
            "negative_ease",
            "negative_efficiency",
            "negative_transparency",
            "negative_humanity",
            "negative_employee",
            "negative_other",
            "question_4",
        ];
        checked.sort();
        let mut ours = RESPONSES_HEADER.to_vec();
        ours.sort();
        assert_eq!(ours, checked);
    }

    #[test]
    fn labels() {
        assert_eq!(channel_label(Channel::InPerson as i32), "in_person");
        assert_eq!(channel_label(0), "");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(summary_header().len(), 13 + 7 * 6);
    }

    #[test]
    fn legacy_items_are_drivers() {
        let answer = |item: StandardItem, score: i32| crate::domain::StoredAnswer {
            key: format!("{item:?}"),
            item: item as i32,
            score: Some(score),
            ..Default::default()
        };
        let row = response_row(
            "r1",
            Some(&Definition::default()),
            &[
                answer(StandardItem::A11Trust, 4),
                answer(StandardItem::A11Ease, 5),
                answer(StandardItem::A11Equity, 1),
                answer(StandardItem::A11Efficiency, 3),
            ],
        );
        assert_eq!(row.question_1, "4");
        let p = row.positive.unwrap_or_default();
        let n = row.negative.unwrap_or_default();
        assert_eq!(p.selected, vec!["ease"]);
        assert_eq!(n.selected, vec!["transparency"]);
        assert_eq!(p.offered, vec!["ease", "efficiency", "transparency"]);
    }
}
