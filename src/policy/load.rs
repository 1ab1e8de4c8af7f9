//! Reads `policies/*.toml` into a [`Policy`], collecting every error with
//! file, line and field. A folder with any error yields no policy at all:
//! a policy never half-loads and never fails open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::rate::Rate;
use super::{ApprovalRoute, BudgetSpec, Constraint, Effect, Grant, Policy, PrincipalRef, Route, Source, Webhook};
use crate::config::error::{Error, Errors, Sink, line_of};
use crate::money::Micros;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Grants in this file apply only to keys of this org.
    org: Option<Spanned<String>>,
    #[serde(default)]
    team: Vec<Spanned<RawTeam>>,
    #[serde(default)]
    grant: Vec<Spanned<RawGrant>>,
    #[serde(default)]
    budget: Vec<Spanned<RawBudget>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    /// Scan defaults for every call (at most one file of the folder).
    scans: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: Spanned<String>,
    org: Option<Spanned<String>>,
    #[serde(default)]
    webhooks: Vec<Spanned<RawWebhook>>,
    page: Option<bool>,
    #[serde(default)]
    user: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
    secret: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    id: Spanned<String>,
    scope: Spanned<String>,
    org: Option<Spanned<String>>,
    unit: Option<Spanned<String>>,
    limit: Spanned<RawAmount>,
    period: Option<Spanned<String>>,
}

/// `"2.50"` for money; `100000` or `"100000"` for tokens.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAmount {
    Text(String),
    Integer(i64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    name: Spanned<String>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    id: Spanned<String>,
    description: Option<String>,
    org: Option<Spanned<String>>,
    principals: Spanned<Vec<Spanned<String>>>,
    tools: Spanned<Vec<Spanned<String>>>,
    effect: Spanned<String>,
    when: Option<Spanned<serde_json::Value>>,
    arguments: Option<Spanned<serde_json::Value>>,
    rate: Option<Spanned<String>>,
    max_cost_per_call: Option<Spanned<String>>,
    approve_above: Option<Spanned<String>>,
    approval: Option<Spanned<RawApproval>>,
    scans: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    route: Option<String>,
    timeout: Option<String>,
}

/// Loads every `*.toml` in `dir`, in file-name order. A missing folder is an
/// empty policy (everything denied), not an error.
pub fn load_dir(dir: &Path) -> Result<Policy, Errors> {
    let files = match crate::config::toml_files(dir) {
        Ok(files) => files,
        // A missing folder is a mistake (a wrong path, a deployment not set up),
        // never "no grants": say so rather than deny everything in silence.
        Err(e) => {
            return Err(Errors(vec![Error {
                file: dir.to_path_buf(),
                line: None,
                field: "policies_dir".into(),
                message: format!("cannot read the policy folder: {e}"),
            }]));
        }
    };
    let mut errors = Vec::new();
    let mut policy = Policy::default();
    let mut ids: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut scans_file: Option<PathBuf> = None;
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Error {
                    file: file.clone(),
                    line: None,
                    field: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        policy.files.push((file.clone(), hex::encode(Sha256::digest(text.as_bytes()))));
        let mut sink = Sink::new(&file, &text, &mut errors);
        let (grants, budgets, routes, scans) = load_file(&text, &mut sink);
        if let Some(s) = scans {
            match &scans_file {
                Some(other) => sink.at(None, "scans", format!("scan defaults are already set in {}", other.display())),
                None => {
                    policy.scans = Some(s);
                    scans_file = Some(file.clone());
                }
            }
        }
        for r in routes {
            if let Some(other) = policy.routes.iter().find(|o| o.id == r.id) {
                sink.at(None, "route.id", format!("route id `{}` is already used at {}", r.id, other.source));
                continue;
            }
            policy.routes.push(r);
        }
        for b in budgets {
            if let Some(other) = policy.budgets.iter().find(|o| o.id == b.id) {
                sink.at(None, "budget.id", format!("budget id `{}` is already used at {}", b.id, other.source));
                continue;
            }
            policy.budgets.push(b);
        }
        for g in grants {
            let line = match &g.source {
                Source::File { line, .. } => *line,
                Source::Api { .. } => 0,
            };
            if let Some((other, other_line)) = ids.get(&g.id) {
                sink.at(
                    None,
                    "grant.id",
                    format!("line {line}: grant id `{}` is already used at {}:{other_line}", g.id, other.display()),
                );
                continue;
            }
            ids.insert(g.id.clone(), (file.clone(), line));
            policy.grants.push(Arc::new(g));
        }
    }
    // Routes may be defined in any file; a grant naming one that is not is an error.
    for g in &policy.grants {
        if let Some(route) = g.approval.as_ref().and_then(|a| a.route.as_deref())
            && route != super::PAGE_ROUTE
            && policy.route(route).is_none()
        {
            let (file, line) = match &g.source {
                Source::File { path, line } => (path.clone(), Some(*line)),
                Source::Api { .. } => (PathBuf::new(), None),
            };
            errors.push(Error {
                file,
                line,
                field: "grant.approval.route".into(),
                message: format!("route `{route}` is not defined by any [[route]] in the policy folder"),
            });
        }
    }
    if errors.is_empty() { Ok(policy) } else { Err(Errors(errors)) }
}

