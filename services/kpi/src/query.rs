//! Indicator series, equity splits and single figures, read from the rollup
//! and published under disclosure control (DESIGN §7, docs/kpi.md "What a
//! caller can and cannot learn").
//!
//! Every query of an indicator builds the same table for its agency: every
//! cell a caller could ask for (each service, unit and channel and every
//! combination of them with their totals; each month, quarter and year of
//! the calendar years around the range; the days, and one characteristic's
//! segments, when the query needs them) linked by the lines that add up
//! (groups to their total, months to their quarter, …), and
//! `touchstone_stats::disclosure::protect` decides which cells are published.
//! The months-and-up table is decided first and days and segments after it
//! with it fixed, so a query by day or by segment never changes what a query
//! by month publishes. A query then reads its points off the table.

use crate::domain::{self, Cells, Dimension, Estimate, Granularity, Guard, Indicator, Period};
use crate::store::{self, Filter};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use time::{Date, Duration};
use touchstone_platform::db::Tx;
use touchstone_stats::Test;
use touchstone_stats::disclosure::{self, Content, Line, Policy, Status};

/// What to compute.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The agency.
    pub agency: &'a str,
    /// The indicator.
    pub indicator: &'a Indicator,
    /// First day (the first of a grid period, see `domain::grid_level`).
    pub start: Date,
    /// Last day (the last of a grid period).
    pub end: Date,
    /// Period length.
    pub granularity: Granularity,
    /// Split.
    pub group: Dimension,
    /// Cells read.
    pub filter: &'a Filter,
    /// Suppression threshold.
    pub k: u64,
    /// Tables decided before.
    pub cache: &'a Cache,
}

/// How many protected tables a process keeps.
const CACHED_TABLES: usize = 64;

/// What a protected table depends on besides its agency's rollups: the
/// agency, the measures read, the stage or characteristic its groups are
/// split by, the calendar years, whether days are read, and `k`.
type TableKey = (
    String,
    Vec<String>,
    Option<&'static str>,
    Option<char>,
    (i32, i32),
    bool,
    u64,
);

/// A cached table: the version it was read after, when it was last used,
/// and the table.
type Cached = (i64, u64, Arc<Table>);

/// Protected tables, reused while their agency's rollup version
/// (`store::version`, read in the query's transaction) has not changed: a
/// change to the rollups, or a rebuild, makes a new version, and a table is
/// only ever served for the version it was read after. Freshness is
/// therefore exact, not timed; the cache only saves rebuilding and
/// re-deciding the same table for the next query of an unchanged agency.
#[derive(Default)]
pub struct Cache {
    inner: std::sync::Mutex<(u64, HashMap<TableKey, Cached>)>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

impl Cache {
    fn get(&self, key: &TableKey, version: i64) -> Option<Arc<Table>> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (tick, map) = &mut *guard;
        *tick += 1;
        let entry = map.get_mut(key)?;
        if entry.0 != version {
            return None;
        }
        entry.1 = *tick;
        Some(entry.2.clone())
    }

    fn put(&self, key: TableKey, version: i64, table: Arc<Table>) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (tick, map) = &mut *guard;
        *tick += 1;
        if map.len() >= CACHED_TABLES && !map.contains_key(&key) {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, used, _))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        // Never replace a newer table with an older one.
        if map.get(&key).is_none_or(|e| e.0 <= version) {
            map.insert(key, (version, *tick, table));
        }
    }
}

/// The measures a query's table reads: its indicator's and its guard's.
fn measures_of(q: &Query<'_>) -> Vec<String> {
    let mut measures = q.indicator.measures();
    for m in Guard::of(q.indicator).measures {
        if !measures.contains(&m) {
            measures.push(m);
        }
    }
    measures
}

/// One point of a series.
#[derive(Debug, Clone)]
pub struct Point {
    /// The period.
    pub period: Period,
    /// The estimate.
    pub estimate: Estimate,
    /// The test against the previous period, when one applies.
    pub test: Option<Test>,
}

