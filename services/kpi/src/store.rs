//! All of the kpi service's SQL, portable between SQLite and PostgreSQL.

use crate::domain::{Cell, Cells, Dimension};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use touchstone_list::{FieldType, ListQuery, Schema};
use touchstone_platform::db::Tx;
use touchstone_platform::{CHANNELS, list_field as field};

type Result<T> = std::result::Result<T, sqlx::Error>;

/// Rows per multi-row INSERT (PostgreSQL allows 65535 parameters).
const ROWS_PER_INSERT: usize = 500;

/// A unit-level row key: measure, day, service, unit, channel, value.
pub type UnitKey<'a> = (&'a str, i64, &'a str, &'a str, i32, i64);

/// What a run of deltas adds to each rollup table of one agency, merged so
/// that no row appears twice and rows that net to zero are left out.
#[derive(Debug, Default)]
pub struct Merged<'a> {
    /// `kpi_cells`: the fine cells.
    pub cells: Vec<(&'a Cell, i64)>,
    /// `kpi_unit_days`: the cells without segment.
    pub unit_days: Vec<(UnitKey<'a>, i64)>,
    /// `kpi_unit_months`: the same per month (`day` is yyyymm00).
    pub unit_months: Vec<(UnitKey<'a>, i64)>,
    /// `kpi_day_totals`: (measure, day, value).
    pub day_totals: Vec<((&'a str, i64, i64), i64)>,
}

/// Merges `deltas` into the rows each rollup table gains (see [`apply`]).
pub fn merge(deltas: &[(Cell, i64)]) -> Merged<'_> {
    let mut cells: BTreeMap<&Cell, i64> = BTreeMap::new();
    let mut totals: BTreeMap<(&str, i64, i64), i64> = BTreeMap::new();
    let mut units: BTreeMap<UnitKey<'_>, i64> = BTreeMap::new();
    for (cell, count) in deltas {
        *cells.entry(cell).or_default() += count;
        *totals
            .entry((cell.measure.as_str(), cell.day, cell.value))
            .or_default() += count;
        *units
            .entry((
                cell.measure.as_str(),
                cell.day,
                cell.service.as_str(),
                cell.unit.as_str(),
                cell.channel,
                cell.value,
            ))
            .or_default() += count;
    }
    let mut months: BTreeMap<UnitKey<'_>, i64> = BTreeMap::new();
    for (&(measure, day, service, unit, channel, value), count) in &units {
        *months
            .entry((measure, day / 100 * 100, service, unit, channel, value))
            .or_default() += count;
    }
    fn kept<K>((_, c): &(K, i64)) -> bool {
        *c != 0
    }
    Merged {
        cells: cells.into_iter().filter(kept).collect(),
        unit_days: units.into_iter().filter(kept).collect(),
        unit_months: months.into_iter().filter(kept).collect(),
        day_totals: totals.into_iter().filter(kept).collect(),
    }
}

/// Adds `deltas` to the rollup of `agency`: to the fine cells, to the
/// cells without segment (per day and per month) and to the per-day
/// totals, merged first ([`merge`]) so that a statement never touches a
/// row twice.
pub async fn apply(tx: &mut Tx, agency: &str, deltas: &[(Cell, i64)]) -> Result<()> {
    let merged = merge(deltas);
    let backend = tx.backend();
    for chunk in merged.cells.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO kpi_cells (agency, measure, day, service, unit, channel, segment, value, count) \
             VALUES {} ON CONFLICT (agency, measure, day, service, unit, channel, segment, value) \
             DO UPDATE SET count = kpi_cells.count + excluded.count",
            backend.values_list(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (cell, count) in chunk {
            q = q
                .bind(agency)
                .bind(cell.measure.as_str())
                .bind(cell.day)
                .bind(cell.service.as_str())
                .bind(cell.unit.as_str())
                .bind(i64::from(cell.channel))
                .bind(cell.segment.as_str())
                .bind(cell.value)
                .bind(*count);
        }
        q.execute(tx.conn()).await?;
    }
    for (table, rows) in [
        ("kpi_unit_days", &merged.unit_days),
        ("kpi_unit_months", &merged.unit_months),
    ] {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO {table} (agency, measure, day, service, unit, channel, value, count) \
                 VALUES {} ON CONFLICT (agency, measure, day, service, unit, channel, value) \
                 DO UPDATE SET count = {table}.count + excluded.count",
                backend.values_list(chunk.len(), 8)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((measure, day, service, unit, channel, value), count) in chunk {
                q = q
                    .bind(agency)
                    .bind(*measure)
                    .bind(*day)
                    .bind(*service)
                    .bind(*unit)
                    .bind(i64::from(*channel))
                    .bind(*value)
                    .bind(*count);
            }
            q.execute(tx.conn()).await?;
        }
    }
    for chunk in merged.day_totals.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO kpi_day_totals (agency, measure, day, value, count) VALUES {} \
             ON CONFLICT (agency, measure, day, value) \
             DO UPDATE SET count = kpi_day_totals.count + excluded.count",
            backend.values_list(chunk.len(), 5)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ((measure, day, value), count) in chunk {
            q = q
                .bind(agency)
                .bind(*measure)
                .bind(*day)
                .bind(*value)
                .bind(*count);
        }
        q.execute(tx.conn()).await?;
    }
    bump_version(tx, agency).await
}

/// Marks `agency`'s rollups changed (query.rs reuses a protected table only
/// while its version holds).
async fn bump_version(tx: &mut Tx, agency: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO kpi_versions (agency, version) VALUES ($1, 1) \
         ON CONFLICT (agency) DO UPDATE SET version = kpi_versions.version + 1",
    )
    .bind(agency)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The version of `agency`'s rollups: it grows with every change and never
/// returns to an earlier number (0 before the first).
pub async fn version(tx: &mut Tx, agency: &str) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT version FROM kpi_versions WHERE agency = $1")
        .bind(agency)
        .fetch_optional(tx.conn())
        .await?;
    Ok(v.unwrap_or(0))
}

