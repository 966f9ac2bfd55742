//! The gateway's rules, without I/O: reporting periods, directory values,
//! the benchmark's disclosure control (who is named, what is suppressed,
//! ranks, quartiles, the median and the comparison with it), and the
//! summaries the dashboard makes of the backends' answers.

use std::collections::{BTreeMap, HashMap};
use touchstone_api::common::v1::Date;
use touchstone_api::complaints::v1 as complaints;
use touchstone_api::feedback::v1 as feedback;
use touchstone_api::gateway::v1 as pb;
use touchstone_api::kpi::v1 as kpi;
use touchstone_platform::error::{FieldViolation, Violations};
use touchstone_platform::names;

/// The scope key of hub-level directory changes and reads: never an agency
/// id, because ids do not start with '-'.
pub const HUB: &str = "-";

/// A reporting period: a calendar month, quarter or year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A calendar month.
    Month { year: i16, month: i8 },
    /// A calendar quarter, 1 to 4.
    Quarter { year: i16, quarter: i8 },
    /// A calendar year.
    Year { year: i16 },
}

impl Period {
    /// The quarter that contains `day`.
    pub fn quarter_of(day: jiff::civil::Date) -> Period {
        Period::Quarter {
            year: day.year(),
            quarter: (day.month() - 1) / 3 + 1,
        }
    }

    /// Parses "2026-11", "2026-Q3" (or "2026Q3") and "2026"; empty means
    /// the quarter that contains `today`.
    pub fn parse(text: &str, today: jiff::civil::Date) -> Result<Period, String> {
        const FORMS: &str = "must be a month (2026-11), a quarter (2026-Q3) or a year (2026)";
        let text = text.trim();
        if text.is_empty() {
            return Ok(Period::quarter_of(today));
        }
        let year_of = |s: &str| -> Result<i16, String> {
            let y: i16 = s
                .parse()
                .ok()
                .filter(|_| s.len() == 4)
                .ok_or_else(|| FORMS.to_string())?;
            if !(2000..=2999).contains(&y) {
                return Err("year must be between 2000 and 2999".into());
            }
            Ok(y)
        };
        if let Some((y, q)) = text
            .split_once("-Q")
            .or_else(|| text.split_once('Q'))
            .or_else(|| text.split_once("-q"))
        {
            let quarter: i8 = q.parse().map_err(|_| FORMS.to_string())?;
            if !(1..=4).contains(&quarter) {
                return Err("quarter must be 1 to 4".into());
            }
            return Ok(Period::Quarter {
                year: year_of(y)?,
                quarter,
            });
        }
        if let Some((y, m)) = text.split_once('-') {
            let month: i8 = m
                .parse()
                .ok()
                .filter(|_| m.len() == 2)
                .ok_or_else(|| FORMS.to_string())?;
            if !(1..=12).contains(&month) {
                return Err("month must be 01 to 12".into());
            }
            return Ok(Period::Month {
                year: year_of(y)?,
                month,
            });
        }
        Ok(Period::Year {
            year: year_of(text)?,
        })
    }

    /// First and last day.
    pub fn bounds(self) -> (jiff::civil::Date, jiff::civil::Date) {
        let (start, months) = match self {
            Period::Month { year, month } => (jiff::civil::date(year, month, 1), 1),
            Period::Quarter { year, quarter } => {
                (jiff::civil::date(year, (quarter - 1) * 3 + 1, 1), 3)
            }
            Period::Year { year } => (jiff::civil::date(year, 1, 1), 12),
        };
        let end = start
            .checked_add(jiff::Span::new().months(months))
            .and_then(|d| d.checked_sub(jiff::Span::new().days(1)))
            .unwrap_or(start);
        (start, end)
    }

    /// The period before this one, of the same length.
    pub fn previous(self) -> Period {
        match self {
            Period::Month { year, month: 1 } => Period::Month {
                year: year - 1,
                month: 12,
            },
            Period::Month { year, month } => Period::Month {
                year,
                month: month - 1,
            },
            Period::Quarter { year, quarter: 1 } => Period::Quarter {
                year: year - 1,
                quarter: 4,
            },
            Period::Quarter { year, quarter } => Period::Quarter {
                year,
                quarter: quarter - 1,
            },
            Period::Year { year } => Period::Year { year: year - 1 },
        }
    }

    /// The KPI service's granularity of the period.
    pub fn granularity(self) -> kpi::Granularity {
        match self {
            Period::Month { .. } => kpi::Granularity::Month,
            Period::Quarter { .. } => kpi::Granularity::Quarter,
            Period::Year { .. } => kpi::Granularity::Year,
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Month { year, month } => write!(f, "{year}-{month:02}"),
            Period::Quarter { year, quarter } => write!(f, "{year}-Q{quarter}"),
            Period::Year { year } => write!(f, "{year}"),
        }
    }
}

/// A civil date on the wire.
pub fn wire_date(d: jiff::civil::Date) -> Date {
    Date {
        year: d.year().into(),
        month: d.month().into(),
        day: d.day().into(),
    }
}

/// Checks a display name: 1 to 200 printable characters.
pub fn check_display_name(name: &str) -> Result<(), &'static str> {
    let n = name.trim().chars().count();
    if n == 0 {
        return Err("required");
    }
    if n > 200 || name.chars().any(char::is_control) {
        return Err("at most 200 printable characters");
    }
    Ok(())
}

static TZDB: std::sync::LazyLock<jiff::tz::TimeZoneDatabase> =
    std::sync::LazyLock::new(jiff::tz::TimeZoneDatabase::bundled);

/// Checks an IANA time zone name against the bundled database.
pub fn check_time_zone(tz: &str) -> Result<(), &'static str> {
    if tz.is_empty() {
        return Err("required, an IANA time zone such as Australia/Sydney");
    }
    TZDB.get(tz)
        .map(|_| ())
        .map_err(|_| "is not a known IANA time zone")
}

