//! Complaint clocks: an agency's working-day calendar and the arithmetic that turns a
//! complaint's history (start, pauses, completion) into working days used, remaining, due day
//! and breach.
//!
//! Everything here is pure: no I/O, no clocks read, no async. Days are `i64` values of the form
//! `yyyymmdd` (e.g. `20261123`) and instants are `i64` milliseconds since the Unix epoch (UTC),
//! the project's storage convention. Time zones come from the IANA time zone database bundled
//! into the binary (via `jiff`), so results do not depend on the host's `/usr/share/zoneinfo`
//! and are reproducible from the event history alone.
//!
//! # Rules
//!
//! 1. **Receipt day** `R` is the local calendar day of `start` in the calendar's time zone. If
//!    the calendar has a close time and the local time of day of `start` is at or after it, `R`
//!    is the next calendar day.
//! 2. A **working day** is a day whose ISO weekday is not one of the calendar's weekend weekdays
//!    and which is not one of its holidays.
//! 3. **Day 1** of the clock is the first working day after `R`: the day of receipt never counts,
//!    and a complaint received on a Saturday has day 1 on Monday (with a Saturday/Sunday
//!    weekend).
//! 4. Let `E` (the end of the window) be `completed` if set, else `now`. A working day `d` with
//!    `R < d <= local_day(E)` is **counted** iff the clock is running at the instant
//!    `t(d) = min(end_of_day(d) - 1 ms, E)`, i.e. at the last millisecond of `d`, or at `E`
//!    itself for the day that contains `E`. The clock is running at an instant `t` iff `t` lies
//!    in no pause `[from, to)` (a pause with `to = None` lasts for ever). Consequences:
//!    * a day counts when the clock is running at the end of it;
//!    * the current (or completion) day counts as soon as, and while, the clock is running;
//!    * a pause that starts and ends on the same local day does not stop that day;
//!    * a pause that ends exactly at local midnight stops the day before it but not the day
//!      after; a pause that starts exactly at `E` means the clock is stopped at `E`.
//! 5. **used** is the number of counted days (0 if `E < start`), **breached** is
//!    `used > allowed` and **remaining** is `max(allowed - used, 0)`. A negative `allowed` is
//!    treated as 0.
//! 6. **due_day**: `None` while the clock is stopped at `E`, whatever it has used. Otherwise, if
//!    `used >= allowed`, the counted day on which the count reached `allowed` (`R` itself when
//!    `allowed == 0`); else the day on which the count would reach `allowed` if the clock kept
//!    running from `E`: `add_working_days(max(local_day(E), R), allowed - used)` (the day
//!    containing `E`, if it is a working day after `R`, has already been counted).
//!    **due_time** is `end_of_day(due_day)`, the local midnight that ends the due day (never the
//!    close time). While the clock keeps running, neither changes as `now` advances.
//! 7. **overdue_from**: for a clock running at `E` and not completed, the instant from which it
//!    is breached if it keeps running: once breached, the start of the counted day on which
//!    `used` passed `allowed`; before, the start of
//!    `add_working_days(max(local_day(E), R), allowed - used + 1)`, the next day that would be
//!    counted beyond `allowed`. `None` while stopped and once completed. For every later `now`
//!    with no new pause, `breached == (now >= overdue_from)`, so the instant can be stored with
//!    each change and compared with the time of a request (the `overdue` list filter). It is not
//!    `due_time`: `now >= due_time` with `used <= allowed` happens whenever the days after the
//!    due day are not counted yet — due Friday and now Saturday, or paused on the Monday after
//!    and resumed on a Saturday; the clock is breached on the next day it counts.
//! 8. **Bounds**: instants are clamped to 0001-01-02T00:00Z ..= 9999-12-30T00:00Z before they are
//!    converted to local days; no computation walks more than [`HORIZON_DAYS`] (20 years) of
//!    calendar days, so `used` stops growing 20 years after `R` and
//!    [`Calendar::add_working_days`] saturates 20 years after its starting day. No input panics.
//!
//! `pauses` must be sorted by `from` and non-overlapping (as the event history produces them);
//! for other input the result is unspecified but still computed without panicking.
//!
//! Cost: one clock is a few time zone conversions (start, `E`, each pause bound, the due time)
//! plus a day-by-day walk over the window using only calendar arithmetic; nothing allocates.

use std::sync::LazyLock;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::{TimeZone, TimeZoneDatabase};

/// The longest walk over calendar days any computation makes: 20 years.
pub const HORIZON_DAYS: i64 = 7305;

/// Minutes in a day: close times must be below this.
const MINUTES_PER_DAY: u16 = 24 * 60;

/// Earliest instant used for conversions: 0001-01-02T00:00:00Z (local day >= 0001-01-01 in any zone).
const MIN_MILLIS: i64 = -62_135_510_400_000;

/// Latest instant used for conversions: 9999-12-30T00:00:00Z (local day <= 9999-12-30 in any zone).
const MAX_MILLIS: i64 = 253_402_128_000_000;

/// The first and last valid `yyyymmdd` days.
const FIRST_DAY: i64 = 10101;
const LAST_DAY: i64 = 99991231;

/// The IANA database compiled into the binary; lookups never touch the file system.
static TZDB: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// An agency's working-day calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    /// Canonical IANA name of the zone.
    name: String,
    tz: TimeZone,
    /// Bit `w - 1` set when ISO weekday `w` (1 = Monday ..= 7 = Sunday) is not a working day.
    weekend: u8,
    /// Sorted, without duplicates.
    holidays: Vec<Date>,
    close_minute: Option<u16>,
}

/// Why a calendar definition was rejected. Messages name the problem and are safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The time zone is not an IANA time zone name known to the bundled database.
    #[error("unknown time zone {0:?}: expected an IANA name such as \"Pacific/Auckland\"")]
    UnknownTimeZone(String),
    /// A weekend weekday outside 1 (Monday) ..= 7 (Sunday).
    #[error("weekend weekday {0} is out of range: expected 1 (Monday) to 7 (Sunday)")]
    BadWeekday(u8),
    /// Every weekday was declared weekend.
    #[error("the weekend cannot cover all seven weekdays")]
    NoWorkingDays,
    /// A holiday that is not a valid `yyyymmdd` date between years 1 and 9999.
    #[error("holiday {0} is not a valid yyyymmdd date")]
    BadHoliday(i64),
    /// A close time outside 1 ..= 1439 minutes after midnight.
    #[error("close time {0} is out of range: expected 1 to 1439 minutes after midnight")]
    BadCloseTime(u16),
}

