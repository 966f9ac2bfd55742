//! Times as the store keeps them (INTEGER milliseconds since the epoch, UTC)
//! and as the API shows them (`google.protobuf.Timestamp`, `common.v1.Date`).

use prost_types::Timestamp;
use touchstone_api::common::v1::Date;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A stored time as a protobuf timestamp.
pub fn timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A stored optional time as an optional protobuf timestamp.
pub fn timestamp_opt(millis: Option<i64>) -> Option<Timestamp> {
    millis.map(timestamp)
}

/// A protobuf timestamp as stored milliseconds; None when out of range.
pub fn millis(ts: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos / 1_000_000)))
}

/// A calendar day as stored (INTEGER yyyymmdd); None when the date is not real.
pub fn date_key(d: &Date) -> Option<i64> {
    let month = time::Month::try_from(u8::try_from(d.month).ok()?).ok()?;
    let day = u8::try_from(d.day).ok()?;
    let date = time::Date::from_calendar_date(d.year, month, day).ok()?;
    if !(1..=9999).contains(&date.year()) {
        return None;
    }
    Some(i64::from(date.year()) * 10_000 + i64::from(d.month) * 100 + i64::from(day))
}

/// A stored yyyymmdd as a `Date`.
pub fn date_from_key(key: i64) -> Date {
    Date {
        year: (key / 10_000) as i32,
        month: ((key / 100) % 100) as i32,
        day: (key % 100) as i32,
    }
}

/// Today's date in UTC as yyyymmdd.
pub fn today_key() -> i64 {
    let d = time::OffsetDateTime::now_utc().date();
    i64::from(d.year()) * 10_000 + i64::from(u8::from(d.month())) * 100 + i64::from(d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_epoch() {
        for ms in [0, 1, 999, 1_000, 1_764_000_000_123, -1, -1_001] {
            assert_eq!(millis(&timestamp(ms)), Some(ms));
        }
    }

    #[test]
    fn dates_are_checked() {
        let ok = Date {
            year: 2024,
            month: 2,
            day: 29,
        };
        assert_eq!(date_key(&ok), Some(20240229));
        assert_eq!(date_from_key(20240229), ok);
        assert_eq!(
            date_key(&Date {
                year: 2025,
                month: 2,
                day: 29
            }),
            None
        );
        assert_eq!(
            date_key(&Date {
                year: 2025,
                month: 13,
                day: 1
            }),
            None
        );
        assert_eq!(date_key(&Date::default()), None);
    }
}