/// Today in a time zone (UTC when the name is unknown).
pub fn today_in(tz: &str) -> jiff::civil::Date {
    let zone = TZDB.get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    zone.to_datetime(jiff::Timestamp::now()).date()
}

/// Indicators where a lower value is the better one (ranks follow it).
pub fn higher_is_better(indicator: &str) -> bool {
    const LOWER_IS_BETTER: &[&str] = &[
        "complaints_received",
        "complaints_per_1000_served",
        "days_to_resolve_median",
        "days_to_resolve_p90",
        "share_upheld",
        "escalation_rate",
        "reopen_rate",
    ];
    !LOWER_IS_BETTER.contains(&indicator)
}

/// One consenting member's figure, as the KPI service gave it.
#[derive(Debug, Clone)]
pub struct MemberFigure {
    /// Agency id.
    pub agency: String,
    /// Its display name from the directory.
    pub display_name: String,
    /// Its benchmarking consent (never NONE here).
    pub consent: pb::BenchmarkConsent,
    /// The KPI service's value, if it answered for this agency.
    pub value: Option<kpi::Value>,
}

/// What a benchmark publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Disclosed {
    /// Entries: published by rank, then withheld.
    pub entries: Vec<pb::BenchmarkEntry>,
    /// Median of the published values.
    pub median: Option<f64>,
    /// Observations over every member, when safe to publish.
    pub total_n: Option<i64>,
    /// The pooled value over the members whose value is known, when safe.
    pub pooled: Option<f64>,
}

/// Applies disclosure control to a peer group's figures for one viewer.
///
/// - The viewer's own agency is named; a peer is named only with NAMED
///   consent, otherwise labelled by its position ("Peer A", …).
/// - A figure the KPI service withheld, or from fewer than `k`
///   observations, is withheld (primary). The KPI service gives no count
///   for a withheld figure, so an empty one and a small one look alike.
/// - The group total (observations, pooled value) is a line over the
///   members: published only when no member's figure is withheld
///   (`touchstone_stats::disclosure::total_publishable`, the rule the KPI
///   service applies to its own lines), since the total minus the published
///   figures would give the withheld ones' sum. No other figure needs to be
///   withheld for it.
/// - Ranks, quartiles and the median use published figures only, so they
///   say nothing about a withheld one.
pub fn disclose(
    members: &[MemberFigure],
    viewer: Option<&str>,
    k: u64,
    kind: kpi::IndicatorKind,
    higher_is_better: bool,
) -> Disclosed {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Published,
        Primary,
        NoData,
    }
    let k = k.max(1) as i64;
    let state: Vec<State> = members
        .iter()
        .map(|m| match &m.value {
            Some(v) if !v.suppressed && v.value.is_some() && v.n >= k => State::Published,
            Some(v) if v.suppressed || v.n > 0 => State::Primary,
            _ => State::NoData,
        })
        .collect();
    let is_own = |i: usize| viewer.is_some_and(|v| members[i].agency == v);
    let n_of = |i: usize| members[i].value.as_ref().map_or(0, |v| v.n.max(0));
    let withheld = state.iter().filter(|s| **s == State::Primary).count();
    let publish_total = touchstone_stats::disclosure::total_publishable(
        withheld,
        None,
        &touchstone_stats::disclosure::Policy {
            k: k as u64,
            checks: Vec::new(),
        },
    );

    // Ranks over published values.
    let value_of = |i: usize| members[i].value.as_ref().and_then(|v| v.value);
    let mut published: Vec<usize> = (0..members.len())
        .filter(|&i| state[i] == State::Published)
        .collect();
    published.sort_by(|&a, &b| {
        let (va, vb) = (value_of(a).unwrap_or(0.0), value_of(b).unwrap_or(0.0));
        let order = va.total_cmp(&vb);
        let order = if higher_is_better {
            order.reverse()
        } else {
            order
        };
        order.then_with(|| members[a].agency.cmp(&members[b].agency))
    });
    let values: Vec<f64> = published.iter().filter_map(|&i| value_of(i)).collect();
    let median = median(&values);
    let m = published.len();

    let mut entries = Vec::with_capacity(members.len());
    let mut peer_letter = 0usize;
    let mut label_for = |i: usize| -> (String, String, pb::Disclosure) {
        let member = &members[i];
        if is_own(i) {
            (
                format!("agencies/{}", member.agency),
                member.display_name.clone(),
                pb::Disclosure::Own,
            )
        } else if member.consent == pb::BenchmarkConsent::Named {
            (
                format!("agencies/{}", member.agency),
                member.display_name.clone(),
                pb::Disclosure::Named,
            )
        } else {
            let label = format!("Peer {}", peer_label(peer_letter));
            peer_letter += 1;
            (String::new(), label, pb::Disclosure::Anonymous)
        }
    };
    let mut previous: Option<(f64, i32)> = None;
    for (position, &i) in published.iter().enumerate() {
        let v = members[i].value.unwrap_or_default();
        let x = v.value.unwrap_or(0.0);
        let rank = match previous {
            Some((px, pr)) if px == x => pr,
            _ => position as i32 + 1,
        };
        previous = Some((x, rank));
        let quartile = (1 + (4 * (rank as usize - 1)) / m.max(1)).min(4) as i32;
        let versus = match (median, v.lower, v.upper, kind) {
            (_, _, _, kpi::IndicatorKind::Count | kpi::IndicatorKind::Rate) => {
                pb::Comparison::Unspecified
            }
            (Some(med), Some(lo), _, _) if lo > med => pb::Comparison::Above,
            (Some(med), _, Some(hi), _) if hi < med => pb::Comparison::Below,
            (Some(_), Some(_), Some(_), _) => pb::Comparison::NotSignificant,
            _ => pb::Comparison::Unspecified,
        };
        let (agency, label, disclosure) = label_for(i);
        entries.push(pb::BenchmarkEntry {
            agency,
            label,
            disclosure: disclosure as i32,
            value: Some(v),
            suppression: pb::Suppression::Unspecified as i32,
            rank,
            quartile,
            versus_median: versus as i32,
        });
    }
    // Withheld entries after the published ones: own first, then named by
    // name, then the anonymous ones (whose order says nothing).
    let mut withheld: Vec<usize> = (0..members.len())
        .filter(|&i| state[i] != State::Published)
        .collect();
    withheld.sort_by_key(|&i| {
        (
            !is_own(i),
            members[i].consent != pb::BenchmarkConsent::Named,
            members[i].display_name.clone(),
        )
    });
    for i in withheld {
        let (agency, label, disclosure) = label_for(i);
        let suppression = match state[i] {
            State::Primary => pb::Suppression::Primary,
            _ => pb::Suppression::NoData,
        };
        entries.push(pb::BenchmarkEntry {
            agency,
            label,
            disclosure: disclosure as i32,
            value: Some(kpi::Value {
                suppressed: true,
                ..Default::default()
            }),
            suppression: suppression as i32,
            rank: 0,
            quartile: 0,
            versus_median: pb::Comparison::Unspecified as i32,
        });
    }

    let (total_n, pooled) = if publish_total {
        let total: i64 = (0..members.len()).map(n_of).sum();
        (Some(total), pooled_value(members, kind))
    } else {
        (None, None)
    };
    Disclosed {
        entries,
        median,
        total_n,
        pooled,
    }
}

