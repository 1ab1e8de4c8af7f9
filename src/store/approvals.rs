//! Pending actions, their transitions and webhook deliveries as stored.

use super::kinds::{Execution, Mode, Status};
use crate::ids::{ApprovalId, CallId, HoldId};

/// A pending action (see `approval`): a call waiting for a human decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub id: ApprovalId,
    pub org: String,
    /// The key id of the caller.
    pub principal: String,
    pub principal_label: String,
    pub team: String,
    pub tool: String,
    pub upstream: Option<String>,
    /// The arguments as sent (JSON), kept only while the action may still run.
    pub arguments: Option<String>,
    pub arguments_redacted: String,
    pub digest: String,
    pub tool_hash: String,
    pub grant_id: Option<String>,
    pub route: String,
    pub reason: String,
    pub risk: Option<String>,
    pub cost: i64,
    pub hold_id: Option<HoldId>,
    pub call_id: CallId,
    pub mode: Mode,
    pub status: Status,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub execution: Execution,
    pub claimed_by: Option<String>,
    /// The executed call's result (JSON).
    pub result: Option<String>,
    pub reported: bool,
    pub rev: i64,
    pub updated_at: i64,
}

/// A status change of a pending action.
#[derive(Debug, Clone)]
pub struct Transition {
    pub id: ApprovalId,
    /// Any status but `Pending`.
    pub to: Status,
    pub by: Option<String>,
    pub reason: Option<String>,
    pub now: i64,
}

/// What a transition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    /// Made now; the row after it.
    Done(ApprovalRow),
    /// The action had already left the state the transition needs: it stands as is.
    Standing(ApprovalRow),
    Missing,
}

/// A webhook notification of a pending action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub approval_id: ApprovalId,
    pub route: String,
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub delivery_id: i64,
    pub attempt: i64,
    pub at: i64,
    pub micros: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
}
