//! What the MCP benches share: an rmcp client on a path, latency and
//! throughput loops, the fixture upstream, gateway folders and processes.

#![allow(dead_code)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const TOLLGATE: &str = env!("CARGO_BIN_EXE_tollgate");
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_tollgate-fixture");

#[derive(Clone)]
pub struct Quiet;
impl ClientHandler for Quiet {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("bench", "1"))
    }
}

/// A 2026-07-28 (stateless) client on `url`.
pub async fn client(url: &str, key: Option<&str>) -> RunningService<RoleClient, Quiet> {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string()).max_concurrent_requests(256);
    if let Some(k) = key {
        cfg = cfg.auth_header(k.to_string());
    }
    let t = StreamableHttpClientTransport::from_config(cfg);
    let mode = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    Quiet.serve_with_lifecycle(t, mode).await.expect("client connects")
}

pub fn echo(name: &str) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = json!({"message": "bench"}).as_object().cloned();
    p
}

/// `n` calls one after another; each call's latency.
pub async fn latencies(peer: &Peer<RoleClient>, tool: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        peer.call_tool(echo(tool)).await.expect("call");
        out.push(t.elapsed());
    }
    out
}

/// Calls per second with `concurrency` calls in flight, spread evenly over
/// `peers` (one per replica), `total` calls in all.
pub async fn throughput(peers: &[Peer<RoleClient>], tool: &str, concurrency: usize, total: usize) -> f64 {
    let start = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let peer = peers[i % peers.len()].clone();
        let tool = tool.to_string();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                peer.call_tool(echo(&tool)).await.expect("call");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per * concurrency) as f64 / start.elapsed().as_secs_f64()
}

pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The fixture upstream over Streamable HTTP (`mode`: `sse`, the default
/// of rmcp, or `json` responses); the process and its MCP URL.
pub async fn fixture(mode: &str) -> (tokio::process::Child, String) {
    let mut args = vec!["--name", "bench", "--http", "127.0.0.1:0"];
    if mode == "json" {
        args.push("--json");
    }
    let mut child = tokio::process::Command::new(FIXTURE)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("fixture");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines.next_line().await.expect("read").expect("fixture exited");
        if let Some(u) = line.strip_prefix("LISTENING ") {
            break u.trim().to_string();
        }
    };
    (child, url)
}

/// Starts a server process and returns it with its base URL.
pub async fn start_server(mut cmd: tokio::process::Command) -> (tokio::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines.next_line().await.expect("read").expect("server exited");
        if let Some(u) = line.strip_prefix("tollgate listening on ") {
            break u.trim().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// `tollgate serve` on the folder `dir`, on a free port.
pub fn serve(dir: &tempfile::TempDir) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(TOLLGATE);
    cmd.arg("--config").arg(dir.path().join("tollgate.toml")).args(["serve", "--listen", "127.0.0.1:0"]);
    cmd.env("TOLLGATE_LOG", "warn");
    cmd
}

/// `BENCH_GATEWAY_THREADS=n` sets the gateway's `server.worker_threads`.
fn gateway_config(store: Option<&str>) -> String {
    let mut c = String::new();
    if let Some(s) = store {
        c.push_str(&format!("store = \"{s}\"\n"));
    }
    c.push_str("[server]\nlisten = \"127.0.0.1:0\"\n");
    if let Ok(n) = std::env::var("BENCH_GATEWAY_THREADS") {
        c.push_str(&format!("worker_threads = {n}\n"));
    }
    c
}

/// Writes a gateway folder: config (on `store`, default SQLite in the
/// folder), the bench manifest, an allow grant, and with `budget`, a cost on
/// `echo` and a budget that covers every call.
pub fn gateway_dir(upstream_url: &str, budget: bool, store: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).expect("dir");
    std::fs::create_dir_all(dir.path().join("policies")).expect("dir");
    std::fs::write(dir.path().join("tollgate.toml"), gateway_config(store)).expect("write");
    std::fs::write(
        dir.path().join("tool-manifests/bench.toml"),
        format!(
            "name = \"bench\"\n[transport]\ntype = \"http\"\nurl = \"{upstream_url}\"\n{}",
            if budget { "[tools.echo]\ncost = \"0.000001\"\n" } else { "" }
        ),
    )
    .expect("write");
    if budget {
        std::fs::write(
            dir.path().join("policies/budget.toml"),
            "[[budget]]\nid = \"bench\"\nscope = \"team:bench\"\norg = \"bench\"\nlimit = \"1000000.00\"\nperiod = \"daily\"\n",
        )
        .expect("write");
    }
    std::fs::write(
        dir.path().join("policies/bench.toml"),
        "[[grant]]\nid = \"bench\"\nprincipals = [\"team:bench\"]\ntools = [\"bench__*\"]\neffect = \"allow\"\n",
    )
    .expect("write");
    dir
}

/// A key for team `bench`, made with the CLI on the folder's store.
pub fn make_key(dir: &tempfile::TempDir) -> String {
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(dir.path().join("tollgate.toml"))
        .args(["keys", "create", "--team", "bench", "--org", "bench", "--json"])
        .output()
        .expect("keys create");
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("key JSON");
    key["secret"].as_str().expect("secret").to_string()
}

/// Waits until the gateway at `url` lists `bench__echo`.
pub async fn wait_for_tool(url: &str, key: Option<&str>) {
    let probe = client(url, key).await;
    for _ in 0..200 {
        let tools = probe.peer().list_all_tools().await.expect("list");
        if tools.iter().any(|t| t.name == "bench__echo") {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("bench__echo never appeared at {url}");
}
