//! Anthropic's Messages format (`POST {base}/v1/messages`).

use serde_json::{Value, json};

use super::{Event, Parsed, count};
use crate::llm::chat::{Chat, Role};
use crate::llm::price::Usage;

pub const VERSION: &str = "2023-06-01";

pub fn body(chat: &Chat, model_id: &str, stream: bool) -> Value {
    // System text goes in `system`; system-role messages join it, in order.
    let mut system: Vec<&str> = chat.system.iter().map(String::as_str).collect();
    let mut messages = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        match m.role {
            Role::System => system.push(&m.content),
            role => messages.push(json!({"role": role.as_str(), "content": m.content})),
        }
    }
    let mut b = json!({"model": model_id, "max_tokens": chat.max_tokens, "messages": messages});
    if !system.is_empty() {
        b["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = chat.temperature {
        b["temperature"] = json!(t);
    }
    if !chat.stop.is_empty() {
        b["stop_sequences"] = json!(chat.stop);
    }
    if stream {
        b["stream"] = json!(true);
    }
    b
}

pub fn parse_reply(v: &Value) -> Result<Parsed, String> {
    let blocks = v.get("content").and_then(Value::as_array).ok_or("the reply has no content")?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let usage = v
        .get("usage")
        .and_then(|u| Some(Usage { input: count(u.get("input_tokens"))?, output: count(u.get("output_tokens"))? }));
    Ok(Parsed {
        text,
        finish_reason: v.get("stop_reason").and_then(Value::as_str).map(str::to_string),
        usage,
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

/// The events in one server-sent event's data (its `type` names the event).
pub fn parse_event(data: &str) -> Result<Vec<Event>, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("unreadable stream event: {e}"))?;
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("message_start") => {
            let u = v.pointer("/message/usage");
            vec![Event::Usage {
                input: count(u.and_then(|u| u.get("input_tokens"))),
                output: count(u.and_then(|u| u.get("output_tokens"))),
            }]
        }
        Some("content_block_delta") => match v.pointer("/delta/text").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => vec![Event::Text(t.to_string())],
            _ => Vec::new(),
        },
        Some("message_delta") => {
            let mut out = Vec::new();
            if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                out.push(Event::Finish(r.to_string()));
            }
            let u = v.get("usage");
            let (input, output) =
                (count(u.and_then(|u| u.get("input_tokens"))), count(u.and_then(|u| u.get("output_tokens"))));
            if input.is_some() || output.is_some() {
                out.push(Event::Usage { input, output });
            }
            out
        }
        Some("message_stop") => vec![Event::Done],
        Some("error") => {
            vec![Event::Error(v.pointer("/error/message").and_then(Value::as_str).unwrap_or("error in stream").into())]
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::Message;

    #[test]
    fn body_moves_system_messages_to_system() {
        let chat = Chat {
            model: "c".into(),
            system: Some("one".into()),
            messages: vec![
                Message { role: Role::System, content: "two".into() },
                Message { role: Role::User, content: "hi".into() },
            ],
            max_tokens: 9,
            temperature: None,
            stop: vec!["X".into()],
        };
        let b = body(&chat, "claude-x", false);
        assert_eq!(b["system"], "one\n\ntwo");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(b["stop_sequences"], json!(["X"]));
        assert_eq!(b["max_tokens"], 9);
    }

    #[test]
    fn reply_joins_text_blocks() {
        let v = json!({"model": "claude-x", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 4, "output_tokens": 2}});
        let p = parse_reply(&v).unwrap();
        assert_eq!(p.text, "ab");
        assert_eq!(p.usage, Some(Usage { input: 4, output: 2 }));
    }

    #[test]
    fn stream_events() {
        let start = r#"{"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}"#;
        assert_eq!(parse_event(start).unwrap(), vec![Event::Usage { input: Some(11), output: Some(1) }]);
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert_eq!(parse_event(delta).unwrap(), vec![Event::Text("Hi".into())]);
        let end = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#;
        assert_eq!(
            parse_event(end).unwrap(),
            vec![Event::Finish("end_turn".into()), Event::Usage { input: None, output: Some(5) }]
        );
        assert_eq!(parse_event(r#"{"type":"message_stop"}"#).unwrap(), vec![Event::Done]);
        assert_eq!(parse_event(r#"{"type":"ping"}"#).unwrap(), vec![]);
    }
}
