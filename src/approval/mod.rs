//! The approval queue (SPEC.md, "Approvals"): pending actions, their
//! decisions, and the notifications that reach approvers.
//!
//! A pending action is bound to the exact call: principal, tool, the digest
//! of the canonical arguments and the hash of the tool definition. It moves
//! from `pending` to `approved`, `denied`, `expired` or `cancelled` exactly
//! once (the store decides, so concurrent deciders and replicas agree), and
//! an approved action's execution is claimed by exactly one process.
//!
//! Everything here is durable before it is visible: a decision is committed
//! (with its audit record, and the hold released if the action will not run)
//! before anyone is told.

pub mod events;
pub mod task;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::audit::record;
use crate::config::ApprovalSettings;
use crate::ids::ApprovalId;
use crate::money::Micros;
use crate::store::{ApprovalRow, Store, StoreError, Transition, Transitioned};

pub use crate::store::kinds::{Execution, Mode, Status};
pub use events::Events;

/// `sha256:<hex>` of the canonical form of `arguments` (object keys sorted).
pub fn digest(arguments: &Value) -> String {
    let mut canonical = String::new();
    crate::catalog::hash::write_canonical(arguments, &mut canonical);
    format!("sha256:{}", hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// A decision on a pending action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "approve" | "approved" => Some(Verdict::Approve),
            "deny" | "denied" => Some(Verdict::Deny),
            _ => None,
        }
    }

    fn status(self) -> Status {
        match self {
            Verdict::Approve => Status::Approved,
            Verdict::Deny => Status::Denied,
        }
    }
}

/// The approval queue of this process: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    events: Arc<Events>,
    settings: ApprovalSettings,
    base_url: String,
    /// The address the gateway was bound to, when no public URL is configured.
    bound: std::sync::OnceLock<String>,
    /// Names this process in execution claims.
    process: String,
    /// Wakes the webhook worker when new deliveries are queued.
    deliveries: tokio::sync::Notify,
}

