//! Budget periods on the UTC calendar: pure functions of a period name and
//! an instant (Unix microseconds), so tests drive them with any clock.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// The period names a budget may have.
pub const PERIODS: [&str; 4] = ["none", "daily", "weekly", "monthly"];

/// The first instant of the period containing `now`: midnight UTC for
/// `daily`, Monday midnight for `weekly`, the 1st for `monthly`, and 0 for
/// `none` (one period forever). `None` for an unknown period name.
pub fn period_start(period: &str, now_micros: i64) -> Option<i64> {
    let now: DateTime<Utc> = DateTime::from_timestamp_micros(now_micros)?;
    let day = now.date_naive();
    let first: NaiveDate = match period {
        "none" => return Some(0),
        "daily" => day,
        "weekly" => day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())),
        "monthly" => day.with_day(1)?,
        _ => return None,
    };
    Some(first.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn periods_start_on_the_utc_calendar() {
        let now = at("2026-11-26T15:30:00Z"); // a Thursday
        assert_eq!(period_start("none", now), Some(0));
        assert_eq!(period_start("daily", now), Some(at("2026-11-26T00:00:00Z")));
        assert_eq!(period_start("weekly", now), Some(at("2026-11-23T00:00:00Z")));
        assert_eq!(period_start("monthly", now), Some(at("2026-11-01T00:00:00Z")));
        assert_eq!(period_start("daily", at("2026-11-26T23:59:59.999999Z")), Some(at("2026-11-26T00:00:00Z")));
        assert_eq!(period_start("daily", at("2026-11-27T00:00:00Z")), Some(at("2026-11-27T00:00:00Z")));
        assert_eq!(period_start("weekly", at("2026-11-23T00:00:00Z")), Some(at("2026-11-23T00:00:00Z")));
        assert_eq!(period_start("monthly", at("2026-12-31T23:00:00+05:00")), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(period_start("yearly", now), None);
    }
}
