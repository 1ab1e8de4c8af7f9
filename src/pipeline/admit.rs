//! The stages before anything is held or run: identify, resolve,
//! authorize, validate, scan the arguments, limit, and price. Each is a
//! short function that notes what it decided on the call's record and
//! returns the call a step further, or the [`Refusal`] that ends it.

use std::sync::Arc;

use rmcp::model::CallToolRequestParams;
use serde_json::Value;

use super::outcome::Refusal;
use super::scans::scan_settings;
use crate::audit::{CallRecord, redact};
use crate::catalog::{Target, ToolEntry, schema};
use crate::gateway::Gateway;
use crate::identity::{AuthError, Principal};
use crate::money::Micros;
use crate::policy::{ArgumentCheck, Decision, Grant, Policy};
use crate::scan;

/// Who is calling, as the edge established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The MCP session, when the transport has one.
    pub session: Option<String>,
    /// Time the edge spent authenticating the request, before the call began.
    pub auth_micros: u64,
}

/// A call the policy lets go on: to the hold stage (allowed), or to the
/// approve stage.
pub struct Admitted {
    pub principal: Principal,
    pub entry: Arc<ToolEntry>,
    pub decided: Decision,
    /// The grant that decided it (its conditions hold).
    pub grant: Arc<Grant>,
    pub arguments: Value,
    pub params: CallToolRequestParams,
    /// Money (micro-units) and tokens the call holds.
    pub cost: i64,
    pub tokens: i64,
    /// The longest its execute stage may take.
    pub call_ttl: std::time::Duration,
}

/// Runs the stages in order; the first refusal ends the call.
pub async fn admit(
    gw: &Gateway,
    rec: &mut CallRecord,
    caller: Result<Caller, AuthError>,
    mut params: CallToolRequestParams,
) -> Result<Admitted, Refusal> {
    let principal = identify(gw, rec, caller, &params.name)?;
    // Right after start-up, once the upstreams' first connection attempts
    // are done; then one catalog and one policy snapshot for the whole call.
    if !gw.upstreams.settled() {
        gw.upstreams.wait_settled(gw.upstreams.startup_bound()).await;
    }
    let policy = gw.policies.current();
    let entry = resolve(gw, rec, &principal, &policy, &params.name)?;
    let mut arguments = Value::Object(params.arguments.take().unwrap_or_default());
    if entry.target == Target::Llm {
        gw.llm.with_defaults(&mut arguments);
    }
    bounded(gw, rec, &entry, &arguments)?;
    let decided = authorize(rec, &principal, &policy, &entry, &arguments)?;
    let grant = validate(rec, &entry, &decided, &arguments)?;
    scan_arguments(gw, rec, &policy, &entry, &grant, &mut arguments)?;
    limit(gw, rec, &principal, &grant).await?;
    let (cost, tokens) = price(gw, rec, &entry, &grant, &arguments)?;
    let call_ttl = time_bound(gw, &entry, &arguments);
    Ok(Admitted { principal, entry, decided, grant, arguments, params, cost, tokens, call_ttl })
}

/// identify: the edge authenticated the key (or could not).
fn identify(
    gw: &Gateway,
    rec: &mut CallRecord,
    caller: Result<Caller, AuthError>,
    tool: &str,
) -> Result<Principal, Refusal> {
    match caller {
        Ok(c) => {
            rec.principal = Some(c.principal.clone());
            rec.stage("identify");
            rec.add_to_stage("identify", c.auth_micros);
            Ok(c.principal)
        }
        Err(e) => {
            rec.reason = Some(e.to_string());
            if gw.upstreams.catalog().tool(tool).is_none() {
                rec.unlisted_tool(tool);
            }
            rec.stage("identify");
            Err(Refusal::Unauthorized(format!("unauthorized: {e}")))
        }
    }
}

