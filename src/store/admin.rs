//! What admins change live, as stored: API grants, their revisions, tool pins.

use super::audit::AuditDraft;

/// A grant made through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: String,
    pub org: String,
    /// The grant as the API takes it (JSON).
    pub spec: String,
    /// Increases with every change; the grant's ETag.
    pub revision: i64,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// One change of an API grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRevisionRow {
    pub grant_id: String,
    pub revision: i64,
    pub org: String,
    pub at: i64,
    pub actor: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// The grant after the change (JSON); none after a delete.
    pub spec: Option<String>,
    /// The diff from the previous revision (JSON).
    pub diff: String,
}

/// What a grant change does, decided against the current row.
#[derive(Debug, Clone)]
pub enum GrantEdit {
    Put { row: GrantRow, revision: GrantRevisionRow, record: AuditDraft },
    Delete { revision: GrantRevisionRow, record: AuditDraft },
}

/// An admin's pin of one upstream tool, overriding the manifest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    pub upstream: String,
    /// The tool's name at its upstream.
    pub tool: String,
    /// The accepted definition hash; `None`: unpinned.
    pub hash: Option<String>,
    pub updated_at: i64,
    pub updated_by: String,
}
