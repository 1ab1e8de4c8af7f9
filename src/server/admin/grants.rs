//! `/admin/v1/grants`: list, read, create, replace (`If-Match`), delete
//! (`If-Match`), revisions. Grants from policy files are listed read-only;
//! changing one answers 409 `read_only` naming the file.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::wire::{ADMINS, ErrorBody, Failure, READERS, caller, json_body, path_arg, reply};
use crate::admin::grants::{self as domain, GrantView, RevisionView};
use crate::admin::{Actor, AdminError};
use crate::gateway::Gateway;
use crate::policy::spec::GrantSpec;

#[derive(Serialize, utoipa::ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevisionList {
    pub grant: String,
    pub revisions: Vec<RevisionView>,
}

fn with_etag(status: StatusCode, view: GrantView) -> Response {
    let etag = view.etag.clone();
    let mut r = reply(status, view);
    if let Ok(v) = header::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, Failure> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.to_string())),
            _ => Err(super::wire::invalid("If-Match", "must be an ETag such as \"3\", or *")),
        },
    }
}

/// The grants that concern the caller's org: the policy files' (read-only) and the API's.
#[utoipa::path(get, path = "/grants", tag = "grants",
    responses(
        (status = 200, body = GrantList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    Ok(reply(StatusCode::OK, GrantList { grants: domain::list(&gw.admin, &p.org).await? }))
}

/// Creates a grant in the caller's org. It is in force for the next call on every session.
#[utoipa::path(post, path = "/grants", tag = "grants", request_body = GrantSpec,
    responses(
        (status = 201, body = GrantView, headers(("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let spec: GrantSpec = json_body(&headers, body).await?;
    if spec.id.is_empty() {
        return Err(AdminError::invalid("id", "is required").into());
    }
    let view = domain::create(&gw.admin, &Actor::of(&p), spec).await?;
    let location = format!("/admin/v1/grants/{}", view.spec.id);
    let mut r = with_etag(StatusCode::CREATED, view);
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// One grant, with its ETag.
#[utoipa::path(get, path = "/grants/{id}", tag = "grants",
    params(("id" = String, Path, description = "The grant id")),
    responses(
        (status = 200, body = GrantView, headers(("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn one(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let id = path_arg(id)?;
    Ok(with_etag(StatusCode::OK, domain::get(&gw.admin, &p.org, &id).await?))
}

/// Replaces an API grant. With `If-Match`, only if it is still at that ETag (else 412).
#[utoipa::path(put, path = "/grants/{id}", tag = "grants", request_body = GrantSpec,
    params(("id" = String, Path, description = "The grant id"),
           ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")),
    responses(
        (status = 200, body = GrantView, headers(("ETag" = String))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn replace(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let id = path_arg(id)?;
    let if_match = if_match(&headers)?;
    let spec: GrantSpec = json_body(&headers, body).await?;
    let view = domain::replace(&gw.admin, &Actor::of(&p), &id, spec, if_match.as_deref()).await?;
    Ok(with_etag(StatusCode::OK, view))
}

/// Deletes an API grant. With `If-Match`, only if it is still at that ETag (else 412).
#[utoipa::path(delete, path = "/grants/{id}", tag = "grants",
    params(("id" = String, Path, description = "The grant id"),
           ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn remove(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let id = path_arg(id)?;
    let if_match = if_match(&headers)?;
    domain::delete(&gw.admin, &Actor::of(&p), &id, if_match.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every revision of an API grant (deleted ones too): who, when, the diff.
#[utoipa::path(get, path = "/grants/{id}/revisions", tag = "grants",
    params(("id" = String, Path, description = "The grant id")),
    responses(
        (status = 200, body = RevisionList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn revisions(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let id = path_arg(id)?;
    let revisions = domain::revisions(&gw.admin, &p.org, &id).await?;
    Ok(reply(StatusCode::OK, RevisionList { grant: id, revisions }))
}