/// Longest time zone name echoed back in an error.
const MAX_ECHOED_NAME: usize = 64;

impl Calendar {
    /// Builds a calendar.
    ///
    /// * `time_zone`: IANA name (matched without regard to ASCII case; [`Calendar::time_zone`]
    ///   returns the canonical spelling).
    /// * `weekend`: ISO weekdays 1 (Monday) ..= 7 (Sunday) that are not working days (may be
    ///   empty, duplicates allowed, not all 7).
    /// * `holidays`: `yyyymmdd` days that are not working days (any order, duplicates allowed).
    /// * `close_minute`: minutes after local midnight (1 ..= 1439) at which the working day
    ///   closes (e.g. `17 * 60`); a complaint received at or after it counts as received the
    ///   next calendar day. `None` = no cut-off.
    pub fn new(
        time_zone: &str,
        weekend: &[u8],
        holidays: &[i64],
        close_minute: Option<u16>,
    ) -> Result<Calendar, CalendarError> {
        let tz = TZDB.get(time_zone).map_err(|_| {
            CalendarError::UnknownTimeZone(time_zone.chars().take(MAX_ECHOED_NAME).collect())
        })?;
        let name = tz.iana_name().unwrap_or(time_zone).to_owned();

        let mut mask = 0u8;
        for &w in weekend {
            if !(1..=7).contains(&w) {
                return Err(CalendarError::BadWeekday(w));
            }
            mask |= 1 << (w - 1);
        }
        if mask == 0x7f {
            return Err(CalendarError::NoWorkingDays);
        }

        let mut days = Vec::with_capacity(holidays.len());
        for &h in holidays {
            days.push(parse_day(h).ok_or(CalendarError::BadHoliday(h))?);
        }
        days.sort_unstable();
        days.dedup();

        if let Some(c) = close_minute
            && (c == 0 || c >= MINUTES_PER_DAY)
        {
            return Err(CalendarError::BadCloseTime(c));
        }

        Ok(Calendar {
            name,
            tz,
            weekend: mask,
            holidays: days,
            close_minute,
        })
    }

    /// The canonical IANA name of the calendar's time zone.
    pub fn time_zone(&self) -> &str {
        &self.name
    }

    /// The local calendar day (`yyyymmdd`) of an instant in the calendar's time zone.
    pub fn local_day(&self, millis: i64) -> i64 {
        day_value(self.local_date(millis))
    }

    /// Whether `day` is a working day. A `day` that is not a valid `yyyymmdd` date is not.
    pub fn is_working_day(&self, day: i64) -> bool {
        parse_day(day).is_some_and(|d| self.is_working_date(d))
    }

    /// The instant (millis UTC) at which the local midnight after `day` starts, i.e. the end of
    /// `day`, following the zone's offset changes (a day may last 23 or 25 hours). An invalid
    /// `day` is first constrained to the nearest valid date (month to 1 ..= 12, day of month to
    /// the month's length, year to 1 ..= 9999).
    pub fn end_of_day(&self, day: i64) -> i64 {
        self.end_of_date(constrain_day(day))
    }

    /// The instant (millis UTC) at which `day` starts locally. An invalid `day` is
    /// constrained as in [`Calendar::end_of_day`].
    pub fn start_of_day(&self, day: i64) -> i64 {
        self.start_of_date(constrain_day(day))
    }

    /// The `n`-th working day strictly after `day` (`n >= 1`); `n <= 0` returns `day` unchanged.
    /// An invalid `day` is constrained as in [`Calendar::end_of_day`]. Saturates at
    /// [`HORIZON_DAYS`] calendar days after `day`.
    pub fn add_working_days(&self, day: i64, n: i64) -> i64 {
        if n <= 0 {
            return day;
        }
        day_value(self.add_working_dates(constrain_day(day), n))
    }

    fn is_working_date(&self, d: Date) -> bool {
        let bit = 1u8 << (d.weekday().to_monday_zero_offset() & 7);
        self.weekend & bit == 0 && self.holidays.binary_search(&d).is_err()
    }

    fn local_date(&self, millis: i64) -> Date {
        self.tz.to_datetime(clamp_instant(millis)).date()
    }

    /// Rule 1: the receipt day of a clock started at `start`.
    fn receipt_date(&self, start: i64) -> Date {
        let local = self.tz.to_datetime(clamp_instant(start));
        let date = local.date();
        match self.close_minute {
            Some(close) => {
                let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
                if minute >= i32::from(close) {
                    date.tomorrow().unwrap_or(date)
                } else {
                    date
                }
            }
            None => date,
        }
    }

    /// The first instant of local day `d` (the zone's midnight, or the first instant after a
    /// transition that skips midnight).
    fn start_of_date(&self, d: Date) -> i64 {
        self.tz
            .to_ambiguous_timestamp(d.to_datetime(Time::midnight()))
            .compatible()
            .map_or_else(
                |_| {
                    if d.year() > 0 {
                        Timestamp::MAX.as_millisecond()
                    } else {
                        Timestamp::MIN.as_millisecond()
                    }
                },
                Timestamp::as_millisecond,
            )
    }

    fn end_of_date(&self, d: Date) -> i64 {
        match d.tomorrow() {
            Ok(next) => self.start_of_date(next),
            Err(_) => Timestamp::MAX.as_millisecond(),
        }
    }

    fn add_working_dates(&self, from: Date, n: i64) -> Date {
        let mut d = from;
        if n <= 0 {
            return d;
        }
        let mut count = 0i64;
        for _ in 0..HORIZON_DAYS {
            let Ok(next) = d.tomorrow() else { break };
            d = next;
            if self.is_working_date(d) {
                count += 1;
                if count >= n {
                    break;
                }
            }
        }
        d
    }
}

