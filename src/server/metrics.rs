//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition. Gauges of
//! state owned elsewhere are refreshed from their owners on each scrape.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::gateway::Gateway;
use crate::metrics::{BudgetLabels, OrgLabels, UpstreamLabels};
use crate::upstream::Health;

/// Most pending actions counted per scrape (a bound on the query).
const PENDING_SCAN: i64 = 100_000;

pub async fn scrape(State(gw): State<Gateway>) -> Response {
    refresh(&gw).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], gw.metrics.encode())
        .into_response()
}

async fn refresh(gw: &Gateway) {
    let m = &gw.metrics;
    match gw.store.budget_usage(None, gw.ledger.now(), crate::calendar::period_start).await {
        Ok(rows) => {
            m.budget_limit.clear();
            m.budget_spent.clear();
            m.budget_held.clear();
            for u in rows {
                let labels = BudgetLabels {
                    budget: u.budget.id.clone(),
                    org: u.budget.org.clone().unwrap_or_default(),
                    unit: u.budget.unit.to_string(),
                };
                m.budget_limit.get_or_create(&labels).set(u.budget.limit_amount);
                m.budget_spent.get_or_create(&labels).set(u.spent);
                m.budget_held.get_or_create(&labels).set(u.held);
            }
        }
        Err(e) => tracing::warn!("metrics: cannot read budget usage: {e}"),
    }
    match gw.store.approvals(None, Some(crate::approval::Status::Pending), PENDING_SCAN).await {
        Ok(rows) => {
            m.approvals_pending.clear();
            for r in rows {
                m.approvals_pending.get_or_create(&OrgLabels { org: r.org }).inc();
            }
        }
        Err(e) => tracing::warn!("metrics: cannot count pending approvals: {e}"),
    }
    for u in gw.upstreams.all() {
        let s = u.status();
        let labels = UpstreamLabels { upstream: s.name.clone() };
        m.upstream_up.get_or_create(&labels).set(i64::from(matches!(s.health, Health::Up)));
        m.upstream_restarts.get_or_create(&labels).set(i64::try_from(s.restarts).unwrap_or(i64::MAX));
    }
    let policy = gw.policies.status();
    m.policy_version.set(i64::try_from(policy.version).unwrap_or(i64::MAX));
    m.policy_reload_failed.set(i64::from(policy.last_error.is_some() || policy.stored_error.is_some()));
}
