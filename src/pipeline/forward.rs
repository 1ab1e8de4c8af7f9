//! The execute stage: forwarding one call to its upstream with a timeout,
//! relaying progress to the agent, and passing the agent's cancellation on.
//!
//! Questions for the agent's user travel for the call they belong to:
//! - a 2026-07-28 upstream asks with an `input_required` result (MRTR): a
//!   2026-07-28 agent gets it as is and retries; a 2025-11-25 agent cannot,
//!   so tollgate asks it on its session and retries upstream (`bridge`);
//! - a legacy upstream asks with a server-to-client request: a legacy agent
//!   gets it on its session (`upstream::handler`); a 2026-07-28 agent gets an
//!   `input_required` result while the upstream call waits parked (`park`).

// Logging is deprecated by SEP-2577 but still relayed for agents that use it.
#![allow(deprecated)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotificationParam,
    ClientRequest, ContentBlock, InputRequests, InputRequiredResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, ProgressToken, RequestId, RequestMetaObject, ResultType, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, Peer, RoleClient, RoleServer};
use tokio::sync::mpsc;

use super::{bridge, park, tool_error};
use crate::catalog::ToolEntry;
use crate::gateway::Gateway;
use crate::trace::Carrier;
use crate::upstream::Upstream;
use crate::upstream::inflight::{Agent, CallGuard, Pending};
use crate::upstream::progress::Subscription;

/// Input rounds tollgate drives on behalf of a legacy agent before giving up.
const MAX_INPUT_ROUNDS: usize = 8;

/// Log messages buffered per call; more are dropped while the agent lags.
const LOG_BUFFER: usize = 256;

type Response = Pin<Box<dyn Future<Output = Result<ServerResult, ServiceError>> + Send>>;

/// One request in flight to an upstream, movable so it can be parked.
pub struct Flight {
    peer: Peer<RoleClient>,
    request_id: RequestId,
    response: Response,
    /// Held for the flight's life: dropping it unsubscribes.
    _progress: Subscription,
    progress_rx: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    logs_rx: mpsc::Receiver<LoggingMessageNotificationParam>,
    inputs: mpsc::UnboundedReceiver<Pending>,
    _inflight: CallGuard,
}

enum Step {
    Done(Result<ServerResult, ServiceError>),
    Input(Pending),
}

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
        let flight = match start(up, out.clone(), timeout, &ctx).await {
            Ok(f) => f,
            Err(failure) => return Ok(failure),
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

/// Forwards a call no agent request is open for (an approved task): no
/// progress to relay, no agent to ask; a question from the upstream fails it.
pub async fn forward_detached(
    up: &Upstream,
    entry: &ToolEntry,
    arguments: serde_json::Value,
    trace: &Carrier,
) -> Result<CallToolResult, McpError> {
    let timeout: Duration = entry.settings.timeout.unwrap_or(up.manifest.call_timeout);
    let conn = match up.conn() {
        Ok(c) => c,
        Err(e) => {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "upstream `{}` is unavailable: {e}",
                up.name
            ))]));
        }
    };
    let _counted = conn.inflight.other();
    let mut out = CallToolRequestParams::new(entry.upstream_tool.clone());
    out.arguments = match arguments {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    };
    out.meta = trace_meta(trace);
    match tokio::time::timeout(timeout, conn.peer.call_tool_once(out)).await {
        Ok(Ok(CallToolResponse::Complete(r))) => Ok(r),
        Ok(Ok(_)) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "upstream `{}` asked for input, which a task run in the background cannot give",
            up.name
        ))])),
        Ok(Err(ServiceError::McpError(e))) => Err(e),
        Ok(Err(e)) => Err(McpError::internal_error(format!("upstream `{}` failed: {e}", up.name), None)),
        Err(_) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "upstream `{}` did not answer within {timeout:?}",
            up.name
        ))])),
    }
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
        match drive(&mut flight, ctx).await? {
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

/// A request id rmcp never gives (its ids count up from zero): negative.
fn placeholder_id() -> RequestId {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
    RequestId::Number(NEXT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed))
}

/// Sends one request upstream. `Err` is a failure already shaped as the agent's tool error.
async fn start(
    up: &Upstream,
    out: CallToolRequestParams,
    timeout: Duration,
    ctx: &RequestContext<RoleServer>,
) -> Result<Flight, CallToolResponse> {
    let conn = up.conn().map_err(tool_error)?;
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let (logs, logs_rx) = mpsc::channel(LOG_BUFFER);
    let agent = Agent { peer: ctx.peer.clone(), logging: logging_allowed(ctx), inputs: inputs_tx, logs };
    // In flight before it is sent: rmcp numbers the request when sending, and
    // a fast upstream's log message can be read before the send returns.
    let pending = conn.inflight.insert(placeholder_id(), agent);
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(out));
    let handle = conn
        .peer
        .send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
        .await
        .map_err(|e| tool_error(format!("upstream `{}` failed: {e}", up.name)))?;
    let request_id = handle.id.clone();
    let inflight = pending.rekey(request_id.clone());
    let (progress, progress_rx) = conn.progress.subscribe(handle.progress_token.clone());
    Ok(Flight {
        peer: conn.peer.clone(),
        request_id,
        response: Box::pin(handle.await_response()),
        _progress: progress,
        progress_rx,
        logs_rx,
        inputs,
        _inflight: inflight,
    })
}

/// Polls `flight` until it answers or asks a question; relays progress in
/// arrival order (progress that arrived before the answer is sent before it).
async fn drive(flight: &mut Flight, ctx: &RequestContext<RoleServer>) -> Result<Step, McpError> {
    let agent_token = ctx.meta.get_progress_token();
    let step = loop {
        tokio::select! {
            biased;
            r = &mut flight.response => break Step::Done(r),
            _ = ctx.ct.cancelled() => {
                let note = CancelledNotificationParam::new(Some(flight.request_id.clone()), Some("cancelled by the agent".into()));
                let _ = flight.peer.notify_cancelled(note).await;
                return Err(McpError::internal_error("cancelled by the agent", None));
            }
            Some(pending) = flight.inputs.recv() => break Step::Input(pending),
            Some(n) = flight.progress_rx.recv() => {
                if let Some(token) = &agent_token {
                    relay_progress(ctx, n, token).await;
                }
            }
            Some(l) = flight.logs_rx.recv() => {
                let _ = ctx.peer.notify_logging_message(l).await;
            }
        }
    };
    while let Ok(n) = flight.progress_rx.try_recv() {
        if let Some(token) = &agent_token {
            relay_progress(ctx, n, token).await;
        }
    }
    while let Ok(l) = flight.logs_rx.try_recv() {
        let _ = ctx.peer.notify_logging_message(l).await;
    }
    Ok(step)
}

/// The call's trace context as request `_meta` (W3C Trace Context in MCP).
fn trace_meta(trace: &Carrier) -> Option<RequestMetaObject> {
    if trace.is_empty() {
        return None;
    }
    let mut meta = RequestMetaObject::new();
    for (k, v) in trace.pairs() {
        meta.0.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    Some(meta)
}

/// 2026-07-28 forbids `notifications/message` unless the request set a log level.
fn logging_allowed(ctx: &RequestContext<RoleServer>) -> bool {
    let legacy = !ctx.protocol_version().is_some_and(|v| crate::protocol::is_modern(&v));
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
