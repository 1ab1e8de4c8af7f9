//! The call pipeline: every `tools/call` passes the stages of SPEC.md in
//! order, top to bottom, in [`call`]: identify, resolve, authorize,
//! validate, limit, hold, approve, execute, settle, audit. Each stage that
//! refuses the call ends it with an audited outcome. Upstream tools and the
//! LLM tool, called over MCP, over `/v1/chat/completions` or as approved
//! background tasks, all take this path; [`Via`] is what the stages know of
//! the caller.

pub mod approve;
mod bridge;
mod forward;
mod llm;
mod scans;
mod via;

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode};
use serde_json::Value;

use crate::audit::record::decision;
use crate::audit::{CallRecord, redact};
use crate::budget::{Ask, Held};
use crate::catalog::{Target, ToolEntry, schema};
use crate::gateway::Gateway;
use crate::identity::{AuthError, Principal};
use crate::journal::{WithHold, WithResolution};
use crate::money::Micros;
use crate::policy::{ArgumentCheck, Effect, Policy};
use crate::scan;
use crate::store::HoldOutcome;

pub use forward::forward_tool;
use scans::scan_result;
pub use scans::{scan_layers, scan_prompt, scan_resource, scan_settings};
pub use via::{Http, Via};

/// A hold outlives its call's timeout by this much before the sweeper may
/// release it.
const HOLD_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// JSON-RPC error code for a request whose key is missing, unknown or revoked.
pub const UNAUTHORIZED: ErrorCode = ErrorCode(-32001);

/// JSON-RPC error code for a tool whose upstream is not connected now.
pub const UNAVAILABLE: ErrorCode = ErrorCode(-32004);

/// Who is calling, as the edge established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The MCP session, when the transport has one.
    pub session: Option<String>,
    /// Time the edge spent authenticating the request, before the call began.
    pub auth_micros: u64,
}

pub fn unauthorized(e: &AuthError) -> McpError {
    McpError::new(UNAUTHORIZED, format!("unauthorized: {e}"), None)
}