/// A dimension's value in a cube key: service, unit, channel and segment
/// label, `None` for all of them.
type Key = [Option<Arc<str>>; 4];

/// A grid period: level (0 year, 1 quarter, 2 month, 3 day) and first day.
type Slot = (u8, Date);

fn level_of(g: Granularity) -> u8 {
    match g {
        Granularity::Year => 0,
        Granularity::Quarter => 1,
        Granularity::Day => 3,
        _ => 2,
    }
}

fn granularity_of(level: u8) -> Granularity {
    [
        Granularity::Year,
        Granularity::Quarter,
        Granularity::Month,
        Granularity::Day,
    ][usize::from(level.min(3))]
}

/// The day of a fine cell's bucket (yyyymmdd, or yyyymm for a monthly
/// sum, which stands on the month's first day) and whether it is a day.
fn fine_day(bucket: i64) -> Option<(Date, bool)> {
    let is_day = bucket > 999_999;
    domain::key_date(if is_day { bucket } else { bucket * 100 + 1 }).map(|d| (d, is_day))
}

/// Every cube key and grid period whose cell holds the fine cell `full` on
/// `day`: each combination of its dimensions with "all" (a segment only
/// when it has one) in each grid period holding the day, down to days for
/// a daily cell and months for a monthly one.
fn holding(full: &Key, day: Date, is_day: bool) -> impl Iterator<Item = (Key, Slot)> + '_ {
    (0..16u8)
        .filter(move |mask| mask & 8 != 0 || full[3].is_some())
        .flat_map(move |mask| {
            let key: Key = std::array::from_fn(|d| {
                if mask & (1 << d) != 0 {
                    None
                } else {
                    full[d].clone()
                }
            });
            slots_of(day, if is_day { 3 } else { 2 }).map(move |slot| (key.clone(), slot))
        })
}

/// The grid periods holding day `d`, coarsest first, down to `finest`.
fn slots_of(d: Date, finest: u8) -> impl Iterator<Item = Slot> {
    (0..=finest).map(move |l| (l, granularity_of(l).start_of(d)))
}

/// The disclosure table of one query.
struct Table {
    index: HashMap<(Key, Slot), usize>,
    cells: Vec<Cells>,
    status: Vec<Status>,
}