/// "A".."Z", then "AA", "AB", …
fn peer_label(i: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if i < 26 {
        (letters[i] as char).to_string()
    } else {
        format!("{}{}", peer_label(i / 26 - 1), letters[i % 26] as char)
    }
}

/// The median of some values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The group's value over every member with data, when all their values are
/// known: pooled shares and rates from their counts, means and NPS weighted
/// by n, counts summed. Quantiles do not pool.
fn pooled_value(members: &[MemberFigure], kind: kpi::IndicatorKind) -> Option<f64> {
    let with_data: Vec<&kpi::Value> = members
        .iter()
        .filter_map(|m| m.value.as_ref())
        .filter(|v| v.n > 0)
        .collect();
    let known: Vec<&kpi::Value> = with_data
        .iter()
        .copied()
        .filter(|v| v.value.is_some() && !v.suppressed)
        .collect();
    // A member whose value the KPI service withheld cannot be pooled; a
    // pool without it would pass for the group's and is not given.
    if known.is_empty() || known.len() < with_data.len() {
        return None;
    }
    match kind {
        kpi::IndicatorKind::Share => {
            let num: i64 = known.iter().filter_map(|v| v.numerator).sum();
            let den: i64 = known.iter().filter_map(|v| v.denominator).sum();
            (den > 0).then(|| num as f64 / den as f64)
        }
        kpi::IndicatorKind::Rate => {
            let num: i64 = known.iter().filter_map(|v| v.numerator).sum();
            let den: i64 = known.iter().filter_map(|v| v.denominator).sum();
            (den > 0).then(|| 1000.0 * num as f64 / den as f64)
        }
        kpi::IndicatorKind::Mean | kpi::IndicatorKind::Nps => {
            let n: i64 = known.iter().map(|v| v.n).sum();
            let sum: f64 = known
                .iter()
                .map(|v| v.n as f64 * v.value.unwrap_or(0.0))
                .sum();
            (n > 0).then(|| sum / n as f64)
        }
        kpi::IndicatorKind::Count => Some(known.iter().filter_map(|v| v.value).sum()),
        _ => None,
    }
}

/// Which clock of a complaint is running now: acknowledgement until it is
/// acknowledged, then the response clock.
pub fn pending_clock(c: &complaints::Complaint) -> Option<&complaints::Clock> {
    match &c.acknowledgement_clock {
        Some(ack) if !ack.completed => Some(ack),
        _ => c.response_clock.as_ref(),
    }
}

/// Whether a complaint is overdue: its pending clock runs and is breached.
pub fn overdue(c: &complaints::Complaint) -> bool {
    pending_clock(c).is_some_and(|clock| !clock.stopped && clock.breached)
}

/// A queue item: what a manager needs of an open complaint, no personal data.
pub fn queue_item(c: &complaints::Complaint) -> pb::QueueItem {
    pb::QueueItem {
        complaint: c.name.clone(),
        unit: c.unit.clone(),
        category: c.category.clone(),
        stage: c.stage,
        severity: c.severity,
        status: c.status,
        officer: c
            .assignment
            .as_ref()
            .map(|a| a.officer.clone())
            .unwrap_or_default(),
        receive_time: c.receive_time,
        clock: pending_clock(c).cloned(),
        overdue: overdue(c),
    }
}

/// Tallies topic tags over responses (each response counts once per topic),
/// most frequent first, at most `limit`.
pub fn count_topics(
    responses: &[touchstone_api::feedback::v1::Response],
    limit: usize,
) -> Vec<pb::TopicCount> {
    let mut tally: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for r in responses {
        let mut topics: Vec<&String> = r.answers.iter().flat_map(|a| a.topics.iter()).collect();
        topics.sort();
        topics.dedup();
        for t in topics {
            let e = tally.entry(t.clone()).or_default();
            e.0 += 1;
            e.1 += r.sentiment;
        }
    }
    let mut out: Vec<pb::TopicCount> = tally
        .into_iter()
        .map(|(topic, (responses, sum))| pb::TopicCount {
            topic,
            responses,
            mean_sentiment: sum / responses as f64,
        })
        .collect();
    out.sort_by(|a, b| {
        b.responses
            .cmp(&a.responses)
            .then_with(|| a.topic.cmp(&b.topic))
    });
    out.truncate(limit);
    out
}