/// Runs one governed tool call.
pub async fn call(
    gw: &Gateway,
    caller: Result<Caller, AuthError>,
    params: CallToolRequestParams,
    via: Via,
) -> Result<CallToolResponse, McpError> {
    let mut rec = CallRecord::start(&params.name, caller.as_ref().ok().and_then(|c| c.session.clone()));
    rec.observer = via.observer();
    let before = std::time::Duration::from_micros(caller.as_ref().map_or(0, |c| c.auth_micros));
    let started = rec.wall_start().checked_sub(before).unwrap_or_else(|| rec.wall_start());
    rec.trace = gw.tracing.begin(via.trace_context(), &rec.tool, started);

    // identify
    let caller = match caller {
        Ok(c) => c,
        Err(e) => {
            rec.reason = Some(e.to_string());
            if gw.upstreams.catalog().tool(&params.name).is_none() {
                rec.unlisted_tool(&params.name);
            }
            rec.stage("identify");
            return finish(gw, rec, Err(unauthorized(&e))).await;
        }
    };
    let principal = caller.principal;
    rec.principal = Some(principal.clone());
    rec.stage("identify");
    rec.add_to_stage("identify", caller.auth_micros);

    // resolve: one catalog and one policy snapshot for the whole call (right
    // after start-up, once the upstreams' first connection attempts are done).
    if !gw.upstreams.settled() {
        gw.upstreams.wait_settled(std::time::Duration::from_secs(10)).await;
    }
    let catalog = gw.upstreams.catalog();
    let policy = gw.policies.current();
    let listed = catalog.tool(&params.name);
    let Some(entry) = listed.filter(|e| policy.visible(&principal, &e.name)).cloned() else {
        // A tool the principal may never call is indistinguishable from one
        // that does not exist.
        let err = match catalog.quarantine_of(&params.name) {
            Some(q) if policy.visible(&principal, &q.name) => {
                McpError::invalid_params(format!("tool `{}` is quarantined: {}", q.name, q.reason), None)
            }
            _ => match gw.upstreams.unavailable_owner(&params.name) {
                Some(owner) => McpError::new(
                    UNAVAILABLE,
                    format!("tool `{}` is unavailable: upstream `{}` is {}", params.name, owner.name, owner.health),
                    None,
                ),
                None => McpError::invalid_params(
                    format!("unknown tool: {}", crate::audit::record::bounded(&params.name, 256)),
                    None,
                ),
            },
        };
        match listed {
            Some(_) => rec.reason = Some(err.message.to_string()),
            None => {
                rec.unlisted_tool(&params.name);
                let why = if err.code == UNAVAILABLE { "upstream unavailable" } else { "unknown tool" };
                rec.reason = Some(why.into());
            }
        }
        rec.stage("resolve");
        return finish(gw, rec, Err(err)).await;
    };
    rec.upstream = Some(entry.upstream_name.to_string());
    let mut params = params;
    let mut arguments = Value::Object(params.arguments.take().unwrap_or_default());
    if entry.target == Target::Llm {
        gw.llm.with_defaults(&mut arguments);
    }
    let size = scan::output::json_size(&arguments);
    if size > gw.limits.max_arguments_bytes {
        rec.decision = decision::INVALID;
        let text = format!("arguments are {size} bytes, more than the {} allowed", gw.limits.max_arguments_bytes);
        rec.reason = Some(text.clone());
        rec.stage("resolve");
        return finish(gw, rec, Ok(tool_error(text))).await;
    }
    rec.arguments = Some(audit_arguments(gw, &entry, &arguments));
    rec.secrets = redact::whole_values(&arguments, &entry.settings.redact);
    rec.stage("resolve");

    // authorize
    let decided = policy.decide(&principal, &entry.name, &arguments);
    rec.grants = decided.grant_ids();
    rec.reason = Some(decided.reason.clone());
    match decided.effect {
        Effect::Allow => {}
        Effect::Deny => {
            rec.stage("authorize");
            let why = denial_text(&policy, &decided);
            return finish(gw, rec, Ok(tool_error(format!("call to {} refused: {why}", entry.name)))).await;
        }
        Effect::Approve => {}
    }
    rec.stage("authorize");

    // validate: the tool's schema, then the grant's `arguments`. The upstream
    // is never called with arguments that fail either.
    let mut violations: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in &entry.validators {
        for e in schema::violations(v, &arguments) {
            if violations.len() < schema::MAX_VIOLATIONS && seen.insert(e.clone()) {
                violations.push(e);
            }
        }
    }
    let grant = match Policy::check_arguments(&decided, &arguments) {
        ArgumentCheck::Holds(g) => Some(g),
        ArgumentCheck::Fails(v) => {
            violations.extend(v.into_iter().take(schema::MAX_VIOLATIONS.saturating_sub(violations.len())));
            None
        }
    };
    if !violations.is_empty() {
        rec.decision = decision::INVALID;
        let text = format!(
            "invalid arguments for {}:\n{}",
            entry.name,
            violations.iter().map(|v| format!("- {v}")).collect::<Vec<_>>().join("\n")
        );
        rec.reason = Some(text.clone());
        rec.stage("validate");
        return finish(gw, rec, Ok(tool_error(text))).await;
    }
    let Some(grant) = grant else {
        return finish(gw, rec, Err(McpError::internal_error("no grant decided the call", None))).await;
    };
    rec.grants = vec![grant.id.clone()];
    rec.stage("validate");

    // scan the arguments: what the agent sends the tool, under the settings
    // of the grant that decided the call (masks apply to what is forwarded,
    // approved and audited).
    let scans = scan_settings(&policy, &entry, Some(&grant));
    if scans.active(scan::Direction::Arguments) {
        scan::arguments(&mut arguments, &scans, &mut rec.scan);
        if rec.scan.changed {
            rec.arguments = Some(audit_arguments(gw, &entry, &arguments));
        }
        if rec.scan.blocked("arguments") {
            rec.decision = decision::BLOCKED;
            let text = format!(
                "call to {} refused: its arguments contain what grant `{}` does not let through: {}",
                entry.name,
                grant.id,
                rec.scan.block_reason("arguments")
            );
            rec.reason = Some(text.clone());
            rec.stage("scan_arguments");
            return finish(gw, rec, Ok(tool_error(text))).await;
        }
        rec.stage("scan_arguments");
    }

    // limit
    let limited = match grant.rate {
        Some(rate) => {
            match crate::policy::rate::take(&gw.store, gw.policies.limiter(), &grant.id, &principal.key_id, rate).await
            {
                Ok(taken) => taken.err().map(|wait| (rate, wait)),
                Err(e) => {
                    rec.stage("limit");
                    let text = format!("the rate limit store is unavailable: {e}");
                    return finish(gw, rec, Err(McpError::internal_error(text, None))).await;
                }
            }
        }
        None => None,
    };
    if let Some((rate, wait)) = limited {
        rec.decision = decision::RATE_LIMITED;
        let text = format!(
            "rate limit of grant `{}` ({} calls per {:?}) reached; retry in {:.1}s",
            grant.id,
            rate.count,
            rate.window,
            wait.as_secs_f64()
        );
        rec.reason = Some(text.clone());
        rec.stage("limit");
        return finish(gw, rec, Ok(tool_error(text))).await;
    }
    rec.stage("limit");

    // hold: the estimated cost on every budget of the caller, all or nothing.
    let (cost, tokens) = match estimate(gw, &entry, &arguments) {
        Ok(e) => e,
        Err(text) => {
            rec.decision = decision::INVALID;
            rec.reason = Some(text.clone());
            rec.stage("hold");
            return finish(gw, rec, Ok(tool_error(text))).await;
        }
    };
    if let Some(max) = grant.max_cost_per_call
        && cost > max.0
    {
        rec.decision = decision::OVER_BUDGET;
        let text = format!(
            "call to {} costs {}, more than the {} per call grant `{}` allows",
            entry.name,
            Micros(cost),
            max,
            grant.id
        );
        rec.reason = Some(text.clone());
        rec.stage("hold");
        return finish(gw, rec, Ok(tool_error(text))).await;
    }
    let call_ttl = time_bound(gw, &entry, &arguments);
    let ttl = call_ttl.saturating_add(HOLD_GRACE);

    // approve: a grant that says so, or a cost above the grant's
    // `approve_above`, makes the call a pending action (see `approve`). A
    // retry that answers a question of an approved call already in flight
    // (a parked call) is that call, not a new one.
    let resumes_parked =
        params.request_state.as_deref().is_some_and(|s| s.starts_with(crate::upstream::park::STATE_PREFIX));
    let over = grant.approve_above.is_some_and(|limit| cost > limit.0);
    if (decided.effect == Effect::Approve || over) && !resumes_parked {
        let effect = decided.effect;
        let asked = approve::Asked {
            principal: &principal,
            entry: &entry,
            grant: &grant,
            effect,
            arguments,
            params,
            cost,
            tokens,
            call_ttl,
        };
        return approve::stage(gw, rec, asked, via).await;
    }

    // Write-ahead: the intent is durable before anything is dispatched. With
    // a cost to hold, it commits in the hold's own transaction.
    rec.decision = decision::ALLOWED;
    rec.reason = Some(format!("allowed by grant `{}`", grant.id));
    let hold = if cost > 0 || tokens > 0 {
        let base = rec.clone();
        let intent: WithHold = Box::new(move |hold_id, outcome| match outcome {
            HoldOutcome::Held(lines) => {
                let mut r = base;
                if !lines.is_empty() {
                    r.hold_id = Some(hold_id.to_string());
                    r.cost_held = cost;
                    r.tokens_held = tokens;
                    r.budgets = lines.iter().map(|l| l.budget_id.clone()).collect();
                }
                r.stage("hold");
                Some(r.intent())
            }
            HoldOutcome::Denied { .. } => None,
        });
        let ask = Ask { principal: &principal, call_id: &rec.call_id, tool: &entry.name, money: cost, tokens, ttl };
        match gw.ledger.hold(ask, Some(intent)).await {
            Ok(Held::Free) => None,
            Ok(Held::Held(h)) => {
                rec.hold_id = Some(h.id.clone());
                rec.cost_held = h.money;
                rec.tokens_held = h.tokens;
                rec.budgets = h.budget_ids();
                Some(h)
            }
            Ok(Held::Denied { budget_id, unit, remaining, needed }) => {
                return refused_by_budget(gw, rec, &entry.name, (budget_id, unit, remaining, needed)).await;
            }
            Err(e) => {
                // Fail closed: a call whose cost cannot be reserved does not run.
                tracing::error!(call = %rec.call_id, "budget hold failed: {e}");
                rec.decision = decision::DENIED;
                rec.reason = Some(format!("budget hold failed: {e}"));
                rec.stage("hold");
                let err = McpError::internal_error("the budget ledger is unavailable; the call was not run", None);
                return finish(gw, rec, Err(err)).await;
            }
        }
    } else {
        if let Err(e) = gw.journal.audit(rec.intent()).await {
            tracing::error!(call = %rec.call_id, "call refused, its intent could not be audited: {e}");
            return Err(McpError::internal_error(format!("call not run: {e}"), None));
        }
        None
    };
    rec.stage(if hold.is_some() { "hold" } else { "audit_intent" });

    params.arguments = match arguments {
        Value::Object(map) => Some(map),
        _ => None,
    };
    run(gw, rec, &entry, params, hold, cost, via).await
}

