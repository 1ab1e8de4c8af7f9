//! `/admin/v1` for operations: approvals, the audit trail (filters and a
//! JSON-lines export), the catalog with upstream health, and tool pins.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::approvals::ListQuery;
use super::wire::{
    ADMINS, ANY_ROLE, ErrorBody, Failure, READERS, caller, invalid, json_body, path_arg, query_arg, reply,
};
use crate::admin::Actor;
use crate::admin::pins::{self, PinView};
use crate::gateway::Gateway;
use crate::store::{AuditFilter, AuditRow};
use crate::upstream::Health;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApprovalList {
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApprovalOne {
    #[schema(value_type = Object)]
    pub approval: Value,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct DecisionBody {
    /// `approve` or `deny`.
    pub decision: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The org's pending actions (or those in another status), newest first.
#[utoipa::path(get, path = "/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, body = ApprovalList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn approvals(
    state: State<Gateway>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    super::super::approvals::list(state, headers, q).await
}

/// One action of the org.
#[utoipa::path(get, path = "/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalOne),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn approval(
    state: State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let id = path_arg(id)?;
    Ok(super::super::approvals::one(state, headers, Path(id)).await)
}

/// Approves or denies a pending action (approver or admin key). The first
/// decision wins; a later one answers 409 with the decision that stands.
#[utoipa::path(post, path = "/approvals/{id}/decision", tag = "approvals", request_body = DecisionBody,
    params(("id" = String, Path)),
    responses((status = 200, body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = Object), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn decide(
    state: State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let id = path_arg(id)?;
    // Only keys here: signed webhook callbacks use /v1/approvals.
    caller(&state.0, &headers, &[crate::identity::Role::Approver, crate::identity::Role::Admin]).await?;
    let b: DecisionBody = json_body(&headers, body).await?;
    if !matches!(b.decision.as_str(), "approve" | "deny") {
        return Err(invalid("decision", "must be \"approve\" or \"deny\""));
    }
    if b.reason.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(invalid("reason", "must be at most 4096 bytes"));
    }
    let bytes = Bytes::from(serde_json::to_vec(&b).unwrap_or_default());
    let mut headers = headers;
    headers.remove(crate::approval::webhook::HEADER);
    Ok(super::super::approvals::decision(state, headers, Path(id), bytes).await)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339 time, a date, or an age such as `24h`.
    pub since: Option<String>,
    pub until: Option<String>,
    pub tool: Option<String>,
    /// `key:<id>`.
    pub principal: Option<String>,
    /// `allowed`, `denied`, `invalid`, `failed`, ...
    pub decision: Option<String>,
    /// `call`, `grant.update`, `key.create`, ...
    pub kind: Option<String>,
    pub call_id: Option<String>,
    /// Records after this sequence number (the previous page's `next_after`).
    pub after: Option<i64>,
    /// 1 to 1000 (default 100); export: no limit unless given.
    pub limit: Option<i64>,
    /// Export only: `jsonl`.
    pub format: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The records as hashed, with `seq`, `prev_hash` and `hash`.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

fn filter(org: &str, q: &AuditQuery, default_limit: i64) -> Result<AuditFilter, Failure> {
    let time = |v: &Option<String>, f: &str| {
        v.as_deref().map(|t| crate::audit::parse_time(t).map_err(|e| invalid(f, e))).transpose()
    };
    let limit = q.limit.unwrap_or(default_limit);
    if q.limit.is_some() && !(1..=1000).contains(&limit) && default_limit != 0 {
        return Err(invalid("limit", "must be between 1 and 1000"));
    }
    if q.limit.is_some_and(|l| l < 1) {
        return Err(invalid("limit", "must be at least 1"));
    }
    Ok(AuditFilter {
        after_seq: q.after,
        since_ts: time(&q.since, "since")?,
        until_ts: time(&q.until, "until")?,
        org: Some(org.to_string()),
        principal: q.principal.clone(),
        tool: q.tool.clone(),
        decision: q.decision.clone(),
        kind: q.kind.clone(),
        call_id: q.call_id.clone(),
        limit,
    })
}

fn record_json(row: &AuditRow) -> Value {
    let mut v: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("seq".into(), Value::from(row.seq));
        m.insert("prev_hash".into(), Value::from(row.prev_hash.clone()));
        m.insert("hash".into(), Value::from(row.hash.clone()));
    }
    v
}

/// The org's audit records, oldest first, filtered and paged.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn audit(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let q = query_arg(q)?;
    let f = filter(&p.org, &q, 100)?;
    let rows = gw.store.audit(&f).await?;
    let next_after = (rows.len() as i64 == f.limit).then(|| rows.last().map(|r| r.seq)).flatten();
    Ok(reply(StatusCode::OK, AuditPage { records: rows.iter().map(record_json).collect(), next_after }))
}

