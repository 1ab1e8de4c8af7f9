//! Budgets, holds and their resolutions as stored.

use super::kinds::{HoldState, Unit};
use crate::calendar::Period;
use crate::ids::{CallId, HoldId};

/// A budget as stored. Amounts are micro-units (`unit = "money"`) or tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRow {
    pub id: String,
    /// `key:<id>`, `team:<name>` or `org:<name>`.
    pub scope: String,
    pub org: Option<String>,
    pub unit: Unit,
    pub limit_amount: i64,
    pub period: Period,
    /// `file:<path>` or `api`.
    pub source: String,
    pub updated_at: i64,
}

/// A budget with what it has spent and holds in its current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub budget: BudgetRow,
    pub period_start: i64,
    pub spent: i64,
    pub held: i64,
}

/// Reserve `money` and `tokens` on every budget of `scopes`, all or nothing.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub hold_id: HoldId,
    /// The process that holds it (see `budget::Owner`).
    pub owner: String,
    pub call_id: CallId,
    pub principal: String,
    pub tool: String,
    pub org: String,
    pub scopes: Vec<String>,
    pub money: i64,
    pub tokens: i64,
    pub now: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldLine {
    pub budget_id: String,
    pub unit: Unit,
    pub period_start: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Reserved on these budgets (none: no budget applies, nothing stored).
    Held(Vec<HoldLine>),
    /// This budget would go below zero; nothing was reserved anywhere.
    Denied { budget_id: String, unit: Unit, limit: i64, spent: i64, held: i64, needed: i64 },
}

/// How a hold ends: `settled` (charged), `released` or `expired` (charged 0
/// unless a failure cost applies).
#[derive(Debug, Clone)]
pub struct Resolution {
    pub hold_id: HoldId,
    /// Any state but `Held`.
    pub state: HoldState,
    pub charged: i64,
    pub charged_tokens: i64,
    pub now: i64,
}

/// A budget change with an idempotency key: the key and a digest of the request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// An idempotency key already used for a different request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReusedKey(pub String);

impl From<ReusedKey> for String {
    fn from(k: ReusedKey) -> String {
        format!("idempotency key `{}` was already used for a different request", k.0)
    }
}

/// The outcome of an idempotent change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Done now; the stored response.
    Now(String),
    /// Done before under the same key; the first response.
    Replayed(String),
}

/// The owner a hold takes while its action waits: not a process, so no
/// start-up sweep releases it; it ends with the action or by its expiry.
pub const HOLD_OWNER_PREFIX: &str = "approval:";

/// What one writer cycle did, per job, in the order given.
pub struct CycleOutcome {
    pub resolved: Vec<bool>,
    pub held: Vec<HoldOutcome>,
}

/// The answer a budget change gives (and an idempotent retry gets again).
pub(super) fn budget_response(b: &BudgetRow) -> String {
    format!("budget {} ({}) limit {} {} per {}", b.id, b.scope, b.limit_amount, b.unit, b.period)
}
