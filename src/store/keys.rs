//! API keys as stored.

/// An API key as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub secret_hash: String,
    pub org: String,
    pub team: String,
    pub role: Option<String>,
    pub label: Option<String>,
    /// Unix microseconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}
