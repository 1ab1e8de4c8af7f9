//! The execute stage: forwarding one call to its upstream with a timeout,
//! relaying progress to the agent, and passing the agent's cancellation on.
//!
//! A 2026-07-28 upstream that needs input from the agent's user answers with
//! an `input_required` result (MRTR). A 2026-07-28 agent gets it as is and
//! retries; a 2025-11-25 agent cannot, so tollgate asks it with the legacy
//! server-to-client request and retries the upstream itself (see `bridge`).

use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotificationParam, ClientRequest,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ResultType, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, Peer, RoleClient, RoleServer};

use super::{bridge, tool_error};
use crate::catalog::ToolEntry;
use crate::upstream::Upstream;
use crate::upstream::handler::Agent;

/// Input rounds tollgate drives on behalf of a legacy agent before giving up.
const MAX_INPUT_ROUNDS: usize = 8;

pub async fn forward_tool(
    up: &Upstream,
    entry: &ToolEntry,
    params: CallToolRequestParams,
    ctx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let peer = match up.peer() {
        Ok(p) => p,
        Err(e) => return Ok(tool_error(e)),
    };
    let timeout: Duration = entry.settings.timeout.unwrap_or(up.manifest.call_timeout);
    // tollgate's own message: the upstream's name for the tool and only the
    // fields MCP defines, never the agent's raw request.
    let mut out = CallToolRequestParams::new(entry.upstream_tool.clone());
    out.arguments = params.arguments;
    out.input_responses = params.input_responses;
    out.request_state = params.request_state;
    let legacy_agent = ctx.protocol_version().is_none_or(|v| v.as_str() < ProtocolVersion::V_2026_07_28.as_str());
    for _ in 0..MAX_INPUT_ROUNDS {
        let response = match send_once(up, &peer, out.clone(), timeout, &ctx).await? {
            Ok(r) => r,
            Err(failure) => return Ok(failure),
        };
        match response {
            ServerResult::CallToolResult(mut r) => {
                // Results from legacy upstreams lack resultType; modern agents need it
                // (rmcp strips it again for legacy agents).
                r.result_type = Some(ResultType::COMPLETE);
                if let Some(m) = r.meta.as_mut() {
                    m.remove("io.modelcontextprotocol/serverInfo");
                }
                return Ok(CallToolResponse::Complete(r));
            }
            ServerResult::InputRequiredResult(r) if legacy_agent => {
                let answers = match bridge::ask_legacy_agent(&ctx, r.input_requests.unwrap_or_default()).await {
                    Ok(a) => a,
                    Err(e) => return Ok(tool_error(format!("upstream `{}` needs input from the user: {e}", up.name))),
                };
                out.input_responses = Some(answers);
                out.request_state = r.request_state;
            }
            ServerResult::InputRequiredResult(r) => return Ok(CallToolResponse::InputRequired(r)),
            ServerResult::CreateTaskResult(r) => return Ok(CallToolResponse::Task(r)),
            _ => {
                return Ok(tool_error(format!(
                    "upstream `{}` answered with something other than a tool result",
                    up.name
                )));
            }
        }
    }
    Ok(tool_error(format!("upstream `{}` asked for input more than {MAX_INPUT_ROUNDS} times", up.name)))
}

/// One request to the upstream. `Ok(Err(result))` is a failure already shaped
/// as the tool error the agent should see.
async fn send_once(
    up: &Upstream,
    peer: &Peer<RoleClient>,
    out: CallToolRequestParams,
    timeout: Duration,
    ctx: &RequestContext<RoleServer>,
) -> Result<Result<ServerResult, CallToolResponse>, McpError> {
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(out));
    let handle = match peer.send_request_with_option(request, PeerRequestOptions::with_timeout(timeout)).await {
        Ok(h) => h,
        Err(e) => return Ok(Err(tool_error(format!("upstream `{}` failed: {e}", up.name)))),
    };
    let request_id = handle.id.clone();
    let agent = Agent { peer: ctx.peer.clone(), logging: logging_allowed(ctx) };
    let _inflight = up.inflight.insert(request_id.clone(), agent);
    // Progress is relayed from inside this future, in arrival order, and any
    // that arrived before the result is sent before it.
    let mut progress = ctx.meta.get_progress_token().map(|agent_token| {
        let (guard, rx) = up.progress.subscribe(handle.progress_token.clone());
        (guard, rx, agent_token)
    });
    let mut response = std::pin::pin!(handle.await_response());
    let response = loop {
        tokio::select! {
            biased;
            r = &mut response => break r,
            _ = ctx.ct.cancelled() => {
                let note = CancelledNotificationParam::new(Some(request_id), Some("cancelled by the agent".into()));
                let _ = peer.notify_cancelled(note).await;
                return Err(McpError::internal_error("cancelled by the agent", None));
            }
            Some(n) = async { match progress.as_mut() { Some((_, rx, _)) => rx.recv().await, None => std::future::pending().await } } => {
                if let Some((_, _, token)) = &progress {
                    relay_progress(ctx, n, token).await;
                }
            }
        }
    };
    if let Some((guard, mut rx, token)) = progress {
        drop(guard);
        while let Ok(n) = rx.try_recv() {
            relay_progress(ctx, n, &token).await;
        }
    }
    match response {
        Ok(r) => Ok(Ok(r)),
        Err(ServiceError::McpError(e)) => Err(e),
        Err(ServiceError::Timeout { timeout }) => {
            Ok(Err(tool_error(format!("upstream `{}` did not answer within {timeout:?}", up.name))))
        }
        Err(e) => Ok(Err(tool_error(format!("upstream `{}` failed: {e}", up.name)))),
    }
}

/// 2026-07-28 forbids `notifications/message` unless the request set a log level.
fn logging_allowed(ctx: &RequestContext<RoleServer>) -> bool {
    let legacy = ctx.protocol_version().is_none_or(|v| v.as_str() < ProtocolVersion::V_2026_07_28.as_str());
    legacy || ctx.meta.0.contains_key("io.modelcontextprotocol/logLevel")
}

async fn relay_progress(
    ctx: &RequestContext<RoleServer>,
    mut n: ProgressNotificationParam,
    agent_token: &ProgressToken,
) {
    n.progress_token = agent_token.clone();
    let _ = ctx.peer.notify_progress(n).await;
}
