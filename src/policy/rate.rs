//! Rate limits of grants: `"60/min"`, `"10/s"`, `"500/hour"`, `"1000/day"`,
//! or with a multiple, `"20/30s"`. Enforced per grant and principal with
//! GCRA (a token bucket kept as one timestamp): bursts up to the count, then
//! the steady rate. On SQLite the buckets are this process's; on a shared
//! store (PostgreSQL) every replica takes from the same bucket in the store.

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("`{text}` is not a rate like \"60/min\" (units: s, min, hour, day)");
        let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("`{text}`: a rate of zero calls is a deny grant; write that instead"));
        }
        let per = per.trim();
        let digits = per.bytes().take_while(u8::is_ascii_digit).count();
        let multiple: u64 = if digits == 0 { 1 } else { per[..digits].parse().map_err(|_| bad())? };
        let unit = match &per[digits..] {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        if multiple == 0 {
            return Err(bad());
        }
        Ok(Rate { count, window: Duration::from_secs(multiple.saturating_mul(unit)) })
    }

    pub fn interval(&self) -> Duration {
        self.window / self.count
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.count, self.window.as_secs())
    }
}

/// Per (grant, key) limiter state.
#[derive(Default)]
pub struct Limiter {
    /// Theoretical arrival time of the next call, per grant and key.
    tat: Mutex<HashMap<(String, String), Instant>>,
}

impl Limiter {
    /// Takes one call from the bucket, or says how long until one is free.
    pub fn take(&self, grant: &str, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let interval = rate.interval();
        let mut map = self.tat.locked();
        if map.len() > 100_000 {
            map.retain(|_, tat| *tat > now);
        }
        let entry = map.entry((grant.to_string(), key.to_string())).or_insert(now);
        let tat = (*entry).max(now);
        let next = tat + interval;
        // Allowed while the bucket (the window) is not yet full.
        if next.duration_since(now) > rate.window {
            return Err(next.duration_since(now) - rate.window);
        }
        *entry = next;
        Ok(())
    }
}

/// Takes one call of `grant` for `key` from the bucket every process on the
/// store shares (PostgreSQL), or from this process's (SQLite). `Err(wait)`:
/// refused until `wait` has passed.
pub async fn take(
    store: &crate::store::Store,
    local: &Limiter,
    grant: &str,
    key: &str,
    rate: Rate,
) -> Result<Result<(), Duration>, crate::store::StoreError> {
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    match store.take_rate(grant, key, micros(rate.interval()), micros(rate.window)).await {
        None => Ok(local.take(grant, key, rate, Instant::now())),
        Some(Ok(None)) => Ok(Ok(())),
        Some(Ok(Some(wait))) => Ok(Err(Duration::from_micros(u64::try_from(wait).unwrap_or(0)))),
        Some(Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("60/min"), Ok(Rate { count: 60, window: Duration::from_secs(60) }));
        assert_eq!(Rate::parse("10/s"), Ok(Rate { count: 10, window: Duration::from_secs(1) }));
        assert_eq!(Rate::parse("20/30s"), Ok(Rate { count: 20, window: Duration::from_secs(30) }));
        assert_eq!(Rate::parse("5/day"), Ok(Rate { count: 5, window: Duration::from_secs(86_400) }));
        for bad in ["", "60", "x/min", "0/min", "10/fortnight", "10/0s", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_of_the_count_then_the_steady_rate() {
        let l = Limiter::default();
        let rate = Rate::parse("3/min").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("g", "k", rate, t0).is_ok());
        }
        let wait = l.take("g", "k", rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        // Other keys and grants have their own buckets.
        assert!(l.take("g", "other", rate, t0).is_ok());
        assert!(l.take("h", "k", rate, t0).is_ok());
        // One interval later, one more call.
        assert!(l.take("g", "k", rate, t0 + Duration::from_secs(20)).is_ok());
        assert!(l.take("g", "k", rate, t0 + Duration::from_secs(20)).is_err());
    }
}