/// The trend of a value against the previous period's, and whether the
/// change is significant (shares, by the two-proportion z-test).
pub fn trend(now: Option<&kpi::Value>, before: Option<&kpi::Value>) -> (pb::Trend, bool) {
    let (Some(now), Some(before)) = (now, before) else {
        return (pb::Trend::Unspecified, false);
    };
    let (Some(a), Some(b)) = (now.value, before.value) else {
        return (pb::Trend::Unspecified, false);
    };
    if now.suppressed || before.suppressed {
        return (pb::Trend::Unspecified, false);
    }
    let trend = if (a - b).abs() < 1e-12 {
        pb::Trend::Flat
    } else if a > b {
        pb::Trend::Up
    } else {
        pb::Trend::Down
    };
    let significant = match (
        now.numerator,
        now.denominator,
        before.numerator,
        before.denominator,
    ) {
        (Some(x1), Some(n1), Some(x2), Some(n2)) if n1 > 0 && n2 > 0 && x1 >= 0 && x2 >= 0 => {
            touchstone_stats::two_proportion_z(x1 as u64, n1 as u64, x2 as u64, n2 as u64)
                .is_some_and(|t| t.significant())
        }
        _ => false,
    };
    (trend, significant)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn today() -> jiff::civil::Date {
        jiff::civil::date(2026, 11, 23)
    }

    #[test]
    fn periods() {
        let p = Period::parse("2026-Q3", today()).unwrap();
        assert_eq!(p.to_string(), "2026-Q3");
        assert_eq!(
            p.bounds(),
            (
                jiff::civil::date(2026, 7, 1),
                jiff::civil::date(2026, 9, 30)
            )
        );
        assert_eq!(p.previous().to_string(), "2026-Q2");
        assert_eq!(
            Period::parse("2026Q1", today())
                .unwrap()
                .previous()
                .to_string(),
            "2025-Q4"
        );
        let m = Period::parse("2024-02", today()).unwrap();
        assert_eq!(m.bounds().1, jiff::civil::date(2024, 2, 29));
        assert_eq!(
            Period::parse("2026-01", today())
                .unwrap()
                .previous()
                .to_string(),
            "2025-12"
        );
        assert_eq!(
            Period::parse("2025", today()).unwrap().bounds().1,
            jiff::civil::date(2025, 12, 31)
        );
        assert_eq!(Period::parse("", today()).unwrap().to_string(), "2026-Q4");
        for bad in ["2026-13", "2026-Q5", "26", "abc", "2026-1", "1999"] {
            assert!(Period::parse(bad, today()).is_err(), "{bad}");
        }
    }

    fn member(agency: &str, consent: pb::BenchmarkConsent, n: i64, x: f64) -> MemberFigure {
        let num = (x * n as f64).round() as i64;
        MemberFigure {
            agency: agency.into(),
            display_name: agency.to_uppercase(),
            consent,
            value: Some(kpi::Value {
                n,
                suppressed: false,
                value: Some(x),
                lower: Some(x - 0.05),
                upper: Some(x + 0.05),
                numerator: Some(num),
                denominator: Some(n),
            }),
        }
    }

    use pb::BenchmarkConsent::{Anonymous, Named};

    #[test]
    fn names_only_own_and_named_peers() {
        let members = vec![
            member("a", Anonymous, 100, 0.9),
            member("b", Named, 100, 0.8),
            member("c", Anonymous, 100, 0.7),
        ];
        let d = disclose(&members, Some("a"), 10, kpi::IndicatorKind::Share, true);
        let labels: Vec<_> = d
            .entries
            .iter()
            .map(|e| (e.agency.as_str(), e.label.as_str()))
            .collect();
        assert_eq!(
            labels,
            [("agencies/a", "A"), ("agencies/b", "B"), ("", "Peer A")]
        );
        assert_eq!(d.median, Some(0.8));
        assert_eq!(d.entries[0].rank, 1);
        assert_eq!(d.entries[0].versus_median, pb::Comparison::Above as i32);
        assert_eq!(
            d.entries[1].versus_median,
            pb::Comparison::NotSignificant as i32
        );
        assert_eq!(d.entries[2].versus_median, pb::Comparison::Below as i32);
        assert_eq!(d.total_n, Some(300));
        // Lower is better flips the ranks.
        let d = disclose(&members, None, 10, kpi::IndicatorKind::Share, false);
        assert_eq!(d.entries[0].label, "Peer A");
        assert_eq!(d.entries[0].value.as_ref().unwrap().value, Some(0.7));
        assert!(
            d.entries
                .iter()
                .all(|e| e.disclosure != pb::Disclosure::Own as i32)
        );
    }

    /// Issue 12: the total minus the published figures would give a
    /// withheld one away, so a withheld member withholds the total (and
    /// the pool), whatever the viewer; the withheld entry carries nothing.
    #[test]
    fn a_withheld_member_withholds_the_total() {
        let members = vec![
            member("a", Anonymous, 200, 0.9),
            member("b", Anonymous, 50, 0.8),
            member("c", Anonymous, 4, 0.5),
            member("d", Anonymous, 120, 0.7),
        ];
        for viewer in [Some("a"), Some("c"), None] {
            let d = disclose(&members, viewer, 10, kpi::IndicatorKind::Share, true);
            let primary: Vec<_> = d
                .entries
                .iter()
                .filter(|e| e.suppression == pb::Suppression::Primary as i32)
                .collect();
            assert_eq!(primary.len(), 1);
            let v = primary[0].value.as_ref().unwrap();
            assert_eq!((v.n, v.value, v.numerator), (0, None, None));
            assert_eq!(primary[0].rank, 0);
            assert_eq!((d.total_n, d.pooled), (None, None));
            let published: Vec<i64> = d
                .entries
                .iter()
                .filter_map(|e| e.value.as_ref().filter(|v| !v.suppressed).map(|v| v.n))
                .collect();
            assert_eq!(published, [200, 50, 120]);
        }
        // A figure the KPI service withheld (no count at all) is withheld too.
        let mut withheld = members.clone();
        withheld[2].value = Some(kpi::Value {
            suppressed: true,
            ..Default::default()
        });
        let d = disclose(&withheld, Some("a"), 10, kpi::IndicatorKind::Share, true);
        assert_eq!(d.total_n, None);
        assert_eq!(
            d.entries
                .iter()
                .filter(|e| e.suppression == pb::Suppression::Primary as i32)
                .count(),
            1
        );
        // With every figure published, the total and the pool are.
        let all = vec![members[0].clone(), members[1].clone(), members[3].clone()];
        let d = disclose(&all, Some("a"), 10, kpi::IndicatorKind::Share, true);
        assert_eq!(d.total_n, Some(370));
        assert!((d.pooled.unwrap() - (180.0 + 40.0 + 84.0) / 370.0).abs() < 1e-9);
    }

    #[test]
    fn ties_share_a_rank_and_quartiles_spread() {
        let members: Vec<_> = (0..8)
            .map(|i| {
                member(
                    &format!("a{i}"),
                    Anonymous,
                    100,
                    if i < 2 { 0.9 } else { 0.1 * i as f64 },
                )
            })
            .collect();
        let d = disclose(&members, None, 10, kpi::IndicatorKind::Share, true);
        let ranks: Vec<i32> = d.entries.iter().map(|e| e.rank).collect();
        assert_eq!(ranks, [1, 1, 3, 4, 5, 6, 7, 8]);
        let quartiles: Vec<i32> = d.entries.iter().map(|e| e.quartile).collect();
        assert_eq!(quartiles, [1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn topics_and_trends() {
        use touchstone_api::feedback::v1::{Answer, Response};
        let r = |topics: &[&str], s: f64| Response {
            answers: vec![Answer {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            }],
            sentiment: s,
            ..Default::default()
        };
        let t = count_topics(&[r(&["wait", "staff"], -0.5), r(&["wait"], 0.0)], 10);
        assert_eq!(t[0].topic, "wait");
        assert_eq!(t[0].responses, 2);
        assert!((t[0].mean_sentiment + 0.25).abs() < 1e-9);
        let v = |x: i64, n: i64| kpi::Value {
            n,
            value: Some(x as f64 / n as f64),
            numerator: Some(x),
            denominator: Some(n),
            ..Default::default()
        };
        assert_eq!(
            trend(Some(&v(900, 1000)), Some(&v(800, 1000))),
            (pb::Trend::Up, true)
        );
        assert_eq!(
            trend(Some(&v(8, 10)), Some(&v(9, 10))),
            (pb::Trend::Down, false)
        );
        assert_eq!(
            trend(None, Some(&v(9, 10))),
            (pb::Trend::Unspecified, false)
        );
    }
}

// ---- Open311 ----

/// Which agency an Open311 request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jurisdiction {
    /// This agency.
    Agency(String),
    /// None was named and the hub has more than one agency (or none).
    Missing,
    /// The named one is not in the directory.
    Unknown,
}

/// How long a retried Open311 POST answers the first one's id.
pub const OPEN311_RETRY_WINDOW_MILLIS: i64 = 10 * 60 * 1000;
/// The most requests one `GET requests` answers (and its default).
pub const OPEN311_MAX_PAGE: i64 = 1000;
/// The longest span of `start_date` to `end_date`, and the default span.
const OPEN311_MAX_SPAN_MILLIS: i64 = 90 * 24 * 3600 * 1000;
/// The most ids one `service_request_id` list may name.
const OPEN311_MAX_IDS: usize = 1000;

/// What a retry of an Open311 POST must repeat: the key, who sent it, and
/// every field but the key. The gateway keeps only a keyed hash of it.
pub fn open311_retry_text(key: &str, sub: &crate::open311_form::Submission) -> String {
    format!(
        "{key}\n{}\n{}\n{}",
        sub.device_id, sub.account_id, sub.canonical
    )
}

/// The complaints API `request_id` of an Open311 POST: derived from its
/// retry key and the retry window it falls in, so two identical POSTs that
/// race within a window make one complaint (the complaints service's own
/// idempotency); none (no replay protection) without a retry key.
pub fn open311_request_id(retry_key: &str, now: i64) -> String {
    use sha2::Digest as _;
    if retry_key.is_empty() {
        return String::new();
    }
    let window = now.div_euclid(OPEN311_RETRY_WINDOW_MILLIS);
    let digest = sha2::Sha256::digest(format!("{retry_key}/{window}").as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("open311-{hex}")
}

/// A `GET requests` query, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestQuery {
    /// `service_request_id`: these ids only, every other filter ignored.
    pub ids: Option<Vec<String>>,
    /// `service_code`: these codes (all when empty).
    pub codes: Vec<String>,
    /// Received in [from, to), millis.
    pub window: (i64, i64),
    /// `status`: open only, closed only, or either.
    pub open: Option<bool>,
    /// `page`, from 1.
    pub page: i64,
    /// `page_size`, 1 to 1000.
    pub page_size: i64,
}

impl RequestQuery {
    /// These ids only.
    pub fn ids(ids: Vec<String>) -> RequestQuery {
        RequestQuery {
            ids: Some(ids),
            codes: Vec::new(),
            window: (0, i64::MAX),
            open: None,
            page: 1,
            page_size: OPEN311_MAX_PAGE,
        }
    }

    /// Parses the arguments (absent and empty are the same); each bad one
    /// is named. `now` anchors the default window: the last 90 days.
    pub fn parse(
        get: impl Fn(&str) -> Option<String>,
        now: i64,
    ) -> Result<RequestQuery, Vec<FieldViolation>> {
        let mut v = Violations::new();
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let ids = list("service_request_id");
        if ids.len() > OPEN311_MAX_IDS {
            v.add(
                "service_request_id",
                format!("at most {OPEN311_MAX_IDS} ids"),
            );
        }
        if ids.iter().any(|id| names::check_id(id).is_err()) {
            v.add(
                "service_request_id",
                "each id must be 1 to 63 characters of a-z, 0-9 and '-'",
            );
        }
        let codes = list("service_code");
        if codes.iter().any(|c| names::check_id(c).is_err()) || codes.len() > 100 {
            v.add(
                "service_code",
                "at most 100 codes, each 1 to 63 characters of a-z, 0-9 and '-'",
            );
        }
        let mut instant = |name: &str| {
            get(name).and_then(|s| match s.parse::<jiff::Timestamp>() {
                Ok(t) => Some(t.as_millisecond()),
                Err(_) => {
                    v.add(
                        name,
                        "must be a W3C datetime with a zone, e.g. 2026-12-01T00:00:00Z",
                    );
                    None
                }
            })
        };
        let start = instant("start_date");
        let end = instant("end_date");
        let window = match (start, end) {
            (Some(s), Some(e)) => (s, e),
            (Some(s), None) => (s, s.saturating_add(OPEN311_MAX_SPAN_MILLIS)),
            (None, Some(e)) => (e.saturating_sub(OPEN311_MAX_SPAN_MILLIS), e),
            (None, None) => (now - OPEN311_MAX_SPAN_MILLIS, now),
        };
        if window.0 > window.1 {
            v.add("end_date", "must not be before start_date");
        } else if window.1 - window.0 > OPEN311_MAX_SPAN_MILLIS {
            v.add("end_date", "may be at most 90 days after start_date");
        }
        let mut open = None;
        let statuses = list("status");
        for s in &statuses {
            match s.as_str() {
                "open" | "closed" => {}
                _ => v.add("status", "must be open, closed or both (comma separated)"),
            }
        }
        let has = |s: &str| statuses.iter().any(|x| x == s);
        if has("open") != has("closed") {
            open = Some(has("open"));
        }
        let mut number = |name: &str, max: i64, default: i64| match get(name) {
            None => default,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    v.add(name, format!("must be a whole number from 1 to {max}"));
                    default
                }
            },
        };
        let page = number("page", 1_000_000, 1);
        let page_size = number("page_size", OPEN311_MAX_PAGE, OPEN311_MAX_PAGE);
        v.finish()?;
        Ok(RequestQuery {
            ids: (!ids.is_empty()).then_some(ids),
            codes,
            // end_date is inclusive in the spec's words ("latest datetime").
            window: (window.0, window.1.saturating_add(1)),
            open,
            page,
            page_size,
        })
    }
}

