//! `/admin/v1/budgets`: the org's budgets with their spend in the current
//! period; create or change a budget (`PUT`), raise its limit (`topup`).
//! Budgets from policy files are read-only here (409 naming the file). A
//! retried change with the same `Idempotency-Key` applies once.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::wire::{ADMINS, ErrorBody, Failure, READERS, caller, invalid, json_body, path_arg, reply};
use crate::admin::AdminError;
use crate::audit::{now_micros, record};
use crate::budget::{PERIODS, Period, Unit, valid_scope};
use crate::gateway::Gateway;
use crate::identity::Principal;
use crate::store::{Applied, BudgetRow, Idempotency, UsageRow};

#[derive(Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    pub id: String,
    /// `key:<id>`, `team:<name>` or `org:<name>`.
    pub scope: String,
    /// `money` (micro-units) or `tokens`.
    pub unit: String,
    /// `none`, `daily`, `weekly` or `monthly`.
    pub period: String,
    pub period_start: String,
    pub limit: i64,
    pub spent: i64,
    pub held: i64,
    pub remaining: i64,
    pub limit_text: String,
    pub spent_text: String,
    pub held_text: String,
    pub remaining_text: String,
    /// `api`, or `file:<path>:<line>`.
    pub source: String,
}

impl BudgetView {
    fn of(u: &UsageRow) -> BudgetView {
        let unit = u.budget.unit;
        let remaining = u.budget.limit_amount - u.spent - u.held;
        BudgetView {
            id: u.budget.id.clone(),
            scope: u.budget.scope.clone(),
            unit: unit.as_str().into(),
            period: u.budget.period.to_string(),
            period_start: crate::audit::rfc3339(u.period_start),
            limit: u.budget.limit_amount,
            spent: u.spent,
            held: u.held,
            remaining,
            limit_text: unit.show(u.budget.limit_amount),
            spent_text: unit.show(u.spent),
            held_text: unit.show(u.held),
            remaining_text: unit.show(remaining),
            source: u.budget.source.clone(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BudgetList {
    pub budgets: Vec<BudgetView>,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// `key:<id>`, `team:<name>` or `org:<name>` of the caller's org.
    pub scope: String,
    /// `money` (default) or `tokens`.
    #[serde(default)]
    pub unit: Option<String>,
    /// A decimal amount for money (`"25.00"`), a whole number for tokens.
    pub limit: String,
    /// `none` (default), `daily`, `weekly` or `monthly`.
    #[serde(default)]
    pub period: Option<String>,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupBody {
    /// Added to the limit, in the budget's unit.
    pub amount: String,
}

/// Budgets of the caller's org: its own and those scoped to it.
async fn usage(gw: &Gateway, org: &str) -> Result<Vec<UsageRow>, Failure> {
    let rows = gw.store.budget_usage(Some(org), gw.ledger.now(), crate::calendar::period_start).await?;
    Ok(rows
        .into_iter()
        .filter(|u| u.budget.org.as_deref() == Some(org) || u.budget.scope == format!("org:{org}"))
        .collect())
}

/// Limit, spent, held and remaining per budget of the org, in the current period.
#[utoipa::path(get, path = "/budgets", tag = "budgets",
    responses((status = 200, body = BudgetList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let budgets = usage(&gw, &p.org).await?.iter().map(BudgetView::of).collect();
    Ok(reply(StatusCode::OK, BudgetList { budgets }))
}

async fn own(gw: &Gateway, org: &str, id: &str) -> Result<BudgetView, Failure> {
    usage(gw, org)
        .await?
        .iter()
        .find(|u| u.budget.id == id)
        .map(BudgetView::of)
        .ok_or_else(|| AdminError::NotFound(format!("no budget `{}`", record::bounded(id, 64))).into())
}

/// One budget with its spend.
#[utoipa::path(get, path = "/budgets/{id}", tag = "budgets", params(("id" = String, Path)),
    responses((status = 200, body = BudgetView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn one(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, READERS).await?;
    let id = path_arg(id)?;
    Ok(reply(StatusCode::OK, own(&gw, &p.org, &id).await?))
}

fn idempotency(headers: &HeaderMap, request: &serde_json::Value) -> Result<Option<Idempotency>, Failure> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(|| invalid("Idempotency-Key", "must be 1 to 128 visible characters"))?;
    Ok(Some(Idempotency {
        key: key.to_string(),
        request_hash: hex::encode(Sha256::digest(request.to_string().as_bytes())),
    }))
}

/// Why `row` may not be changed by `p`, if it may not.
fn refuse(row: &BudgetRow, p: &Principal) -> Option<AdminError> {
    if row.org.as_deref() != Some(p.org.as_str()) {
        return Some(AdminError::Conflict { message: format!("budget id `{}` is already in use", row.id), file: None });
    }
    row.source.strip_prefix("file:").map(|f| AdminError::Conflict {
        message: format!("budget `{}` is defined in {f}: it is read-only here; edit that file instead", row.id),
        file: Some(f.rsplit_once(':').map_or(f, |(path, _)| path).to_string()),
    })
}

/// Creates a budget of the caller's org or replaces its definition (spend is kept).
#[utoipa::path(put, path = "/budgets/{id}", tag = "budgets", request_body = BudgetBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = BudgetView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn put(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let id = path_arg(id)?;
    let b: BudgetBody = json_body(&headers, body).await?;
    if !crate::policy::spec::valid_id(&id) {
        return Err(invalid("id", "must be 1 to 128 characters without spaces"));
    }
    let unit_text = b.unit.as_deref().unwrap_or("money");
    let unit = Unit::parse(unit_text).ok_or_else(|| invalid("unit", "must be money or tokens"))?;
    let limit = unit.amount(&b.limit).map_err(|e| invalid("limit", e))?;
    if limit < 0 {
        return Err(invalid("limit", "must not be negative"));
    }
    let period = match b.period.as_deref() {
        None => Period::None,
        Some(p) => {
            Period::parse(p).ok_or_else(|| invalid("period", format!("must be one of {}", PERIODS.join(", "))))?
        }
    };
    if !valid_scope(&b.scope) {
        return Err(invalid("scope", "must be key:<id>, team:<name> or org:<name>"));
    }
    match b.scope.split_once(':') {
        Some(("org", o)) if o != p.org => return Err(invalid("scope", "must be within the caller's org")),
        Some(("key", k)) => match gw.store.key_by_id(k).await? {
            Some(row) if row.org == p.org => {}
            _ => return Err(invalid("scope", format!("no key `{}` in this org", record::bounded(k, 64)))),
        },
        _ => {}
    }
    let request = json!({"op": "set", "id": id, "scope": b.scope, "org": p.org, "unit": unit.as_str(), "limit": limit, "period": period.as_str()});
    let idem = idempotency(&headers, &request)?;
    let row = BudgetRow {
        id: id.clone(),
        scope: b.scope.clone(),
        org: Some(p.org.clone()),
        unit,
        limit_amount: limit,
        period,
        source: "api".into(),
        updated_at: now_micros(),
    };
    let applied = gw
        .store
        .change_budget(&id, idem, |current| match current.as_ref().and_then(|c| refuse(c, &p)) {
            Some(r) => Err(r),
            None => Ok(row),
        })
        .await?;
    finish(&gw, &p, &id, applied, "budget.set", request).await
}

/// Raises a budget's limit by an amount.
#[utoipa::path(post, path = "/budgets/{id}/topup", tag = "budgets", request_body = TopupBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = BudgetView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn topup(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let p = caller(&gw, &headers, ADMINS).await?;
    let id = path_arg(id)?;
    let b: TopupBody = json_body(&headers, body).await?;
    let request = json!({"op": "topup", "id": id, "org": p.org, "amount": b.amount});
    let idem = idempotency(&headers, &request)?;
    let applied = gw
        .store
        .change_budget(&id, idem, |current| {
            let Some(mut row) = current.filter(|c| c.org.as_deref() == Some(p.org.as_str())) else {
                return Err(AdminError::NotFound(format!("no budget `{}`", record::bounded(&id, 64))));
            };
            if let Some(r) = refuse(&row, &p) {
                return Err(r);
            }
            let unit = row.unit;
            let add = match unit.amount(&b.amount) {
                Ok(a) if a > 0 => a,
                Ok(_) => return Err(AdminError::invalid("amount", "must be more than zero")),
                Err(e) => return Err(AdminError::invalid("amount", e)),
            };
            row.limit_amount = row
                .limit_amount
                .checked_add(add)
                .ok_or_else(|| AdminError::invalid("amount", "the limit would overflow"))?;
            row.updated_at = now_micros();
            Ok(row)
        })
        .await?;
    finish(&gw, &p, &id, applied, "budget.topup", request).await
}

async fn finish(
    gw: &Gateway,
    p: &Principal,
    id: &str,
    applied: Result<Applied, AdminError>,
    kind: &str,
    request: serde_json::Value,
) -> Result<Response, Failure> {
    match applied {
        Ok(Applied::Now(_)) => {
            gw.store.append_audit(&[record::change(kind, Some(&p.org), &p.to_string(), request)]).await?;
        }
        Ok(Applied::Replayed(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(reply(StatusCode::OK, own(gw, &p.org, id).await?))
}
