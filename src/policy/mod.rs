//! Grants: who may call which tool with which arguments (SPEC.md, "Grants").
//!
//! A [`Policy`] is an immutable, compiled set of grants; a new file version
//! makes a new `Policy` (see [`watch`]). Deciding is pure: principal, tool
//! name and arguments in, [`Decision`] out, with the trace of every grant
//! considered so that denials and `tollgate explain` can say why.
//!
//! Semantics:
//! - a grant *applies* to a call when one of its principals names the caller,
//!   one of its tool globs matches the tool, its `org` (if any) is the
//!   caller's org, and its `when` schema (if any) holds for the arguments;
//! - `deny` beats `approve` beats `allow`; no applicable grant: deny;
//! - the `arguments` constraints of the winning effect's applicable grants
//!   must hold for at least one of them, else the call is invalid;
//! - a tool is *visible* to a principal when some allow or approve grant
//!   names it and no unconditional deny grant does.

use crate::glob;
pub mod load;
pub mod rate;
pub mod spec;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use jsonschema::Validator;
use serde_json::Value;

use crate::catalog::schema;
use crate::identity::Principal;
use crate::money::Micros;
use rate::Rate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    Allow,
    Approve,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Approve => "approve",
            Effect::Deny => "deny",
        }
    }
}

/// Whom a grant names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalRef {
    Key(String),
    Team(String),
    Org(String),
    Anyone,
}

impl PrincipalRef {
    pub fn parse(s: &str) -> Result<PrincipalRef, String> {
        let named = |rest: &str, make: fn(String) -> PrincipalRef| {
            if crate::identity::valid_name(rest) {
                Ok(make(rest.to_string()))
            } else {
                Err(format!("`{s}`: the name after `:` must be 1 to 64 letters, digits, `-`, `_` or `.`"))
            }
        };
        match s.split_once(':') {
            _ if s == "*" => Ok(PrincipalRef::Anyone),
            Some(("key", rest)) => named(rest, PrincipalRef::Key),
            Some(("team", rest)) => named(rest, PrincipalRef::Team),
            Some(("org", rest)) => named(rest, PrincipalRef::Org),
            _ => Err(format!("`{s}` is not a principal: use `key:<id>`, `team:<name>`, `org:<name>` or `*`")),
        }
    }

    pub fn matches(&self, p: &Principal) -> bool {
        match self {
            PrincipalRef::Key(id) => *id == p.key_id,
            PrincipalRef::Team(t) => *t == p.team,
            PrincipalRef::Org(o) => *o == p.org,
            PrincipalRef::Anyone => true,
        }
    }
}

impl std::fmt::Display for PrincipalRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrincipalRef::Key(id) => write!(f, "key:{id}"),
            PrincipalRef::Team(t) => write!(f, "team:{t}"),
            PrincipalRef::Org(o) => write!(f, "org:{o}"),
            PrincipalRef::Anyone => f.write_str("*"),
        }
    }
}

/// A JSON Schema as written and as compiled.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub schema: Value,
    pub validator: Arc<Validator>,
}

impl Constraint {
    pub fn compile(schema: Value) -> Result<Constraint, String> {
        let validator = schema::compile(&schema, schema::Bounds::default())?;
        Ok(Constraint { schema, validator })
    }

    pub fn violations(&self, args: &Value) -> Vec<String> {
        schema::violations(&self.validator, args)
    }
}

/// The route of grants that name none: the approvals page and API only.
pub const PAGE_ROUTE: &str = "page";

/// Shortest webhook signing secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// Who is asked to approve: webhook endpoints, the approvals page, and/or
/// the agent's own user (MCP elicitation).
#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    /// When set, the route serves only grants of this org.
    pub org: Option<String>,
    pub webhooks: Vec<Webhook>,
    pub page: bool,
    pub user: bool,
    pub source: Source,
}

/// An endpoint notified of new pending actions, with the secret that signs
/// the notifications and the decisions sent back.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: crate::config::Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRoute {
    pub route: Option<String>,
    pub timeout: Option<std::time::Duration>,
}

