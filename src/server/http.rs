//! The HTTP edge: `/mcp` (Streamable HTTP, both protocol eras, served by
//! rmcp), `/ws` (MCP over WebSocket), `/healthz`, `/readyz` and `/metrics`,
//! with the admin, approvals and OpenAI-compatible routers merged in.
//!
//! In front of rmcp sits [`guard`]: `Origin` validation, a body cap enforced
//! before buffering past it, and strict JSON checks (depth, duplicate keys,
//! no batches). A refused request gets a well-formed JSON-RPC error and never
//! reaches a handler.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, Method, StatusCode, header};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServiceExt};
use serde_json::json;

use super::handler::Session;
use super::session_cap::{Full, SessionCap};
use super::strict_json::{self, Rejection};
use crate::config;
use crate::gateway::Gateway;
use crate::identity::{self, AuthError, Principal};
use crate::pipeline;

#[derive(Clone)]
struct Edge {
    gw: Gateway,
    allowed_origins: Arc<Vec<String>>,
    limits: config::Limits,
    /// Whether requests must carry a live key. Only the benchmark's
    /// ungoverned baseline turns this off.
    identify: bool,
    /// Open legacy sessions and WebSocket connections, per key and in total.
    sessions: SessionCap,
}

/// The whole HTTP surface, ready to serve; tests drive it without a socket.
pub fn router(gw: Gateway, server: &config::Server) -> Router {
    let factory_gw = gw.clone();
    build(gw, server, true, move || Session::new(factory_gw.clone()))
}

/// `/mcp` with the same edge checks but no identify stage, serving `handler`:
/// the benchmark's ungoverned proxy baseline (BENCHMARKS.md). Not used by
/// the gateway itself.
#[doc(hidden)]
pub fn ungoverned_router<H: rmcp::ServerHandler + Clone + Send + Sync + 'static>(
    gw: Gateway,
    server: &config::Server,
    handler: H,
) -> Router {
    build(gw, server, false, move || handler.clone())
}

fn build<H: rmcp::ServerHandler + Send + Sync + 'static>(
    gw: Gateway,
    server: &config::Server,
    identify: bool,
    make: impl Fn() -> H + Send + Sync + 'static,
) -> Router {
    let edge = Edge {
        gw: gw.clone(),
        allowed_origins: Arc::new(server.allowed_origins.clone()),
        limits: server.limits,
        identify,
        sessions: SessionCap::new(server.limits.max_sessions_per_key, server.limits.max_sessions),
    };
    // An idle legacy session is closed after `session_idle` (rmcp's default is
    // five minutes): an abandoned one holds its worker and handler until then.
    let mut session_manager = LocalSessionManager::default();
    session_manager.session_config.keep_alive = Some(server.limits.session_idle);
    let mcp = StreamableHttpService::new(
        move || Ok(make()),
        Arc::new(session_manager),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(server.allowed_hosts.clone())
            .with_max_request_body_bytes(server.limits.max_body_bytes)
            // A call that emits nothing before its result is answered as plain
            // JSON; one that sends progress first falls back to SSE.
            .with_json_response(true)
            .with_cancellation_token(gw.shutdown.child_token()),
    );
    let guarded = tower::ServiceBuilder::new().layer(middleware::from_fn_with_state(edge.clone(), guard)).service(mcp);
    let metrics = if gw.serve_metrics {
        Router::new().route("/metrics", get(super::metrics::scrape)).with_state(gw.clone())
    } else {
        Router::new()
    };
    Router::new()
        .route_service("/mcp", guarded)
        .route("/ws", get(websocket))
        .nest_service("/admin/v1", super::admin::router(gw.clone()))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(edge)
        .merge(super::approvals::router(gw.clone()))
        .merge(super::openai::router(gw))
        .merge(metrics)
}