/// Parses one file's grants; errors go to `sink`.
pub fn load_text(text: &str, sink: &mut Sink<'_>) -> Vec<Grant> {
    load_file(text, sink).0
}

/// What one policy file defines.
type FileParts = (Vec<Grant>, Vec<BudgetSpec>, Vec<Route>, Option<Arc<crate::scan::Layer>>);

/// Parses one file's grants, budgets, approval routes and scan defaults;
/// errors go to `sink`.
pub fn load_file(text: &str, sink: &mut Sink<'_>) -> FileParts {
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            sink.toml(&e);
            return (Vec::new(), Vec::new(), Vec::new(), None);
        }
    };
    let file_org = raw.org.as_ref().and_then(|o| name(o, "org", sink));
    for (i, t) in raw.team.iter().enumerate() {
        name(&t.get_ref().name, &format!("team[{i}].name"), sink);
    }
    let file = sink.file().to_path_buf();
    let file_scans = raw.scans.as_ref().and_then(|v| {
        if raw.org.is_some() {
            sink.at(
                Some(v.span()),
                "scans",
                "scan defaults apply to every org: put them in a file without `org`, or on grants",
            );
            return None;
        }
        scans(v, crate::scan::Place::Policy, "scans", sink)
    });
    let budgets = load_budgets(&raw.budget, file_org.as_ref(), text, sink);
    let routes = load_routes(&raw.route, file_org.as_ref(), text, sink);
    let mut out = Vec::new();
    for (i, g) in raw.grant.iter().enumerate() {
        let before = sink.count();
        let line = line_of(text, g.span().start);
        let g = g.get_ref();
        let field = |f: &str| format!("grant[{i}].{f}");
        let id = g.id.get_ref().trim().to_string();
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            sink.at(Some(g.id.span()), field("id"), "must be 1 to 128 characters without spaces");
        }
        let org = match &g.org {
            Some(o) => name(o, &field("org"), sink),
            None => file_org.clone(),
        };
        let mut principals = Vec::new();
        if g.principals.get_ref().is_empty() {
            sink.at(Some(g.principals.span()), field("principals"), "must name at least one principal");
        }
        for p in g.principals.get_ref() {
            match PrincipalRef::parse(p.get_ref()) {
                Ok(r) => principals.push(r),
                Err(m) => sink.at(Some(p.span()), field("principals"), m),
            }
        }
        let mut tools = Vec::new();
        if g.tools.get_ref().is_empty() {
            sink.at(Some(g.tools.span()), field("tools"), "must name at least one tool or glob");
        }
        for t in g.tools.get_ref() {
            let s = t.get_ref();
            if s.is_empty() || s.len() > 256 || s.chars().any(char::is_whitespace) {
                sink.at(Some(t.span()), field("tools"), format!("`{s}` is not a tool name or glob"));
            } else {
                tools.push(s.clone());
            }
        }
        let effect = match g.effect.get_ref().as_str() {
            "allow" => Effect::Allow,
            "approve" => Effect::Approve,
            "deny" => Effect::Deny,
            other => {
                sink.at(
                    Some(g.effect.span()),
                    field("effect"),
                    format!("`{other}` is not one of allow, approve, deny"),
                );
                Effect::Deny
            }
        };
        let mut schema = |v: &Option<Spanned<serde_json::Value>>, f: &str| {
            let v = v.as_ref()?;
            if !v.get_ref().is_object() {
                sink.at(Some(v.span()), field(f), "must be a JSON Schema object (a TOML table)");
                return None;
            }
            match Constraint::compile(v.get_ref().clone()) {
                Ok(c) => Some(c),
                Err(m) => {
                    sink.at(Some(v.span()), field(f), m);
                    None
                }
            }
        };
        let when = schema(&g.when, "when");
        let arguments = schema(&g.arguments, "arguments");
        let rate = g
            .rate
            .as_ref()
            .and_then(|r| Rate::parse(r.get_ref()).map_err(|m| sink.at(Some(r.span()), field("rate"), m)).ok());
        let mut money = |v: &Option<Spanned<String>>, f: &str| {
            v.as_ref().and_then(|m| Micros::parse(m.get_ref()).map_err(|e| sink.at(Some(m.span()), field(f), e)).ok())
        };
        let max_cost_per_call = money(&g.max_cost_per_call, "max_cost_per_call");
        let approve_above = money(&g.approve_above, "approve_above");
        let approval = g.approval.as_ref().map(|a| {
            let timeout = a.get_ref().timeout.as_ref().and_then(|t| {
                crate::config::parse_duration(t).map_err(|m| sink.at(Some(a.span()), field("approval.timeout"), m)).ok()
            });
            ApprovalRoute { route: a.get_ref().route.clone(), timeout }
        });
        let grant_scans = g.scans.as_ref().and_then(|v| scans(v, crate::scan::Place::Grant, &field("scans"), sink));
        if sink.count() > before {
            continue;
        }
        out.push(Grant {
            id,
            description: g.description.clone(),
            org,
            principals,
            tools,
            effect,
            when,
            arguments,
            rate,
            max_cost_per_call,
            approve_above,
            approval,
            scans: grant_scans,
            source: Source::File { path: file.clone(), line },
        });
    }
    (out, budgets, routes, file_scans)
}

