//! Webhooks both ways: signed notifications to approvers' systems, and
//! signature checks on the decisions they send back.
//!
//! `Tollgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! with the route's secret, in both directions. A decision's signature is
//! accepted within [`WINDOW_SECS`] of its timestamp and only once.
//!
//! The signature covers the body only, not the URL, so a signed decision
//! must name in its body what it decides: `"id"` (the action's id, as the
//! notification gave it) and `"decision"` (`"approve"` or `"deny"`), e.g.
//! `{"id":"<action id>","decision":"approve","reason":"reviewed"}`
//! ([`bound`]). A callback signed for one action is then refused at any
//! other (401 `signature_for_another_action`), and a signed body without
//! them (an empty one included) binds nothing and is refused (400). The
//! notification's own body already names its action (`"id"`).

use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::json;

use super::Approvals;
use crate::money::Micros;
use crate::policy::watch::Policies;
use crate::store::{AttemptRow, DeliveryRow};

pub const HEADER: &str = "tollgate-signature";
/// How far a signed decision's timestamp may be from now.
pub const WINDOW_SECS: i64 = 300;
/// Longest wait between two attempts at one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often the worker looks for due deliveries it was not woken for
/// (retries, and deliveries queued by other processes).
const POLL: Duration = Duration::from_millis(200);

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(secret: &[u8], t: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut m =
        <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value signing `body` at time `t` (Unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Tollgate-Signature header is malformed: expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("the signature's timestamp is more than {WINDOW_SECS} seconds from now")]
    Stale,
    #[error("the signature does not match the body under this route's secrets")]
    Mismatch,
}

/// Checks `header` against `body` under any of `secrets`; returns the
/// matching signature (hex), which the caller records to refuse replays.
pub fn verify(header: &str, body: &[u8], secrets: &[&[u8]], now_secs: i64) -> Result<String, SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) if sigs.len() < 8 => sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now_secs - t).abs() > WINDOW_SECS {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        for sig in &sigs {
            // Constant-time comparison.
            if mac(secret, t, body).verify_slice(sig).is_ok() {
                return Ok(hex::encode(sig));
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// Why a validly signed decision does not bind the action it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbound {
    /// The signed body lacks these fields (`id`, `decision`).
    Missing(Vec<&'static str>),
    /// The signed body names another action than the one it was sent to.
    OtherAction,
}

impl Unbound {
    /// The error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Unbound::Missing(_) => "bad_request",
            Unbound::OtherAction => "signature_for_another_action",
        }
    }
}

impl std::fmt::Display for Unbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unbound::Missing(fields) => write!(
                f,
                "{}: required in a signed decision: the signed body must name the action and the verdict, \
                 as in {{\"id\":\"<the action's id>\",\"decision\":\"approve\"}}",
                fields.join(", ")
            ),
            Unbound::OtherAction => write!(
                f,
                "id: this decision was signed for another action; a signed decision is accepted only at the \
                 action its body names"
            ),
        }
    }
}

impl std::error::Error for Unbound {}

/// Checks that a signed decision's body binds `action`: it carries `id`
/// (equal to `action`) and `decision`. Whether the decision is a valid
/// verdict, and the one an `/approve` or `/deny` URL says, is the caller's
/// check, as for any decision.
pub fn bound(action: &str, id: Option<&str>, decision: Option<&str>) -> Result<(), Unbound> {
    let mut missing = Vec::new();
    if id.is_none() {
        missing.push("id");
    }
    if decision.is_none() {
        missing.push("decision");
    }
    if !missing.is_empty() {
        return Err(Unbound::Missing(missing));
    }
    if id != Some(action) {
        return Err(Unbound::OtherAction);
    }
    Ok(())
}

/// The notification body SPEC.md gives.
pub fn payload(approvals: &Approvals, row: &crate::store::ApprovalRow) -> serde_json::Value {
    let arguments: serde_json::Value = serde_json::from_str(&row.arguments_redacted).unwrap_or_default();
    json!({
        "id": row.id,
        "org": row.org,
        "principal": row.principal_label,
        "tool": row.tool,
        "arguments": arguments,
        "reason": row.reason,
        "risk": row.risk,
        "estimated_cost": Micros(row.cost).to_string(),
        "expires_at": crate::audit::rfc3339(row.expires_at),
        "links": approvals.links(&row.id),
    })
}

/// Delivers queued notifications until `shutdown`: each attempt is recorded;
/// failures are retried with exponential backoff up to the configured number
/// of attempts.
pub async fn deliver(approvals: Approvals, policies: Policies, shutdown: tokio_util::sync::CancellationToken) {
    let settings = approvals.settings().clone();
    let client = match reqwest::Client::builder()
        .timeout(settings.webhook_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhook client: {e}; approvers will not be notified by webhook");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = approvals.deliveries_queued().notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let now = crate::audit::now_micros();
        // Leased long enough for one attempt to finish, so no other worker takes it meanwhile.
        let lease = now + micros(settings.webhook_timeout) * 2 + 1_000_000;
        let due = match approvals.store().due_deliveries(now, lease, 64).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("webhook deliveries: {e}");
                continue;
            }
        };
        for d in due {
            let (approvals, policies, client) = (approvals.clone(), policies.clone(), client.clone());
            tokio::spawn(async move { attempt(&approvals, &policies, &client, d).await });
        }
    }
}

