//! Complete mediation, as a property over generated policies, principals
//! and arguments, checked end to end: what the upstream actually ran
//! (counted by the upstream itself) against an independent model of the
//! grant semantics. A tool absent from a principal's tools/list is never
//! executed for it, and no call executes that the grants do not allow.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::governance::params;
use crate::harness::*;

const TOOLS: [&str; 4] = ["fs__echo", "fs__add", "fs__log", "fs__env"];
const GLOBS: [&str; 6] = ["fs__echo", "fs__add", "fs__*", "*", "fs__l?g", "fs__e*"];
/// Principals by kind; `key:` entries are filled in with real key ids.
const WHO: [&str; 6] = ["key:0", "key:1", "team:eng", "team:ops", "org:acme", "*"];
const EFFECTS: [&str; 3] = ["allow", "approve", "deny"];

#[derive(Debug, Clone)]
struct GenGrant {
    principals: Vec<usize>,
    tools: Vec<usize>,
    effect: usize,
    /// 0: none, 1: a >= 1000, 2: message starts with "ok".
    when: usize,
    /// Whether `arguments` requires b <= 10.
    small_b: bool,
}

#[derive(Debug, Clone)]
struct Case {
    grants: Vec<GenGrant>,
    /// Per call: (key index, tool index, message ok?, a big?, b small?)
    calls: Vec<(usize, usize, bool, bool, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    let grant = (
        prop::collection::vec(0..WHO.len(), 1..3),
        prop::collection::vec(0..GLOBS.len(), 1..3),
        0..EFFECTS.len(),
        0..3usize,
        any::<bool>(),
    )
        .prop_map(|(principals, tools, effect, when, small_b)| GenGrant {
            principals,
            tools,
            effect,
            when,
            small_b,
        });
    let call = (0..3usize, 0..TOOLS.len(), any::<bool>(), any::<bool>(), any::<bool>());
    (prop::collection::vec(grant, 0..6), prop::collection::vec(call, 24..40))
        .prop_map(|(grants, calls)| Case { grants, calls })
}

/// The keys of a case: two in team eng of acme, one in team ops of globex.
const KEYS: [(&str, &str); 3] = [("eng", "acme"), ("eng", "acme"), ("ops", "globex")];

fn glob_model(glob: &str, tool: &str) -> bool {
    match glob {
        "*" => true,
        "fs__*" => tool.starts_with("fs__"),
        "fs__l?g" => tool == "fs__log",
        "fs__e*" => tool == "fs__echo" || tool == "fs__env",
        exact => exact == tool,
    }
}

fn names_model(who: &str, key: usize) -> bool {
    let (team, org) = KEYS[key];
    match who {
        "key:0" => key == 0,
        "key:1" => key == 1,
        "*" => true,
        w => w == format!("team:{team}") || w == format!("org:{org}"),
    }
}

/// The grant semantics of SPEC.md, written independently of tollgate's code:
/// (visible, executes).
fn model(case: &Case, key: usize, tool: &str, message_ok: bool, a_big: bool, b_small: bool) -> (bool, bool) {
    let matching: Vec<&GenGrant> = case
        .grants
        .iter()
        .filter(|g| g.principals.iter().any(|p| names_model(WHO[*p], key)))
        .filter(|g| g.tools.iter().any(|t| glob_model(GLOBS[*t], tool)))
        .collect();
    let visible = matching.iter().any(|g| EFFECTS[g.effect] != "deny")
        && !matching.iter().any(|g| EFFECTS[g.effect] == "deny" && g.when == 0);
    let applies = |g: &&&GenGrant| match g.when {
        1 => a_big,
        2 => message_ok,
        _ => true,
    };
    let applying: Vec<&&GenGrant> = matching.iter().filter(applies).collect();
    let executes = visible
        && !applying.iter().any(|g| EFFECTS[g.effect] != "allow")
        && applying.iter().any(|g| !g.small_b || b_small);
    (visible, executes)
}

fn policy_text(case: &Case, key_ids: &[String]) -> String {
    let mut out = String::new();
    for (i, g) in case.grants.iter().enumerate() {
        let principals: Vec<String> = g
            .principals
            .iter()
            .map(|p| match WHO[*p] {
                "key:0" => format!("\"key:{}\"", key_ids[0]),
                "key:1" => format!("\"key:{}\"", key_ids[1]),
                w => format!("\"{w}\""),
            })
            .collect();
        let tools: Vec<String> = g.tools.iter().map(|t| format!("\"{}\"", GLOBS[*t])).collect();
        out.push_str(&format!(
            "[[grant]]\nid = \"g{i}\"\nprincipals = [{}]\ntools = [{}]\neffect = \"{}\"\n",
            principals.join(", "),
            tools.join(", "),
            EFFECTS[g.effect]
        ));
        match g.when {
            1 => out.push_str("when = { properties = { a = { minimum = 1000 } }, required = [\"a\"] }\n"),
            2 => {
                out.push_str("when = { properties = { message = { pattern = \"^ok\" } }, required = [\"message\"] }\n")
            }
            _ => {}
        }
        if g.small_b {
            out.push_str("arguments = { properties = { b = { maximum = 10 } } }\n");
        }
    }
    out
}

async fn run_case(case: &Case) {
    let up = fixture_http("fs").await;
    // Keys first: grants name them by id. The policy is written before the
    // gateway starts, so the key ids are fixed by creating them in a store
    // that the gateway then opens.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tollgate.toml"), "").unwrap();
    let store = tollgate::store::Store::open("sqlite://tollgate.db", dir.path(), Default::default()).await.unwrap();
    let mut keys = Vec::new();
    for (team, org) in KEYS {
        keys.push(tollgate::identity::create_key(&store, org, team, None, None, 0).await.unwrap());
    }
    store.close().await;
    let ids: Vec<String> = keys.iter().map(|k| k.row.id.clone()).collect();
    let tg = TestGateway::builder()
        .in_dir(dir)
        // With no approver, a call that needs approval is answered "pending" (not run).
        .server("[server]\nlisten = \"127.0.0.1:0\"\n[approval]\nwait = \"20ms\"\n")
        .manifest("fs", remote_manifest("fs", "http", &up.url))
        .policy("generated", policy_text(case, &ids))
        .spawn()
        .await;

    let mut agents = Vec::new();
    for k in &keys {
        let (agent, _) = http_agent_with(&tg.mcp_url(), Era::Modern, None, Some(&k.secret)).await;
        let listed: Vec<String> =
            agent.peer().list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
        agents.push((agent, listed));
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for &(key, tool, message_ok, a_big, b_small) in &case.calls {
        let tool_name = TOOLS[tool];
        let (visible, executes) = model(case, key, tool_name, message_ok, a_big, b_small);
        let (agent, listed) = &agents[key];
        assert_eq!(
            listed.contains(&tool_name.to_string()),
            visible,
            "tools/list of key {key} for {tool_name}: {case:?}"
        );
        let args = json!({
            "message": if message_ok { "ok go" } else { "nope" },
            "a": if a_big { 1500 } else { 5 },
            "b": if b_small { 3 } else { 50 },
        });
        let outcome = agent.peer().call_tool(params(tool_name, args.clone())).await;
        match outcome {
            Err(e) => {
                assert!(!visible, "a visible tool is not unknown: {e}");
                assert!(e.to_string().contains("unknown tool"), "{e}");
            }
            Ok(r) => {
                assert!(visible, "a hidden tool answered: {tool_name} for key {key}: {case:?}");
                assert_eq!(r.is_error != Some(true), executes, "{tool_name} key {key} {args}: {}", text_of(&r));
            }
        }
        if executes {
            *expected.entry(tool_name.trim_start_matches("fs__").to_string()).or_default() += 1;
        }
    }
    assert_eq!(
        upstream_stats(&up.url).await.into_iter().filter(|(t, _)| t != "stats").collect::<BTreeMap<_, _>>(),
        expected,
        "{case:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_executes_that_the_grants_do_not_allow() {
    let cases: u32 = std::env::var("MEDIATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    let strategy = case();
    for _ in 0..cases {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        run_case(&case).await;
    }
}
