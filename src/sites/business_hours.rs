//! A site's business hours: opening times per weekday in the site's time zone, and holidays.
//!
//! Outside them the widget offers the offline form instead of a live chat. The time zone database
//! is embedded (jiff's bundled tzdb, used when the system has none), so a static binary in an
//! empty container still knows `Asia/Shanghai`.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// Most holidays one site lists.
pub const MAX_HOLIDAYS: usize = 366;

/// How far ahead the next opening is looked for: a year of holidays and a week.
pub const LOOKAHEAD_DAYS: i64 = MAX_HOLIDAYS as i64 + 8;

/// Weekday names, Monday first, as the weekly table is ordered.
pub const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Opening hours of one day, in minutes after midnight: open at `open`, closed from `close`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayHours {
    pub open: u16,
    pub close: u16,
}

impl DayHours {
    /// `HH:MM`, from minutes after midnight (`24:00` for the end of the day).
    pub fn format_minutes(minutes: u16) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }

    /// Minutes after midnight from `HH:MM` (00:00 to 24:00).
    pub fn parse_minutes(text: &str) -> Option<u16> {
        let (hours, minutes) = text.trim().split_once(':')?;
        let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
        let total = hours.checked_mul(60)?.checked_add(minutes)?;
        (minutes < 60 && total <= 24 * 60).then_some(total)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BusinessHours {
    /// When false the site is always open.
    pub enabled: bool,
    /// An IANA time zone name, such as `Asia/Shanghai`.
    pub time_zone: String,
    /// Monday first; `None` is closed all day.
    pub weekly: [Option<DayHours>; 7],
    /// Whole days closed, in the site's time zone.
    pub holidays: Vec<Date>,
}

impl Default for BusinessHours {
    fn default() -> Self {
        let workday = Some(DayHours { open: 9 * 60, close: 18 * 60 });
        BusinessHours {
            enabled: false,
            time_zone: "UTC".to_owned(),
            weekly: [workday, workday, workday, workday, workday, None, None],
            holidays: Vec::new(),
        }
    }
}

impl BusinessHours {
    /// Whether the site is open at `at`. Hours that cannot be checked (an unknown time zone,
    /// which validation refuses) count as open, so a visitor is never turned away by mistake.
    pub fn is_open(&self, at: Timestamp) -> bool {
        if !self.enabled {
            return true;
        }
        let Ok(time_zone) = TimeZone::get(&self.time_zone) else {
            return true;
        };
        let local = at.to_zoned(time_zone);
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let weekday = local.weekday().to_monday_zero_offset() as usize;
        let minute = u16::from(local.hour() as u8) * 60 + u16::from(local.minute() as u8);
        self.weekly[weekday].is_some_and(|hours| hours.open <= minute && minute < hours.close)
    }

    /// The opening and closing instants of the day `date` (site time zone), if it opens at all.
    fn window_on(&self, date: Date, time_zone: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        if self.holidays.contains(&date) {
            return None;
        }
        let hours = self.weekly[date.weekday().to_monday_zero_offset() as usize]?;
        let instant = |minutes: u16| {
            let day = if minutes >= 24 * 60 { date.tomorrow().ok()? } else { date };
            let minutes = minutes % (24 * 60);
            let civil = day.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
            civil.to_zoned(time_zone.clone()).ok().map(|zoned| zoned.timestamp())
        };
        Some((instant(hours.open)?, instant(hours.close)?))
    }

    /// The next opening after `at` while closed, as a time in the site's zone; `None` when the
    /// hours are off, `at` is inside opening hours, or nothing opens within [`LOOKAHEAD_DAYS`].
    pub fn next_opening(&self, at: Timestamp) -> Option<jiff::Zoned> {
        if !self.enabled || self.is_open(at) {
            return None;
        }
        let time_zone = TimeZone::get(&self.time_zone).ok()?;
        let today = at.to_zoned(time_zone.clone()).date();
        (0..LOOKAHEAD_DAYS)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter_map(|date| self.window_on(date, &time_zone))
            .map(|(open, _)| open)
            .find(|open| *open > at)
            .map(|open| open.to_zoned(time_zone.clone()))
    }

    /// The next instant after `at` at which the site opens or closes (so a watcher knows when to
    /// look again); `None` when the hours are off or nothing changes within [`LOOKAHEAD_DAYS`].
    pub fn next_change(&self, at: Timestamp) -> Option<Timestamp> {
        if !self.enabled {
            return None;
        }
        let time_zone = TimeZone::get(&self.time_zone).ok()?;
        let yesterday = at.to_zoned(time_zone.clone()).date().yesterday().ok()?;
        (0..LOOKAHEAD_DAYS)
            .filter_map(|offset| yesterday.checked_add(jiff::Span::new().days(offset)).ok())
            .filter_map(|date| self.window_on(date, &time_zone))
            .flat_map(|(open, close)| [open, close])
            .find(|instant| *instant > at)
    }

    /// The first problem with these hours, naming the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if TimeZone::get(&self.time_zone).is_err() {
            return Err(("time_zone", format!("{:?} is not a known time zone (try Europe/Berlin)", self.time_zone)));
        }
        for (day, hours) in WEEKDAYS.iter().zip(&self.weekly) {
            if let Some(hours) = hours
                && hours.open >= hours.close
            {
                return Err(("weekly", format!("{day}: the opening time must be before the closing time")));
            }
        }
        if self.holidays.len() > MAX_HOLIDAYS {
            return Err(("holidays", format!("at most {MAX_HOLIDAYS} holidays")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn shanghai() -> BusinessHours {
        BusinessHours { enabled: true, time_zone: "Asia/Shanghai".into(), ..BusinessHours::default() }
    }

    #[test]
    fn open_in_the_sites_time_zone() {
        let hours = shanghai();
        // Monday 2026-11-23, 09:30 in Shanghai is 01:30 UTC.
        assert!(hours.is_open(at("2026-11-23T01:30:00Z")));
        // 08:59 Shanghai.
        assert!(!hours.is_open(at("2026-11-23T00:59:00Z")));
        // 17:59 open, 18:00 closed.
        assert!(hours.is_open(at("2026-11-23T09:59:00Z")));
        assert!(!hours.is_open(at("2026-11-23T10:00:00Z")));
        // Saturday is closed all day.
        assert!(!hours.is_open(at("2026-11-28T03:00:00Z")));
        // Sunday 23:30 UTC is already Monday 07:30 in Shanghai: still closed.
        assert!(!hours.is_open(at("2026-11-22T23:30:00Z")));
    }

    #[test]
    fn daylight_saving_time_follows_the_zone() {
        let hours = BusinessHours { enabled: true, time_zone: "Europe/Berlin".into(), ..BusinessHours::default() };
        // Winter (UTC+1): 09:00 Berlin is 08:00 UTC.
        assert!(hours.is_open(at("2026-01-05T08:00:00Z")));
        assert!(!hours.is_open(at("2026-01-05T07:59:00Z")));
        // Summer (UTC+2): 09:00 Berlin is 07:00 UTC.
        assert!(hours.is_open(at("2026-07-06T07:00:00Z")));
        assert!(!hours.is_open(at("2026-07-06T06:59:00Z")));
    }

    #[test]
    fn the_next_opening_and_change_follow_the_sites_days() {
        let hours = shanghai();
        // Friday 2026-11-27 18:30 Shanghai: closed until Monday 09:00.
        let friday_evening = at("2026-11-27T10:30:00Z");
        let next = hours.next_opening(friday_evening).unwrap();
        assert_eq!(next.timestamp(), at("2026-11-30T01:00:00Z"));
        assert_eq!(next.strftime("%H:%M").to_string(), "09:00");
        assert_eq!(hours.next_change(friday_evening), Some(at("2026-11-30T01:00:00Z")));
        // Monday 10:00: open, so no next opening; the next change is 18:00 that day.
        let monday = at("2026-11-30T02:00:00Z");
        assert_eq!(hours.next_opening(monday), None);
        assert_eq!(hours.next_change(monday), Some(at("2026-11-30T10:00:00Z")));
        // A holiday on Monday moves the opening to Tuesday.
        let mut with_holiday = shanghai();
        with_holiday.holidays.push("2026-11-30".parse().unwrap());
        assert_eq!(with_holiday.next_opening(friday_evening).unwrap().timestamp(), at("2026-12-01T01:00:00Z"));
        // Hours off: always open, nothing ever changes.
        assert_eq!(BusinessHours::default().next_change(monday), None);
        // Every day closed: nothing to wait for.
        let never = BusinessHours { weekly: [None; 7], ..shanghai() };
        assert_eq!(never.next_opening(monday), None);
        assert_eq!(never.next_change(monday), None);
    }

    #[test]
    fn holidays_close_whole_local_days() {
        let mut hours = shanghai();
        hours.holidays.push("2026-11-23".parse().unwrap());
        assert!(!hours.is_open(at("2026-11-23T01:30:00Z")));
        assert!(hours.is_open(at("2026-11-24T01:30:00Z")));
    }

    #[test]
    fn disabled_hours_are_always_open_and_bad_values_are_named() {
        assert!(BusinessHours::default().is_open(at("2026-11-28T03:00:00Z")));
        let unknown = BusinessHours { time_zone: "Mars/Olympus".into(), ..shanghai() };
        assert_eq!(unknown.validate().unwrap_err().0, "time_zone");
        let mut backwards = shanghai();
        backwards.weekly[2] = Some(DayHours { open: 600, close: 540 });
        assert!(backwards.validate().unwrap_err().1.starts_with("Wednesday"));
        assert_eq!(DayHours::parse_minutes("09:30"), Some(570));
        assert_eq!(DayHours::parse_minutes("24:00"), Some(1440));
        assert_eq!(DayHours::parse_minutes("24:01"), None);
        assert_eq!(DayHours::parse_minutes("9h"), None);
    }
}