/// The org's audit records as JSON lines (`application/x-ndjson`), oldest first.
#[utoipa::path(get, path = "/audit/export", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One record per line", content_type = "application/x-ndjson", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn export(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let q = query_arg(q)?;
    if q.format.as_deref().is_some_and(|f| f != "jsonl") {
        return Err(invalid("format", "only jsonl is supported"));
    }
    let f = filter(&p.org, &q, 0)?;
    const PAGE: i64 = 1000;
    let total = f.limit;
    let store = gw.store.clone();
    // Page by page: an export of millions of records holds one page at a time.
    let stream = futures::stream::unfold(Some((f, 0i64)), move |state| {
        let store = store.clone();
        async move {
            let (mut f, sent) = state?;
            let want = if total > 0 { (total - sent).min(PAGE) } else { PAGE };
            if want <= 0 {
                return None;
            }
            f.limit = want;
            match store.audit(&f).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let mut chunk = String::new();
                    for r in &rows {
                        chunk.push_str(&crate::audit::verify::export_line(r));
                        chunk.push('\n');
                    }
                    let n = rows.len() as i64;
                    f.after_seq = rows.last().map(|r| r.seq);
                    Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), Some((f, sent + n))))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogTool {
    pub name: String,
    pub upstream: String,
    pub upstream_tool: String,
    pub hash: String,
    /// The upstream's health: `up`, `starting` or `down`.
    pub health: String,
    pub description: Option<String>,
    /// What the description scan found in a definition it let through
    /// (flagged, or quarantined and then accepted by an admin).
    pub flags: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UpstreamView {
    pub name: String,
    pub transport: String,
    /// `up`, `starting` or `down`.
    pub health: String,
    pub error: Option<String>,
    pub protocol: Option<String>,
    pub restarts: u64,
    /// Upstream sessions of agents' own open now (`[agent_sessions]`).
    pub agent_sessions: u64,
    pub since: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogView {
    pub tools: Vec<CatalogTool>,
    pub quarantined: Vec<PinView>,
    pub upstreams: Vec<UpstreamView>,
}

/// The catalog with each tool's upstream and health, quarantined tools, and
/// every upstream's health.
#[utoipa::path(get, path = "/catalog", tag = "catalog",
    responses((status = 200, body = CatalogView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn catalog(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, Failure> {
    caller(&gw, &headers, ANY_ROLE).await?;
    let upstreams: Vec<UpstreamView> = gw
        .upstreams
        .all()
        .iter()
        .map(|u| {
            let s = u.status();
            let (health, error) = match &s.health {
                Health::Up => ("up", None),
                Health::Starting => ("starting", None),
                Health::Down { error } => ("down", Some(error.clone())),
            };
            UpstreamView {
                name: s.name,
                transport: s.transport.to_string(),
                health: health.into(),
                error,
                protocol: s.protocol,
                restarts: s.restarts,
                agent_sessions: s.agent_sessions as u64,
                since: crate::audit::rfc3339(
                    s.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64),
                ),
            }
        })
        .collect();
    let health_of = |name: &str| upstreams.iter().find(|u| u.name == name).map_or("up", |u| u.health.as_str());
    let cat = gw.upstreams.catalog();
    let tools = cat
        .tools()
        .iter()
        .map(|t| CatalogTool {
            name: t.name.clone(),
            upstream: t.upstream_name.to_string(),
            upstream_tool: t.upstream_tool.clone(),
            hash: t.hash.clone(),
            health: health_of(&t.upstream_name).to_string(),
            description: t.tool.description.as_ref().map(|d| d.to_string()),
            flags: t.flags.iter().map(ToString::to_string).collect(),
        })
        .collect();
    let quarantined = pins::list(&gw.admin).into_iter().filter(|p| p.state == "quarantined").collect();
    Ok(reply(StatusCode::OK, CatalogView { tools, quarantined, upstreams }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PinList {
    pub pins: Vec<PinView>,
}

#[derive(Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// The definition hash the admin reviewed; refused (409) if the tool changed since.
    #[serde(default)]
    pub hash: Option<String>,
}

/// Every tool with its definition hash and pin (quarantined ones too).
#[utoipa::path(get, path = "/pins", tag = "pins",
    responses((status = 200, body = PinList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn pins(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, Failure> {
    caller(&gw, &headers, READERS).await?;
    Ok(reply(StatusCode::OK, PinList { pins: pins::list(&gw.admin) }))
}

/// Accepts a tool's current definition: pins it to its hash, which releases a
/// quarantined ("rug pull") tool. Audited.
#[utoipa::path(post, path = "/pins/{tool}/accept", tag = "pins", request_body(content = AcceptBody, description = "Optional"),
    params(("tool" = String, Path)),
    responses((status = 200, body = PinView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn accept(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    tool: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let tool = path_arg(tool)?;
    let empty = headers.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
        || (headers.get(header::CONTENT_LENGTH).is_none() && headers.get(header::CONTENT_TYPE).is_none());
    let b: AcceptBody = if empty { AcceptBody::default() } else { json_body(&headers, body).await? };
    let view = pins::accept(&gw.admin, &Actor::of(&p), &tool, b.hash.as_deref()).await?;
    Ok(reply(StatusCode::OK, view))
}

/// Removes a tool's pin, the manifest's included: any definition is accepted
/// until it is pinned again. Audited.
#[utoipa::path(delete, path = "/pins/{tool}", tag = "pins", params(("tool" = String, Path)),
    responses((status = 200, body = PinView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unpin(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    tool: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let tool = path_arg(tool)?;
    let view = pins::unpin(&gw.admin, &Actor::of(&p), &tool).await?;
    Ok(reply(StatusCode::OK, view))
}
