//! `/metrics` read by Prometheus' own parser after real calls.

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::harness::*;
use crate::thirdparty::venv_bin;

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default())
}

/// Every sample of the exposition, as the Python Prometheus client parses it.
pub async fn parsed_metrics(base: &str) -> Vec<Value> {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(text.status(), 200);
    let ct = text.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = text.text().await.unwrap();
    let mut cmd = tokio::process::Command::new(venv_bin("python"));
    cmd.arg(repo_root().join("tests/py/metrics_parse.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd.spawn().expect("python");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn value(samples: &[Value], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.as_object().unwrap().iter().all(|(k, v)| s["labels"][k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (prometheus-client)"]
async fn metrics_count_the_calls_made_by_tool_and_decision() {
    let policy = r#"
[[grant]]
id = "echo"
principals = ["team:eng"]
tools = ["fs__echo", "fs__add"]
effect = "allow"

[[grant]]
id = "no-add"
principals = ["team:eng"]
tools = ["fs__add"]
effect = "deny"
when = { properties = { a = { minimum = 100 } } }

[[grant]]
id = "slow-needs-approval"
principals = ["team:eng"]
tools = ["fs__slow"]
effect = "approve"

[[budget]]
id = "eng-money"
scope = "team:eng"
org = "acme"
limit = "7.00"
"#;
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\n[approval]\nwait = \"50ms\"\n")
        .stdio_fixture("fs")
        .policy("p", policy)
        .spawn()
        .await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    for i in 0..3 {
        agent.peer().call_tool(call("fs__echo", json!({"message": format!("m{i}")}))).await.unwrap();
    }
    let _ = agent.peer().call_tool(call("fs__add", json!({"a": 100, "b": 1}))).await;
    let _ = agent.peer().call_tool(call("fs__echo", json!({"message": 5}))).await;
    let _ = agent.peer().call_tool(call("fs__nope", json!({}))).await;
    let _ = agent.peer().call_tool(call("fs__slow", json!({"steps": 1}))).await;

    let s = parsed_metrics(&tg.base).await;
    let calls =
        |tool: &str, decision: &str| value(&s, "tollgate_calls_total", json!({"tool": tool, "decision": decision}));
    assert_eq!(calls("fs__echo", "allowed"), Some(3.0));
    assert_eq!(calls("fs__add", "denied"), Some(1.0));
    assert_eq!(calls("fs__echo", "invalid"), Some(1.0));
    assert_eq!(calls("fs__slow", "needs_approval"), Some(1.0));
    assert_eq!(calls("(unknown)", "denied"), Some(1.0), "unknown tools share one series");
    // One observation per call that reached the stage.
    let stage = |stage: &str| value(&s, "tollgate_stage_duration_seconds_count", json!({"stage": stage}));
    assert_eq!(stage("execute"), Some(3.0));
    assert!(stage("authorize").unwrap() >= 5.0);
    assert_eq!(value(&s, "tollgate_budget_limit", json!({"budget": "eng-money", "unit": "money"})), Some(7_000_000.0));
    assert_eq!(value(&s, "tollgate_budget_spent", json!({"budget": "eng-money"})), Some(0.0));
    assert_eq!(value(&s, "tollgate_approvals_pending", json!({"org": "acme"})), Some(1.0));
    assert_eq!(value(&s, "tollgate_upstream_up", json!({"upstream": "fs"})), Some(1.0));
    assert_eq!(value(&s, "tollgate_policy_reload_failed", json!({})), Some(0.0));
}
