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
