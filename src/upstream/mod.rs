//! Upstream MCP servers: one supervised connection each.
//!
//! Each upstream has a supervisor task that connects (within the manifest's
//! connect timeout), lists what the upstream offers, publishes a new catalog,
//! and reconnects with exponential backoff when the connection ends (a stdio
//! server that dies is restarted this way). Supervisors are independent: a
//! dead or slow upstream never delays the others or the gateway's start.

mod connect;
mod error;
pub use error::{ConnectError, UpstreamError};
pub mod flight;
pub use connect::resolve_program;
pub mod handler;
pub mod inflight;
pub mod own;
pub mod park;
pub mod progress;
mod requests;
mod seats;
mod sse;
pub mod subscription;
mod tap;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rmcp::model::ProtocolVersion;
use rmcp::service::ServiceError;
use rmcp::{Peer, RoleClient};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, Catalog, Listing, SchemaCache};
use crate::config::Manifest;
use crate::sync::ReadWrite;
use handler::Handler;
use inflight::Inflight;
use progress::Progress;
pub use subscription::Subscriptions;

/// Health of one upstream, as shown by the admin API, `/readyz` and `tollgate tools`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Health {
    /// The first connection attempt has not finished.
    Starting,
    Up,
    Down {
        error: String,
    },
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Starting => f.write_str("starting"),
            Health::Up => f.write_str("up"),
            Health::Down { error } => write!(f, "down: {error}"),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub transport: &'static str,
    pub health: Health,
    pub protocol: Option<String>,
    /// Connections made after the first one.
    pub restarts: u64,
    /// Upstream sessions of agents' own open now (see `own`).
    pub agent_sessions: usize,
    /// When the health last changed (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let t: chrono::DateTime<chrono::Utc> = (*t).into();
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub struct Upstream {
    pub index: usize,
    pub name: Arc<str>,
    /// The manifest the connection was made with (transport, timeouts).
    pub manifest: Manifest,
    /// The manifest as last (re)loaded: what the catalog is built from (tool
    /// overrides, prefix, scans), so those change without a reconnect.
    live: RwLock<Arc<Manifest>>,
    state: RwLock<State>,
    /// Where resource updates are published (see `subscription`).
    updates: tokio::sync::broadcast::Sender<String>,
    /// Agents' own sessions on this upstream (see `own`).
    pub seats: seats::Seats,
}

/// One live connection to an upstream. Request ids and progress tokens are
/// numbered per connection, so what tracks them lives here too.
pub struct Conn {
    pub peer: Peer<RoleClient>,
    pub progress: Progress,
    pub inflight: Inflight,
}

struct State {
    conn: Option<Arc<Conn>>,
    listing: Option<Arc<Listing>>,
    health: Health,
    protocol: Option<ProtocolVersion>,
    connections: u64,
    since: SystemTime,
    attempted: bool,
}

impl Upstream {
    /// The manifest as last (re)loaded: tool overrides, prefix and scans in force.
    pub fn live(&self) -> Arc<Manifest> {
        self.live.reading().clone()
    }

    /// The live connection's peer, or why there is none.
    pub fn peer(&self) -> Result<Peer<RoleClient>, UpstreamError> {
        self.conn().map(|c| c.peer.clone())
    }

    /// The live connection, or why there is none.
    pub fn conn(&self) -> Result<Arc<Conn>, UpstreamError> {
        let st = self.state.reading();
        match (&st.conn, &st.health) {
            (Some(c), _) if !c.peer.is_transport_closed() => Ok(c.clone()),
            (_, Health::Down { error }) => Err(UpstreamError::Down { upstream: self.name.clone(), why: error.clone() }),
            _ => Err(UpstreamError::NotConnected(self.name.clone())),
        }
    }

    pub fn status(&self) -> Status {
        let st = self.state.reading();
        Status {
            name: self.name.to_string(),
            transport: self.manifest.transport.kind(),
            health: st.health.clone(),
            protocol: st.protocol.as_ref().map(|p| p.as_str().to_string()),
            restarts: st.connections.saturating_sub(1),
            agent_sessions: self.seats.open(),
            since: st.since,
        }
    }

