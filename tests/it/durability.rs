//! The audit trail under stress: `kill -9` under load, and planted secrets.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::governance::params;
use crate::harness::*;

/// Every exported record, parsed.
fn exported(dir: &std::path::Path) -> Vec<Value> {
    tollgate_cli(dir, &["audit", "export"]).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_under_load_the_chain_verifies_and_every_answered_call_is_recorded() {
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let mut served = serve_binary(dir.path(), Stdio::null()).await;
    let url = served.mcp_url();

    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let mut workers = Vec::new();
    for w in 0..8 {
        let (agent, _) = http_agent_with(&url, Era::Modern, None, Some(&key)).await;
        let answered = answered.clone();
        let progress_tx = progress_tx.clone();
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                let message = format!("c-{w}-{n}");
                match agent.peer().call_tool(params("fs__echo", json!({"message": message}))).await {
                    Ok(r) if text_of(&r) == format!("echo: {message}") => {
                        let total = {
                            let mut a = answered.lock().unwrap();
                            a.push(message);
                            a.len()
                        };
                        progress_tx.send_replace(total);
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::timeout(WAIT, progress.wait_for(|n| *n >= 300)).await.expect("load reached").unwrap();
    served.child.start_kill().expect("SIGKILL");
    served.child.wait().await.unwrap();
    for w in workers {
        w.await.unwrap();
    }

    let verify = tollgate_cli(dir.path(), &["audit", "verify"]);
    assert!(verify.starts_with("ok: "), "{verify}");
    let records = exported(dir.path());
    let recorded: HashSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "call" && r["status"] == "ok")
        .filter_map(|r| r["arguments"]["message"].as_str())
        .collect();
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 300);
    let missing: Vec<&String> = answered.iter().filter(|m| !recorded.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "answered but not recorded: {missing:?}");
    // Every dispatched call is known: each outcome has its intent before it.
    let intents: HashSet<&str> =
        records.iter().filter(|r| r["kind"] == "call.intent").filter_map(|r| r["call_id"].as_str()).collect();
    assert!(records.iter().filter(|r| r["kind"] == "call").all(|r| intents.contains(r["call_id"].as_str().unwrap())));

    // The gateway restarts on the same store and the chain goes on intact.
    let served = serve_binary(dir.path(), Stdio::null()).await;
    let (agent, _) = http_agent_with(&served.mcp_url(), Era::Legacy, None, Some(&key)).await;
    let r = agent.peer().call_tool(params("fs__echo", json!({"message": "after"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: after");
    let verify = tollgate_cli(dir.path(), &["audit", "verify"]);
    assert!(verify.starts_with("ok: "), "{verify}");
}

/// A fake secret of one of several well-known shapes, unique per `i`.
fn canary(i: usize) -> (String, Value) {
    let hex = format!("{:032x}", (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
    let upper: String = hex.to_uppercase().chars().take(16).collect();
    match i % 10 {
        0 => {
            let s = format!("sk-canary{hex}");
            (s.clone(), json!({"message": format!("use {s} for this")}))
        }
        1 => {
            let s = format!("ghp_{hex}abcd");
            (s.clone(), json!({"message": s}))
        }
        2 => {
            let s = format!("AKIA{upper}");
            (s.clone(), json!({"message": format!("aws {s}")}))
        }
        3 => {
            let s = format!("xoxb-{i}-{hex}");
            (s.clone(), json!({"message": s}))
        }
        4 => {
            let s = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{hex}.sig{hex}");
            (s.clone(), json!({"message": format!("jwt={s}")}))
        }
        5 => {
            let s = format!("pw-canary-{hex}");
            (s.clone(), json!({"message": "login", "password": s}))
        }
        6 => {
            let s = format!("key-canary-{hex}");
            (s.clone(), json!({"message": "call", "api_key": s}))
        }
        7 => {
            let s = format!("{hex}{hex}");
            (s.clone(), json!({"message": format!("Authorization: Bearer {s}")}))
        }
        8 => {
            let s = format!("dbpass{hex}");
            (s.clone(), json!({"message": format!("postgres://app:{s}@db.internal/prod")}))
        }
        _ => {
            let s = format!("tg_{hex}{}", &hex[..16]);
            (s.clone(), json!({"message": s}))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_planted_secrets_appear_nowhere_in_the_store_logs_or_exports() {
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    // A second file: passwords are never accepted by echo, so some calls are
    // refused with a validation message that quotes the value.
    std::fs::write(
        dir.path().join("policies/strict.toml"),
        "[[grant]]\nid = \"no-pw\"\nprincipals = [\"*\"]\ntools = [\"fs__echo\"]\neffect = \"deny\"\nwhen = { required = [\"api_key\"] }\n",
    )
    .unwrap();
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let log = dir.path().join("gateway.log");
    let served = serve_binary(dir.path(), Stdio::from(std::fs::File::create(&log).unwrap())).await;
    let canaries: Vec<(String, Value)> = (0..1000).map(canary).collect();
    let chunks: Vec<Vec<(String, Value)>> = canaries.chunks(250).map(<[_]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (agent, _) = http_agent_with(&served.mcp_url(), Era::Modern, None, Some(&key)).await;
        tasks.push(tokio::spawn(async move {
            let (mut echoed, mut masked) = (0, 0);
            for (secret, args) in chunk {
                let r = agent.peer().call_tool(params("fs__echo", args)).await.expect("answered");
                // The upstream echoes the secret back; the result scan masks it
                // (secrets in results: `mask` by default).
                let text = text_of(&r);
                if text.contains(&secret) {
                    echoed += 1;
                }
                if text.contains("[SECRET_1]") {
                    masked += 1;
                }
            }
            (echoed, masked)
        }));
    }
    let (mut echoed, mut masked) = (0, 0);
    for t in tasks {
        let (e, m) = t.await.unwrap();
        echoed += e;
        masked += m;
    }
    assert_eq!(echoed, 0, "no canary reached the agent in a result");
    assert!(masked >= 700, "most canaries went through the upstream and back, masked ({masked})");
    let export = tollgate_cli(dir.path(), &["audit", "export"]);
    let records: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.iter().filter(|r| r["kind"] == "call").count(), 1000);
    assert!(export.matches("[REDACTED]").count() >= 1000, "redaction happened");
    drop(served);

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![("export".into(), export.into_bytes())];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_file() && (name.starts_with("tollgate.db") || name == "gateway.log") {
            haystacks.push((name, std::fs::read(&path).unwrap()));
        }
    }
    assert!(haystacks.iter().any(|(n, _)| n == "tollgate.db-wal" || n == "tollgate.db"));
    // One pass per haystack for all thousand canaries (regex runs them as
    // one Aho-Corasick automaton).
    let any_canary =
        regex::bytes::Regex::new(&canaries.iter().map(|(c, _)| regex::escape(c)).collect::<Vec<_>>().join("|"))
            .unwrap();
    for (name, bytes) in &haystacks {
        if let Some(m) = any_canary.find(bytes) {
            panic!("canary {} leaked into {name}", String::from_utf8_lossy(m.as_bytes()));
        }
    }
    // The search itself finds a canary where there is one.
    assert!(any_canary.is_match(canaries[123].0.as_bytes()));
}
