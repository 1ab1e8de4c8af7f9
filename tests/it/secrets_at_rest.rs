//! What agents send and upstreams return never reaches the log or the store
//! files in clear, at the most verbose log level: canaries in an unknown
//! tool's name, in arguments, in a result and in a denied action's
//! arguments are looked for, byte for byte, in the log, the database and
//! its write-ahead log.

use std::process::Stdio;

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::harness::*;

/// Not credential-shaped: only a hash can keep it out of the audit.
const TOOL_CANARY: &str = "CanaryToolName7f3e9a";
/// Under a secret-named key.
const PASSWORD_CANARY: &str = "CanaryPassw0rd-b81c55";
/// Credential-shaped, under an ordinary key.
const TOKEN_CANARY: &str = "ghp_CanaryTokenAbcdefghijklmnopqrstuv0123";
/// In the fixture's `secret` document, returned by the upstream.
const RESULT_CANARIES: [&str; 2] = ["AKIAIOSFODNN7EXAMPLE", "s3cr3t-Pa55word"];
/// In the arguments of an action that is then denied.
const PENDING_CANARY: &str = "CanaryPendingPw-44d1e0";

const POLICY: &str = r#"org = "acme"

[[grant]]
id = "read"
principals = ["team:eng"]
tools = ["fs__echo", "fs__document"]
effect = "allow"

[[grant]]
id = "secret-document-needs-approval"
principals = ["team:eng"]
tools = ["fs__document"]
effect = "approve"
when = { properties = { name = { const = "secret" } }, required = ["name"] }

[[grant]]
id = "add-needs-approval"
principals = ["team:eng"]
tools = ["fs__add"]
effect = "approve"
"#;

fn call(name: &str, args: Value) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = args.as_object().cloned();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_reach_neither_the_log_nor_the_store_at_trace_level() {
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    std::fs::write(dir.path().join("tollgate.toml"), "[approval]\nwait = \"1s\"\n").unwrap();
    std::fs::remove_file(dir.path().join("policies/all.toml")).unwrap();
    std::fs::write(dir.path().join("policies/acme.toml"), POLICY).unwrap();
    // Scans off: what is kept must be clean because the store redacts, not
    // because a scan masked it on the way.
    let scans_off = "[scans.secrets]\narguments = \"off\"\nresults = \"off\"\n[scans.pii]\nresults = \"off\"\n";
    std::fs::write(dir.path().join("policies/scans.toml"), scans_off).unwrap();
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let log = dir.path().join("tollgate.log");
    let mut served = serve_binary_env(
        dir.path(),
        Stdio::from(std::fs::File::create(&log).unwrap()),
        &[("TOLLGATE_LOG", "trace"), ("RUST_LOG", "trace")],
    )
    .await;
    let (agent, _) = http_agent_with(&served.mcp_url(), Era::Legacy, None, Some(&key)).await;
    let peer = agent.peer();

    let unknown = peer.call_tool(call(&format!("fs__{TOOL_CANARY}"), json!({}))).await;
    assert!(unknown.unwrap_err().to_string().contains("unknown tool"));
    let echoed = peer
        .call_tool(call("fs__echo", json!({"message": "hi", "password": PASSWORD_CANARY, "note": TOKEN_CANARY})))
        .await
        .expect("echo");
    assert_eq!(text_of(&echoed), "echo: hi");
    // An approved action's result is kept for a repeat of its call: the
    // document waits for approval, is approved, and the repeat runs it.
    let pending_id = |tool: &str| {
        let listed: Value =
            serde_json::from_str(&tollgate_cli(dir.path(), &["approvals", "list", "--json"])).expect("approvals list");
        let mine = listed["approvals"].as_array().unwrap().iter().find(|a| a["tool"] == tool).cloned();
        mine.and_then(|a| a["id"].as_str().map(str::to_string)).unwrap_or_else(|| panic!("pending {tool}: {listed}"))
    };
    let first = peer.call_tool(call("fs__document", json!({"name": "secret"}))).await;
    assert!(format!("{first:?}").contains("pending"), "{first:?}");
    tollgate_cli(dir.path(), &["approvals", "approve", &pending_id("fs__document")]);
    let document = peer.call_tool(call("fs__document", json!({"name": "secret"}))).await.expect("document");
    assert!(text_of(&document).contains(RESULT_CANARIES[0]), "scans are off: {}", text_of(&document));
    // A call that waits for approval, then is answered "pending"; denied.
    let pending = peer.call_tool(call("fs__add", json!({"a": 1, "b": 2, "password": PENDING_CANARY}))).await;
    let pending = format!("{pending:?}");
    assert!(pending.contains("pending") || pending.contains("approval"), "{pending}");
    tollgate_cli(dir.path(), &["approvals", "deny", &pending_id("fs__add"), "--reason", "no"]);
    let _ = agent.cancel().await;
    // kill -9: nothing is flushed or checkpointed on the way out.
    served.child.kill().await.unwrap();

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("TRACE") || log_text.contains("DEBUG"), "the log ran at trace level:\n{log_text}");
    let mut files = vec![("log".to_string(), log_text.into_bytes())];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("tollgate.db") && path.is_file() {
            files.push((name, std::fs::read(&path).unwrap()));
        }
    }
    assert!(files.iter().any(|(n, _)| n == "tollgate.db"), "the store was found");
    let canaries = [TOOL_CANARY, PASSWORD_CANARY, TOKEN_CANARY, PENDING_CANARY]
        .into_iter()
        .chain(RESULT_CANARIES)
        .collect::<Vec<_>>();
    for (name, bytes) in &files {
        for canary in &canaries {
            if let Some(at) = bytes.windows(canary.len()).position(|w| w == canary.as_bytes()) {
                let around = &bytes[at.saturating_sub(200)..(at + canary.len() + 200).min(bytes.len())];
                panic!("`{canary}` is in {name}: …{}…", String::from_utf8_lossy(around));
            }
        }
    }
}