/// The public words for a complaint's state: Open311's `status_notes`.
pub fn open311_status_notes(status: &complaints::ComplaintStatus) -> String {
    use complaints::Status as S;
    let words = match S::try_from(status.status) {
        Ok(S::Received) => "Received",
        Ok(S::Acknowledged) => "Acknowledged",
        Ok(S::InProgress) => "In progress",
        Ok(S::AwaitingClient) => {
            "Waiting for more information from the person who made the request"
        }
        Ok(S::Resolved) => "Resolved: a response was given",
        Ok(S::Closed) => "Closed",
        Ok(S::Withdrawn) => "Withdrawn",
        Ok(S::Reopened) => "Reopened",
        Ok(S::Unspecified) | Err(_) => "Received",
    };
    let stage = match complaints::Stage::try_from(status.stage) {
        Ok(complaints::Stage::Investigation) => " (investigation)",
        Ok(complaints::Stage::InternalReview) => " (internal review)",
        Ok(complaints::Stage::ExternalReview) => " (external review)",
        _ => "",
    };
    format!("{words}{stage}")
}

/// An instant as Open311 shows it: a W3C datetime in the agency's zone,
/// with its offset (UTC when the zone is unknown).
pub fn open311_datetime(millis: i64, time_zone: &str) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(millis) else {
        return String::new();
    };
    static TZDB: std::sync::LazyLock<jiff::tz::TimeZoneDatabase> =
        std::sync::LazyLock::new(jiff::tz::TimeZoneDatabase::bundled);
    let zone = TZDB.get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let local = zone.to_datetime(t);
    let offset = zone.to_offset(t).seconds();
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        offset / 3600,
        offset % 3600 / 60
    )
}

