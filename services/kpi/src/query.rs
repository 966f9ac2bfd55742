//! Indicator series, equity splits and single figures, read from the rollup
//! (one grouped SQL read of value counts, folded into periods here).

use crate::domain::{self, Cells, Dimension, Estimate, Granularity, Indicator, Period};
use crate::store::{self, Bucket, Filter};

use std::collections::{BTreeMap, HashMap};
use time::Date;
use touchstone_platform::db::Tx;
use touchstone_stats::Test;

/// What to compute.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The agency.
    pub agency: &'a str,
    /// The indicator.
    pub indicator: &'a Indicator,
    /// First day.
    pub start: Date,
    /// Last day.
    pub end: Date,
    /// Period length.
    pub granularity: Granularity,
    /// Split.
    pub group: Dimension,
    /// Cells read.
    pub filter: &'a Filter,
    /// Suppression threshold.
    pub k: u64,
}

/// One point of a series.
#[derive(Debug, Clone)]
pub struct Point {
    /// The period (clipped to the range).
    pub period: Period,
    /// The estimate.
    pub estimate: Estimate,
    /// The test against the previous period, when one applies.
    pub test: Option<Test>,
}

/// Cells per group label and period (None: the period before the first).
type Folded = BTreeMap<String, BTreeMap<Option<usize>, Cells>>;

async fn fold(tx: &mut Tx, q: &Query<'_>) -> Result<(Vec<Period>, Folded), sqlx::Error> {
    let (before, periods) = domain::periods(q.start, q.end, q.granularity);
    let bucket = match q.granularity {
        Granularity::Month | Granularity::Quarter => Bucket::Month,
        Granularity::Year => Bucket::Year,
        _ => Bucket::Day,
    };
    let measures = q.indicator.measures();
    // The period before the first, then the range. When the range starts
    // inside a period, the days between the two must not be read: a month
    // or year bucket would fold them into the first point.
    let ranges = if before.1.next_day() == Some(q.start) {
        vec![(before.0, q.end)]
    } else {
        vec![before, (q.start, q.end)]
    };
    let mut rows: HashMap<(i64, String), Cells> = HashMap::new();
    for (from, to) in ranges {
        let read = store::Read {
            measures: &measures,
            from: domain::day_key(from),
            to: domain::day_key(to),
            filter: q.filter,
            group: q.group,
            bucket,
        };
        for (key, cells) in store::counts(tx, q.agency, &read).await? {
            domain::merge(rows.entry(key).or_default(), &cells);
        }
    }
    let mut out: Folded = BTreeMap::new();
    for ((b, raw), cells) in rows {
        let key = match bucket {
            Bucket::Day => b,
            Bucket::Month => b * 100 + 1,
            Bucket::Year => b * 10_000 + 101,
        };
        let Some(d) = domain::key_date(key) else {
            continue;
        };
        let slot = if d <= before.1 {
            None
        } else {
            Some(periods.iter().rposition(|p| p.0 <= d).unwrap_or(0))
        };
        let dst = out
            .entry(q.group.label(&raw))
            .or_default()
            .entry(slot)
            .or_default();
        domain::merge(dst, &cells);
    }
    if out.is_empty() && q.group == Dimension::None {
        out.insert(String::new(), BTreeMap::new());
    }
    Ok((periods, out))
}

/// The series of `q`, one per group (sorted), each with a point per period.
pub async fn series(tx: &mut Tx, q: &Query<'_>) -> Result<Vec<(String, Vec<Point>)>, sqlx::Error> {
    let (periods, folded) = fold(tx, q).await?;
    let empty = Cells::new();
    let mut out = Vec::new();
    for (group, slots) in folded {
        let mut previous = domain::estimate(q.indicator, slots.get(&None).unwrap_or(&empty), q.k);
        let mut points = Vec::with_capacity(periods.len());
        for (i, period) in periods.iter().enumerate() {
            let estimate =
                domain::estimate(q.indicator, slots.get(&Some(i)).unwrap_or(&empty), q.k);
            let test = domain::compare(&estimate, &previous);
            points.push(Point {
                period: *period,
                estimate: estimate.clone(),
                test,
            });
            previous = estimate;
        }
        out.push((group, points));
    }
    if out.len() > 1 {
        for i in 0..periods.len() {
            let mut column: Vec<&mut Estimate> =
                out.iter_mut().map(|(_, p)| &mut p[i].estimate).collect();
            if let Some(g) = domain::suppress_secondary(&mut column) {
                out[g].1[i].test = None;
                if let Some(next) = out[g].1.get_mut(i + 1) {
                    next.test = None;
                }
            }
        }
    }
    Ok(out)
}

/// The indicator over the whole range, unsplit.
pub async fn whole(tx: &mut Tx, q: &Query<'_>) -> Result<Estimate, sqlx::Error> {
    let q = Query {
        granularity: Granularity::Whole,
        group: Dimension::None,
        ..q.clone()
    };
    let s = series(tx, &q).await?;
    Ok(s.into_iter()
        .next()
        .and_then(|(_, points)| points.into_iter().next())
        .map_or_else(
            || domain::estimate(q.indicator, &Cells::new(), q.k),
            |p| p.estimate,
        ))
}

/// One segment of an equity split.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Label.
    pub label: String,
    /// Estimate.
    pub estimate: Estimate,
    /// Segment value − whole value, when both are published.
    pub gap: Option<f64>,
    /// The segment against everyone else.
    pub test: Option<Test>,
}

/// The whole and each segment of `q.group` over the whole range.
pub async fn equity(tx: &mut Tx, q: &Query<'_>) -> Result<(Estimate, Vec<Segment>), sqlx::Error> {
    let q = Query {
        granularity: Granularity::Whole,
        ..q.clone()
    };
    let (_, folded) = fold(tx, &q).await?;
    let parts: Vec<(String, Cells)> = folded
        .into_iter()
        .map(|(label, mut slots)| (label, slots.remove(&Some(0)).unwrap_or_default()))
        .collect();
    let mut all = Cells::new();
    for (_, cells) in &parts {
        domain::merge(&mut all, cells);
    }
    let whole = domain::estimate(q.indicator, &all, q.k);
    let mut segments: Vec<Segment> = parts
        .into_iter()
        .map(|(label, cells)| {
            let estimate = domain::estimate(q.indicator, &cells, q.k);
            let rest = domain::estimate(q.indicator, &domain::subtract(&all, &cells), q.k);
            let gap = match (estimate.value, whole.value) {
                (Some(s), Some(w)) => Some(s - w),
                _ => None,
            };
            let test = domain::compare(&estimate, &rest);
            Segment {
                label,
                estimate,
                gap,
                test,
            }
        })
        .collect();
    let mut column: Vec<&mut Estimate> = segments.iter_mut().map(|s| &mut s.estimate).collect();
    if let Some(g) = domain::suppress_secondary(&mut column) {
        segments[g].gap = None;
        segments[g].test = None;
    }
    Ok((whole, segments))
}
