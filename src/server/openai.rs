//! `POST /v1/chat/completions` and `GET /v1/models`: the OpenAI API, so agents'
//! own model traffic passes the same governance as the LLM tool. A request
//! becomes a call of that tool (grants, validation, limits, budgets,
//! approvals, audit: the one pipeline); the answer is shaped back into
//! OpenAI's format, streamed (server-sent events, text as it arrives) or not.
//!
//! Refusals use OpenAI's error shape and the statuses its clients know:
//! 401 bad key, 403 refused by a grant, 400 invalid, 429 rate limit or
//! budget (`insufficient_quota`), 409 waiting for approval (the same request
//! repeated resumes it), 502 the provider failed.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, header};
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, JsonObject};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::gateway::Gateway;
use crate::identity::{self, AuthError};
use crate::pipeline::{self, Caller, Http, Outcome, Refusal, Via, Waiting};

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", axum::routing::get(models))
        .with_state(gw)
}

/// `GET /v1/models`: the models this key may ask for (none when no grant
/// reaches the LLM tool), as OpenAI lists them.
async fn models(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let principal = match identify(&gw, &headers).await {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let tool = &gw.llm.tool;
    let visible = gw.upstreams.catalog().tool(tool).is_some() && gw.policies.current().visible(&principal, tool);
    let data: Vec<Value> = if visible {
        let models = gw.llm.models();
        models.into_iter().map(|(m, p)| json!({"id": m, "object": "model", "created": 0, "owned_by": p})).collect()
    } else {
        Vec::new()
    };
    Json(json!({"object": "list", "data": data})).into_response()
}

/// The bearer key's principal, or the refusal (401, or 503 when the key store is down).
async fn identify(gw: &Gateway, headers: &HeaderMap) -> Result<crate::identity::Principal, Box<Response>> {
    let secret = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(identity::bearer);
    let principal = match secret {
        Some(s) => gw.authenticate(s).await,
        None => Err(AuthError::Missing),
    };
    principal.map_err(|e| {
        Box::new(match e {
            AuthError::Store(e) => {
                tracing::error!("cannot check an API key: {e}");
                error(StatusCode::SERVICE_UNAVAILABLE, "api_error", "unavailable", "the key store is unavailable", None)
            }
            e => {
                let mut r =
                    error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key", &e.to_string(), None);
                r.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                r
            }
        })
    })
}

/// An error in OpenAI's shape.
fn error(status: StatusCode, kind: &str, code: &str, message: &str, param: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code, "param": param}});
    (status, Json(body)).into_response()
}

fn bad_request(message: &str, param: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", message, param)
}

