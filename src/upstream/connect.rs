//! Opening one connection to an upstream, whatever its transport, in
//! whichever protocol era it speaks (rmcp's `Auto` lifecycle probes
//! `server/discover` and falls back to `initialize`), after a readiness
//! probe on the transports where a late answer would share the stream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio as ProcStdio;

use http::{HeaderName, HeaderValue};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, PingRequest, ProtocolVersion, RequestId};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::io::{AsyncReadExt, BufReader};

use super::error::ConnectError;
use super::handler::Handler;
use super::tap::tap;
use crate::config::{Remote, Stdio, Transport};

pub type Service = RunningService<RoleClient, Handler>;

/// An open connection, and for a stdio upstream the process group it runs
/// in (see [`Group`]): keep both for the connection's life.
pub struct Opened {
    pub service: Service,
    pub group: Option<Group>,
}

/// A stdio upstream's process group, killed whole when this is dropped: on
/// every path a connection ends (a failed or abandoned attempt, a restart,
/// shutdown), even where rmcp's own cleanup, a task spawned on drop, would
/// not run before the process exits. On an orderly close rmcp has already
/// asked the upstream to exit; then this finds nothing left.
pub struct Group(nix::unistd::Pid);

impl Drop for Group {
    fn drop(&mut self) {
        // ESRCH (all gone) is the common case.
        let _ = nix::sys::signal::killpg(self.0, nix::sys::signal::Signal::SIGKILL);
    }
}

/// How many requests one HTTP upstream connection may have in flight.
const HTTP_MAX_CONCURRENT: usize = 256;

/// Connects in whichever era the upstream speaks. rmcp's `Auto` probes
/// `server/discover` and falls back to `initialize` when the server does not
/// know it; a server that answers discover but lists only pre-2026 versions
/// is retried here with `initialize`.
pub async fn open(name: &str, transport: &Transport, handler: Handler) -> Result<Opened, ConnectError> {
    let auto = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    };
    let result = match open_with(name, transport, handler.clone(), auto).await {
        Err(ConnectError::Handshake(e)) if e.contains("no compatible protocol version") => {
            tracing::debug!(upstream = %name, "server/discover offered only legacy versions; using initialize");
            open_with(name, transport, handler, ClientLifecycleMode::Initialize).await
        }
        other => other,
    };
    result.map_err(|e| e.map_text(|t| scrub(t, transport)))
}

/// Opens a 2025-11-25 session (`initialize`), for one agent's own session
/// (see `own`): whatever else the upstream speaks.
pub async fn open_legacy(name: &str, transport: &Transport, handler: Handler) -> Result<Opened, ConnectError> {
    let result = open_with(name, transport, handler, ClientLifecycleMode::Initialize).await;
    result.map_err(|e| e.map_text(|t| scrub(t, transport)))
}

/// Errors end up in logs, `/readyz` and `tollgate tools`: never with the URL,
/// which may carry a credential.
fn scrub(message: String, transport: &Transport) -> String {
    match transport {
        Transport::Http(r) | Transport::Sse(r) | Transport::Ws(r) if !r.url.expose().is_empty() => {
            message.replace(r.url.expose(), "<upstream url>")
        }
        _ => message,
    }
}

