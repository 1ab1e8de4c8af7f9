//! Decision-table tests of the grant semantics, through the file format.

use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::config::error::Sink;

fn policy(text: &str) -> Policy {
    let mut errors = Vec::new();
    let grants = {
        let mut sink = Sink::new(Path::new("p.toml"), text, &mut errors);
        load::load_text(text, &mut sink)
    };
    assert!(errors.is_empty(), "{errors:?}");
    Policy {
        grants: grants.into_iter().map(Arc::new).collect(),
        budgets: Vec::new(),
        routes: Vec::new(),
        files: Vec::new(),
        scans: None,
    }
}

fn errors_of(text: &str) -> String {
    let mut errors = Vec::new();
    let mut sink = Sink::new(Path::new("p.toml"), text, &mut errors);
    load::load_text(text, &mut sink);
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn key(id: &str, team: &str, org: &str) -> Principal {
    Principal { key_id: id.into(), org: org.into(), team: team.into(), role: None }
}

fn eng() -> Principal {
    key("k_1", "eng", "acme")
}

fn grant(id: &str, principals: &str, tools: &str, effect: &str, extra: &str) -> String {
    format!(
        "[[grant]]\nid = \"{id}\"\nprincipals = [{principals}]\ntools = [{tools}]\neffect = \"{effect}\"\n{extra}\n"
    )
}

fn decide(p: &Policy, who: &Principal, tool: &str, args: Value) -> (Effect, Vec<String>) {
    let d = p.decide(who, tool, &args);
    (d.effect, d.grant_ids())
}

#[test]
fn no_grant_is_a_deny_and_hides_the_tool() {
    let p = policy("");
    assert_eq!(decide(&p, &eng(), "a__b", json!({})).0, Effect::Deny);
    assert!(!p.visible(&eng(), "a__b"));
    let p = policy(&grant("g", "\"team:ops\"", "\"a__*\"", "allow", ""));
    assert_eq!(decide(&p, &eng(), "a__b", json!({})).0, Effect::Deny);
    assert!(!p.visible(&eng(), "a__b"));
}

#[test]
fn a_described_deny_keeps_the_tool_visible_so_the_agent_hears_why() {
    let allow = grant("all", "\"team:eng\"", "\"t__*\"", "allow", "");
    let silent = grant("no-x", "\"team:eng\"", "\"t__x\"", "deny", "");
    let told = grant("no-x", "\"team:eng\"", "\"t__x\"", "deny", "description = \"x is frozen until Monday\"");
    assert!(!policy(&format!("{allow}{silent}")).visible(&eng(), "t__x"));
    let p = policy(&format!("{allow}{told}"));
    assert!(p.visible(&eng(), "t__x"), "listed, so a call can be refused with the reason");
    assert_eq!(decide(&p, &eng(), "t__x", json!({})), (Effect::Deny, vec!["no-x".to_string()]));
    // Without any grant that lets the principal call it, it stays hidden.
    assert!(!policy(&told).visible(&eng(), "t__x"));
}

#[test]
fn every_effect_combination_resolves_deny_over_approve_over_allow() {
    let effects = ["allow", "approve", "deny"];
    // Every subset of effects, each from its own grant on the same tool.
    for mask in 0u8..8 {
        let mut text = String::new();
        let mut present = Vec::new();
        for (i, e) in effects.iter().enumerate() {
            if mask & (1 << i) != 0 {
                text.push_str(&grant(&format!("g-{e}"), "\"team:eng\"", "\"t__x\"", e, ""));
                present.push(*e);
            }
        }
        let p = policy(&text);
        let expected = if present.contains(&"deny") {
            Effect::Deny
        } else if present.contains(&"approve") {
            Effect::Approve
        } else if present.contains(&"allow") {
            Effect::Allow
        } else {
            Effect::Deny
        };
        let (effect, ids) = decide(&p, &eng(), "t__x", json!({}));
        assert_eq!(effect, expected, "effects {present:?}");
        if !present.is_empty() {
            assert_eq!(ids, vec![format!("g-{}", expected.as_str())], "effects {present:?}");
        }
        let visible = (present.contains(&"allow") || present.contains(&"approve")) && !present.contains(&"deny");
        assert_eq!(p.visible(&eng(), "t__x"), visible, "effects {present:?}");
    }
}

#[test]
fn principals_match_key_team_org_and_anyone() {
    for (principal, hits) in [
        ("\"key:k_1\"", [true, false, false]),
        ("\"team:eng\"", [true, true, false]),
        ("\"org:acme\"", [true, true, false]),
        ("\"*\"", [true, true, true]),
    ] {
        let p = policy(&grant("g", principal, "\"t__x\"", "allow", ""));
        let callers = [eng(), key("k_2", "eng", "acme"), key("k_3", "sales", "globex")];
        for (who, hit) in callers.iter().zip(hits) {
            let expected = if hit { Effect::Allow } else { Effect::Deny };
            assert_eq!(decide(&p, who, "t__x", json!({})).0, expected, "{principal} for {who:?}");
        }
    }
}

#[test]
fn another_orgs_key_is_never_matched_by_an_org_scoped_grant() {
    let text = format!("org = \"acme\"\n{}", grant("g", "\"team:eng\"", "\"*\"", "allow", ""));
    let p = policy(&text);
    assert_eq!(decide(&p, &eng(), "t__x", json!({})).0, Effect::Allow);
    let outsider = key("k_9", "eng", "globex");
    assert_eq!(decide(&p, &outsider, "t__x", json!({})).0, Effect::Deny);
    assert!(!p.visible(&outsider, "t__x"));
    // The grant's own org wins over the file's.
    let text = format!("org = \"acme\"\n{}", grant("g", "\"team:eng\"", "\"*\"", "allow", "org = \"globex\""));
    let p = policy(&text);
    assert_eq!(decide(&p, &outsider, "t__x", json!({})).0, Effect::Allow);
    assert_eq!(decide(&p, &eng(), "t__x", json!({})).0, Effect::Deny);
}

#[test]
fn tool_globs_select_tools() {
    let p = policy(&grant("g", "\"*\"", "\"github__create_*\", \"time__now\"", "allow", ""));
    for (tool, allowed) in [
        ("github__create_issue", true),
        ("github__create_pull_request", true),
        ("github__delete_repo", false),
        ("time__now", true),
        ("time__nowish", false),
    ] {
        assert_eq!(decide(&p, &eng(), tool, json!({})).0 == Effect::Allow, allowed, "{tool}");
        assert_eq!(p.visible(&eng(), tool), allowed, "{tool}");
    }
}

#[test]
fn when_selects_the_grant_by_arguments() {
    let text = grant(
        "sandbox",
        "\"team:eng\"",
        "\"github__create_issue\"",
        "allow",
        "when = { properties = { repo = { pattern = \"^acme/sandbox-\" } } }",
    ) + &grant(
        "prod",
        "\"team:eng\"",
        "\"github__create_issue\"",
        "approve",
        "when = { properties = { repo = { pattern = \"^acme/prod-\" } } }",
    );
    let p = policy(&text);
    let t = "github__create_issue";
    assert_eq!(decide(&p, &eng(), t, json!({"repo": "acme/sandbox-1"})), (Effect::Allow, vec!["sandbox".into()]));
    assert_eq!(decide(&p, &eng(), t, json!({"repo": "acme/prod-1"})), (Effect::Approve, vec!["prod".into()]));
    let d = p.decide(&eng(), t, &json!({"repo": "other/x"}));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.reason.contains("sandbox") && d.reason.contains("/repo"), "{}", d.reason);
    // Visible: some arguments can call it.
    assert!(p.visible(&eng(), t));
}

