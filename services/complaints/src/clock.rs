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
//! 6. **due_day**: if `used >= allowed`, the counted day on which the count reached `allowed`
//!    (`R` itself when `allowed == 0`). Otherwise, if the clock is running at `E`, the day on
//!    which the count would reach `allowed` if the clock kept running from `E`: that is
//!    `add_working_days(max(local_day(E), R), allowed - used)` (the day containing `E`, if it
//!    is a working day after `R`, has already been counted). Otherwise (stopped and not yet
//!    reached) `None`. **due_time** is `end_of_day(due_day)`.
//! 7. **Overdue** is exactly `used > allowed` (`breached`). For a running clock, `now >=
//!    due_time` while `used <= allowed` happens only when the day containing `now` is not a
//!    working day (e.g. due Friday, now Saturday: `used == allowed`, not breached); on the next
//!    working day the count passes `allowed` and the clock is breached.
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
    /// `yyyymmdd`; `None` while the clock is stopped and the target not yet reached.
    pub due_day: Option<i64>,
    /// `end_of_day(due_day)`, millis UTC.
    pub due_time: Option<i64>,
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
                }
            }
        }
    }

    let due = if used >= allowed {
        reached
    } else if stopped {
        None
    } else {
        Some(cal.add_working_dates(last, allowed - used))
    };
    Clock {
        used,
        remaining: allowed.saturating_sub(used).max(0),
        due_day: due.map(day_value),
        due_time: due.map(|d| cal.end_of_date(d)),
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
    if !(1_01_01..=9999_12_31).contains(&day) {
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
    if day < 1_01_01 {
        return FIRST;
    }
    if day > 9999_12_31 {
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