/// The arguments as the audit keeps them: redacted; an LLM call's message
/// text replaced by sizes unless its provider records content.
fn audit_arguments(gw: &Gateway, entry: &ToolEntry, arguments: &Value) -> Value {
    match entry.target {
        Target::Mcp(_) => redact::value(arguments, &entry.settings.redact),
        Target::Llm => crate::llm::chat::audit_arguments(
            arguments,
            gw.llm.records_content(arguments.get("model").and_then(Value::as_str)),
        ),
    }
}

/// What a call holds: money (micro-units) and tokens. A tool's cost from its
/// manifest; for the LLM tool, the worst case of its chat.
fn estimate(gw: &Gateway, entry: &ToolEntry, arguments: &Value) -> Result<(i64, i64), String> {
    match entry.target {
        Target::Mcp(_) => Ok((entry.settings.cost.map_or(0, |m| m.0), 0)),
        Target::Llm => {
            let chat = crate::llm::Chat::from_arguments(arguments)
                .map_err(|e| format!("invalid arguments for {}:\n- {e}", entry.name))?;
            let e = gw.llm.estimate(&chat).map_err(|e| format!("invalid arguments for {}:\n- {e}", entry.name))?;
            Ok((e.money, e.tokens))
        }
    }
}

/// The longest the execute stage of this call may take.
fn time_bound(gw: &Gateway, entry: &ToolEntry, arguments: &Value) -> std::time::Duration {
    match entry.target {
        Target::Mcp(i) => entry.settings.timeout.unwrap_or(gw.upstreams.get(i).manifest.call_timeout),
        Target::Llm => gw.llm.time_bound(arguments.get("model").and_then(Value::as_str).unwrap_or_default()),
    }
}