#[test]
fn a_deny_with_when_refuses_only_matching_arguments() {
    let text = grant("all", "\"*\"", "\"db__query\"", "allow", "")
        + &grant(
            "no-drop",
            "\"*\"",
            "\"db__query\"",
            "deny",
            "when = { properties = { sql = { pattern = \"(?i)drop\" } } }",
        );
    let p = policy(&text);
    assert_eq!(decide(&p, &eng(), "db__query", json!({"sql": "select 1"})).0, Effect::Allow);
    assert_eq!(decide(&p, &eng(), "db__query", json!({"sql": "DROP TABLE x"})), (Effect::Deny, vec!["no-drop".into()]));
    assert!(p.visible(&eng(), "db__query"));
}

#[test]
fn arguments_constraints_must_hold_for_one_applicable_grant() {
    let p =
        policy(&grant("g", "\"*\"", "\"t__x\"", "allow", "arguments = { properties = { title = { maxLength = 5 } } }"));
    let d = p.decide(&eng(), "t__x", &json!({"title": "short"}));
    assert!(matches!(Policy::check_arguments(&d, &json!({"title": "short"})), ArgumentCheck::Holds(g) if g.id == "g"));
    let long = json!({"title": "far too long"});
    let d = p.decide(&eng(), "t__x", &long);
    match Policy::check_arguments(&d, &long) {
        ArgumentCheck::Fails(v) => assert!(v.iter().any(|m| m.contains("/title") && m.contains("grant `g`")), "{v:?}"),
        other => panic!("{other:?}"),
    }
    // A second applicable grant without constraints lets it through.
    let text = grant("g", "\"*\"", "\"t__x\"", "allow", "arguments = { properties = { title = { maxLength = 5 } } }")
        + &grant("admins", "\"team:eng\"", "\"t__*\"", "allow", "");
    let p = policy(&text);
    let d = p.decide(&eng(), "t__x", &long);
    assert!(matches!(Policy::check_arguments(&d, &long), ArgumentCheck::Holds(g) if g.id == "admins"));
}

