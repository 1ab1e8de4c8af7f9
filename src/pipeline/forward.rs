//! The execute stage: one call to its upstream (through
//! [`crate::upstream::flight`]), and the questions it asks on the way.
//!
//! Questions for the agent's user travel for the call they belong to:
//! - a 2026-07-28 upstream asks with an `input_required` result (MRTR): a
//!   2026-07-28 agent gets it as is and retries; a 2025-11-25 agent cannot,
//!   so tollgate asks it on its session and retries upstream (`bridge`);
//! - a legacy upstream asks with a server-to-client request: a legacy agent
//!   gets it on its session (`upstream::handler`); a 2026-07-28 agent gets an
//!   `input_required` result while the upstream call waits parked (`park`).

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, InputRequests, InputRequiredResult, ResultType, ServerResult,
};
use rmcp::service::{RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, RoleServer};

use super::bridge;
use super::outcome::tool_error;
use crate::catalog::ToolEntry;
use crate::gateway::Gateway;
use crate::trace::Carrier;
use crate::upstream::Upstream;
use crate::upstream::flight::{self, Flight, Step, trace_meta};
use crate::upstream::park;

/// Input rounds tollgate drives on behalf of a legacy agent before giving up.
const MAX_INPUT_ROUNDS: usize = 8;

pub async fn forward_tool(
    gw: &Gateway,
    up: &Upstream,
    entry: &ToolEntry,
    params: CallToolRequestParams,
    trace: &Carrier,
    ctx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let legacy_agent = !ctx.protocol_version().is_some_and(|v| crate::protocol::is_modern(&v));
    // A retry that answers a question tollgate asked for a parked call resumes it.
    if let Some(state) = params.request_state.as_deref()
        && state.starts_with(park::STATE_PREFIX)
    {
        let Some(parked) = gw.parked.resume(state, &entry.name) else {
            return Ok(tool_error("this answer belongs to a call that has expired or is unknown; call the tool again"));
        };
        let answer = params.input_responses.as_ref().and_then(|r| r.get(&parked.key)).cloned();
        let _ = parked.pending.reply.send(answer.ok_or_else(|| format!("no answer for input `{}`", parked.key)));
        return Ok(match finish(gw, up, entry, parked.flight, &ctx, legacy_agent).await? {
            Finished::Answer(r) => r,
            // Only a legacy agent is asked on its session, and parked calls belong to modern ones.
            Finished::AskLegacyAgent(r) => CallToolResponse::InputRequired(r),
        });
    }
    let timeout: Duration = entry.settings.timeout.unwrap_or(up.manifest.call_timeout);
    // tollgate's own message: the upstream's name for the tool and only the
    // fields MCP defines, never the agent's raw request.
    let mut out = CallToolRequestParams::new(entry.upstream_tool.clone());
    out.arguments = params.arguments;
    out.input_responses = params.input_responses;
    out.request_state = params.request_state;
    out.meta = trace_meta(trace);
    for _ in 0..MAX_INPUT_ROUNDS {
        let flight = match flight::start(up, out.clone(), timeout, &ctx).await {
            Ok(f) => f,
            Err(failure) => return Ok(tool_error(failure.to_string())),
        };
        match finish(gw, up, entry, flight, &ctx, legacy_agent).await? {
            Finished::Answer(r) => return Ok(r),
            Finished::AskLegacyAgent(r) => {
                let answers = match bridge::ask_legacy_agent(&ctx, r.input_requests.unwrap_or_default()).await {
                    Ok(a) => a,
                    Err(e) => return Ok(tool_error(format!("upstream `{}` needs input from the user: {e}", up.name))),
                };
                out.input_responses = Some(answers);
                out.request_state = r.request_state;
            }
        }
    }
    Ok(tool_error(format!("upstream `{}` asked for input more than {MAX_INPUT_ROUNDS} times", up.name)))
}

enum Finished {
    Answer(CallToolResponse),
    /// A 2026-07-28 upstream asked for input that a legacy agent must give.
    AskLegacyAgent(InputRequiredResult),
}

/// Runs `flight` to its end. Questions from the upstream are asked on a
/// legacy agent's session; for a 2026-07-28 agent the call is parked and the
/// agent gets `input_required`.
async fn finish(
    gw: &Gateway,
    up: &Upstream,
    entry: &ToolEntry,
    mut flight: Flight,
    ctx: &RequestContext<RoleServer>,
    legacy_agent: bool,
) -> Result<Finished, McpError> {
    let response = loop {
        match flight::drive(&mut flight, ctx).await? {
            Step::Done(r) => break r,
            // Asked from inside the agent's own request, so rmcp delivers it on
            // that request's stream.
            Step::Input(pending) if legacy_agent => {
                let answer = bridge::answer(ctx, pending.request).await;
                let _ = pending.reply.send(answer);
            }
            Step::Input(pending) => {
                let key = "tollgate-input".to_string();
                let request = pending.request.clone();
                let Some(state) = gw.parked.park(flight, pending, key.clone(), entry.name.clone()) else {
                    return Ok(Finished::Answer(tool_error("too many calls are waiting for input; try again later")));
                };
                let requests: InputRequests = [(key, request)].into_iter().collect();
                let result = InputRequiredResult::new(Some(requests), Some(state));
                return Ok(Finished::Answer(CallToolResponse::InputRequired(result)));
            }
        }
    };
    Ok(match response {
        Ok(ServerResult::CallToolResult(mut r)) => {
            // Results from legacy upstreams lack resultType; modern agents need it
            // (rmcp strips it again for legacy agents).
            r.result_type = Some(ResultType::COMPLETE);
            if let Some(m) = r.meta.as_mut() {
                m.remove("io.modelcontextprotocol/serverInfo");
            }
            Finished::Answer(CallToolResponse::Complete(r))
        }
        Ok(ServerResult::InputRequiredResult(r)) if legacy_agent => Finished::AskLegacyAgent(r),
        Ok(ServerResult::InputRequiredResult(r)) => Finished::Answer(CallToolResponse::InputRequired(r)),
        Ok(ServerResult::CreateTaskResult(r)) => Finished::Answer(CallToolResponse::Task(r)),
        Ok(_) => Finished::Answer(tool_error(format!(
            "upstream `{}` answered with something other than a tool result",
            up.name
        ))),
        Err(ServiceError::McpError(e)) => return Err(e),
        Err(ServiceError::Timeout { timeout }) => {
            Finished::Answer(tool_error(format!("upstream `{}` did not answer within {timeout:?}", up.name)))
        }
        Err(e) => Finished::Answer(tool_error(format!("upstream `{}` failed: {e}", up.name))),
    })
}
