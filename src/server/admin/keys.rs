//! `/admin/v1/keys` (secrets shown once, at creation) and `/admin/v1/teams`
//! (the teams of the org's keys, with their keys and budgets).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::wire::{ADMINS, ErrorBody, Failure, READERS, caller, invalid, json_body, path_arg, reply};
use crate::admin::AdminError;
use crate::audit::{now_micros, record, rfc3339};
use crate::gateway::Gateway;
use crate::identity::{self, Role};
use crate::store::KeyRow;

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub org: String,
    pub team: String,
    /// `admin`, `approver`, `auditor`, or absent for an agent key.
    pub role: Option<String>,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// `live` or `revoked`.
    pub state: String,
}

impl KeyView {
    fn of(k: &KeyRow) -> KeyView {
        KeyView {
            id: k.id.clone(),
            org: k.org.clone(),
            team: k.team.clone(),
            role: k.role.clone(),
            label: k.label.clone(),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
            state: if k.revoked_at.is_some() { "revoked" } else { "live" }.into(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NewKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret: shown this once, never stored.
    pub secret: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    pub team: String,
    /// `admin`, `approver` or `auditor`; omit for an agent key.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
}

/// The org's keys, never their secrets.
#[utoipa::path(get, path = "/keys", tag = "keys",
    responses((status = 200, body = KeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let keys = gw.store.list_keys(Some(&p.org)).await?;
    Ok(reply(StatusCode::OK, KeyList { keys: keys.iter().map(KeyView::of).collect() }))
}

/// Creates a key in the caller's org; the answer holds its secret, once.
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = NewKeyBody,
    responses((status = 201, body = NewKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let b: NewKeyBody = json_body(&headers, body).await?;
    if !identity::valid_name(&b.team) {
        return Err(invalid("team", "must be 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    let role = match b.role.as_deref() {
        None | Some("agent") => None,
        Some(r) => Some(Role::parse(r).ok_or_else(|| invalid("role", "must be admin, approver, auditor or agent"))?),
    };
    if b.label.as_ref().is_some_and(|l| l.len() > 256 || l.chars().any(char::is_control)) {
        return Err(invalid("label", "must be at most 256 characters, without control characters"));
    }
    let key = identity::create_key(&gw.store, &p.org, &b.team, role, b.label.as_deref(), now_micros()).await?;
    let detail = json!({"key": key.row.id, "team": b.team, "role": role.map(Role::as_str), "label": b.label});
    gw.store.append_audit(&[record::change("key.create", Some(&p.org), &p.to_string(), detail)]).await?;
    Ok(reply(StatusCode::CREATED, NewKey { key: KeyView::of(&key.row), secret: key.secret }))
}

async fn own_key(gw: &Gateway, org: &str, id: &str) -> Result<KeyRow, Failure> {
    match gw.store.key_by_id(id).await? {
        Some(k) if k.org == org => Ok(k),
        _ => Err(AdminError::NotFound(format!("no key `{}`", record::bounded(id, 64))).into()),
    }
}

/// One key of the org.
#[utoipa::path(get, path = "/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn one(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let id = path_arg(id)?;
    Ok(reply(StatusCode::OK, KeyView::of(&own_key(&gw, &p.org, &id).await?)))
}

/// Revokes a key: it stops working at once, on open sessions too.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, body = KeyView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn revoke(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let id = path_arg(id)?;
    let key = own_key(&gw, &p.org, &id).await?;
    if key.id == p.key_id {
        return Err(AdminError::Conflict { message: "a key cannot revoke itself".into(), file: None }.into());
    }
    if !gw.store.revoke_key(&key.id, now_micros()).await? {
        return Err(AdminError::Conflict { message: format!("key `{}` is already revoked", key.id), file: None }.into());
    }
    gw.store
        .append_audit(&[record::change("key.revoke", Some(&p.org), &p.to_string(), json!({"key": key.id}))])
        .await?;
    Ok(reply(StatusCode::OK, KeyView::of(&own_key(&gw, &p.org, &id).await?)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeamView {
    pub name: String,
    pub keys: usize,
    pub live_keys: usize,
    /// Budget ids scoped to this team.
    pub budgets: Vec<String>,
    /// Grant ids that name this team.
    pub grants: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeamList {
    pub teams: Vec<TeamView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeamDetail {
    #[serde(flatten)]
    pub team: TeamView,
    pub members: Vec<KeyView>,
}

async fn teams_of(gw: &Gateway, org: &str) -> Result<(Vec<TeamView>, Vec<KeyRow>), Failure> {
    let keys = gw.store.list_keys(Some(org)).await?;
    let mut names: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for k in &keys {
        let e = names.entry(k.team.clone()).or_default();
        e.0 += 1;
        if k.revoked_at.is_none() {
            e.1 += 1;
        }
    }
    let policy = gw.policies.current();
    for g in policy.grants.iter().filter(|g| g.org.as_deref().is_none_or(|o| o == org)) {
        for pr in &g.principals {
            if let crate::policy::PrincipalRef::Team(t) = pr {
                names.entry(t.clone()).or_default();
            }
        }
    }
    let budgets = gw.store.budget_usage(Some(org), gw.ledger.now(), crate::calendar::period_start).await?;
    let teams = names
        .into_iter()
        .map(|(name, (keys, live_keys))| {
            let scope = crate::policy::PrincipalRef::Team(name.clone());
            TeamView {
                budgets: budgets
                    .iter()
                    .filter(|u| u.budget.scope == format!("team:{name}") && u.budget.org.as_deref() == Some(org))
                    .map(|u| u.budget.id.clone())
                    .collect(),
                grants: policy
                    .grants
                    .iter()
                    .filter(|g| g.org.as_deref().is_none_or(|o| o == org) && g.principals.contains(&scope))
                    .map(|g| g.id.clone())
                    .collect(),
                name,
                keys,
                live_keys,
            }
        })
        .collect();
    Ok((teams, keys))
}

/// The org's teams: those its keys belong to and those its grants name.
#[utoipa::path(get, path = "/teams", tag = "teams",
    responses((status = 200, body = TeamList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn teams(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    Ok(reply(StatusCode::OK, TeamList { teams: teams_of(&gw, &p.org).await?.0 }))
}

/// One team with its keys (never their secrets).
#[utoipa::path(get, path = "/teams/{name}", tag = "teams", params(("name" = String, Path)),
    responses((status = 200, body = TeamDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn team(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let name = path_arg(name)?;
    let (teams, keys) = teams_of(&gw, &p.org).await?;
    let team = teams
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| AdminError::NotFound(format!("no team `{}`", record::bounded(&name, 64))))?;
    let members = keys.iter().filter(|k| k.team == name).map(KeyView::of).collect();
    Ok(reply(StatusCode::OK, TeamDetail { team, members }))
}
