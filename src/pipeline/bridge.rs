//! Answering a 2026-07-28 upstream's `input_required` result on behalf of a
//! 2025-11-25 agent: each input request becomes the legacy server-to-client
//! request (`elicitation/create`, `sampling/createMessage`, `roots/list`) on
//! the agent's session, and the answers go back upstream as `inputResponses`.

// Sampling and roots are deprecated by SEP-2577 but legacy agents still use them.
#![allow(deprecated)]

use rmcp::RoleServer;
use rmcp::model::{InputRequest, InputRequests, InputResponses};
use rmcp::service::RequestContext;

pub async fn ask_legacy_agent(
    ctx: &RequestContext<RoleServer>,
    requests: InputRequests,
) -> Result<InputResponses, String> {
    let caps = ctx.client_capabilities().unwrap_or_default();
    let mut answers = InputResponses::new();
    for (key, request) in requests {
        let answer = match request {
            InputRequest::Elicitation(r) => {
                if caps.elicitation.is_none() {
                    return Err("the agent's client does not support elicitation".into());
                }
                let result =
                    ctx.peer.create_elicitation(r.params).await.map_err(|e| format!("elicitation failed: {e}"))?;
                serde_json::to_value(result)
            }
            InputRequest::CreateMessage(r) => {
                if caps.sampling.is_none() {
                    return Err("the agent's client does not support sampling".into());
                }
                let result = ctx.peer.create_message(r.params).await.map_err(|e| format!("sampling failed: {e}"))?;
                serde_json::to_value(result)
            }
            InputRequest::ListRoots(_) => {
                if caps.roots.is_none() {
                    return Err("the agent's client does not support roots".into());
                }
                let result = ctx.peer.list_roots().await.map_err(|e| format!("roots/list failed: {e}"))?;
                serde_json::to_value(result)
            }
            _ => return Err(format!("input request `{key}` is of a kind tollgate cannot relay")),
        }
        .map_err(|e| format!("cannot encode the agent's answer: {e}"))?;
        answers.insert(key, answer);
    }
    Ok(answers)
}
