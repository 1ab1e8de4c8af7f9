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

// --- Tracing ---------------------------------------------------------------

use std::time::Duration;

use crate::otlp::{Receiver, Span};

const AGENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// `_meta.traceparent` (and `tracestate`) on a tools/call.
fn traced_call(tool: &str, tp: &str) -> CallToolRequestParams {
    let mut p = call(tool, json!({}));
    let mut meta = rmcp::model::RequestMetaObject::new();
    meta.0.insert("traceparent".into(), json!(tp));
    meta.0.insert("tracestate".into(), json!("agent=1"));
    p.meta = Some(meta);
    p
}

/// The span ids and parent of a `traceparent` value.
fn parse_tp(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

/// The call span of `trace`, and its children once every stage in `stages` arrived.
async fn call_spans(r: &mut Receiver, trace: &str, tool: &str, stages: &[&str]) -> (Span, Vec<Span>) {
    let name = format!("tools/call {tool}");
    let spans = r
        .until(Duration::from_secs(20), |got| {
            let Some(call) = got.iter().find(|s| s.trace_id == trace && s.name == name) else { return false };
            stages.iter().all(|st| got.iter().any(|s| s.parent_span_id == call.span_id && s.name == *st))
        })
        .await;
    let call = spans.iter().find(|s| s.trace_id == trace && s.name == name).unwrap().clone();
    let children = spans.iter().filter(|s| s.parent_span_id == call.span_id).cloned().collect();
    (call, children)
}

const PIPELINE: [&str; 8] =
    ["identify", "resolve", "authorize", "validate", "limit", "audit_intent", "execute", "audit"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_receiver_parented_to_the_agents_traceparent() {
    let mut receiver = Receiver::start().await;
    let tg = TestGateway::builder()
        .server(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"tg-test\"\n",
            receiver.url
        ))
        .stdio_fixture("fs")
        .spawn()
        .await;

    // Trace context in the request's _meta (2026-07-28 agent).
    let (agent, _) = tg.agent(Era::Modern).await;
    let r = agent.peer().call_tool(traced_call("fs__trace", &traceparent(AGENT_TRACE, AGENT_SPAN))).await.unwrap();
    let seen = r.structured_content.expect("the upstream reports its _meta");
    let (up_trace, up_parent) = parse_tp(seen["traceparent"].as_str().expect("upstream got a traceparent"));
    assert_eq!(up_trace, AGENT_TRACE, "the upstream call continues the agent's trace");
    assert_ne!(up_parent, AGENT_SPAN, "the upstream's parent is tollgate's execute span, not the agent's");
    assert_eq!(seen["tracestate"], "agent=1", "tracestate travels with it");

    let (root, children) = call_spans(&mut receiver, AGENT_TRACE, "fs__trace", &PIPELINE).await;
    assert_eq!(root.parent_span_id, AGENT_SPAN, "the call span's parent is the agent's span");
    assert_eq!(root.kind, 2, "server span");
    assert_eq!(root.service_name, "tg-test");
    assert!(root.encoding.starts_with("application/x-protobuf"), "protobuf is the default: {}", root.encoding);
    assert_eq!(root.attributes["gen_ai.tool.name"], "fs__trace");
    assert_eq!(root.attributes["tollgate.decision"], "allowed");
    assert_eq!(root.attributes["tollgate.status"], "ok");
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for st in PIPELINE {
        assert_eq!(names.iter().filter(|n| **n == st).count(), 1, "one `{st}` span: {names:?}");
    }
    let execute = children.iter().find(|s| s.name == "execute").unwrap();
    assert_eq!(execute.span_id, up_parent, "the upstream was handed the execute span's context");
    assert_eq!(execute.kind, 3, "client span");
    assert_eq!(execute.attributes["tollgate.upstream"], "fs");
    for c in &children {
        assert!(c.start_nanos >= root.start_nanos && c.end_nanos <= root.end_nanos, "{c:?} within {root:?}");
        assert!(c.start_nanos <= c.end_nanos, "{c:?}");
    }

    // The agent did not sample its trace: the context goes on, no span is sent
    // (checked below, once later spans have arrived: export is in order).
    let unsampled = "1bf92f3577b34da6a3ce929d0e0e4736";
    let r = agent.peer().call_tool(traced_call("fs__trace", &format!("00-{unsampled}-{AGENT_SPAN}-00"))).await.unwrap();
    let tp = r.structured_content.unwrap()["traceparent"].as_str().unwrap().to_string();
    assert!(tp.starts_with(&format!("00-{unsampled}-")) && tp.ends_with("-00"), "{tp}");

    // Trace context in the HTTP header (2025-11-25 agent): an invalid call is
    // traced too, and never reaches the upstream.
    let trace2 = "0af7651916cd43dd8448eb211c80319c";
    let span2 = "b7ad6b7169203331";
    let mut config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(tg.mcp_url())
            .auth_header(tg.key.clone());
    config = config.custom_headers(
        [(http::HeaderName::from_static("traceparent"), traceparent(trace2, span2).parse().unwrap())].into(),
    );
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let legacy = rmcp::service::ClientServiceExt::serve_with_lifecycle(
        Agent { tx, elicit: None, tasks: false, sampling: false },
        rmcp::transport::StreamableHttpClientTransport::from_config(config),
        lifecycle(Era::Legacy),
    )
    .await
    .unwrap();
    let r = legacy.peer().call_tool(call("fs__trace", json!({}))).await.unwrap();
    let (t, _) = parse_tp(r.structured_content.unwrap()["traceparent"].as_str().unwrap());
    assert_eq!(t, trace2, "the header's context reached the upstream");
    let r = legacy.peer().call_tool(call("fs__echo", json!({"message": 5}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    let (call2, _) =
        call_spans(&mut receiver, trace2, "fs__echo", &["identify", "resolve", "authorize", "validate", "audit"]).await;
    assert_eq!(call2.parent_span_id, span2);
    assert_eq!(call2.attributes["tollgate.decision"], "invalid");
    assert!(
        !receiver
            .received
            .iter()
            .any(|s| s.trace_id == trace2 && s.name == "execute" && s.parent_span_id == call2.span_id),
        "an invalid call has no execute span"
    );
    assert!(!receiver.received.iter().any(|s| s.trace_id == unsampled), "an unsampled trace exports nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_agents_trace_context_reaches_the_upstream_unchanged() {
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    assert!(!tg.gw.tracing.exporting(), "export is off by default");
    let (agent, _) = tg.agent(Era::Modern).await;
    let tp = traceparent(AGENT_TRACE, AGENT_SPAN);
    let r = agent.peer().call_tool(traced_call("fs__trace", &tp)).await.unwrap();
    let seen = r.structured_content.unwrap();
    assert_eq!(seen["traceparent"], json!(tp));
    assert_eq!(seen["tracestate"], "agent=1");
    // A malformed context is not passed on.
    let r = agent.peer().call_tool(traced_call("fs__trace", "00-zz-00f067aa0ba902b7-01")).await.unwrap();
    assert_eq!(r.structured_content.unwrap()["traceparent"], Value::Null);
    let r = agent.peer().call_tool(call("fs__trace", json!({}))).await.unwrap();
    assert_eq!(r.structured_content.unwrap()["traceparent"], Value::Null, "no context, none invented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_provider_calls_carry_the_trace_and_spans_export_as_json() {
    let mut receiver = Receiver::start().await;
    let p = crate::provider::Provider::start().await;
    let manifest = p.manifest(
        "models",
        "openai",
        crate::provider::SETTINGS,
        &[("fast", "id = \"ok\"\ninput_per_mtok = \"1.00\"\noutput_per_mtok = \"2.00\"")],
    );
    let tg = TestGateway::builder()
        .server(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[telemetry]\notlp_endpoint = \"{}/v1/traces\"\notlp_protocol = \"http/json\"\n",
            receiver.url
        ))
        .manifest("models", manifest)
        .policy("p", format!("{ALLOW_ALL}\n[[budget]]\nid = \"acme-money\"\nscope = \"org:acme\"\nlimit = \"10.00\"\n"))
        .spawn()
        .await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let span = "10f067aa0ba902b7";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", tg.base))
        .bearer_auth(&tg.key)
        .header("traceparent", traceparent(trace, span))
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = p.seen();
    let (t, parent) = parse_tp(seen[0].traceparent.as_deref().expect("the provider got a traceparent header"));
    assert_eq!(t, trace);
    let (root, children) = call_spans(&mut receiver, trace, "llm__chat", &["hold", "execute", "settle", "audit"]).await;
    assert!(root.encoding.starts_with("application/json"), "{}", root.encoding);
    assert_eq!(root.parent_span_id, span);
    assert_eq!(root.service_name, "tollgate");
    assert_eq!(children.iter().find(|s| s.name == "execute").unwrap().span_id, parent);
}
