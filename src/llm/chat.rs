//! The chat request as the LLM tool takes it, checked and normalized, and the
//! tool's definition (input and output schemas).

use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// One chat request, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    /// The model's name in the catalog (the provider's id may differ).
    pub model: String,
    /// `system` first, if given, then the messages in order.
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub stop: Vec<String>,
}

impl Chat {
    /// Reads arguments that passed the tool's schema. `max_tokens` has been
    /// filled in (see `Llm::with_defaults`) before the grants saw them.
    pub fn from_arguments(args: &Value) -> Result<Chat, String> {
        let model = args.get("model").and_then(Value::as_str).ok_or("`model` must be a string")?.to_string();
        let mut messages = Vec::new();
        for (i, m) in
            args.get("messages").and_then(Value::as_array).ok_or("`messages` must be an array")?.iter().enumerate()
        {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                _ => return Err(format!("/messages/{i}/role must be system, user or assistant")),
            };
            let content = m
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("/messages/{i}/content must be a string"))?;
            messages.push(Message { role, content: content.to_string() });
        }
        let max_tokens = args
            .get("max_tokens")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or("`max_tokens` must be a positive integer")?;
        let stop = match args.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(_) => return Err("`stop` must be a string or an array of strings".into()),
        };
        Ok(Chat {
            model,
            system: args.get("system").and_then(Value::as_str).map(str::to_string),
            messages,
            max_tokens,
            temperature: args.get("temperature").and_then(Value::as_f64),
            stop,
        })
    }

    /// Bytes of prompt text (system and messages).
    pub fn prompt_bytes(&self) -> usize {
        self.system.as_ref().map_or(0, String::len) + self.messages.iter().map(|m| m.content.len()).sum::<usize>()
    }
}

/// The arguments as the audit keeps them: without the prompt text (only its
/// size) unless the provider's manifest says `record_content = true`.
pub fn audit_arguments(args: &Value, record_content: bool) -> Value {
    if record_content {
        return crate::audit::redact::value(args, &[]);
    }
    let mut out = Map::new();
    if let Value::Object(map) = args {
        for (k, v) in map {
            let kept = match (k.as_str(), v) {
                ("messages", Value::Array(ms)) => Value::Array(
                    ms.iter()
                        .map(|m| {
                            let bytes = m.get("content").and_then(Value::as_str).map_or(0, str::len);
                            json!({"role": m.get("role").cloned().unwrap_or(Value::Null), "content_bytes": bytes})
                        })
                        .collect(),
                ),
                ("system", Value::String(s)) => json!({"content_bytes": s.len()}),
                ("stop", _) => json!("[not recorded]"),
                _ => v.clone(),
            };
            out.insert(k.clone(), kept);
        }
    }
    Value::Object(out)
}

/// Bounds on what one call may send: a hostile agent cannot make the
/// gateway build an unbounded provider request.
const MAX_MESSAGES: usize = 2000;

/// The chat tool's definition: the models it offers are an `enum`, so an
/// unknown model fails validation with a pointer to `/model`.
pub fn tool(name: &str, models: &[String], description: Option<&str>) -> Tool {
    let input = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "enum": models, "description": "The model to use."},
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_MESSAGES,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                        "content": {"type": "string"}
                    }
                }
            },
            "system": {"type": "string", "description": "Instructions placed before the messages."},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "description": "Most tokens to generate; the model's default if omitted."},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "stop": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "maxItems": 4}
                ]
            }
        }
    });
    let output = json!({
        "type": "object",
        "required": ["model", "usage", "cost"],
        "properties": {
            "model": {"type": "string"},
            "provider": {"type": "string"},
            "finish_reason": {"type": ["string", "null"]},
            "usage": {
                "type": "object",
                "properties": {
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                    "source": {"type": "string", "enum": ["provider", "estimate"]}
                }
            },
            "cost": {"type": "string", "description": "Charged, in the budget currency."}
        }
    });
    let as_map = |v: Value| match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    };
    let description = description.map_or_else(
        || "Ask a large language model. Governed by tollgate: grants, budgets and audit apply.".to_string(),
        str::to_string,
    );
    let mut t = Tool::new(name.to_string(), description, as_map(input));
    t.output_schema = Some(as_map(output));
    let mut a = ToolAnnotations::new();
    a.read_only_hint = Some(true);
    a.open_world_hint = Some(true);
    t.annotations = Some(a);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_chat_and_keeps_message_order() {
        let args = json!({"model": "m", "system": "be brief", "max_tokens": 10, "stop": "END",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]});
        let c = Chat::from_arguments(&args).unwrap();
        assert_eq!(c.model, "m");
        assert_eq!(c.system.as_deref(), Some("be brief"));
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.messages[1].role, Role::Assistant);
        assert_eq!(c.stop, vec!["END".to_string()]);
        assert_eq!(c.prompt_bytes(), 8 + 2 + 2);
    }

    #[test]
    fn audit_keeps_sizes_not_text() {
        let args = json!({"model": "m", "system": "secret plan", "max_tokens": 5,
            "messages": [{"role": "user", "content": "the launch code is 1234"}]});
        let a = audit_arguments(&args, false);
        let text = a.to_string();
        assert!(!text.contains("launch") && !text.contains("secret plan"), "{text}");
        assert_eq!(a["messages"][0]["content_bytes"], 23);
        assert_eq!(a["system"]["content_bytes"], 11);
        assert_eq!(a["max_tokens"], 5);
        let kept = audit_arguments(&args, true);
        assert!(kept.to_string().contains("launch code"));
    }

    #[test]
    fn tool_schema_lists_models() {
        let t = tool("llm__chat", &["a".into(), "b".into()], None);
        assert_eq!(t.input_schema["properties"]["model"]["enum"], json!(["a", "b"]));
        assert!(jsonschema::meta::validate(&Value::Object((*t.input_schema).clone())).is_ok());
    }
}