/// A survey question as an Open311 attribute of the survey's service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Open311Attribute {
    /// The question's key: the attribute's code.
    pub code: String,
    /// The question's text: the attribute's description.
    pub description: String,
    /// The question's kind (feedback's QuestionKind number).
    pub kind: i32,
    /// Whether a response must answer it.
    pub required: bool,
    /// Choices (key, label) of a choice question.
    pub choices: Vec<(String, String)>,
}

impl Open311Attribute {
    /// The attributes of a survey's questions, in order.
    pub fn of_survey(survey: &feedback::Survey) -> Vec<Open311Attribute> {
        survey
            .questions
            .iter()
            .map(|q| Open311Attribute {
                code: q.key.clone(),
                description: q.text.clone(),
                kind: q.kind,
                required: q.required,
                choices: match feedback::QuestionKind::try_from(q.kind) {
                    Ok(feedback::QuestionKind::YesNo) => {
                        vec![("yes".into(), "Yes".into()), ("no".into(), "No".into())]
                    }
                    _ => q
                        .choices
                        .iter()
                        .map(|c| (c.key.clone(), c.label.clone()))
                        .collect(),
                },
            })
            .collect()
    }

    /// The scale of a scored question: lowest and highest score.
    fn scale(&self) -> Option<(i32, i32)> {
        use feedback::QuestionKind as K;
        match K::try_from(self.kind) {
            Ok(K::Agreement5 | K::Satisfaction5) => Some((1, 5)),
            Ok(K::Likelihood11) => Some((0, 10)),
            Ok(K::Effort7) => Some((1, 7)),
            _ => None,
        }
    }

    fn is_text(&self) -> bool {
        self.kind == feedback::QuestionKind::FreeText as i32
    }

    fn is_multiple(&self) -> bool {
        self.kind == feedback::QuestionKind::MultipleChoice as i32
    }

