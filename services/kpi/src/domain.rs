//! The indicator catalogue, the measures the rollup keeps, reporting
//! periods, and how an indicator's value, interval and significance are
//! computed from value counts. No I/O.

use std::collections::{BTreeMap, HashMap};
use time::{Date, Duration, Month};
use touchstone_api::common::v1 as common;
use touchstone_api::kpi::v1 as pb;
use touchstone_api::register::v1 as reg;
use touchstone_stats as stats;
use touchstone_stats::disclosure::{Check, Content};

/// Counts of each value of one measure: the sufficient statistics of the
/// rollup (n = Σ count, sum = Σ value·count, sum of squares = Σ value²·count).
pub type Histogram = BTreeMap<i64, i64>;

/// Histograms per measure, for one period and group.
pub type Cells = HashMap<String, Histogram>;

/// The standard survey items as the feedback service numbers them, with the
/// key used in indicator ids and whether they have a top-two box.
pub const ITEMS: [(i32, &str, bool); 10] = [
    (1, "a11_satisfaction", true),
    (2, "a11_trust", true),
    (3, "a11_effectiveness", true),
    (4, "a11_ease", true),
    (5, "a11_efficiency", true),
    (6, "a11_equity", true),
    (7, "a11_employee_helpfulness", true),
    (8, "nps", false),
    (9, "csat", true),
    (10, "ces", false),
];

/// Complaint stages as the complaints service numbers them.
pub const STAGES: [(i32, &str); 4] = [
    (1, "frontline"),
    (2, "investigation"),
    (3, "internal_review"),
    (4, "external_review"),
];

/// Measure names: what the rollup counts.
pub mod measure {
    /// Answers to standard item `n`, by score.
    pub fn item(n: i32) -> String {
        format!("item.{n}")
    }
    /// Resolutions in stage `n`, by 1 (within standard) or 0.
    pub fn responded(stage: i32) -> String {
        format!("resp.{stage}")
    }
    /// Survey responses (value 0).
    pub const RESPONSES: &str = "responses";
    /// Customers served (value 0), spread evenly over a volume record's days.
    pub const SERVED: &str = "served";
    /// Customers offered a survey (value 0), spread likewise.
    pub const OFFERED: &str = "offered";
    /// Complaints received (value 0), on the day received.
    pub const RECEIVED: &str = "received";
    /// Acknowledgements, by 1 (within standard) or 0.
    pub const ACKNOWLEDGED: &str = "ack";
    /// Resolutions, by total working days from receipt.
    pub const RESOLVE_DAYS: &str = "resolve_days";
    /// Resolutions, by outcome (the complaints Outcome number).
    pub const OUTCOME: &str = "outcome";
    /// Complaints received, by 1 once escalated beyond their first stage, on the day received.
    pub const ESCALATION: &str = "escalation";
    /// Complaints resolved, by 1 once reopened, on the day first resolved.
    pub const REOPEN: &str = "reopen";
    /// Follow-ups closed, by 1 when closed by their due day, on the day closed.
    pub const FOLLOW_UP: &str = "follow_up";
}

/// Which values of a share's measures count as successes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// value ≥ the bound (top-two box of a 5-point scale: ≥ 4).
    AtLeast(i64),
    /// value is one of these.
    OneOf(&'static [i64]),
}

impl Success {
    fn holds(self, value: i64) -> bool {
        match self {
            Success::AtLeast(b) => value >= b,
            Success::OneOf(set) => set.contains(&value),
        }
    }
}

/// How an indicator is computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// Successes ÷ observations over these measures.
    Share(Vec<String>, Success),
    /// Mean of the values.
    Mean(String),
    /// Net Promoter Score of 0–10 answers.
    Nps(String),
    /// Nearest-rank quantile of the values.
    Quantile(String, f64),
    /// Number of observations.
    Count(String),
    /// Observations of one measure ÷ of another, times a scale; a scale of 1
    /// makes it a share (Wilson interval, z-test).
    Ratio {
        /// Numerator measure.
        numerator: String,
        /// Denominator measure.
        denominator: String,
        /// Multiplier (1 for a share, 1000 for "per 1,000").
        scale: f64,
    },
}

/// One indicator of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    /// Catalogue id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Exact formula, as in docs/kpi.md.
    pub formula: String,
    /// How it is computed.
    pub spec: Spec,
    /// "feedback" or "complaints".
    pub source: &'static str,
}

impl Indicator {
    /// The measures it reads.
    pub fn measures(&self) -> Vec<String> {
        match &self.spec {
            Spec::Share(m, _) => m.clone(),
            Spec::Mean(m) | Spec::Nps(m) | Spec::Quantile(m, _) | Spec::Count(m) => vec![m.clone()],
            Spec::Ratio {
                numerator,
                denominator,
                ..
            } => vec![numerator.clone(), denominator.clone()],
        }
    }

