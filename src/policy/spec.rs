//! A grant as the admin API reads and writes it: the same fields as a
//! `[[grant]]` in a policy file, as JSON. [`compile`] checks one field by
//! field (every error names its field); [`render`] turns any grant, from a
//! file or the store, back into this shape; [`diff`] says what a change did.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::rate::Rate;
use super::{ApprovalRoute, Constraint, Effect, Grant, PrincipalRef, Source};
use crate::money::Micros;

/// A grant's fields as written. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// 1 to 128 characters without spaces; unique across files and the store.
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Always the caller's org for grants made through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// `key:<id>`, `team:<name>`, `org:<name>` or `*`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Tool names or globs (`github__create_*`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// `allow`, `approve` or `deny`.
    #[serde(default)]
    pub effect: String,
    /// A JSON Schema the arguments must meet for the grant to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub when: Option<Value>,
    /// A JSON Schema the arguments must meet, else the call is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
    /// Calls per window per principal, e.g. `60/min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// A decimal amount, e.g. `0.50`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_per_call: Option<String>,
    /// Calls whose held cost exceeds this amount wait for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_above: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
    /// Scan settings for the calls this grant decides, e.g.
    /// `{"pii": {"results": "off"}, "secrets": {"arguments": "block"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub scans: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    /// An approval route of the policy files, or `page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// How long the decision may take, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), message: message.into() }
}

/// Whether `id` can name a grant.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Most principals and tools one grant may name.
const MAX_ENTRIES: usize = 256;

/// Compiles `spec` into a grant from `source`, or lists what is wrong.
pub fn compile(spec: &GrantSpec, source: Source) -> Result<Grant, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !valid_id(&spec.id) {
        errors.push(err("id", "must be 1 to 128 characters without spaces"));
    }
    if spec.description.as_ref().is_some_and(|d| d.len() > 4096) {
        errors.push(err("description", "must be at most 4096 bytes"));
    }
    if let Some(o) = &spec.org
        && !crate::identity::valid_name(o)
    {
        errors.push(err("org", "must be 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    if spec.principals.is_empty() || spec.principals.len() > MAX_ENTRIES {
        errors.push(err("principals", format!("must name 1 to {MAX_ENTRIES} principals")));
    }
    let mut principals = Vec::new();
    for (i, p) in spec.principals.iter().enumerate() {
        match PrincipalRef::parse(p) {
            Ok(r) => principals.push(r),
            Err(m) => errors.push(err(&format!("principals[{i}]"), m)),
        }
    }
    if spec.tools.is_empty() || spec.tools.len() > MAX_ENTRIES {
        errors.push(err("tools", format!("must name 1 to {MAX_ENTRIES} tools or globs")));
    }
    for (i, t) in spec.tools.iter().enumerate() {
        if t.is_empty() || t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errors.push(err(&format!("tools[{i}]"), format!("`{t}` is not a tool name or glob")));
        }
    }
    let effect = match spec.effect.as_str() {
        "allow" => Some(Effect::Allow),
        "approve" => Some(Effect::Approve),
        "deny" => Some(Effect::Deny),
        other => {
            errors.push(err("effect", format!("`{other}` is not one of allow, approve, deny")));
            None
        }
    };
    let mut schema = |v: &Option<Value>, field: &str| {
        let v = v.as_ref()?;
        if !v.is_object() {
            errors.push(err(field, "must be a JSON Schema object"));
            return None;
        }
        Constraint::compile(v.clone()).map_err(|m| errors.push(err(field, m))).ok()
    };
    let when = schema(&spec.when, "when");
    let arguments = schema(&spec.arguments, "arguments");
    let rate = spec.rate.as_ref().and_then(|r| Rate::parse(r).map_err(|m| errors.push(err("rate", m))).ok());
    let mut money = |v: &Option<String>, field: &str| {
        v.as_ref().and_then(|m| Micros::parse(m).map_err(|e| errors.push(err(field, e))).ok())
    };
    let max_cost_per_call = money(&spec.max_cost_per_call, "max_cost_per_call");
    let approve_above = money(&spec.approve_above, "approve_above");
    let approval = spec.approval.as_ref().map(|a| {
        let timeout = a
            .timeout
            .as_ref()
            .and_then(|t| crate::config::parse_duration(t).map_err(|m| errors.push(err("approval.timeout", m))).ok());
        if let Some(r) = &a.route
            && !crate::identity::valid_name(r)
        {
            errors.push(err("approval.route", "must be 1 to 64 letters, digits, `-`, `_` or `.`"));
        }
        ApprovalRoute { route: a.route.clone(), timeout }
    });
    let scans = spec.scans.as_ref().and_then(|v| match crate::scan::settings::compile(v, crate::scan::Place::Grant) {
        Ok(l) => Some(std::sync::Arc::new(l)),
        Err(list) => {
            for (f, m) in list {
                errors.push(err(&if f.is_empty() { "scans".to_string() } else { format!("scans.{f}") }, m));
            }
            None
        }
    });
    match effect {
        Some(effect) if errors.is_empty() => Ok(Grant {
            id: spec.id.clone(),
            description: spec.description.clone(),
            org: spec.org.clone(),
            principals,
            tools: spec.tools.clone(),
            effect,
            when,
            arguments,
            rate,
            max_cost_per_call,
            approve_above,
            approval,
            scans,
            source,
        }),
        _ => Err(errors),
    }
}

