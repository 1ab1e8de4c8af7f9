//! Governance end to end: keys, grants, validation, rate limits, hot reload
//! and the audit trail, through real agents and a real upstream.

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate::store::AuditFilter;

use crate::harness::*;

const FS_POLICY: &str = r#"
org = "acme"

[[grant]]
id = "echo-short"
description = "echo, with short messages"
principals = ["team:eng"]
tools = ["fs__echo"]
effect = "allow"
arguments = { properties = { message = { maxLength = 20 } } }

[[grant]]
id = "add"
principals = ["team:eng"]
tools = ["fs__add"]
effect = "allow"

[[grant]]
id = "no-big-sums"
description = "sums over 1000 go through finance"
principals = ["*"]
tools = ["fs__add"]
effect = "deny"
when = { properties = { a = { minimum = 1000 } }, required = ["a"] }

[[grant]]
id = "log-limited"
principals = ["team:eng"]
tools = ["fs__log"]
effect = "allow"
rate = "2/min"

[[grant]]
id = "mutate-needs-approval"
principals = ["team:eng"]
tools = ["fs__mutate"]
effect = "approve"
"#;

pub fn params(name: &str, a: Value) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = a.as_object().cloned();
    p
}

/// The outcome records of calls, in chain order, as sealed bodies.
pub async fn call_records(tg: &TestGateway) -> Vec<Value> {
    let filter = AuditFilter { kind: Some("call".into()), ..AuditFilter::default() };
    tg.gw.store.audit(&filter).await.unwrap().iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect()
}