/// Which cells a query reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Service, or empty.
    pub service: String,
    /// Unit, or empty.
    pub unit: String,
    /// Channel, or 0.
    pub channel: i32,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.service.is_empty() && self.unit.is_empty() && self.channel == 0
    }
}

/// How finely the days of a query are bucketed in SQL before the service
/// folds them into periods: yyyymmdd, yyyymm or yyyy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// yyyymmdd.
    Day,
    /// yyyymm.
    Month,
    /// yyyy.
    Year,
}

/// What `counts` reads.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// Measures.
    pub measures: &'a [String],
    /// First day, yyyymmdd.
    pub from: i64,
    /// Last day, yyyymmdd.
    pub to: i64,
    /// Cells read.
    pub filter: &'a Filter,
    /// Split.
    pub group: Dimension,
    /// SQL bucketing of days.
    pub bucket: Bucket,
}

/// Value counts of `measures` for `agency` between two days (yyyymmdd,
/// inclusive), per SQL bucket and raw group value. Reads the per-day totals
/// when nothing is filtered or split, the cells without segment when only
/// service, unit or channel matter, else the fine cells; never raw events.
pub async fn counts(
    tx: &mut Tx,
    agency: &str,
    read: &Read<'_>,
) -> Result<HashMap<(i64, String), Cells>> {
    let Read {
        measures,
        from,
        to,
        filter,
        group,
        bucket,
    } = *read;
    let bucket_sql = match bucket {
        Bucket::Day => "day",
        Bucket::Month => "day / 100",
        Bucket::Year => "day / 10000",
    };
    let group_sql = match group {
        Dimension::None => "CAST('' AS TEXT)",
        Dimension::Unit => "unit",
        Dimension::Service => "service",
        Dimension::Channel => "CAST(channel AS TEXT)",
        Dimension::Segment(_) => "segment",
    };
    // The coarsest table that still has the columns the query needs; for
    // a split or filtered query by month or year, the monthly sums for the
    // range's whole months and the days only for its partial months.
    let fine = group != Dimension::None || !filter.is_empty();
    let in_range = "day >= $2 AND day <= $3".to_string();
    let branches: Vec<(&str, String)> = match group {
        Dimension::Segment(_) => vec![("kpi_cells", in_range)],
        _ if fine => match whole_months(from, to).filter(|_| bucket != Bucket::Day) {
            Some((first, last)) => vec![
                (
                    "kpi_unit_days",
                    format!(
                        "{in_range} AND (day < {} OR day > {})",
                        first * 100,
                        last * 100 + 99
                    ),
                ),
                (
                    "kpi_unit_months",
                    format!("day >= {} AND day <= {}", first * 100, last * 100),
                ),
            ],
            None => vec![("kpi_unit_days", in_range)],
        },
        _ => vec![("kpi_day_totals", in_range)],
    };
    let mut measure_list = String::new();
    let mut next = 4;
    for i in 0..measures.len() {
        if i > 0 {
            measure_list.push_str(", ");
        }
        measure_list.push_str(&format!("${next}"));
        next += 1;
    }
    let mut filters = String::new();
    if fine {
        if !filter.service.is_empty() {
            filters.push_str(&format!(" AND service = ${next}"));
            next += 1;
        }
        if !filter.unit.is_empty() {
            filters.push_str(&format!(" AND unit = ${next}"));
            next += 1;
        }
        if filter.channel != 0 {
            filters.push_str(&format!(" AND channel = ${next}"));
        }
    }
    let union: Vec<String> = branches
        .iter()
        .map(|(table, days)| {
            format!(
                "SELECT {bucket_sql} AS b, {group_sql} AS g, measure, value, count FROM {table} \
                 WHERE agency = $1 AND {days} AND measure IN ({measure_list}){filters}"
            )
        })
        .collect();
    let sql = format!(
        "SELECT b, g, measure, value, CAST(SUM(count) AS BIGINT) AS n FROM ({}) AS u \
         GROUP BY 1, 2, 3, 4",
        union.join(" UNION ALL ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(from)
        .bind(to);
    for m in measures {
        q = q.bind(m.as_str());
    }
    if fine {
        if !filter.service.is_empty() {
            q = q.bind(filter.service.as_str());
        }
        if !filter.unit.is_empty() {
            q = q.bind(filter.unit.as_str());
        }
        if filter.channel != 0 {
            q = q.bind(i64::from(filter.channel));
        }
    }
    let rows = q.fetch_all(tx.conn()).await?;
    let mut out: HashMap<(i64, String), Cells> = HashMap::new();
    for row in rows {
        let b: i64 = row.try_get(0)?;
        let g: String = row.try_get(1)?;
        let m: String = row.try_get(2)?;
        let v: i64 = row.try_get(3)?;
        let n: i64 = row.try_get(4)?;
        *out.entry((b, g))
            .or_default()
            .entry(m)
            .or_default()
            .entry(v)
            .or_default() += n;
    }
    Ok(out)
}

/// One row of `cube`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CubeRow {
    /// yyyymm, or yyyymmdd when read by day.
    pub bucket: i64,
    /// Service.
    pub service: String,
    /// Unit.
    pub unit: String,
    /// Channel number.
    pub channel: i64,
    /// Segment key, or empty when not read by segment.
    pub segment: String,
    /// Measure.
    pub measure: String,
    /// Value.
    pub value: i64,
    /// Observations.
    pub count: i64,
}

/// Value counts of `measures` for `agency` between two days (yyyymmdd,
/// inclusive, whole months) per month or day, service, unit, channel and,
/// when asked, segment: what disclosure control needs to see every cell a
/// caller could ask for. Reads the monthly sums, the daily cells without
/// segment, or the fine cells.
pub async fn cube(
    tx: &mut Tx,
    agency: &str,
    measures: &[String],
    (from, to): (i64, i64),
    by_day: bool,
    segments: bool,
) -> Result<Vec<CubeRow>> {
    let (table, bucket) = match (segments, by_day) {
        (true, true) => ("kpi_cells", "day"),
        (true, false) => ("kpi_cells", "day / 100"),
        (false, true) => ("kpi_unit_days", "day"),
        (false, false) => ("kpi_unit_months", "day / 100"),
    };
    let segment = if segments {
        "segment"
    } else {
        "CAST('' AS TEXT)"
    };
    let measure_list: Vec<String> = (0..measures.len()).map(|i| format!("${}", i + 4)).collect();
    let select = format!(
        "SELECT {bucket} AS b, service, unit, CAST(channel AS BIGINT) AS c, {segment} AS s, \
         measure, value, CAST(SUM(count) AS BIGINT) AS n FROM {table} \
         WHERE agency = $1 AND day >= $2 AND day <= $3 AND measure IN ({}) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7",
        measure_list.join(", ")
    );
    // SQLite hands each row of a result from its worker thread to the
    // caller's one by one, which costs more than reading it: the cube comes
    // back as one JSON document instead (BENCHMARKS.md, KPI service).
    let sqlite = tx.backend() == touchstone_platform::db::Backend::Sqlite;
    let sql = if sqlite {
        format!(
            "SELECT json_group_array(json_array(b, service, unit, c, s, measure, value, n)) \
             FROM ({select})"
        )
    } else {
        select
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(from)
        .bind(to);
    for m in measures {
        q = q.bind(m.as_str());
    }
    let mut out = Vec::new();
    if sqlite {
        let doc: String = q.fetch_one(tx.conn()).await?.try_get(0)?;
        type Json = (i64, String, String, i64, String, String, i64, i64);
        let rows: Vec<Json> =
            serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        for (bucket, service, unit, channel, segment, measure, value, count) in rows {
            if count != 0 {
                out.push(CubeRow {
                    bucket,
                    service,
                    unit,
                    channel,
                    segment,
                    measure,
                    value,
                    count,
                });
            }
        }
    } else {
        for row in q.fetch_all(tx.conn()).await? {
            let count: i64 = row.try_get(7)?;
            if count == 0 {
                continue;
            }
            out.push(CubeRow {
                bucket: row.try_get(0)?,
                service: row.try_get(1)?,
                unit: row.try_get(2)?,
                channel: row.try_get(3)?,
                segment: row.try_get(4)?,
                measure: row.try_get(5)?,
                value: row.try_get(6)?,
                count,
            });
        }
    }
    // Rows in one order whatever the database returns, so that the same
    // data always gives the same table.
    out.sort_unstable();
    Ok(out)
}

/// The first and last whole calendar months (yyyymm) of the days `from` to
/// `to` (yyyymmdd, inclusive), if it spans any.
fn whole_months(from: i64, to: i64) -> Option<(i64, i64)> {
    let next = |ym: i64| if ym % 100 == 12 { ym + 89 } else { ym + 1 };
    let previous = |ym: i64| if ym % 100 == 1 { ym - 89 } else { ym - 1 };
    let first = if from % 100 == 1 {
        from / 100
    } else {
        next(from / 100)
    };
    let month_ends = crate::domain::key_date(to)
        .and_then(|d| d.next_day())
        .is_some_and(|d| d.day() == 1);
    let last = if month_ends {
        to / 100
    } else {
        previous(to / 100)
    };
    (first <= last).then_some((first, last))
}

/// What the rollup remembers of a complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplaintCohort {
    /// Service at receipt.
    pub service: String,
    /// Unit at receipt.
    pub unit: String,
    /// Channel.
    pub channel: i32,
    /// yyyymmdd received.
    pub receive_day: i64,
    /// Whether counted as escalated.
    pub escalated: bool,
    /// yyyymmdd first resolved.
    pub resolve_day: Option<i64>,
    /// Whether counted as reopened.
    pub reopened: bool,
}

/// Records a complaint's receipt; false when it was already recorded.
pub async fn insert_complaint(
    tx: &mut Tx,
    agency: &str,
    complaint: &str,
    c: &ComplaintCohort,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO kpi_complaints (agency, complaint, service, unit, channel, receive_day, escalated, resolve_day, reopened) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, 0) ON CONFLICT (agency, complaint) DO NOTHING",
    )
    .bind(agency)
    .bind(complaint)
    .bind(c.service.as_str())
    .bind(c.unit.as_str())
    .bind(i64::from(c.channel))
    .bind(c.receive_day)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The cohort facts of a complaint, if its receipt was seen.
