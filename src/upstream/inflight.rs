//! Requests in flight on one upstream connection, and the agent each came
//! from, so that what the upstream sends back for a request (a question for
//! the user, a log message) reaches that agent and no other.
//!
//! Over Streamable HTTP a server-to-client request names the request whose
//! stream it arrived on. Over stdio, SSE and WebSocket nothing does, so it is
//! attributed only when exactly one request is in flight on the connection;
//! requests that cannot be attributed (prompts, resource reads, completions)
//! are counted so they are never mistaken for "no other request". One
//! registry lives per connection: rmcp numbers requests from 0 on each.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::Locked;
#[allow(deprecated)]
use rmcp::model::LoggingMessageNotificationParam;
use rmcp::model::{InputRequest, RequestId};
use rmcp::service::InboundStreamOrigin;
use rmcp::{Peer, RoleServer};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

/// The agent a forwarded call came from.
#[derive(Clone)]
pub struct Agent {
    pub peer: Peer<RoleServer>,
    /// Whether the agent may be sent `notifications/message` for this call
    /// (a legacy session, or a 2026-07-28 request that set a log level).
    pub logging: bool,
    /// What the agent can answer (see `flight::AgentClient`): a question it
    /// did not declare is refused as the agent itself would refuse it.
    pub capabilities: rmcp::model::ClientCapabilities,
    /// Questions from the upstream, answered by the call's forwarding loop:
    /// on a legacy agent's session, or as an `input_required` result.
    pub inputs: mpsc::UnboundedSender<Pending>,
    /// The call's log messages, relayed by its forwarding loop in order.
    #[allow(deprecated)]
    pub logs: mpsc::Sender<LoggingMessageNotificationParam>,
}

/// A request from the upstream waiting for the agent's answer.
pub struct Pending {
    pub request: InputRequest,
    pub reply: oneshot::Sender<Result<Value, String>>,
}

#[derive(Clone, Default)]
pub struct Inflight {
    calls: Arc<Mutex<HashMap<RequestId, Agent>>>,
    /// Requests in flight that carry no agent link (reads, prompts, completions).
    others: Arc<AtomicUsize>,
    inserted: Arc<Notify>,
}

impl Inflight {
    pub fn insert(&self, id: RequestId, agent: Agent) -> CallGuard {
        self.calls.locked().insert(id.clone(), agent);
        self.inserted.notify_waiters();
        CallGuard { inflight: self.clone(), id }
    }

    /// Counts a request that is not a tool call for as long as the guard lives.
    pub fn other(&self) -> OtherGuard {
        self.others.fetch_add(1, Ordering::SeqCst);
        OtherGuard { others: self.others.clone() }
    }

    /// The agent a server-to-client request belongs to. A request can arrive
    /// just before its call is registered, so an unattributed one waits
    /// briefly for a registration before giving up.
    pub async fn agent_for(&self, origin: Option<&InboundStreamOrigin>) -> Option<Agent> {
        const GRACE: Duration = Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + GRACE;
        loop {
            let mut registered = pin!(self.inserted.notified());
            registered.as_mut().enable();
            if let Some(agent) = self.find(origin) {
                return Some(agent);
            }
            if tokio::time::timeout_at(deadline, registered).await.is_err() {
                return None;
            }
        }
    }

    /// Attributes an upstream log message to the one request in flight, if it
    /// is a call whose agent may receive logs. Called as the message is read,
    /// while its call is still in flight; dropped when the agent lags.
    #[allow(deprecated)]
    pub fn route_log(&self, params: &LoggingMessageNotificationParam) {
        if let Some(agent) = self.find(None)
            && agent.logging
        {
            let _ = agent.logs.try_send(params.clone());
        }
    }

    /// Whether no request is in flight on the connection.
    pub fn is_idle(&self) -> bool {
        self.calls.locked().is_empty() && self.others.load(Ordering::SeqCst) == 0
    }

    fn find(&self, origin: Option<&InboundStreamOrigin>) -> Option<Agent> {
        let map = self.calls.locked();
        match origin {
            Some(InboundStreamOrigin::OutboundRequest(id)) => map.get(id).cloned(),
            Some(InboundStreamOrigin::Unassociated) => None,
            None if map.len() == 1 && self.others.load(Ordering::SeqCst) == 0 => map.values().next().cloned(),
            None => None,
        }
    }
}

pub struct CallGuard {
    inflight: Inflight,
    id: RequestId,
}

impl CallGuard {
    /// The same call under the id the request was sent with: registered
    /// under a placeholder before sending, so a log message the upstream
    /// writes before the send returns still finds its call.
    pub fn rekey(mut self, id: RequestId) -> CallGuard {
        let mut map = self.inflight.calls.locked();
        if let Some(agent) = map.remove(&self.id) {
            map.insert(id.clone(), agent);
        }
        drop(map);
        self.inflight.inserted.notify_waiters();
        self.id = id;
        self
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.inflight.calls.locked().remove(&self.id);
    }
}

pub struct OtherGuard {
    others: Arc<AtomicUsize>,
}

impl Drop for OtherGuard {
    fn drop(&mut self) {
        self.others.fetch_sub(1, Ordering::SeqCst);
    }
}
