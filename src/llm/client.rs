//! Calling providers: one attempt, retries of a model on 429, 5xx and
//! connection errors (with backoff, honouring `Retry-After`), and fallback
//! to the next model of the chain when a model fails before any output.
//! Once text has reached the caller, nothing is retried: the caller would
//! see it twice.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use sse_stream::SseStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::chat::Chat;
use super::price::Usage;
use super::wire::{self, Event, Parsed};
use crate::config::{LlmKind, LlmModel, LlmProvider};
use crate::trace::Carrier;

/// A provider reply bigger than this is refused (non-streamed replies are buffered).
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// What of an error body is kept for the audit and the caller.
const MAX_ERROR_TEXT: usize = 500;

/// One request to one provider, as the audit shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// `None` for the attempt that answered.
    pub error: Option<String>,
    pub ms: u64,
}

/// What the model produced (all of it, or what arrived before a break).
#[derive(Debug, Clone)]
pub struct Reply {
    pub provider: String,
    /// The catalog name of the model that answered (a fallback's, after a fallback).
    pub model: String,
    pub text: String,
    pub finish_reason: Option<String>,
    /// As the provider reported it; `None` when it did not.
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// Text already sent to the caller when the stream broke: it was produced
    /// (and is billed by the provider), so it is charged.
    pub partial: Option<Reply>,
}

#[derive(Debug)]
pub struct Outcome {
    pub attempts: Vec<Attempt>,
    pub result: Result<Reply, Failure>,
}

/// Where streamed text goes as it arrives.
pub type Sink = mpsc::Sender<String>;

enum Retry {
    No,
    /// Retryable; the provider's `Retry-After`, if it gave one.
    Yes(Option<Duration>),
}

struct AttemptError {
    message: String,
    status: Option<u16>,
    retry: Retry,
    partial: Option<Reply>,
    cancelled: bool,
}

impl AttemptError {
    fn new(message: impl Into<String>, status: Option<u16>, retry: Retry) -> Self {
        Self { message: message.into(), status, retry, partial: None, cancelled: false }
    }
}

pub(super) struct Target<'a> {
    pub provider: &'a LlmProvider,
    pub model: &'a LlmModel,
}

/// Runs `chat` on `chain` (the model asked for, then its fallbacks).
pub(super) async fn run(
    http: &reqwest::Client,
    chain: &[Target<'_>],
    (chat, trace): (&Chat, &Carrier),
    sink: Option<&Sink>,
    ct: &CancellationToken,
) -> Outcome {
    let mut attempts = Vec::new();
    let mut last = Failure { message: "no model to try".into(), partial: None };
    for target in chain {
        match with_retries(http, target, (chat, trace), sink, ct, &mut attempts).await {
            Ok(reply) => return Outcome { attempts, result: Ok(reply) },
            Err((failure, fatal)) => {
                last = failure;
                if fatal {
                    break;
                }
            }
        }
    }
    Outcome { attempts, result: Err(last) }
}

/// `Err((failure, fatal))`: fatal failures (output already sent, or the
/// caller gone) end the chain.
async fn with_retries(
    http: &reqwest::Client,
    t: &Target<'_>,
    (chat, trace): (&Chat, &Carrier),
    sink: Option<&Sink>,
    ct: &CancellationToken,
    attempts: &mut Vec<Attempt>,
) -> Result<Reply, (Failure, bool)> {
    let p = t.provider;
    let mut n: u32 = 0;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = once(http, t, (chat, trace), sink) => r,
            _ = ct.cancelled() => Err(AttemptError { cancelled: true, ..AttemptError::new("cancelled by the caller", None, Retry::No) }),
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record =
            |status, error| Attempt { provider: p.name.clone(), model: t.model.name.clone(), status, error, ms };
        match result {
            Ok((reply, status)) => {
                attempts.push(record(Some(status), None));
                return Ok(reply);
            }
            Err(e) => {
                attempts.push(record(e.status, Some(e.message.clone())));
                let message = format!("{} ({}): {}", t.model.name, p.name, e.message);
                if e.partial.is_some() || e.cancelled {
                    return Err((Failure { message, partial: e.partial }, true));
                }
                let Retry::Yes(after) = e.retry else {
                    return Err((Failure { message, partial: None }, false));
                };
                if n >= p.retries {
                    return Err((Failure { message, partial: None }, false));
                }
                let backoff = p.retry_backoff.saturating_mul(2u32.saturating_pow(n));
                let wait = after.unwrap_or(backoff);
                if wait > p.max_retry_wait {
                    let message = format!("{message}; Retry-After {wait:?} is past max_retry_wait");
                    return Err((Failure { message, partial: None }, false));
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ct.cancelled() => return Err((Failure { message: "cancelled by the caller".into(), partial: None }, true)),
                }
                n += 1;
            }
        }
    }
}

