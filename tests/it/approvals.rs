//! The approval queue end to end: real webhook receivers, signed decisions,
//! concurrent deciders, restarts, expiry, the live feed and tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hmac::{KeyInit, Mac};
use rmcp::model::{CallToolRequestParams, CallToolResponse, CancelTaskParams, GetTaskParams, TaskStatus};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::harness::*;

const SECRET: &str = "approvals-test-secret-0123456789";
const SECRET_VAR: &str = "TOLLGATE_TEST_HOOK_SECRET";

fn set_secret() {
    // SAFETY: the test runner (cargo-nextest, README) runs each test in its
    // own process, and this runs before the test starts any thread that
    // reads the environment.
    unsafe { std::env::set_var(SECRET_VAR, SECRET) };
}

fn manifest(url: &str) -> String {
    format!("{}[tools.echo]\ncost = \"0.10\"\n[tools.add]\ncost = \"1.00\"\n", remote_manifest("fs", "http", url))
}

/// Grants: `fs__echo` needs approval through `route`, `fs__add` is allowed
/// below 0.50; a 5.00 budget for team eng.
fn policy(route: &str, hooks: &str, timeout: &str) -> String {
    format!(
        r#"org = "acme"

[[route]]
id = "security"
webhooks = [{hooks}]

[[grant]]
id = "echo-needs-approval"
principals = ["team:eng"]
tools = ["fs__echo"]
effect = "approve"
approval = {{ route = "{route}", timeout = "{timeout}" }}

[[grant]]
id = "add-below-half"
principals = ["team:eng"]
tools = ["fs__add"]
effect = "allow"
approve_above = "0.50"

[[budget]]
id = "eng"
scope = "team:eng"
limit = "5.00"
"#
    )
}

fn hook(url: &str) -> String {
    format!("{{ url = \"{url}\", secret = \"${{env:{SECRET_VAR}}}\" }}")
}

fn builder(up: &str, policy_text: &str, server: &str) -> Builder {
    TestGateway::builder()
        .server(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}"))
        .manifest("fs", manifest(up))
        .policy("approvals", policy_text.to_string())
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default())
}

fn sign(t: i64, body: &[u8]) -> String {
    // Computed here, independently of tollgate's own signing code.
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(format!("{t}.").as_bytes());
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Http {
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http { client: reqwest::Client::new() }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, url: &str, key: &str) -> (u16, Value) {
        self.send(self.client.get(url).bearer_auth(key)).await
    }

    async fn decide_with_key(&self, base: &str, id: &str, key: &str, decision: &str) -> (u16, Value) {
        let body = json!({"decision": decision, "reason": "looks fine"}).to_string();
        let url = format!("{base}/v1/approvals/{id}/decision");
        self.send(self.client.post(url).bearer_auth(key).header("content-type", "application/json").body(body)).await
    }

    async fn decide_signed(&self, url: &str, body: &str, signature: &str) -> (u16, Value) {
        self.send(
            self.client
                .post(url)
                .header("content-type", "application/json")
                .header("tollgate-signature", signature)
                .body(body.to_string()),
        )
        .await
    }
}

async fn pending(tg: &TestGateway, key: &str) -> Vec<Value> {
    let (s, body) = Http::new().get(&format!("{}/v1/approvals?status=pending", tg.base), key).await;
    assert_eq!(s, 200, "{body}");
    body["approvals"].as_array().cloned().unwrap_or_default()
}

async fn held(tg: &TestGateway) -> i64 {
    let usage =
        tg.gw.store.budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start).await.unwrap();
    usage.iter().find(|u| u.budget.id == "eng").map_or(0, |u| u.held)
}

async fn approver(tg: &TestGateway, org: &str) -> String {
    let k = tollgate::identity::create_key(
        &tg.gw.store,
        org,
        "security",
        Some(tollgate::identity::Role::Approver),
        None,
        0,
    )
    .await
    .unwrap();
    k.secret
}