async fn completions(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    // identify, before the body is read: strangers get nothing buffered.
    let started = std::time::Instant::now();
    let principal = match identify(&gw, &headers).await {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let auth_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let limits = gw.limits;
    let bytes: Bytes = match axum::body::to_bytes(body, limits.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let msg = format!("the request body is larger than {} bytes", limits.max_body_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "request_too_large", &msg, None);
        }
    };
    if let Err(e) = super::strict_json::check(&bytes, limits.max_json_depth) {
        let msg = match e {
            super::strict_json::Rejection::Parse(m) => format!("the body is not valid JSON: {m}"),
            super::strict_json::Rejection::Invalid(m) => format!("the body is not a request object: {m}"),
        };
        return bad_request(&msg, None);
    }
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("the body is not valid JSON: {e}"), None),
    };
    let asked = match translate(&request) {
        Ok(a) => a,
        Err((param, msg)) => return bad_request(&msg, Some(param)),
    };
    if gw.llm.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no_provider",
            "no LLM provider is configured",
            None,
        );
    }
    let caller = Caller { principal, session: None, auth_micros };
    let mut params = CallToolRequestParams::new(gw.llm.tool.clone());
    params.arguments = Some(asked.arguments);
    let reply = Shape {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: chrono::Utc::now().timestamp(),
        model: asked.model,
        tool: gw.llm.tool.clone(),
    };
    let http = Http { trace: crate::trace::Carrier::from_headers(&headers), ..Http::default() };
    // The call runs to its end (settled and audited) even if the client goes
    // away; the client going away cancels the provider request.
    let cancel_on_drop = http.ct.clone().drop_guard();
    if !asked.stream {
        let task = tokio::spawn(call(gw, caller, params, http));
        let outcome = task.await.unwrap_or_else(crashed);
        drop(cancel_on_drop);
        return match answered(&outcome) {
            Ok(result) => Json(reply.completion(result)).into_response(),
            Err(refused) => *refused,
        };
    }
    let (sink, mut deltas) = mpsc::channel::<String>(64);
    let http = Http { sink: Some(sink), ..http };
    let task = tokio::spawn(call(gw, caller, params, http));
    // The status is chosen once something is known: the first text, or the
    // end of a call that produced none (the pipeline drops the sink when it
    // is done, so `None` means done).
    let Some(first) = deltas.recv().await else {
        let outcome = task.await.unwrap_or_else(crashed);
        return match answered(&outcome) {
            Ok(result) => {
                let events = reply.whole_as_events(result, asked.include_usage);
                sse(futures::stream::iter(events.into_iter().map(Ok)))
            }
            Err(refused) => *refused,
        };
    };
    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _cancel_on_drop = cancel_on_drop;
        let mut role = true;
        let mut next = Some(first);
        while let Some(text) = next {
            if events_tx.send(reply.delta(&text, std::mem::take(&mut role))).await.is_err() {
                // The client is gone: dropping `deltas` stops the provider stream.
                drop(deltas);
                let _ = task.await;
                return;
            }
            next = deltas.recv().await;
        }
        let outcome = task.await.unwrap_or_else(crashed);
        for ev in reply.ending(&outcome, asked.include_usage) {
            if events_tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    sse(futures::stream::unfold(events_rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) }))
}

fn sse(stream: impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn call(gw: Gateway, caller: Caller, params: CallToolRequestParams, http: Http) -> Outcome {
    pipeline::call(&gw, Ok(caller), params, Via::Http(http)).await
}

/// The call's task panicked: answered as a failure.
fn crashed(e: tokio::task::JoinError) -> Outcome {
    Outcome::Ran(Err(McpError::internal_error(format!("the call failed: {e}"), None)))
}

/// What the request asked, as the LLM tool's arguments.
struct Asked {
    model: String,
    arguments: JsonObject,
    stream: bool,
    include_usage: bool,
}

/// Reads an OpenAI request. `Err((param, message))` names the field at fault.
fn translate(req: &Value) -> Result<Asked, (&'static str, String)> {
    let obj = req.as_object().ok_or(("", "the body must be a JSON object".to_string()))?;
    for unsupported in ["tools", "functions", "tool_choice", "function_call", "audio", "prediction"] {
        if obj.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err((unsupported, format!("`{unsupported}` is not supported by this gateway")));
        }
    }
    if let Some(n) = obj.get("n").filter(|v| !v.is_null())
        && n.as_u64() != Some(1)
    {
        return Err(("n", "only n = 1 is supported".into()));
    }
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(("model", "`model` must be a non-empty string".into())),
    };
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(("messages", "`messages` must be an array".into()));
    };
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => "system",
            Some("user") => "user",
            Some("assistant") => "assistant",
            Some(other) => {
                return Err((
                    "messages",
                    format!("messages[{i}].role `{other}` is not supported (system, developer, user, assistant)"),
                ));
            }
            None => return Err(("messages", format!("messages[{i}].role must be a string"))),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None if role == "assistant" => String::new(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => return Err(("messages", format!("messages[{i}].content: only text parts are supported"))),
                    }
                }
                text
            }
            _ => return Err(("messages", format!("messages[{i}].content must be a string or text parts"))),
        };
        out.push(json!({"role": role, "content": content}));
    }
    let mut args = Map::new();
    args.insert("model".into(), json!(model));
    args.insert("messages".into(), Value::Array(out));
    for (param, name) in [("max_completion_tokens", "max_tokens"), ("max_tokens", "max_tokens")] {
        match obj.get(param) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64().filter(|n| *n > 0) {
                Some(n) => {
                    args.insert(name.into(), json!(n));
                }
                None => {
                    return Err((
                        if param == "max_tokens" { "max_tokens" } else { "max_completion_tokens" },
                        format!("`{param}` must be a positive integer"),
                    ));
                }
            },
        }
    }
    match obj.get("temperature") {
        None | Some(Value::Null) => {}
        Some(v) if v.is_number() => {
            args.insert("temperature".into(), v.clone());
        }
        Some(_) => return Err(("temperature", "`temperature` must be a number".into())),
    }
    match obj.get("stop") {
        None | Some(Value::Null) => {}
        Some(v @ (Value::String(_) | Value::Array(_))) => {
            args.insert("stop".into(), v.clone());
        }
        Some(_) => return Err(("stop", "`stop` must be a string or an array of strings".into())),
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(("stream", "`stream` must be a boolean".into())),
    };
    let include_usage =
        obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    Ok(Asked { model, arguments: args, stream, include_usage })
}