async fn governed_gateway() -> (TestGateway, Listening) {
    let up = fixture_http("fs").await;
    let tg = TestGateway::builder()
        // A call that needs approval is answered "pending" after this wait.
        .server("[server]\nlisten = \"127.0.0.1:0\"\n[approval]\nwait = \"200ms\"\n")
        .manifest("fs", remote_manifest("fs", "http", &up.url))
        .policy("fs", FS_POLICY)
        .spawn()
        .await;
    (tg, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_shows_only_what_grants_allow_and_hidden_tools_are_unknown() {
    let (tg, up) = governed_gateway().await;
    for era in [Era::Legacy, Era::Modern] {
        let (agent, _) = tg.agent(era).await;
        let mut names: Vec<String> =
            agent.peer().list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["fs__add", "fs__echo", "fs__log", "fs__mutate"], "{era:?}");
        let err = agent.peer().call_tool(params("fs__crash", json!({}))).await.unwrap_err();
        assert!(err.to_string().contains("unknown tool: fs__crash"), "{err}");
    }
    assert_eq!(upstream_calls(&up.url, "crash").await, 0);
    // A key of another org sees nothing and can call nothing.
    let (other, _) = tg.new_key("eng", "globex").await;
    let (agent, _) = http_agent_with(&tg.mcp_url(), Era::Modern, None, Some(&other)).await;
    assert!(agent.peer().list_all_tools().await.unwrap().is_empty());
    let err = agent.peer().call_tool(params("fs__echo", json!({"message": "hi"}))).await.unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
    assert_eq!(upstream_calls(&up.url, "echo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_invalid_and_allowed_calls_each_leave_their_audit_record() {
    let (tg, up) = governed_gateway().await;
    let (agent, _) = tg.agent(Era::Legacy).await;

    let denied = agent.peer().call_tool(params("fs__add", json!({"a": 5000, "b": 1}))).await.unwrap();
    assert_eq!(denied.is_error, Some(true));
    let text = text_of(&denied);
    assert!(text.contains("no-big-sums") && text.contains("finance"), "names the rule and why: {text}");

    let invalid = agent.peer().call_tool(params("fs__echo", json!({"message": "x".repeat(30)}))).await.unwrap();
    assert_eq!(invalid.is_error, Some(true));
    assert!(text_of(&invalid).contains("/message"), "{}", text_of(&invalid));
    let wrong_type = agent.peer().call_tool(params("fs__add", json!({"a": 1, "b": "two"}))).await.unwrap();
    assert!(text_of(&wrong_type).contains("/b"), "the tool's own schema: {}", text_of(&wrong_type));

    let approve = agent.peer().call_tool(params("fs__mutate", json!({"description": "x"}))).await.unwrap();
    assert_eq!(approve.is_error, Some(true));
    assert!(text_of(&approve).contains("waiting for approval"), "{}", text_of(&approve));
    assert_eq!(approve.structured_content.as_ref().unwrap()["status"], "pending");

    let ok = agent.peer().call_tool(params("fs__echo", json!({"message": "hello"}))).await.unwrap();
    assert_eq!(text_of(&ok), "echo: hello");

    // The upstream never saw the refused calls.
    assert_eq!(upstream_calls(&up.url, "add").await, 0);
    assert_eq!(upstream_calls(&up.url, "mutate").await, 0);
    assert_eq!(upstream_calls(&up.url, "echo").await, 1);

    let records = call_records(&tg).await;
    let decisions: Vec<(&str, &str)> =
        records.iter().map(|r| (r["tool"].as_str().unwrap(), r["decision"].as_str().unwrap())).collect();
    assert_eq!(
        decisions,
        [
            ("fs__add", "denied"),
            ("fs__echo", "invalid"),
            ("fs__add", "invalid"),
            ("fs__mutate", "needs_approval"),
            ("fs__echo", "allowed")
        ]
    );
    let denied = &records[0];
    assert_eq!(denied["grants"], json!(["no-big-sums"]));
    assert_eq!(denied["principal"], format!("key:{}", tg.key_id));
    assert_eq!(denied["org"], "acme");
    assert_eq!(denied["upstream"], "fs");
    assert_eq!(denied["status"], "not_executed");
    assert_eq!(denied["arguments"], json!({"a": 5000, "b": 1}));
    let allowed = &records[4];
    assert_eq!(allowed["grants"], json!(["echo-short"]));
    assert_eq!(allowed["status"], "ok");
    assert!(allowed["result_size"].as_u64().unwrap() > 0);
    for stage in ["identify", "resolve", "authorize", "validate", "limit", "audit_intent", "execute"] {
        assert!(allowed["stages_us"][stage].is_u64(), "stage {stage} timed: {allowed}");
    }
    // Write-ahead: the allowed call's intent precedes its outcome in the chain.
    let intent = tg
        .gw
        .store
        .audit(&AuditFilter { call_id: allowed["call_id"].as_str().map(String::from), ..AuditFilter::default() })
        .await
        .unwrap();
    let kinds: Vec<&str> = intent.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["call.intent", "call"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_apply_per_grant_and_principal() {
    let (tg, up) = governed_gateway().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    for i in 0..2 {
        let r = agent.peer().call_tool(params("fs__log", json!({"message": format!("m{i}")}))).await.unwrap();
        assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    }
    let limited = agent.peer().call_tool(params("fs__log", json!({"message": "m3"}))).await.unwrap();
    assert_eq!(limited.is_error, Some(true));
    assert!(text_of(&limited).contains("rate limit of grant `log-limited`"), "{}", text_of(&limited));
    // Another principal has its own allowance.
    let (other, _) = tg.new_key("eng", "acme").await;
    let (agent2, _) = http_agent_with(&tg.mcp_url(), Era::Modern, None, Some(&other)).await;
    let r = agent2.peer().call_tool(params("fs__log", json!({"message": "other"}))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    assert_eq!(upstream_calls(&up.url, "log").await, 3);
    let records = call_records(&tg).await;
    assert_eq!(records.iter().filter(|r| r["decision"] == "rate_limited").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unknown_keys_get_401_with_a_json_rpc_body() {
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    for auth in [None, Some("Bearer tg_000000000000000000000000000000000000000000000000"), Some("Basic abc")] {
        let mut req = reqwest::Client::new()
            .post(tg.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], -32001, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("unauthorized"), "{v}");
    }
    // The WebSocket endpoint refuses the upgrade without a key.
    let ws = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let err = tokio_tungstenite::connect_async(ws).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_at_once_on_open_sessions() {
    let (tg, _up) = governed_gateway().await;
    let (secret, id) = cli_key(tg.dir(), "eng", "acme");
    let (legacy, _) = http_agent_with(&tg.mcp_url(), Era::Legacy, None, Some(&secret)).await;
    let (modern, _) = http_agent_with(&tg.mcp_url(), Era::Modern, None, Some(&secret)).await;
    let ws = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let (socket, _) = tokio_tungstenite::connect_async(ws_request(&ws, &secret)).await.unwrap();
    use rmcp::ServiceExt;
    let over_ws = ().serve(tollgate::ws::tungstenite::<rmcp::RoleClient, _>(socket)).await.unwrap();
    for agent in [legacy.peer(), modern.peer(), over_ws.peer()] {
        let r = agent.call_tool(params("fs__echo", json!({"message": "before"}))).await.unwrap();
        assert_eq!(text_of(&r), "echo: before");
    }

    let out = tollgate_cli(tg.dir(), &["keys", "revoke", &id]);
    assert!(out.contains(&id), "{out}");

    for (label, agent) in [("legacy", legacy.peer()), ("modern", modern.peer()), ("ws", over_ws.peer())] {
        let err = agent.call_tool(params("fs__echo", json!({"message": "after"}))).await.unwrap_err();
        assert!(
            ["revoked", "401", "Auth required"].iter().any(|s| err.to_string().contains(s)),
            "{label}: a revoked key is refused: {err}"
        );
    }
    let listed = tollgate_cli(tg.dir(), &["keys", "list", "--json"]);
    let keys: Value = serde_json::from_str(&listed).unwrap();
    let row = keys.as_array().unwrap().iter().find(|k| k["id"] == id).unwrap();
    assert!(row["revoked_at"].is_string(), "{row}");
    assert!(!listed.contains(&secret), "secrets are never listed");
    let changes = tg.gw.store.audit(&AuditFilter { kind: Some("key.revoke".into()), ..Default::default() }).await;
    assert_eq!(changes.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_file_keeps_the_old_policy_and_a_fixed_one_takes_effect() {
    let (tg, up) = governed_gateway().await;
    let (agent, mut heard) = tg.agent(Era::Legacy).await;
    let mut attempts = tg.gw.policies.attempts();
    let policy_file = tg.dir().join("policies/fs.toml");

    // Broken: a grant with an unknown effect.
    std::fs::write(&policy_file, FS_POLICY.replace("effect = \"approve\"", "effect = \"sometimes\"")).unwrap();
    tokio::time::timeout(WAIT, attempts.changed()).await.expect("reload attempted").unwrap();
    let status = tg.gw.policies.status();
    let error = status.last_error.expect("the error is kept");
    assert!(error.contains("fs.toml:") && error.contains("effect"), "{error}");
    let ready: Value = reqwest::get(format!("{}/readyz", tg.base)).await.unwrap().json().await.unwrap();
    assert!(ready["policy"]["last_error"].as_str().unwrap().contains("sometimes"), "{ready}");
    // The old policy is in force.
    let r = agent.peer().call_tool(params("fs__echo", json!({"message": "still"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: still");
    let names: Vec<String> = agent.peer().list_all_tools().await.unwrap().into_iter().map(|t| t.name.into()).collect();
    assert!(!names.contains(&"fs__touch".to_string()));

    // Fixed, and widened: fs__touch becomes callable and agents are told.
    let widened = format!(
        "{FS_POLICY}\n[[grant]]\nid = \"touch\"\nprincipals = [\"team:eng\"]\ntools = [\"fs__touch\"]\neffect = \"allow\"\n"
    );
    std::fs::write(&policy_file, widened).unwrap();
    tokio::time::timeout(WAIT, attempts.changed()).await.expect("reload attempted").unwrap();
    assert!(tg.gw.policies.status().last_error.is_none());
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Heard::ToolsChanged) = heard.recv().await {
                return;
            }
        }
    })
    .await
    .expect("agents hear that their tool list changed");
    let names: Vec<String> = agent.peer().list_all_tools().await.unwrap().into_iter().map(|t| t.name.into()).collect();
    assert!(names.contains(&"fs__touch".to_string()), "{names:?}");
    let r = agent.peer().call_tool(params("fs__touch", json!({"uri": "fixture://greeting"}))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    assert_eq!(upstream_calls(&up.url, "touch").await, 1);

    let kinds: Vec<String> =
        tg.gw.store.audit(&AuditFilter::default()).await.unwrap().into_iter().map(|r| r.kind).collect();
    let refused = kinds.iter().position(|k| k == "policy.refused").expect("refusal audited");
    let changed = kinds.iter().position(|k| k == "policy.change").expect("change audited");
    assert!(refused < changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_the_decision_and_every_grant_considered() {
    let (tg, _up) = governed_gateway().await;
    let out = tollgate_cli(
        tg.dir(),
        &["explain", "--key", &tg.key, "--tool", "fs__add", "--args", r#"{"a": 5000, "b": 1}"#, "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "deny", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("no-big-sums"), "{v}");
    let grants = v["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 5, "every grant is listed");
    let add = grants.iter().find(|g| g["grant"] == "add").unwrap();
    assert_eq!(add["applies"], true);
    let echo = grants.iter().find(|g| g["grant"] == "echo-short").unwrap();
    assert_eq!(echo["tool"], Value::Null);
    assert!(echo["source"].as_str().unwrap().contains("fs.toml:"), "{echo}");

    let text =
        tollgate_cli(tg.dir(), &["explain", "--key", &tg.key_id, "--tool", "fs__add", "--args", r#"{"a": 1, "b": 1}"#]);
    assert!(text.starts_with("decision: allow"), "{text}");
    assert!(text.contains("no-big-sums [deny]") && text.contains("fails"), "{text}");
    let hidden = tollgate_cli(tg.dir(), &["explain", "--key", &tg.key, "--tool", "fs__crash"]);
    assert!(hidden.contains("decision: deny") && hidden.contains("hidden"), "{hidden}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_a_tampered_record() {
    let (tg, _up) = governed_gateway().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    for i in 0..5 {
        agent.peer().call_tool(params("fs__echo", json!({"message": format!("m{i}")}))).await.unwrap();
    }
    let out = tollgate_cli(tg.dir(), &["audit", "verify"]);
    assert!(out.starts_with("ok: "), "{out}");
    let rows = tg.gw.store.audit(&AuditFilter::default()).await.unwrap();
    let victim = &rows[4];

    // Change one row behind the gateway's back, in the database file.
    let db = tg.dir().join("tollgate.db");
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit SET body = replace(body, '\"m1\"', '\"mX\"') WHERE seq = ?")
        .bind(victim.seq)
        .execute(&pool)
        .await
        .unwrap();
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(tg.dir().join("tollgate.toml"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("seq={}", victim.seq)) && err.contains(&victim.id), "{err}");

    // Restore it, then change an indexed column instead.
    sqlx::query("UPDATE audit SET body = ? WHERE seq = ?")
        .bind(&victim.body)
        .bind(victim.seq)
        .execute(&pool)
        .await
        .unwrap();
    assert!(tollgate_cli(tg.dir(), &["audit", "verify"]).starts_with("ok: "));
    let target = rows.iter().find(|r| r.kind == "call").unwrap();
    sqlx::query("UPDATE audit SET decision = 'denied' WHERE seq = ?").bind(target.seq).execute(&pool).await.unwrap();
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(tg.dir().join("tollgate.toml"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("seq={}", target.seq)) && err.contains("decision"), "{err}");
    // And a deleted row breaks the chain at the one after it.
    sqlx::query("UPDATE audit SET decision = 'allowed' WHERE seq = ?").bind(target.seq).execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM audit WHERE seq = 2").execute(&pool).await.unwrap();
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(tg.dir().join("tollgate.toml"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("seq=3"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_writes_json_lines_since_a_time() {
    let (tg, _up) = governed_gateway().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    agent.peer().call_tool(params("fs__echo", json!({"message": "exported"}))).await.unwrap();
    let out = tollgate_cli(tg.dir(), &["audit", "export", "--since", "1h", "--format", "jsonl"]);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert!(lines.iter().any(|l| l["kind"] == "call" && l["arguments"]["message"] == "exported"), "{out}");
    assert!(lines.iter().all(|l| l["hash"].as_str().is_some_and(|h| h.len() == 64)));
    let future = tollgate_cli(tg.dir(), &["audit", "export", "--since", "2999-01-01"]);
    assert!(future.is_empty(), "{future}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (the mcp SDK)"]
async fn python_agent_calls_are_governed_and_audited() {
    let (tg, up) = governed_gateway().await;
    let auth = format!("Authorization: Bearer {}", tg.key);
    for mode in ["legacy", "auto"] {
        let plan = json!([
            {"op": "list_tools"},
            {"op": "call", "name": "fs__add", "args": {"a": 5000, "b": 1}},
            {"op": "call", "name": "fs__echo", "args": {"message": "x".repeat(30)}},
            {"op": "call", "name": "fs__echo", "args": {"message": "py"}},
            {"op": "call", "name": "fs__crash", "args": {}}
        ]);
        let report = crate::thirdparty::python_agent(&["--http", &tg.mcp_url(), "--header", &auth], mode, plan).await;
        let r = &report["results"];
        let names: Vec<&str> = r[0]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
        assert!(!names.contains(&"fs__crash") && names.contains(&"fs__echo"), "{mode}: {names:?}");
        assert_eq!(r[1]["isError"], true, "{mode}: {}", r[1]);
        assert!(r[1].to_string().contains("no-big-sums"), "{mode}: {}", r[1]);
        assert_eq!(r[2]["isError"], true, "{mode}: {}", r[2]);
        assert!(r[2].to_string().contains("/message"), "{mode}: {}", r[2]);
        assert_eq!(r[3]["content"][0]["text"], "echo: py", "{mode}: {}", r[3]);
        assert_eq!(r[4]["error"]["code"], -32602, "{mode}: {}", r[4]);
    }
    assert_eq!(upstream_calls(&up.url, "add").await, 0);
    assert_eq!(upstream_calls(&up.url, "crash").await, 0);
    assert_eq!(upstream_calls(&up.url, "echo").await, 2);
    let decisions: Vec<String> =
        call_records(&tg).await.iter().map(|r| format!("{} {}", r["tool"], r["decision"])).collect();
    let expected =
        [r#""fs__add" "denied""#, r#""fs__echo" "invalid""#, r#""fs__echo" "allowed""#, r#""fs__crash" "denied""#];
    assert_eq!(decisions, [expected, expected].concat(), "one record per call, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_needs_a_live_key_and_a_revoked_one_stops_at_once() {
    use rmcp::ServiceExt;
    use rmcp::transport::TokioChildProcess;
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    let (key, id) = cli_key(dir.path(), "eng", "acme");
    // Without a key, or with a wrong one, stdio does not start.
    for bad in [None, Some("tg_000000000000000000000000000000000000000000000000")] {
        let mut cmd = std::process::Command::new(TOLLGATE);
        cmd.arg("--config").arg(dir.path().join("tollgate.toml")).arg("stdio").env_remove("TOLLGATE_KEY");
        if let Some(k) = bad {
            cmd.args(["--key", k]);
        }
        let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("key"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The key by environment variable.
    let mut cmd = tokio::process::Command::new(TOLLGATE);
    cmd.arg("--config").arg(dir.path().join("tollgate.toml")).arg("stdio").env("TOLLGATE_KEY", &key);
    let agent = ().serve(TokioChildProcess::new(cmd).unwrap()).await.expect("handshake over stdio");
    let r = agent.peer().call_tool(params("fs__echo", json!({"message": "before"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: before");
    tollgate_cli(dir.path(), &["keys", "revoke", &id]);
    let err = agent.peer().call_tool(params("fs__echo", json!({"message": "after"}))).await.unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let err = agent.peer().list_all_tools().await.unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let _ = agent.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_subscriptions_are_limited_to_upstreams_the_key_may_see() {
    use rmcp::model::SubscriptionFilter;
    let policy =
        "[[grant]]\nid = \"fw-only\"\nprincipals = [\"org:globex\"]\ntools = [\"fw__*\"]\neffect = \"allow\"\n";
    let tg = TestGateway::builder().stdio_fixture("fs").stdio_fixture("fw").policy("p", policy).spawn().await;
    let (key, _) = tg.new_key("eng", "globex").await;
    let (agent, _) = http_agent_with(&tg.mcp_url(), Era::Modern, None, Some(&key)).await;
    // Resource lists and reads already follow the grants.
    let listed: Vec<String> =
        agent.peer().list_all_resources().await.unwrap().into_iter().map(|r| r.uri.clone()).collect();
    assert!(
        listed.contains(&"fixture://fw/status".to_string()) && !listed.contains(&"fixture://fs/status".to_string())
    );
    let err = agent.peer().read_resource(rmcp::model::ReadResourceRequestParams::new("fixture://fs/status")).await;
    assert!(err.is_err(), "{err:?}");
    // A listen naming both: only the allowed one is subscribed upstream. The
    // URIs are taken in order, so once the second is active the first was
    // already passed over.
    let mut filter = SubscriptionFilter::new();
    filter.resource_subscriptions = Some(vec!["fixture://fs/status".into(), "fixture://fw/status".into()]);
    let _sub = agent.peer().listen(filter).await.expect("listen");
    tokio::time::timeout(WAIT, tg.gw.upstreams.subscriptions().wait_active("fixture://fw/status"))
        .await
        .expect("the allowed resource is subscribed");
    assert!(!tg.gw.upstreams.subscriptions().is_active("fixture://fs/status"), "the hidden one is not");
}