/// What a settled call is charged.
#[derive(Debug, Clone, Copy)]
enum Charge {
    /// The tool's cost if it succeeded, its failure cost (if any) if it failed.
    Fixed(i64),
    /// Measured by the execute stage (an LLM call's usage).
    Metered { money: i64, tokens: i64 },
}

/// The execute, settle and audit stages of a call whose intent is durable.
async fn run(
    gw: &Gateway,
    mut rec: CallRecord,
    entry: &ToolEntry,
    params: CallToolRequestParams,
    hold: Option<crate::budget::Hold>,
    cost: i64,
    via: Via,
) -> Result<CallToolResponse, McpError> {
    gw.tracing.enter_execute(&mut rec.trace, &entry.upstream_name);
    let trace = rec.trace.outgoing();
    // A streamed `/v1/chat/completions` hands the text over as it arrives:
    // no whole result to scan.
    let streamed = matches!(&via, Via::Http(h) if h.sink.is_some());
    let (outcome, charge) = match entry.target {
        Target::Mcp(i) => {
            let up = gw.upstreams.get(i).clone();
            let outcome = match via {
                Via::Mcp(ctx) => forward_tool(gw, &up, entry, params, &trace, ctx).await,
                Via::Http(_) | Via::Detached => {
                    let arguments = Value::Object(params.arguments.unwrap_or_default());
                    crate::upstream::flight::call_detached(&up, entry, arguments, &trace)
                        .await
                        .map(CallToolResponse::Complete)
                }
            };
            (outcome, Charge::Fixed(cost))
        }
        Target::Llm => llm::execute(gw, &mut rec, params.arguments, &via, &trace).await,
    };
    gw.tracing.exit_execute(&rec.trace);
    rec.stage("execute");
    // Charged for what the tool did, whatever the scans then let through.
    let charge = match charge {
        Charge::Fixed(cost) => (fixed_charge(entry, cost, &outcome), 0),
        Charge::Metered { money, tokens } => (money, tokens),
    };
    let outcome = if streamed { outcome } else { scan_result(gw, &mut rec, entry, outcome) };
    rec.stage("scan_result");
    settle(gw, rec, hold, charge, outcome).await
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

/// settle: the charge `run` worked out (see `fixed_charge`). The outcome
/// record commits with it; without a hold, the outcome is recorded alone.
async fn settle(
    gw: &Gateway,
    mut rec: CallRecord,
    hold: Option<crate::budget::Hold>,
    (charge, tokens): (i64, i64),
    outcome: Result<CallToolResponse, McpError>,
) -> Result<CallToolResponse, McpError> {
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
            Err(McpError::internal_error("the call's audit record could not be written", None))
        }
    }
}