/// Compiles a `scans` table; each error names its field.
fn scans(
    v: &Spanned<serde_json::Value>,
    place: crate::scan::Place,
    field: &str,
    sink: &mut Sink<'_>,
) -> Option<Arc<crate::scan::Layer>> {
    match crate::scan::settings::compile(v.get_ref(), place) {
        Ok(l) => Some(Arc::new(l)),
        Err(errors) => {
            for (f, m) in errors {
                let at = if f.is_empty() { field.to_string() } else { format!("{field}.{f}") };
                sink.at(Some(v.span()), at, m);
            }
            None
        }
    }
}

fn load_routes(raw: &[Spanned<RawRoute>], file_org: Option<&String>, text: &str, sink: &mut Sink<'_>) -> Vec<Route> {
    let file = sink.file().to_path_buf();
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let before = sink.count();
        let line = line_of(text, r.span().start);
        let r = r.get_ref();
        let field = |f: &str| format!("route[{i}].{f}");
        let id = r.id.get_ref().clone();
        if !crate::identity::valid_name(&id) || id == super::PAGE_ROUTE {
            sink.at(
                Some(r.id.span()),
                field("id"),
                format!("must be 1 to 64 letters, digits, `-`, `_` or `.`, and not `{}`", super::PAGE_ROUTE),
            );
        }
        let org = match &r.org {
            Some(o) => name(o, &field("org"), sink),
            None => file_org.cloned(),
        };
        let mut webhooks = Vec::new();
        for (j, w) in r.webhooks.iter().enumerate() {
            let w = w.get_ref();
            let url = w.url.get_ref().trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() {
                sink.at(Some(w.url.span()), field(&format!("webhooks[{j}].url")), "must be an http:// or https:// URL");
            }
            let template = w.secret.get_ref();
            let secret_field = field(&format!("webhooks[{j}].secret"));
            if !crate::config::secret::has_reference(template) {
                sink.at(
                    Some(w.secret.span()),
                    secret_field,
                    "must be a `${env:NAME}` reference, never the secret itself",
                );
                continue;
            }
            match crate::config::secret::resolve(template, &|n| std::env::var(n).ok()) {
                Ok(s) if s.expose().len() >= super::MIN_SECRET_BYTES => {
                    webhooks.push(Webhook { url: url.to_string(), secret: s });
                }
                Ok(_) => sink.at(
                    Some(w.secret.span()),
                    secret_field,
                    format!("the secret must be at least {} bytes long", super::MIN_SECRET_BYTES),
                ),
                Err(m) => sink.at(Some(w.secret.span()), secret_field, m),
            }
        }
        if sink.count() > before {
            continue;
        }
        out.push(Route {
            id,
            org,
            webhooks,
            page: r.page.unwrap_or(true),
            user: r.user,
            source: Source::File { path: file.clone(), line },
        });
    }
    out
}

