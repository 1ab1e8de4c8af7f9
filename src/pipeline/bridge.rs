//! Asking a 2025-11-25 agent, on its session, what an upstream asked:
//! `elicitation/create`, `sampling/createMessage` or `roots/list`. Used for a
//! 2026-07-28 upstream's `input_required` result (answers go back upstream as
//! `inputResponses`) and for a legacy upstream's server-to-client request.
//! Nothing is sent for a capability the agent did not declare.

// Sampling and roots are deprecated by SEP-2577 but legacy agents still use them.
#![allow(deprecated)]

use rmcp::RoleServer;
use rmcp::model::{InputRequest, InputRequests, InputResponses};
use rmcp::service::RequestContext;
use serde_json::Value;

/// How long a person has to answer on the agent's side.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Answers every request, in key order.
pub async fn ask_legacy_agent(
    ctx: &RequestContext<RoleServer>,
    requests: InputRequests,
) -> Result<InputResponses, String> {
    let mut answers = InputResponses::new();
    for (key, request) in requests {
        answers.insert(key, answer(ctx, request).await?);
    }
    Ok(answers)
}

/// Asks the agent one question from inside its own request.
pub async fn answer(ctx: &RequestContext<RoleServer>, request: InputRequest) -> Result<Value, String> {
    let caps = ctx.client_capabilities().unwrap_or_default();
    let asked = async {
        match request {
            InputRequest::Elicitation(r) => {
                if caps.elicitation.is_none() {
                    return Err("the agent's client does not support elicitation".to_string());
                }
                let result =
                    ctx.peer.create_elicitation(r.params).await.map_err(|e| format!("elicitation failed: {e}"))?;
                serde_json::to_value(result).map_err(|e| e.to_string())
            }
            InputRequest::CreateMessage(r) => {
                if caps.sampling.is_none() {
                    return Err("the agent's client does not support sampling".to_string());
                }
                let result = ctx.peer.create_message(r.params).await.map_err(|e| format!("sampling failed: {e}"))?;
                serde_json::to_value(result).map_err(|e| e.to_string())
            }
            InputRequest::ListRoots(_) => {
                if caps.roots.is_none() {
                    return Err("the agent's client does not support roots".to_string());
                }
                let result = ctx.peer.list_roots().await.map_err(|e| format!("roots/list failed: {e}"))?;
                serde_json::to_value(result).map_err(|e| e.to_string())
            }
            _ => Err("an input request of a kind tollgate cannot relay".to_string()),
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, asked).await.unwrap_or_else(|_| Err("the agent did not answer in time".into()))
}