    /// The Open311 datatype.
    pub fn datatype(&self) -> &'static str {
        if self.scale().is_some() {
            "number"
        } else if self.is_text() {
            "text"
        } else if self.is_multiple() {
            "multivaluelist"
        } else {
            "singlevaluelist"
        }
    }

    /// What the value must be, in words.
    pub fn datatype_description(&self) -> String {
        match self.scale() {
            Some((lo, hi)) => format!("a whole number from {lo} to {hi}"),
            None if self.is_text() => "free text".into(),
            None if self.is_multiple() => "one or more of the values' keys".into(),
            None => "one of the values' keys".into(),
        }
    }

    /// The answer a request's values give this question.
    fn answer(&self, values: &[String]) -> Result<feedback::Answer, String> {
        let mut answer = feedback::Answer {
            question_key: self.code.clone(),
            ..Default::default()
        };
        let one = || match values {
            [v] => Ok(v.as_str()),
            _ => Err("takes one value".to_string()),
        };
        if let Some((lo, hi)) = self.scale() {
            match one()?.parse::<i32>() {
                Ok(n) if (lo..=hi).contains(&n) => answer.score = Some(n),
                _ => return Err(format!("must be a whole number from {lo} to {hi}")),
            }
        } else if self.is_text() {
            answer.text = one()?.to_string();
        } else if self.kind == feedback::QuestionKind::YesNo as i32 {
            answer.yes = Some(match one()? {
                "yes" | "true" => true,
                "no" | "false" => false,
                _ => return Err("must be yes or no".into()),
            });
        } else {
            if !self.is_multiple() {
                one()?;
            }
            if let Some(bad) = values
                .iter()
                .find(|v| !self.choices.iter().any(|(key, _)| key == *v))
            {
                let keys: Vec<&str> = self.choices.iter().map(|(k, _)| k.as_str()).collect();
                return Err(format!(
                    "{bad:?} is not one of the values ({})",
                    keys.join(", ")
                ));
            }
            answer.choices = values.to_vec();
        }
        Ok(answer)
    }
}

/// A survey response's answers from an Open311 request's attributes (and its
/// description, which answers the survey's one free-text question when that
/// was not given as an attribute); each bad or missing one is named.
pub fn open311_answers(
    attributes: &[Open311Attribute],
    sub: &crate::open311_form::Submission,
) -> Result<Vec<feedback::Answer>, Vec<FieldViolation>> {
    let mut v = Violations::new();
    let mut answers = Vec::new();
    for code in sub.attributes.keys() {
        if !attributes.iter().any(|a| &a.code == code) {
            v.add(
                format!("attribute[{code}]"),
                "not an attribute of this service",
            );
        }
    }
    let texts: Vec<&Open311Attribute> = attributes
        .iter()
        .filter(|a| a.is_text() && !sub.attributes.contains_key(&a.code))
        .collect();
    let description = sub.description.trim();
    for a in attributes {
        let field = format!("attribute[{}]", a.code);
        match sub.attributes.get(&a.code) {
            Some(values) => match a.answer(values) {
                Ok(answer) => answers.push(answer),
                Err(e) => v.add(field, e),
            },
            None if a.is_text() && texts.len() == 1 && !description.is_empty() => {
                answers.push(feedback::Answer {
                    question_key: a.code.clone(),
                    text: description.to_string(),
                    ..Default::default()
                });
            }
            None if a.required => v.add(field, "required"),
            None => {}
        }
    }
    if !description.is_empty() && texts.len() != 1 {
        v.add(
            "description",
            "this service has no free-text question left for it: give the comment as its attribute",
        );
    }
    v.finish()?;
    Ok(answers)
}

/// Checks the Open311 fields of a service, naming each bad one.
pub fn check_open311_service(
    s: &pb::Open311Service,
    v: &mut touchstone_platform::error::Violations,
) {
    let text = |value: &str, max: usize| {
        value.chars().count() <= max && !value.chars().any(|c| c.is_control() && c != '\n')
    };
    if !text(&s.description, 2000) {
        v.add(
            "open311_service.description",
            "at most 2000 printable characters",
        );
    }
    if !text(&s.group, 100) || s.group.contains('\n') {
        v.add("open311_service.group", "at most 100 printable characters");
    }
    if s.keywords.len() > 50 {
        v.add("open311_service.keywords", "at most 50 keywords");
    }
    for (i, k) in s.keywords.iter().enumerate() {
        let k = k.trim();
        // Open311 joins keywords with commas.
        if k.is_empty() || !text(k, 100) || k.contains([',', '\n']) {
            v.add(
                format!("open311_service.keywords[{i}]"),
                "1 to 100 printable characters, no comma",
            );
        }
    }
    let category = s.complaint_category.trim();
    let survey = s.survey.trim();
    if category.is_empty() == survey.is_empty() {
        v.add(
            "open311_service.complaint_category",
            "required: a complaint category or (in `survey`) a survey, not both",
        );
    } else if !survey.is_empty() {
        if !survey.starts_with("agencies/") || survey.split('/').count() != 4 {
            v.add(
                "open311_service.survey",
                "must be agencies/{agency}/surveys/{survey}",
            );
        }
    } else if !text(category, 100) || category.contains('\n') {
        v.add(
            "open311_service.complaint_category",
            "at most 100 printable characters",
        );
    }
    if !text(&s.complaint_service, 100) || s.complaint_service.contains('\n') {
        v.add(
            "open311_service.complaint_service",
            "at most 100 printable characters",
        );
    }
}

// ---- API keys ----

/// Requests per minute of a key that names no rate.
pub const DEFAULT_KEY_RATE: i32 = 60;
/// Highest rate a key may be given.
pub const MAX_KEY_RATE: i32 = 100_000;
/// What every API key starts with, so that a leaked one is recognisable.
pub const KEY_PREFIX: &str = "ts311_";

/// A new API key: the prefix and 256 random bits, base64url.
pub fn new_api_key() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

