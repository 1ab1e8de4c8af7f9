//! Client for the deprecated HTTP+SSE transport (MCP revision 2024-11-05),
//! which rmcp does not provide.
//!
//! One long GET carries a server-sent event stream. Its first event,
//! `endpoint`, names the URL (usually relative) to which the client POSTs
//! each of its JSON-RPC messages; every server→client message then arrives on
//! the stream as a `message` event. [`connect`] opens the stream, waits for
//! the endpoint and returns an rmcp [`Transport`].
//!
//! Rules:
//! - The configured headers go on the GET and on every POST, marked
//!   sensitive; their values never reach a log or an error message.
//! - The endpoint must have the SSE URL's origin (scheme, host, port), and
//!   redirects are followed only within that origin: a hostile server must
//!   not be able to send our POSTs, and the headers on them, anywhere else.
//! - An event larger than [`MAX_EVENT_BYTES`] ends the connection rather
//!   than being buffered, as does a stream that cannot be parsed.
//! - Nothing here reconnects. When the stream ends the transport reports
//!   closed and the upstream supervisor opens a new connection (a new SSE
//!   stream is a new MCP session anyway).
//! - Neither URL is logged or put in errors: the SSE URL may carry a token
//!   and the endpoint's session id is a credential for the session.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use sse_stream::{Sse, SseStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::ConnectError;
use crate::config::Remote;

/// The largest event accepted on the stream, in raw bytes.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// How long one POST may take. Servers answer 202 as soon as they have
/// queued the message (the reply comes over the stream), so a POST that takes
/// this long is stuck, and would otherwise hold its request forever.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Probes a silent stream, so that a peer that vanished without closing is
/// noticed by the kernel rather than never.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

const MAX_REDIRECTS: usize = 5;

/// How much of a POST's (useless) answer is read so that its connection can
/// go back to the pool; past this it is cheaper to drop the connection.
const POST_DRAIN_BYTES: usize = 64 << 10;

/// Messages read from the stream but not yet taken by rmcp. rmcp's receive
/// loop never stalls for long; the bound only passes backpressure to TCP.
const INBOX: usize = 64;

/// A failure to send one message (surfaced by rmcp to the request that sent
/// it) or to read the stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SseError(String);

/// An open legacy SSE session, as an rmcp transport for the client role.
pub struct SseTransport {
    client: reqwest::Client,
    endpoint: Url,
    inbox: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: JoinHandle<()>,
}

/// Opens the SSE stream of `r` and returns once the server has named its
/// message endpoint. The caller bounds the wait.
pub async fn connect(r: &Remote) -> Result<SseTransport, ConnectError> {
    let settings = ConnectError::Settings;
    let transport = ConnectError::Transport;
    let sse_url = Url::parse(r.url.expose()).map_err(|e| settings(format!("bad sse url: {e}")))?;
    if !matches!(sse_url.scheme(), "http" | "https") {
        return Err(settings(format!("sse url must be http or https, not `{}`", sse_url.scheme())));
    }
    let client = client(&sse_url, headers(r).map_err(settings)?).map_err(settings)?;
    let response = client
        .get(sse_url.clone())
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .send()
        .await
        .map_err(|e| transport(format!("sse connect failed: {}", describe(e))))?;
    let status = response.status();
    if !status.is_success() {
        return Err(transport(format!("sse connect returned {status}")));
    }
    if !is_event_stream(response.headers()) {
        let why = "sse connect did not return an event stream (is this a streamable http url?)";
        return Err(settings(why.into()));
    }

    let mut bound = EventBound::new(MAX_EVENT_BYTES);
    let bytes = response.bytes_stream().map(move |chunk| match chunk {
        Ok(b) if bound.feed(&b) => Ok(b),
        Ok(_) => Err(SseError(format!("an sse event exceeds {MAX_EVENT_BYTES} bytes"))),
        Err(e) => Err(SseError(format!("sse stream failed: {}", describe(e)))),
    });
    let mut events = Box::pin(SseStream::from_bytes_stream(bytes));

    let endpoint = loop {
        match events.next().await {
            None => return Err(transport("sse stream ended before the endpoint event".into())),
            Some(Err(e)) => {
                return Err(transport(format!("sse stream failed before the endpoint event: {e}")));
            }
            Some(Ok(Sse { event: Some(name), data, .. })) if name == "endpoint" => {
                break resolve_endpoint(&sse_url, data.as_deref().unwrap_or("")).map_err(transport)?;
            }
            // Nothing sent yet, so nothing here can be a reply; the spec puts
            // the endpoint first and a server that does otherwise loses these.
            Some(Ok(ev)) => {
                tracing::warn!(
                    event = ev.event.as_deref().unwrap_or("message"),
                    "dropping an sse event sent before the endpoint"
                )
            }
        }
    };
    tracing::debug!("sse session open");

    let (tx, inbox) = mpsc::channel(INBOX);
    let reader = tokio::spawn(pump(events, tx));
    Ok(SseTransport { client, endpoint, inbox, reader })
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    // Each message is its own POST, not queued behind the others: rmcp runs
    // sends concurrently and a legacy server answers each POST immediately.
    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), SseError>> + Send + 'static {
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        let body = serde_json::to_vec(&item).map_err(|e| SseError(format!("cannot encode a message: {e}")));
        async move { post(&client, endpoint, body?).await }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.inbox.recv()
    }

    async fn close(&mut self) -> Result<(), SseError> {
        // Dropping the GET is how a legacy client ends its session.
        self.reader.abort();
        self.inbox.close();
        Ok(())
    }
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn headers(r: &Remote) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (k, v) in &r.headers {
        let name = HeaderName::try_from(k.as_str()).map_err(|e| format!("header `{k}`: {e}"))?;
        let mut value = HeaderValue::try_from(v.expose()).map_err(|_| format!("header `{k}`: invalid value"))?;
        value.set_sensitive(true);
        out.append(name, value);
    }
    Ok(out)
}

