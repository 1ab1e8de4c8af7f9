//! A real LLM provider for the tests: an HTTP server on 127.0.0.1:0 that
//! speaks OpenAI's `/v1/chat/completions` and Anthropic's `/v1/messages`,
//! streamed and not. What it does is chosen by the model id a request names:
//!
//! - anything else: answers `echo <last user message>`, with usage
//!   (input = prompt bytes / 4 rounded up, output = reply bytes / 4 rounded up);
//! - `no-usage`: the same answer, without usage;
//! - `429-once` / `500-once`: the first request of that model is refused
//!   (429 with `Retry-After: 1`, or 500), later ones answered;
//! - `down`: always 503;
//! - `hang`: never answers;
//! - `cut`: streams two chunks, waits for [`Provider::open_gate`], then drops
//!   the connection mid-stream;
//! - `gated`: streams one chunk, then waits for [`Provider::open_gate`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

/// Provider settings most tests use: short timeout, one quick retry.
pub const SETTINGS: &str = "timeout = \"2s\"\nretries = 1\nretry_backoff = \"50ms\"";

#[derive(Debug, Clone)]
pub struct Seen {
    pub wire: &'static str,
    pub model: String,
    pub body: Value,
    pub key: Option<String>,
    /// The W3C `traceparent` header it was sent.
    pub traceparent: Option<String>,
}

pub struct ProviderState {
    pub seen: Mutex<Vec<Seen>>,
    counts: Mutex<HashMap<String, u32>>,
    gate: tokio::sync::Semaphore,
}

pub struct Provider {
    pub url: String,
    pub state: Arc<ProviderState>,
}

