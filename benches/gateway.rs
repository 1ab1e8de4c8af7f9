//! Direct vs through-tollgate, in one run, against the same upstream.
//!
//! `cargo bench --bench gateway` starts `tollgate-fixture` over Streamable
//! HTTP, a gateway in-process in front of it, and an rmcp client on each
//! path. It reports p50/p99 latency of a trivial `echo` call at concurrency 1
//! and calls per second at concurrency 16 and 64, with ratios. Paths are
//! measured alternately in rounds so drift affects both alike.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Clone)]
struct Quiet;
impl ClientHandler for Quiet {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("bench", "1"))
    }
}

async fn client(url: &str) -> RunningService<RoleClient, Quiet> {
    let cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string()).max_concurrent_requests(256);
    let t = StreamableHttpClientTransport::from_config(cfg);
    let mode = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    Quiet.serve_with_lifecycle(t, mode).await.expect("client connects")
}

fn echo(name: &str) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = json!({"message": "bench"}).as_object().cloned();
    p
}

async fn latencies(peer: &Peer<RoleClient>, tool: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        peer.call_tool(echo(tool)).await.expect("call");
        out.push(t.elapsed());
    }
    out
}

async fn throughput(peer: &Peer<RoleClient>, tool: &str, concurrency: usize, total: usize) -> f64 {
    let start = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let peer = peer.clone();
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

/// `BENCH_GATEWAY_THREADS=n` sets the gateway's `server.worker_threads`.
fn gateway_config() -> String {
    let mut c = "[server]\nlisten = \"127.0.0.1:0\"\n".to_string();
    if let Ok(n) = std::env::var("BENCH_GATEWAY_THREADS") {
        c.push_str(&format!("worker_threads = {n}\n"));
    }
    c
}

fn fixture_args(mode: &str) -> Vec<&'static str> {
    let mut a = vec!["--name", "bench", "--http", "127.0.0.1:0"];
    if mode == "json" {
        a.push("--json");
    }
    a
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    // BENCH_UPSTREAM=sse (default: the upstream answers every call on an SSE
    // stream, rmcp's default) or json (plain JSON responses).
    let mode = std::env::var("BENCH_UPSTREAM").unwrap_or_else(|_| "sse".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut fixture = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate-fixture"))
        .args(fixture_args(&mode))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("fixture");
    let mut lines = BufReader::new(fixture.stdout.take().expect("stdout")).lines();
    let upstream_url = loop {
        let line = lines.next_line().await.expect("read").expect("fixture exited");
        if let Some(u) = line.strip_prefix("LISTENING ") {
            break u.trim().to_string();
        }
    };

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).expect("dir");
    std::fs::write(dir.path().join("tollgate.toml"), gateway_config()).expect("write");
    std::fs::write(
        dir.path().join("tool-manifests/bench.toml"),
        format!("name = \"bench\"\n[transport]\ntype = \"http\"\nurl = \"{upstream_url}\"\n"),
    )
    .expect("write");
    // The real binary, as deployed, in its own process.
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(dir.path().join("tollgate.toml"))
        .arg("serve")
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tollgate");
    let mut lines = BufReader::new(gateway.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines.next_line().await.expect("read").expect("tollgate exited");
        if let Some(u) = line.strip_prefix("tollgate listening on ") {
            break u.trim().to_string();
        }
    };
    let gw_url = format!("{base}/mcp");
    // Wait until the upstream is in the catalog.
    let probe = client(&gw_url).await;
    for _ in 0..200 {
        let tools = probe.peer().list_all_tools().await.expect("list");
        if tools.iter().any(|t| t.name == "bench__echo") {
            break;
        }
    }
    drop(probe);

    let direct = client(&upstream_url).await;
    let through = client(&gw_url).await;
    // Warm up both paths.
    latencies(direct.peer(), "echo", 200).await;
    latencies(through.peer(), "bench__echo", 200).await;

    let (mut d_lat, mut t_lat) = (Vec::new(), Vec::new());
    let mut tput: Vec<(usize, f64, f64)> = Vec::new();
    for _ in 0..rounds {
        d_lat.extend(latencies(direct.peer(), "echo", 400).await);
        t_lat.extend(latencies(through.peer(), "bench__echo", 400).await);
        for c in [16usize, 64] {
            let d = throughput(direct.peer(), "echo", c, 4096).await;
            let t = throughput(through.peer(), "bench__echo", c, 4096).await;
            tput.push((c, d, t));
        }
    }
    d_lat.sort();
    t_lat.sort();
    println!(
        "upstream responses: {mode}; gateway threads: {}",
        std::env::var("BENCH_GATEWAY_THREADS").unwrap_or_else(|_| "one per core".into())
    );
    println!(
        "machine: {} cores; rounds: {rounds}; calls at c=1 per path: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        d_lat.len()
    );
    println!("latency c=1   direct p50 {:>8.1} us  p99 {:>8.1} us", us(pct(&d_lat, 0.5)), us(pct(&d_lat, 0.99)));
    println!("latency c=1   tollgate p50 {:>6.1} us  p99 {:>8.1} us", us(pct(&t_lat, 0.5)), us(pct(&t_lat, 0.99)));
    println!(
        "added latency p50 {:>8.1} us  p99 {:>8.1} us",
        us(pct(&t_lat, 0.5)) - us(pct(&d_lat, 0.5)),
        us(pct(&t_lat, 0.99)) - us(pct(&d_lat, 0.99))
    );
    for c in [16usize, 64] {
        let rows: Vec<_> = tput.iter().filter(|r| r.0 == c).collect();
        let d = rows.iter().map(|r| r.1).sum::<f64>() / rows.len() as f64;
        let t = rows.iter().map(|r| r.2).sum::<f64>() / rows.len() as f64;
        println!("throughput c={c:<3} direct {d:>8.0} calls/s  tollgate {t:>8.0} calls/s  ratio {:.2}", t / d);
    }
    drop(gateway);
}