    /// Its kind on the wire.
    pub fn kind(&self) -> pb::IndicatorKind {
        match &self.spec {
            Spec::Share(..) => pb::IndicatorKind::Share,
            Spec::Ratio { scale, .. } if *scale == 1.0 => pb::IndicatorKind::Share,
            Spec::Ratio { .. } => pb::IndicatorKind::Rate,
            Spec::Mean(_) => pb::IndicatorKind::Mean,
            Spec::Nps(_) => pb::IndicatorKind::Nps,
            Spec::Quantile(..) => pb::IndicatorKind::Quantile,
            Spec::Count(_) => pb::IndicatorKind::Count,
        }
    }

    /// Whether it can be split by the respondent's characteristics: only
    /// per-response feedback measures carry a segment.
    pub fn segmentable(&self) -> bool {
        self.source == "feedback"
            && !matches!(self.spec, Spec::Ratio { .. })
            && !self.measures().iter().any(|m| m == measure::FOLLOW_UP)
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Indicator {
        pb::Indicator {
            id: self.id.clone(),
            title: self.title.clone(),
            formula: self.formula.clone(),
            kind: self.kind() as i32,
            source: self.source.to_string(),
            segmentable: self.segmentable(),
        }
    }
}

/// The built-in catalogue, in a stable order.
pub fn catalogue() -> Vec<Indicator> {
    let mut out = Vec::new();
    let mut add = |id: String, title: String, formula: String, spec: Spec, source| {
        out.push(Indicator {
            id,
            title,
            formula,
            spec,
            source,
        });
    };
    for (n, key, top_two) in ITEMS {
        if top_two {
            add(
                format!("share_satisfied.{key}"),
                format!("Share satisfied ({key}, top two boxes)"),
                format!("answers to {key} scoring 4 or 5 ÷ answers to {key}"),
                Spec::Share(vec![measure::item(n)], Success::AtLeast(4)),
                "feedback",
            );
        }
        add(
            format!("mean_score.{key}"),
            format!("Mean score ({key})"),
            format!("Σ score ÷ answers to {key}"),
            Spec::Mean(measure::item(n)),
            "feedback",
        );
    }
    add(
        "nps".into(),
        "Net Promoter Score".into(),
        "100 × (answers 9–10 − answers 0–6) ÷ answers to the NPS item".into(),
        Spec::Nps(measure::item(8)),
        "feedback",
    );
    add(
        "ces".into(),
        "Customer effort score".into(),
        "Σ score ÷ answers to the 7-point CES item".into(),
        Spec::Mean(measure::item(10)),
        "feedback",
    );
    add(
        "response_rate".into(),
        "Response rate".into(),
        "survey responses ÷ customers offered the survey".into(),
        Spec::Ratio {
            numerator: measure::RESPONSES.into(),
            denominator: measure::OFFERED.into(),
            scale: 1.0,
        },
        "feedback",
    );
    add(
        "follow_ups_closed_on_time".into(),
        "Follow-ups closed within their due date".into(),
        "follow-ups closed on or before their due day ÷ follow-ups closed".into(),
        Spec::Share(vec![measure::FOLLOW_UP.into()], Success::OneOf(&[1])),
        "feedback",
    );
    add(
        "complaints_received".into(),
        "Complaints received".into(),
        "complaints received".into(),
        Spec::Count(measure::RECEIVED.into()),
        "complaints",
    );
    add(
        "complaints_per_1000_served".into(),
        "Complaints per 1,000 customers served".into(),
        "1000 × complaints received ÷ customers served".into(),
        Spec::Ratio {
            numerator: measure::RECEIVED.into(),
            denominator: measure::SERVED.into(),
            scale: 1000.0,
        },
        "complaints",
    );
    add(
        "acknowledged_within_standard".into(),
        "Complaints acknowledged within standard".into(),
        "acknowledgements within the standard's working days ÷ acknowledgements".into(),
        Spec::Share(vec![measure::ACKNOWLEDGED.into()], Success::OneOf(&[1])),
        "complaints",
    );
    add(
        "responded_within_standard".into(),
        "Complaints responded to within standard (all stages)".into(),
        "resolutions within their stage's standard ÷ resolutions".into(),
        Spec::Share(
            STAGES.iter().map(|(n, _)| measure::responded(*n)).collect(),
            Success::OneOf(&[1]),
        ),
        "complaints",
    );
    for (n, key) in STAGES {
        add(
            format!("responded_within_standard.{key}"),
            format!("Complaints responded to within standard ({key})"),
            format!("resolutions at {key} within its standard ÷ resolutions at {key}"),
            Spec::Share(vec![measure::responded(n)], Success::OneOf(&[1])),
            "complaints",
        );
    }
    add(
        "days_to_resolve_median".into(),
        "Median working days to resolve".into(),
        "nearest-rank 50th percentile of working days from receipt to resolution".into(),
        Spec::Quantile(measure::RESOLVE_DAYS.into(), 0.5),
        "complaints",
    );
    add(
        "days_to_resolve_p90".into(),
        "90th percentile working days to resolve".into(),
        "nearest-rank 90th percentile of working days from receipt to resolution".into(),
        Spec::Quantile(measure::RESOLVE_DAYS.into(), 0.9),
        "complaints",
    );
    add(
        "share_upheld".into(),
        "Share of complaints upheld".into(),
        "resolutions upheld or partly upheld ÷ resolutions".into(),
        Spec::Share(vec![measure::OUTCOME.into()], Success::OneOf(&[1, 2])),
        "complaints",
    );
    add(
        "escalation_rate".into(),
        "Escalation rate".into(),
        "complaints received in the period later moved beyond their first stage ÷ complaints received in the period".into(),
        Spec::Share(vec![measure::ESCALATION.into()], Success::OneOf(&[1])),
        "complaints",
    );
    add(
        "reopen_rate".into(),
        "Reopen rate".into(),
        "complaints first resolved in the period later reopened ÷ complaints first resolved in the period".into(),
        Spec::Share(vec![measure::REOPEN.into()], Success::OneOf(&[1])),
        "complaints",
    );
    out
}

/// The catalogue entry with this id.
pub fn indicator(id: &str) -> Option<Indicator> {
    catalogue().into_iter().find(|i| i.id == id)
}

/// An indicator's estimate for one period and group, before it is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Observations.
    pub n: i64,
    /// Whether withheld (n below k, or nothing to divide by).
    pub suppressed: bool,
    /// The value.
    pub value: Option<f64>,
    /// The interval.
    pub interval: Option<stats::Interval>,
    /// Numerator and denominator of a share or rate (promoters and n for NPS).
    pub fraction: Option<(i64, i64)>,
    /// What a significance test needs.
    pub basis: Basis,
}

