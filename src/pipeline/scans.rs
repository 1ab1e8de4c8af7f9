//! The scan stages of a call (see `scan`): the settings in force for it,
//! the result scan after execute, and the scan of resource contents read
//! outside any tool call.

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResponse, CallToolResult, GetPromptResult, ReadResourceResult};

use super::outcome::tool_error;
use crate::audit::CallRecord;
use crate::catalog::ToolEntry;
use crate::gateway::Gateway;
use crate::identity::Principal;
use crate::policy::{Grant, Policy};
use crate::scan;

/// A manifest's scan layer and what it is named: an upstream's `[scans]`
/// (by upstream name) or a tool's `[tools.<name>.scans]` (by its own name).
pub type Named<'a> = Option<(&'a str, Option<&'a scan::Layer>)>;

/// The scan layers of a call, least specific first, named for `explain`:
/// the policy files' `[scans]`, the manifest's, the tool's, the grant's.
pub fn scan_layers<'a>(
    policy: &'a Policy,
    upstream: Named<'a>,
    tool: Named<'a>,
    grant: Option<&'a Grant>,
) -> [(String, Option<&'a scan::Layer>); 4] {
    [
        ("policy [scans]".to_string(), policy.scans.as_deref()),
        (upstream.map_or_else(String::new, |(n, _)| format!("manifest `{n}` [scans]")), upstream.and_then(|(_, l)| l)),
        (tool.map_or_else(String::new, |(n, _)| format!("manifest [tools.{n}.scans]")), tool.and_then(|(_, l)| l)),
        (grant.map_or_else(String::new, |g| format!("grant `{}`", g.id)), grant.and_then(|g| g.scans.as_deref())),
    ]
}

/// The scan settings in force for a call of `entry` decided by `grant`.
pub fn scan_settings(policy: &Policy, entry: &ToolEntry, grant: Option<&Grant>) -> scan::Settings {
    let upstream = Some((&*entry.upstream_name, entry.upstream_scans.as_deref()));
    let tool = Some((entry.upstream_tool.as_str(), entry.settings.scans.as_deref()));
    let layers = scan_layers(policy, upstream, tool, grant);
    scan::Settings::resolve(&layers.each_ref().map(|(_, l)| *l))
}

/// The result scan: what the agent will read, after the tool ran. A result
/// a scan blocks is withheld (the call still ran, and is charged as such).
pub(super) fn scan_result(
    gw: &Gateway,
    rec: &mut CallRecord,
    entry: &ToolEntry,
    outcome: Result<CallToolResponse, McpError>,
) -> Result<CallToolResponse, McpError> {
    let policy = gw.policies.current();
    let grant = rec.grants.first().and_then(|id| policy.grant(id)).cloned();
    let scans = scan_settings(&policy, entry, grant.as_deref());
    if !scans.active(scan::Direction::Results) {
        return outcome;
    }
    let result = match outcome {
        Ok(CallToolResponse::Complete(result)) => result,
        // An upstream's error message is text the agent reads too.
        Err(mut e) => {
            let mut message = e.message.to_string();
            scan::error_message(&mut message, &scans, &mut rec.scan);
            e.message = message.into();
            // Free-form data from the upstream is not passed on unscanned.
            e.data = None;
            return Err(e);
        }
        other => return other,
    };
    let mut v = match serde_json::to_value(&result) {
        Ok(v) => v,
        // Never hand over a result that could not be scanned.
        Err(e) => return Err(McpError::internal_error(format!("the result could not be scanned: {e}"), None)),
    };
    rec.scan.changed = false;
    scan::result(&mut v, &scans, &mut rec.scan);
    if rec.scan.blocked("result") {
        let text = format!(
            "the result of {} was withheld by tollgate: it contained {}",
            entry.name,
            rec.scan.block_reason("result")
        );
        return Ok(tool_error(text));
    }
    if !rec.scan.changed {
        return Ok(CallToolResponse::Complete(result));
    }
    match serde_json::from_value::<CallToolResult>(v) {
        Ok(r) => Ok(CallToolResponse::Complete(r)),
        // Never hand over the unscanned result.
        Err(e) => Err(McpError::internal_error(format!("the scanned result could not be rebuilt: {e}"), None)),
    }
}

/// Scans the contents of a resource `principal` read from upstream
/// `upstream` under the policy's and the manifest's settings. What the scans
/// found is audited (`resource.scan`) before the contents are handed over;
/// contents a scan blocks are refused.
pub async fn scan_resource(
    gw: &Gateway,
    principal: &Principal,
    upstream: usize,
    result: ReadResourceResult,
) -> Result<ReadResourceResult, McpError> {
    let uri = result.contents.first().map(resource_uri).unwrap_or_default();
    let seen = Seen { kind: "resource", what: ("uri", uri), walk: scan::contents };
    screen(gw, principal, upstream, seen, result).await
}

/// Scans a prompt `principal` got from upstream `upstream` (its messages
/// are text the agent's model reads), as `scan_resource` does.
pub async fn scan_prompt(
    gw: &Gateway,
    principal: &Principal,
    upstream: usize,
    name: &str,
    result: GetPromptResult,
) -> Result<GetPromptResult, McpError> {
    let seen = Seen { kind: "prompt", what: ("prompt", name.to_string()), walk: scan::prompt };
    screen(gw, principal, upstream, seen, result).await
}

/// What was read outside a tool call, and how to scan it.
struct Seen {
    /// `resource` or `prompt`: the findings' direction and the audit record's kind.
    kind: &'static str,
    /// The audit's name for what was read, and its value.
    what: (&'static str, String),
    walk: fn(&mut serde_json::Value, &scan::Settings, &mut scan::CallScan),
}

async fn screen<T: serde::Serialize + serde::de::DeserializeOwned>(
    gw: &Gateway,
    principal: &Principal,
    upstream: usize,
    seen: Seen,
    result: T,
) -> Result<T, McpError> {
    let policy = gw.policies.current();
    let up = gw.upstreams.get(upstream);
    let scans = scan::Settings::resolve(&[policy.scans.as_deref(), up.live().scans.as_deref()]);
    if !scans.active(scan::Direction::Results) {
        return Ok(result);
    }
    let kind = seen.kind;
    let mut v = serde_json::to_value(&result)
        .map_err(|e| McpError::internal_error(format!("the {kind} could not be scanned: {e}"), None))?;
    let (field, name) = seen.what;
    let mut found = scan::CallScan::new(&format!("{kind} {name}"));
    (seen.walk)(&mut v, &scans, &mut found);
    if found.findings.is_empty() && !found.changed {
        return Ok(result);
    }
    let blocked = found.blocked(kind);
    let detail = serde_json::json!({
        "principal": principal.to_string(),
        "upstream": &*up.name,
        field: crate::audit::redact::text(&name),
        "outcome": if blocked { "withheld" } else { "delivered" },
        "scans": found.audit(),
    });
    let draft =
        crate::audit::record::change(&format!("{kind}.scan"), Some(&principal.org), &principal.to_string(), detail);
    if let Err(e) = gw.journal.audit(draft).await {
        return Err(McpError::internal_error(format!("the {kind} scan could not be audited: {e}"), None));
    }
    if blocked {
        return Err(McpError::invalid_request(
            format!("{kind} withheld by tollgate: it contained {}", found.block_reason(kind)),
            None,
        ));
    }
    if !found.changed {
        return Ok(result);
    }
    serde_json::from_value(v)
        .map_err(|e| McpError::internal_error(format!("the scanned {kind} could not be rebuilt: {e}"), None))
}

fn resource_uri(c: &rmcp::model::ResourceContents) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.get("uri").and_then(|u| u.as_str()).map(str::to_string))
        .unwrap_or_default()
}
