//! Budget periods on the UTC calendar: pure functions of a period name and
//! an instant (Unix microseconds), so tests drive them with any clock.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// The period names a budget may have.
pub const PERIODS: [&str; 4] = ["none", "daily", "weekly", "monthly"];

/// How often a budget starts over: never (`None`, one period forever),
/// each UTC day, week (from Monday) or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    None,
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub const ALL: [Period; 4] = [Period::None, Period::Daily, Period::Weekly, Period::Monthly];

    pub fn as_str(self) -> &'static str {
        PERIODS[self as usize]
    }

    pub fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first instant of the period containing `now`: midnight UTC for
/// `daily`, Monday midnight for `weekly`, the 1st for `monthly`, and 0 for
/// `none` (one period forever). `None` only for an instant out of range.
pub fn period_start(period: Period, now_micros: i64) -> Option<i64> {
    let now: DateTime<Utc> = DateTime::from_timestamp_micros(now_micros)?;
    let day = now.date_naive();
    let first: NaiveDate = match period {
        Period::None => return Some(0),
        Period::Daily => day,
        Period::Weekly => day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())),
        Period::Monthly => day.with_day(1)?,
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
        assert_eq!(period_start(Period::None, now), Some(0));
        assert_eq!(period_start(Period::Daily, now), Some(at("2026-11-26T00:00:00Z")));
        assert_eq!(period_start(Period::Weekly, now), Some(at("2026-11-23T00:00:00Z")));
        assert_eq!(period_start(Period::Monthly, now), Some(at("2026-11-01T00:00:00Z")));
        assert_eq!(period_start(Period::Daily, at("2026-11-26T23:59:59.999999Z")), Some(at("2026-11-26T00:00:00Z")));
        assert_eq!(period_start(Period::Daily, at("2026-11-27T00:00:00Z")), Some(at("2026-11-27T00:00:00Z")));
        assert_eq!(period_start(Period::Weekly, at("2026-11-23T00:00:00Z")), Some(at("2026-11-23T00:00:00Z")));
        assert_eq!(period_start(Period::Monthly, at("2026-12-31T23:00:00+05:00")), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(Period::parse("yearly"), None);
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
    }
}