/// resolve: the tool in the catalog, if this principal may see it. A tool
/// the principal may never call is indistinguishable from one that does
/// not exist.
fn resolve(
    gw: &Gateway,
    rec: &mut CallRecord,
    principal: &Principal,
    policy: &Policy,
    name: &str,
) -> Result<Arc<ToolEntry>, Refusal> {
    let catalog = gw.upstreams.catalog();
    let listed = catalog.tool(name);
    if let Some(entry) = listed.filter(|e| policy.visible(principal, &e.name)) {
        rec.upstream = Some(entry.upstream_name.to_string());
        return Ok(entry.clone());
    }
    let refusal = match catalog.quarantine_of(name) {
        Some(q) if policy.visible(principal, &q.name) => {
            Refusal::Quarantined(format!("tool `{}` is quarantined: {}", q.name, q.reason))
        }
        _ => match gw.upstreams.unavailable_owner(name) {
            Some(owner) => Refusal::Unavailable(format!(
                "tool `{name}` is unavailable: upstream `{}` is {}",
                owner.name, owner.health
            )),
            None => Refusal::UnknownTool(format!("unknown tool: {}", crate::audit::record::bounded(name, 256))),
        },
    };
    if listed.is_some() {
        rec.reason = Some(refusal.text().to_string());
    } else {
        rec.unlisted_tool(name);
        let why = if matches!(refusal, Refusal::Unavailable(_)) { "upstream unavailable" } else { "unknown tool" };
        rec.reason = Some(why.into());
    }
    rec.stage("resolve");
    Err(refusal)
}

/// Arguments over `limits.max_arguments_bytes` are refused; the audit keeps
/// the rest, redacted.
fn bounded(gw: &Gateway, rec: &mut CallRecord, entry: &ToolEntry, arguments: &Value) -> Result<(), Refusal> {
    let size = scan::output::json_size(arguments);
    if size > gw.limits.max_arguments_bytes {
        let text = format!("arguments are {size} bytes, more than the {} allowed", gw.limits.max_arguments_bytes);
        return Err(refuse(rec, "resolve", Refusal::Invalid(text)));
    }
    rec.arguments = Some(audit_arguments(gw, entry, arguments));
    rec.secrets = redact::whole_values(arguments, &entry.settings.redact);
    rec.stage("resolve");
    Ok(())
}

/// authorize: the policy's decision. A deny ends the call with the grant's
/// reason (and description).
fn authorize(
    rec: &mut CallRecord,
    principal: &Principal,
    policy: &Policy,
    entry: &ToolEntry,
    arguments: &Value,
) -> Result<Decision, Refusal> {
    let decided = policy.decide(principal, &entry.name, arguments);
    rec.grants = decided.grant_ids();
    rec.reason = Some(decided.reason.clone());
    rec.stage("authorize");
    if decided.effect == crate::policy::Effect::Deny {
        let why = denial_text(policy, &decided);
        return Err(Refusal::Denied(format!("call to {} refused: {why}", entry.name)));
    }
    Ok(decided)
}

/// validate: the tool's schema, then the deciding grant's `arguments`. The
/// upstream is never called with arguments that fail either.
fn validate(
    rec: &mut CallRecord,
    entry: &ToolEntry,
    decided: &Decision,
    arguments: &Value,
) -> Result<Arc<Grant>, Refusal> {
    let mut violations: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in &entry.validators {
        for e in schema::violations(v, arguments) {
            if violations.len() < schema::MAX_VIOLATIONS && seen.insert(e.clone()) {
                violations.push(e);
            }
        }
    }
    let grant = match Policy::check_arguments(decided, arguments) {
        ArgumentCheck::Holds(g) => Some(g),
        ArgumentCheck::Fails(v) => {
            violations.extend(v.into_iter().take(schema::MAX_VIOLATIONS.saturating_sub(violations.len())));
            None
        }
    };
    match grant {
        Some(grant) if violations.is_empty() => {
            rec.grants = vec![grant.id.clone()];
            rec.stage("validate");
            Ok(grant)
        }
        _ => {
            let list: Vec<String> = violations.iter().map(|v| format!("- {v}")).collect();
            let text = format!("invalid arguments for {}:\n{}", entry.name, list.join("\n"));
            Err(refuse(rec, "validate", Refusal::Invalid(text)))
        }
    }
}

/// scan the arguments: what the agent sends the tool, under the settings of
/// the grant that decided the call (masks apply to what is forwarded,
/// approved and audited).
fn scan_arguments(
    gw: &Gateway,
    rec: &mut CallRecord,
    policy: &Policy,
    entry: &ToolEntry,
    grant: &Grant,
    arguments: &mut Value,
) -> Result<(), Refusal> {
    let scans = scan_settings(policy, entry, Some(grant));
    if !scans.active(scan::Direction::Arguments) {
        return Ok(());
    }
    scan::arguments(arguments, &scans, &mut rec.scan);
    if rec.scan.changed {
        rec.arguments = Some(audit_arguments(gw, entry, arguments));
    }
    if rec.scan.blocked("arguments") {
        let text = format!(
            "call to {} refused: its arguments contain what grant `{}` does not let through: {}",
            entry.name,
            grant.id,
            rec.scan.block_reason("arguments")
        );
        return Err(refuse(rec, "scan_arguments", Refusal::Blocked(text)));
    }
    rec.stage("scan_arguments");
    Ok(())
}