/// Connections the kernel completes and queues before tollgate accepts them.
/// tokio's `TcpListener::bind` asks for 1,024: a burst of more simultaneous
/// connects (2,000 agents starting at once) leaves the rest retrying their
/// SYN after one second, three, seven. The kernel caps this at
/// `net.core.somaxconn` (4,096 on current Linux).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // A restarted gateway can bind while the old one's connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small JSON-RPC responses must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // A `Router` given to `axum::serve` as is deep-copies its route table for
    // every connection; as a make-service it is shared (an `Arc` clone).
    let router = router.with_state(()).into_make_service();
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn guard(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    if let Some(refused) = refuse_origin(request.headers(), &edge.allowed_origins) {
        return refused;
    }
    // identify: every request, so a revoked key stops working at once, on
    // open sessions too. Before the body is read: strangers get nothing buffered.
    let mut request = request;
    if edge.identify {
        let started = std::time::Instant::now();
        match authenticate(&edge.gw, request.headers()).await {
            Ok(p) => request.extensions_mut().insert(p),
            Err(refused) => return refused,
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        request.extensions_mut().insert(identity::AuthMicros(micros));
    }
    if request.method() == Method::DELETE {
        // rmcp answers a session's end with 202; clients read 200 or 204 as
        // done (the Python SDK logs "Session termination failed: 202" at
        // every close otherwise).
        let mut response = next.run(request).await;
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::OK;
        }
        return response;
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let limit = edge.limits.max_body_bytes;
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_BYTES) as u64) {
        // Too large to drain politely: refuse without reading.
        return too_large(limit);
    }
    let (parts, body) = request.into_parts();
    let bytes = match read_capped(body, limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(limit),
        Err(BodyError::Unreadable) => {
            return rpc_error(StatusCode::BAD_REQUEST, -32700, "could not read the request body");
        }
    };
    let message = match strict_json::message(&bytes, edge.limits.max_json_depth) {
        Ok(m) => m,
        Err(Rejection::Parse(m)) => {
            return rpc_error(StatusCode::BAD_REQUEST, -32700, &format!("parse error: {m}"));
        }
        Err(Rejection::Invalid(m)) => {
            return rpc_error(StatusCode::BAD_REQUEST, -32600, &format!("invalid request: {m}"));
        }
    };
    let mut parts = parts;
    // An `initialize` without a session id opens a legacy session: it takes a
    // place under the session caps, which the session keeps (handler.rs).
    if message.method.as_deref() == Some("initialize") && !parts.headers.contains_key("mcp-session-id") {
        let key = parts.extensions.get::<Principal>().map(|p| p.key_id.clone());
        if let Some(key) = key {
            match edge.sessions.take(&key) {
                Ok(slot) => {
                    parts.extensions.insert(slot);
                }
                Err(full) => return session_refused(&full),
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// JSON-RPC code of a session refused by the caps (implementation-defined
/// server error range).
pub const TOO_MANY_SESSIONS: i64 = -32005;

fn session_refused(full: &Full) -> Response {
    let status = match full {
        Full::Key(_) => StatusCode::TOO_MANY_REQUESTS,
        Full::Total(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    rpc_error(status, TOO_MANY_SESSIONS, &full.to_string())
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// How much of an oversize body is read and discarded after the cap, so the
/// 413 is not destroyed by a TCP reset (closing a socket with unread data
/// resets it, and the client may lose the response). Nothing past the cap is kept.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads at most `limit` bytes of `body`; a larger body is an error, raised
/// before anything past the cap is buffered.
async fn read_capped(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut over = false;
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let frame = if over {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(f) => f,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else {
            return Err(if over { BodyError::TooLarge } else { BodyError::Unreadable });
        };
        let Ok(data) = frame.into_data() else { continue };
        if over {
            drained += data.len();
            if drained > DRAIN_BYTES {
                break;
            }
        } else if kept.len() + data.len() > limit {
            over = true;
            kept = bytes::BytesMut::new();
        } else {
            kept.extend_from_slice(&data);
        }
    }
    if over { Err(BodyError::TooLarge) } else { Ok(kept.freeze()) }
}

fn too_large(limit: usize) -> Response {
    rpc_error(StatusCode::PAYLOAD_TOO_LARGE, -32600, &format!("request body is larger than {limit} bytes"))
}

/// A JSON-RPC error response with no request id (the request was not read as one).
pub fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

/// A present `Origin` must be allowed; requests without one (non-browser clients) pass.
fn refuse_origin(headers: &HeaderMap, allowed: &[String]) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| origin_matches(a, origin)) {
        return None;
    }
    Some(rpc_error(StatusCode::FORBIDDEN, -32600, &format!("origin `{origin}` is not allowed")))
}

/// `pattern` is an origin (`https://app.example.com:8443`) or one with any port (`http://localhost:*`).
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.strip_suffix(":*") {
        Some(base) => {
            origin == base
                || origin.strip_prefix(base).is_some_and(|rest| {
                    rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
        }
        None => pattern == origin,
    }
}

async fn websocket(State(edge): State<Edge>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if let Some(refused) = refuse_origin(&headers, &edge.allowed_origins) {
        return refused;
    }
    let principal = match authenticate(&edge.gw, &headers).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    // A WebSocket connection is a session: it holds its place until it closes.
    let slot = match edge.sessions.take(&principal.key_id) {
        Ok(s) => s,
        Err(full) => return session_refused(&full),
    };
    let gw = edge.gw.clone();
    ws.max_message_size(edge.limits.max_body_bytes).on_upgrade(move |socket| async move {
        let _slot = slot;
        let max_depth = edge.limits.max_json_depth;
        let transport =
            crate::ws::axum_socket::<RoleServer>(socket, move |frame| match strict_json::message(frame, max_depth) {
                Ok(_) => Ok(()),
                Err(Rejection::Parse(m)) => Err((-32700, format!("parse error: {m}"))),
                Err(Rejection::Invalid(m)) => Err((-32600, format!("invalid request: {m}"))),
            });
        match Session::authenticated(gw, principal, "ws").serve(transport).await {
            Ok(service) => {
                let _ = service.waiting().await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket session ended during its handshake")
            }
        }
    })
}

/// The principal of the request's bearer key, or the 401 to answer.
async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Principal, Response> {
    let secret = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(identity::bearer);
    let result = match secret {
        Some(s) => gw.authenticate(s).await,
        None => Err(AuthError::Missing),
    };
    result.map_err(|e| {
        if let AuthError::Store(e) = &e {
            tracing::error!("cannot check an API key: {e}");
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, -32603, "the key store is unavailable");
        }
        let mut r =
            rpc_error(StatusCode::UNAUTHORIZED, i64::from(pipeline::UNAUTHORIZED.0), &format!("unauthorized: {e}"));
        r.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        r
    })
}

async fn readyz(State(edge): State<Edge>) -> Response {
    let upstreams: Vec<_> = edge.gw.upstreams.all().iter().map(|u| u.status()).collect();
    let ready = edge.gw.upstreams.settled();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let policy = edge.gw.policies.status();
    // Serving, but not everything: a load balancer keeps routing (the other
    // upstreams work), a person sees which are down and why.
    let down: Vec<&str> = upstreams
        .iter()
        .filter(|u| matches!(u.health, crate::upstream::Health::Down { .. }))
        .map(|u| u.name.as_str())
        .collect();
    let state = match (ready, down.is_empty()) {
        (false, _) => "starting",
        (true, true) => "ready",
        (true, false) => "degraded",
    };
    let body = json!({
        "ready": ready,
        "status": state,
        "upstreams_down": down,
        "upstreams": upstreams,
        "policy": {"version": policy.version, "last_error": policy.last_error},
        "store": edge.gw.store.status(),
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    /// A burst of connects larger than tokio's default backlog (1,024) is
    /// completed by the kernel while nothing accepts yet.
    #[tokio::test]
    async fn a_burst_of_connections_larger_than_the_default_backlog_is_queued() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..1200).map(|_| tokio::net::TcpStream::connect(addr));
        // Past a full backlog a SYN is dropped, and since nothing accepts here
        // its retries (after 1, 3, 7, 15 s) are dropped too: such a connect
        // never completes. A deadline far beyond a slow machine's connect time.
        let all = tokio::time::timeout(std::time::Duration::from_secs(20), futures::future::join_all(connects));
        let done = all.await.expect("every connect was queued by the kernel");
        assert!(done.iter().all(Result::is_ok));
        drop(listener);
    }

    #[test]
    fn origins_match_exactly_or_by_any_port() {
        assert!(origin_matches("http://localhost:*", "http://localhost:3000"));
        assert!(origin_matches("http://localhost:*", "http://localhost"));
        assert!(!origin_matches("http://localhost:*", "http://localhost.evil.com"));
        assert!(!origin_matches("http://localhost:*", "http://localhost:3000x"));
        assert!(origin_matches("https://app.example.com", "https://app.example.com"));
        assert!(!origin_matches("https://app.example.com", "http://app.example.com"));
    }
}
