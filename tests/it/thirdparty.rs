//! Real third-party parts: `@modelcontextprotocol/server-everything` (npm)
//! and `mcp-server-time` (PyPI) as upstreams; the Python `mcp` SDK as the
//! agent over Streamable HTTP and stdio. Installed by `.ci/install-deps.sh`.

use std::path::PathBuf;

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::harness::*;

fn everything_js() -> PathBuf {
    repo_root().join("tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

pub fn venv_bin(name: &str) -> PathBuf {
    repo_root().join(".venv/bin").join(name)
}

fn everything_stdio_manifest() -> String {
    format!(
        "name = \"everything\"\n[transport]\ntype = \"stdio\"\ncommand = \"node\"\nargs = [\"{}\", \"stdio\"]\n",
        everything_js().display()
    )
}

fn time_manifest() -> String {
    format!(
        "name = \"time\"\n[transport]\ntype = \"stdio\"\ncommand = \"{}\"\nargs = [\"--local-timezone\", \"UTC\"]\n",
        venv_bin("mcp-server-time").display()
    )
}

fn params(name: &str, a: Value) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = a.as_object().cloned();
    p
}

/// A gateway in front of server-everything twice: `everything` over stdio
/// and `evhttp` over Streamable HTTP (the returned process).
async fn everything_over_stdio_and_http() -> (Listening, TestGateway) {
    let http =
        spawn_listening("node", &[repo_root().join("tests/node/everything-http.mjs").to_str().unwrap(), "0"]).await;
    let tg = TestGateway::builder()
        .manifest("everything", everything_stdio_manifest())
        .manifest("evhttp", remote_manifest("evhttp", "http", &http.url))
        .spawn()
        .await;
    (http, tg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node (server-everything from npm)"]
async fn server_everything_over_stdio_and_http_is_listed_and_called() {
    let (_http, tg) = everything_over_stdio_and_http().await;
    assert_eq!(tg.health("everything"), tollgate::upstream::Health::Up);
    assert_eq!(tg.health("evhttp"), tollgate::upstream::Health::Up);
    for era in [Era::Legacy, Era::Modern] {
        let (agent, mut heard) = tg.agent(era).await;
        let tools = agent.peer().list_all_tools().await.unwrap();
        for n in ["everything__echo", "evhttp__echo", "everything__get-sum"] {
            assert!(tools.iter().any(|t| t.name == n), "{n} listed");
        }
        for tool in ["everything__echo", "evhttp__echo"] {
            let r = agent.peer().call_tool(params(tool, json!({"message": "hi"}))).await.unwrap();
            assert_eq!(text_of(&r), "Echo: hi", "{tool} in {era:?}");
        }
        let r = agent
            .peer()
            .call_tool(params("everything__trigger-long-running-operation", json!({"duration": 0.2, "steps": 2})))
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
        let progress: Vec<f64> = progress_heard(&mut heard, 2).await.into_iter().map(|p| p.0).collect();
        assert_eq!(progress, vec![1.0, 2.0], "progress relayed in {era:?}");
        // Both upstreams are the same server: every resource URI is offered
        // twice, so none is routed (never a silent pick).
        assert!(agent.peer().list_all_resources().await.unwrap().is_empty());
    }
    drop(tg);
    let tg = TestGateway::builder().manifest("everything", everything_stdio_manifest()).spawn().await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    let resources = agent.peer().list_all_resources().await.unwrap();
    let first = resources.first().expect("server-everything lists resources");
    let read =
        agent.peer().read_resource(rmcp::model::ReadResourceRequestParams::new(first.uri.clone())).await.unwrap();
    assert!(!read.contents.is_empty());
    let prompts = agent.peer().list_all_prompts().await.unwrap();
    assert!(prompts.iter().all(|p| p.name.starts_with("everything__")), "{prompts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node (server-everything from npm)"]
async fn server_everything_over_legacy_http_sse_is_listed_and_called() {
    let wrapper = repo_root().join("tests/node/everything-http.mjs");
    let up = spawn_listening("node", &[wrapper.to_str().unwrap(), "0", "--sse"]).await;
    assert!(up.url.ends_with("/sse"), "{}", up.url);
    let tg = TestGateway::builder().manifest("evsse", remote_manifest("evsse", "sse", &up.url)).spawn().await;
    assert_eq!(tg.health("evsse"), tollgate::upstream::Health::Up);
    for era in [Era::Legacy, Era::Modern] {
        let (agent, mut heard) = tg.agent(era).await;
        let r = agent.peer().call_tool(params("evsse__echo", json!({"message": "over sse"}))).await.unwrap();
        assert_eq!(text_of(&r), "Echo: over sse", "{era:?}");
        let r = agent
            .peer()
            .call_tool(params("evsse__trigger-long-running-operation", json!({"duration": 0.2, "steps": 2})))
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
        let progress: Vec<f64> = progress_heard(&mut heard, 2).await.into_iter().map(|p| p.0).collect();
        assert_eq!(progress, vec![1.0, 2.0], "progress over sse in {era:?}");
    }
}

#[test]
#[ignore = "needs node (npx fetches server-everything from the npm registry)"]
fn the_quickstart_runs_as_shipped() {
    let config = repo_root().join("examples/quickstart/tollgate.toml");
    let out =
        std::process::Command::new(TOLLGATE).arg("--config").arg(&config).args(["tools", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"everything__echo"), "{v}");
    assert!(!names.contains(&"everything__get-env"), "hidden by the manifest");
    let echo = v["tools"].as_array().unwrap().iter().find(|t| t["name"] == "everything__echo").unwrap();
    assert_eq!(echo["description"], "Echoes back the input.", "description override");
    assert_eq!(echo["health"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node (npx fetches server-everything from the npm registry)"]
async fn the_quickstart_policies_govern_calls() {
    // A copy, so the store is not created inside the repository.
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("examples/quickstart");
    for sub in ["", "tool-manifests", "policies"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(src.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let served = serve_binary(dir.path(), std::process::Stdio::inherit()).await;
    let (agent, _) = http_agent_with(&served.mcp_url(), Era::Modern, None, Some(&key)).await;
    let names: Vec<String> = agent.peer().list_all_tools().await.unwrap().into_iter().map(|t| t.name.into()).collect();
    assert!(names.contains(&"everything__echo".to_string()), "{names:?}");
    assert!(!names.contains(&"everything__get-env".to_string()), "hidden by the manifest: {names:?}");
    assert!(!names.contains(&"everything__toggle-simulated-logging".to_string()), "no grant: {names:?}");
    let r = agent.peer().call_tool(params("everything__echo", json!({"message": "quick"}))).await.unwrap();
    assert!(text_of(&r).contains("quick"), "{}", text_of(&r));
    let r = agent
        .peer()
        .call_tool(params("everything__trigger-long-running-operation", json!({"duration": 60, "steps": 2})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("eng-no-long-waits"), "{}", text_of(&r));
    // The budget counted the echo call (0.001 of 5.00).
    let spend: Value = serde_json::from_str(&tollgate_cli(dir.path(), &["budgets", "spend", "--json"])).unwrap();
    let eng = spend.as_array().unwrap().iter().find(|b| b["id"] == "eng-daily").cloned().unwrap();
    assert_eq!((eng["spent"].as_i64(), eng["held"].as_i64()), (Some(1_000), Some(0)), "{eng}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (mcp-server-time from PyPI)"]
async fn mcp_server_time_is_listed_and_called() {
    let tg = TestGateway::builder().manifest("time", time_manifest()).spawn().await;
    assert_eq!(tg.health("time"), tollgate::upstream::Health::Up);
    let (agent, _) = tg.agent(Era::Legacy).await;
    let tools = agent.peer().list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "time__get_current_time"));
    let r =
        agent.peer().call_tool(params("time__get_current_time", json!({"timezone": "Europe/Paris"}))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    let s = r.structured_content.expect("structured content");
    assert_eq!(s["timezone"], "Europe/Paris");
    let bad = agent.peer().call_tool(params("time__get_current_time", json!({}))).await.unwrap();
    assert_eq!(bad.is_error, Some(true), "schema enforced by tollgate: {}", text_of(&bad));
}

/// Runs `tests/py/agent.py` with a plan; returns its JSON report.
pub async fn python_agent(target: &[&str], mode: &str, plan: Value) -> Value {
    let mut cmd = tokio::process::Command::new(venv_bin("python"));
    cmd.arg(repo_root().join("tests/py/agent.py")).args(["--mode", mode]);
    cmd.args(target);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("python agent");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(plan.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("agent finished")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("agent output is not JSON ({e}): {text}"))
}

fn plan() -> Value {
    json!([
        {"op": "list_tools"},
        {"op": "call", "name": "fs__echo", "args": {"message": "from python"}},
        {"op": "call", "name": "fs__add", "args": {"a": "x"}},
        {"op": "read", "uri": "fixture://greeting"},
        {"op": "prompt", "name": "fs__greet", "args": {"name": "Ada"}},
        {"op": "call_progress", "name": "fs__slow", "args": {"steps": 3}},
        {"op": "await_list_changed", "trigger": {"op": "call", "name": "fs__mutate", "args": {"description": "changed"}}, "timeout_s": 20}
    ])
}

fn assert_plan_results(report: &Value, label: &str) {
    let r = &report["results"];
    let names: Vec<&str> = r[0]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: {report}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"fs__echo"), "{label}: {names:?}");
    assert_eq!(r[1]["content"][0]["text"], "echo: from python", "{label}: {}", r[1]);
    assert_eq!(r[2]["isError"], true, "{label}: {}", r[2]);
    assert!(r[3].to_string().contains("hello from fs"), "{label}: {}", r[3]);
    assert!(r[4].to_string().contains("Say hello to Ada."), "{label}: {}", r[4]);
    // The Python SDK runs each progress callback as its own task: compare as a set.
    let mut progress: Vec<f64> = r[5]["progress"].as_array().unwrap().iter().map(|p| p[0].as_f64().unwrap()).collect();
    progress.sort_by(f64::total_cmp);
    assert_eq!(progress, vec![1.0, 2.0, 3.0], "{label}: {}", r[5]);
    assert_eq!(r[6]["received"], true, "{label}: {}", r[6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (the mcp SDK)"]
async fn python_agent_over_streamable_http_in_both_eras() {
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
        let auth = format!("Authorization: Bearer {}", tg.key);
        let report = python_agent(&["--http", &tg.mcp_url(), "--header", &auth], mode, plan()).await;
        assert_eq!(report["protocol"], version, "{report}");
        assert_plan_results(&report, mode);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (the mcp SDK)"]
async fn python_agent_over_stdio() {
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let config = dir.path().join("tollgate.toml");
    let config = config.to_str().unwrap();
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let target = ["--stdio", "--", TOLLGATE, "--config", config, "stdio", "--key", &key];
        let report = python_agent(&target, mode, plan()).await;
        assert_eq!(report["protocol"], version, "{report}");
        assert_plan_results(&report, &format!("stdio {mode}"));
    }
}

/// server-everything asks its client for sampling and elicitation on its
/// session. Over stdio and Streamable HTTP, a legacy and a 2026-07-28 agent
/// on the same tollgate each get both questions from the same upstream and
/// answer them; an agent that declared neither is refused, as a client
/// without the capability is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node (server-everything from npm)"]
async fn server_everything_asks_agents_of_both_eras_for_sampling_and_elicitation() {
    let (_http, tg) = everything_over_stdio_and_http().await;
    for up in ["everything", "evhttp"] {
        for era in [Era::Legacy, Era::Modern] {
            let (agent, mut heard) = sampling_agent(&tg.mcp_url(), era, &tg.key).await;
            let sample = params(&format!("{up}__trigger-sampling-request"), json!({"prompt": "hi", "maxTokens": 10}));
            let r = agent.call_tool(sample).await.unwrap_or_else(|e| panic!("{up} {era:?}: {e}"));
            assert!(text_of(&r).contains("sampled by the test agent"), "{up} {era:?}: {}", text_of(&r));
            assert!(matches!(heard.try_recv(), Ok(Heard::Sampled)), "{up} {era:?}: the agent sampled");
            let elicit = params(&format!("{up}__trigger-elicitation-request"), json!({}));
            let r = agent.call_tool(elicit).await.unwrap_or_else(|e| panic!("{up} {era:?}: {e}"));
            assert_ne!(r.is_error, Some(true), "{up} {era:?}: {}", text_of(&r));
            assert!(text_of(&r).to_lowercase().contains("decline"), "{up} {era:?}: {}", text_of(&r));
            assert!(matches!(heard.try_recv(), Ok(Heard::Elicited)), "{up} {era:?}: the agent was asked");
            let (bare, mut heard) = tg.agent(era).await;
            let sample = params(&format!("{up}__trigger-sampling-request"), json!({"prompt": "hi", "maxTokens": 10}));
            let said = match bare.call_tool(sample).await {
                Ok(r) => text_of(&r),
                Err(e) => e.to_string(),
            };
            assert!(said.contains("does not support sampling"), "{up} {era:?}: {said}");
            assert!(heard.try_recv().is_err(), "{up} {era:?}: nobody was asked");
        }
    }
}
