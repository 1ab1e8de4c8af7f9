//! The gateway's shared state: a `Clone` bundle of cheap handles that every
//! agent session, the HTTP edge and background tasks hold. It is built, and
//! its background work started, by [`crate::app`]; it depends on nothing
//! above it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::journal::Journal;
use crate::policy::watch::Policies;
use crate::store::Store;
use crate::sync::Locked;
use crate::upstream::Upstreams;

#[derive(Clone)]
pub struct Gateway {
    pub upstreams: Upstreams,
    pub limits: Limits,
    /// Agents on 2025-11-25 sessions, told when lists change. (Agents on
    /// 2026-07-28 hear of changes through `subscriptions/listen`.)
    pub sessions: Sessions,
    /// Legacy sessions subscribed to resource URIs.
    pub watchers: Watchers,
    /// Calls waiting for a 2026-07-28 agent's answer to an upstream's question.
    pub parked: Arc<crate::upstream::park::Lot>,
    pub store: Store,
    pub journal: Journal,
    pub ledger: crate::budget::Ledger,
    pub policies: Policies,
    pub approvals: crate::approval::Approvals,
    /// The LLM providers behind the chat tool.
    pub llm: Arc<crate::llm::Llm>,
    /// What admins change live (API grants, pins), and how it is put in force.
    pub admin: crate::admin::Admin,
    /// Read-your-writes across replicas for keys and grants.
    pub freshness: Arc<crate::freshness::Freshness>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether `/metrics` is served (`[telemetry] metrics`).
    pub serve_metrics: bool,
    /// Span export (`[telemetry] otlp_endpoint`); off by default.
    pub tracing: crate::trace::Tracing,
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// The principal of `secret`, decided against every key and grant change
    /// committed before the request (by any replica).
    pub async fn authenticate(&self, secret: &str) -> Result<crate::identity::Principal, crate::identity::AuthError> {
        self.freshness.ensure(&self.admin).await?;
        crate::identity::authenticate(&self.store, secret).await
    }

    /// Re-checks a session's principal before a request, as `authenticate`.
    pub async fn reverify(
        &self,
        principal: &crate::identity::Principal,
    ) -> Result<crate::identity::Principal, crate::identity::AuthError> {
        self.freshness.ensure(&self.admin).await?;
        crate::identity::reverify(&self.store, principal).await
    }
}

/// Legacy agent sessions that asked to hear about list changes.
#[derive(Clone, Default)]
pub struct Sessions {
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
}

impl Sessions {
    pub fn add(&self, peer: Peer<RoleServer>) {
        let mut peers = self.peers.locked();
        peers.retain(|p| !p.is_transport_closed());
        peers.push(peer);
    }

    /// The open sessions; closed ones are forgotten.
    pub fn open(&self) -> Vec<Peer<RoleServer>> {
        let mut peers = self.peers.locked();
        peers.retain(|p| !p.is_transport_closed());
        peers.clone()
    }
}

/// Legacy sessions that subscribed to resource URIs, by URI.
#[derive(Clone, Default)]
pub struct Watchers {
    by_uri: Arc<Mutex<HashMap<String, Vec<Peer<RoleServer>>>>>,
}

impl Watchers {
    /// Returns false if this session already watches `uri`.
    pub fn add(&self, uri: &str, peer: Peer<RoleServer>) -> bool {
        let mut map = self.by_uri.locked();
        let peers = map.entry(uri.to_string()).or_default();
        peers.retain(|p| !p.is_transport_closed());
        if peers.iter().any(|p| same_session(p, &peer)) {
            return false;
        }
        peers.push(peer);
        true
    }

    /// Returns false if this session did not watch `uri`.
    pub fn remove(&self, uri: &str, peer: &Peer<RoleServer>) -> bool {
        let mut map = self.by_uri.locked();
        let Some(peers) = map.get_mut(uri) else {
            return false;
        };
        let before = peers.len();
        peers.retain(|p| !same_session(p, peer));
        let removed = peers.len() < before;
        if peers.is_empty() {
            map.remove(uri);
        }
        removed
    }

    pub fn of(&self, uri: &str) -> Vec<Peer<RoleServer>> {
        let map = self.by_uri.locked();
        map.get(uri).map(|v| v.iter().filter(|p| !p.is_transport_closed()).cloned().collect()).unwrap_or_default()
    }
}

/// Two peers are the same session when they share the session's peer info.
fn same_session(a: &Peer<RoleServer>, b: &Peer<RoleServer>) -> bool {
    match (a.peer_info(), b.peer_info()) {
        (Some(x), Some(y)) => Arc::ptr_eq(&x, &y),
        _ => false,
    }
}