fn load_budgets(
    raw: &[Spanned<RawBudget>],
    file_org: Option<&String>,
    text: &str,
    sink: &mut Sink<'_>,
) -> Vec<BudgetSpec> {
    let file = sink.file().to_path_buf();
    let mut out = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let before = sink.count();
        let line = line_of(text, b.span().start);
        let b = b.get_ref();
        let field = |f: &str| format!("budget[{i}].{f}");
        let id = b.id.get_ref().trim().to_string();
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            sink.at(Some(b.id.span()), field("id"), "must be 1 to 128 characters without spaces");
        }
        if !crate::budget::valid_scope(b.scope.get_ref()) {
            sink.at(Some(b.scope.span()), field("scope"), "must be `key:<id>`, `team:<name>` or `org:<name>`");
        }
        let org = match &b.org {
            Some(o) => name(o, &field("org"), sink),
            // An org budget belongs to its org.
            None => file_org.cloned().or_else(|| b.scope.get_ref().strip_prefix("org:").map(str::to_string)),
        };
        let unit = match &b.unit {
            None => crate::budget::Unit::Money,
            Some(u) => crate::budget::Unit::parse(u.get_ref()).unwrap_or_else(|| {
                sink.at(Some(u.span()), field("unit"), "must be `money` or `tokens`");
                crate::budget::Unit::Money
            }),
        };
        let limit_text = match b.limit.get_ref() {
            RawAmount::Text(t) => t.clone(),
            RawAmount::Integer(n) => n.to_string(),
        };
        let limit = unit.amount(&limit_text).map_err(|m| sink.at(Some(b.limit.span()), field("limit"), m)).unwrap_or(0);
        let period = match &b.period {
            None => crate::budget::Period::None,
            Some(p) => crate::budget::Period::parse(p.get_ref()).unwrap_or_else(|| {
                sink.at(Some(p.span()), field("period"), "must be one of none, daily, weekly, monthly");
                crate::budget::Period::None
            }),
        };
        if sink.count() > before {
            continue;
        }
        out.push(BudgetSpec {
            id,
            scope: b.scope.get_ref().clone(),
            org,
            unit,
            limit,
            period,
            source: format!("file:{}:{line}", file.display()),
        });
    }
    out
}

fn name(v: &Spanned<String>, field: &str, sink: &mut Sink<'_>) -> Option<String> {
    if crate::identity::valid_name(v.get_ref()) {
        Some(v.get_ref().clone())
    } else {
        sink.at(Some(v.span()), field, "must be 1 to 64 letters, digits, `-`, `_` or `.`");
        None
    }
}
