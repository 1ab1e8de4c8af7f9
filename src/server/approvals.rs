//! `/v1/approvals`: the approvers' side of the queue, and the approvals page.
//!
//! - `GET /v1/approvals?status=pending&limit=N`, `GET /v1/approvals/{id}`,
//!   `GET /v1/approvals/{id}/deliveries`: keys with role approver, admin or
//!   auditor, own org only.
//! - `POST /v1/approvals/{id}/decision` `{"decision","reason","approver"?}`
//!   (and `/approve`, `/deny` with `{"reason"}`): an approver or admin key
//!   of the action's org, or a body signed with the route's webhook secret
//!   (`Tollgate-Signature`, within 5 minutes, each signature once). A signed
//!   body must also carry `"id"` (this action's) and `"decision"`, on
//!   `/approve` and `/deny` too, since the signature covers only the body:
//!   without them it could be delivered to another action or verdict. The
//!   signature is verified, then the body checked, and only then is the
//!   signature spent, so a refused callback can still be delivered rightly.
//! - `GET /v1/approvals/stream`: WebSocket feed of the org's actions as they
//!   appear and change. Browsers, which cannot set headers on a WebSocket,
//!   pass the key as the subprotocol `bearer.<key>` beside `tollgate.v1`.
//! - `GET /approvals`: the page (static HTML and script; it calls the API
//!   with the key the approver types in, so there is no cookie to forge a
//!   request with, and no GET decides anything).
//!
//! Another org's action answers 404, as if it did not exist.

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::admin::wire::{caller, caller_of, error};
use crate::approval::Status;
use crate::approval::{Verdict, webhook};
use crate::gateway::Gateway;
use crate::identity::{Principal, Role};
use crate::ids::ApprovalId;
use crate::store::{ApprovalRow, Transitioned};

/// Largest decision body read.
const MAX_BODY: usize = 64 * 1024;
const READERS: &[Role] = &[Role::Approver, Role::Admin, Role::Auditor];
const DECIDERS: &[Role] = &[Role::Approver, Role::Admin];
const SUBPROTOCOL: &str = "tollgate.v1";

pub fn router(gw: Gateway) -> axum::Router {
    axum::Router::new()
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/stream", get(stream))
        .route("/v1/approvals/{id}", get(one))
        .route("/v1/approvals/{id}/deliveries", get(deliveries))
        .route("/v1/approvals/{id}/decision", post(decision))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/approvals", get(page))
        .route("/approvals/app.js", get(script))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(gw)
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!("approvals: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable")
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", &format!("no approval `{}`", crate::audit::record::bounded(id, 64)))
}

/// The action, if it exists and belongs to the caller's org.
async fn own(gw: &Gateway, id: &str, p: &Principal) -> Result<ApprovalRow, Response> {
    match gw.approvals.get(&ApprovalId::from(id)).await {
        Ok(Some(row)) if row.org == p.org => Ok(row),
        Ok(_) => Err(not_found(id)),
        Err(e) => Err(unavailable(e)),
    }
}

/// The query of `GET /v1/approvals` and `GET /admin/v1/approvals`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`.
    status: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

pub(super) async fn list(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = match caller(&gw, &headers, READERS).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "query: status must be a word, limit a number");
    };
    if let Some(s) = &q.status
        && Status::parse(s).is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "status: must be one of pending, approved, denied, expired, cancelled",
        );
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "limit: must be between 1 and 1000");
    }
    match gw.approvals.store().approvals(Some(&p.org), q.status.as_deref().and_then(Status::parse), limit).await {
        Ok(rows) => {
            let items: Vec<Value> = rows.iter().map(|r| gw.approvals.view(r)).collect();
            Json(json!({"approvals": items})).into_response()
        }
        Err(e) => unavailable(e),
    }
}

pub(super) async fn one(State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let p = match caller(&gw, &headers, READERS).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match own(&gw, &id, &p).await {
        Ok(row) => Json(json!({"approval": gw.approvals.view(&row)})).into_response(),
        Err(r) => r,
    }
}