/// The tool result of a call that ran, or the HTTP refusal to answer with:
/// the one mapping of a call's [`Outcome`] to OpenAI's statuses and codes.
fn answered(outcome: &Outcome) -> Result<&CallToolResult, Box<Response>> {
    let upstream = |text: &str| Box::new(error(StatusCode::BAD_GATEWAY, "api_error", "upstream_error", text, None));
    match outcome {
        Outcome::Ran(Ok(CallToolResponse::Complete(r))) if r.is_error != Some(true) => Ok(r),
        Outcome::Ran(Ok(CallToolResponse::Complete(r))) => Err(upstream(&text_of(r))),
        Outcome::Ran(Ok(_)) | Outcome::Waiting(Waiting::Task(_) | Waiting::Question(_)) => {
            Err(upstream("the call asked for input, which this endpoint cannot give"))
        }
        // An error from the call itself (a stored result replayed, say):
        // answered as the refusal its JSON-RPC code stands for.
        Outcome::Ran(Err(e)) => {
            let text = e.message.to_string();
            Err(Box::new(refusal(&match e.code {
                pipeline::UNAUTHORIZED => Refusal::Unauthorized(text),
                rmcp::model::ErrorCode::INVALID_PARAMS => Refusal::UnknownTool(text),
                _ => Refusal::Failed(text),
            })))
        }
        Outcome::Waiting(Waiting::Pending { text, approval_id, .. }) => {
            let body = json!({"error": {"message": text, "type": "approval_pending", "code": "approval_pending",
                "param": null, "approval_id": approval_id}});
            Err(Box::new((StatusCode::CONFLICT, Json(body)).into_response()))
        }
        Outcome::Refused(r) => Err(Box::new(refusal(r))),
    }
}

fn refusal(r: &Refusal) -> Response {
    let forbidden = |text: &str| error(StatusCode::FORBIDDEN, "permission_error", "permission_denied", text, None);
    match r {
        Refusal::Invalid(t) => bad_request(t, None),
        Refusal::RateLimited(t) => error(StatusCode::TOO_MANY_REQUESTS, "requests", "rate_limit_exceeded", t, None),
        Refusal::OverBudget(t) => {
            error(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", "insufficient_quota", t, None)
        }
        Refusal::Unauthorized(t) => error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key", t, None),
        Refusal::UnknownTool(t) | Refusal::Quarantined(t) => {
            forbidden(&format!("this key may not use the LLM tool: {t}"))
        }
        Refusal::Unavailable(t) | Refusal::Failed(t) | Refusal::Unrecorded(t) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "internal_error", t, None)
        }
        Refusal::Denied(t) | Refusal::Blocked(t) => forbidden(t),
    }
}