/// What a significance test needs of an estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Basis {
    /// No test applies.
    None,
    /// Successes of n.
    Share(u64, u64),
    /// Mean, variance, n.
    Mean(f64, f64, u64),
    /// NPS fraction and its standard error.
    Nps(f64, f64),
}

fn total(h: Option<&Histogram>) -> i64 {
    h.map_or(0, |h| h.values().sum())
}

/// Computes `indicator` from `cells` with suppression threshold `k`.
pub fn estimate(indicator: &Indicator, cells: &Cells, k: u64) -> Estimate {
    let hidden = |n: i64| stats::suppressed(n.max(0) as u64, k);
    let mut e = Estimate {
        n: 0,
        suppressed: true,
        value: None,
        interval: None,
        fraction: None,
        basis: Basis::None,
    };
    match &indicator.spec {
        Spec::Share(measures, success) => {
            let (mut x, mut n) = (0i64, 0i64);
            for m in measures {
                for (v, c) in cells.get(m).into_iter().flatten() {
                    n += c;
                    if success.holds(*v) {
                        x += c;
                    }
                }
            }
            e.n = n;
            e.suppressed = hidden(n);
            if !e.suppressed && n > 0 {
                e.value = Some(x as f64 / n as f64);
                e.interval = stats::wilson(x as u64, n as u64);
                e.fraction = Some((x, n));
                e.basis = Basis::Share(x as u64, n as u64);
            }
        }
        Spec::Mean(m) => {
            let (mut n, mut sum, mut sq) = (0i64, 0f64, 0f64);
            for (v, c) in cells.get(m).into_iter().flatten() {
                n += c;
                sum += (*v as f64) * (*c as f64);
                sq += (*v as f64) * (*v as f64) * (*c as f64);
            }
            e.n = n;
            e.suppressed = hidden(n);
            if let (false, Some(est)) = (e.suppressed, stats::mean(n.max(0) as u64, sum, sq)) {
                e.value = Some(est.mean);
                e.interval = est.interval;
                e.basis = Basis::Mean(est.mean, est.variance, n as u64);
            }
        }
        Spec::Nps(m) => {
            let (mut n, mut p, mut d) = (0i64, 0i64, 0i64);
            for (v, c) in cells.get(m).into_iter().flatten() {
                n += c;
                if *v >= 9 {
                    p += c;
                } else if *v <= 6 {
                    d += c;
                }
            }
            e.n = n;
            e.suppressed = hidden(n);
            if let (false, Some(est)) = (e.suppressed, stats::nps(p as u64, d as u64, n as u64)) {
                e.value = Some(100.0 * est.score);
                e.interval = Some(stats::Interval {
                    low: 100.0 * est.interval.low,
                    high: 100.0 * est.interval.high,
                });
                e.fraction = Some((p, n));
                e.basis = Basis::Nps(est.score, est.standard_error);
            }
        }
        Spec::Quantile(m, q) => {
            let h: Vec<(i64, u64)> = cells
                .get(m)
                .into_iter()
                .flatten()
                .map(|(v, c)| (*v, (*c).max(0) as u64))
                .collect();
            e.n = total(cells.get(m));
            e.suppressed = hidden(e.n);
            if let (false, Some(est)) = (e.suppressed, stats::quantile(&h, *q)) {
                e.value = Some(est.value);
                e.interval = Some(est.interval);
            }
        }
        Spec::Count(m) => {
            e.n = total(cells.get(m));
            e.suppressed = hidden(e.n);
            if !e.suppressed {
                e.value = Some(e.n as f64);
            }
        }
        Spec::Ratio {
            numerator,
            denominator,
            scale,
        } => {
            let x = total(cells.get(numerator));
            let n = total(cells.get(denominator));
            e.n = x;
            e.suppressed = hidden(x) || n <= 0;
            if !e.suppressed {
                e.value = Some(scale * x as f64 / n as f64);
                e.fraction = Some((x, n));
                if *scale == 1.0 && x <= n {
                    e.interval = stats::wilson(x as u64, n as u64);
                    e.basis = Basis::Share(x as u64, n as u64);
                }
            }
        }
    }
    e
}

