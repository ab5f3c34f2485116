//! Wall-clock time as kefu stores it: Unix milliseconds, and the UTC day that shards messages.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds in one UTC day; message shards are one day wide.
pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// The current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

/// The UTC day number (days since 1970-01-01) of a Unix-millisecond time.
pub fn day_of(millis: i64) -> u32 {
    millis.div_euclid(MILLIS_PER_DAY).max(0) as u32
}

/// The day number of the calendar date that `millis` falls on in `zone`: days since 1970-01-01
/// counted the way [`day_of`] counts UTC days, so a Shanghai day starts at 16:00 UTC the day before.
pub fn day_in(zone: &jiff::tz::TimeZone, millis: i64) -> u32 {
    let offset_millis = jiff::Timestamp::from_millisecond(millis)
        .map(|timestamp| i64::from(zone.to_offset(timestamp).seconds()) * 1000)
        .unwrap_or(0);
    day_of(millis + offset_millis)
}

/// The UTC calendar date of a day number, as `YYYY-MM-DD`.
pub fn day_to_date(day: u32) -> String {
    jiff::Timestamp::from_millisecond(i64::from(day) * MILLIS_PER_DAY)
        .map(|timestamp| timestamp.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        .unwrap_or_else(|_| day.to_string())
}

/// A Unix-millisecond time as `YYYY-MM-DD HH:MM UTC`, for people.
pub fn format_utc(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .map(|timestamp| timestamp.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| millis.to_string())
}

/// The day number of a `YYYY-MM-DD` UTC date.
pub fn date_to_day(date: &str) -> Option<u32> {
    let date: jiff::civil::Date = date.parse().ok()?;
    let timestamp = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(day_of(timestamp.as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_dates() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_to_date(0), "1970-01-01");
        assert_eq!(date_to_day("2026-11-27"), Some(day_of(1_795_737_600_000)));
        assert_eq!(day_to_date(date_to_day("2026-11-27").unwrap()), "2026-11-27");
        assert_eq!(date_to_day("not a date"), None);
    }

    #[test]
    fn a_day_in_a_zone_follows_its_midnight() {
        let shanghai = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let day = date_to_day("2026-11-27").unwrap();
        let utc_midnight = i64::from(day) * MILLIS_PER_DAY;
        assert_eq!(day_in(&shanghai, utc_midnight - 8 * 3_600_000), day, "00:00 in Shanghai");
        assert_eq!(day_in(&shanghai, utc_midnight - 8 * 3_600_000 - 1), day - 1);
        assert_eq!(day_in(&jiff::tz::TimeZone::UTC, utc_midnight), day);
    }
}