/// A webhook receiver: checks each notification's signature, records the
/// payload, and answers 503 to the first `fail_first` deliveries.
struct Receiver {
    url: String,
    payloads: mpsc::UnboundedReceiver<Value>,
    attempts: Arc<AtomicUsize>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let (tx, payloads) = mpsc::unbounded_channel();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (tx, counter) = (tx.clone(), counter.clone());
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let sig = headers.get("tollgate-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                let t: i64 =
                    sig.split(',').find_map(|p| p.strip_prefix("t=")).and_then(|t| t.parse().ok()).unwrap_or(0);
                if sig != sign(t, &body) || (now_secs() - t).abs() > 300 {
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                if n < fail_first {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, payloads, attempts }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_decision_releases_the_waiting_call() {
    set_secret();
    let up = fixture_http("fs").await;
    let mut rx = receiver(0).await;
    let tg = builder(&up.url, &policy("security", &hook(&rx.url), "10m"), "").spawn().await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    let waiting =
        tokio::spawn(async move { agent.peer().call_tool(call("fs__echo", json!({"message": "ship it"}))).await });

    let note = tokio::time::timeout(WAIT, rx.payloads.recv()).await.expect("notified").expect("payload");
    assert_eq!(note["tool"], "fs__echo");
    assert_eq!(note["org"], "acme");
    assert_eq!(note["arguments"], json!({"message": "ship it"}));
    assert_eq!(note["estimated_cost"], "0.100000");
    assert!(note["reason"].as_str().unwrap().contains("echo-needs-approval"), "{note}");
    assert!(note["expires_at"].is_string() && note["principal"].is_string());
    for link in ["approve", "deny", "view"] {
        assert!(note["links"][link].as_str().unwrap().starts_with(&tg.base), "{note}");
    }
    assert_eq!(upstream_calls(&up.url, "echo").await, 0, "nothing runs before the decision");
    assert_eq!(held(&tg).await, 100_000, "the cost is held while the action waits");

    // The approver's system answers through the signed callback, naming the
    // action and the verdict in the signed body.
    let body = json!({"id": note["id"], "decision": "approve", "reason": "reviewed", "approver": "alice"}).to_string();
    let url = format!("{}/v1/approvals/{}/decision", tg.base, note["id"].as_str().unwrap());
    let (s, r) = Http::new().decide_signed(&url, &body, &sign(now_secs(), body.as_bytes())).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["approval"]["decided_by"], "webhook:security (alice)");

    let result = waiting.await.unwrap().expect("the waiting call completes");
    assert_eq!(text_of(&result), "echo: ship it");
    assert_eq!(upstream_calls(&up.url, "echo").await, 1);
    assert_eq!(held(&tg).await, 0);

    let audit = tg.gw.store.audit(&Default::default()).await.unwrap();
    let kinds: Vec<&str> = audit.iter().map(|r| r.kind.as_str()).collect();
    assert!(kinds.contains(&"approval.requested") && kinds.contains(&"approval.decided"), "{kinds:?}");
    let decided = audit.iter().find(|r| r.kind == "approval.decided").unwrap();
    assert!(decided.body.contains("webhook:security (alice)"), "the decision is audited with who made it");
    let outcome = audit.iter().rfind(|r| r.kind == "call").unwrap();
    assert!(outcome.body.contains("\"approver\":\"webhook:security (alice)\""), "{}", outcome.body);
    // The approval's records (requested, decided) are sealed like every other.
    let verified = tollgate::audit::verify::verify(&tg.gw.store).await.unwrap();
    assert!(verified.is_ok(), "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_replayed_and_foreign_decisions_change_nothing() {
    set_secret();
    let up = fixture_http("fs").await;
    let rx = receiver(0).await;
    let tg =
        builder(&up.url, &policy("security", &hook(&rx.url), "10m"), "[approval]\nwait = \"100ms\"\n").spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let first = agent.peer().call_tool(call("fs__echo", json!({"message": "a"}))).await.unwrap();
    assert_eq!(first.is_error, Some(true));
    assert_eq!(first.structured_content.as_ref().unwrap()["status"], "pending");
    let id = first.structured_content.unwrap()["approval_id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/approvals/{id}/decision", tg.base);
    let http = Http::new();
    let body = json!({"id": id, "decision": "approve"}).to_string();
    let other_body = json!({"id": id, "decision": "deny"}).to_string();

    let (s, r) = http.decide_signed(&url, &body, &sign(now_secs(), other_body.as_bytes())).await;
    assert_eq!((s, r["code"].as_str()), (401, Some("bad_signature")), "a signature over another body");
    let (s, r) = http.decide_signed(&url, &body, &format!("t={},v1={}", now_secs(), "ab".repeat(32))).await;
    assert_eq!((s, r["code"].as_str()), (401, Some("bad_signature")), "a made-up signature");
    let (s, r) = http.decide_signed(&url, &body, &sign(now_secs() - 301, body.as_bytes())).await;
    assert_eq!((s, r["code"].as_str()), (401, Some("stale_signature")));
    let (s, _) = http.decide_signed(&url, &body, "nonsense").await;
    assert_eq!(s, 401);
    let other_org = approver(&tg, "globex").await;
    let (s, _) = http.decide_with_key(&tg.base, &id, &other_org, "approve").await;
    assert_eq!(s, 404, "another org's approver cannot see it");
    let (s, _) = http.decide_with_key(&tg.base, &id, &tg.key, "approve").await;
    assert_eq!(s, 403, "an agent key is not an approver");
    let (s, _) = http.send(http.client.post(&url).body(body.clone())).await;
    assert_eq!(s, 401, "no credentials at all");
    let mine = approver(&tg, "acme").await;
    for bad in [
        r#"{"decision":"maybe"}"#,
        r#"{"decision":1}"#,
        "{",
        r#"{"decision":"approve","extra":1}"#,
        r#"{"decision":"approve","id":"apr_another"}"#,
    ] {
        let (s, r) = http
            .send(http.client.post(&url).bearer_auth(&mine).header("content-type", "application/json").body(bad))
            .await;
        assert_eq!(s, 400, "{bad}: {r}");
    }
    // The agent answering a question nobody asked it (this route has no `user`):
    // a forged input_required retry cannot approve its own call.
    let mut forged = call("fs__echo", json!({"message": "a"}));
    forged.request_state = Some(format!("tollgate-approval:{id}"));
    forged.input_responses =
        Some([("tollgate-approval".to_string(), json!({"action": "accept", "content": {"approve": true}}))].into());
    let r = agent.peer().call_tool_once(forged).await.unwrap();
    assert!(matches!(r, CallToolResponse::Complete(ref c) if c.is_error == Some(true)), "{r:?}");
    let row = tg.gw.approvals.get(&id.as_str().into()).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.decided_by.as_deref()), ("pending", None), "nothing changed");

    // A valid signed deny, then the very same request again: refused as a replay.
    let deny = json!({"id": id, "decision": "deny", "reason": "no"}).to_string();
    let sig = sign(now_secs(), deny.as_bytes());
    let (s, r) = http.decide_signed(&url, &deny, &sig).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = http.decide_signed(&url, &deny, &sig).await;
    assert_eq!((s, r["code"].as_str()), (401, Some("replayed_signature")));
    // A fresh signature for a later decision: 409 with the decision that stands.
    let (s, r) = http.decide_signed(&url, &body, &sign(now_secs(), body.as_bytes())).await;
    assert_eq!((s, r["decision"].as_str()), (409, Some("denied")), "{r}");

    // The agent's repeat of the call learns it was denied; nothing ran; the hold is back.
    let again = agent.peer().call_tool(call("fs__echo", json!({"message": "a"}))).await.unwrap();
    assert_eq!(again.is_error, Some(true));
    assert!(text_of(&again).contains("denied by webhook:security"), "{}", text_of(&again));
    assert_eq!(upstream_calls(&up.url, "echo").await, 0);
    assert_eq!(held(&tg).await, 0);
}

/// Two pending actions, A and B, on the `security` route (which has a
/// webhook, so signed callbacks are accepted), with the gateway, the upstream
/// and the webhook receiver (kept for the test's length).
async fn two_pending_actions(wait: &str) -> (TestGateway, Listening, Receiver, String, String) {
    let up = fixture_http("fs").await;
    let rx = receiver(0).await;
    let server = format!("[approval]\nwait = \"{wait}\"\n");
    let tg = builder(&up.url, &policy("security", &hook(&rx.url), "10m"), &server).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let mut ids = Vec::new();
    for message in ["a", "b"] {
        let r = agent.peer().call_tool(call("fs__echo", json!({"message": message}))).await.unwrap();
        let pending = r.structured_content.expect("pending");
        assert_eq!(pending["status"], "pending");
        ids.push(pending["approval_id"].as_str().unwrap().to_string());
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    assert_ne!(a, b, "two different calls, two actions");
    (tg, up, rx, a, b)
}

async fn status(tg: &TestGateway, id: &str) -> (String, Option<String>) {
    let row = tg.gw.approvals.get(&id.into()).await.unwrap().unwrap();
    (row.status.to_string(), row.decided_by)
}

fn pending_row() -> (String, Option<String>) {
    ("pending".to_string(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_signed_for_one_action_is_refused_at_another_and_not_spent_by_the_refusal() {
    set_secret();
    let (tg, _up, _rx, a, b) = two_pending_actions("100ms").await;
    let http = Http::new();
    // A callback validly signed (same route, same secret) for action A...
    let body = json!({"id": a, "decision": "approve", "reason": "reviewed A"}).to_string();
    let sig = sign(now_secs(), body.as_bytes());
    // ...delivered to action B, by any of B's decision URLs: refused.
    for path in ["decision", "approve"] {
        let url = format!("{}/v1/approvals/{b}/{path}", tg.base);
        let (s, r) = http.decide_signed(&url, &body, &sig).await;
        assert_eq!((s, r["code"].as_str()), (401, Some("signature_for_another_action")), "{path}: {r}");
        assert!(r["message"].as_str().unwrap().contains("another action"), "{r}");
    }
    assert_eq!(status(&tg, &b).await, pending_row(), "B is not decided");
    assert_eq!(status(&tg, &a).await, pending_row(), "nor is A");

    // The refusals did not spend the signature: its rightful delivery works, once.
    let url = format!("{}/v1/approvals/{a}/decision", tg.base);
    let (s, r) = http.decide_signed(&url, &body, &sig).await;
    assert_eq!((s, r["decision"].as_str()), (200, Some("approved")), "{r}");
    assert_eq!(status(&tg, &a).await, ("approved".to_string(), Some("webhook:security".to_string())));
    let (s, r) = http.decide_signed(&url, &body, &sig).await;
    assert_eq!((s, r["code"].as_str()), (401, Some("replayed_signature")), "{r}");
    // And still not at B after it was used.
    let (s, r) = http.decide_signed(&format!("{}/v1/approvals/{b}/decision", tg.base), &body, &sig).await;
    assert_eq!((s, r["code"].as_str()), (401, Some("signature_for_another_action")), "{r}");
    assert_eq!(status(&tg, &b).await, pending_row(), "B is still pending");

    // B's own signed decision is accepted.
    let deny = json!({"id": b, "decision": "deny"}).to_string();
    let url = format!("{}/v1/approvals/{b}/deny", tg.base);
    let (s, r) = http.decide_signed(&url, &deny, &sign(now_secs(), deny.as_bytes())).await;
    assert_eq!((s, r["decision"].as_str()), (200, Some("denied")), "{r}");
    let decided = tg.gw.store.audit(&Default::default()).await.unwrap();
    assert_eq!(decided.iter().filter(|r| r.kind == "approval.decided").count(), 2, "one decision each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_decision_must_name_its_action_and_verdict_in_the_signed_body() {
    set_secret();
    let (tg, _up, _rx, a, _b) = two_pending_actions("100ms").await;
    let http = Http::new();
    let at = |path: &str| format!("{}/v1/approvals/{a}/{path}", tg.base);

    // A signed empty body binds nothing: refused on /approve, /deny and /decision.
    for path in ["approve", "deny", "decision"] {
        let (s, r) = http.decide_signed(&at(path), "", &sign(now_secs(), b"")).await;
        assert_eq!((s, r["code"].as_str()), (400, Some("bad_request")), "{path}: {r}");
        assert!(r["message"].as_str().unwrap().starts_with("id, decision: required"), "{path}: {r}");
    }
    // Each field is required, and the answer names the one missing.
    let cases = [
        ("approve", json!({}), "id, decision:"),
        ("approve", json!({"reason": "fine"}), "id, decision:"),
        ("approve", json!({"decision": "approve"}), "id:"),
        ("decision", json!({"decision": "approve", "reason": "fine"}), "id:"),
        ("approve", json!({"id": a}), "decision:"),
        ("deny", json!({"id": a, "reason": "no"}), "decision:"),
    ];
    for (path, body, names) in cases {
        let body = body.to_string();
        let (s, r) = http.decide_signed(&at(path), &body, &sign(now_secs(), body.as_bytes())).await;
        assert_eq!((s, r["code"].as_str()), (400, Some("bad_request")), "{path} {body}: {r}");
        assert!(r["message"].as_str().unwrap().starts_with(names), "{path} {body}: {r}");
    }
    assert_eq!(status(&tg, &a).await, pending_row(), "nothing was decided");

    // Signed "approve" for A, posted to A's /deny: refused (not turned into a denial).
    let body = json!({"id": a, "decision": "approve"}).to_string();
    let sig = sign(now_secs(), body.as_bytes());
    let (s, r) = http.decide_signed(&at("deny"), &body, &sig).await;
    assert_eq!((s, r["code"].as_str()), (400, Some("bad_request")), "{r}");
    assert!(r["message"].as_str().unwrap().starts_with("decision:"), "{r}");
    assert_eq!(status(&tg, &a).await, pending_row(), "A was not denied");

    // The refusal did not spend the signature: delivered to /approve, it approves.
    let (s, r) = http.decide_signed(&at("approve"), &body, &sig).await;
    assert_eq!((s, r["decision"].as_str()), (200, Some("approved")), "{r}");
    assert_eq!(status(&tg, &a).await, ("approved".to_string(), Some("webhook:security".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_decisions_one_wins_and_the_call_runs_once() {
    set_secret();
    let up = fixture_http("fs").await;
    let tg = builder(&up.url, &policy("page", "", "10m"), "[approval]\nwait = \"300ms\"\n").spawn().await;
    // The agent makes the call from six sessions at once (retries, racing):
    // they share one pending action, and each is told it is pending.
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(Arc::new(tg.agent(if i % 2 == 0 { Era::Legacy } else { Era::Modern }).await.0));
    }
    let fire = |agents: &Vec<Arc<AgentService>>| {
        agents
            .iter()
            .map(|a| {
                let a = a.clone();
                tokio::spawn(
                    async move { a.peer().call_tool(call("fs__echo", json!({"message": "once"}))).await.unwrap() },
                )
            })
            .collect::<Vec<_>>()
    };
    let mut ids = std::collections::BTreeSet::new();
    for w in fire(&agents) {
        let r = w.await.unwrap();
        ids.insert(r.structured_content.expect("pending")["approval_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one action for the six identical calls");
    let id = ids.into_iter().next().unwrap();

    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(approver(&tg, "acme").await);
    }
    let http = Arc::new(Http::new());
    let mut deciders = Vec::new();
    for i in 0..50 {
        let (http, base, id, key) = (http.clone(), tg.base.clone(), id.clone(), keys[i % 5].clone());
        // All approve, so the one-execution assertion below applies on every run.
        deciders.push(tokio::spawn(async move { http.decide_with_key(&base, &id, &key, "approve").await }));
    }
    let mut wins = Vec::new();
    let mut standing = Vec::new();
    for d in deciders {
        let (s, body) = d.await.unwrap();
        match s {
            200 => wins.push(body["decision"].as_str().unwrap().to_string()),
            409 => standing.push(body["decision"].as_str().unwrap().to_string()),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one decision wins");
    assert_eq!(standing.len(), 49);
    assert!(standing.iter().all(|d| *d == wins[0]), "every later decider is told the one that stands");

    // Every session repeats the call at once: one runs it, all get its result.
    let mut answers = Vec::new();
    for w in fire(&agents) {
        answers.push(w.await.unwrap());
    }
    assert_eq!(wins, ["approved"]);
    assert!(answers.iter().all(|a| text_of(a) == "echo: once"), "every session gets the one result");
    assert_eq!(upstream_calls(&up.url, "echo").await, 1, "the approved call ran exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_that_is_down_is_retried_and_every_attempt_recorded() {
    set_secret();
    let up = fixture_http("fs").await;
    let mut rx = receiver(2).await;
    let server = "[approval]\nwait = \"100ms\"\nwebhook_backoff = \"50ms\"\nwebhook_attempts = 5\n";
    let tg = builder(&up.url, &policy("security", &hook(&rx.url), "10m"), server).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let r = agent.peer().call_tool(call("fs__echo", json!({"message": "x"}))).await.unwrap();
    let id = r.structured_content.unwrap()["approval_id"].as_str().unwrap().to_string();
    let note = tokio::time::timeout(WAIT, rx.payloads.recv()).await.expect("delivered in the end").unwrap();
    assert_eq!(note["id"], id.as_str());
    assert_eq!(rx.attempts.load(Ordering::SeqCst), 3, "two refusals, then delivered");

    let key = approver(&tg, "acme").await;
    let url = format!("{}/v1/approvals/{id}/deliveries", tg.base);
    let d = eventually("the delivery recorded as delivered", || async {
        let (_, body) = Http::new().get(&url, &key).await;
        (body["deliveries"][0]["state"] == "delivered").then_some(body)
    })
    .await;
    let log = d["deliveries"][0]["log"].as_array().unwrap();
    let statuses: Vec<i64> = log.iter().map(|a| a["http_status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    let cli = tollgate_cli(tg.dir(), &["approvals", "deliveries", &id]);
    assert!(cli.contains("delivered after 3 attempt(s)"), "{cli}");
    assert_eq!(cli.matches("HTTP 503").count(), 2, "{cli}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_actions_survive_a_restart_and_run_once_after_it() {
    set_secret();
    let up = fixture_http("fs").await;
    let make = || builder(&up.url, &policy("page", "", "10m"), "[approval]\nwait = \"100ms\"\n");
    let tg = make().spawn().await;
    let agent_key = tg.key.clone();
    let (agent, _) = tg.agent(Era::Legacy).await;
    let r = agent.peer().call_tool(call("fs__echo", json!({"message": "later"}))).await.unwrap();
    let id = r.structured_content.unwrap()["approval_id"].as_str().unwrap().to_string();
    drop(agent);
    assert_eq!(held(&tg).await, 100_000);

    let tg = tg.restart(make()).await;
    let key = approver(&tg, "acme").await;
    let listed = pending(&tg, &key).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str(), "still pending after the restart");
    assert_eq!(held(&tg).await, 100_000, "its hold outlived the process");
    let (s, _) = Http::new().decide_with_key(&tg.base, &id, &key, "approve").await;
    assert_eq!(s, 200);

    let (agent, _) = http_agent_with(&tg.mcp_url(), Era::Legacy, None, Some(&agent_key)).await;
    let r = agent.peer().call_tool(call("fs__echo", json!({"message": "later"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: later", "the repeated call resumes the approved action");
    assert_eq!(upstream_calls(&up.url, "echo").await, 1);
    let (spent, held_now) = {
        let usage = tg
            .gw
            .store
            .budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start)
            .await
            .unwrap();
        let u = usage.iter().find(|u| u.budget.id == "eng").unwrap().clone();
        (u.spent, u.held)
    };
    assert_eq!((spent, held_now), (100_000, 0), "charged once, nothing left held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_action_releases_its_hold_and_the_agent_is_told() {
    set_secret();
    let up = fixture_http("fs").await;
    let tg = builder(&up.url, &policy("page", "", "1s"), "[approval]\nwait = \"20s\"\n").spawn().await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    let r = agent.peer().call_tool(call("fs__echo", json!({"message": "slowpoke"}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("expired"), "{}", text_of(&r));
    assert_eq!(held(&tg).await, 0, "the hold is released");
    assert_eq!(upstream_calls(&up.url, "echo").await, 0);
    let audit = tg.gw.store.audit(&Default::default()).await.unwrap();
    let expired = audit.iter().find(|r| r.kind == "approval.expired").expect("the audit says expired");
    assert_eq!(expired.decision.as_deref(), Some("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_above_sends_only_costly_calls_to_approval() {
    set_secret();
    let up = fixture_http("fs").await;
    let pol = policy("page", "", "10m").replace("limit = \"5.00\"", "limit = \"50.00\"")
        + "\n[[grant]]\nid = \"echo-cheap\"\nprincipals = [\"team:eng\"]\ntools = [\"fs__echo\"]\neffect = \"allow\"\napprove_above = \"0.50\"\n";
    let tg =
        builder(&up.url, &pol.replace("effect = \"approve\"", "effect = \"allow\""), "[approval]\nwait = \"100ms\"\n")
            .spawn()
            .await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let cheap = agent.peer().call_tool(call("fs__echo", json!({"message": "cheap"}))).await.unwrap();
    assert_eq!(text_of(&cheap), "echo: cheap", "0.10 is under approve_above");
    let costly = agent.peer().call_tool(call("fs__add", json!({"a": 1, "b": 2}))).await.unwrap();
    assert_eq!(costly.structured_content.as_ref().unwrap()["status"], "pending", "1.00 is above 0.50");
    assert_eq!(upstream_calls(&up.url, "add").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_feed_sees_an_action_appear_and_resolve() {
    use futures::StreamExt;
    set_secret();
    let up = fixture_http("fs").await;
    let tg = builder(&up.url, &policy("page", "", "10m"), "").spawn().await;
    let key = approver(&tg, "acme").await;
    let ws_url = format!("{}/v1/approvals/stream", tg.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&ws_url, &key)).await.expect("feed opens");
    let mut next = async || -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, ws.next()).await.expect("feed message").unwrap().unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap();
            }
        }
    };
    assert_eq!(next().await["type"], "snapshot");
    let (agent, _) = tg.agent(Era::Legacy).await;
    let waiting =
        tokio::spawn(async move { agent.peer().call_tool(call("fs__echo", json!({"message": "fed"}))).await });
    let appeared = next().await;
    assert_eq!(
        (appeared["type"].as_str(), appeared["approval"]["status"].as_str()),
        (Some("approval"), Some("pending"))
    );
    let id = appeared["approval"]["id"].as_str().unwrap().to_string();
    let (s, _) = Http::new().decide_with_key(&tg.base, &id, &key, "approve").await;
    assert_eq!(s, 200);
    let resolved = loop {
        let m = next().await;
        if m["approval"]["status"] == "approved" {
            break m;
        }
    };
    assert_eq!(resolved["approval"]["id"], id.as_str());
    assert_eq!(text_of(&waiting.await.unwrap().unwrap()), "echo: fed");

    // Another org's approver never sees this org's actions; a wrong key gets no feed.
    let (mut other, _) =
        tokio_tungstenite::connect_async(ws_request(&ws_url, &approver(&tg, "globex").await)).await.unwrap();
    let snap = tokio::time::timeout(WAIT, other.next()).await.unwrap().unwrap().unwrap();
    let snap: Value = serde_json::from_str(snap.to_text().unwrap()).unwrap();
    assert_eq!(snap["approvals"], json!([]));
    let _ = other.close(None).await;
    assert!(tokio_tungstenite::connect_async(ws_request(&ws_url, "tg_wrong")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_polled_to_completion_across_a_restart_and_cancelling_one_releases_its_hold() {
    set_secret();
    let up = fixture_http("fs").await;
    let make = || builder(&up.url, &policy("page", "", "10m"), "");
    let tg = make().spawn().await;
    let agent_key = tg.key.clone();
    let agent = tasks_agent(&tg.mcp_url(), &agent_key).await;
    let task = match agent.peer().call_tool_once(call("fs__echo", json!({"message": "tasked"}))).await.unwrap() {
        CallToolResponse::Task(t) => t.task,
        other => panic!("expected a task, got {other:?}"),
    };
    assert_eq!(task.status, TaskStatus::Working);
    assert!(task.status_message.as_deref().unwrap_or("").contains("awaiting approval"));
    let got = agent.peer().get_task(GetTaskParams::new(task.task_id.clone())).await.unwrap();
    assert_eq!(got.task.status(), TaskStatus::Working);
    drop(agent);

    let tg = tg.restart(make()).await;
    let agent = tasks_agent(&tg.mcp_url(), &agent_key).await;
    let got = agent.peer().get_task(GetTaskParams::new(task.task_id.clone())).await.unwrap();
    assert_eq!(got.task.status(), TaskStatus::Working, "the task survived the restart");
    // Another key cannot see it.
    let (stranger_key, _) = tg.new_key("eng", "acme").await;
    let stranger = tasks_agent(&tg.mcp_url(), &stranger_key).await;
    assert!(stranger.peer().get_task(GetTaskParams::new(task.task_id.clone())).await.is_err());

    let key = approver(&tg, "acme").await;
    let (s, _) = Http::new().decide_with_key(&tg.base, &task.task_id, &key, "approve").await;
    assert_eq!(s, 200);
    let done = eventually("the task completes", || async {
        let g = agent.peer().get_task(GetTaskParams::new(task.task_id.clone())).await.unwrap();
        (g.task.status() == TaskStatus::Completed).then_some(g)
    })
    .await;
    let payload = serde_json::to_value(&done.task).unwrap();
    assert_eq!(payload["result"]["content"][0]["text"], "echo: tasked", "{payload}");
    assert_eq!(upstream_calls(&up.url, "echo").await, 1);

    // A second task, cancelled: its hold goes back, nothing runs.
    let second = match agent.peer().call_tool_once(call("fs__echo", json!({"message": "never"}))).await.unwrap() {
        CallToolResponse::Task(t) => t.task,
        other => panic!("expected a task, got {other:?}"),
    };
    assert_eq!(held(&tg).await, 100_000);
    agent.peer().cancel_task(CancelTaskParams::new(second.task_id.clone())).await.unwrap();
    let got = agent.peer().get_task(GetTaskParams::new(second.task_id.clone())).await.unwrap();
    assert_eq!(got.task.status(), TaskStatus::Cancelled);
    assert_eq!(held(&tg).await, 0, "cancelling released the hold");
    let (s, body) = Http::new().decide_with_key(&tg.base, &second.task_id, &key, "approve").await;
    assert_eq!((s, body["decision"].as_str()), (409, Some("cancelled")));
    assert_eq!(upstream_calls(&up.url, "echo").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_user_approves_or_declines_through_elicitation_in_both_eras() {
    set_secret();
    let up = fixture_http("fs").await;
    let pol = policy("asker", "", "10m") + "\n[[route]]\nid = \"asker\"\npage = true\nuser = true\n";
    let tg = builder(&up.url, &pol, "[approval]\nwait = \"5s\"\n").spawn().await;
    let mut runs = 0;
    for era in [Era::Legacy, Era::Modern] {
        let message = format!("{era:?} yes");
        let (agent, mut heard) = tg.agent_answering(era, Some("yes")).await;
        // rmcp's client answers an input_required result through its handler (MRTR).
        let r = agent.call_tool(call("fs__echo", json!({"message": message}))).await.unwrap();
        assert_eq!(text_of(&r), format!("echo: {message}"), "{era:?}: accepted means approved");
        runs += 1;
        assert!(matches!(heard.try_recv(), Ok(Heard::Elicited)), "{era:?}: the user was asked");

        let (agent, _) = tg.agent_answering(era, Some("decline")).await;
        let r = agent.call_tool(call("fs__echo", json!({"message": format!("{era:?} no")}))).await.unwrap();
        assert_eq!(r.is_error, Some(true));
        assert!(text_of(&r).contains("denied by user"), "{era:?}: {}", text_of(&r));
    }
    assert_eq!(upstream_calls(&up.url, "echo").await, runs);
    assert_eq!(held(&tg).await, 0, "declined actions released their holds");
    let decided: Vec<String> = tg
        .gw
        .store
        .audit(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "approval.decided")
        .map(|r| r.body)
        .collect();
    assert_eq!(decided.len(), 4);
    assert!(decided.iter().all(|b| b.contains(&format!("user (key:{})", tg.key_id))), "{decided:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and Node (installed by .ci/run)"]
async fn an_approver_approves_in_the_page_in_a_real_browser() {
    use tokio::io::AsyncBufReadExt;
    set_secret();
    let up = fixture_http("fs").await;
    let tg = builder(&up.url, &policy("page", "", "10m"), "").spawn().await;
    let key = approver(&tg, "acme").await;
    let mut browser = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/node/approvals-page.mjs"))
        .args([&tg.base, &key, "fs__echo"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = tokio::io::BufReader::new(browser.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("page loads").unwrap();
    assert_eq!(line.as_deref(), Some("CONNECTED"), "the page connected to the live feed");

    // The action appears while the page is open; the approver clicks.
    let (agent, _) = tg.agent(Era::Legacy).await;
    let waiting =
        tokio::spawn(async move { agent.peer().call_tool(call("fs__echo", json!({"message": "clicked"}))).await });
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("approved in time").unwrap().unwrap();
    let id = line.strip_prefix("APPROVED ").expect("the page approved it").to_string();
    assert_eq!(text_of(&waiting.await.unwrap().unwrap()), "echo: clicked");
    assert!(browser.wait().await.unwrap().success());
    let row = tg.gw.approvals.get(&id.as_str().into()).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "approved");
    assert_eq!(row.decision_reason.as_deref(), Some("clicked in the browser"));
    assert!(row.decided_by.unwrap().contains("(approver)"));
    assert_eq!(upstream_calls(&up.url, "echo").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_call_hears_progress_until_it_is_decided() {
    set_secret();
    let up = fixture_http("fs").await;
    let tg = builder(&up.url, &policy("page", "", "10m"), "[approval]\nwait = \"60s\"\n").spawn().await;
    let (agent, mut heard) = tg.agent(Era::Legacy).await;
    let waiting =
        tokio::spawn(async move { agent.peer().call_tool(call("fs__echo", json!({"message": "tick"}))).await });
    // The approver decides only once the agent has been told it is waiting.
    let first = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Heard::Progress(p)) = heard.recv().await {
                return p;
            }
        }
    })
    .await
    .expect("a progress notification while waiting");
    assert!(first.message.as_deref().unwrap_or("").contains("awaiting approval"), "{first:?}");
    let key = approver(&tg, "acme").await;
    let (_, listed) = Http::new().get(&format!("{}/v1/approvals?status=pending", tg.base), &key).await;
    let id = listed["approvals"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = Http::new().decide_with_key(&tg.base, &id, &key, "approve").await;
    assert_eq!(s, 200);
    assert_eq!(text_of(&waiting.await.unwrap().unwrap()), "echo: tick");
}

/// docs/approvals.md's two decision blocks, run as written with bash (curl,
/// openssl): an approver's key approves one pending action, the signed
/// callback denies the other, naming its approver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_docs_blocks_run_as_written() {
    set_secret();
    let (tg, _up, _rx, a, b) = two_pending_actions("100ms").await;
    let key = approver(&tg, "acme").await;
    let work = tempfile::tempdir().unwrap();

    let block = doc_block("docs/approvals.md", "decide-with-key");
    let (ok, out) = run_doc_block(work.path(), &block, &[("TG", &tg.base), ("ID", &a), ("APPROVER_KEY", &key)]).await;
    assert!(ok && out.contains("approved"), "{block}\n---\n{out}");
    assert_eq!(status(&tg, &a).await.0, "approved");

    let block = doc_block("docs/approvals.md", "decide-signed");
    let (ok, out) = run_doc_block(work.path(), &block, &[("TG", &tg.base), ("ID", &b), ("SECRET", SECRET)]).await;
    assert!(ok && out.contains("denied"), "{block}\n---\n{out}");
    let (state, by) = status(&tg, &b).await;
    assert_eq!(state, "denied");
    assert!(by.as_deref().is_some_and(|d| d.contains("alice")), "decided by {by:?}");
}