impl Table {
    /// Reads and protects every cell of the years from `from` to `to`.
    async fn build(
        tx: &mut Tx,
        q: &Query<'_>,
        years: (i32, i32),
        by_day: bool,
    ) -> Result<Table, sqlx::Error> {
        let guard = Guard::of(q.indicator);
        let measures = measures_of(q);
        let segment = match q.group {
            Dimension::Segment(tag) => Some(tag),
            _ => None,
        };
        // A stage's figure: the stage takes the segment's place (complaint
        // figures have no segments), its cells are tier 2, decided on their
        // resolutions within standard with the all-stage table fixed.
        let stage = domain::stage_of(q.indicator);
        // From yyyy0000: the monthly sums are filed under yyyymm00.
        let span = (
            i64::from(years.0) * 10_000,
            i64::from(years.1) * 10_000 + 1231,
        );
        let mut rows = store::cube(tx, q.agency, &measures, span, false, segment.is_some()).await?;
        if by_day {
            rows.extend(store::cube(tx, q.agency, &measures, span, true, segment.is_some()).await?);
        }
        // Each row counts in every cell that holds it: each combination of
        // its dimensions with "all", in each grid period holding its day.
        // Tiers: 0 the months-and-up table without segments, 1 its days,
        // 2 the segments.
        // Rows first summed per finest cell (its own key and day or
        // month), then each finest cell spread over the cells that hold it:
        // far fewer merges than spreading every value row.
        let mut fine: BTreeMap<(i64, Key), Cells> = BTreeMap::new();
        for row in &rows {
            let label = match stage {
                Some(_) => domain::stage_of_measure(&row.measure).map(Arc::from),
                None => segment.map(|tag| Arc::from(domain::segment_label(&row.segment, tag))),
            };
            let full: Key = [
                Some(Arc::from(row.service.as_str())),
                Some(Arc::from(row.unit.as_str())),
                Some(Arc::from(row.channel.to_string())),
                label,
            ];
            *fine
                .entry((row.bucket, full))
                .or_default()
                .entry(row.measure.clone())
                .or_default()
                .entry(row.value)
                .or_default() += row.count;
        }
        let mut acc: BTreeMap<(u8, i32, Slot, Key), Cells> = BTreeMap::new();
        for ((bucket, full), cells) in &fine {
            let Some((day, is_day)) = fine_day(*bucket) else {
                continue;
            };
            for (key, slot) in holding(full, day, is_day) {
                // Days come from the daily read only, months and up from
                // the monthly one.
                if (slot.0 == 3) != is_day {
                    continue;
                }
                let tier = if key[3].is_some() {
                    2
                } else {
                    u8::from(slot.0 == 3)
                };
                domain::merge(acc.entry((tier, day.year(), slot, key)).or_default(), cells);
            }
        }
        let mut index = HashMap::with_capacity(acc.len());
        let mut cells = Vec::with_capacity(acc.len());
        let mut tiers = Vec::with_capacity(acc.len());
        for ((tier, _, slot, key), c) in acc {
            index.insert((key, slot), cells.len());
            cells.push(c);
            tiers.push(tier);
        }
        let contents: Vec<Content> = cells.iter().map(|c| guard.content(c)).collect();
        let stage_contents: Vec<Content> = match stage {
            Some(_) => cells.iter().map(domain::stage_content).collect(),
            None => Vec::new(),
        };
        // The atoms the audit splits the table into: the finest cells, by
        // month and (when read) by day, each with every cell holding it.
        let (mut by_month, mut by_days) = (Vec::new(), Vec::new());
        let (mut stage_month, mut stage_days) = (Vec::new(), Vec::new());
        for ((bucket, full), c) in &fine {
            let Some((day, is_day)) = fine_day(*bucket) else {
                continue;
            };
            let mut holders: Vec<usize> = holding(full, day, is_day)
                .filter_map(|cell| index.get(&cell).copied())
                .collect();
            holders.sort_unstable();
            holders.dedup();
            if stage.is_some() && full[3].is_some() {
                let atom = disclosure::Atom {
                    content: domain::stage_content(c),
                    cells: holders.clone(),
                };
                if is_day {
                    stage_days.push(atom);
                } else {
                    stage_month.push(atom);
                }
            }
            let atom = disclosure::Atom {
                content: guard.content(c),
                cells: holders,
            };
            if is_day {
                by_days.push(atom);
            } else {
                by_month.push(atom);
            }
        }
        // Lines, by the tier of their children.
        let mut lines: BTreeMap<(u8, usize, u8), Vec<usize>> = BTreeMap::new();
        for ((key, slot), &i) in &index {
            for d in 0..4 {
                if key[d].is_some() {
                    let mut parent = key.clone();
                    parent[d] = None;
                    if let Some(&p) = index.get(&(parent, *slot)) {
                        lines.entry((tiers[i], p, d as u8)).or_default().push(i);
                    }
                }
            }
            if slot.0 > 0 {
                let up = (slot.0 - 1, granularity_of(slot.0 - 1).start_of(slot.1));
                if let Some(&p) = index.get(&(key.clone(), up)) {
                    lines.entry((tiers[i], p, 4)).or_default().push(i);
                }
            }
        }
        let policy = Policy {
            k: q.k,
            checks: guard.checks.clone(),
        };
        let stage_policy = Policy {
            k: q.k,
            checks: vec![disclosure::Check::EachBlock(2)],
        };
        let mut status: Vec<Status> = Vec::new();
        for tier in 0..3u8 {
            let end = tiers.iter().take_while(|&&t| t <= tier).count();
            if end == status.len() {
                continue;
            }
            let tier_lines: Vec<Line> = lines
                .iter()
                .filter(|((t, _, _), _)| *t == tier)
                .map(|((_, parent, _), children)| {
                    let mut children = children.clone();
                    children.sort_unstable();
                    Line {
                        parent: *parent,
                        children,
                        // Lines into days or segments never withhold a
                        // cell of the table they extend.
                        may_hide_parent: *parent >= status.len(),
                    }
                })
                .collect();
            let monthly = tier == 0 || !by_day;
            let protected = if stage.is_some() && tier == 2 {
                let atoms = if monthly { &stage_month } else { &stage_days };
                disclosure::protect(
                    &stage_contents[..end],
                    &tier_lines,
                    &stage_policy,
                    &status,
                    atoms,
                )
            } else {
                let atoms = if monthly { &by_month } else { &by_days };
                disclosure::protect(&contents[..end], &tier_lines, &policy, &status, atoms)
            };
            if !protected.unprotected.is_empty() {
                tracing::debug!(
                    lines = protected.unprotected.len(),
                    "disclosure: lines left unprotected"
                );
            }
            status = protected.status;
        }
        Ok(Table {
            index,
            cells,
            status,
        })
    }