async fn open_with(
    name: &str,
    transport: &Transport,
    handler: Handler,
    lifecycle: ClientLifecycleMode,
) -> Result<Opened, ConnectError> {
    let progress = handler.progress.clone();
    let inflight = handler.inflight.clone();
    let serve_err = |e: rmcp::service::ClientInitializeError| ConnectError::Handshake(e.to_string());
    match transport {
        Transport::Stdio(s) => {
            let child = spawn_child(name, s)?;
            // Held from here: an attempt that fails below ends the group.
            let group = child.id().and_then(|p| i32::try_from(p).ok()).map(|p| Group(nix::unistd::Pid::from_raw(p)));
            let mut t = tap(child, progress, inflight);
            ready(&mut t).await?;
            let service = handler.serve_with_lifecycle(t, lifecycle).await.map_err(serve_err)?;
            Ok(Opened { service, group })
        }
        Transport::Http(r) => {
            let config = StreamableHttpClientTransportConfig::with_uri(r.url.expose())
                .custom_headers(headers(r)?)
                .max_concurrent_requests(HTTP_MAX_CONCURRENT);
            let t = StreamableHttpClientTransport::with_client(pooled_client()?, config);
            let service =
                handler.serve_with_lifecycle(tap(t, progress, inflight.clone()), lifecycle).await.map_err(serve_err)?;
            Ok(Opened { service, group: None })
        }
        Transport::Sse(r) => {
            let mut t = tap(super::sse::connect(r).await?, progress, inflight);
            ready(&mut t).await?;
            let service = handler.serve_with_lifecycle(t, lifecycle).await.map_err(serve_err)?;
            Ok(Opened { service, group: None })
        }
        Transport::Ws(r) => {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = r
                .url
                .expose()
                .into_client_request()
                .map_err(|e| ConnectError::Settings(format!("bad websocket url: {e}")))?;
            for (k, v) in headers(r)? {
                req.headers_mut().insert(k, v);
            }
            let (ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .map_err(|e| ConnectError::Transport(format!("websocket connect failed: {e}")))?;
            let mut t = tap(crate::ws::tungstenite::<RoleClient, _>(ws), progress, inflight);
            ready(&mut t).await?;
            let service = handler.serve_with_lifecycle(t, lifecycle).await.map_err(serve_err)?;
            Ok(Opened { service, group: None })
        }
    }
}

/// Waits until a stream upstream (stdio, WebSocket, legacy SSE) answers one
/// request, before rmcp's handshake starts.
///
/// rmcp's `Auto` lifecycle gives its `server/discover` probe a fixed, private
/// 10 s, then sends `initialize` on the same stream. A server slower than that
/// to read its input (an `npx` download on a first run) answers the stale
/// discover where rmcp expects the `initialize` reply, rmcp rejects it as a
/// conflicting id, and every restart is as slow: it never connects. Once this
/// probe is answered the server is reading, so rmcp's discover is answered
/// promptly and rmcp still tells the eras apart. The wait has no bound of its
/// own: the supervisor's `connect_timeout` bounds the whole attempt, and a
/// timed-out attempt drops the stream, so no late answer can reach a later
/// handshake. Streamable HTTP needs none of this: each request is its own
/// exchange.
///
/// The probe is a `ping`, which every era allows before the handshake, so a
/// server that silently ignores `server/discover` (rmcp then falls back to
/// `initialize` after its 10 s) still answers it. Its string id never matches
/// rmcp's numeric ids. Any answer, result or error, means the server is up.
async fn ready<T: rmcp::transport::Transport<RoleClient>>(transport: &mut T) -> Result<(), ConnectError> {
    let id = RequestId::String("tollgate-probe".into());
    let ping = ClientJsonRpcMessage::request(ClientRequest::PingRequest(PingRequest::default()), id.clone());
    transport.send(ping).await.map_err(|e| ConnectError::Transport(format!("cannot send the readiness ping: {e}")))?;
    loop {
        match transport.receive().await {
            None => {
                let why = "the upstream closed the connection before answering its first request";
                return Err(ConnectError::Transport(why.into()));
            }
            Some(JsonRpcMessage::Response(r)) if r.id == id => return Ok(()),
            // A server that cannot read a request's id answers without one.
            Some(JsonRpcMessage::Error(e)) if e.id.as_ref().is_none_or(|i| *i == id) => return Ok(()),
            // Log notifications and the like before the answer: not ours to handle.
            Some(_) => {}
        }
    }
}

/// The HTTP client for Streamable HTTP upstreams.
///
/// rmcp's default client disables connection reuse (a guard against delayed-ACK
/// stalls when a body is dropped early), which costs a TCP handshake and
/// teardown per call. A gateway makes many calls to the same few hosts, so it
/// keeps idle connections (hyper only reuses one after its body is fully read)
/// and sets TCP_NODELAY. Redirects are not followed: the manifest names the URL.
///
/// One client serves every connection (a clone shares its pool): building
/// one per connection costs a TLS configuration and a pool each, about a
/// third of a megabyte for every agent's own upstream session (see `own`).
/// Sessions stay apart: each request carries its own session id and the
/// manifest's headers, never anything of the client's.
fn pooled_client() -> Result<reqwest::Client, ConnectError> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(HTTP_MAX_CONCURRENT)
                .tcp_nodelay(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .clone()
        .map_err(ConnectError::Settings)
}

pub fn headers(r: &Remote) -> Result<HashMap<HeaderName, HeaderValue>, ConnectError> {
    let mut out = HashMap::new();
    for (k, v) in &r.headers {
        let bad = |e: &dyn std::fmt::Display| ConnectError::Settings(format!("header `{k}`: {e}"));
        let name = HeaderName::try_from(k.as_str()).map_err(|e| bad(&e))?;
        let mut value = HeaderValue::try_from(v.expose()).map_err(|e| bad(&e))?;
        value.set_sensitive(true);
        out.insert(name, value);
    }
    Ok(out)
}

/// Starts a stdio upstream with exactly the environment its manifest declares,
/// never through a shell. Its stderr goes to tollgate's log.
fn spawn_child(name: &str, s: &Stdio) -> Result<TokioChildProcess, ConnectError> {
    let program = resolve_program(&s.command)
        .ok_or_else(|| ConnectError::Settings(format!("command `{}` not found on PATH", s.command)))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&s.args).env_clear();
    for (k, v) in &s.env {
        cmd.env(k, v.expose());
    }
    if let Some(cwd) = &s.cwd {
        cmd.current_dir(cwd);
    }
    // Its own process group: ending the upstream (a restart, tollgate's
    // shutdown) signals the whole group, so a server that a wrapper such as
    // `npx` started does not outlive it, re-parented to init.
    let mut cmd = process_wrap::tokio::CommandWrap::from(cmd);
    cmd.wrap(process_wrap::tokio::ProcessGroup::leader());
    let (child, stderr) = TokioChildProcess::builder(cmd)
        .stderr(ProcStdio::piped())
        .spawn()
        .map_err(|e| ConnectError::Transport(format!("cannot start `{}`: {e}", s.command)))?;
    if let Some(stderr) = stderr {
        tokio::spawn(pump_stderr(name.to_string(), stderr));
    }
    Ok(child)
}

/// Logs a child's stderr, line by line. It keeps draining whatever the child
/// writes (invalid UTF-8, endless lines) so the child never blocks on a full pipe.
async fn pump_stderr(upstream: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    const MAX_LINE: usize = 8 * 1024;
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => tracing::debug!(upstream = %upstream, "stderr: {}", String::from_utf8_lossy(&line).trim_end()),
            Err(_) => return,
        }
    }
}

/// Finds the program on tollgate's own PATH, so the child needs no PATH of its
/// own unless its manifest gives one.
pub fn resolve_program(command: &str) -> Option<PathBuf> {
    if command.contains('/') {
        return Some(PathBuf::from(command));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
