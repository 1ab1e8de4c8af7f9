//! The audit trail: what records say (`record`), what they must not say
//! (`redact`), and reading the chain back (`verify`). Records are written by
//! the [`crate::journal`], into the store's hash chain.

pub mod record;
pub mod redact;
pub mod verify;

pub use record::CallRecord;

/// The audit record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit trail unavailable: {0}")]
pub struct AuditError(pub String);

/// Now, in Unix microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A Unix-microsecond time as RFC 3339.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// Unix microseconds from an RFC 3339 time, a date, or an age before now.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && let Some(dt) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(dt.and_utc().timestamp_micros());
    }
    if let Ok(age) = crate::config::parse_duration(t) {
        let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        return Ok(now_micros().saturating_sub(age));
    }
    Err(format!("`{text}` is not a time (2026-11-24T10:00:00Z), a date (2026-11-24) or an age (24h)"))
}