/// Withholds an estimate: it keeps nothing, not even its count (DESIGN §7).
pub fn withhold(e: &mut Estimate) {
    e.n = 0;
    e.suppressed = true;
    e.value = None;
    e.interval = None;
    e.fraction = None;
    e.basis = Basis::None;
}

/// How the cells of an indicator are judged for disclosure: the measures
/// that say how many observations a cell has and what must not be pinned
/// of them. Indicators over the same observations share one guard (every
/// figure of an A-11 item, of complaints received, of resolutions), so they
/// hide the same cells: what one withholds, another cannot give away.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// Measures read to judge a cell.
    pub measures: Vec<String>,
    /// What each part of a cell's content is checked for.
    pub checks: Vec<Check>,
    family: Family,
}

#[derive(Debug, Clone, PartialEq)]
enum Family {
    /// Answers to a standard item: top-two box, NPS categories, values.
    Item {
        measure: String,
        top_two: bool,
        nps: bool,
    },
    /// Complaints received (their escalation flags count them once each).
    Received,
    /// Resolutions: working days, outcome, and within standard at any stage.
    Resolutions,
    /// One measure of 0 (no) and 1 (yes).
    YesNo(String),
    /// One measure counted, nothing else to pin.
    Count(String),
}

/// The stage of a per-stage indicator (`responded_within_standard.<stage>`),
/// as its label.
pub fn stage_of(indicator: &Indicator) -> Option<&'static str> {
    let key = indicator.id.strip_prefix("responded_within_standard.")?;
    STAGES.iter().find(|(_, k)| *k == key).map(|(_, k)| *k)
}

/// The stage label of a rollup measure (`resp.<n>`), if it is one.
pub fn stage_of_measure(m: &str) -> Option<&'static str> {
    let n: i32 = m.strip_prefix("resp.")?.parse().ok()?;
    STAGES.iter().find(|(x, _)| *x == n).map(|(_, k)| *k)
}

/// What the disclosure rule knows of a cell of responses by stage: its
/// resolutions, by within standard (1) or not (0), over every stage it
/// holds.
pub fn stage_content(cells: &Cells) -> Content {
    let mut c = Content {
        n: 0,
        parts: vec![BTreeMap::new()],
    };
    for (m, h) in cells {
        if stage_of_measure(m).is_none() {
            continue;
        }
        for (v, count) in h {
            let count = (*count).max(0) as u64;
            c.n += count;
            *c.parts[0].entry(i64::from(*v == 1)).or_default() += count;
        }
    }
    c
}

impl Guard {
    /// The guard of `indicator`.
    pub fn of(indicator: &Indicator) -> Guard {
        // A stage's figure is decided with the all-stage figures first
        // (query.rs: the stage tier).
        let resolutions = matches!(
            indicator.id.as_str(),
            "responded_within_standard"
                | "days_to_resolve_median"
                | "days_to_resolve_p90"
                | "share_upheld"
        ) || stage_of(indicator).is_some();
        let first = indicator.measures().into_iter().next().unwrap_or_default();
        let family = if resolutions {
            Family::Resolutions
        } else if first == measure::RECEIVED || first == measure::ESCALATION {
            Family::Received
        } else if let Some((n, _, top_two)) = ITEMS.iter().find(|i| measure::item(i.0) == first) {
            Family::Item {
                measure: first.clone(),
                top_two: *top_two,
                nps: *n == 8,
            }
        } else if matches!(indicator.spec, Spec::Share(..)) {
            Family::YesNo(first.clone())
        } else {
            Family::Count(first.clone())
        };
        let (measures, checks) = match &family {
            Family::Item {
                measure,
                top_two,
                nps,
            } => {
                let mut checks = Vec::new();
                if *top_two {
                    checks.push(Check::EachBlock(2));
                }
                if *nps {
                    // Promoters, and detractors, each neither none nor all.
                    checks.push(Check::EachBlock(2));
                    checks.push(Check::EachBlock(2));
                }
                checks.push(Check::Varied);
                (vec![measure.clone()], checks)
            }
            Family::Received => (vec![measure::ESCALATION.into()], vec![Check::EachBlock(2)]),
            Family::Resolutions => {
                let mut m = vec![measure::RESOLVE_DAYS.into(), measure::OUTCOME.into()];
                m.extend(STAGES.iter().map(|(n, _)| measure::responded(*n)));
                (
                    m,
                    vec![Check::Varied, Check::EachBlock(2), Check::EachBlock(2)],
                )
            }
            Family::YesNo(m) => (vec![m.clone()], vec![Check::EachBlock(2)]),
            Family::Count(m) => (vec![m.clone()], Vec::new()),
        };
        Guard {
            measures,
            checks,
            family,
        }
    }