async fn attempt(approvals: &Approvals, policies: &Policies, client: &reqwest::Client, d: DeliveryRow) {
    let settings = approvals.settings();
    let number = d.attempts + 1;
    let started = Instant::now();
    let at = crate::audit::now_micros();
    let outcome: Result<u16, String> = async {
        let row = approvals.get(&d.approval_id).await.map_err(|e| e.to_string())?.ok_or("the action is gone")?;
        let policy = policies.current();
        let hook = policy
            .route(&d.route)
            .and_then(|r| r.webhooks.iter().find(|w| w.url == d.url))
            .ok_or_else(|| format!("route `{}` no longer has the webhook {}", d.route, d.url))?;
        let body = serde_json::to_vec(&payload(approvals, &row)).map_err(|e| e.to_string())?;
        let signature = sign(hook.secret.expose().as_bytes(), at / 1_000_000, &body);
        let response = client
            .post(&d.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(HEADER, signature)
            .header("tollgate-delivery", d.id.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request failed: {}", without_url(&e)))?;
        Ok(response.status().as_u16())
    }
    .await;
    let micros_taken = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    let (status, error) = match &outcome {
        Ok(s) if (200..300).contains(s) => (Some(i64::from(*s)), None),
        Ok(s) => (Some(i64::from(*s)), Some(format!("answered HTTP {s}"))),
        Err(e) => (None, Some(e.clone())),
    };
    let delivered = error.is_none();
    let state = if delivered {
        "delivered"
    } else if number >= i64::from(settings.webhook_attempts) {
        "failed"
    } else {
        "pending"
    };
    let backoff = settings.webhook_backoff.saturating_mul(1u32 << (number - 1).clamp(0, 20) as u32).min(MAX_BACKOFF);
    let next_at = crate::audit::now_micros() + micros(backoff);
    let a = AttemptRow { delivery_id: d.id, attempt: number, at, micros: micros_taken, status, error: error.clone() };
    match approvals.store().record_attempt(&a, state, next_at).await {
        Ok(()) if state == "pending" => {
            tracing::info!(approval = %d.approval_id, attempt = number, "webhook delivery failed, will retry: {}", error.unwrap_or_default());
        }
        Ok(()) if state == "failed" => {
            tracing::warn!(approval = %d.approval_id, attempts = number, "webhook delivery gave up: {}", error.unwrap_or_default());
        }
        Ok(()) => {}
        Err(e) => tracing::warn!(approval = %d.approval_id, "webhook attempt not recorded: {e}"),
    }
}

/// Deliveries and their attempts as the API and CLI show them.
pub fn deliveries_json(ds: &[(DeliveryRow, Vec<AttemptRow>)]) -> serde_json::Value {
    let at = crate::audit::rfc3339;
    serde_json::Value::Array(
        ds.iter()
            .map(|(d, attempts)| {
                json!({
                    "id": d.id, "route": d.route, "url": d.url, "state": d.state, "attempts": d.attempts,
                    "next_attempt_at": if d.state == "pending" { serde_json::Value::from(at(d.next_at)) } else { serde_json::Value::Null },
                    "created_at": at(d.created_at),
                    "log": attempts.iter().map(|a| json!({
                        "attempt": a.attempt, "at": at(a.at), "duration_ms": a.micros as f64 / 1000.0,
                        "http_status": a.status, "error": a.error,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A reqwest error's text without its URL (which may carry a token).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-secret";

    #[test]
    fn a_signature_verifies_with_its_secret_body_and_time_only() {
        let body = br#"{"decision":"approve"}"#;
        let header = sign(SECRET, 1_700_000_000, body);
        assert!(verify(&header, body, &[SECRET], 1_700_000_010).is_ok());
        assert!(verify(&header, body, &[b"other-secret-0123456", SECRET], 1_700_000_010).is_ok());
        assert_eq!(verify(&header, b"{}", &[SECRET], 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify(&header, body, &[b"other-secret-0123456"], 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify(&header, body, &[SECRET], 1_700_000_000 + 301), Err(SignatureError::Stale));
        assert_eq!(verify(&header, body, &[SECRET], 1_700_000_000 - 301), Err(SignatureError::Stale));
    }

    #[test]
    fn a_signed_decision_binds_only_the_action_its_body_names() {
        assert_eq!(bound("apr_a", Some("apr_a"), Some("approve")), Ok(()));
        assert_eq!(bound("apr_a", Some("apr_a"), Some("deny")), Ok(()));
        assert_eq!(bound("apr_b", Some("apr_a"), Some("approve")), Err(Unbound::OtherAction));
        assert_eq!(bound("apr_a", Some(""), Some("approve")), Err(Unbound::OtherAction));
        assert_eq!(bound("apr_a", Some("APR_A"), Some("approve")), Err(Unbound::OtherAction));
        assert_eq!(bound("apr_a", None, Some("approve")), Err(Unbound::Missing(vec!["id"])));
        assert_eq!(bound("apr_a", Some("apr_a"), None), Err(Unbound::Missing(vec!["decision"])));
        // An empty body binds nothing.
        let both = bound("apr_a", None, None).unwrap_err();
        assert_eq!(both, Unbound::Missing(vec!["id", "decision"]));
        assert_eq!(both.code(), "bad_request");
        assert!(both.to_string().starts_with("id, decision: required"), "{both}");
        assert_eq!(Unbound::OtherAction.code(), "signature_for_another_action");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for h in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage", "t=1;v1=00"] {
            assert_eq!(verify(h, b"", &[SECRET], 1), Err(SignatureError::Malformed), "{h}");
        }
    }
}