/// Where a grant was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File {
        path: PathBuf,
        line: usize,
    },
    /// Made through the admin API; lives in the store.
    Api {
        revision: i64,
    },
}

impl Source {
    /// The file a grant comes from, if it does: such grants are read-only
    /// through the API.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Source::File { path, .. } => Some(path),
            Source::Api { .. } => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Api { revision } => write!(f, "admin API (revision {revision})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    pub description: Option<String>,
    /// When set, the grant applies only to keys of this org.
    pub org: Option<String>,
    pub principals: Vec<PrincipalRef>,
    pub tools: Vec<String>,
    pub effect: Effect,
    pub when: Option<Constraint>,
    pub arguments: Option<Constraint>,
    pub rate: Option<Rate>,
    pub max_cost_per_call: Option<Micros>,
    pub approve_above: Option<Micros>,
    pub approval: Option<ApprovalRoute>,
    /// Scan settings for the calls this grant decides (the most specific layer).
    pub scans: Option<Arc<crate::scan::Layer>>,
    pub source: Source,
}

impl Grant {
    fn principal_match(&self, p: &Principal) -> Option<&PrincipalRef> {
        if self.org.as_ref().is_some_and(|o| *o != p.org) {
            return None;
        }
        self.principals.iter().find(|r| r.matches(p))
    }

    fn tool_match(&self, tool: &str) -> Option<&str> {
        self.tools.iter().map(String::as_str).find(|g| glob::matches(g, tool))
    }
}

/// How one grant related to one call.
#[derive(Debug, Clone)]
pub struct Considered {
    pub grant: Arc<Grant>,
    /// The principal entry that named the caller, if any.
    pub principal: Option<String>,
    /// The tool glob that matched, if any.
    pub tool: Option<String>,
    /// `None`: no `when`, or not evaluated; `Some(violations)`: evaluated.
    pub when: Option<Vec<String>>,
    pub applies: bool,
}

/// The authorize stage's outcome.
#[derive(Debug, Clone)]
pub struct Decision {
    pub effect: Effect,
    /// Applicable grants of the winning effect, in policy order.
    pub grants: Vec<Arc<Grant>>,
    /// Why, in words an agent (and an auditor) can act on.
    pub reason: String,
    pub trace: Vec<Considered>,
}

impl Decision {
    pub fn grant_ids(&self) -> Vec<String> {
        self.grants.iter().map(|g| g.id.clone()).collect()
    }
}

/// The `arguments` check after an allow or approve decision.
#[derive(Debug, Clone)]
pub enum ArgumentCheck {
    /// Holds for this grant (the first, in order, whose constraints hold).
    Holds(Arc<Grant>),
    /// Violations, each prefixed with the grant that raised it.
    Fails(Vec<String>),
}

/// A budget defined in a policy file (its usage lives in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpec {
    pub id: String,
    pub scope: String,
    pub org: Option<String>,
    pub unit: crate::budget::Unit,
    /// Micro-units or tokens.
    pub limit: i64,
    pub period: crate::budget::Period,
    /// `file:<path>:<line>`.
    pub source: String,
}

impl BudgetSpec {
    pub fn row(&self, now: i64) -> crate::store::BudgetRow {
        crate::store::BudgetRow {
            id: self.id.clone(),
            scope: self.scope.clone(),
            org: self.org.clone(),
            unit: self.unit,
            limit_amount: self.limit,
            period: self.period,
            source: self.source.clone(),
            updated_at: now,
        }
    }
}

/// A compiled, immutable set of grants and file budgets.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub grants: Vec<Arc<Grant>>,
    pub budgets: Vec<BudgetSpec>,
    pub routes: Vec<Route>,
    /// Files it was read from, with their SHA-256, for the audit trail.
    pub files: Vec<(PathBuf, String)>,
    /// The files' `[scans]`: defaults for every call.
    pub scans: Option<Arc<crate::scan::Layer>>,
}

