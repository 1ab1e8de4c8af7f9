//! Pending actions as SEP-2663 tasks (`io.modelcontextprotocol/tasks`).
//!
//! A client that declares the tasks extension gets a task instead of a call
//! held open. The task *is* the pending action's row: durable, shared by
//! every process on the store, and bound to the key that created it.

use rmcp::model::{
    CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, JsonObject, Task, TaskPayload, TaskStatus,
};
use serde_json::Value;

use super::{Execution, Status};
use crate::store::ApprovalRow;

/// Suggested interval between two `tasks/get`.
pub const POLL_INTERVAL_MS: u64 = 1000;

fn base(row: &ApprovalRow, status: TaskStatus) -> Task {
    Task::new(row.id.clone(), status, crate::audit::rfc3339(row.created_at), crate::audit::rfc3339(row.updated_at))
        .with_poll_interval_ms(POLL_INTERVAL_MS)
}

/// The answer to the `tools/call` that created the task.
pub fn created(row: &ApprovalRow) -> CreateTaskResult {
    CreateTaskResult::new(base(row, TaskStatus::Working).with_status_message(awaiting(row)))
}

fn awaiting(row: &ApprovalRow) -> String {
    format!("awaiting approval {} (route `{}`), until {}", row.id, row.route, crate::audit::rfc3339(row.expires_at))
}

/// The task's state for `tasks/get`.
pub fn detailed(row: &ApprovalRow) -> DetailedTask {
    let (payload, message) = match (row.status, row.execution) {
        (Status::Pending, _) => (TaskPayload::Working, awaiting(row)),
        (Status::Approved, Execution::Done) => match stored_outcome(row) {
            Outcome::Result(r) => (TaskPayload::Completed { result: r }, approved_by(row)),
            Outcome::Error(e) => (TaskPayload::Failed { error: e }, approved_by(row)),
        },
        (Status::Approved, _) => (TaskPayload::Working, format!("{}; running", approved_by(row))),
        (Status::Cancelled, _) => (TaskPayload::Cancelled, "cancelled".to_string()),
        // denied or expired: the call's answer is a tool error the model can read.
        _ => {
            let text = refusal(row);
            (TaskPayload::Completed { result: tool_error_object(&text) }, text)
        }
    };
    DetailedTask::new(base(row, payload.status()).with_status_message(message), payload)
}

fn approved_by(row: &ApprovalRow) -> String {
    format!("approved by {}", row.decided_by.as_deref().unwrap_or("an approver"))
}

/// Why a denied or expired action did not run, for the agent.
pub fn refusal(row: &ApprovalRow) -> String {
    let why = row.decision_reason.as_deref().filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default();
    match row.status {
        Status::Expired => format!(
            "call to {} was not run: its approval {} expired at {} without a decision",
            row.tool,
            row.id,
            crate::audit::rfc3339(row.expires_at)
        ),
        Status::Cancelled => format!("call to {} was not run: approval {} was cancelled{why}", row.tool, row.id),
        _ => format!(
            "call to {} was not run: approval {} was denied by {}{why}",
            row.tool,
            row.id,
            row.decided_by.as_deref().unwrap_or("an approver")
        ),
    }
}

fn tool_error_object(text: &str) -> JsonObject {
    let r = CallToolResult::error(vec![ContentBlock::text(text.to_string())]);
    match serde_json::to_value(r) {
        Ok(Value::Object(o)) => o,
        _ => JsonObject::new(),
    }
}

/// An executed action's stored outcome.
pub enum Outcome {
    Result(JsonObject),
    Error(JsonObject),
}

/// Reads what `finish` stored: `{"result": ...}` or `{"error": ...}`.
pub fn stored_outcome(row: &ApprovalRow) -> Outcome {
    let v: Value = row.result.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    match (v.get("result"), v.get("error")) {
        (Some(Value::Object(r)), _) => Outcome::Result(r.clone()),
        (_, Some(Value::Object(e))) => Outcome::Error(e.clone()),
        _ => Outcome::Error(
            serde_json::json!({"code": -32603, "message": "the approved call's outcome was not recorded"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ),
    }
}