fn url(p: &LlmProvider) -> String {
    let base = p.base_url.expose().trim_end_matches('/');
    match p.kind {
        LlmKind::OpenAi => format!("{base}/chat/completions"),
        LlmKind::Anthropic => format!("{base}/v1/messages"),
    }
}

/// One request. `Ok` carries the HTTP status it answered with.
async fn once(
    http: &reqwest::Client,
    t: &Target<'_>,
    (chat, trace): (&Chat, &Carrier),
    sink: Option<&Sink>,
) -> Result<(Reply, u16), AttemptError> {
    let p = t.provider;
    if let Some(unset) = &p.unconfigured {
        // Nothing is sent: the chain moves on to the model's fallback.
        return Err(AttemptError::new(format!("not configured: {} not set", unset.join(", ")), None, Retry::No));
    }
    let stream = sink.is_some();
    let body = match p.kind {
        LlmKind::OpenAi => wire::openai::body(chat, &t.model.id, stream),
        LlmKind::Anthropic => wire::anthropic::body(chat, &t.model.id, stream),
    };
    let mut req = http.post(url(p)).json(&body);
    if let Some(key) = &p.api_key {
        req = match p.kind {
            LlmKind::OpenAi => req.bearer_auth(key.expose()),
            LlmKind::Anthropic => req.header("x-api-key", key.expose()),
        };
    }
    if p.kind == LlmKind::Anthropic {
        req = req.header("anthropic-version", wire::anthropic::VERSION);
    }
    for (k, v) in trace.pairs() {
        req = req.header(k, v);
    }
    for (k, v) in &p.headers {
        req = req.header(k.as_str(), v.expose());
    }
    let deadline = tokio::time::Instant::now() + p.max_duration;
    let resp = match tokio::time::timeout(p.timeout, req.send()).await {
        Err(_) => return Err(AttemptError::new(format!("no response within {:?}", p.timeout), None, Retry::No)),
        Ok(Err(e)) if e.is_connect() => {
            return Err(AttemptError::new(format!("cannot connect: {}", without_url(&e)), None, Retry::Yes(None)));
        }
        Ok(Err(e)) => return Err(AttemptError::new(format!("request failed: {}", without_url(&e)), None, Retry::No)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if !status.is_success() {
        let after = retry_after(resp.headers());
        let text = read_capped(resp, p.timeout, MAX_ERROR_TEXT * 4).await.unwrap_or_default();
        let message = format!("HTTP {}: {}", status.as_u16(), error_text(&text));
        let retry = if status.as_u16() == 429 || status.is_server_error() { Retry::Yes(after) } else { Retry::No };
        return Err(AttemptError::new(message, Some(status.as_u16()), retry));
    }
    let code = status.as_u16();
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let reply = |parsed: Parsed| Reply {
        provider: p.name.clone(),
        model: t.model.name.clone(),
        text: parsed.text,
        finish_reason: parsed.finish_reason,
        usage: parsed.usage,
    };
    if !is_sse {
        let bytes = read_capped(resp, p.timeout, MAX_REPLY_BYTES)
            .await
            .map_err(|e| AttemptError::new(e, Some(code), Retry::No))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| AttemptError::new(format!("unreadable reply: {e}"), Some(code), Retry::No))?;
        let parsed = match p.kind {
            LlmKind::OpenAi => wire::openai::parse_reply(&v),
            LlmKind::Anthropic => wire::anthropic::parse_reply(&v),
        }
        .map_err(|e| AttemptError::new(e, Some(code), Retry::No))?;
        let r = reply(parsed);
        if let Some(s) = sink
            && !r.text.is_empty()
            && s.send(r.text.clone()).await.is_err()
        {
            return Err(AttemptError { partial: Some(r), cancelled: true, ..gone(code) });
        }
        return Ok((r, code));
    }
    if sink.is_none() {
        return Err(AttemptError::new("the provider streamed a reply that was not asked for", Some(code), Retry::No));
    }
    let mut events = Box::pin(SseStream::from_bytes_stream(resp.bytes_stream()));
    let mut acc = Reply {
        provider: p.name.clone(),
        model: t.model.name.clone(),
        text: String::new(),
        finish_reason: None,
        usage: None,
    };
    let (mut input, mut output) = (None, None);
    // A broken stream's counts so far are not its usage (Anthropic reports
    // output tokens only at the end): what was sent is estimated.
    let broken = |acc: &Reply, message: String| {
        let partial = (!acc.text.is_empty()).then(|| acc.clone());
        AttemptError { partial, ..AttemptError::new(message, Some(code), Retry::No) }
    };
    loop {
        let bound = p.timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let next = match tokio::time::timeout(bound, events.next()).await {
            Err(_) => return Err(broken(&acc, format!("stream stalled for {bound:?}"))),
            Ok(None) => return Err(broken(&acc, "stream ended before it was complete".into())),
            Ok(Some(Err(e))) => return Err(broken(&acc, format!("stream broke: {e}"))),
            Ok(Some(Ok(sse))) => sse,
        };
        let Some(data) = next.data else { continue };
        let parsed = match p.kind {
            LlmKind::OpenAi => wire::openai::parse_event(&data),
            LlmKind::Anthropic => wire::anthropic::parse_event(&data),
        };
        let events_now = parsed.map_err(|e| broken(&acc, e))?;
        for ev in events_now {
            match ev {
                Event::Text(t) => {
                    acc.text.push_str(&t);
                    if let Some(s) = sink
                        && s.send(t).await.is_err()
                    {
                        let mut e = broken(&acc, "the caller went away".into());
                        e.cancelled = true;
                        return Err(e);
                    }
                }
                Event::Finish(r) => acc.finish_reason = Some(r),
                Event::Usage { input: i, output: o } => {
                    input = i.or(input);
                    output = o.or(output);
                }
                Event::Error(m) => return Err(broken(&acc, format!("provider error in stream: {m}"))),
                Event::Done => {
                    acc.usage = input.map(|i| Usage { input: i, output: output.unwrap_or(0) });
                    return Ok((acc, code));
                }
            }
        }
    }
}

fn gone(code: u16) -> AttemptError {
    AttemptError::new("the caller went away", Some(code), Retry::No)
}

/// reqwest's errors name the URL, which may carry a key in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<provider>");
    }
    s
}

async fn read_capped(resp: reqwest::Response, timeout: Duration, cap: usize) -> Result<Vec<u8>, String> {
    let read = async {
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reply broke: {}", without_url(&e)))?;
            if out.len() + chunk.len() > cap {
                return Err(format!("reply larger than {cap} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| Err(format!("reply not complete within {timeout:?}")))
}

/// The provider's error message, if its body is the usual JSON, else the text, bounded.
fn error_text(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    crate::audit::record::bounded(text.trim(), MAX_ERROR_TEXT)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (when.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_text_prefers_the_json_message() {
        assert_eq!(error_text(br#"{"error":{"message":"slow down"}}"#), "slow down");
        assert_eq!(error_text(b"plain failure"), "plain failure");
    }
}