    /// A handler for a new connection: tollgate's shared one (`agent`
    /// none), or one agent's own session. The receiver hears the upstream's
    /// list changes.
    fn handler_for(&self, agent: Option<handler::OwnAgent>) -> (Handler, mpsc::UnboundedReceiver<handler::Refresh>) {
        let (refresh, refresh_rx) = mpsc::unbounded_channel();
        let handler = Handler {
            upstream: self.name.clone(),
            progress: Progress::default(),
            inflight: Inflight::default(),
            refresh,
            updates: self.updates.clone(),
            agent: agent.map(Arc::new),
        };
        (handler, refresh_rx)
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        let mut st = self.state.writing();
        f(&mut st);
    }
}

/// Every upstream, and the catalog built from them.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

struct Inner {
    list: Vec<Arc<Upstream>>,
    separator: String,
    /// The gateway's own tools, in every catalog.
    builtins: Vec<catalog::Builtin>,
    catalog: watch::Sender<Arc<Catalog>>,
    schemas: SchemaCache,
    /// Pins set by admins (see `catalog::Pins`).
    pins: RwLock<Arc<catalog::Pins>>,
    rebuild: tokio::sync::Mutex<()>,
    /// How many upstreams have finished their first connection attempt.
    attempted: watch::Sender<usize>,
    subscriptions: Subscriptions,
    shutdown: CancellationToken,
    /// The supervisors, so shutdown can wait until each has closed its
    /// connection (and ended a stdio upstream's process group).
    supervisors: tokio_util::task::TaskTracker,
}

impl Upstreams {
    /// Creates the pool and starts one supervisor per manifest. Returns at once.
    pub fn start(
        manifests: Vec<Manifest>,
        separator: String,
        builtins: Vec<catalog::Builtin>,
        pins: catalog::Pins,
        shutdown: CancellationToken,
    ) -> Upstreams {
        let subscriptions = Subscriptions::default();
        let list: Vec<Arc<Upstream>> = manifests
            .into_iter()
            .enumerate()
            .map(|(index, manifest)| {
                Arc::new(Upstream {
                    index,
                    name: Arc::from(manifest.name.as_str()),
                    live: RwLock::new(Arc::new(manifest.clone())),
                    manifest,
                    state: RwLock::new(State {
                        conn: None,
                        listing: None,
                        health: Health::Starting,
                        protocol: None,
                        connections: 0,
                        since: SystemTime::now(),
                        attempted: false,
                    }),
                    updates: subscriptions.publisher(),
                    seats: seats::Seats::default(),
                })
            })
            .collect();
        let schemas = SchemaCache::default();
        // Until an upstream is listed, the catalog holds the gateway's own tools.
        let none: Vec<Option<Arc<Listing>>> = vec![None; list.len()];
        let manifests: Vec<Manifest> = list.iter().map(|u| u.manifest.clone()).collect();
        // (At start the live manifest is the connection's.)
        let first = catalog::build(&manifests, &separator, &none, &builtins, &schemas, &pins);
        let (catalog, _) = watch::channel(Arc::new(first));
        let pool = Upstreams {
            inner: Arc::new(Inner {
                list,
                separator,
                builtins,
                catalog,
                schemas,
                pins: RwLock::new(Arc::new(pins)),
                rebuild: Default::default(),
                attempted: watch::channel(0).0,
                subscriptions,
                shutdown,
                supervisors: tokio_util::task::TaskTracker::new(),
            }),
        };
        for up in &pool.inner.list {
            pool.inner.supervisors.spawn(supervise(pool.clone(), up.clone()));
        }
        pool.inner.supervisors.close();
        pool
    }

    /// Waits, after shutdown, until every supervisor has closed its
    /// connection: a stdio upstream is asked to exit (its stdin closed), then
    /// sent SIGTERM, then killed, each step with rmcp's grace of 3 s, its
    /// whole process group at once. Bounded by `bound`.
    pub async fn stopped(&self, bound: Duration) {
        if tokio::time::timeout(bound, self.inner.supervisors.wait()).await.is_err() {
            tracing::warn!("upstream connections still closing after {bound:?}; exiting anyway");
        }
    }

    pub fn get(&self, index: usize) -> &Arc<Upstream> {
        &self.inner.list[index]
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.inner.subscriptions
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.inner.list
    }