pub async fn complaint(
    tx: &mut Tx,
    agency: &str,
    complaint: &str,
) -> Result<Option<ComplaintCohort>> {
    let row = sqlx::query(
        "SELECT service, unit, channel, receive_day, escalated, resolve_day, reopened \
         FROM kpi_complaints WHERE agency = $1 AND complaint = $2",
    )
    .bind(agency)
    .bind(complaint)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| -> Result<ComplaintCohort> {
        Ok(ComplaintCohort {
            service: r.try_get(0)?,
            unit: r.try_get(1)?,
            channel: r.try_get::<i64, _>(2)? as i32,
            receive_day: r.try_get(3)?,
            escalated: r.try_get::<i64, _>(4)? != 0,
            resolve_day: r.try_get(5)?,
            reopened: r.try_get::<i64, _>(6)? != 0,
        })
    })
    .transpose()
}

/// Saves a complaint's escalated / resolved / reopened marks.
pub async fn update_complaint(
    tx: &mut Tx,
    agency: &str,
    complaint: &str,
    c: &ComplaintCohort,
) -> Result<()> {
    sqlx::query(
        "UPDATE kpi_complaints SET escalated = $3, resolve_day = $4, reopened = $5 \
         WHERE agency = $1 AND complaint = $2",
    )
    .bind(agency)
    .bind(complaint)
    .bind(i64::from(c.escalated))
    .bind(c.resolve_day)
    .bind(i64::from(c.reopened))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Remembers an open follow-up's due day.
pub async fn open_follow_up(
    tx: &mut Tx,
    agency: &str,
    follow_up: &str,
    unit: &str,
    channel: i32,
    due_day: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kpi_follow_ups (agency, follow_up, unit, channel, due_day) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (agency, follow_up) DO UPDATE SET unit = $3, channel = $4, due_day = $5",
    )
    .bind(agency)
    .bind(follow_up)
    .bind(unit)
    .bind(i64::from(channel))
    .bind(due_day)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Moves an open follow-up's due day; one already closed (or never seen)
/// is left alone. Setting a value, it is the same applied once or twice.
pub async fn reschedule_follow_up(
    tx: &mut Tx,
    agency: &str,
    follow_up: &str,
    due_day: i64,
) -> Result<()> {
    sqlx::query("UPDATE kpi_follow_ups SET due_day = $1 WHERE agency = $2 AND follow_up = $3")
        .bind(due_day)
        .bind(agency)
        .bind(follow_up)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Forgets an open follow-up, returning its due day if it was known.
pub async fn close_follow_up(tx: &mut Tx, agency: &str, follow_up: &str) -> Result<Option<i64>> {
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT due_day FROM kpi_follow_ups WHERE agency = $1 AND follow_up = $2",
    )
    .bind(agency)
    .bind(follow_up)
    .fetch_optional(tx.conn())
    .await?;
    if due.is_some() {
        sqlx::query("DELETE FROM kpi_follow_ups WHERE agency = $1 AND follow_up = $2")
            .bind(agency)
            .bind(follow_up)
            .execute(tx.conn())
            .await?;
    }
    Ok(due)
}

/// A volume record as last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// Service.
    pub service: String,
    /// Unit.
    pub unit: String,
    /// Channel.
    pub channel: i32,
    /// First day, yyyymmdd.
    pub start_day: i64,
    /// Last day, yyyymmdd.
    pub end_day: i64,
    /// Customers served.
    pub served: i64,
    /// Customers offered the survey.
    pub offered: i64,
}

