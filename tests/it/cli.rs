//! The `tollgate` binary itself: `tools` and `stdio`.

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;

use crate::harness::*;

#[test]
fn tools_prints_the_catalog_with_upstream_health_and_quarantine() {
    let dead =
        "name = \"dead\"\nconnect_timeout = \"2s\"\n[transport]\ntype = \"stdio\"\ncommand = \"/nonexistent/server\"\n"
            .to_string();
    let hostile = format!(
        "name = \"h\"\n[transport]\ntype = \"stdio\"\ncommand = \"{FIXTURE}\"\nargs = [\"--hostile-schema\"]\n"
    );
    let dir = config_dir(&[("fs", stdio_fixture("fs")), ("dead", dead), ("h", hostile)]);
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(dir.path().join("tollgate.toml"))
        .args(["tools", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let echo = v["tools"].as_array().unwrap().iter().find(|t| t["name"] == "fs__echo").expect("fs__echo listed");
    assert_eq!(echo["upstream"], "fs");
    assert_eq!(echo["health"], "up");
    assert!(echo["hash"].as_str().unwrap().starts_with("sha256:"));
    let deep = v["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "h__deep")
        .expect("hostile schema quarantined");
    assert!(deep["reason"].as_str().unwrap().contains("nests"), "{deep}");
    assert!(
        v["tools"].as_array().unwrap().iter().any(|t| t["name"] == "h__echo"),
        "the rest of that upstream still works"
    );
    let dead = v["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == "dead").unwrap();
    assert_eq!(dead["health"]["state"], "down");

    let table = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(dir.path().join("tollgate.toml"))
        .arg("tools")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("fs__echo") && table.contains("quarantined"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_agent_over_tollgate_stdio() {
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let mut cmd = tokio::process::Command::new(TOLLGATE);
    cmd.arg("--config").arg(dir.path().join("tollgate.toml")).args(["stdio", "--key", &key]);
    let agent = ().serve(TokioChildProcess::new(cmd).unwrap()).await.expect("handshake over stdio");
    let tools = agent.peer().list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "fs__echo"));
    let mut p = CallToolRequestParams::new("fs__echo");
    p.arguments = serde_json::json!({"message": "stdio"}).as_object().cloned();
    let r = agent.peer().call_tool(p).await.unwrap();
    assert_eq!(text_of(&r), "echo: stdio");
    let _ = agent.cancel().await;
}

/// `budgets set` shows money in decimal units, changes only what it is given,
/// and says when a team budget names no org.
#[test]
fn budgets_set_is_a_partial_update_in_decimal_units() {
    let dir = config_dir(&[]);
    let out = tollgate_cli(
        dir.path(),
        &["budgets", "set", "--id", "b1", "--scope", "org:acme", "--limit", "0.01", "--period", "daily"],
    );
    assert_eq!(out.trim(), "budget b1 (org:acme in org acme) limit 0.010000 per daily");
    // Only the limit changes: the period stays daily.
    let out = tollgate_cli(dir.path(), &["budgets", "set", "--id", "b1", "--limit", "2.50"]);
    assert_eq!(out.trim(), "budget b1 (org:acme in org acme) limit 2.500000 per daily");
    let spend: serde_json::Value =
        serde_json::from_str(&tollgate_cli(dir.path(), &["budgets", "spend", "--json"])).expect("spend --json");
    assert_eq!(spend.to_string().matches("\"daily\"").count(), 1, "{spend}");
    // A new budget needs a scope and a limit.
    let (code, _, err) = tollgate_run(dir.path(), &["budgets", "set", "--id", "b2", "--limit", "1"]);
    assert!(code != Some(0) && err.contains("--scope: a new budget needs one"), "{err}");
    let out = tollgate_cli(dir.path(), &["budgets", "set", "--id", "t", "--scope", "team:eng", "--limit", "1"]);
    assert!(out.contains("note: no --org"), "{out}");
}

/// A verb that only reads a store says which it read, and refuses to create
/// an empty one where none is.
#[test]
fn read_only_verbs_name_their_store_and_never_create_one() {
    let dir = config_dir(&[]);
    let verify = || {
        let (code, _, err) = tollgate_run(dir.path(), &["audit", "verify"]);
        (code == Some(0), err)
    };
    let (ok, err) = verify();
    assert!(!ok, "{err}");
    assert!(err.contains("no store at") && err.contains("tollgate.db"), "{err}");
    assert!(!dir.path().join("tollgate.db").exists(), "no empty store was created");
    cli_key(dir.path(), "eng", "acme");
    let (ok, err) = verify();
    assert!(ok, "{err}");
    let db = std::path::absolute(dir.path().join("tollgate.db")).unwrap();
    assert!(err.contains(&format!("store {}", db.display())), "names the store it read: {err}");
}

/// `approvals list --status` takes the statuses an action has (or `all`):
/// another word is refused by name, not answered with an empty list.
#[test]
fn approvals_list_refuses_a_status_that_does_not_exist() {
    let dir = config_dir(&[]);
    cli_key(dir.path(), "eng", "acme");
    let (code, _, err) = tollgate_run(dir.path(), &["approvals", "list", "--status", "aproved"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--status `aproved`") && err.contains("pending, approved"), "{err}");
    for status in ["approved", "all"] {
        let (code, _, err) = tollgate_run(dir.path(), &["approvals", "list", "--status", status]);
        assert_eq!(code, Some(0), "{status}: {err}");
    }
}

/// A stdio agent started with a key tollgate refuses hears why in the answer
/// to its handshake, not a closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_agent_with_a_bad_key_is_told_why() {
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    cli_key(dir.path(), "eng", "acme");
    let mut cmd = tokio::process::Command::new(TOLLGATE);
    cmd.arg("--config").arg(dir.path().join("tollgate.toml")).arg("stdio");
    cmd.env("TOLLGATE_KEY", "tg_thisisnotakeythatexistsanywhere0123456789");
    cmd.stderr(std::process::Stdio::null());
    let refused = ().serve(TokioChildProcess::new(cmd).unwrap()).await;
    let Err(err) = refused else { panic!("the handshake is refused") };
    let err = err.to_string();
    assert!(err.contains("unauthorized") && err.contains("TOLLGATE_KEY"), "{err}");
}