    /// What the guard knows of a cell.
    pub fn content(&self, cells: &Cells) -> Content {
        let hist = |m: &str| cells.get(m);
        let mut c = Content {
            n: 0,
            parts: vec![BTreeMap::new(); self.checks.len()],
        };
        let mut add = |part: usize, key: i64, count: i64| {
            if let Some(h) = c.parts.get_mut(part) {
                *h.entry(key).or_default() += count.max(0) as u64;
            }
        };
        let mut n = 0i64;
        match &self.family {
            Family::Item {
                measure,
                top_two,
                nps,
            } => {
                for (v, count) in hist(measure).into_iter().flatten() {
                    n += count;
                    let mut part = 0;
                    if *top_two {
                        add(part, i64::from(*v >= 4), *count);
                        part += 1;
                    }
                    if *nps {
                        add(part, i64::from(*v >= 9), *count);
                        add(part + 1, i64::from(*v <= 6), *count);
                        part += 2;
                    }
                    add(part, *v, *count);
                }
            }
            Family::Received => {
                for (v, count) in hist(measure::ESCALATION).into_iter().flatten() {
                    n += count;
                    add(0, i64::from(*v == 1), *count);
                }
            }
            Family::Resolutions => {
                for (v, count) in hist(measure::RESOLVE_DAYS).into_iter().flatten() {
                    n += count;
                    add(0, *v, *count);
                }
                for (v, count) in hist(measure::OUTCOME).into_iter().flatten() {
                    add(1, i64::from(*v == 1 || *v == 2), *count);
                }
                for (stage, _) in STAGES {
                    for (v, count) in hist(&measure::responded(stage)).into_iter().flatten() {
                        add(2, i64::from(*v == 1), *count);
                    }
                }
            }
            Family::YesNo(m) => {
                for (v, count) in hist(m).into_iter().flatten() {
                    n += count;
                    add(0, i64::from(*v == 1), *count);
                }
            }
            Family::Count(m) => n = total(hist(m)),
        }
        c.n = n.max(0) as u64;
        c
    }
}

/// The test of `current` against `previous` (a period before, or the rest
/// of the population), when one applies and both are published.
pub fn compare(current: &Estimate, previous: &Estimate) -> Option<stats::Test> {
    if current.suppressed || previous.suppressed {
        return None;
    }
    match (current.basis, previous.basis) {
        (Basis::Share(x1, n1), Basis::Share(x2, n2)) => stats::two_proportion_z(x1, n1, x2, n2),
        (Basis::Mean(m1, v1, n1), Basis::Mean(m2, v2, n2)) => {
            stats::welch_t((m1, v1, n1), (m2, v2, n2))
        }
        (Basis::Nps(s1, e1), Basis::Nps(s2, e2)) => {
            stats::z_difference(s1 - s2, (e1 * e1 + e2 * e2).sqrt())
        }
        _ => None,
    }
}

/// Adds `other`'s counts to `into`.
pub fn merge(into: &mut Cells, other: &Cells) {
    for (m, h) in other {
        let dst = into.entry(m.clone()).or_default();
        for (v, c) in h {
            *dst.entry(*v).or_default() += c;
        }
    }
}

/// `whole` minus `part`, cell by cell (the rest of the population).
pub fn subtract(whole: &Cells, part: &Cells) -> Cells {
    let mut out = whole.clone();
    for (m, h) in part {
        let dst = out.entry(m.clone()).or_default();
        for (v, c) in h {
            *dst.entry(*v).or_default() -= c;
        }
    }
    out
}

/// The wire form of an estimate: a withheld one carries nothing but the
/// flag, not even its count (DESIGN §7).
pub fn value_proto(e: &Estimate) -> pb::Value {
    if e.suppressed {
        return pb::Value {
            suppressed: true,
            ..Default::default()
        };
    }
    pb::Value {
        n: e.n,
        suppressed: e.suppressed,
        value: e.value,
        lower: e.interval.map(|i| i.low),
        upper: e.interval.map(|i| i.high),
        numerator: e.fraction.map(|f| f.0),
        denominator: e.fraction.map(|f| f.1),
    }
}