async fn deliveries(State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let p = match caller(&gw, &headers, READERS).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Err(r) = own(&gw, &id, &p).await {
        return r;
    }
    match gw.approvals.store().deliveries(&id).await {
        Ok(ds) => Json(json!({"deliveries": crate::approval::webhook::deliveries_json(&ds)})).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// The action decided; required in a signed body (it binds the signature
    /// to the action), optional with a key, and then it must match the URL.
    id: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    /// Who decided, as the approver's system names them (signed callbacks only).
    approver: Option<String>,
}

pub(super) async fn decision(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(&gw, &headers, &id, &body, None).await
}

async fn approve(State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    decide(&gw, &headers, &id, &body, Some(Verdict::Approve)).await
}

async fn deny(State(gw): State<Gateway>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    decide(&gw, &headers, &id, &body, Some(Verdict::Deny)).await
}

async fn decide(gw: &Gateway, headers: &HeaderMap, id: &str, body: &[u8], fixed: Option<Verdict>) -> Response {
    let row = match gw.approvals.get(&ApprovalId::from(id)).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    // Who: a callback signed with the route's secret, or an approver's key.
    // A signature is verified here but spent only once the body is checked.
    let signed = headers.get(webhook::HEADER).map(|v| v.to_str().unwrap_or("").to_string());
    let (row, by, signature) = match signed {
        Some(sig) => {
            let Some(row) = row else { return not_found(id) };
            let used = match verify_signature(gw, &row, &sig, body) {
                Ok(u) => u,
                Err(e) => {
                    let code = if e == webhook::SignatureError::Stale { "stale_signature" } else { "bad_signature" };
                    return error(StatusCode::UNAUTHORIZED, code, &e.to_string());
                }
            };
            let by = format!("webhook:{}", row.route);
            (row, by, Some(used))
        }
        None => {
            let p = match caller(gw, headers, DECIDERS).await {
                Ok(p) => p,
                Err(r) => return r,
            };
            match row {
                Some(r) if r.org == p.org => {
                    let role = p.role.map_or("key", Role::as_str);
                    (r, format!("{p} ({role})"), None)
                }
                _ => return not_found(id),
            }
        }
    };
    let parsed: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody { id: None, decision: None, reason: None, approver: None }
    } else {
        match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &format!("body: {e}")),
        }
    };
    // The signature covers the body, not the URL: the body must say which
    // action and which verdict it signs.
    if signature.is_some() {
        if let Err(e) = webhook::bound(row.id.as_str(), parsed.id.as_deref(), parsed.decision.as_deref()) {
            let status = match e {
                webhook::Unbound::Missing(_) => StatusCode::BAD_REQUEST,
                webhook::Unbound::OtherAction => StatusCode::UNAUTHORIZED,
            };
            return error(status, e.code(), &e.to_string());
        }
    } else if parsed.id.as_deref().is_some_and(|b| row.id != b) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "id: names another action than the URL");
    }
    let verdict = match (fixed, parsed.decision.as_deref()) {
        (Some(v), None) => v,
        (Some(v), Some(d)) if Verdict::parse(d) == Some(v) => v,
        (None, Some(d)) if Verdict::parse(d).is_some() => Verdict::parse(d).unwrap_or(Verdict::Deny),
        (Some(v), Some(d)) if Verdict::parse(d).is_some() => {
            let (here, other) = match v {
                Verdict::Approve => ("approves", "deny"),
                Verdict::Deny => ("denies", "approve"),
            };
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("decision: the body says \"{other}\" but this URL {here}; post it to /decision or /{other}"),
            );
        }
        _ => {
            return error(StatusCode::BAD_REQUEST, "bad_request", "decision: must be \"approve\" or \"deny\"");
        }
    };
    if let Some(used) = &signature
        && let Err(r) = spend_signature(gw, used).await
    {
        return r;
    }
    let by = match parsed.approver.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) if by.starts_with("webhook:") => {
            let clean: String = a.chars().filter(|c| !c.is_control()).take(128).collect();
            format!("{by} ({clean})")
        }
        _ => by,
    };
    match gw.approvals.decide(&row.id, verdict, &by, parsed.reason).await {
        Ok(Transitioned::Done(row)) => {
            Json(json!({"decision": row.status, "approval": gw.approvals.view(&row)})).into_response()
        }
        Ok(Transitioned::Standing(row)) => {
            let (code, message) = if row.status == Status::Pending {
                ("expired", format!("approval {} expired at {}", row.id, crate::audit::rfc3339(row.expires_at)))
            } else {
                (
                    "already_decided",
                    format!(
                        "approval {} was already {} by {}",
                        row.id,
                        row.status,
                        row.decided_by.as_deref().unwrap_or("tollgate")
                    ),
                )
            };
            let status = if row.status == Status::Pending { "expired" } else { row.status.as_str() };
            let body =
                json!({"code": code, "message": message, "decision": status, "approval": gw.approvals.view(&row)});
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Ok(Transitioned::Missing) => not_found(id),
        Err(e) => unavailable(e),
    }
}