/// Replaces a volume record, returning the one it replaces.
pub async fn replace_volume(
    tx: &mut Tx,
    agency: &str,
    volume: &str,
    v: &VolumeRecord,
) -> Result<Option<VolumeRecord>> {
    let old = sqlx::query(
        "SELECT service, unit, channel, start_day, end_day, served, offered \
         FROM kpi_volumes WHERE agency = $1 AND volume = $2",
    )
    .bind(agency)
    .bind(volume)
    .fetch_optional(tx.conn())
    .await?
    .map(|r| -> Result<VolumeRecord> {
        Ok(VolumeRecord {
            service: r.try_get(0)?,
            unit: r.try_get(1)?,
            channel: r.try_get::<i64, _>(2)? as i32,
            start_day: r.try_get(3)?,
            end_day: r.try_get(4)?,
            served: r.try_get(5)?,
            offered: r.try_get(6)?,
        })
    })
    .transpose()?;
    sqlx::query(
        "INSERT INTO kpi_volumes (agency, volume, service, unit, channel, start_day, end_day, served, offered) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (agency, volume) DO UPDATE SET \
         service = $3, unit = $4, channel = $5, start_day = $6, end_day = $7, served = $8, offered = $9",
    )
    .bind(agency)
    .bind(volume)
    .bind(v.service.as_str())
    .bind(v.unit.as_str())
    .bind(i64::from(v.channel))
    .bind(v.start_day)
    .bind(v.end_day)
    .bind(v.served)
    .bind(v.offered)
    .execute(tx.conn())
    .await?;
    Ok(old)
}