/// A day as stored: yyyymmdd.
pub fn day_key(d: Date) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(u8::from(d.month())) * 100 + i64::from(d.day())
}

/// A stored yyyymmdd as a date.
pub fn key_date(key: i64) -> Option<Date> {
    let month = Month::try_from(u8::try_from((key / 100) % 100).ok()?).ok()?;
    Date::from_calendar_date((key / 10_000) as i32, month, u8::try_from(key % 100).ok()?).ok()
}

/// A wire date as a date, if it is a real one. Years are 1 to 9999, as `google.type.Date`
/// defines them: the `time` crate also takes years before the common era, which no reporting
/// period of an agency can fall in.
pub fn wire_date(d: &common::Date) -> Option<Date> {
    if !(1..=9999).contains(&d.year) {
        return None;
    }
    let month = Month::try_from(u8::try_from(d.month).ok()?).ok()?;
    Date::from_calendar_date(d.year, month, u8::try_from(d.day).ok()?).ok()
}

/// A date on the wire.
pub fn date_proto(d: Date) -> common::Date {
    common::Date {
        year: d.year(),
        month: i32::from(u8::from(d.month())),
        day: i32::from(d.day()),
    }
}

/// A reporting period's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// The whole range is one period.
    Whole,
    /// A day.
    Day,
    /// An ISO week.
    Week,
    /// A month.
    Month,
    /// A quarter.
    Quarter,
    /// A year.
    Year,
}

impl Granularity {
    /// From the wire; `None` for values outside the enum.
    pub fn from_proto(g: i32) -> Option<Granularity> {
        Some(match pb::Granularity::try_from(g).ok()? {
            pb::Granularity::Unspecified => Granularity::Whole,
            pb::Granularity::Day => Granularity::Day,
            pb::Granularity::Week => Granularity::Week,
            pb::Granularity::Month => Granularity::Month,
            pb::Granularity::Quarter => Granularity::Quarter,
            pb::Granularity::Year => Granularity::Year,
        })
    }

    /// The first day of the period holding `d` (`Whole` has no calendar
    /// periods: `d` itself).
    pub fn start_of(self, d: Date) -> Date {
        let first = |m: Month| Date::from_calendar_date(d.year(), m, 1).unwrap_or(d);
        match self {
            Granularity::Whole | Granularity::Day => d,
            Granularity::Week => {
                d - Duration::days(i64::from(d.weekday().number_days_from_monday()))
            }
            Granularity::Month => first(d.month()),
            Granularity::Quarter => {
                let m = (u8::from(d.month()) - 1) / 3 * 3 + 1;
                first(Month::try_from(m).unwrap_or(Month::January))
            }
            Granularity::Year => first(Month::January),
        }
    }

    /// The first day of the period after the one starting at `start`.
    pub fn next(self, start: Date) -> Date {
        let add_months = |months: i32| {
            let m0 = i32::from(u8::from(start.month())) - 1 + months;
            let year = start.year() + m0.div_euclid(12);
            let month = Month::try_from((m0.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
            Date::from_calendar_date(year, month, 1).unwrap_or(start)
        };
        match self {
            Granularity::Whole | Granularity::Day => start + Duration::days(1),
            Granularity::Week => start + Duration::days(7),
            Granularity::Month => add_months(1),
            Granularity::Quarter => add_months(3),
            Granularity::Year => add_months(12),
        }
    }
}

/// The grid level of a query (DESIGN §7: figures are released on a fixed
/// grid of periods). A series must start on the first day of one of its
/// periods and end on the last day of one; a single figure
/// (`Granularity::Whole`) must cover exactly one day, month, quarter or
/// year. Weeks are not on the grid: they cut across months, so a week's
/// figure beside its days' and its month's would let a withheld day be
/// worked out. Returns the level whose periods the query's points are.
pub fn grid_level(start: Date, end: Date, g: Granularity) -> Result<Granularity, &'static str> {
    let whole_periods = |g: Granularity| {
        g.start_of(start) == start && g.next(g.start_of(end)) - Duration::days(1) == end
    };
    match g {
        Granularity::Week => Err("weeks are not released (they cut across months): use DAY or MONTH"),
        Granularity::Whole => [
            Granularity::Day,
            Granularity::Month,
            Granularity::Quarter,
            Granularity::Year,
        ]
        .into_iter()
        .find(|&l| whole_periods(l) && l.next(start) - Duration::days(1) == end)
        .ok_or("a single figure covers one day, month, quarter or year: ask for a granularity to get several"),
        _ if whole_periods(g) => Ok(g),
        _ => Err("the range must start on the first day of a period of the granularity and end on the last day of one"),
    }
}

/// A period: first and last day, inclusive.
pub type Period = (Date, Date);

/// The periods of `g` covering `start..=end`, clipped to the range, and the
/// full period just before the first (for the first point's significance
/// test). `Whole` gives one period and the same number of days before it.
pub fn periods(start: Date, end: Date, g: Granularity) -> (Period, Vec<Period>) {
    if g == Granularity::Whole {
        let len = (end - start).whole_days();
        let before_end = start - Duration::days(1);
        return (
            (before_end - Duration::days(len), before_end),
            vec![(start, end)],
        );
    }
    let mut out = Vec::new();
    let mut at = g.start_of(start);
    while at <= end {
        let next = g.next(at);
        out.push((at.max(start), (next - Duration::days(1)).min(end)));
        at = next;
    }
    let first = g.start_of(start);
    let before_end = first - Duration::days(1);
    ((g.start_of(before_end), before_end), out)
}

/// A dimension a query can be split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Not split.
    None,
    /// Unit.
    Unit,
    /// Channel.
    Channel,
    /// Service.
    Service,
    /// One of the respondent's characteristics: its tag in the segment key.
    Segment(char),
}