/// The grant's fields in the API's shape (files' grants included).
pub fn render(g: &Grant) -> GrantSpec {
    GrantSpec {
        id: g.id.clone(),
        description: g.description.clone(),
        org: g.org.clone(),
        principals: g.principals.iter().map(ToString::to_string).collect(),
        tools: g.tools.clone(),
        effect: g.effect.as_str().to_string(),
        when: g.when.as_ref().map(|c| c.schema.clone()),
        arguments: g.arguments.as_ref().map(|c| c.schema.clone()),
        rate: g.rate.map(show_rate),
        max_cost_per_call: g.max_cost_per_call.map(|m| m.to_string()),
        approve_above: g.approve_above.map(|m| m.to_string()),
        approval: g
            .approval
            .as_ref()
            .map(|a| ApprovalSpec { route: a.route.clone(), timeout: a.timeout.map(show_duration) }),
        scans: g.scans.as_ref().map(|l| l.source.clone()),
    }
}

fn show_rate(r: Rate) -> String {
    match r.window.as_secs() {
        1 => format!("{}/s", r.count),
        60 => format!("{}/min", r.count),
        3600 => format!("{}/hour", r.count),
        86_400 => format!("{}/day", r.count),
        s => format!("{}/{s}s", r.count),
    }
}

fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// What changed from `before` to `after`, as a list of
/// `{path, before, after}` at the JSON pointers where they differ (objects
/// compared key by key; other values whole).
pub fn diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{}", crate::scan::pointer_segment(k));
                match (b.get(k), a.get(k)) {
                    (Some(x), Some(y)) => walk(&p, x, y, out),
                    (Some(x), None) => out.push(json!({"path": p, "before": x, "after": null})),
                    (None, Some(y)) => out.push(json!({"path": p, "before": null, "after": y})),
                    (None, None) => {}
                }
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(json!({"path": if path.is_empty() { "/" } else { path }, "before": b, "after": a})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> GrantSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn a_rendered_grant_compiles_back_to_the_same_spec() {
        let s = spec(json!({
            "id": "g1", "principals": ["team:eng", "*"], "tools": ["a__*"], "effect": "approve",
            "when": {"properties": {"repo": {"pattern": "^x"}}}, "arguments": {"required": ["repo"]},
            "rate": "60/min", "max_cost_per_call": "0.50", "approve_above": "5",
            "approval": {"route": "security", "timeout": "30m"}
        }));
        let g = compile(&s, Source::Api { revision: 1 }).expect("compiles");
        let back = render(&g);
        let again = compile(&back, Source::Api { revision: 1 }).expect("compiles again");
        assert_eq!(render(&again), back);
        assert_eq!(back.rate.as_deref(), Some("60/min"));
        assert_eq!(back.approval.and_then(|a| a.timeout).as_deref(), Some("30m"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let s = spec(json!({
            "id": "has space", "principals": ["bogus"], "tools": [""], "effect": "maybe",
            "when": [1], "rate": "0/min", "max_cost_per_call": "-1", "approval": {"timeout": "soon"}
        }));
        let errors = compile(&s, Source::Api { revision: 1 }).expect_err("refused");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in ["id", "principals[0]", "tools[0]", "effect", "when", "rate", "max_cost_per_call", "approval.timeout"]
        {
            assert!(fields.contains(&f), "{f} not named in {fields:?}");
        }
        assert!(
            compile(&spec(json!({"id": "x", "tools": ["t"], "effect": "allow"})), Source::Api { revision: 1 })
                .expect_err("no principals")
                .iter()
                .any(|e| e.field == "principals")
        );
    }

    #[test]
    fn diffs_name_the_paths_that_changed() {
        let d = diff(
            &json!({"effect": "allow", "tools": ["a"], "when": {"x": 1}}),
            &json!({"effect": "deny", "tools": ["a"], "when": {"x": 2}, "rate": "1/s"}),
        );
        assert_eq!(
            d,
            vec![
                json!({"path": "/effect", "before": "allow", "after": "deny"}),
                json!({"path": "/rate", "before": null, "after": "1/s"}),
                json!({"path": "/when/x", "before": 1, "after": 2}),
            ]
        );
        assert!(diff(&json!({"a": 1}), &json!({"a": 1})).is_empty());
    }
}