/// Clears everything the change feeds built (not the standards), for a
/// rebuild. Runs in an all-agencies transaction.
pub async fn clear_rollups(tx: &mut Tx) -> Result<()> {
    for table in [
        "kpi_cells",
        "kpi_unit_days",
        "kpi_unit_months",
        "kpi_day_totals",
        "kpi_complaints",
        "kpi_follow_ups",
        "kpi_volumes",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(tx.conn())
            .await?;
    }
    // Versions go on growing, so no table cached before the rebuild is
    // taken for one after it.
    sqlx::query("UPDATE kpi_versions SET version = version + 1")
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// A stored standard.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardRow {
    /// Id within the agency.
    pub id: String,
    /// Title.
    pub display_name: String,
    /// Charter text.
    pub description: String,
    /// Catalogue id.
    pub indicator: String,
    /// Scope.
    pub filter: Filter,
    /// Comparator number.
    pub comparator: i32,
    /// Target.
    pub target: f64,
    /// Granularity number.
    pub period: i32,
    /// In the charter.
    pub published: bool,
    /// Bumped on every change (the etag).
    pub revision: i64,
    /// Millis.
    pub create_time: i64,
    /// Millis.
    pub update_time: i64,
}

const STANDARD_COLUMNS: &str = "id, display_name, description, indicator, service, unit, channel, \
     comparator, target, period, published, revision, create_time, update_time";