impl Dimension {
    /// From the wire; `None` for values outside the enum.
    pub fn from_proto(d: i32) -> Option<Dimension> {
        use pb::Dimension as D;
        Some(match D::try_from(d).ok()? {
            D::Unspecified => Dimension::None,
            D::Unit => Dimension::Unit,
            D::Channel => Dimension::Channel,
            D::Service => Dimension::Service,
            D::AgeBand => Dimension::Segment('a'),
            D::Gender => Dimension::Segment('g'),
            D::Disability => Dimension::Segment('d'),
            D::FirstNations => Dimension::Segment('f'),
            D::CulturallyLinguisticallyDiverse => Dimension::Segment('c'),
            D::RemoteLocation => Dimension::Segment('r'),
        })
    }

    /// The group label of a raw group column value.
    pub fn label(self, raw: &str) -> String {
        match self {
            Dimension::None => String::new(),
            Dimension::Unit | Dimension::Service => raw.to_string(),
            Dimension::Channel => raw
                .parse::<i32>()
                .ok()
                .and_then(|c| common::Channel::try_from(c).ok())
                .map_or_else(|| "UNKNOWN".into(), |c| c.as_str_name().to_string()),
            Dimension::Segment(tag) => segment_label(raw, tag),
        }
    }
}

/// The rollup's segment key of a respondent's characteristics: empty when
/// none is known, else one tagged number per characteristic, e.g.
/// "a3g1d2f0c0r2". Only the enum values are kept, never the client.
pub fn segment_key(c: Option<&reg::Characteristics>) -> String {
    let Some(c) = c else {
        return String::new();
    };
    let parts = [
        ('a', c.age_band),
        ('g', c.gender),
        ('d', c.disability),
        ('f', c.first_nations),
        ('c', c.culturally_linguistically_diverse),
        ('r', c.remote_location),
    ];
    if parts.iter().all(|(_, v)| *v == 0) {
        return String::new();
    }
    parts.iter().map(|(t, v)| format!("{t}{v}")).collect()
}

/// The name of characteristic `tag`'s value in a segment key, or "UNKNOWN".
pub fn segment_label(key: &str, tag: char) -> String {
    let value = key.find(tag).and_then(|at| {
        let digits: String = key[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<i32>().ok()
    });
    let name = match (tag, value) {
        (_, None | Some(0)) => None,
        ('a', Some(v)) => reg::AgeBand::try_from(v).ok().map(|e| e.as_str_name()),
        ('g', Some(v)) => reg::Gender::try_from(v).ok().map(|e| e.as_str_name()),
        (_, Some(v)) => reg::Answer::try_from(v).ok().map(|e| e.as_str_name()),
    };
    name.unwrap_or("UNKNOWN").to_string()
}

/// Whether `value` meets `target` under `comparator`.
pub fn meets(comparator: pb::Comparator, value: f64, target: f64) -> bool {
    match comparator {
        pb::Comparator::AtMost => value <= target,
        _ => value >= target,
    }
}

/// One change to the rollup: add `count` observations of `value` to a cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    /// Measure.
    pub measure: String,
    /// yyyymmdd.
    pub day: i64,
    /// Service.
    pub service: String,
    /// Unit.
    pub unit: String,
    /// Channel number.
    pub channel: i32,
    /// Segment key.
    pub segment: String,
    /// Value.
    pub value: i64,
}

