//! One tool call in flight to an upstream: sent with the agent's trace
//! context, its progress and log messages relayed to the agent in arrival
//! order, the agent's cancellation passed on, and questions the upstream
//! asks handed back to the caller as [`Step::Input`]. A [`Flight`] can be
//! moved (parked) while an agent answers.

// Logging is deprecated by SEP-2577 but still relayed for agents that use it.
#![allow(deprecated)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotificationParam,
    ClientCapabilities, ClientRequest, ContentBlock, Implementation, LoggingMessageNotificationParam,
    ProgressNotificationParam, ProgressToken, RequestId, RequestMetaObject, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, Peer, RoleClient, RoleServer};
use tokio::sync::mpsc;

use super::inflight::{Agent, CallGuard, Pending};
use super::progress::Subscription;
use super::{Upstream, UpstreamError};
use crate::catalog::ToolEntry;
use crate::trace::Carrier;

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

pub enum Step {
    Done(Result<ServerResult, ServiceError>),
    Input(Pending),
}

/// Forwards a call no agent request is open for (an approved task): no
/// progress to relay, no agent to ask; a question from the upstream fails it.
pub async fn call_detached(
    up: &Upstream,
    entry: &ToolEntry,
    arguments: serde_json::Value,
    trace: &Carrier,
) -> Result<CallToolResult, McpError> {
    let timeout: Duration = entry.settings.timeout.unwrap_or(up.manifest.call_timeout);
    let conn = match up.conn() {
        Ok(c) => c,
        // Its text names the upstream and why it is down.
        Err(e) => return Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())])),
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
        Ok(Err(e)) => {
            let failed = UpstreamError::Failed { upstream: up.name.clone(), how: "failed", why: e.to_string() };
            Err(McpError::internal_error(failed.to_string(), None))
        }
        Err(_) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "upstream `{}` did not answer within {timeout:?}",
            up.name
        ))])),
    }
}

/// A request id rmcp never gives (its ids count up from zero): negative.
fn placeholder_id() -> RequestId {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
    RequestId::Number(NEXT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed))
}

/// Sends one request upstream, its progress, log messages and questions
/// routed back to the agent of `ctx`.
pub async fn start(
    up: &Upstream,
    out: CallToolRequestParams,
    timeout: Duration,
    ctx: &RequestContext<RoleServer>,
) -> Result<Flight, UpstreamError> {
    let conn = super::own::conn_for(up, ctx).await?;
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let (logs, logs_rx) = mpsc::channel(LOG_BUFFER);
    let client = AgentClient::of(ctx);
    let mut options = PeerRequestOptions::with_timeout(timeout);
    if conn.peer.peer_info().is_some_and(|i| crate::protocol::is_modern(&i.protocol_version)) {
        options.meta = Some(client.meta());
    }
    let agent = Agent {
        peer: ctx.peer.clone(),
        logging: logging_allowed(ctx),
        capabilities: client.capabilities,
        inputs: inputs_tx,
        logs,
    };
    // In flight before it is sent: rmcp numbers the request when sending, and
    // a fast upstream's log message can be read before the send returns.
    let pending = conn.inflight.insert(placeholder_id(), agent);
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(out));
    let handle = conn.peer.send_request_with_option(request, options).await.map_err(|e| UpstreamError::Failed {
        upstream: up.name.clone(),
        how: "failed",
        why: e.to_string(),
    })?;
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
pub async fn drive(flight: &mut Flight, ctx: &RequestContext<RoleServer>) -> Result<Step, McpError> {
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
pub fn trace_meta(trace: &Carrier) -> Option<RequestMetaObject> {
    if trace.is_empty() {
        return None;
    }
    let mut meta = RequestMetaObject::new();
    for (k, v) in trace.pairs() {
        meta.0.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    Some(meta)
}

/// What the agent of a call declared about itself, as a 2026-07-28 upstream
/// is told it per request: its capabilities limited to what tollgate relays
/// back to it (questions for the user: elicitation and sampling, in either
/// era), never one the agent lacks, and its client info. A 2026-07-28 agent
/// declares both in each request's `_meta`; a legacy one at `initialize`.
pub struct AgentClient {
    pub capabilities: ClientCapabilities,
    pub info: Option<Implementation>,
}

impl AgentClient {
    pub fn of(ctx: &RequestContext<RoleServer>) -> AgentClient {
        let (declared, info) = match ctx.meta.client_capabilities() {
            Some(c) => (c, ctx.meta.client_info()),
            None => match ctx.peer.peer_info() {
                Some(p) => (p.capabilities.clone(), Some(p.client_info.clone())),
                None => (ClientCapabilities::default(), None),
            },
        };
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation = declared.elicitation;
        capabilities.sampling = declared.sampling;
        AgentClient { capabilities, info }
    }

    /// The request `_meta` that tells a 2026-07-28 upstream (rmcp lets these
    /// keys replace the ones it stamps from the connection's own client).
    fn meta(&self) -> RequestMetaObject {
        let mut meta = RequestMetaObject::new();
        meta.set_client_capabilities(self.capabilities.clone());
        if let Some(info) = &self.info {
            meta.set_client_info(info.clone());
        }
        meta
    }
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
