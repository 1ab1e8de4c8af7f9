//! The execute and settle stages: a permitted call goes to its upstream (or
//! its model), its result is scanned, and what it cost is charged against
//! its hold in the same transaction as its outcome record.

use rmcp::ErrorData as McpError;
use rmcp::model::CallToolResponse;
use serde_json::Value;

use super::audit::{conclude, finish, traced};
use super::forward::forward_tool;
use super::llm;
use super::outcome::Outcome;
use super::permit::Permit;
use super::scans::scan_result;
use super::via::Via;
use crate::audit::CallRecord;
use crate::catalog::{Target, ToolEntry};
use crate::gateway::Gateway;
use crate::journal::WithResolution;

/// Runs a permitted call to its end: execute, scan the result, settle, audit.
pub async fn run(gw: &Gateway, mut rec: CallRecord, permit: Permit, via: Via) -> Outcome {
    let Permit { entry, params, hold, cost } = permit;
    gw.tracing.enter_execute(&mut rec.trace, &entry.upstream_name);
    let trace = rec.trace.outgoing();
    // A streamed `/v1/chat/completions` hands the text over as it arrives:
    // no whole result to scan.
    let streamed = matches!(&via, Via::Http(h) if h.sink.is_some());
    let (outcome, charge) = match entry.target {
        Target::Mcp(i) => {
            let up = gw.upstreams.get(i).clone();
            let outcome = match via {
                Via::Mcp(ctx) => forward_tool(gw, &up, &entry, params, &trace, ctx).await,
                Via::Http(_) | Via::Detached => {
                    let arguments = Value::Object(params.arguments.unwrap_or_default());
                    crate::upstream::flight::call_detached(&up, &entry, arguments, &trace)
                        .await
                        .map(CallToolResponse::Complete)
                }
            };
            let charge = (fixed_charge(&entry, cost, &outcome), 0);
            (outcome, charge)
        }
        // Metered: what the model's usage came to.
        Target::Llm => llm::execute(gw, &mut rec, params.arguments, &via, &trace).await,
    };
    gw.tracing.exit_execute(&rec.trace);
    rec.stage("execute");
    // Charged for what the tool did, whatever the scans then let through.
    let outcome = if streamed { outcome } else { scan_result(gw, &mut rec, &entry, outcome) };
    rec.stage("scan_result");
    settle(gw, rec, hold, charge, Outcome::Ran(outcome)).await
}

/// A fixed-cost tool's charge: its cost if it succeeded, its failure cost
/// (if any) if it failed, nothing for a call that only asked for input (its
/// retry is a new call with its own hold).
fn fixed_charge(entry: &ToolEntry, cost: i64, outcome: &Result<CallToolResponse, McpError>) -> i64 {
    match outcome {
        Ok(CallToolResponse::Complete(r)) if r.is_error != Some(true) => cost,
        Ok(CallToolResponse::Complete(_)) | Err(_) => entry.settings.failure_cost.map_or(0, |m| m.0),
        Ok(_) => 0,
    }
}

/// settle: the charge `run` worked out. The outcome record commits with it;
/// without a hold, the outcome is recorded alone.
async fn settle(
    gw: &Gateway,
    mut rec: CallRecord,
    hold: Option<crate::budget::Hold>,
    (charge, tokens): (i64, i64),
    outcome: Outcome,
) -> Outcome {
    let Some(h) = &hold else {
        return finish(gw, rec, outcome).await;
    };
    rec.cost_charged = charge.clamp(0, h.money);
    // A pending action's hold is rebuilt from its row, which keeps no token amount.
    rec.tokens_charged = if h.tokens > 0 { tokens.clamp(0, h.tokens) } else { tokens.max(0) };
    rec.stage("settle");
    conclude(&gw.metrics, &mut rec, &outcome);
    let base = rec.clone();
    let record: WithResolution = Box::new(move |took_effect| {
        let mut r = base;
        if !took_effect {
            // The sweeper resolved it first (expired): nothing was charged.
            r.cost_charged = 0;
            r.tokens_charged = 0;
        }
        r.outcome()
    });
    match gw.ledger.settle(h, charge, tokens, Some(record)).await {
        Ok(_) => {
            traced(gw, &mut rec);
            outcome
        }
        Err(e) => {
            // Neither the charge nor the outcome record is durable: the
            // hold expires (uncharged) and the agent is not answered.
            tracing::error!(call = %rec.call_id, hold = %h.id, "settle failed: {e}");
            Outcome::Ran(Err(McpError::internal_error("the call's audit record could not be written", None)))
        }
    }
}
