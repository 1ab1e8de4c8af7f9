//! tollgate's side of each upstream connection: an rmcp `ClientHandler`.
//!
//! It routes what the upstream sends back: list changes to the supervisor
//! (which re-lists and rebuilds the catalog), resource updates to the
//! subscription registry, and questions (elicitation, sampling) to the
//! forwarding loop of the call that caused them (see `inflight`). Progress
//! and log messages are routed earlier, by the transport wrapper `tap`.

// Sampling and logging are deprecated by SEP-2577 but upstreams still use them.
#![allow(deprecated)]

use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequest, ElicitRequestParams, ElicitResult, Implementation, InputRequest, ListRootsResult,
    LoggingMessageNotificationParam, ProtocolVersion, ResourceUpdatedNotificationParam,
};
use rmcp::service::{InboundStreamOrigin, NotificationContext, RequestContext, RoleClient};
use rmcp::{ClientHandler, ErrorData as McpError, Peer, RoleServer};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use super::inflight::{Inflight, Pending};
use super::progress::Progress;

/// What an upstream asked the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Tools,
    Prompts,
    Resources,
}

#[derive(Clone)]
pub struct Handler {
    pub upstream: Arc<str>,
    pub progress: Progress,
    pub inflight: Inflight,
    pub refresh: mpsc::UnboundedSender<Refresh>,
    /// Where resource updates are published (see `subscription`).
    pub updates: tokio::sync::broadcast::Sender<String>,
    /// The agent whose own session this is (see `own`); none on the shared
    /// connection.
    pub agent: Option<Arc<OwnAgent>>,
}

/// The agent an own session speaks for: what it declared, and its session
/// at tollgate, which the upstream's `roots/list` is relayed to.
pub struct OwnAgent {
    pub capabilities: ClientCapabilities,
    pub info: Implementation,
    pub peer: Peer<RoleServer>,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        if let Some(agent) = &self.agent {
            // An agent's own session says what the agent said, in the last
            // era with a handshake.
            let mut config = ClientConfig::new(agent.capabilities.clone(), agent.info.clone());
            config.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
            return config;
        }
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
        let _ = self.updates.send(params.uri);
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
        decode(self.ask(&ctx, InputRequest::Elicitation(ElicitRequest::new(request))).await?)
    }

    async fn list_roots(&self, _ctx: RequestContext<RoleClient>) -> Result<ListRootsResult, McpError> {
        // Only an agent's own session declared roots, and only for an agent that did.
        match &self.agent {
            Some(agent) if agent.capabilities.roots.is_some() => agent.peer.list_roots().await.map_err(|e| match e {
                rmcp::service::ServiceError::McpError(e) => e,
                other => McpError::internal_error(format!("the agent did not list its roots: {other}"), None),
            }),
            _ => Err(McpError::new(rmcp::model::ErrorCode::METHOD_NOT_FOUND, "roots are not supported", None)),
        }
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        ctx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        decode(self.ask(&ctx, InputRequest::CreateMessage(CreateMessageRequest::new(params))).await?)
    }
}

impl Handler {
    /// Hands `request` to the forwarding loop of the call it belongs to, which
    /// asks the agent from inside the agent's own request, and waits for the answer.
    async fn ask(&self, ctx: &RequestContext<RoleClient>, request: InputRequest) -> Result<Value, McpError> {
        let agent = self.inflight.agent_for(ctx.extensions.get::<InboundStreamOrigin>()).await.ok_or_else(|| {
            McpError::invalid_request("tollgate cannot tell which agent call this request belongs to", None)
        })?;
        // A legacy upstream shares one session whose client (tollgate)
        // declared both; an agent that did not is not asked, and the upstream
        // hears what a client without the capability answers.
        let declared = match &request {
            InputRequest::Elicitation(_) => agent.capabilities.elicitation.is_some(),
            InputRequest::CreateMessage(_) => agent.capabilities.sampling.is_some(),
            _ => true,
        };
        if !declared {
            return Err(McpError::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("the agent does not support {}", input_kind(&request)),
                None,
            ));
        }
        let (reply, answer) = oneshot::channel();
        agent
            .inputs
            .send(Pending { request, reply })
            .map_err(|_| McpError::internal_error("the agent's call has ended", None))?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(McpError::invalid_request(e, None)),
            Err(_) => Err(McpError::internal_error("the agent's call ended before it answered", None)),
        }
    }
}

fn input_kind(request: &InputRequest) -> &'static str {
    match request {
        InputRequest::Elicitation(_) => "elicitation",
        InputRequest::CreateMessage(_) => "sampling",
        _ => "this request",
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, McpError> {
    serde_json::from_value(v)
        .map_err(|e| McpError::invalid_params(format!("the agent's answer is malformed: {e}"), None))
}
