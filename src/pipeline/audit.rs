//! The audit stage: a call's record is concluded from its [`Outcome`] and
//! committed before the caller is answered; then its spans end.

use rmcp::ErrorData as McpError;
use rmcp::model::CallToolResponse;

use super::outcome::{Outcome, Refusal};
use crate::audit::CallRecord;
use crate::audit::record::decision;
use crate::gateway::Gateway;

/// Records the outcome and returns it only once durable (a call whose
/// intent could not be recorded has no outcome to record).
pub async fn finish(gw: &Gateway, mut rec: CallRecord, outcome: Outcome) -> Outcome {
    if matches!(outcome, Outcome::Refused(Refusal::Unrecorded(_))) {
        return outcome;
    }
    conclude(&gw.metrics, &mut rec, &outcome);
    if let Err(e) = gw.journal.audit(rec.outcome()).await {
        tracing::error!(call = %rec.call_id, "call outcome could not be audited: {e}");
        let text = format!("the call's audit record could not be written: {e}");
        return Outcome::Ran(Err(McpError::internal_error(text, None)));
    }
    traced(gw, &mut rec);
    outcome
}

/// An approved action's stored result, answered again to a repeat of its
/// call: recorded as a replay (it ran once, under its own record).
pub async fn replayed(gw: &Gateway, mut rec: CallRecord, outcome: Outcome) -> Outcome {
    conclude(&gw.metrics, &mut rec, &outcome);
    rec.status = Some("replayed");
    if let Err(e) = gw.journal.audit(rec.outcome()).await {
        let text = format!("the call's audit record could not be written: {e}");
        return Outcome::Ran(Err(McpError::internal_error(text, None)));
    }
    traced(gw, &mut rec);
    outcome
}

/// Fills in the record's decision and outcome fields.
pub fn conclude(metrics: &crate::metrics::Metrics, rec: &mut CallRecord, outcome: &Outcome) {
    rec.decision = outcome.decision(rec.decision);
    if let Some(id) = outcome.approval_id() {
        rec.approval_id = Some(id.clone());
    }
    conclude_status(rec, outcome);
    // Tools the caller cannot resolve count under one label (bounded series).
    let tool = if rec.upstream.is_some() { rec.tool.as_str() } else { crate::metrics::UNKNOWN_TOOL };
    metrics.call(tool, rec.decision, &rec.stages);
    // A refusal is an ordinary outcome, logged at info with what decided it.
    // Never the reason text: it may quote the arguments (a schema violation).
    if rec.decision != decision::ALLOWED {
        let principal = rec.principal.as_ref().map(ToString::to_string);
        tracing::info!(
            call = %rec.call_id,
            tool = %rec.tool,
            principal = principal.as_deref().unwrap_or("-"),
            decision = rec.decision,
            grants = ?rec.grants,
            "call refused"
        );
    }
}

fn conclude_status(rec: &mut CallRecord, outcome: &Outcome) {
    // What the agent is answered, as MCP has it (a refusal or a wait shaped
    // as its answer): the status and size are the answer's.
    let shaped;
    let answer = match outcome {
        Outcome::Ran(r) => r,
        Outcome::Refused(r) => {
            shaped = Outcome::Refused(r.clone()).into_mcp();
            &shaped
        }
        Outcome::Waiting(w) => {
            shaped = Outcome::Waiting(w.clone()).into_mcp();
            &shaped
        }
    };
    let executed = rec.decision == decision::ALLOWED;
    match answer {
        Ok(CallToolResponse::Complete(r)) => {
            rec.status = Some(match (executed, r.is_error) {
                _ if rec.decision == decision::NEEDS_APPROVAL => "pending",
                _ if rec.scan.blocked("result") => "withheld",
                (false, _) => "not_executed",
                (true, Some(true)) => "tool_error",
                (true, _) => "ok",
            });
            rec.result_size = Some(serde_json::to_vec(r).map_or(0, |b| b.len()));
        }
        Ok(CallToolResponse::Task(_)) => rec.status = Some("task"),
        Ok(_) => rec.status = Some("input_required"),
        Err(e) => {
            rec.status = Some(if executed { "failed" } else { "not_executed" });
            rec.error = Some(e.message.to_string());
        }
    }
}

/// Ends the call's spans once its outcome is durable (the audit stage done).
pub fn traced(gw: &Gateway, rec: &mut CallRecord) {
    if !gw.tracing.exporting() {
        return;
    }
    rec.stage("audit");
    gw.tracing.end(
        &rec.trace,
        &crate::trace::Ended {
            call_id: rec.call_id.as_str(),
            tool: &rec.tool,
            session: rec.session.as_deref(),
            upstream: rec.upstream.as_deref(),
            decision: rec.decision,
            status: rec.status,
            started: rec.wall_start(),
            stages: &rec.stages,
        },
    );
}