/// A client that adds `headers` to every request (the per-request `Accept`
/// and `Content-Type` win over a configured one) and follows redirects only
/// within the origin of `sse_url`.
fn client(sse_url: &Url, headers: HeaderMap) -> Result<reqwest::Client, String> {
    let origin = sse_url.origin();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt.url().origin() != origin {
            attempt.error("refusing a redirect to another origin")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(redirects)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE)
        .build()
        .map_err(|e| format!("cannot build an http client: {}", describe(e)))
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Resolves the `endpoint` event's data against the SSE URL, refusing any
/// other origin.
fn resolve_endpoint(sse_url: &Url, data: &str) -> Result<Url, String> {
    let data = data.trim();
    if data.is_empty() {
        return Err("the endpoint event is empty".into());
    }
    let endpoint = sse_url.join(data).map_err(|e| format!("bad endpoint event: {e}"))?;
    let (ours, theirs) = (sse_url.origin(), endpoint.origin());
    if ours != theirs {
        return Err(format!(
            "refusing an endpoint on origin {} other than the sse url's {}",
            theirs.ascii_serialization(),
            ours.ascii_serialization()
        ));
    }
    Ok(endpoint)
}

async fn post(client: &reqwest::Client, endpoint: Url, body: Vec<u8>) -> Result<(), SseError> {
    let mut response = client
        .post(endpoint)
        .header(CONTENT_TYPE, "application/json")
        .timeout(POST_TIMEOUT)
        .body(body)
        .send()
        .await
        .map_err(|e| SseError(format!("post to the message endpoint failed: {}", describe(e))))?;
    let status = response.status();
    let mut drained = 0;
    while drained < POST_DRAIN_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => drained += chunk.len(),
            _ => break,
        }
    }
    if !status.is_success() {
        return Err(SseError(format!("the message endpoint returned {status}")));
    }
    Ok(())
}

/// Moves messages from the stream to rmcp until either side goes away.
/// Returning drops the sender, which rmcp sees as the transport closing.
async fn pump<S>(mut events: S, inbox: mpsc::Sender<RxJsonRpcMessage<RoleClient>>)
where
    S: Stream<Item = Result<Sse, sse_stream::Error>> + Unpin,
{
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "closing an sse upstream whose stream failed");
                return;
            }
        };
        match event.event.as_deref() {
            // An event without a name is a `message` by SSE's definition.
            None | Some("message") => {
                for message in decode(event.data.as_deref().unwrap_or("")) {
                    if inbox.send(message).await.is_err() {
                        return;
                    }
                }
            }
            Some("endpoint") => tracing::warn!("ignoring a second endpoint event"),
            Some(other) => tracing::debug!(event = other, "ignoring an sse event"),
        }
    }
    tracing::debug!("sse stream ended");
}

/// One message, or each message of a batch (which 2024-11-05 still allows).
/// Anything else is dropped with a warning, as a garbage line is on stdio.
fn decode(data: &str) -> Vec<RxJsonRpcMessage<RoleClient>> {
    let decoded = if data.trim_start().starts_with('[') {
        serde_json::from_str(data)
    } else {
        serde_json::from_str(data).map(|m| vec![m])
    };
    decoded.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "dropping an sse message that is not JSON-RPC");
        Vec::new()
    })
}

