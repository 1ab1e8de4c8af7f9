//! Reading stored rows into the domain row types, once for every backend:
//! each backend's row type says how to read a column as text, integer or
//! flag ([`Cols`]), and the mappers below use only that.

use super::kinds::Word;
use sqlx::Row;

use super::chain;
use crate::store::admin::{GrantRevisionRow, GrantRow, PinRow};
use crate::store::approvals::{ApprovalRow, AttemptRow, DeliveryRow};
use crate::store::audit::AuditRow;
use crate::store::error::StoreError;
use crate::store::keys::KeyRow;
use crate::store::ledger::BudgetRow;

/// Column access by position, as every backend's row offers it.
pub trait Cols {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// An id of the domain (`crate::ids`), stored as text.
    fn id<T: From<String>>(&self, i: usize) -> Result<T, StoreError> {
        self.text(i).map(T::from)
    }
    fn opt_id<T: From<String>>(&self, i: usize) -> Result<Option<T>, StoreError> {
        Ok(self.opt_text(i)?.map(T::from))
    }
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    /// Flags are stored as integers 0/1 in every backend.
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.int(i)? != 0)
    }
    /// One of a [`Word`]'s words; any other text is an invalid row.
    fn word<W: Word>(&self, i: usize) -> Result<W, StoreError> {
        let text = self.text(i)?;
        W::parse(&text).ok_or_else(|| StoreError::Invalid(format!("column {i} holds `{text}`, not a known word")))
    }
}

macro_rules! cols_for {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, i: usize) -> Result<String, StoreError> {
                Ok(self.try_get(i)?)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(i)?)
            }
            fn int(&self, i: usize) -> Result<i64, StoreError> {
                Ok(self.try_get(i)?)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(i)?)
            }
        }
    };
}

cols_for!(sqlx::sqlite::SqliteRow);
cols_for!(sqlx::postgres::PgRow);

pub const KEY_COLUMNS: &str = "id, secret_hash, org, team, role, label, created_at, revoked_at";

pub fn key(r: &impl Cols) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        id: r.text(0)?,
        secret_hash: r.text(1)?,
        org: r.text(2)?,
        team: r.text(3)?,
        role: r.opt_text(4)?,
        label: r.opt_text(5)?,
        created_at: r.int(6)?,
        revoked_at: r.opt_int(7)?,
    })
}

pub const AUDIT_COLUMNS: &str = "seq, id, ts, kind, call_id, org, principal, tool, decision, body, prev_hash, hash";

pub fn audit(r: &impl Cols) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        seq: r.int(0)?,
        id: r.text(1)?,
        ts: r.int(2)?,
        kind: r.text(3)?,
        call_id: r.opt_text(4)?,
        org: r.opt_text(5)?,
        principal: r.opt_text(6)?,
        tool: r.opt_text(7)?,
        decision: r.opt_text(8)?,
        body: r.text(9)?,
        prev_hash: r.text(10)?,
        hash: r.text(11)?,
    })
}

/// The chain's head: `(seq, hash)` of the newest record, or the genesis.
pub fn head(r: Option<&impl Cols>) -> Result<(i64, String), StoreError> {
    Ok(match r {
        Some(r) => (r.int(0)?, r.text(1)?),
        None => (0, chain::GENESIS.to_string()),
    })
}

pub const BUDGET_COLUMNS: &str = "id, scope, org, unit, limit_amount, period, source, updated_at";

pub fn budget(r: &impl Cols) -> Result<BudgetRow, StoreError> {
    Ok(BudgetRow {
        id: r.text(0)?,
        scope: r.text(1)?,
        org: r.opt_text(2)?,
        unit: r.word(3)?,
        limit_amount: r.int(4)?,
        period: r.word(5)?,
        source: r.text(6)?,
        updated_at: r.int(7)?,
    })
}