/// When the clock was stopped (awaiting the client): `[from, to)` instants (millis UTC), `to`
/// `None` = still stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub from: i64,
    pub to: Option<i64>,
}

impl Pause {
    fn contains(&self, t: i64) -> bool {
        self.from <= t && self.to.is_none_or(|to| t < to)
    }
}

/// The state of one complaint clock (see the module documentation for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Working days used, never negative.
    pub used: i64,
    /// `max(allowed - used, 0)`.
    pub remaining: i64,
    /// `yyyymmdd`; `None` while the clock is stopped.
    pub due_day: Option<i64>,
    /// `end_of_day(due_day)`, millis UTC.
    pub due_time: Option<i64>,
    /// The instant (millis UTC) from which the clock is overdue if it keeps running (rule 7);
    /// `None` while stopped and once completed.
    pub overdue_from: Option<i64>,
    /// The clock is paused at the end of the window (`now`, or the completion instant).
    pub stopped: bool,
    /// `used > allowed`.
    pub breached: bool,
    /// The clock's target was met (`completed` was given).
    pub completed: bool,
}

/// Computes a clock.
///
/// `start`: instant the clock started (receipt, or escalation to a stage). `pauses`: sorted,
/// non-overlapping. `completed`: instant the clock's target was met (acknowledged /
/// responded), if it was. `now`: the present. `allowed`: working days allowed (negative = 0).
pub fn clock(
    cal: &Calendar,
    start: i64,
    pauses: &[Pause],
    completed: Option<i64>,
    now: i64,
    allowed: i64,
) -> Clock {
    let allowed = allowed.max(0);
    let end = completed.unwrap_or(now);
    let receipt = cal.receipt_date(start);
    let end_day = cal.local_date(end);
    let stopped = pauses.iter().any(|p| p.contains(end));

    let mut used = 0i64;
    let mut reached = (allowed == 0).then_some(receipt);
    // The counted day on which the count passed `allowed`.
    let mut passed = None;
    // The last day the walk looked at: where a projection of the due day continues from.
    let mut last = receipt;
    if end >= start {
        let mut stops = PauseDays::new(cal, pauses);
        for _ in 0..HORIZON_DAYS {
            let Ok(d) = last.tomorrow() else { break };
            if d > end_day {
                break;
            }
            last = d;
            if !cal.is_working_date(d) {
                continue;
            }
            let running = if d == end_day {
                !stopped
            } else {
                !stops.stops(d)
            };
            if running {
                used += 1;
                if used == allowed {
                    reached = Some(d);
                } else if used == allowed.saturating_add(1) {
                    passed = Some(d);
                }
            }
        }
    }

    let due = if stopped {
        None
    } else if used >= allowed {
        reached
    } else {
        Some(cal.add_working_dates(last, allowed - used))
    };
    // Rule 7: from the end of the window on, the clock runs as it does at
    // `E` (no later pause is known), so every working day after `last`
    // counts; the one after the remaining days is the first day over.
    let overdue_from = if stopped || completed.is_some() {
        None
    } else if used > allowed {
        passed.map(|d| cal.start_of_date(d))
    } else {
        let over = allowed.saturating_sub(used).saturating_add(1);
        Some(cal.start_of_date(cal.add_working_dates(last, over)))
    };
    Clock {
        used,
        remaining: allowed.saturating_sub(used).max(0),
        due_day: due.map(day_value),
        due_time: due.map(|d| cal.end_of_date(d)),
        overdue_from,
        stopped,
        breached: used > allowed,
        completed: completed.is_some(),
    }
}

/// Walks sorted pauses alongside increasing days, answering "is the clock stopped at the end of
/// day `d`?" without allocating. A pause `[from, to)` stops exactly the days
/// `local_day(from) <= d < local_day(to)`: the clock is paused at the last millisecond of `d`
/// iff `from < end_of_day(d) <= to`.
struct PauseDays<'a> {
    cal: &'a Calendar,
    rest: &'a [Pause],
    /// Days `[first, until)` stopped by the current pause; `until` `None` = for ever.
    current: Option<(Date, Option<Date>)>,
}

impl<'a> PauseDays<'a> {
    fn new(cal: &'a Calendar, pauses: &'a [Pause]) -> Self {
        PauseDays {
            cal,
            rest: pauses,
            current: None,
        }
    }

    /// Days must be asked in increasing order.
    fn stops(&mut self, d: Date) -> bool {
        loop {
            match self.current {
                Some((first, until)) => {
                    if until.is_some_and(|u| u <= d) {
                        self.current = None;
                    } else {
                        return first <= d;
                    }
                }
                None => {
                    let Some((p, rest)) = self.rest.split_first() else {
                        return false;
                    };
                    self.rest = rest;
                    self.current = Some((
                        self.cal.local_date(p.from),
                        p.to.map(|to| self.cal.local_date(to)),
                    ));
                }
            }
        }
    }
}

