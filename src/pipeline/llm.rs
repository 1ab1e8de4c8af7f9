//! The execute stage of the LLM tool: the chat goes to its provider (and
//! fallbacks); the result carries the text and `{model, usage, cost}`; the
//! audit gets the attempts, token counts and sizes (the text itself only
//! when the provider's manifest says `record_content = true`). Provider
//! error texts and recorded content pass the audit's redaction like
//! everything else.

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject};
use serde_json::{Value, json};

use super::outcome::tool_error;
use super::via::Via;
use crate::audit::{CallRecord, redact};
use crate::gateway::Gateway;
use crate::llm::{Chat, Metered};
use crate::money::Micros;

pub(super) async fn execute(
    gw: &Gateway,
    rec: &mut CallRecord,
    arguments: Option<JsonObject>,
    via: &Via,
    trace: &crate::trace::Carrier,
) -> (Result<CallToolResponse, McpError>, (i64, i64)) {
    let free = (0, 0);
    let chat = match Chat::from_arguments(&Value::Object(arguments.unwrap_or_default())) {
        Ok(c) => c,
        Err(e) => return (Ok(tool_error(format!("invalid chat: {e}"))), free),
    };
    let sink = match via {
        Via::Http(h) => h.sink.clone(),
        _ => None,
    };
    let outcome = gw.llm.chat(&chat, sink.as_ref(), trace, &via.ct()).await;
    let record_content = gw.llm.records_content(Some(&chat.model));
    let mut detail = json!({
        "model": chat.model,
        "max_tokens": chat.max_tokens,
        "prompt_bytes": chat.prompt_bytes(),
        "attempts": outcome.attempts,
    });
    let fallback = outcome.attempts.iter().any(|a| a.model != chat.model);
    detail["fallback"] = json!(fallback);
    match outcome.result {
        Ok(reply) => {
            let m = gw.llm.meter(&chat, &reply);
            rec.upstream = Some(reply.provider.clone());
            describe(&mut detail, &reply, &m, record_content);
            let mut result = CallToolResult::success(vec![ContentBlock::text(reply.text.clone())]);
            result.structured_content = Some(json!({
                "model": reply.model,
                "provider": reply.provider,
                "finish_reason": reply.finish_reason,
                "usage": usage_json(&m),
                "cost": Micros(m.money).to_string(),
            }));
            rec.llm = Some(redact::value(&detail, &[]));
            (Ok(CallToolResponse::Complete(result)), (m.money, m.usage.total()))
        }
        Err(f) => {
            detail["error"] = json!(f.message);
            let charge = match &f.partial {
                // Text was produced before the break: it is charged.
                Some(partial) => {
                    let m = gw.llm.meter(&chat, partial);
                    rec.upstream = Some(partial.provider.clone());
                    describe(&mut detail, partial, &m, record_content);
                    (m.money, m.usage.total())
                }
                None => (gw.llm.failure_cost(&chat.model).map_or(0, |c| c.0), 0),
            };
            rec.llm = Some(redact::value(&detail, &[]));
            (Ok(tool_error(format!("the model call failed: {}", f.message))), charge)
        }
    }
}

fn usage_json(m: &Metered) -> Value {
    json!({
        "input_tokens": m.usage.input,
        "output_tokens": m.usage.output,
        "total_tokens": m.usage.total(),
        "source": if m.reported { "provider" } else { "estimate" },
    })
}

fn describe(detail: &mut Value, reply: &crate::llm::Reply, m: &Metered, record_content: bool) {
    detail["provider"] = json!(reply.provider);
    detail["answered_by"] = json!(reply.model);
    detail["finish_reason"] = json!(reply.finish_reason);
    detail["usage"] = usage_json(m);
    detail["cost_micros"] = json!(m.money);
    detail["completion_bytes"] = json!(reply.text.len());
    if !m.reported {
        detail["note"] = json!("the provider reported no usage: the estimate was charged");
    }
    if record_content {
        detail["completion"] = json!(reply.text);
    }
}
