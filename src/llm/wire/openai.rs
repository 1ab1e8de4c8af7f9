//! OpenAI's Chat Completions format (`POST {base}/chat/completions`), which
//! most other providers and local servers also speak.

use serde_json::{Value, json};

use super::{Event, Parsed, count};
use crate::llm::chat::Chat;
use crate::llm::price::Usage;

pub fn body(chat: &Chat, model_id: &str, stream: bool) -> Value {
    let mut messages = Vec::with_capacity(chat.messages.len() + 1);
    if let Some(s) = &chat.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &chat.messages {
        messages.push(json!({"role": m.role.as_str(), "content": m.content}));
    }
    let mut b = json!({"model": model_id, "messages": messages, "max_tokens": chat.max_tokens});
    if let Some(t) = chat.temperature {
        b["temperature"] = json!(t);
    }
    if !chat.stop.is_empty() {
        b["stop"] = json!(chat.stop);
    }
    if stream {
        b["stream"] = json!(true);
        // Usage arrives in a last chunk only when asked for.
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage { input: count(u.get("prompt_tokens"))?, output: count(u.get("completion_tokens")).unwrap_or(0) })
}

pub fn parse_reply(v: &Value) -> Result<Parsed, String> {
    let choice =
        v.get("choices").and_then(Value::as_array).and_then(|c| c.first()).ok_or("the reply has no choices")?;
    let text = match choice.pointer("/message/content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(_) => return Err("the reply's message content is not text".into()),
    };
    Ok(Parsed {
        text,
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
        usage: usage(v),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
    })
}

/// The events in one `data:` line of the stream.
pub fn parse_event(data: &str) -> Result<Vec<Event>, String> {
    if data.trim() == "[DONE]" {
        return Ok(vec![Event::Done]);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("unreadable stream chunk: {e}"))?;
    if let Some(e) = v.get("error") {
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("error in stream");
        return Ok(vec![Event::Error(msg.to_string())]);
    }
    let mut out = Vec::new();
    if let Some(choice) = v.get("choices").and_then(Value::as_array).and_then(|c| c.first()) {
        if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str)
            && !t.is_empty()
        {
            out.push(Event::Text(t.to_string()));
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(Event::Finish(r.to_string()));
        }
    }
    if let Some(u) = usage(&v) {
        out.push(Event::Usage { input: Some(u.input), output: Some(u.output) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::{Message, Role};

    fn chat() -> Chat {
        Chat {
            model: "fast".into(),
            system: Some("be brief".into()),
            messages: vec![Message { role: Role::User, content: "hi".into() }],
            max_tokens: 7,
            temperature: Some(0.5),
            stop: vec!["END".into()],
        }
    }

    #[test]
    fn body_puts_system_first_and_asks_for_stream_usage() {
        let b = body(&chat(), "gpt-x", true);
        assert_eq!(b["model"], "gpt-x");
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(b["messages"][1], json!({"role": "user", "content": "hi"}));
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(body(&chat(), "gpt-x", false).get("stream").is_none());
    }

    #[test]
    fn reply_and_usage() {
        let v = json!({"model": "gpt-x", "choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}});
        let p = parse_reply(&v).unwrap();
        assert_eq!(p.text, "hello");
        assert_eq!(p.usage, Some(Usage { input: 12, output: 3 }));
        assert_eq!(p.finish_reason.as_deref(), Some("stop"));
        let no_usage = json!({"choices": [{"message": {"content": "x"}}]});
        assert_eq!(parse_reply(&no_usage).unwrap().usage, None);
        assert!(parse_reply(&json!({"choices": []})).is_err());
    }

    #[test]
    fn stream_events() {
        assert_eq!(
            parse_event(r#"{"choices":[{"delta":{"content":"he"},"finish_reason":null}]}"#).unwrap(),
            vec![Event::Text("he".into())]
        );
        assert_eq!(
            parse_event(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#).unwrap(),
            vec![Event::Usage { input: Some(5), output: Some(2) }]
        );
        assert_eq!(parse_event("[DONE]").unwrap(), vec![Event::Done]);
        assert!(parse_event("{not json").is_err());
    }
}