fn clamp_instant(millis: i64) -> Timestamp {
    Timestamp::from_millisecond(millis.clamp(MIN_MILLIS, MAX_MILLIS))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `yyyymmdd` → date, if it is a valid date in years 1 ..= 9999.
fn parse_day(day: i64) -> Option<Date> {
    if !(FIRST_DAY..=LAST_DAY).contains(&day) {
        return None;
    }
    let year = i16::try_from(day / 10_000).ok()?;
    let month = i8::try_from(day / 100 % 100).ok()?;
    let dom = i8::try_from(day % 100).ok()?;
    Date::new(year, month, dom).ok()
}

/// `yyyymmdd` → the nearest valid date (year, then month, then day of month clamped).
fn constrain_day(day: i64) -> Date {
    const FIRST: Date = Date::constant(1, 1, 1);
    const LAST: Date = Date::constant(9999, 12, 31);
    if day < FIRST_DAY {
        return FIRST;
    }
    if day > LAST_DAY {
        return LAST;
    }
    // In range, so these conversions cannot fail; the fallbacks only keep this total.
    let year = i16::try_from(day / 10_000).unwrap_or(1);
    let month = i8::try_from((day / 100 % 100).clamp(1, 12)).unwrap_or(1);
    let Ok(first) = Date::new(year, month, 1) else {
        return FIRST;
    };
    let dom = i8::try_from((day % 100).clamp(1, i64::from(first.days_in_month()))).unwrap_or(1);
    Date::new(year, month, dom).unwrap_or(first)
}

/// Date → `yyyymmdd`.
fn day_value(d: Date) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAT_SUN: &[u8] = &[6, 7];

    /// Millis of an RFC 3339 instant with an explicit offset: independent of the tz database, so
    /// it checks the calendar's conversions rather than repeating them.
    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    /// Brisbane: UTC+10 all year (no daylight saving), Saturday/Sunday weekend.
    fn brisbane(holidays: &[i64]) -> Calendar {
        Calendar::new("Australia/Brisbane", SAT_SUN, holidays, None).unwrap()
    }

    fn open(cal: &Calendar, start: i64, pauses: &[Pause], now: i64, allowed: i64) -> Clock {
        clock(cal, start, pauses, None, now, allowed)
    }

    #[test]
    fn bounds_constants_match_their_dates() {
        assert_eq!(MIN_MILLIS, at("0001-01-02T00:00:00Z"));
        assert_eq!(MAX_MILLIS, at("9999-12-30T00:00:00Z"));
    }

    #[test]
    fn plain_weekdays() {
        // June 2026: Mon 1, Tue 2, Wed 3, Thu 4, Fri 5, Sat 6, Sun 7, Mon 8, Tue 9.
        // Received Mon 1 10:00 → R = Mon 1. Day 1 Tue 2, 2 Wed 3, 3 Thu 4, 4 Fri 5, 5 Mon 8.
        // due_time = end of Mon 8 = 2026-06-09T00:00+10:00.
        let cal = brisbane(&[]);
        let start = at("2026-06-01T10:00:00+10:00");
        let due_time = at("2026-06-09T00:00:00+10:00");

        let c = open(&cal, start, &[], start, 5);
        assert_eq!(
            c,
            Clock {
                used: 0,
                remaining: 5,
                due_day: Some(20260608),
                due_time: Some(due_time),
                overdue_from: Some(due_time),
                stopped: false,
                breached: false,
                completed: false,
            }
        );
        // Same day, late: R never counts.
        assert_eq!(
            open(&cal, start, &[], at("2026-06-01T23:59:00+10:00"), 5).used,
            0
        );
        // Tue 2 09:00: Tue counts while running → used 1; 4 more from Tue: W, T, F, M 8.
        let c = open(&cal, start, &[], at("2026-06-02T09:00:00+10:00"), 5);
        assert_eq!((c.used, c.remaining, c.due_day), (1, 4, Some(20260608)));
        // Fri 5 23:59: Tue..Fri = 4.
        assert_eq!(
            open(&cal, start, &[], at("2026-06-05T23:59:00+10:00"), 5).used,
            4
        );
        // Sat 6 noon: weekend adds nothing.
        let c = open(&cal, start, &[], at("2026-06-06T12:00:00+10:00"), 5);
        assert_eq!((c.used, c.due_day), (4, Some(20260608)));
        // Mon 8 08:00: used 5 = allowed, on time; the count reached 5 on Mon 8.
        let c = open(&cal, start, &[], at("2026-06-08T08:00:00+10:00"), 5);
        assert_eq!((c.used, c.remaining, c.breached), (5, 0, false));
        assert_eq!(c.due_day, Some(20260608));
        // Tue 9 08:00: used 6 > 5 → breached; due day stays Mon 8, now >= due_time.
        let now = at("2026-06-09T08:00:00+10:00");
        let c = open(&cal, start, &[], now, 5);
        assert_eq!((c.used, c.remaining, c.breached), (6, 0, true));
        assert_eq!(c.due_day, Some(20260608));
        assert!(now >= c.due_time.unwrap());
    }

    #[test]
    fn received_friday_day_one_is_monday() {
        // Received Fri 5 June 15:00 → R Fri 5; Sat 6, Sun 7 skipped; day 1 Mon 8, day 2 Tue 9.
        let cal = brisbane(&[]);
        let start = at("2026-06-05T15:00:00+10:00");
        let c = open(&cal, start, &[], at("2026-06-07T20:00:00+10:00"), 2);
        assert_eq!((c.used, c.due_day), (0, Some(20260609)));
        let c = open(&cal, start, &[], at("2026-06-08T10:00:00+10:00"), 2);
        assert_eq!((c.used, c.remaining, c.due_day), (1, 1, Some(20260609)));
    }

    #[test]
    fn received_saturday_day_one_is_monday() {
        // Received Sat 6 June 11:00 → R Sat 6; Sun 7 not working; day 1 Mon 8.
        let cal = brisbane(&[]);
        let start = at("2026-06-06T11:00:00+10:00");
        let c = open(&cal, start, &[], start, 1);
        assert_eq!(c.due_day, Some(20260608));
        assert_eq!(cal.add_working_days(20260606, 1), 20260608);
        let c = open(&cal, start, &[], at("2026-06-08T12:00:00+10:00"), 1);
        assert_eq!((c.used, c.breached, c.due_day), (1, false, Some(20260608)));
    }

    #[test]
    fn holiday_shifts_due_day() {
        // Holiday Wed 3 June. Received Mon 1 10:00: day 1 Tue 2, Wed 3 holiday, 2 Thu 4,
        // 3 Fri 5, 4 Mon 8, 5 Tue 9 → due Tue 9 (one later than without the holiday).
        let cal = brisbane(&[20260603]);
        assert!(!cal.is_working_day(20260603));
        assert!(cal.is_working_day(20260604));
        let start = at("2026-06-01T10:00:00+10:00");
        let c = open(&cal, start, &[], start, 5);
        assert_eq!(c.due_day, Some(20260609));
        // Thu 4 noon: Tue 2 + Thu 4 = 2.
        let c = open(&cal, start, &[], at("2026-06-04T12:00:00+10:00"), 5);
        assert_eq!((c.used, c.due_day), (2, Some(20260609)));
    }

    #[test]
    fn pause_over_holiday_and_weekend() {
        // Holiday Fri 12 June. Received Mon 1 10:00, allowed 10. Without a pause:
        // Tue 2 (1), Wed 3 (2), Thu 4 (3), Fri 5 (4), Mon 8 (5), Tue 9 (6), Wed 10 (7),
        // Thu 11 (8), [Fri 12 holiday], Mon 15 (9), Tue 16 (10) → due Tue 16.
        // Pause Thu 11 14:00 → Tue 16 10:00 stops days Thu 11 .. Mon 15 (paused at their ends):
        // working days lost Thu 11 and Mon 15 (Fri 12 is a holiday, Sat/Sun weekend).
        let cal = brisbane(&[20260612]);
        let start = at("2026-06-01T10:00:00+10:00");
        assert_eq!(open(&cal, start, &[], start, 10).due_day, Some(20260616));

        let resume = at("2026-06-16T10:00:00+10:00");
        let closed = [Pause {
            from: at("2026-06-11T14:00:00+10:00"),
            to: Some(resume),
        }];
        let still_open = [Pause {
            from: closed[0].from,
            to: None,
        }];

        // Thu 11 15:00, paused: Thu 11 not counted; used = Tue 2 .. Wed 10 = 7; no due day.
        let c = open(
            &cal,
            start,
            &still_open,
            at("2026-06-11T15:00:00+10:00"),
            10,
        );
        assert_eq!(
            (c.used, c.remaining, c.due_day, c.due_time, c.stopped),
            (7, 3, None, None, true)
        );
        // Mon 15 noon, still paused: unchanged.
        let c = open(
            &cal,
            start,
            &still_open,
            at("2026-06-15T12:00:00+10:00"),
            10,
        );
        assert_eq!((c.used, c.due_day, c.stopped), (7, None, true));
        // Resumed Tue 16 10:00 (to == now: running): Tue 16 counts → 8; 2 more: Wed 17, Thu 18.
        let c = open(&cal, start, &closed, resume, 10);
        assert_eq!((c.used, c.remaining, c.stopped), (8, 2, false));
        assert_eq!(c.due_day, Some(20260618));
        assert_eq!(c.due_time, Some(at("2026-06-19T00:00:00+10:00")));
        // Thu 18 17:00: 10 used, on time. Fri 19 09:00: 11 → breached.
        let c = open(&cal, start, &closed, at("2026-06-18T17:00:00+10:00"), 10);
        assert_eq!((c.used, c.breached, c.due_day), (10, false, Some(20260618)));
        let c = open(&cal, start, &closed, at("2026-06-19T09:00:00+10:00"), 10);
        assert_eq!((c.used, c.breached, c.due_day), (11, true, Some(20260618)));
    }

    #[test]
    fn same_day_pause_does_not_stop_the_day() {
        // Received Mon 1 10:00, allowed 5, due Mon 8. Pause Wed 3 11:00 → 15:00.
        let cal = brisbane(&[]);
        let start = at("2026-06-01T10:00:00+10:00");
        let pause = Pause {
            from: at("2026-06-03T11:00:00+10:00"),
            to: Some(at("2026-06-03T15:00:00+10:00")),
        };
        // Wed 12:00, inside the pause: stopped now, so Wed not (yet) counted: used 1 (Tue).
        let c = open(&cal, start, &[pause], at("2026-06-03T12:00:00+10:00"), 5);
        assert_eq!((c.used, c.stopped, c.due_day), (1, true, None));
        // Wed 16:00, resumed: Tue + Wed = 2, due back to Mon 8.
        let c = open(&cal, start, &[pause], at("2026-06-03T16:00:00+10:00"), 5);
        assert_eq!((c.used, c.stopped, c.due_day), (2, false, Some(20260608)));
        // Thu 12:00: Tue, Wed, Thu = 3; the pause cost nothing.
        let c = open(&cal, start, &[pause], at("2026-06-04T12:00:00+10:00"), 5);
        assert_eq!((c.used, c.due_day), (3, Some(20260608)));
    }

    #[test]
    fn pause_ending_at_midnight_stops_the_day_before_only() {
        // Pause Tue 2 09:00 → Wed 3 00:00: paused at the last millisecond of Tue, so Tue is
        // lost; Wed counts. Received Mon 1 10:00; Thu 4 noon → Wed, Thu = 2.
        let cal = brisbane(&[]);
        let start = at("2026-06-01T10:00:00+10:00");
        let pause = Pause {
            from: at("2026-06-02T09:00:00+10:00"),
            to: Some(at("2026-06-03T00:00:00+10:00")),
        };
        let c = open(&cal, start, &[pause], at("2026-06-04T12:00:00+10:00"), 5);
        assert_eq!((c.used, c.due_day), (2, Some(20260609)));
    }

    #[test]
    fn year_end_with_observed_holidays() {
        // Auckland, holidays Fri 25 Dec, Mon 28 Dec (Boxing Day observed), Fri 1 Jan,
        // Mon 4 Jan (2 Jan observed). Received Wed 23 Dec 2026 10:00 NZDT (+13).
        // 1 Thu 24, [Fri 25 hol, Sat 26, Sun 27, Mon 28 hol], 2 Tue 29, 3 Wed 30, 4 Thu 31,
        // [Fri 1 hol, Sat 2, Sun 3, Mon 4 hol], 5 Tue 5 Jan → due 20270105.
        // Continuing: 6 Wed 6, 7 Thu 7, 8 Fri 8, 9 Mon 11, 10 Tue 12, 11 Wed 13, 12 Thu 14,
        // 13 Fri 15, 14 Mon 18, 15 Tue 19, 16 Wed 20, 17 Thu 21, 18 Fri 22, 19 Mon 25,
        // 20 Tue 26 → due 20270126.
        let cal = Calendar::new(
            "Pacific/Auckland",
            SAT_SUN,
            &[20261225, 20261228, 20270101, 20270104],
            None,
        )
        .unwrap();
        let start = at("2026-12-23T10:00:00+13:00");
        let c5 = open(&cal, start, &[], start, 5);
        assert_eq!(c5.due_day, Some(20270105));
        assert_eq!(c5.due_time, Some(at("2027-01-06T00:00:00+13:00")));
        assert_eq!(open(&cal, start, &[], start, 20).due_day, Some(20270126));
        assert_eq!(cal.add_working_days(20261223, 5), 20270105);
        assert_eq!(cal.add_working_days(20261223, 20), 20270126);
        // Thu 31 Dec noon: Thu 24, Tue 29, Wed 30, Thu 31 = 4.
        assert_eq!(
            open(&cal, start, &[], at("2026-12-31T12:00:00+13:00"), 5).used,
            4
        );
    }

    #[test]
    fn received_after_close_counts_from_next_day() {
        // Close 17:00. Received Mon 1 17:30 → R Tue 2 → day 1 Wed 3.
        let cal = Calendar::new("Australia/Brisbane", SAT_SUN, &[], Some(17 * 60)).unwrap();
        let late = at("2026-06-01T17:30:00+10:00");
        assert_eq!(open(&cal, late, &[], late, 1).due_day, Some(20260603));
        // Tue noon: Tue is R, not counted.
        assert_eq!(
            open(&cal, late, &[], at("2026-06-02T12:00:00+10:00"), 1).used,
            0
        );
        // Exactly 17:00 is "at or after": R Tue 2 as well.
        let at_close = at("2026-06-01T17:00:00+10:00");
        assert_eq!(
            open(&cal, at_close, &[], at_close, 1).due_day,
            Some(20260603)
        );
        // 16:59 is before: R Mon 1, day 1 Tue 2.
        let before = at("2026-06-01T16:59:00+10:00");
        assert_eq!(open(&cal, before, &[], before, 1).due_day, Some(20260602));
        // Received Fri 5 18:00 → R Sat 6 → day 1 Mon 8.
        let fri = at("2026-06-05T18:00:00+10:00");
        assert_eq!(open(&cal, fri, &[], fri, 1).due_day, Some(20260608));
    }

    #[test]
    fn two_time_zones_same_instant() {
        // 2026-11-23T12:00Z is Tue 24 01:00 in Auckland (NZDT +13) and Mon 23 07:00 in
        // New York (EST -5).
        // New York: R Mon 23 → Tue 24, Wed 25, Thu 26, Fri 27, Mon 30 → due 20261130.
        // Auckland: R Tue 24 → Wed 25, Thu 26, Fri 27, Mon 30, Tue 1 Dec → due 20261201.
        let akl = Calendar::new("Pacific/Auckland", SAT_SUN, &[], None).unwrap();
        let nyc = Calendar::new("america/new_york", SAT_SUN, &[], None).unwrap();
        assert_eq!(nyc.time_zone(), "America/New_York");
        let t = at("2026-11-23T12:00:00Z");
        assert_eq!(akl.local_day(t), 20261124);
        assert_eq!(nyc.local_day(t), 20261123);
        let a = open(&akl, t, &[], t, 5);
        let n = open(&nyc, t, &[], t, 5);
        assert_eq!(n.due_day, Some(20261130));
        assert_eq!(n.due_time, Some(at("2026-12-01T00:00:00-05:00")));
        assert_eq!(a.due_day, Some(20261201));
        assert_eq!(a.due_time, Some(at("2026-12-02T00:00:00+13:00")));
    }

    #[test]
    fn dst_days_last_23_or_25_hours() {
        const HOUR: i64 = 3_600_000;
        let nyc = Calendar::new("America/New_York", SAT_SUN, &[], None).unwrap();
        // Spring forward Sun 8 Mar 2026: Sat 7 ends at 00:00 EST (05:00Z), Sun 8 ends at
        // 00:00 EDT on Mon 9 (04:00Z): 23 hours.
        assert_eq!(nyc.end_of_day(20260307), at("2026-03-08T05:00:00Z"));
        assert_eq!(nyc.end_of_day(20260308), at("2026-03-09T04:00:00Z"));
        assert_eq!(
            nyc.end_of_day(20260308) - nyc.end_of_day(20260307),
            23 * HOUR
        );
        // Fall back Sun 1 Nov 2026: 04:00Z → 05:00Z on Mon 2: 25 hours.
        assert_eq!(
            nyc.end_of_day(20261101) - nyc.end_of_day(20261031),
            25 * HOUR
        );
        assert_eq!(nyc.end_of_day(20261101), at("2026-11-02T05:00:00Z"));
        // Auckland DST ends Sun 5 Apr 2026 (+13 → +12): 25 hours.
        let akl = Calendar::new("Pacific/Auckland", SAT_SUN, &[], None).unwrap();
        assert_eq!(akl.end_of_day(20260404), at("2026-04-04T11:00:00Z"));
        assert_eq!(akl.end_of_day(20260405), at("2026-04-05T12:00:00Z"));

        // A clock across the spring-forward: received Fri 6 Mar 10:00 EST, allowed 3:
        // Mon 9 (1), Tue 10 (2), Wed 11 (3) → due Wed 11, ending 2026-03-12T00:00-04:00
        // = 04:00Z (a fixed 24h-per-day count from EST would wrongly say 05:00Z).
        let start = at("2026-03-06T10:00:00-05:00");
        let c = open(&nyc, start, &[], start, 3);
        assert_eq!(c.due_day, Some(20260311));
        assert_eq!(c.due_time, Some(at("2026-03-12T04:00:00Z")));
        let just_before = at("2026-03-12T03:59:59.999Z");
        let c = open(&nyc, start, &[], just_before, 3);
        assert_eq!((c.used, c.breached), (3, false));
        let c = open(&nyc, start, &[], at("2026-03-12T04:00:00Z"), 3);
        assert_eq!((c.used, c.breached), (4, true));
    }

    #[test]
    fn completion_decides_breach() {
        // Received Mon 1 June 10:00, allowed 5 → due Mon 8 (see plain_weekdays).
        let cal = brisbane(&[]);
        let start = at("2026-06-01T10:00:00+10:00");
        let later = at("2026-07-01T10:00:00+10:00"); // `now` is irrelevant once completed
        // Responded Mon 8 16:00: Tue..Fri + Mon = 5 → on time.
        let c = clock(
            &cal,
            start,
            &[],
            Some(at("2026-06-08T16:00:00+10:00")),
            later,
            5,
        );
        assert_eq!((c.used, c.breached, c.completed), (5, false, true));
        assert_eq!(c.due_day, Some(20260608));
        // Responded Tue 9 10:00: 6 → breached.
        let c = clock(
            &cal,
            start,
            &[],
            Some(at("2026-06-09T10:00:00+10:00")),
            later,
            5,
        );
        assert_eq!((c.used, c.breached), (6, true));
        // Allowed 4 → due Fri 5. Responded Sat 6 10:00: still 4 → not breached.
        let c = clock(
            &cal,
            start,
            &[],
            Some(at("2026-06-06T10:00:00+10:00")),
            later,
            4,
        );
        assert_eq!((c.used, c.breached, c.due_day), (4, false, Some(20260605)));
        // Rule 7: running, now (Sat) past due_time (end of Fri), used == allowed, not breached.
        let sat = at("2026-06-06T10:00:00+10:00");
        let c = open(&cal, start, &[], sat, 4);
        assert!(sat >= c.due_time.unwrap());
        assert_eq!((c.used, c.breached, c.stopped), (4, false, false));
    }

    #[test]
    fn clocks_never_negative() {
        let cal = brisbane(&[]);
        let start = at("2026-06-10T10:00:00+10:00");
        let before = at("2026-06-01T10:00:00+10:00");
        // Completed before start: window empty.
        let c = clock(&cal, start, &[], Some(before), start, 5);
        assert_eq!((c.used, c.remaining, c.breached), (0, 5, false));
        // now before start: likewise; the due day is still the natural one (Wed 10 → Wed 17).
        let c = open(&cal, start, &[], before, 5);
        assert_eq!((c.used, c.remaining, c.due_day), (0, 5, Some(20260617)));
        // Negative allowed is 0: due on R, nothing remaining; next working day breaches.
        let c = open(&cal, start, &[], start, -3);
        assert_eq!((c.used, c.remaining, c.due_day), (0, 0, Some(20260610)));
        let c = open(&cal, start, &[], at("2026-06-11T09:00:00+10:00"), -3);
        assert_eq!((c.used, c.remaining, c.breached), (1, 0, true));
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let cals = [
            brisbane(&[20260603]),
            Calendar::new("Pacific/Kiritimati", &[], &[], Some(1439)).unwrap(),
            Calendar::new("Etc/GMT+12", &[1, 2, 3, 4, 5, 6], &[], Some(1)).unwrap(),
        ];
        let instants = [
            i64::MIN,
            i64::MIN + 1,
            MIN_MILLIS - 1,
            -1,
            0,
            1,
            MAX_MILLIS + 1,
            i64::MAX,
        ];
        let alloweds = [i64::MIN, -1, 0, 1, 5, i64::MAX];
        let days = [
            i64::MIN,
            -1,
            0,
            1,
            10101,
            20260230,
            20261399,
            99991231,
            100000101,
            i64::MAX,
        ];
        for cal in &cals {
            for &t in &instants {
                let d = cal.local_day(t);
                assert!((FIRST_DAY..=LAST_DAY).contains(&d), "{d}");
                let _ = cal.end_of_day(d);
            }
            for &d in &days {
                let _ = cal.is_working_day(d);
                let _ = cal.end_of_day(d);
                for &n in &alloweds {
                    let _ = cal.add_working_days(d, n);
                }
            }
            for &start in &instants {
                for &now in &instants {
                    for &allowed in &alloweds {
                        let pauses = [
                            [Pause {
                                from: i64::MIN,
                                to: Some(i64::MIN),
                            }],
                            [Pause {
                                from: i64::MIN,
                                to: None,
                            }],
                            [Pause {
                                from: i64::MAX,
                                to: Some(i64::MIN),
                            }],
                            [Pause {
                                from: 0,
                                to: Some(i64::MAX),
                            }],
                        ];
                        for p in &pauses {
                            for completed in [None, Some(now)] {
                                let c = clock(cal, start, p, completed, now, allowed);
                                assert!(c.used >= 0 && c.remaining >= 0);
                                assert_eq!(c.breached, c.used > allowed.max(0));
                            }
                        }
                    }
                }
            }
        }
        // Unsorted, overlapping and inverted pauses: unspecified result, but no panic.
        let cal = brisbane(&[]);
        let messy = [
            Pause {
                from: at("2026-06-10T00:00:00Z"),
                to: None,
            },
            Pause {
                from: at("2026-06-03T00:00:00Z"),
                to: Some(at("2026-06-01T00:00:00Z")),
            },
            Pause {
                from: i64::MIN,
                to: Some(at("2026-06-05T00:00:00Z")),
            },
            Pause {
                from: at("2026-06-04T00:00:00Z"),
                to: Some(i64::MAX),
            },
        ];
        for now in [
            at("2026-06-02T00:00:00Z"),
            at("2026-06-20T00:00:00Z"),
            i64::MAX,
        ] {
            let c = open(&cal, at("2026-06-01T00:00:00Z"), &messy, now, 5);
            assert!(c.used >= 0 && c.remaining >= 0);
        }
        // Invalid days are constrained: 30 Feb 2026 → 28 Feb.
        assert!(!cal.is_working_day(20260230));
        assert_eq!(cal.end_of_day(20260230), cal.end_of_day(20260228));
        // A 20-year horizon bounds the walk: the whole i64 range uses at most 7305 days.
        let c = open(&cal, i64::MIN, &[], i64::MAX, i64::MAX);
        assert!(c.used > 5000 && c.used <= HORIZON_DAYS, "{}", c.used);
        assert!(!c.breached);
        assert_eq!(cal.add_working_days(20260601, 0), 20260601);
        assert_eq!(cal.add_working_days(20260601, i64::MAX), 20460601);
    }

    /// The bundled database (2026f, as docs/complaints.md says), not the host's: it keeps Cuba
    /// on UTC-4 after 1 November 2026, where older releases (e.g. 2025b, in many operating
    /// systems' zoneinfo) return it to UTC-5. A jiff update that changes this fails here, and
    /// the release named in the docs is to change with it.
    #[test]
    fn time_zones_come_from_the_bundled_database() {
        let havana = Calendar::new("America/Havana", SAT_SUN, &[], None).unwrap();
        // 04:30Z is 00:30 on the 15th at UTC-4, 23:30 on the 14th at UTC-5.
        assert_eq!(havana.local_day(at("2026-12-15T04:30:00Z")), 20261215);
        assert_eq!(havana.end_of_day(20261215), at("2026-12-16T00:00:00-04:00"));
        let docs = include_str!("../../../docs/complaints.md");
        assert!(docs.contains("release **2026f**"));
    }

    #[test]
    fn calendar_new_errors() {
        assert_eq!(
            Calendar::new("Mars/Olympus_Mons", SAT_SUN, &[], None).unwrap_err(),
            CalendarError::UnknownTimeZone("Mars/Olympus_Mons".into())
        );
        assert!(matches!(
            Calendar::new("", SAT_SUN, &[], None),
            Err(CalendarError::UnknownTimeZone(_))
        ));
        let long = "x".repeat(1000);
        let Err(CalendarError::UnknownTimeZone(echo)) = Calendar::new(&long, &[], &[], None) else {
            panic!("expected UnknownTimeZone");
        };
        assert_eq!(echo.len(), MAX_ECHOED_NAME);
        assert_eq!(
            Calendar::new("UTC", &[0], &[], None).unwrap_err(),
            CalendarError::BadWeekday(0)
        );
        assert_eq!(
            Calendar::new("UTC", &[6, 8], &[], None).unwrap_err(),
            CalendarError::BadWeekday(8)
        );
        assert_eq!(
            Calendar::new("UTC", &[1, 2, 3, 4, 5, 6, 7], &[], None).unwrap_err(),
            CalendarError::NoWorkingDays
        );
        for bad in [20260230, 20261301, 20260100, 0, -20260101, 100000101] {
            assert_eq!(
                Calendar::new("UTC", SAT_SUN, &[20260101, bad], None).unwrap_err(),
                CalendarError::BadHoliday(bad)
            );
        }
        for bad in [0, 1440, u16::MAX] {
            assert_eq!(
                Calendar::new("UTC", SAT_SUN, &[], Some(bad)).unwrap_err(),
                CalendarError::BadCloseTime(bad)
            );
        }
        // Messages name the problem.
        assert_eq!(
            CalendarError::BadHoliday(20260230).to_string(),
            "holiday 20260230 is not a valid yyyymmdd date"
        );
        // Accepted edge cases: empty weekend, duplicates, six weekend days, 00:01 and 23:59.
        assert!(Calendar::new("UTC", &[], &[], Some(1)).is_ok());
        assert!(
            Calendar::new(
                "UTC",
                &[7, 7, 1, 2, 3, 4, 5],
                &[20260101, 20260101],
                Some(1439)
            )
            .is_ok()
        );
    }

    // Proptest: a fixed history (pauses sorted, non-overlapping, all of their events at or before
    // the earlier `now`) seen at two moments.
    fn history() -> impl Strategy<Value = (i64, Vec<Pause>, bool)> {
        const DAY: i64 = 86_400_000;
        (
            1_700_000_000_000i64..1_900_000_000_000,
            proptest::collection::vec((0..10 * DAY, 1..10 * DAY), 0..5),
            any::<bool>(),
        )
            .prop_map(|(start, gaps, last_open)| {
                let mut t = start - DAY;
                let mut pauses = Vec::new();
                for (gap, len) in gaps {
                    let from = t + gap;
                    t = from + len;
                    pauses.push(Pause { from, to: Some(t) });
                }
                if last_open && let Some(p) = pauses.last_mut() {
                    p.to = None;
                }
                (start, pauses, last_open)
            })
    }

    proptest! {
        #[test]
        fn prop_clock_invariants(
            (start, pauses, _open) in history(),
            zone in 0usize..3,
            after in 0i64..(40 * 86_400_000),
            later in 0i64..(40 * 86_400_000),
            allowed in -3i64..40,
        ) {
            let zones = ["Pacific/Auckland", "America/New_York", "Asia/Kolkata"];
            let cal = Calendar::new(zones[zone], SAT_SUN, &[20260101, 20261225], Some(17 * 60)).unwrap();
            let last_event = pauses
                .iter()
                .map(|p| p.to.unwrap_or(p.from))
                .max()
                .unwrap_or(start)
                .max(start);
            let now1 = last_event + after;
            let now2 = now1 + later;
            let a = allowed.max(0);
            let c1 = open(&cal, start, &pauses, now1, allowed);
            let c2 = open(&cal, start, &pauses, now2, allowed);
            for c in [c1, c2] {
                prop_assert!(c.used >= 0);
                prop_assert_eq!(c.remaining + c.used.min(a), a);
                prop_assert_eq!(c.breached, c.used > a);
                prop_assert_eq!(c.due_time, c.due_day.map(|d| cal.end_of_day(d)));
            }
            prop_assert!(c1.used <= c2.used, "{:?} then {:?}", c1, c2);
            // Rules 6 and 7: what is stored at `now1` (a change) answers for `now2` (a read)
            // while nothing happens in between.
            if !c1.stopped {
                prop_assert_eq!(c1.due_time, c2.due_time);
                prop_assert_eq!(c2.breached, c1.overdue_from.is_some_and(|t| t <= now2));
                prop_assert_eq!(c1.breached, c1.overdue_from.is_some_and(|t| t <= now1));
            } else {
                prop_assert_eq!((c1.due_time, c1.overdue_from), (None, None));
            }
            // Rule 7: a running, unbreached clock is past its due time only on a non-working day.
            if !c2.stopped && !c2.breached && c2.due_time.is_some_and(|t| now2 >= t) {
                prop_assert!(!cal.is_working_day(cal.local_day(now2)));
            }
            // Arbitrary `now` (even inside or before the history): still sane.
            let c3 = open(&cal, start, &pauses, start - after + later, allowed);
            prop_assert!(c3.used >= 0);
            prop_assert_eq!(c3.remaining + c3.used.min(a), a);
        }
    }
}
