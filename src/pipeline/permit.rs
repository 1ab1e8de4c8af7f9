//! The proof that a call may run. The execute stage takes a [`Permit`] by
//! value and nothing else reaches an upstream, so a call runs only if one
//! of the ways below made its permit:
//!
//! - [`Permit::allowed`]: the policy decided `allow` and the grant's
//!   argument conditions hold (the grant is the permit's);
//! - [`Permit::approved`]: an approved action this process claimed in the
//!   store (exactly one caller claims it);
//! - [`Permit::resuming`]: the retry that answers a question an already
//!   running call asked (its flight is parked; the permit goes no further
//!   than that flight).

use std::sync::Arc;

use rmcp::model::CallToolRequestParams;
use serde_json::Value;

use crate::approval::{Execution, Status};
use crate::budget::Hold;
use crate::catalog::ToolEntry;
use crate::policy::{Decision, Effect, Grant};
use crate::store::ApprovalRow;

/// A call that may run: the tool, what to send it, and what it holds.
pub struct Permit {
    pub(super) entry: Arc<ToolEntry>,
    pub(super) params: CallToolRequestParams,
    pub(super) hold: Option<Hold>,
    pub(super) cost: i64,
}

/// What a call sends its tool and holds, before it has a permit.
pub struct Dispatch {
    pub params: CallToolRequestParams,
    pub arguments: Value,
    pub hold: Option<Hold>,
    pub cost: i64,
}

impl Permit {
    /// An allow decision whose deciding grant is `grant`; `None` for any
    /// other decision, or a grant that did not decide it.
    pub(super) fn allowed(
        decided: &Decision,
        grant: &Arc<Grant>,
        entry: &Arc<ToolEntry>,
        d: Dispatch,
    ) -> Option<Permit> {
        let decides = decided.grants.iter().any(|g| Arc::ptr_eq(g, grant) || g.id == grant.id);
        (decided.effect == Effect::Allow && decides).then(|| Permit::of(entry, d))
    }

    /// An approved action, claimed by this process to run now.
    pub(super) fn approved(row: &ApprovalRow, entry: &Arc<ToolEntry>, d: Dispatch) -> Option<Permit> {
        (row.status == Status::Approved
            && row.execution == Execution::Running
            && row.tool == entry.name
            && row.tool_hash == entry.hash)
            .then(|| Permit::of(entry, d))
    }

    /// The retry of a running call whose upstream asked a question:
    /// `state` names its parked flight, which only the tool it was made to
    /// can take back (see `upstream::park`).
    pub(super) fn resuming(decided: &Decision, state: &str, entry: &Arc<ToolEntry>, d: Dispatch) -> Option<Permit> {
        let parked = state.starts_with(crate::upstream::park::STATE_PREFIX);
        (parked && decided.effect != Effect::Deny).then(|| Permit::of(entry, d))
    }

    fn of(entry: &Arc<ToolEntry>, d: Dispatch) -> Permit {
        let mut params = d.params;
        params.arguments = match d.arguments {
            Value::Object(map) => Some(map),
            _ => None,
        };
        Permit { entry: entry.clone(), params, hold: d.hold, cost: d.cost }
    }
}