pub const APPROVAL_COLUMNS: &str = "id, org, principal, principal_label, team, tool, upstream, arguments, \
     arguments_redacted, digest, tool_hash, grant_id, route, reason, risk, cost, hold_id, call_id, mode, status, \
     created_at, expires_at, decided_at, decided_by, decision_reason, execution, claimed_by, result, reported, rev, \
     updated_at";

pub fn approval(r: &impl Cols) -> Result<ApprovalRow, StoreError> {
    Ok(ApprovalRow {
        id: r.id(0)?,
        org: r.text(1)?,
        principal: r.text(2)?,
        principal_label: r.text(3)?,
        team: r.text(4)?,
        tool: r.text(5)?,
        upstream: r.opt_text(6)?,
        arguments: r.opt_text(7)?,
        arguments_redacted: r.text(8)?,
        digest: r.text(9)?,
        tool_hash: r.text(10)?,
        grant_id: r.opt_text(11)?,
        route: r.text(12)?,
        reason: r.text(13)?,
        risk: r.opt_text(14)?,
        cost: r.int(15)?,
        hold_id: r.opt_id(16)?,
        call_id: r.id(17)?,
        mode: r.word(18)?,
        status: r.word(19)?,
        created_at: r.int(20)?,
        expires_at: r.int(21)?,
        decided_at: r.opt_int(22)?,
        decided_by: r.opt_text(23)?,
        decision_reason: r.opt_text(24)?,
        execution: r.word(25)?,
        claimed_by: r.opt_text(26)?,
        result: r.opt_text(27)?,
        reported: r.flag(28)?,
        rev: r.int(29)?,
        updated_at: r.int(30)?,
    })
}

pub const DELIVERY_COLUMNS: &str = "id, approval_id, route, url, state, attempts, next_at, created_at, updated_at";

pub fn delivery(r: &impl Cols) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: r.int(0)?,
        approval_id: r.id(1)?,
        route: r.text(2)?,
        url: r.text(3)?,
        state: r.text(4)?,
        attempts: r.int(5)?,
        next_at: r.int(6)?,
        created_at: r.int(7)?,
        updated_at: r.int(8)?,
    })
}

pub const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, at, micros, status, error";

pub fn attempt(r: &impl Cols) -> Result<AttemptRow, StoreError> {
    Ok(AttemptRow {
        delivery_id: r.int(0)?,
        attempt: r.int(1)?,
        at: r.int(2)?,
        micros: r.int(3)?,
        status: r.opt_int(4)?,
        error: r.opt_text(5)?,
    })
}

pub const GRANT_COLUMNS: &str = "id, org, spec, revision, created_at, created_by, updated_at, updated_by";

pub fn grant(r: &impl Cols) -> Result<GrantRow, StoreError> {
    Ok(GrantRow {
        id: r.text(0)?,
        org: r.text(1)?,
        spec: r.text(2)?,
        revision: r.int(3)?,
        created_at: r.int(4)?,
        created_by: r.text(5)?,
        updated_at: r.int(6)?,
        updated_by: r.text(7)?,
    })
}

pub const REVISION_COLUMNS: &str = "grant_id, revision, org, at, actor, action, spec, diff";

pub fn revision(r: &impl Cols) -> Result<GrantRevisionRow, StoreError> {
    Ok(GrantRevisionRow {
        grant_id: r.text(0)?,
        revision: r.int(1)?,
        org: r.text(2)?,
        at: r.int(3)?,
        actor: r.text(4)?,
        action: r.text(5)?,
        spec: r.opt_text(6)?,
        diff: r.text(7)?,
    })
}

pub const PIN_COLUMNS: &str = "upstream, tool, hash, updated_at, updated_by";

pub fn pin(r: &impl Cols) -> Result<PinRow, StoreError> {
    Ok(PinRow {
        upstream: r.text(0)?,
        tool: r.text(1)?,
        hash: r.opt_text(2)?,
        updated_at: r.int(3)?,
        updated_by: r.text(4)?,
    })
}