fn standard_row(r: &sqlx::any::AnyRow) -> Result<StandardRow> {
    Ok(StandardRow {
        id: r.try_get(0)?,
        display_name: r.try_get(1)?,
        description: r.try_get(2)?,
        indicator: r.try_get(3)?,
        filter: Filter {
            service: r.try_get(4)?,
            unit: r.try_get(5)?,
            channel: r.try_get::<i64, _>(6)? as i32,
        },
        comparator: r.try_get::<i64, _>(7)? as i32,
        target: r.try_get(8)?,
        period: r.try_get::<i64, _>(9)? as i32,
        published: r.try_get::<i64, _>(10)? != 0,
        revision: r.try_get(11)?,
        create_time: r.try_get(12)?,
        update_time: r.try_get(13)?,
    })
}

/// Inserts a standard; false when the id is taken.
pub async fn insert_standard(tx: &mut Tx, agency: &str, s: &StandardRow) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO kpi_standards (agency, id, display_name, description, indicator, service, unit, channel, \
         comparator, target, period, published, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (agency, id) DO NOTHING",
    )
    .bind(agency)
    .bind(s.id.as_str())
    .bind(s.display_name.as_str())
    .bind(s.description.as_str())
    .bind(s.indicator.as_str())
    .bind(s.filter.service.as_str())
    .bind(s.filter.unit.as_str())
    .bind(i64::from(s.filter.channel))
    .bind(i64::from(s.comparator))
    .bind(s.target)
    .bind(i64::from(s.period))
    .bind(i64::from(s.published))
    .bind(s.revision)
    .bind(s.create_time)
    .bind(s.update_time)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a standard's fields, if its revision is still `expected`.
