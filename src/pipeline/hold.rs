//! The hold stage of an allowed call: its estimated cost on every budget of
//! the caller, all or nothing, and its intent record, both durable before
//! anything is dispatched (the intent commits in the hold's own
//! transaction; a free call commits its intent alone).

use super::admit::{Admitted, refuse};
use super::outcome::Refusal;
use super::permit::{Dispatch, Permit};
use crate::audit::CallRecord;
use crate::audit::record::decision;
use crate::budget::{Ask, Held};
use crate::gateway::Gateway;
use crate::journal::WithHold;
use crate::store::HoldOutcome;

/// A hold outlives its call's timeout by this much before the sweeper may
/// release it.
const HOLD_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Holds the call's cost and commits its intent; the permit to run it.
pub async fn take(gw: &Gateway, rec: &mut CallRecord, a: Admitted) -> Result<Permit, Refusal> {
    let hold = reserve(gw, rec, &a).await?;
    let dispatch = Dispatch { params: a.params, arguments: a.arguments, hold, cost: a.cost };
    Permit::allowed(&a.decided, &a.grant, &a.entry, dispatch)
        .ok_or_else(|| Refusal::Failed("the call has no allowing grant; it was not run".into()))
}

/// The same for the retry that answers a question of a call in flight
/// (`state` names its parked flight): a call of its own on the audit and
/// the budgets, resuming what was permitted.
pub async fn resume(gw: &Gateway, rec: &mut CallRecord, a: Admitted, state: &str) -> Result<Permit, Refusal> {
    let hold = reserve(gw, rec, &a).await?;
    let dispatch = Dispatch { params: a.params, arguments: a.arguments, hold, cost: a.cost };
    Permit::resuming(&a.decided, state, &a.entry, dispatch)
        .ok_or_else(|| Refusal::Failed("the call resumes nothing it may run; it was not run".into()))
}

async fn reserve(gw: &Gateway, rec: &mut CallRecord, a: &Admitted) -> Result<Option<crate::budget::Hold>, Refusal> {
    rec.decision = decision::ALLOWED;
    rec.reason = Some(format!("allowed by grant `{}`", a.grant.id));
    let hold = if a.cost > 0 || a.tokens > 0 {
        hold_with_intent(gw, rec, a).await?
    } else {
        if let Err(e) = gw.journal.audit(rec.intent()).await {
            tracing::error!(call = %rec.call_id, "call refused, its intent could not be audited: {e}");
            return Err(Refusal::Unrecorded(format!("call not run: {e}")));
        }
        None
    };
    rec.stage(if hold.is_some() { "hold" } else { "audit_intent" });
    Ok(hold)
}

async fn hold_with_intent(
    gw: &Gateway,
    rec: &mut CallRecord,
    a: &Admitted,
) -> Result<Option<crate::budget::Hold>, Refusal> {
    let (cost, tokens) = (a.cost, a.tokens);
    let base = rec.clone();
    let intent: WithHold = Box::new(move |hold_id, outcome| match outcome {
        HoldOutcome::Held(lines) => {
            let mut r = base;
            if !lines.is_empty() {
                r.hold_id = Some(hold_id.clone());
                r.cost_held = cost;
                r.tokens_held = tokens;
                r.budgets = lines.iter().map(|l| l.budget_id.clone()).collect();
            }
            r.stage("hold");
            Some(r.intent())
        }
        HoldOutcome::Denied { .. } => None,
    });
    let ttl = a.call_ttl.saturating_add(HOLD_GRACE);
    let ask = Ask { principal: &a.principal, call_id: &rec.call_id, tool: &a.entry.name, money: cost, tokens, ttl };
    match gw.ledger.hold(ask, Some(intent)).await {
        Ok(Held::Free) => Ok(None),
        Ok(Held::Held(h)) => {
            rec.hold_id = Some(h.id.clone());
            rec.cost_held = h.money;
            rec.tokens_held = h.tokens;
            rec.budgets = h.budget_ids();
            Ok(Some(h))
        }
        Ok(Held::Denied { budget_id, unit, remaining, needed }) => {
            Err(over_budget(rec, &a.entry.name, (budget_id, unit, remaining, needed)))
        }
        Err(e) => {
            // Fail closed: a call whose cost cannot be reserved does not run.
            tracing::error!(call = %rec.call_id, "budget hold failed: {e}");
            rec.decision = decision::DENIED;
            rec.reason = Some(format!("budget hold failed: {e}"));
            rec.stage("hold");
            Err(Refusal::Failed("the budget ledger is unavailable; the call was not run".into()))
        }
    }
}

/// The hold's refusal: which budget, what it has left, what the call needs.
pub(super) fn over_budget(
    rec: &mut CallRecord,
    tool: &str,
    (budget_id, unit, remaining, needed): (String, crate::budget::Unit, i64, i64),
) -> Refusal {
    let text = format!(
        "budget `{budget_id}` has {} left; this call to {tool} needs {}",
        unit.show(remaining),
        unit.show(needed)
    );
    rec.budgets = vec![budget_id];
    refuse(rec, "hold", Refusal::OverBudget(text))
}
