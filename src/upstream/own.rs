//! Upstream sessions of one agent's own.
//!
//! Each upstream has one shared connection, in the newest era it speaks
//! (see ARCHITECTURE.md, "Which upstream connection serves which agent").
//! Most of what an agent needs travels per request on it, but not all: a
//! 2026-07-28 server asks questions of its client (elicitation, sampling)
//! only in its own era's way, and many servers that speak both eras ask
//! them only on a legacy session. A 2025-11-25 agent that can answer such
//! questions would lose them on the shared connection. So its tool calls to
//! an upstream whose shared connection is 2026-07-28 go over an upstream
//! session of its own, opened in the legacy era on its first call, which
//! declares exactly the agent's capabilities and client info (never
//! tollgate's), and relays the upstream's questions and `roots/list` to that
//! agent alone.
//!
//! Such sessions are bounded per upstream (`[agent_sessions] max`; a stdio
//! upstream's session is a process of its own, so stdio upstreams have none
//! unless their manifest allows them), closed when the agent's session ends
//! (the [`AgentUpstreams`] of its edge session is dropped) and after
//! `[agent_sessions] idle` without a call. An upstream that refuses the
//! legacy handshake is remembered and served on its shared connection.
//! Governance is unchanged: only [`super::flight::start`] uses these
//! sessions, and only the pipeline's execute stage starts a flight.

// Logging and roots are deprecated by SEP-2577 but legacy agents still use them.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rmcp::model::{ClientCapabilities, Implementation, LoggingLevel, SetLevelRequestParams};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::connect::{self, Group, Service};
use super::handler::OwnAgent;
use super::{Conn, Upstream, UpstreamError};
use crate::sync::Locked;

/// The upstream sessions of one agent's edge session, by upstream index.
/// Held by the agent's edge session and handed to the pipeline in each
/// request's extensions; dropping the last clone closes them all.
#[derive(Clone, Default)]
pub struct AgentUpstreams(Arc<Held>);

#[derive(Default)]
struct Held {
    open: Slots,
    /// The log level the agent set (`logging/setLevel`), for each of its
    /// sessions, those open now and those opened later.
    level: Mutex<Option<LoggingLevel>>,
}

impl AgentUpstreams {
    /// The agent's `logging/setLevel`: passed to each of its own sessions
    /// whose upstream has logging (the shared connection is everyone's, so
    /// it is not told). Failures are logged, not the agent's concern.
    pub async fn set_level(&self, level: LoggingLevel) {
        *self.0.level.locked() = Some(level);
        let open: Vec<Arc<Own>> = self.0.open.locked().values().filter_map(|c| c.get().cloned()).collect();
        for own in open {
            tell_level(&own.conn, level).await;
        }
    }
}

async fn tell_level(conn: &Conn, level: LoggingLevel) {
    if conn.peer.peer_info().is_some_and(|i| i.capabilities.logging.is_some())
        && let Err(e) = conn.peer.set_level(SetLevelRequestParams::new(level)).await
    {
        tracing::debug!(error = %e, "an upstream refused an agent's log level");
    }
}

/// An agent's sessions by upstream index; a slot is filled once, by the
/// first call that needs it, while later calls wait for it.
type Slots = Mutex<HashMap<usize, Arc<OnceCell<Arc<Own>>>>>;

/// One agent's upstream session.
struct Own {
    conn: Arc<Conn>,
    /// Dropping it closes the session.
    service: Mutex<Option<Service>>,
    _group: Option<Group>,
    _seat: super::seats::Seat,
    used: Mutex<Instant>,
}

impl Own {
    fn touch(&self) {
        *self.used.locked() = Instant::now();
    }
}

/// Whether the agent of `ctx` needs a session of its own on `up`: a
/// 2025-11-25 agent that declared a capability the upstream can use only on
/// a session (elicitation, sampling, roots), on an upstream whose shared
/// connection is 2026-07-28 and whose manifest allows agents' sessions.
fn needs_own(up: &Upstream, shared: &Conn, ctx: &RequestContext<RoleServer>) -> bool {
    let legacy_agent = !ctx.protocol_version().is_some_and(|v| crate::protocol::is_modern(&v));
    let modern_upstream = shared.peer.peer_info().is_some_and(|i| crate::protocol::is_modern(&i.protocol_version));
    let asks = ctx.peer.peer_info().is_some_and(|p| {
        let c = &p.capabilities;
        c.elicitation.is_some() || c.sampling.is_some() || c.roots.is_some()
    });
    legacy_agent && modern_upstream && asks && up.manifest.agent_sessions.max > 0 && !up.seats.refused_legacy()
}

