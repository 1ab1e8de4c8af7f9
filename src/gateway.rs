//! The gateway's shared state: a `Clone` bundle of cheap handles that every
//! agent session, the HTTP edge and background tasks hold.

use std::sync::{Arc, Mutex};

use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Limits};
use crate::upstream::Upstreams;

#[derive(Clone)]
pub struct Gateway {
    pub upstreams: Upstreams,
    pub limits: Limits,
    /// Agents on 2025-11-25 sessions, told when lists change. (Agents on
    /// 2026-07-28 hear of changes through `subscriptions/listen`.)
    pub sessions: Sessions,
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Starts the upstream supervisors and the list-change fan-out. Returns at once:
    /// upstreams connect in the background.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Gateway {
        let upstreams = Upstreams::start(
            config.manifests.clone(),
            config.catalog.separator.clone(),
            shutdown.clone(),
        );
        let gw = Gateway {
            upstreams,
            limits: config.server.limits,
            sessions: Sessions::default(),
            shutdown,
        };
        tokio::spawn(crate::server::fanout::run(gw.clone()));
        gw
    }
}

/// Legacy agent sessions that asked to hear about list changes.
#[derive(Clone, Default)]
pub struct Sessions {
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
}

impl Sessions {
    pub fn add(&self, peer: Peer<RoleServer>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.push(peer);
    }

    /// The open sessions; closed ones are forgotten.
    pub fn open(&self) -> Vec<Peer<RoleServer>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.clone()
    }
}
