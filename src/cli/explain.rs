//! `tollgate explain`: the authorize and validate stages for one call, with
//! the trace of every grant considered, without running anything.

use clap::Args;
use serde_json::{Value, json};

use crate::config::Config;
use crate::identity::{self, Principal};
use crate::policy::{ArgumentCheck, Effect, Policy};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The caller: a key's secret (tg_...) or its id (k_...).
    #[arg(long)]
    key: String,
    /// The tool as agents see it, e.g. github__create_issue.
    #[arg(long)]
    tool: String,
    /// The call's arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(config: Config, a: ExplainArgs) -> Result<(), String> {
    let args: Value = serde_json::from_str(&a.args).map_err(|e| format!("--args is not JSON: {e}"))?;
    if !args.is_object() {
        return Err("--args must be a JSON object".into());
    }
    let policy = crate::policy::load::load_dir(&config.policies_dir).map_err(|e| e.to_string())?;
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let found = if identity::looks_like_secret(&a.key) {
        identity::authenticate(&store, &a.key).await
    } else {
        let probe = Principal { key_id: a.key.clone(), org: String::new(), team: String::new(), role: None };
        identity::reverify(&store, &probe).await
    };
    store.close().await;
    let principal = found.map_err(|e| format!("--key: {e}"))?;
    let mut report = explain(&policy, &principal, &a.tool, &args);
    let (upstream, tool) = manifest_layers(&config, &a.tool);
    let grant = report["deciding_grant"].as_str().and_then(|id| policy.grant(id)).cloned();
    report["scans"] = scans(&policy, upstream, tool, grant.as_deref());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// The decision and its trace, as data.
pub fn explain(policy: &Policy, principal: &Principal, tool: &str, args: &Value) -> Value {
    let visible = policy.visible(principal, tool);
    let d = policy.decide(principal, tool, args);
    let mut deciding = None;
    let (decision, reason) = match d.effect {
        Effect::Deny if !visible => ("deny", format!("`{tool}` is hidden from this key (unknown tool): {}", d.reason)),
        Effect::Deny => ("deny", d.reason.clone()),
        e => match Policy::check_arguments(&d, args) {
            ArgumentCheck::Holds(g) => {
                deciding = Some(g.id.clone());
                (
                    if e == Effect::Approve { "approve" } else { "allow" },
                    format!("{} (deciding grant `{}`)", d.reason, g.id),
                )
            }
            ArgumentCheck::Fails(v) => ("invalid", format!("arguments violate the grant: {}", v.join("; "))),
        },
    };
    let considered: Vec<Value> = d
        .trace
        .iter()
        .map(|c| {
            json!({
                "grant": c.grant.id,
                "source": c.grant.source.to_string(),
                "effect": c.grant.effect.as_str(),
                "principal": c.principal,
                "tool": c.tool,
                "when": match &c.when {
                    None if c.grant.when.is_none() => json!("none"),
                    None => json!("not evaluated"),
                    Some(v) if v.is_empty() => json!("holds"),
                    Some(v) => json!({"fails": v}),
                },
                "applies": c.applies,
                "rate": c.grant.rate.map(|r| r.to_string()),
            })
        })
        .collect();
    json!({
        "principal": {"key": principal.key_id, "org": principal.org, "team": principal.team},
        "tool": tool,
        "visible": visible,
        "decision": decision,
        "reason": reason,
        "deciding_grant": deciding,
        "grants": considered,
        "note": "the tool's own input schema is checked at call time, against the upstream's definition",
    })
}

/// The manifest of the upstream that offers `tool` (by its exposed name)
/// and the tool's own name and override there, as far as the manifests say.
fn manifest_layers<'a>(
    config: &'a Config,
    tool: &'a str,
) -> (Option<&'a crate::config::Manifest>, Option<(&'a str, Option<&'a crate::config::ToolOverride>)>) {
    let sep = &config.catalog.separator;
    for m in &config.manifests {
        for (own, o) in &m.tools {
            let shown = o.rename.as_deref().unwrap_or(own);
            if crate::catalog::exposed(&m.prefix, sep, shown) == tool {
                return (Some(m), Some((own.as_str(), Some(o))));
            }
        }
        if !m.prefix.is_empty()
            && let Some(own) = tool.strip_prefix(&format!("{}{sep}", m.prefix))
        {
            return (Some(m), Some((own, m.tools.get(own))));
        }
    }
    (None, None)
}

/// The scan settings a call would run under, each with the layer it comes
/// from (the layers the pipeline uses, `pipeline::scan_layers`).
fn scans(
    policy: &Policy,
    upstream: Option<&crate::config::Manifest>,
    tool: Option<(&str, Option<&crate::config::ToolOverride>)>,
    grant: Option<&crate::policy::Grant>,
) -> Value {
    let upstream = upstream.map(|m| (m.name.as_str(), m.scans.as_deref()));
    let tool = tool.map(|(own, o)| (own, o.and_then(|o| o.scans.as_deref())));
    let layers = crate::pipeline::scan_layers(policy, upstream, tool, grant);
    let only = layers.each_ref().map(|(_, l)| *l);
    json!({
        "in_force": crate::scan::Settings::resolve(&only).to_json(),
        "explained": crate::scan::Settings::explain(&layers),
    })
}

fn print_text(r: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    println!("decision: {}", s(&r["decision"]));
    println!("reason:   {}", s(&r["reason"]));
    println!(
        "caller:   key:{} (team {}, org {}); tool {} is {}",
        s(&r["principal"]["key"]),
        s(&r["principal"]["team"]),
        s(&r["principal"]["org"]),
        s(&r["tool"]),
        if r["visible"].as_bool() == Some(true) { "visible" } else { "hidden" }
    );
    let grants = r["grants"].as_array().cloned().unwrap_or_default();
    println!("grants considered ({}):", grants.len());
    for g in grants {
        let principal = g["principal"].as_str().map_or("no".to_string(), |p| format!("yes ({p})"));
        let tool = g["tool"].as_str().map_or("no".to_string(), |t| format!("yes ({t})"));
        let when = match &g["when"] {
            Value::String(w) => w.clone(),
            other => format!("fails: {}", other["fails"]),
        };
        println!(
            "  {} [{}] {}: principal {principal}; tool {tool}; when {when} => {}",
            s(&g["grant"]),
            s(&g["effect"]),
            s(&g["source"]),
            if g["applies"].as_bool() == Some(true) { "applies" } else { "does not apply" }
        );
    }
    println!("scans (setting, then the layer it comes from):");
    for line in r["scans"]["explained"].as_array().cloned().unwrap_or_default() {
        println!("  {}", s(&line));
    }
}
