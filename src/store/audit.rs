//! Audit records as stored, and what queries of them ask.

use serde_json::{Map, Value};

/// An audit record before it joins the chain.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub id: String,
    /// Unix microseconds.
    pub ts: i64,
    pub kind: String,
    pub call_id: Option<String>,
    pub org: Option<String>,
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    /// Every field of the record; the indexed columns above are copies.
    pub fields: Map<String, Value>,
}

/// An audit record in the chain, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub ts: i64,
    pub kind: String,
    pub call_id: Option<String>,
    pub org: Option<String>,
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Which audit records a query wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<i64>,
    pub since_ts: Option<i64>,
    pub until_ts: Option<i64>,
    pub org: Option<String>,
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    pub call_id: Option<String>,
    pub limit: i64,
}