#[test]
fn bad_files_are_refused_with_line_and_field() {
    let e = errors_of("[[grant]]\nid = \"g\"\nprincipals = [\"team:eng\"]\ntools = [\"*\"]\neffect = \"maybe\"\n");
    assert!(e.contains("p.toml:5: grant[0].effect: `maybe` is not one of allow, approve, deny"), "{e}");
    let e = errors_of("[[grant]]\nid = \"g\"\nprincipals = [\"group:eng\"]\ntools = [\"*\"]\neffect = \"allow\"\n");
    assert!(e.contains("p.toml:3: grant[0].principals"), "{e}");
    let e = errors_of(
        "[[grant]]\nid = \"g\"\nprincipals = [\"*\"]\ntools = [\"*\"]\neffect = \"allow\"\nrate = \"lots\"\n",
    );
    assert!(e.contains("p.toml:6: grant[0].rate"), "{e}");
    let e = errors_of(
        "[[grant]]\nid = \"g\"\nprincipals = [\"*\"]\ntools = [\"*\"]\neffect = \"allow\"\nwhen = { type = 5 }\n",
    );
    assert!(e.contains("p.toml:6: grant[0].when"), "{e}");
    let e = errors_of(
        "[[grant]]\nid = \"g\"\nprincipals = [\"*\"]\ntools = [\"*\"]\neffect = \"allow\"\ncolour = \"red\"\n",
    );
    assert!(e.contains("colour"), "{e}");
    let e = errors_of("[[grant]]\nid = \"g\"\nprincipals = []\ntools = [\"*\"]\neffect = \"allow\"\n");
    assert!(e.contains("grant[0].principals: must name at least one principal"), "{e}");
    let e = errors_of(
        "[[grant]]\nid = \"g\"\nprincipals = [\"*\"]\ntools = [\"*\"]\neffect = \"allow\"\nmax_cost_per_call = \"-1\"\n",
    );
    assert!(e.contains("p.toml:6: grant[0].max_cost_per_call"), "{e}");
}

#[test]
fn a_hostile_pattern_in_a_grant_compiles_to_a_linear_time_matcher() {
    let p =
        policy(&grant("g", "\"*\"", "\"t__x\"", "allow", "when = { properties = { s = { pattern = \"^(a+)+$\" } } }"));
    let evil = format!("{}!", "a".repeat(50_000));
    let started = std::time::Instant::now();
    assert_eq!(decide(&p, &eng(), "t__x", json!({"s": evil})).0, Effect::Deny);
    // Backtracking engines take exponential time here; `regex` is linear.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