/// limit: the grant's rate for this key.
async fn limit(gw: &Gateway, rec: &mut CallRecord, principal: &Principal, grant: &Grant) -> Result<(), Refusal> {
    let Some(rate) = grant.rate else {
        rec.stage("limit");
        return Ok(());
    };
    let taken = crate::policy::rate::take(&gw.store, gw.policies.limiter(), &grant.id, &principal.key_id, rate).await;
    rec.stage("limit");
    match taken {
        Ok(Ok(())) => Ok(()),
        Ok(Err(wait)) => {
            let text = format!(
                "rate limit of grant `{}` ({} calls per {:?}) reached; retry in {:.1}s",
                grant.id,
                rate.count,
                rate.window,
                wait.as_secs_f64()
            );
            rec.reason = Some(text.clone());
            Err(Refusal::RateLimited(text))
        }
        Err(e) => Err(Refusal::Failed(format!("the rate limit store is unavailable: {e}"))),
    }
}

/// What the call holds: money (micro-units) and tokens, within the grant's
/// cost per call. A tool's cost from its manifest; for the LLM tool, the
/// worst case of its chat.
fn price(
    gw: &Gateway,
    rec: &mut CallRecord,
    entry: &ToolEntry,
    grant: &Grant,
    arguments: &Value,
) -> Result<(i64, i64), Refusal> {
    let (cost, tokens) = match entry.target {
        Target::Mcp(_) => (entry.settings.cost.map_or(0, |m| m.0), 0),
        Target::Llm => {
            let estimated = crate::llm::Chat::from_arguments(arguments)
                .and_then(|chat| gw.llm.estimate(&chat).map_err(|e| e.to_string()));
            match estimated {
                Ok(e) => (e.money, e.tokens),
                Err(e) => {
                    let text = format!("invalid arguments for {}:\n- {e}", entry.name);
                    return Err(refuse(rec, "hold", Refusal::Invalid(text)));
                }
            }
        }
    };
    if let Some(max) = grant.max_cost_per_call
        && cost > max.0
    {
        let text = format!(
            "call to {} costs {}, more than the {} per call grant `{}` allows",
            entry.name,
            Micros(cost),
            max,
            grant.id
        );
        return Err(refuse(rec, "hold", Refusal::OverBudget(text)));
    }
    Ok((cost, tokens))
}

/// The longest the execute stage of this call may take.
fn time_bound(gw: &Gateway, entry: &ToolEntry, arguments: &Value) -> std::time::Duration {
    match entry.target {
        Target::Mcp(i) => entry.settings.timeout.unwrap_or(gw.upstreams.get(i).manifest.call_timeout),
        Target::Llm => gw.llm.time_bound(arguments.get("model").and_then(Value::as_str).unwrap_or_default()),
    }
}

/// The arguments as the audit keeps them: redacted; an LLM call's message
/// text replaced by sizes unless its provider records content.
fn audit_arguments(gw: &Gateway, entry: &ToolEntry, arguments: &Value) -> Value {
    match entry.target {
        Target::Mcp(_) => redact::value(arguments, &entry.settings.redact),
        Target::Llm => crate::llm::chat::audit_arguments(
            arguments,
            gw.llm.records_content(arguments.get("model").and_then(Value::as_str)),
        ),
    }
}

/// Ends a stage with a refusal whose text is also the audit's reason.
pub(super) fn refuse(rec: &mut CallRecord, stage: &'static str, r: Refusal) -> Refusal {
    rec.reason = Some(r.text().to_string());
    rec.stage(stage);
    r
}

/// What a refused agent is told: the grant and its description, or the
/// conditions it could meet.
fn denial_text(policy: &Policy, decided: &Decision) -> String {
    match decided.grants.first() {
        Some(g) => {
            let g = policy.grant(&g.id).unwrap_or(g);
            match &g.description {
                Some(d) => format!("{} ({d})", decided.reason),
                None => decided.reason.clone(),
            }
        }
        None => decided.reason.clone(),
    }
}