/// A signed decision's signature: by a secret of the action's route, and
/// recent. Returns the signature to spend once the body is checked.
fn verify_signature(
    gw: &Gateway,
    row: &ApprovalRow,
    sig: &str,
    body: &[u8],
) -> Result<String, webhook::SignatureError> {
    let policy = gw.policies.current();
    let secrets: Vec<&[u8]> = policy
        .route(&row.route)
        .map(|r| r.webhooks.iter().map(|w| w.secret.expose().as_bytes()).collect())
        .unwrap_or_default();
    webhook::verify(sig, body, &secrets, crate::audit::now_micros() / 1_000_000)
}

/// Records a verified signature as used: each is accepted once.
async fn spend_signature(gw: &Gateway, used: &str) -> Result<(), Response> {
    let now = crate::audit::now_micros();
    // Remembered for twice the window: an older signature is refused as stale anyway.
    let forget_before = now - webhook::WINDOW_SECS * 2 * 1_000_000;
    match gw.approvals.store().use_signature(used, now, forget_before).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(error(
            StatusCode::UNAUTHORIZED,
            "replayed_signature",
            "this signed request was already used; sign each request anew",
        )),
        Err(e) => Err(unavailable(e)),
    }
}

/// The key a WebSocket handshake carries: `Authorization`, or the
/// subprotocol `bearer.<key>` (browsers cannot set headers on a WebSocket).
fn ws_key(headers: &HeaderMap) -> Option<String> {
    if let Some(k) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::identity::bearer)
    {
        return Some(k.to_string());
    }
    let protocols = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    protocols.split(',').map(str::trim).find_map(|p| p.strip_prefix("bearer.")).map(str::to_string)
}

async fn stream(State(gw): State<Gateway>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let key = ws_key(&headers);
    let p = match caller_of(&gw, key.as_deref(), READERS).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Echo only our protocol name, never the key.
    let ws = ws.protocols([SUBPROTOCOL]).max_message_size(MAX_BODY);
    ws.on_upgrade(move |socket| feed(gw, p, socket))
}

/// Sends the org's pending actions, then every change of the org's actions.
async fn feed(gw: Gateway, p: Principal, mut socket: WebSocket) {
    let mut rx = gw.approvals.subscribe();
    let snapshot = match gw.approvals.store().approvals(Some(&p.org), Some(Status::Pending), 1000).await {
        Ok(rows) => rows.iter().map(|r| gw.approvals.view(r)).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!("approval feed snapshot: {e}");
            Vec::new()
        }
    };
    let hello = json!({"type": "snapshot", "approvals": snapshot}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(std::time::Duration::from_secs(20));
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            ev = rx.recv() => match ev {
                Ok(row) if row.org == p.org => {
                    let msg = json!({"type": "approval", "approval": gw.approvals.view(&row)}).to_string();
                    if socket.send(Message::Text(msg.into())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let msg = json!({"type": "lagged", "missed": n}).to_string();
                    if socket.send(Message::Text(msg.into())).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // The feed is one-way; anything but a close is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn page() -> Response {
    let mut r = Html(include_str!("page/approvals.html")).into_response();
    secure(r.headers_mut());
    r
}

async fn script() -> Response {
    let mut r =
        ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("page/approvals.js")).into_response();
    secure(r.headers_mut());
    r
}

/// The page runs only its own script, talks only to this origin, and is
/// never framed (no clickjacking of its approve button).
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