/// The connection a tool call of the agent of `ctx` goes over: the shared
/// one, or the agent's own session (opened on first need).
pub async fn conn_for(up: &Upstream, ctx: &RequestContext<RoleServer>) -> Result<Arc<Conn>, UpstreamError> {
    let shared = up.conn()?;
    let Some(agent) = ctx.extensions.get::<AgentUpstreams>() else {
        return Ok(shared);
    };
    if !needs_own(up, &shared, ctx) {
        return Ok(shared);
    }
    // Twice at most: a session found closed is replaced once, not forever.
    for _ in 0..2 {
        let cell = agent.0.open.locked().entry(up.index).or_default().clone();
        let opened = cell
            .get_or_try_init(|| async {
                let own = open(up, &ctx.peer, Arc::downgrade(&agent.0)).await?;
                let level = *agent.0.level.locked();
                if let Some(level) = level {
                    tell_level(&own.conn, level).await;
                }
                Ok(own)
            })
            .await;
        match opened {
            // A session the upstream closed (or that idled out) is replaced.
            Ok(own) if own.conn.peer.is_transport_closed() => forget(&agent.0.open, up.index, &cell),
            Ok(own) => {
                own.touch();
                return Ok(own.conn.clone());
            }
            Err(Refused::NoLegacy) => {
                forget(&agent.0.open, up.index, &cell);
                return Ok(shared);
            }
            Err(Refused::Error(e)) => {
                forget(&agent.0.open, up.index, &cell);
                return Err(e);
            }
        }
    }
    Err(UpstreamError::Failed {
        upstream: up.name.clone(),
        how: "closed the agent's session",
        why: "it closed again as soon as it was opened".into(),
    })
}

/// Removes `cell` from the agent's map, if it is still the one there.
fn forget(map: &Slots, index: usize, cell: &Arc<OnceCell<Arc<Own>>>) {
    let mut map = map.locked();
    if map.get(&index).is_some_and(|c| Arc::ptr_eq(c, cell)) {
        map.remove(&index);
    }
}

enum Refused {
    /// The upstream does not speak the legacy era: the shared connection serves.
    NoLegacy,
    Error(UpstreamError),
}

async fn open(up: &Upstream, agent: &Peer<RoleServer>, held: Weak<Held>) -> Result<Arc<Own>, Refused> {
    let cap = up.manifest.agent_sessions.max;
    let seat =
        up.seats.take(cap).ok_or_else(|| Refused::Error(UpstreamError::Full { upstream: up.name.clone(), cap }))?;
    let info = agent.peer_info();
    let own_agent = OwnAgent {
        capabilities: info.as_ref().map(|p| relayed(&p.capabilities)).unwrap_or_default(),
        info: info.as_ref().map_or_else(|| Implementation::new("agent", "0"), |p| p.client_info.clone()),
        peer: agent.clone(),
    };
    // List changes are the shared connection's to hear.
    let (handler, _changes) = up.handler_for(Some(own_agent));
    let (progress, inflight) = (handler.progress.clone(), handler.inflight.clone());
    let bound = up.manifest.connect_timeout;
    let opened = match tokio::time::timeout(bound, connect::open_legacy(&up.name, &up.manifest.transport, handler))
        .await
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) if e.is_handshake() => {
            tracing::info!(upstream = %up.name, error = %e, "upstream refused a legacy session; agents share its connection");
            up.seats.refuses_legacy();
            return Err(Refused::NoLegacy);
        }
        Ok(Err(e)) => {
            return Err(Refused::Error(UpstreamError::Failed {
                upstream: up.name.clone(),
                how: "could not open the agent's session",
                why: e.to_string(),
            }));
        }
        Err(_) => {
            return Err(Refused::Error(UpstreamError::TimedOut {
                upstream: up.name.clone(),
                what: "agent session",
                after: bound,
            }));
        }
    };
    if opened.service.peer_info().is_none_or(|i| crate::protocol::is_modern(&i.protocol_version)) {
        // It answered `initialize` with a version without sessions: the
        // shared connection already gives all it can.
        up.seats.refuses_legacy();
        return Err(Refused::NoLegacy);
    }
    let conn = Arc::new(Conn { peer: opened.service.peer().clone(), progress, inflight });
    let own = Arc::new(Own {
        conn,
        service: Mutex::new(Some(opened.service)),
        _group: opened.group,
        _seat: seat,
        used: Mutex::new(Instant::now()),
    });
    tracing::debug!(upstream = %up.name, open = up.seats.open(), "opened an agent's own upstream session");
    tokio::spawn(close_when_idle(Arc::downgrade(&own), held, up.index, up.manifest.agent_sessions.idle));
    Ok(own)
}

/// What an agent's own session declares: what tollgate relays to the agent
/// on it (questions, sampling, roots), and only what the agent declared.
fn relayed(declared: &ClientCapabilities) -> ClientCapabilities {
    let mut c = ClientCapabilities::default();
    c.elicitation = declared.elicitation.clone();
    c.sampling = declared.sampling.clone();
    c.roots = declared.roots.clone();
    c
}

/// Closes the session after `idle` without a call (never while a request is
/// in flight on it), unless the agent's session ended first.
async fn close_when_idle(own: Weak<Own>, held: Weak<Held>, index: usize, idle: Duration) {
    let mut at = Instant::now() + idle;
    loop {
        tokio::time::sleep_until(at).await;
        let Some(o) = own.upgrade() else { return };
        let due = *o.used.locked() + idle;
        if due > Instant::now() {
            at = due;
            continue;
        }
        if !o.conn.inflight.is_idle() {
            // A call longer than `idle` is still running: look again later.
            at = Instant::now() + idle;
            continue;
        }
        // The agent's map lets go of it; calls that still hold the
        // connection see it closed.
        if let Some(held) = held.upgrade() {
            let mut map = held.open.locked();
            if map.get(&index).and_then(|c| c.get()).is_some_and(|c| Arc::ptr_eq(c, &o)) {
                map.remove(&index);
            }
        }
        drop(o.service.locked().take());
        return;
    }
}
