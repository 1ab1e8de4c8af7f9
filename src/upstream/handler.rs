//! tollgate's side of each upstream connection: an rmcp `ClientHandler`.
//!
//! It routes what the upstream sends back: progress to the waiting call,
//! list changes to the supervisor (which re-lists and rebuilds the catalog),
//! and server-to-client requests (elicitation, sampling) to the agent whose
//! call caused them.

// Sampling and logging are deprecated by SEP-2577 but upstreams still use them.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequest, ElicitRequestParams, ElicitResult, Implementation, InputRequest, LoggingMessageNotificationParam,
    RequestId, ResourceUpdatedNotificationParam,
};
use rmcp::service::{InboundStreamOrigin, NotificationContext, RequestContext, RoleClient, RoleServer};
use rmcp::{ClientHandler, ErrorData as McpError, Peer};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::progress::Progress;

/// What an upstream asked the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Tools,
    Prompts,
    Resources,
}

/// Calls in flight on one upstream, by the request id tollgate used upstream,
/// with the agent connection each came from.
#[derive(Clone, Default)]
pub struct Inflight {
    inner: Arc<Mutex<HashMap<RequestId, Agent>>>,
}

/// The agent connection a forwarded call came from.
#[derive(Clone)]
pub struct Agent {
    pub peer: Peer<RoleServer>,
    /// Whether the agent may be sent `notifications/message` for this call
    /// (a legacy session, or a 2026-07-28 request that set a log level).
    pub logging: bool,
    /// For a 2026-07-28 agent, which cannot receive server-to-client requests:
    /// where the upstream's requests go, to be asked as an `input_required`
    /// result that the agent answers by retrying its call.
    pub inputs: Option<mpsc::UnboundedSender<Pending>>,
    /// The call's log messages, relayed by its forwarding loop in order.
    pub logs: mpsc::UnboundedSender<LoggingMessageNotificationParam>,
}

/// A request from the upstream waiting for the agent's answer.
pub struct Pending {
    pub request: InputRequest,
    pub reply: oneshot::Sender<Result<Value, String>>,
}

impl Inflight {
    pub fn insert(&self, id: RequestId, agent: Agent) -> InflightGuard {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), agent);
        InflightGuard { inflight: self.clone(), id }
    }

    /// The agent to ask for a server-to-client request. Over Streamable HTTP the
    /// request arrives on the originating call's stream and names it; on stdio
    /// there is no such link, so it is routed only when exactly one call is in flight.
    /// Attributes an upstream log message to the one call in flight, if
    /// there is exactly one and its agent may receive logs. Called as the
    /// message is read, while the call it belongs to is still in flight.
    pub fn route_log(&self, params: &LoggingMessageNotificationParam) {
        if let Some(agent) = self.agent_for(None)
            && agent.logging
        {
            let _ = agent.logs.send(params.clone());
        }
    }

    fn agent_for(&self, origin: Option<&InboundStreamOrigin>) -> Option<Agent> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match origin {
            Some(InboundStreamOrigin::OutboundRequest(id)) => map.get(id).cloned(),
            Some(InboundStreamOrigin::Unassociated) => None,
            None if map.len() == 1 => map.values().next().cloned(),
            None => None,
        }
    }
}

pub struct InflightGuard {
    inflight: Inflight,
    id: RequestId,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

#[derive(Clone)]
pub struct Handler {
    pub upstream: Arc<str>,
    pub progress: Progress,
    pub inflight: Inflight,
    pub refresh: mpsc::UnboundedSender<Refresh>,
    pub subscriptions: super::Subscriptions,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.elicitation = Some(Default::default());
        caps.sampling = Some(Default::default());
        ClientConfig::new(caps, Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
    }

    // Progress is routed by the transport wrapper (`tap`), in arrival order;
    // rmcp's per-notification tasks would reorder it here.

    async fn on_tool_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        let _ = self.refresh.send(Refresh::Tools);
    }

    async fn on_prompt_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        let _ = self.refresh.send(Refresh::Prompts);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _ctx: NotificationContext<RoleClient>,
    ) {
        self.subscriptions.publish(params.uri);
    }

    async fn on_resource_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        let _ = self.refresh.send(Refresh::Resources);
    }

    async fn on_logging_message(&self, params: LoggingMessageNotificationParam, _ctx: NotificationContext<RoleClient>) {
        // Relayed to the agent by the transport wrapper (`tap`), in order.
        tracing::debug!(upstream = %self.upstream, level = ?params.level, logger = ?params.logger, "upstream log message");
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        ctx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let agent = self.agent(&ctx)?;
        match &agent.inputs {
            Some(inputs) => decode(ask(inputs, InputRequest::Elicitation(ElicitRequest::new(request))).await?),
            None => {
                agent.peer.create_elicitation(request).await.map_err(|e| {
                    McpError::internal_error(format!("the agent did not answer the elicitation: {e}"), None)
                })
            }
        }
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        ctx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        let agent = self.agent(&ctx)?;
        match &agent.inputs {
            Some(inputs) => decode(ask(inputs, InputRequest::CreateMessage(CreateMessageRequest::new(params))).await?),
            None => agent.peer.create_message(params).await.map_err(|e| {
                McpError::internal_error(format!("the agent did not answer the sampling request: {e}"), None)
            }),
        }
    }
}

impl Handler {
    fn agent(&self, ctx: &RequestContext<RoleClient>) -> Result<Agent, McpError> {
        self.inflight.agent_for(ctx.extensions.get::<InboundStreamOrigin>()).ok_or_else(|| {
            McpError::invalid_request("tollgate cannot tell which agent call this request belongs to", None)
        })
    }
}

/// Hands `request` to the call's forwarding loop and waits for the agent's answer.
async fn ask(inputs: &mpsc::UnboundedSender<Pending>, request: InputRequest) -> Result<Value, McpError> {
    let (reply, answer) = oneshot::channel();
    inputs
        .send(Pending { request, reply })
        .map_err(|_| McpError::internal_error("the agent's call has ended", None))?;
    match answer.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(McpError::invalid_request(e, None)),
        Err(_) => Err(McpError::internal_error("the agent did not answer in time", None)),
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, McpError> {
    serde_json::from_value(v)
        .map_err(|e| McpError::invalid_params(format!("the agent's answer is malformed: {e}"), None))
}