/// What is stored of a key: its SHA-256, hex. A key has 256 random bits, so
/// no slow password hash is needed to make guessing from the hash hopeless.
pub fn api_key_hash(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a key's rate: 0 means the default.
pub fn key_rate(requested: i32) -> Result<i32, String> {
    match requested {
        0 => Ok(DEFAULT_KEY_RATE),
        n if (1..=MAX_KEY_RATE).contains(&n) => Ok(n),
        _ => Err(format!(
            "from 1 to {MAX_KEY_RATE}, or 0 for {DEFAULT_KEY_RATE}"
        )),
    }
}

/// Requests per key per clock minute (a fixed window): enough to stop one
/// system flooding the intake, and cheap. Per process: with several gateway
/// replicas each allows the rate.
#[derive(Debug, Default)]
pub struct KeyLimiter {
    windows: std::sync::Mutex<HashMap<String, (i64, i32)>>,
}

impl KeyLimiter {
    /// Whether the key named `key` may make one more request in the minute
    /// of `now_millis`, counting it if so.
    pub fn admit(&self, key: &str, rate: i32, now_millis: i64) -> bool {
        let minute = now_millis.div_euclid(60_000);
        let mut windows = match self.windows.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Windows of past minutes are of no use: drop them now and then.
        if windows.len() > 10_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let slot = windows.entry(key.to_string()).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        if slot.1 >= rate {
            return false;
        }
        slot.1 += 1;
        true
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_eq!(api_key_hash(&a), api_key_hash(&format!(" {a}\n")));
        assert_ne!(api_key_hash(&a), api_key_hash(&b));
        assert_eq!(api_key_hash(&a).len(), 64);
        assert!(!api_key_hash(&a).contains(&a[KEY_PREFIX.len()..]));
    }

    #[test]
    fn rates() {
        assert_eq!(key_rate(0), Ok(DEFAULT_KEY_RATE));
        assert_eq!(key_rate(5), Ok(5));
        assert!(key_rate(-1).is_err());
        assert!(key_rate(MAX_KEY_RATE + 1).is_err());
    }

    #[test]
    fn limiter_counts_per_key_per_minute() {
        let l = KeyLimiter::default();
        let t = 1_800_000_000_000;
        assert!(l.admit("a", 2, t));
        assert!(l.admit("a", 2, t + 1));
        assert!(!l.admit("a", 2, t + 2));
        assert!(l.admit("b", 2, t + 2));
        let next_minute = (t.div_euclid(60_000) + 1) * 60_000;
        assert!(l.admit("a", 2, next_minute));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod open311_tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn query(args: &[(&str, &str)]) -> Result<RequestQuery, Vec<String>> {
        let now = 1_800_000_000_000;
        RequestQuery::parse(
            |name| {
                args.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            },
            now,
        )
        .map_err(|v| v.into_iter().map(|f| f.field).collect())
    }

    #[test]
    fn request_queries_default_and_check_each_argument() {
        let q = query(&[]).unwrap();
        assert_eq!(q.window, (1_800_000_000_000 - 90 * DAY, 1_800_000_000_001));
        assert_eq!((q.page, q.page_size, q.open, q.ids), (1, 1000, None, None));
        let q = query(&[
            ("start_date", "2026-01-01T00:00:00+10:00"),
            ("end_date", "2026-03-31T14:00:00Z"),
            ("status", "closed"),
            ("service_code", "delay, other"),
            ("page", "3"),
            ("page_size", "20"),
        ])
        .unwrap();
        let start = "2025-12-31T14:00:00Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(q.window.0, start.as_millisecond());
        assert_eq!(
            q.window.1 - q.window.0,
            90 * DAY + 1,
            "exactly 90 days, end included"
        );
        assert_eq!(q.open, Some(false));
        assert_eq!(q.codes, ["delay", "other"]);
        assert_eq!((q.page, q.page_size), (3, 20));
        assert_eq!(query(&[("status", "open,closed")]).unwrap().open, None);
        assert_eq!(
            query(&[("service_request_id", "a,b")]).unwrap().ids,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        // Only start: the 90 days after it.
        let q = query(&[("start_date", "2026-01-01T00:00:00Z")]).unwrap();
        assert_eq!(q.window.1 - q.window.0, 90 * DAY + 1);
        for (args, field) in [
            (vec![("start_date", "2026-01-01")], "start_date"),
            (vec![("end_date", "2026-01-01T00:00:00")], "end_date"),
            (
                vec![
                    ("start_date", "2026-01-01T00:00:00Z"),
                    ("end_date", "2026-04-01T00:00:01Z"),
                ],
                "end_date",
            ),
            (vec![("status", "pending")], "status"),
            (vec![("page", "0")], "page"),
            (vec![("page", "x")], "page"),
            (vec![("page_size", "1001")], "page_size"),
            (vec![("service_code", "Bad!")], "service_code"),
            (vec![("service_request_id", "a,B")], "service_request_id"),
        ] {
            assert_eq!(query(&args).unwrap_err(), [field], "{args:?}");
        }
    }

    #[test]
    fn datetimes_carry_the_agencys_offset() {
        let t = "2026-12-05T01:02:03Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        assert_eq!(
            open311_datetime(t, "Australia/Sydney"),
            "2026-12-05T12:02:03+11:00"
        );
        assert_eq!(
            open311_datetime(t, "America/Los_Angeles"),
            "2026-12-04T17:02:03-08:00"
        );
        assert_eq!(
            open311_datetime(t, "Nowhere/Else"),
            "2026-12-05T01:02:03+00:00"
        );
    }

    #[test]
    fn a_retry_keeps_its_request_id_within_a_window() {
        assert_eq!(open311_request_id("", 0), "");
        let at = |m: i64| open311_request_id("k", m);
        assert_eq!(at(0), at(OPEN311_RETRY_WINDOW_MILLIS - 1));
        assert_ne!(at(0), at(OPEN311_RETRY_WINDOW_MILLIS));
        assert_ne!(at(0), open311_request_id("k2", 0));
        assert!(at(0).starts_with("open311-") && at(0).len() <= 100);
    }
}