    /// The published estimate of cell `key` in `slot` (withheld unless the
    /// table publishes it).
    fn estimate(&self, q: &Query<'_>, key: &Key, slot: Slot) -> Estimate {
        let empty = Cells::new();
        let i = self.index.get(&(key.clone(), slot)).copied();
        let cells = i.map_or(&empty, |i| &self.cells[i]);
        let mut e = domain::estimate(q.indicator, cells, q.k);
        if i.is_none_or(|i| self.status[i] != Status::Published) {
            domain::withhold(&mut e);
        }
        e
    }

    fn cells_of(&self, key: &Key, slot: Slot) -> Cells {
        self.index
            .get(&(key.clone(), slot))
            .map(|&i| self.cells[i].clone())
            .unwrap_or_default()
    }

    /// The values of dimension `d` under `base` (its other dimensions as
    /// given) in any of `slots`, sorted.
    fn groups(&self, base: &Key, d: usize, slots: &[Slot]) -> Vec<String> {
        let mut out: Vec<String> = self
            .index
            .keys()
            .filter(|(key, slot)| {
                slots.contains(slot)
                    && key[d].is_some()
                    && (0..4).all(|x| x == d || key[x] == base[x])
            })
            .filter_map(|(key, _)| key[d].as_deref().map(str::to_string))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn dimension_index(d: Dimension) -> Option<usize> {
    match d {
        Dimension::None => None,
        Dimension::Service => Some(0),
        Dimension::Unit => Some(1),
        Dimension::Channel => Some(2),
        Dimension::Segment(_) => Some(3),
    }
}

/// The cube key of a query's scope (and of its stage, for a stage's
/// figure).
fn scope_key(q: &Query<'_>) -> Key {
    let f = q.filter;
    let some = |s: &str| (!s.is_empty()).then(|| Arc::from(s));
    [
        some(&f.service),
        some(&f.unit),
        (f.channel != 0).then(|| Arc::from(f.channel.to_string())),
        domain::stage_of(q.indicator).map(Arc::from),
    ]
}

/// The periods of a query and the one before its first, as grid slots.
fn grid(q: &Query<'_>) -> (u8, Slot, Vec<(Period, Slot)>) {
    let level = domain::grid_level(q.start, q.end, q.granularity).unwrap_or(Granularity::Day);
    let l = level_of(level);
    let g = granularity_of(l);
    let mut points = Vec::new();
    let mut at = q.start;
    while at <= q.end {
        let next = g.next(at);
        points.push(((at, next - Duration::days(1)), (l, at)));
        at = next;
    }
    let before = (l, g.start_of(q.start - Duration::days(1)));
    (l, before, points)
}

async fn table(
    tx: &mut Tx,
    q: &Query<'_>,
) -> Result<(Arc<Table>, u8, Slot, Vec<(Period, Slot)>), sqlx::Error> {
    let (level, before, points) = grid(q);
    let years = (before.1.year(), q.end.year());
    let by_day = level == 3;
    // The version first: the table is read after it, so it is at least as
    // new as the version it is filed under.
    let version = store::version(tx, q.agency).await?;
    let key: TableKey = (
        q.agency.to_string(),
        measures_of(q),
        domain::stage_of(q.indicator),
        match q.group {
            Dimension::Segment(tag) => Some(tag),
            _ => None,
        },
        years,
        by_day,
        q.k,
    );
    if let Some(t) = q.cache.get(&key, version) {
        return Ok((t, level, before, points));
    }
    let t = Arc::new(Table::build(tx, q, years, by_day).await?);
    q.cache.put(key, version, t.clone());
    Ok((t, level, before, points))
}

/// The series of `q`, one per group (sorted), each with a point per period.
pub async fn series(tx: &mut Tx, q: &Query<'_>) -> Result<Vec<(String, Vec<Point>)>, sqlx::Error> {
    let (t, _, before, points) = table(tx, q).await?;
    let base = scope_key(q);
    let groups: Vec<(String, Key)> = match dimension_index(q.group) {
        None => vec![(String::new(), base.clone())],
        Some(d) => {
            let mut slots: Vec<Slot> = points.iter().map(|p| p.1).collect();
            slots.push(before);
            let values = match &base[d] {
                Some(v) => vec![v.to_string()],
                None => t.groups(&base, d, &slots),
            };
            let mut out: Vec<(String, Key)> = values
                .into_iter()
                .map(|v| {
                    let mut key = base.clone();
                    let label = match q.group {
                        Dimension::Segment(_) => v.clone(),
                        other => other.label(&v),
                    };
                    key[d] = Some(Arc::from(v));
                    (label, key)
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
    };
    let mut out = Vec::with_capacity(groups.len());
    for (label, key) in groups {
        let mut previous = t.estimate(q, &key, before);
        let mut series = Vec::with_capacity(points.len());
        for (period, slot) in &points {
            let estimate = t.estimate(q, &key, *slot);
            let test = domain::compare(&estimate, &previous);
            series.push(Point {
                period: *period,
                estimate: estimate.clone(),
                test,
            });
            previous = estimate;
        }
        out.push((label, series));
    }
    Ok(out)
}

/// The indicator over the whole range (one grid period), unsplit.
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
            || {
                let mut e = domain::estimate(q.indicator, &Cells::new(), q.k);
                domain::withhold(&mut e);
                e
            },
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

/// The whole and each segment of `q.group` over the whole range (one grid
/// period).
pub async fn equity(tx: &mut Tx, q: &Query<'_>) -> Result<(Estimate, Vec<Segment>), sqlx::Error> {
    let q = Query {
        granularity: Granularity::Whole,
        ..q.clone()
    };
    let (t, _, _, points) = table(tx, &q).await?;
    let Some(&(_, slot)) = points.first() else {
        return Ok((
            domain::estimate(q.indicator, &Cells::new(), q.k),
            Vec::new(),
        ));
    };
    let base = scope_key(&q);
    let whole = t.estimate(&q, &base, slot);
    let all = t.cells_of(&base, slot);
    let Some(d) = dimension_index(q.group) else {
        return Ok((whole, Vec::new()));
    };
    let segments = t
        .groups(&base, d, &[slot])
        .into_iter()
        .map(|label| {
            let mut key = base.clone();
            key[d] = Some(Arc::from(label.as_str()));
            let estimate = t.estimate(&q, &key, slot);
            // Everyone else: the whole minus a published segment, which the
            // caller could work out from the two anyway.
            let rest = domain::estimate(
                q.indicator,
                &domain::subtract(&all, &t.cells_of(&key, slot)),
                q.k,
            );
            let gap = match (estimate.value, whole.value) {
                (Some(s), Some(w)) => Some(s - w),
                _ => None,
            };
            let test = if estimate.suppressed || whole.suppressed {
                None
            } else {
                domain::compare(&estimate, &rest)
            };
            Segment {
                label: match q.group {
                    Dimension::Segment(_) => label,
                    other => other.label(&label),
                },
                estimate,
                gap,
                test,
            }
        })
        .collect();
    Ok((whole, segments))
}