pub async fn update_standard(
    tx: &mut Tx,
    agency: &str,
    s: &StandardRow,
    expected: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE kpi_standards SET display_name = $3, description = $4, indicator = $5, service = $6, \
         unit = $7, channel = $8, comparator = $9, target = $10, period = $11, published = $12, \
         revision = $13, update_time = $14 WHERE agency = $1 AND id = $2 AND revision = $15",
    )
    .bind(agency)
    .bind(s.id.as_str())
    .bind(s.display_name.as_str())
    .bind(s.description.as_str())
    .bind(s.indicator.as_str())
    .bind(s.filter.service.as_str())
    .bind(s.filter.unit.as_str())
    .bind(i64::from(s.filter.channel))
    .bind(i64::from(s.comparator))
    .bind(s.target)
    .bind(i64::from(s.period))
    .bind(i64::from(s.published))
    .bind(s.revision)
    .bind(s.update_time)
    .bind(expected)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One standard.
pub async fn standard(tx: &mut Tx, agency: &str, id: &str) -> Result<Option<StandardRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {STANDARD_COLUMNS} FROM kpi_standards WHERE agency = $1 AND id = $2"
    )))
    .bind(agency)
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(standard_row).transpose()
}

/// Standards by id after `after`, at most `limit`; only published ones when asked.
pub async fn standards(
    tx: &mut Tx,
    agency: &str,
    after: &str,
    limit: i64,
    published_only: bool,
) -> Result<Vec<StandardRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {STANDARD_COLUMNS} FROM kpi_standards WHERE agency = $1 AND id > $2 \
         AND (published = 1 OR $3 = 0) ORDER BY id LIMIT $4"
    )))
    .bind(agency)
    .bind(after)
    .bind(i64::from(published_only))
    .bind(limit)
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(standard_row).collect()
}

const COMPARATORS: &[(&str, i64)] = &[("AT_LEAST", 1), ("AT_MOST", 2)];
const PERIODS: &[(&str, i64)] = &[("MONTH", 3), ("QUARTER", 4), ("YEAR", 5)];

/// Standard fields that `ListStandards` filters and orders on.
pub static STANDARD_SCHEMA: Schema = Schema {
    fields: &[
        field("indicator", "indicator", FieldType::Text, true),
        field("display_name", "display_name", FieldType::Text, true),
        field("scope.service", "service", FieldType::Text, true),
        field("scope.unit", "unit", FieldType::Text, true),
        field("scope.channel", "channel", FieldType::Enum(CHANNELS), true),
        field(
            "comparator",
            "comparator",
            FieldType::Enum(COMPARATORS),
            true,
        ),
        field("period", "period", FieldType::Enum(PERIODS), true),
        field("create_time", "create_time", FieldType::Timestamp, true),
        field("update_time", "update_time", FieldType::Timestamp, true),
    ],
    id_column: "id",
    default_order: "create_time asc",
};

/// One page of an agency's standards, and the next page's token.
pub async fn list_standards(
    tx: &mut Tx,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<StandardRow>, String)> {
    let (rows, next) =
        touchstone_platform::list_page(tx, STANDARD_COLUMNS, "kpi_standards", agency, query)
            .await?;
    let standards = rows.iter().map(standard_row).collect::<Result<_>>()?;
    Ok((standards, next))
}

/// Deletes a standard (at `revision` when given); false when nothing matched.
pub async fn delete_standard(
    tx: &mut Tx,
    agency: &str,
    id: &str,
    revision: Option<i64>,
) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM kpi_standards WHERE agency = $1 AND id = $2 AND ($3 < 0 OR revision = $3)",
    )
    .bind(agency)
    .bind(id)
    .bind(revision.unwrap_or(-1))
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::whole_months;

    #[test]
    fn whole_months_of_a_range() {
        assert_eq!(whole_months(20260101, 20261231), Some((202601, 202612)));
        assert_eq!(whole_months(20260115, 20260410), Some((202602, 202603)));
        assert_eq!(whole_months(20251201, 20260131), Some((202512, 202601)));
        assert_eq!(whole_months(20251202, 20260130), None);
        assert_eq!(whole_months(20240201, 20240229), Some((202402, 202402)));
        assert_eq!(whole_months(20240201, 20240228), None);
        assert_eq!(whole_months(20260110, 20260120), None);
        assert_eq!(whole_months(20251215, 20260228), Some((202601, 202602)));
    }
}