impl Policy {
    pub fn grant(&self, id: &str) -> Option<&Arc<Grant>> {
        self.grants.iter().find(|g| g.id == id)
    }

    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }

    /// Whether `principal` may see `tool` in its lists. An unconditional deny
    /// hides the tool, unless the deny has a description: that grant wants
    /// the agent told why (a call is refused with the description).
    pub fn visible(&self, principal: &Principal, tool: &str) -> bool {
        let mut granted = false;
        for g in &self.grants {
            if g.principal_match(principal).is_none() || g.tool_match(tool).is_none() {
                continue;
            }
            match g.effect {
                Effect::Deny if g.when.is_none() && g.description.is_none() => return false,
                Effect::Deny => {}
                Effect::Allow | Effect::Approve => granted = true,
            }
        }
        granted
    }

    /// Decides a call. Never fails open: no applicable grant is a deny.
    pub fn decide(&self, principal: &Principal, tool: &str, args: &Value) -> Decision {
        let mut trace = Vec::with_capacity(self.grants.len());
        for g in &self.grants {
            let principal_hit = g.principal_match(principal).map(ToString::to_string);
            let tool_hit = g.tool_match(tool).map(str::to_string);
            let when = match (&principal_hit, &tool_hit, &g.when) {
                (Some(_), Some(_), Some(c)) => Some(c.violations(args)),
                _ => None,
            };
            let applies = principal_hit.is_some() && tool_hit.is_some() && when.as_ref().is_none_or(Vec::is_empty);
            trace.push(Considered { grant: g.clone(), principal: principal_hit, tool: tool_hit, when, applies });
        }
        let winning = [Effect::Deny, Effect::Approve, Effect::Allow]
            .into_iter()
            .find(|e| trace.iter().any(|c| c.applies && c.grant.effect == *e));
        let Some(effect) = winning else {
            return Decision { effect: Effect::Deny, grants: Vec::new(), reason: no_grant_reason(&trace, tool), trace };
        };
        let grants: Vec<Arc<Grant>> =
            trace.iter().filter(|c| c.applies && c.grant.effect == effect).map(|c| c.grant.clone()).collect();
        let ids = grants.iter().map(|g| format!("`{}`", g.id)).collect::<Vec<_>>().join(", ");
        let reason = match effect {
            Effect::Deny => format!("denied by grant {ids}"),
            Effect::Approve => format!("needs approval (grant {ids})"),
            Effect::Allow => format!("allowed by grant {ids}"),
        };
        Decision { effect, grants, reason, trace }
    }

    /// Checks the `arguments` constraints of an allow or approve decision.
    pub fn check_arguments(decision: &Decision, args: &Value) -> ArgumentCheck {
        let mut failures = Vec::new();
        for g in &decision.grants {
            match &g.arguments {
                None => return ArgumentCheck::Holds(g.clone()),
                Some(c) => {
                    let v = c.violations(args);
                    if v.is_empty() {
                        return ArgumentCheck::Holds(g.clone());
                    }
                    failures.extend(v.into_iter().map(|v| format!("{v} (grant `{}`)", g.id)));
                }
            }
        }
        if failures.is_empty() {
            // No grants at all: only reachable for a deny, which never asks.
            ArgumentCheck::Fails(vec!["no grant allows this call".into()])
        } else {
            ArgumentCheck::Fails(failures)
        }
    }
}

/// Why nothing applied: the `when` conditions the caller could meet, if any.
fn no_grant_reason(trace: &[Considered], tool: &str) -> String {
    let unmet: Vec<String> = trace
        .iter()
        .filter(|c| c.grant.effect != Effect::Deny)
        .filter_map(|c| {
            let v = c.when.as_ref().filter(|v| !v.is_empty())?;
            Some(format!("grant `{}` allows it only when: {}", c.grant.id, v.join("; ")))
        })
        .collect();
    if unmet.is_empty() {
        format!("no grant allows calling `{tool}`")
    } else {
        format!("no grant allows this call of `{tool}` with these arguments: {}", unmet.join(" | "))
    }
}

#[cfg(test)]
mod tests;