    /// The upstream, not up now, whose namespace `tool` is in: its tools are
    /// not in the catalog while it is down, and an agent calling one should
    /// hear that, not "unknown tool".
    pub fn unavailable_owner(&self, tool: &str) -> Option<Status> {
        self.inner.list.iter().find_map(|u| {
            let prefix = &u.live().prefix;
            let namespaced = !prefix.is_empty()
                && tool.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with(&self.inner.separator));
            let status = u.status();
            (namespaced && status.health != Health::Up).then_some(status)
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog.borrow().clone()
    }

    /// Changes whenever the catalog is rebuilt.
    pub fn watch(&self) -> watch::Receiver<Arc<Catalog>> {
        self.inner.catalog.subscribe()
    }

    /// Puts admins' pins in force and rebuilds the catalog with them.
    pub async fn set_pins(&self, pins: catalog::Pins) {
        *self.inner.pins.writing() = Arc::new(pins);
        self.rebuild().await;
    }

    /// The admins' pins in force.
    pub fn pins(&self) -> Arc<catalog::Pins> {
        self.inner.pins.reading().clone()
    }

    /// Puts reloaded manifests' catalog settings (tool overrides, prefix,
    /// scans) in force and rebuilds the catalog. What needs a reconnect
    /// (transport, timeouts) or a restart (an upstream added or removed)
    /// is not applied; each such change is returned as a note.
    pub async fn reload_manifests(&self, manifests: &[Manifest]) -> Vec<String> {
        let mut notes = Vec::new();
        for up in &self.inner.list {
            let Some(m) = manifests.iter().find(|m| m.name == *up.name) else {
                notes.push(format!("upstream `{}` was removed from the manifests: it stays until a restart", up.name));
                continue;
            };
            if !same_connection(&up.manifest, m) {
                // Its tool settings were written for the new server: none of
                // the manifest applies to the old one still connected.
                notes.push(format!(
                    "upstream `{}`: transport, timeouts or restart settings changed: the whole manifest takes effect at the next restart",
                    up.name
                ));
                continue;
            }
            *up.live.writing() = Arc::new(m.clone());
        }
        for m in manifests.iter().filter(|m| !self.inner.list.iter().any(|u| *u.name == m.name)) {
            notes.push(format!("upstream `{}` is new: it is connected at the next restart", m.name));
        }
        for up in &self.inner.list {
            let listing = up.state.reading().listing.clone();
            if let Some(listing) = listing {
                self.warm(up, listing).await;
            }
        }
        self.rebuild().await;
        notes
    }

    /// True once every upstream has finished its first connection attempt.
    pub fn settled(&self) -> bool {
        *self.inner.attempted.borrow() >= self.inner.list.len()
    }

    /// Waits, at most `bound`, until every upstream has finished its first
    /// connection attempt, so that an agent's first list right after start-up
    /// is complete. A slow upstream delays this by at most `bound`.
    pub async fn wait_settled(&self, bound: Duration) {
        let mut rx = self.inner.attempted.subscribe();
        let n = self.inner.list.len();
        let _ = tokio::time::timeout(bound, rx.wait_for(|a| *a >= n)).await;
    }

    /// How long start-up can take: no first attempt outlasts its upstream's
    /// `connect_timeout`, so a request that arrives right after start waits
    /// at most this for the catalog to be complete (an `npx` upstream that
    /// downloads its server on a first run is given the time its manifest
    /// grants it, not a fixed guess).
    pub fn startup_bound(&self) -> Duration {
        self.inner.list.iter().map(|u| u.manifest.connect_timeout).max().unwrap_or_default() + Duration::from_secs(1)
    }

    fn first_attempt_done(&self, up: &Upstream) {
        let first = {
            let mut st = up.state.writing();
            !std::mem::replace(&mut st.attempted, true)
        };
        if first {
            self.inner.attempted.send_modify(|a| *a += 1);
        }
    }

    /// Compiles a new listing's schemas on this upstream's own time, before the
    /// shared rebuild, so a slow or hostile schema delays only its upstream.
    async fn warm(&self, up: &Upstream, listing: Arc<Listing>) {
        let pool = self.clone();
        let manifest = (*up.live()).clone();
        let _ = tokio::task::spawn_blocking(move || pool.inner.schemas.warm(&manifest, &listing)).await;
    }

    async fn rebuild(&self) {
        let _serial = self.inner.rebuild.lock().await;
        let manifests: Vec<Manifest> = self.inner.list.iter().map(|u| (*u.live()).clone()).collect();
        let listings: Vec<Option<Arc<Listing>>> =
            self.inner.list.iter().map(|u| u.state.reading().listing.clone()).collect();
        let pool = self.clone();
        let pins = self.inner.pins.reading().clone();
        // Schema compilation is CPU work with its own time bound: keep it off the reactor.
        let built = tokio::task::spawn_blocking(move || {
            let inner = &pool.inner;
            catalog::build(&manifests, &inner.separator, &listings, &inner.builtins, &inner.schemas, &pins)
        })
        .await;
        match built {
            Ok(cat) => {
                self.inner.catalog.send_replace(Arc::new(cat));
            }
            // The runtime is shutting down: nothing to keep.
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                tracing::error!(error = %e, "catalog build failed; keeping the previous catalog")
            }
        }
    }
}