impl Provider {
    pub async fn start() -> Provider {
        let state = Arc::new(ProviderState {
            seen: Mutex::default(),
            counts: Mutex::default(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Small stream chunks must not wait on Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { url, state }
    }

    /// Requests that reached the provider, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn count(&self, model: &str) -> usize {
        self.seen().iter().filter(|s| s.model == model).count()
    }

    /// Lets every `gated` stream finish.
    pub fn open_gate(&self) {
        self.state.gate.add_permits(1000);
    }

    /// An `llm` manifest for this provider; `extra` holds its settings
    /// (see [`SETTINGS`]), `models` each model's table body.
    pub fn manifest(&self, name: &str, wire: &str, extra: &str, models: &[(&str, &str)]) -> String {
        let base = if wire == "openai" { format!("{}/v1", self.url) } else { self.url.clone() };
        let mut m =
            format!("name = \"{name}\"\nkind = \"llm\"\nprovider = \"{wire}\"\nbase_url = \"{base}\"\n{extra}\n");
        for (model, rest) in models {
            m.push_str(&format!("[models.\"{model}\"]\n{rest}\n"));
        }
        m
    }
}

/// Tokens as this provider counts them.
pub fn tokens(text: &str) -> i64 {
    i64::try_from(text.len().div_ceil(4)).unwrap()
}

struct Asked {
    model: String,
    prompt: String,
    reply: Vec<String>,
    max_tokens: i64,
    stream: bool,
}

fn read(body: &Value) -> Asked {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let mut prompt = body["system"].as_str().unwrap_or_default().to_string();
    let mut last_user = String::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        let c = m["content"].as_str().unwrap_or_default();
        prompt.push_str(c);
        if m["role"] == "user" {
            last_user = c.to_string();
        }
    }
    let mut reply: Vec<String> = vec!["echo".into()];
    reply.extend(last_user.split_whitespace().map(str::to_string));
    Asked {
        model,
        prompt,
        reply,
        max_tokens: body["max_tokens"].as_i64().unwrap_or(1_000_000),
        stream: body["stream"] == true,
    }
}

/// What to do before answering: `Some(response)` ends the request.
async fn misbehave(state: &ProviderState, model: &str) -> Option<Response> {
    let n = {
        let mut c = state.counts.lock().unwrap();
        let n = c.entry(model.to_string()).or_default();
        *n += 1;
        *n
    };
    match model {
        "429-once" if n == 1 => {
            let body = json!({"error": {"message": "rate limited, slow down", "type": "rate_limit"}});
            Some((StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], axum::Json(body)).into_response())
        }
        "500-once" if n == 1 => Some((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()),
        "down" => Some((StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response()),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        _ => None,
    }
}

fn record(state: &ProviderState, wire: &'static str, headers: &HeaderMap, body: &Value) {
    let key = headers
        .get("authorization")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    state.seen.lock().unwrap().push(Seen { wire, model, body: body.clone(), key, traceparent });
}

/// The reply's words within `max_tokens`, and whether it was cut short.
fn within(a: &Asked) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut text = String::new();
    for w in &a.reply {
        let next = if text.is_empty() { w.clone() } else { format!("{text} {w}") };
        if tokens(&next) > a.max_tokens {
            return (out, true);
        }
        text = next;
        out.push(w.clone());
    }
    (out, false)
}

/// Stream pieces: each word with the space that follows it.
fn pieces(words: &[String]) -> Vec<String> {
    let n = words.len();
    words.iter().enumerate().map(|(i, w)| if i + 1 < n { format!("{w} ") } else { w.clone() }).collect()
}

type Frame = Result<Bytes, std::io::Error>;

/// A streamed body: `frames`, where `None` means "wait for the gate" and an
/// `Err` drops the connection.
fn streamed(state: Arc<ProviderState>, frames: Vec<Option<Frame>>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(16);
    tokio::spawn(async move {
        for f in frames {
            match f {
                None => {
                    let _ = state.gate.acquire().await.map(|p| p.forget());
                }
                Some(f) => {
                    let stop = f.is_err();
                    if tx.send(f).await.is_err() || stop {
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) }));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

fn frame(event: Option<&str>, data: &Value) -> Option<Frame> {
    let head = event.map(|e| format!("event: {e}\n")).unwrap_or_default();
    Some(Ok(Bytes::from(format!("{head}data: {data}\n\n"))))
}

/// Appends the reply's text frames, pausing or cutting as the model id says.
/// True when the stream was cut (nothing may follow).
fn text_frames(
    model: &str,
    words: &[String],
    frames: &mut Vec<Option<Frame>>,
    text: impl Fn(String) -> Option<Frame>,
) -> bool {
    for (i, p) in pieces(words).into_iter().enumerate() {
        frames.push(text(p));
        match (model, i) {
            ("cut", 1) => {
                // Cut once the test has seen the text (it opens the gate).
                frames.push(None);
                frames.push(cut());
                return true;
            }
            ("gated", 0) => frames.push(None),
            _ => {}
        }
    }
    false
}

fn cut() -> Option<Frame> {
    Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")))
}

async fn openai(State(state): State<Arc<ProviderState>>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    let body = body.0;
    record(&state, "openai", &headers, &body);
    let a = read(&body);
    if let Some(r) = misbehave(&state, &a.model).await {
        return r;
    }
    let (words, truncated) = within(&a);
    let text = words.join(" ");
    let finish = if truncated { "length" } else { "stop" };
    let usage = json!({"prompt_tokens": tokens(&a.prompt), "completion_tokens": tokens(&text),
        "total_tokens": tokens(&a.prompt) + tokens(&text)});
    let with_usage = a.model != "no-usage";
    if !a.stream {
        let mut reply = json!({"id": "cmpl-1", "object": "chat.completion", "model": a.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]});
        if with_usage {
            reply["usage"] = usage;
        }
        return axum::Json(reply).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "cmpl-1", "object": "chat.completion.chunk", "model": a.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut frames = vec![frame(None, &chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    if text_frames(&a.model, &words, &mut frames, |p| frame(None, &chunk(json!({"content": p}), Value::Null))) {
        return streamed(state, frames);
    }
    frames.push(frame(None, &chunk(json!({}), json!(finish))));
    if with_usage && body["stream_options"]["include_usage"] == true {
        frames.push(frame(
            None,
            &json!({"id": "cmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}),
        ));
    }
    frames.push(Some(Ok(Bytes::from_static(b"data: [DONE]\n\n"))));
    streamed(state, frames)
}

async fn anthropic(State(state): State<Arc<ProviderState>>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    let body = body.0;
    record(&state, "anthropic", &headers, &body);
    if headers.get("anthropic-version").is_none() {
        return (StatusCode::BAD_REQUEST, "anthropic-version header missing").into_response();
    }
    let a = read(&body);
    if let Some(r) = misbehave(&state, &a.model).await {
        return r;
    }
    let (words, truncated) = within(&a);
    let text = words.join(" ");
    let stop = if truncated { "max_tokens" } else { "end_turn" };
    let with_usage = a.model != "no-usage";
    if !a.stream {
        let mut reply = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": a.model,
            "content": [{"type": "text", "text": text}], "stop_reason": stop});
        if with_usage {
            reply["usage"] = json!({"input_tokens": tokens(&a.prompt), "output_tokens": tokens(&text)});
        }
        return axum::Json(reply).into_response();
    }
    let mut message = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": a.model, "content": []});
    if with_usage {
        message["usage"] = json!({"input_tokens": tokens(&a.prompt), "output_tokens": 1});
    }
    let mut frames = vec![
        frame(Some("message_start"), &json!({"type": "message_start", "message": message})),
        frame(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    let delta = |p| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}});
    if text_frames(&a.model, &words, &mut frames, |p| frame(Some("content_block_delta"), &delta(p))) {
        return streamed(state, frames);
    }
    frames.push(frame(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0})));
    let mut end = json!({"type": "message_delta", "delta": {"stop_reason": stop}});
    if with_usage {
        end["usage"] = json!({"output_tokens": tokens(&text)});
    }
    frames.push(frame(Some("message_delta"), &end));
    frames.push(frame(Some("message_stop"), &json!({"type": "message_stop"})));
    streamed(state, frames)
}