/// The hold stage's refusal: which budget, what it has left, what the call needs.
async fn refused_by_budget(
    gw: &Gateway,
    mut rec: CallRecord,
    tool: &str,
    (budget_id, unit, remaining, needed): (String, crate::budget::Unit, i64, i64),
) -> Result<CallToolResponse, McpError> {
    rec.decision = decision::OVER_BUDGET;
    let text = format!(
        "budget `{budget_id}` has {} left; this call to {tool} needs {}",
        unit.show(remaining),
        unit.show(needed)
    );
    rec.budgets = vec![budget_id];
    rec.reason = Some(text.clone());
    rec.stage("hold");
    finish(gw, rec, Ok(tool_error(text))).await
}

/// Fills in the record's outcome fields from the call's result.
fn conclude(metrics: &crate::metrics::Metrics, rec: &mut CallRecord, outcome: &Result<CallToolResponse, McpError>) {
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
    if let Some(o) = &rec.observer {
        *o.lock().unwrap_or_else(|p| p.into_inner()) = Some(crate::audit::record::Concluded {
            decision: rec.decision,
            status: rec.status,
            approval_id: rec.approval_id.clone(),
        });
    }
}

fn conclude_status(rec: &mut CallRecord, outcome: &Result<CallToolResponse, McpError>) {
    let executed = rec.decision == decision::ALLOWED;
    match outcome {
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

/// The audit stage: records the outcome and returns it only once durable.
async fn finish(
    gw: &Gateway,
    mut rec: CallRecord,
    outcome: Result<CallToolResponse, McpError>,
) -> Result<CallToolResponse, McpError> {
    conclude(&gw.metrics, &mut rec, &outcome);
    let draft = rec.outcome();
    if let Err(e) = gw.journal.audit(draft).await {
        tracing::error!(call = %rec.call_id, "call outcome could not be audited: {e}");
        return Err(McpError::internal_error(format!("the call's audit record could not be written: {e}"), None));
    }
    traced(gw, &mut rec);
    outcome
}

/// Ends the call's spans once its outcome is durable (the audit stage done).
fn traced(gw: &Gateway, rec: &mut CallRecord) {
    if !gw.tracing.exporting() {
        return;
    }
    rec.stage("audit");
    gw.tracing.end(
        &rec.trace,
        &crate::trace::Ended {
            call_id: &rec.call_id,
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

/// What a refused agent is told: the grant and its description, or the
/// conditions it could meet.
fn denial_text(policy: &Policy, decided: &crate::policy::Decision) -> String {
    match decided.grants.first() {
        Some(g) => {
            let g = policy.grant(&g.id).unwrap_or(g);
            match &g.description {
                Some(d) => format!("{} ({d})", decided.reason),
                None => decided.reason.clone(),
            }
        }
        None => decided.reason.clone(),
    }
}

/// A tool result the agent's model can read and act on (`isError: true`).
pub fn tool_error(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text.into())]))
}
