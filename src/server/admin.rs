//! `/admin/v1`: the operator's JSON API (issue 8 grows it). Every request
//! authenticates with a key that has a role, and sees only its own org.
//! Errors are JSON `{code, message}` with a stable `code`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::budget::Unit;
use crate::gateway::Gateway;
use crate::identity::{self, AuthError, Principal, Role};

pub fn router(gw: Gateway) -> axum::Router {
    axum::Router::new().route("/budgets", get(budgets)).with_state(gw)
}

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// The caller, if its key is live and has one of `roles`.
pub(super) async fn caller(gw: &Gateway, headers: &HeaderMap, roles: &[Role]) -> Result<Principal, Response> {
    let secret = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(identity::bearer);
    caller_of(gw, secret, roles).await
}

/// The holder of `secret`, if the key is live and has one of `roles`.
pub(super) async fn caller_of(gw: &Gateway, secret: Option<&str>, roles: &[Role]) -> Result<Principal, Response> {
    let result = match secret {
        Some(s) => identity::authenticate(&gw.store, s).await,
        None => Err(AuthError::Missing),
    };
    match result {
        Ok(p) if p.role.is_some_and(|r| roles.contains(&r)) => Ok(p),
        Ok(_) => Err(error(StatusCode::FORBIDDEN, "forbidden", "this key's role may not do this")),
        Err(AuthError::Store(e)) => {
            tracing::error!("cannot check an admin key: {e}");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the key store is unavailable"))
        }
        Err(e) => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string())),
    }
}

/// Limit, spent, held and remaining per budget of the caller's org, in the
/// current period.
async fn budgets(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let p = match caller(&gw, &headers, &[Role::Admin, Role::Auditor]).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let rows = match gw.store.budget_usage(Some(&p.org), gw.ledger.now(), crate::calendar::period_start).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("budget usage: {e}");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable");
        }
    };
    // Budgets without an org count keys of every org: only their own-org
    // scopes are shown to an org's key.
    let visible = rows
        .into_iter()
        .filter(|u| u.budget.org.as_deref() == Some(p.org.as_str()) || u.budget.scope == format!("org:{}", p.org));
    let items: Vec<_> = visible
        .map(|u| {
            let unit = Unit::parse(&u.budget.unit).unwrap_or(Unit::Money);
            let remaining = u.budget.limit_amount - u.spent - u.held;
            json!({
                "id": u.budget.id, "scope": u.budget.scope, "unit": unit.as_str(), "period": u.budget.period,
                "period_start": crate::audit::rfc3339(u.period_start),
                "limit": u.budget.limit_amount, "spent": u.spent, "held": u.held, "remaining": remaining,
                "limit_text": unit.show(u.budget.limit_amount), "spent_text": unit.show(u.spent),
                "held_text": unit.show(u.held), "remaining_text": unit.show(remaining),
                "source": u.budget.source,
            })
        })
        .collect();
    Json(json!({"budgets": items})).into_response()
}