/// reqwest puts the URL in its errors; ours may carry a token or session id.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Counts the bytes of the event being received, so that one too large is
/// refused before the parser has buffered it. An event ends at a blank line,
/// and SSE ends a line with CRLF, LF or CR.
struct EventBound {
    limit: usize,
    pending: usize,
    at_line_start: bool,
    after_cr: bool,
}

impl EventBound {
    fn new(limit: usize) -> Self {
        Self { limit, pending: 0, at_line_start: true, after_cr: false }
    }

    /// Accounts for `chunk`; false once an event has exceeded the limit.
    fn feed(&mut self, chunk: &Bytes) -> bool {
        for &b in chunk.iter() {
            match b {
                // The LF of a CRLF: the CR already ended the line.
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    if self.at_line_start {
                        self.pending = 0;
                    } else {
                        self.pending += 1;
                        self.at_line_start = true;
                    }
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.pending += 1;
                    self.at_line_start = false;
                    self.after_cr = false;
                }
            }
            if self.pending > self.limit {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap as AxHeaders, StatusCode};
    use axum::response::sse::{Event, Sse as AxSse};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use futures::StreamExt;
    use futures::channel::mpsc as fmpsc;
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ProtocolVersion};
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt, QuitReason};
    use serde_json::{Value, json};

    use super::*;
    use crate::config::secret;

    const KEY: &str = "k-123";
    /// Bounds every wait, so that a broken transport fails the test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(20);

    /// A minimal legacy (2024-11-05) HTTP+SSE MCP server with one tool, `echo`.
    #[derive(Clone, Default)]
    struct Legacy(Arc<Mutex<Inner>>);

    #[derive(Default)]
    struct Inner {
        /// Replaces the endpoint event's data.
        endpoint: Option<String>,
        reject_posts: bool,
        sessions: HashMap<String, fmpsc::UnboundedSender<Event>>,
        next_session: u64,
        /// The `x-api-key` of every request, GET and POST.
        keys: Vec<Option<String>>,
        /// The method of every message POSTed.
        methods: Vec<String>,
    }

    impl Legacy {
        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.0.lock().unwrap()
        }

        fn push(&self, event: Event) {
            for tx in self.lock().sessions.values() {
                tx.unbounded_send(event.clone()).unwrap();
            }
        }

        /// Ends every SSE stream by dropping its sender.
        fn end_streams(&self) {
            self.lock().sessions.clear();
        }

        fn methods(&self) -> Vec<String> {
            self.lock().methods.clone()
        }
    }

    fn key(headers: &AxHeaders) -> Option<String> {
        headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    async fn open_stream(State(s): State<Legacy>, headers: AxHeaders) -> Response {
        let (tx, rx) = fmpsc::unbounded();
        let mut inner = s.lock();
        inner.keys.push(key(&headers));
        inner.next_session += 1;
        let id = format!("s{}", inner.next_session);
        let endpoint = inner.endpoint.clone().unwrap_or_else(|| format!("/messages?sessionId={id}"));
        tx.unbounded_send(Event::default().event("endpoint").data(endpoint)).unwrap();
        inner.sessions.insert(id, tx);
        AxSse::new(rx.map(Ok::<_, Infallible>)).into_response()
    }

    async fn message(
        State(s): State<Legacy>,
        Query(q): Query<HashMap<String, String>>,
        headers: AxHeaders,
        body: String,
    ) -> StatusCode {
        let mut inner = s.lock();
        inner.keys.push(key(&headers));
        if inner.reject_posts {
            return StatusCode::NOT_FOUND;
        }
        let Some(tx) = q.get("sessionId").and_then(|id| inner.sessions.get(id)).cloned() else {
            return StatusCode::NOT_FOUND;
        };
        let Ok(msg) = serde_json::from_str::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        if let Some(method) = msg["method"].as_str() {
            inner.methods.push(method.to_owned());
        }
        if let Some(reply) = answer(&msg) {
            tx.unbounded_send(Event::default().event("message").data(reply.to_string())).unwrap();
        }
        StatusCode::ACCEPTED
    }

    fn answer(msg: &Value) -> Option<Value> {
        let id = msg.get("id")?.clone();
        let method = msg.get("method")?.as_str()?;
        let result = match method {
            "initialize" => json!({
                "protocolVersion": "2024-11-05",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "legacy", "version": "0.1.0"},
            }),
            "ping" => json!({}),
            "tools/list" => json!({"tools": [{
                "name": "echo",
                "description": "echoes its message",
                "inputSchema": {
                    "type": "object",
                    "properties": {"message": {"type": "string"}},
                    "required": ["message"],
                },
            }]}),
            "tools/call" => {
                let text = msg["params"]["arguments"]["message"].as_str().unwrap_or_default();
                json!({"content": [{"type": "text", "text": text}]})
            }
            _ => {
                return Some(json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": -32601, "message": "method not found"},
                }));
            }
        };
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }

    /// Starts `legacy` on a free port and returns its SSE URL.
    async fn serve(legacy: Legacy) -> String {
        let app = Router::new()
            .route("/sse", get(open_stream))
            .route("/messages", post(message))
            .route("/json", get(|| async { axum::Json(json!({"not": "sse"})) }))
            .route("/moved", get(|| async { Redirect::temporary("/sse") }))
            .route("/away", get(|| async { Redirect::temporary("http://evil.example/sse") }))
            .with_state(legacy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/sse")
    }

    fn remote(url: &str) -> Remote {
        let value = secret::resolve(KEY, &|_| None).unwrap();
        Remote { url: secret::resolve(url, &|_| None).unwrap(), headers: vec![("X-Api-Key".to_owned(), value)] }
    }

    async fn open(legacy: &Legacy) -> SseTransport {
        let url = serve(legacy.clone()).await;
        tokio::time::timeout(LIMIT, connect(&remote(&url))).await.unwrap().unwrap()
    }

    fn echo(message: &str) -> CallToolRequestParams {
        let args = json!({"message": message});
        CallToolRequestParams::new("echo").with_arguments(args.as_object().unwrap().clone())
    }

    async fn assert_echo_works<S: rmcp::service::Service<rmcp::RoleClient>>(
        client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
    ) {
        let tools = tokio::time::timeout(LIMIT, client.list_all_tools()).await.unwrap().unwrap();
        assert_eq!(tools.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>(), ["echo"]);
        let result = tokio::time::timeout(LIMIT, client.call_tool(echo("hello over sse"))).await.unwrap().unwrap();
        let text = result.content[0].as_text().unwrap();
        assert_eq!(text.text, "hello over sse");
    }

    #[tokio::test]
    async fn legacy_handshake_then_tools() {
        let legacy = Legacy::default();
        let t = open(&legacy).await;
        let client = tokio::time::timeout(LIMIT, ().serve(t)).await.unwrap().unwrap();
        assert_eq!(client.peer_info().unwrap().protocol_version, ProtocolVersion::V_2024_11_05);
        assert_echo_works(&client).await;

        assert_eq!(legacy.methods(), ["initialize", "notifications/initialized", "tools/list", "tools/call"]);
        // The GET and all four POSTs carried the configured header.
        let keys = legacy.lock().keys.clone();
        assert_eq!(keys.len(), 5);
        assert!(keys.iter().all(|k| k.as_deref() == Some(KEY)), "{keys:?}");
        client.cancel().await.unwrap();
    }

    /// The lifecycle connect.rs uses: probe `server/discover`, fall back to `initialize`.
    #[tokio::test]
    async fn auto_lifecycle_falls_back_to_initialize() {
        let legacy = Legacy::default();
        let t = open(&legacy).await;
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        };
        let client = tokio::time::timeout(LIMIT, ().serve_with_lifecycle(t, lifecycle)).await.unwrap().unwrap();
        assert_echo_works(&client).await;
        assert_eq!(legacy.methods()[..3], ["server/discover", "initialize", "notifications/initialized"]);
        client.cancel().await.unwrap();
    }

    #[tokio::test]
    async fn cross_origin_endpoint_is_refused() {
        for endpoint in ["http://evil.example/messages", "//evil.example/messages", "https://127.0.0.1/messages"] {
            let legacy = Legacy::default();
            legacy.lock().endpoint = Some(endpoint.to_owned());
            let url = serve(legacy.clone()).await;
            let err = tokio::time::timeout(LIMIT, connect(&remote(&url))).await.unwrap().err().unwrap().to_string();
            assert!(err.contains("refusing an endpoint on origin"), "{endpoint}: {err}");
            assert!(legacy.methods().is_empty());
        }
    }

    #[tokio::test]
    async fn stream_end_closes_the_client() {
        let legacy = Legacy::default();
        let t = open(&legacy).await;
        let client = tokio::time::timeout(LIMIT, ().serve(t)).await.unwrap().unwrap();
        legacy.end_streams();
        let reason = tokio::time::timeout(LIMIT, client.waiting()).await.unwrap().unwrap();
        assert!(matches!(reason, QuitReason::Closed), "{reason:?}");
    }

    #[tokio::test]
    async fn oversized_event_closes_the_client() {
        let legacy = Legacy::default();
        let t = open(&legacy).await;
        let client = tokio::time::timeout(LIMIT, ().serve(t)).await.unwrap().unwrap();
        legacy.push(Event::default().event("message").data("x".repeat(MAX_EVENT_BYTES + 1)));
        let reason = tokio::time::timeout(LIMIT, client.waiting()).await.unwrap().unwrap();
        assert!(matches!(reason, QuitReason::Closed), "{reason:?}");
    }

    #[tokio::test]
    async fn failed_post_fails_its_request() {
        let legacy = Legacy::default();
        let t = open(&legacy).await;
        let client = tokio::time::timeout(LIMIT, ().serve(t)).await.unwrap().unwrap();
        legacy.lock().reject_posts = true;
        let err = tokio::time::timeout(LIMIT, client.list_all_tools()).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        client.cancel().await.unwrap();
    }

    #[tokio::test]
    async fn a_non_sse_answer_is_refused() {
        let url = serve(Legacy::default()).await.replace("/sse", "/json");
        let err = connect(&remote(&url)).await.err().unwrap().to_string();
        assert!(err.contains("did not return an event stream"), "{err}");
        let err = connect(&remote(&url.replace("/json", "/missing"))).await.err().unwrap().to_string();
        assert!(err.contains("404"), "{err}");
    }

    #[tokio::test]
    async fn redirects_stay_on_the_origin() {
        let legacy = Legacy::default();
        let url = serve(legacy.clone()).await;
        let t = connect(&remote(&url.replace("/sse", "/moved"))).await.unwrap();
        let client = tokio::time::timeout(LIMIT, ().serve(t)).await.unwrap().unwrap();
        assert_echo_works(&client).await;
        client.cancel().await.unwrap();

        let err = connect(&remote(&url.replace("/sse", "/away"))).await.err().unwrap().to_string();
        assert!(err.contains("refusing a redirect to another origin"), "{err}");
    }

    #[test]
    fn endpoints_resolve_against_the_sse_url() {
        let base = Url::parse("https://h.example:8443/mcp/sse?token=t").unwrap();
        let ok = |data: &str| resolve_endpoint(&base, data).unwrap().to_string();
        assert_eq!(ok("/messages?sessionId=abc"), "https://h.example:8443/messages?sessionId=abc");
        assert_eq!(ok("messages?sessionId=abc\n"), "https://h.example:8443/mcp/messages?sessionId=abc");
        assert_eq!(ok("https://h.example:8443/m"), "https://h.example:8443/m");
        for bad in
            ["", "http://h.example:8443/m", "https://h.example/m", "https://other.example:8443/m", "//x.example/m"]
        {
            assert!(resolve_endpoint(&base, bad).is_err(), "{bad}");
        }
        // Default ports are the same origin whether written or not.
        let base = Url::parse("https://h.example/sse").unwrap();
        assert!(resolve_endpoint(&base, "https://h.example:443/m").is_ok());
    }

    #[test]
    fn event_bound_resets_at_each_blank_line() {
        let feed = |chunks: &[&str]| {
            let mut bound = EventBound::new(10);
            chunks.iter().all(|c| bound.feed(&Bytes::copy_from_slice(c.as_bytes())))
        };
        // Many small events, with every line ending, split anywhere.
        assert!(feed(&["data: 123\n\n", "data: 123\r\n", "\r\n", "data: 123\r\rdata: 123\n\r"]));
        assert!(feed(&["data: 123\r", "\n\r", "\ndata: 123\n\n"]));
        // One event over the limit, even across lines and chunks.
        assert!(!feed(&["data: 123\n", "data: 123\n\n"]));
        assert!(!feed(&["data: 12", "345678901"]));
        // A CRLF is one line ending, not a blank line.
        assert!(!feed(&["data: 1\r\ndata: 2\r\n"]));
    }

    #[test]
    fn batches_and_garbage_decode() {
        let one = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert_eq!(decode(&one.to_string()).len(), 1);
        assert_eq!(decode(&json!([one, one]).to_string()).len(), 2);
        assert!(decode("not json").is_empty());
    }
}