/// Whether two manifests connect the same way (compared in memory only:
/// secrets are compared, never shown).
fn same_connection(a: &Manifest, b: &Manifest) -> bool {
    let pairs = |p: &[(String, crate::config::Secret)]| -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect()
    };
    let transport = match (&a.transport, &b.transport) {
        (crate::config::Transport::Stdio(x), crate::config::Transport::Stdio(y)) => {
            x.command == y.command && x.args == y.args && x.cwd == y.cwd && pairs(&x.env) == pairs(&y.env)
        }
        (crate::config::Transport::Http(x), crate::config::Transport::Http(y))
        | (crate::config::Transport::Sse(x), crate::config::Transport::Sse(y))
        | (crate::config::Transport::Ws(x), crate::config::Transport::Ws(y)) => {
            x.url.expose() == y.url.expose() && pairs(&x.headers) == pairs(&y.headers)
        }
        _ => false,
    };
    transport
        && a.connect_timeout == b.connect_timeout
        && a.call_timeout == b.call_timeout
        && (a.restart.initial, a.restart.max) == (b.restart.initial, b.restart.max)
}

/// A connection that stays up this long resets the restart backoff.
const STABLE: Duration = Duration::from_secs(30);

async fn supervise(pool: Upstreams, up: Arc<Upstream>) {
    let m = &up.manifest;
    let mut backoff = m.restart.initial;
    let shutdown = pool.inner.shutdown.clone();
    loop {
        let (handler, mut refresh_rx) = up.handler_for(None);
        let (progress, inflight, refresh_tx) =
            (handler.progress.clone(), handler.inflight.clone(), handler.refresh.clone());
        let attempt = async {
            let opened = connect::open(&up.name, &m.transport, handler).await?;
            let listing = list(opened.service.peer()).await.map_err(|e| ConnectError::Listing(e.to_string()))?;
            Ok::<_, ConnectError>((opened, listing))
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(m.connect_timeout, attempt) => r.unwrap_or_else(|_| Err(ConnectError::Timeout(m.connect_timeout))),
        };
        match outcome {
            Ok((connect::Opened { service, group: _group }, listing)) => {
                let peer = service.peer().clone();
                let protocol = service.peer_info().map(|i| i.protocol_version.clone());
                tracing::info!(upstream = %up.name, protocol = ?protocol.as_ref().map(|p| p.as_str().to_string()), tools = listing.tools.len(), "upstream connected");
                let listing = Arc::new(listing);
                pool.warm(&up, listing.clone()).await;
                up.set(|st| {
                    st.conn = Some(Arc::new(Conn { peer: peer.clone(), progress, inflight }));
                    st.listing = Some(listing);
                    st.health = Health::Up;
                    st.protocol = protocol;
                    st.connections += 1;
                    st.since = SystemTime::now();
                });
                pool.rebuild().await;
                pool.first_attempt_done(&up);
                let connected_at = tokio::time::Instant::now();
                let listener =
                    tokio::time::timeout(m.connect_timeout, listen_for_changes(&up.name, &peer, refresh_tx.clone()))
                        .await
                        .unwrap_or_else(|_| {
                            tracing::warn!(upstream = %up.name, "subscribing to list changes timed out");
                            None
                        });
                let ct = service.cancellation_token();
                let mut waiting = std::pin::pin!(service.waiting());
                let reason = loop {
                    tokio::select! {
                        r = &mut waiting => break format!("connection closed ({r:?})"),
                        _ = shutdown.cancelled() => {
                            // The service closes its transport as it stops:
                            // wait for that, so the process does not exit first.
                            ct.cancel();
                            let _ = (&mut waiting).await;
                            return;
                        }
                        Some(what) = refresh_rx.recv() => {
                            // Coalesce a burst of notifications into one re-list.
                            while refresh_rx.try_recv().is_ok() {}
                            match tokio::time::timeout(m.connect_timeout, list(&peer)).await {
                                Ok(Ok(listing)) => {
                                    tracing::info!(upstream = %up.name, ?what, "upstream list changed; catalog refreshed");
                                    let listing = Arc::new(listing);
                                    pool.warm(&up, listing.clone()).await;
                                    up.set(|st| st.listing = Some(listing));
                                    pool.rebuild().await;
                                }
                                Ok(Err(e)) => tracing::warn!(upstream = %up.name, error = %e, "re-listing after a change failed"),
                                Err(_) => tracing::warn!(upstream = %up.name, "re-listing after a change timed out"),
                            }
                        }
                    }
                };
                if let Some(l) = listener {
                    l.abort();
                }
                // A connection that did not stay up is a crash loop: keep backing off.
                if connected_at.elapsed() >= STABLE {
                    backoff = m.restart.initial;
                }
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!(upstream = %up.name, %reason, "upstream connection ended; reconnecting");
                up.set(|st| {
                    st.conn = None;
                    st.listing = None;
                    st.health = Health::Down { error: reason };
                    st.since = SystemTime::now();
                });
                pool.rebuild().await;
            }
            Err(error) => {
                tracing::warn!(upstream = %up.name, %error, retry_in = ?backoff, "upstream connection failed");
                let was_listed = up.state.reading().listing.is_some();
                up.set(|st| {
                    st.conn = None;
                    st.listing = None;
                    st.health = Health::Down { error: error.to_string() };
                    st.since = SystemTime::now();
                });
                if was_listed {
                    pool.rebuild().await;
                }
                pool.first_attempt_done(&up);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = backoff.saturating_mul(2).min(m.restart.max).max(Duration::from_millis(1));
    }
}

/// A 2026-07-28 upstream announces list changes only on a `subscriptions/listen`
/// stream; legacy upstreams send them on the session (see `handler`).
async fn listen_for_changes(
    name: &str,
    peer: &Peer<RoleClient>,
    refresh: mpsc::UnboundedSender<handler::Refresh>,
) -> Option<tokio::task::JoinHandle<()>> {
    use rmcp::model::{ServerNotification, SubscriptionFilter};
    let info = peer.peer_info()?;
    if !crate::protocol::is_modern(&info.protocol_version) {
        return None;
    }
    let caps = &info.capabilities;
    let mut filter = SubscriptionFilter::new();
    if caps.tools.as_ref().is_some_and(|t| t.list_changed == Some(true)) {
        filter.tools_list_changed = Some(true);
    }
    if caps.prompts.as_ref().is_some_and(|p| p.list_changed == Some(true)) {
        filter.prompts_list_changed = Some(true);
    }
    if caps.resources.as_ref().is_some_and(|r| r.list_changed == Some(true)) {
        filter.resources_list_changed = Some(true);
    }
    if filter == SubscriptionFilter::new() {
        return None;
    }
    let mut sub = match peer.listen(filter).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(upstream = %name, error = %e, "cannot subscribe to list changes");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(Some(n)) = sub.next().await {
            let what = match n {
                ServerNotification::ToolListChangedNotification(_) => handler::Refresh::Tools,
                ServerNotification::PromptListChangedNotification(_) => handler::Refresh::Prompts,
                ServerNotification::ResourceListChangedNotification(_) => handler::Refresh::Resources,
                _ => continue,
            };
            if refresh.send(what).is_err() {
                return;
            }
        }
    }))
}

/// Everything the upstream offers, following pagination.
async fn list(peer: &Peer<RoleClient>) -> Result<Listing, ServiceError> {
    let caps = peer.peer_info().map(|i| i.capabilities.clone()).unwrap_or_default();
    let tools = if caps.tools.is_some() { peer.list_all_tools().await? } else { Vec::new() };
    let prompts = if caps.prompts.is_some() { peer.list_all_prompts().await? } else { Vec::new() };
    let (resources, templates) = if caps.resources.is_some() {
        (peer.list_all_resources().await?, peer.list_all_resource_templates().await?)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Listing { tools, prompts, resources, templates })
}