fn text_of(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// OpenAI's finish reasons, from either wire format's.
fn finish_reason(r: Option<&str>) -> &str {
    match r {
        Some("end_turn" | "stop_sequence" | "stop") | None => "stop",
        Some("max_tokens" | "length") => "length",
        Some(other) => other,
    }
}

/// The parts of every answer to one request.
struct Shape {
    id: String,
    created: i64,
    model: String,
    tool: String,
}

impl Shape {
    fn usage(result: &CallToolResult) -> Value {
        let u = result.structured_content.as_ref().and_then(|s| s.get("usage"));
        let n = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_i64).unwrap_or(0);
        json!({"prompt_tokens": n("input_tokens"), "completion_tokens": n("output_tokens"), "total_tokens": n("total_tokens")})
    }

    fn answered_model(&self, result: &CallToolResult) -> String {
        result
            .structured_content
            .as_ref()
            .and_then(|s| s.get("model"))
            .and_then(Value::as_str)
            .map_or_else(|| self.model.clone(), str::to_string)
    }

    fn reason(result: &CallToolResult) -> String {
        let r = result.structured_content.as_ref().and_then(|s| s.get("finish_reason")).and_then(Value::as_str);
        finish_reason(r).to_string()
    }

    fn completion(&self, result: &CallToolResult) -> Value {
        let structured = result.structured_content.clone().unwrap_or_default();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.answered_model(result),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text_of(result)},
                "finish_reason": Self::reason(result),
            }],
            "usage": Self::usage(result),
            "tollgate": {"tool": self.tool, "cost": structured.get("cost"), "provider": structured.get("provider")},
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn delta(&self, text: &str, with_role: bool) -> Event {
        let delta = if with_role { json!({"role": "assistant", "content": text}) } else { json!({"content": text}) };
        Event::default().data(self.chunk(delta, None).to_string())
    }

    fn closing(&self, result: &CallToolResult, include_usage: bool) -> Vec<Event> {
        let mut out = vec![Event::default().data(self.chunk(json!({}), Some(&Self::reason(result))).to_string())];
        if include_usage {
            let usage = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": Self::usage(result)});
            out.push(Event::default().data(usage.to_string()));
        }
        out.push(Event::default().data("[DONE]"));
        out
    }

    /// A reply that produced no streamed text (empty, or a provider that
    /// answered whole), sent as a stream.
    fn whole_as_events(&self, result: &CallToolResult, include_usage: bool) -> Vec<Event> {
        let mut out = vec![self.delta(&text_of(result), true)];
        out.extend(self.closing(result, include_usage));
        out
    }

    /// The end of a stream whose text has been sent: the finish (and usage),
    /// or an error event when the call failed part way.
    fn ending(&self, outcome: &Outcome, include_usage: bool) -> Vec<Event> {
        match answered(outcome) {
            Ok(result) => self.closing(result, include_usage),
            Err(_) => {
                let message = match outcome {
                    Outcome::Ran(Ok(CallToolResponse::Complete(r))) => text_of(r),
                    Outcome::Ran(Err(e)) => e.message.to_string(),
                    Outcome::Refused(r) => r.text().to_string(),
                    _ => "the call ended without a result".into(),
                };
                let body = json!({"error": {"message": message, "type": "api_error", "code": "upstream_error", "param": null}});
                vec![Event::default().data(body.to_string())]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_an_openai_request() {
        let req = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "max_completion_tokens": 9, "temperature": 0.2, "user": "ignored", "top_p": 1,
            "messages": [{"role": "developer", "content": "be terse"},
                         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]});
        let a = translate(&req).map_err(|e| e.1).unwrap();
        assert!(a.stream && a.include_usage);
        assert_eq!(a.arguments["max_tokens"], 9);
        assert_eq!(a.arguments["messages"][0], json!({"role": "system", "content": "be terse"}));
        assert_eq!(a.arguments["messages"][1]["content"], "ab");
        assert!(a.arguments.get("user").is_none());
    }

    #[test]
    fn refuses_what_it_cannot_govern_faithfully() {
        let cases = [
            (json!({"model": "m", "messages": [], "tools": [{}]}), "tools"),
            (json!({"model": "m", "messages": [], "n": 2}), "n"),
            (json!({"messages": []}), "model"),
            (json!({"model": "m", "messages": "hi"}), "messages"),
            (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), "messages"),
            (json!({"model": "m", "messages": [], "max_tokens": -1}), "max_tokens"),
            (json!({"model": "m", "messages": [], "stream": "yes"}), "stream"),
            (json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), "messages"),
        ];
        for (req, param) in cases {
            match translate(&req) {
                Err((p, _)) => assert_eq!(p, param, "{req}"),
                Ok(_) => panic!("accepted {req}"),
            }
        }
    }

    #[test]
    fn finish_reasons_map_to_openai_names() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(Some("content_filter")), "content_filter");
    }
}