impl Approvals {
    pub fn new(store: Store, settings: ApprovalSettings, base_url: String) -> Approvals {
        let events = Arc::new(Events::new());
        Approvals {
            inner: Arc::new(Inner {
                store,
                events,
                settings,
                base_url,
                bound: std::sync::OnceLock::new(),
                process: uuid::Uuid::new_v4().to_string(),
                deliveries: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn settings(&self) -> &ApprovalSettings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn events(&self) -> &Arc<Events> {
        &self.inner.events
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ApprovalRow>> {
        self.inner.events.subscribe()
    }

    /// Where approvers reach this gateway: `approval.public_url`, else the
    /// address it listens on.
    pub fn base_url(&self) -> &str {
        match (&self.inner.settings.public_url, self.inner.bound.get()) {
            (Some(u), _) => u,
            (None, Some(b)) => b,
            (None, None) => &self.inner.base_url,
        }
    }

    /// Records the address the HTTP server was bound to (port 0 resolved).
    pub fn bound_to(&self, addr: std::net::SocketAddr) {
        let _ = self.inner.bound.set(format!("http://{addr}"));
    }

    pub(crate) fn deliveries_queued(&self) -> &tokio::sync::Notify {
        &self.inner.deliveries
    }

    /// Stores a new pending action, queues its webhooks and tells the feed.
    /// `None`: the same call has an open action already (created meanwhile).
    pub async fn create(
        &self,
        row: ApprovalRow,
        hold_expires_at: i64,
        webhooks: Vec<String>,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let detail = json!({
            "id": row.id, "tool": row.tool, "principal": row.principal_label, "route": row.route,
            "grant": row.grant_id, "digest": row.digest, "tool_hash": row.tool_hash, "call_id": row.call_id,
            "estimated_cost": Micros(row.cost).to_string(), "hold": row.hold_id,
            "expires_at": crate::audit::rfc3339(row.expires_at), "mode": row.mode,
            "webhooks": webhooks.len(),
        });
        let mut draft = record::change("approval.requested", Some(&row.org), &row.principal_label, detail);
        draft.call_id = Some(row.call_id.to_string());
        draft.tool = Some(row.tool.clone());
        draft.principal = Some(row.principal_label.clone());
        let Some(stored) = self.inner.store.create_approval(&row, hold_expires_at, &webhooks, draft).await? else {
            return Ok(None);
        };
        if !webhooks.is_empty() {
            self.inner.deliveries.notify_one();
        }
        self.inner.events.publish(Arc::new(stored.clone()));
        Ok(Some(stored))
    }

    /// Decides a pending action: the first decision wins; a later one finds
    /// the decision that stands.
    pub async fn decide(
        &self,
        id: &ApprovalId,
        verdict: Verdict,
        by: &str,
        reason: Option<String>,
    ) -> Result<Transitioned, StoreError> {
        self.transition(id, verdict.status(), by, reason).await
    }

    /// Cancels an action the agent gave up on (a task cancelled): pending, or
    /// approved and not started.
    pub async fn cancel(&self, id: &ApprovalId, by: &str) -> Result<Transitioned, StoreError> {
        self.transition(id, Status::Cancelled, by, Some("cancelled by the agent".into())).await
    }

    async fn transition(
        &self,
        id: &ApprovalId,
        to: Status,
        by: &str,
        reason: Option<String>,
    ) -> Result<Transitioned, StoreError> {
        let reason = reason.map(|r| record::bounded(&r, 2000));
        let t = Transition { id: id.clone(), to, by: Some(by.to_string()), reason, now: crate::audit::now_micros() };
        let done = self.inner.store.transition_approval(&t, |row| decided_record(row, "approval.decided")).await?;
        if let Transitioned::Done(row) = &done {
            self.inner.events.publish(Arc::new(row.clone()));
        }
        Ok(done)
    }

    /// Expires pending actions past their time; returns how many.
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        let now = crate::audit::now_micros();
        let rows = self.inner.store.expire_approvals(now, |row| decided_record(row, "approval.expired")).await?;
        for row in &rows {
            self.inner.events.publish(Arc::new(row.clone()));
        }
        Ok(rows.len())
    }

    /// Claims the execution of an approved action; `Some` for exactly one claimant.
    pub async fn claim(&self, id: &ApprovalId) -> Result<Option<ApprovalRow>, StoreError> {
        let row =
            self.inner.store.claim_execution(id.as_str(), &self.inner.process, crate::audit::now_micros()).await?;
        if let Some(r) = &row {
            self.inner.events.publish(Arc::new(r.clone()));
        }
        Ok(row)
    }

    /// Stores an executed action's result, for a repeat of its call or its
    /// task's result. The store never holds a secret in clear: credential
    /// shapes and secret-named fields are redacted first (the call that
    /// waited for the action got the result as the tool gave it).
    pub async fn finish(&self, id: &ApprovalId, result: &Value, reported: bool) -> Result<(), StoreError> {
        let result = crate::audit::redact::value(result, &[]);
        let text = serde_json::to_string(&result).unwrap_or_else(|_| "null".into());
        if let Some(row) =
            self.inner.store.finish_execution(id.as_str(), &text, reported, crate::audit::now_micros()).await?
        {
            self.inner.events.publish(Arc::new(row));
        }
        Ok(())
    }

    pub async fn mark_reported(&self, id: &ApprovalId) -> Result<(), StoreError> {
        self.inner.store.mark_reported(id.as_str(), crate::audit::now_micros()).await
    }

    pub async fn get(&self, id: &ApprovalId) -> Result<Option<ApprovalRow>, StoreError> {
        self.inner.store.approval(id.as_str()).await
    }

    /// Waits until `done` holds for the action, `deadline` passes or `stop`
    /// fires; returns the action as last seen (`None`: it does not exist).
    /// `tick` runs every `every` while waiting (progress notifications).
    pub async fn wait(
        &self,
        id: &ApprovalId,
        done: impl Fn(&ApprovalRow) -> bool,
        deadline: tokio::time::Instant,
        stop: &tokio_util::sync::CancellationToken,
        every: Duration,
        mut tick: impl FnMut(&ApprovalRow),
    ) -> Result<Option<ApprovalRow>, StoreError> {
        // Subscribed before the first read: no change falls between the two.
        let mut rx = self.subscribe();
        let Some(mut row) = self.get(id).await? else { return Ok(None) };
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        while !done(&row) {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) if ev.id == *id && ev.rev >= row.rev => row = (*ev).clone(),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(r) = self.get(id).await? { row = r; }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticks.tick() => tick(&row),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.cancelled() => break,
            }
        }
        Ok(Some(row))
    }

    /// The public view of an action: what the API, the feed and the page show.
    /// Never the raw arguments.
    pub fn view(&self, row: &ApprovalRow) -> Value {
        let arguments: Value = serde_json::from_str(&row.arguments_redacted).unwrap_or(Value::Null);
        let at = |t: Option<i64>| t.map_or(Value::Null, |t| Value::from(crate::audit::rfc3339(t)));
        json!({
            "id": row.id,
            "org": row.org,
            "principal": row.principal_label,
            "key": row.principal,
            "team": row.team,
            "tool": row.tool,
            "arguments": arguments,
            "digest": row.digest,
            "tool_hash": row.tool_hash,
            "grant": row.grant_id,
            "route": row.route,
            "reason": row.reason,
            "risk": row.risk,
            "estimated_cost": Micros(row.cost).to_string(),
            "estimated_cost_micros": row.cost,
            "status": row.status,
            "mode": row.mode,
            "execution": row.execution,
            "created_at": at(Some(row.created_at)),
            "expires_at": at(Some(row.expires_at)),
            "decided_at": at(row.decided_at),
            "decided_by": row.decided_by,
            "decision_reason": row.decision_reason,
            "links": self.links(&row.id),
        })
    }

    pub fn links(&self, id: &ApprovalId) -> Value {
        let base = self.base_url();
        json!({
            "approve": format!("{base}/v1/approvals/{id}/approve"),
            "deny": format!("{base}/v1/approvals/{id}/deny"),
            "decision": format!("{base}/v1/approvals/{id}/decision"),
            "view": format!("{base}/approvals#{id}"),
        })
    }

    /// Expires due actions every `every` until `shutdown`.
    pub async fn expirer(self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        crate::periodic::every(every, shutdown, || {
            let approvals = self.clone();
            async move {
                match approvals.expire_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("{n} pending actions expired"),
                    Err(e) => tracing::warn!("approval expiry failed: {e}"),
                }
            }
        })
        .await;
    }
}

/// The audit record of a decision, expiry or cancellation.
fn decided_record(row: &ApprovalRow, kind: &str) -> crate::store::AuditDraft {
    let detail = json!({
        "id": row.id, "decision": row.status, "reason": row.decision_reason, "tool": row.tool,
        "principal": row.principal_label, "call_id": row.call_id, "hold": row.hold_id,
        "hold_released": row.status != Status::Approved && row.hold_id.is_some(),
    });
    let actor = row.decided_by.clone().unwrap_or_else(|| "tollgate".into());
    let mut draft = record::change(kind, Some(&row.org), &actor, detail);
    draft.call_id = Some(row.call_id.to_string());
    draft.tool = Some(row.tool.clone());
    draft.principal = Some(row.principal_label.clone());
    draft.decision = Some(row.status.to_string());
    draft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_key_order_and_sees_every_value() {
        let a = digest(&json!({"b": 1, "a": {"y": [1, 2], "x": "s"}}));
        let b = digest(&json!({"a": {"x": "s", "y": [1, 2]}, "b": 1}));
        assert_eq!(a, b);
        assert_ne!(a, digest(&json!({"a": {"x": "s", "y": [2, 1]}, "b": 1})));
        assert_ne!(a, digest(&json!({"a": {"x": "s", "y": [1, 2]}, "b": "1"})));
        assert!(a.starts_with("sha256:") && a.len() == 71);
    }

    #[test]
    fn verdicts_parse_only_their_words() {
        assert_eq!(Verdict::parse("approve"), Some(Verdict::Approve));
        assert_eq!(Verdict::parse("deny"), Some(Verdict::Deny));
        assert_eq!(Verdict::parse("APPROVE"), None);
        assert_eq!(Verdict::parse(""), None);
    }
}
