//! The call pipeline: every `tools/call` passes the stages of SPEC.md in
//! order, top to bottom, in [`call`]. Stages not yet built (identify,
//! authorize, limit, hold, approve, settle, audit) slot in between these
//! without reshaping it.

mod bridge;
mod forward;
pub mod park;

use rmcp::ErrorData as McpError;
use rmcp::RoleServer;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use serde_json::Value;

use crate::catalog::schema;
use crate::gateway::Gateway;

pub use forward::forward_tool;

/// Runs one governed tool call.
pub async fn call(
    gw: &Gateway,
    params: CallToolRequestParams,
    ctx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    // resolve: one catalog snapshot for the whole call (right after start-up,
    // once the upstreams' first connection attempts are done, bounded).
    if !gw.upstreams.settled() {
        gw.upstreams.wait_settled(std::time::Duration::from_secs(10)).await;
    }
    let catalog = gw.upstreams.catalog();
    let Some(entry) = catalog.tool(&params.name).cloned() else {
        if let Some(q) = catalog.quarantine_of(&params.name) {
            return Err(McpError::invalid_params(format!("tool `{}` is quarantined: {}", q.name, q.reason), None));
        }
        return Err(McpError::invalid_params(format!("unknown tool: {}", params.name), None));
    };

    // validate: the upstream is never called with arguments that fail a schema.
    let mut params = params;
    let arguments = Value::Object(params.arguments.take().unwrap_or_default());
    let size = json_size(&arguments);
    if size > gw.limits.max_arguments_bytes {
        return Ok(tool_error(format!(
            "arguments are {size} bytes, more than the {} allowed",
            gw.limits.max_arguments_bytes
        )));
    }
    let mut violations: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in &entry.validators {
        for e in schema::violations(v, &arguments) {
            if violations.len() < schema::MAX_VIOLATIONS && seen.insert(e.clone()) {
                violations.push(e);
            }
        }
    }
    if !violations.is_empty() {
        return Ok(tool_error(format!(
            "invalid arguments for {}:\n{}",
            entry.name,
            violations.iter().map(|v| format!("- {v}")).collect::<Vec<_>>().join("\n")
        )));
    }
    params.arguments = match arguments {
        Value::Object(map) => Some(map),
        _ => None,
    };

    // execute
    let upstream = gw.upstreams.get(entry.upstream).clone();
    forward_tool(gw, &upstream, &entry, params, ctx).await
}

/// Serialized size of `v` in bytes, without building the bytes.
fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, v).map_or(usize::MAX, |()| c.0)
}

/// A tool result the agent's model can read and act on (`isError: true`).
pub fn tool_error(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text.into())]))
}