/// Spreads `total` evenly over the days `start..=end`, the remainder one
/// each to the first days, so that the parts add up exactly.
pub fn spread(total: i64, start: Date, end: Date) -> Vec<(i64, i64)> {
    let days = (end - start).whole_days() + 1;
    if days <= 0 {
        return Vec::new();
    }
    let (base, rem) = (total.div_euclid(days), total.rem_euclid(days));
    (0..days)
        .map(|i| {
            let d = start + Duration::days(i);
            (day_key(d), base + i64::from(i < rem))
        })
        .filter(|(_, c)| *c != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn wire_dates_are_real_days_of_years_1_to_9999() {
        let d = |year, month, day| common::Date { year, month, day };
        assert_eq!(wire_date(&d(2026, 2, 28)), Some(date!(2026 - 02 - 28)));
        assert_eq!(wire_date(&d(1, 1, 1)), Some(date!(0001 - 01 - 01)));
        assert_eq!(wire_date(&d(9999, 12, 31)), Some(date!(9999 - 12 - 31)));
        for bad in [
            d(-1, 1, 1),
            d(0, 1, 1),
            d(10_000, 1, 1),
            d(-9999, 12, 31),
            d(2026, 2, 29),
            d(2026, 13, 1),
            d(2026, 0, 1),
            d(2026, 1, 0),
        ] {
            assert_eq!(wire_date(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn catalogue_ids_are_unique_and_cover_the_issue() {
        let all = catalogue();
        let mut ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        for id in [
            "share_satisfied.a11_satisfaction",
            "mean_score.csat",
            "nps",
            "ces",
            "response_rate",
            "complaints_received",
            "complaints_per_1000_served",
            "acknowledged_within_standard",
            "responded_within_standard.investigation",
            "days_to_resolve_median",
            "days_to_resolve_p90",
            "share_upheld",
            "escalation_rate",
            "reopen_rate",
            "follow_ups_closed_on_time",
        ] {
            assert!(indicator(id).is_some(), "{id}");
        }
    }

    #[test]
    fn periods_cover_the_range() {
        let (before, ps) = periods(
            date!(2026 - 01 - 15),
            date!(2026 - 03 - 31),
            Granularity::Month,
        );
        assert_eq!(before, (date!(2025 - 12 - 01), date!(2025 - 12 - 31)));
        assert_eq!(
            ps,
            vec![
                (date!(2026 - 01 - 15), date!(2026 - 01 - 31)),
                (date!(2026 - 02 - 01), date!(2026 - 02 - 28)),
                (date!(2026 - 03 - 01), date!(2026 - 03 - 31)),
            ]
        );
        let (before, ps) = periods(
            date!(2026 - 04 - 01),
            date!(2026 - 12 - 31),
            Granularity::Quarter,
        );
        assert_eq!(before.0, date!(2026 - 01 - 01));
        assert_eq!(ps.len(), 3);
        let (before, ps) = periods(
            date!(2026 - 01 - 11),
            date!(2026 - 01 - 20),
            Granularity::Whole,
        );
        assert_eq!(before, (date!(2026 - 01 - 01), date!(2026 - 01 - 10)));
        assert_eq!(ps.len(), 1);
        let (_, weeks) = periods(
            date!(2026 - 11 - 23),
            date!(2026 - 12 - 06),
            Granularity::Week,
        );
        assert_eq!(weeks.len(), 2);
        assert_eq!(
            Granularity::Week.start_of(date!(2026 - 11 - 29)),
            date!(2026 - 11 - 23)
        );
    }

    #[test]
    fn segment_keys_round_trip() {
        let c = reg::Characteristics {
            age_band: 7,
            gender: 1,
            disability: 1,
            first_nations: 0,
            culturally_linguistically_diverse: 2,
            remote_location: 0,
        };
        let key = segment_key(Some(&c));
        assert_eq!(key, "a7g1d1f0c2r0");
        assert_eq!(segment_label(&key, 'a'), "AGE_BAND_65_74");
        assert_eq!(segment_label(&key, 'd'), "ANSWER_YES");
        assert_eq!(segment_label(&key, 'f'), "UNKNOWN");
        assert_eq!(segment_label("", 'a'), "UNKNOWN");
        assert_eq!(segment_key(Some(&reg::Characteristics::default())), "");
    }

    #[test]
    fn spreading_adds_up() {
        let parts = spread(100, date!(2026 - 01 - 30), date!(2026 - 02 - 05));
        assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), 100);
        assert_eq!(parts[0], (20260130, 15));
        assert_eq!(parts[6], (20260205, 14));
    }

    #[test]
    fn estimates_and_suppression() {
        let share = indicator("share_satisfied.a11_satisfaction").expect("indicator");
        let mut cells = Cells::new();
        cells.insert(
            measure::item(1),
            [(5, 6), (4, 2), (2, 1)].into_iter().collect(),
        );
        let e = estimate(&share, &cells, 10);
        assert!(e.suppressed && e.value.is_none() && e.n == 9);
        let e = estimate(&share, &cells, 5);
        assert_eq!(e.value, Some(8.0 / 9.0));
        assert_eq!(e.fraction, Some((8, 9)));
        let empty = estimate(&share, &Cells::new(), 0);
        assert_eq!((empty.n, empty.value), (0, None));
    }
}
