//! How a governed call ends, as values: it ran ([`Outcome::Ran`]), it was
//! refused before it ran ([`Refusal`]), or it waits for a person
//! ([`Waiting`]). Stages return these; the edges map them once each: to MCP
//! here ([`Outcome::into_mcp`]: a JSON-RPC error or an `isError` result the
//! agent's model can read), to HTTP in `server::openai`.

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult, ErrorCode, InputRequiredResult};
use serde_json::json;

use crate::audit::record::decision;
use crate::identity::AuthError;
use crate::ids::ApprovalId;

/// JSON-RPC error code for a request whose key is missing, unknown or revoked.
pub const UNAUTHORIZED: ErrorCode = ErrorCode(-32001);

/// JSON-RPC error code for a tool whose upstream is not connected now.
pub const UNAVAILABLE: ErrorCode = ErrorCode(-32004);

/// Why a call did not run. Each carries the text its caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No, an unknown or a revoked key.
    Unauthorized(String),
    /// No such tool, or one this caller may never see.
    UnknownTool(String),
    /// The tool's definition is held back (a changed definition, a scan).
    Quarantined(String),
    /// The tool's upstream is not connected now.
    Unavailable(String),
    /// Arguments the tool's schema or the grant refuses, or too large.
    Invalid(String),
    /// A grant (or an approver) refuses it.
    Denied(String),
    /// A content scan found what the grant does not let through.
    Blocked(String),
    /// The grant's rate is spent for now.
    RateLimited(String),
    /// A budget, or the grant's cost per call, does not cover it.
    OverBudget(String),
    /// tollgate could not decide (a store unavailable): fail closed.
    Failed(String),
    /// Its intent could not be recorded: it did not run, and with the audit
    /// trail failing no outcome is recorded either (the caller is told).
    Unrecorded(String),
}

impl Refusal {
    /// The audit's decision for this refusal.
    pub fn decision(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => decision::INVALID,
            Refusal::Blocked(_) => decision::BLOCKED,
            Refusal::RateLimited(_) => decision::RATE_LIMITED,
            Refusal::OverBudget(_) => decision::OVER_BUDGET,
            Refusal::Unauthorized(_)
            | Refusal::UnknownTool(_)
            | Refusal::Quarantined(_)
            | Refusal::Unavailable(_)
            | Refusal::Denied(_)
            | Refusal::Failed(_)
            | Refusal::Unrecorded(_) => decision::DENIED,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Refusal::Unauthorized(t)
            | Refusal::UnknownTool(t)
            | Refusal::Quarantined(t)
            | Refusal::Unavailable(t)
            | Refusal::Invalid(t)
            | Refusal::Denied(t)
            | Refusal::Blocked(t)
            | Refusal::RateLimited(t)
            | Refusal::OverBudget(t)
            | Refusal::Failed(t)
            | Refusal::Unrecorded(t) => t,
        }
    }
}

/// A call that waits for a person's decision.
#[derive(Debug, Clone)]
pub enum Waiting {
    /// A client with the tasks extension: the task to poll.
    Task(CreateTaskResult),
    /// A 2026-07-28 agent's user is asked; the retry carries the answer.
    Question(InputRequiredResult),
    /// Still undecided when the call stopped waiting: repeat it to resume.
    Pending { text: String, approval_id: ApprovalId, expires_at: String },
}

/// How a governed call ended.
#[derive(Debug)]
pub enum Outcome {
    /// It ran (or an approved action's stored result is returned again):
    /// the upstream's answer, or its error.
    Ran(Result<CallToolResponse, McpError>),
    Refused(Refusal),
    Waiting(Waiting),
}

impl Outcome {
    /// The audit's decision, given the decision of a call that ran.
    pub fn decision(&self, ran: &'static str) -> &'static str {
        match self {
            Outcome::Ran(_) => ran,
            Outcome::Refused(r) => r.decision(),
            Outcome::Waiting(_) => decision::NEEDS_APPROVAL,
        }
    }

    /// The approval a waiting call waits on.
    pub fn approval_id(&self) -> Option<&ApprovalId> {
        match self {
            Outcome::Waiting(Waiting::Pending { approval_id, .. }) => Some(approval_id),
            _ => None,
        }
    }

    /// The answer an MCP agent gets. Refusals its model can act on are tool
    /// results with `isError: true`; a request it should not have made (an
    /// unknown key or tool) or one tollgate could not decide is a JSON-RPC
    /// error.
    pub fn into_mcp(self) -> Result<CallToolResponse, McpError> {
        match self {
            Outcome::Ran(r) => r,
            Outcome::Refused(r) => match r {
                Refusal::Unauthorized(t) => Err(McpError::new(UNAUTHORIZED, t, None)),
                Refusal::UnknownTool(t) | Refusal::Quarantined(t) => Err(McpError::invalid_params(t, None)),
                Refusal::Unavailable(t) => Err(McpError::new(UNAVAILABLE, t, None)),
                Refusal::Failed(t) | Refusal::Unrecorded(t) => Err(McpError::internal_error(t, None)),
                Refusal::Invalid(t)
                | Refusal::Denied(t)
                | Refusal::Blocked(t)
                | Refusal::RateLimited(t)
                | Refusal::OverBudget(t) => Ok(tool_error(t)),
            },
            Outcome::Waiting(Waiting::Task(t)) => Ok(CallToolResponse::Task(t)),
            Outcome::Waiting(Waiting::Question(q)) => Ok(CallToolResponse::InputRequired(q)),
            Outcome::Waiting(Waiting::Pending { text, approval_id, expires_at }) => {
                let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
                result.structured_content =
                    Some(json!({"status": "pending", "approval_id": approval_id, "expires_at": expires_at}));
                Ok(CallToolResponse::Complete(result))
            }
        }
    }
}

/// The JSON-RPC error for a request whose key is missing, unknown or revoked.
pub fn unauthorized(e: &AuthError) -> McpError {
    McpError::new(UNAUTHORIZED, format!("unauthorized: {e}"), None)
}

/// A tool result the agent's model can read and act on (`isError: true`).
pub fn tool_error(text: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(text.into())]))
}
