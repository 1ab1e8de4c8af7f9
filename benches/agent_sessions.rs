//! What an upstream session of an agent's own costs (`upstream::own`).
//!
//! `cargo bench --bench agent_sessions` starts the fixture over Streamable
//! HTTP and the real `tollgate serve` in front of it, then opens
//! `BENCH_AGENTS` (default 200) 2025-11-25 agents that declare elicitation,
//! each of which makes one call: tollgate opens an upstream session for
//! each (`[agent_sessions] max` is raised to fit). It reports:
//! - the open time: the p50 of an agent's first call (which opens its
//!   session) minus the p50 of its second (which reuses it), and beside it
//!   the same two figures for agents that declare nothing (shared path);
//! - memory per idle session: the growth of tollgate's resident set while
//!   `n` asking agents connect, less its growth while `n` agents that share
//!   the connection do (so the agents' own sessions at tollgate are not
//!   counted), per session; and the fixture upstream's growth per session.

#[path = "common/mcp.rs"]
mod mcp;

use std::time::{Duration, Instant};

use mcp::*;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A legacy agent that declares elicitation (or nothing, with `asks` false).
#[derive(Clone)]
struct Legacy {
    asks: bool,
}

impl ClientHandler for Legacy {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        if self.asks {
            caps.elicitation = Some(Default::default());
        }
        ClientConfig::new(caps, Implementation::new("bench-agent", "1"))
    }
}

async fn legacy(url: &str, key: &str, asks: bool) -> RunningService<RoleClient, Legacy> {
    let cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    let t = StreamableHttpClientTransport::from_config(cfg);
    Legacy { asks }.serve_with_lifecycle(t, ClientLifecycleMode::Initialize).await.expect("agent connects")
}

/// Resident set of a process, in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn p50(mut v: Vec<Duration>) -> f64 {
    v.sort();
    us(pct(&v, 0.5))
}

/// Each agent's first and second call, `n` agents one after another.
async fn first_and_second(
    url: &str,
    key: &str,
    asks: bool,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<RunningService<RoleClient, Legacy>>) {
    let (mut first, mut second, mut agents) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let agent = legacy(url, key, asks).await;
        let t = Instant::now();
        agent.peer().call_tool(echo("bench__echo")).await.expect("first call");
        first.push(t.elapsed());
        let t = Instant::now();
        agent.peer().call_tool(echo("bench__echo")).await.expect("second call");
        second.push(t.elapsed());
        agents.push(agent);
    }
    (first, second, agents)
}

fn main() {
    tokio::runtime::Runtime::new().expect("runtime").block_on(bench());
}

async fn bench() {
    let n: usize = std::env::var("BENCH_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let (fixture, upstream_url) = fixture("sse").await;
    let dir = gateway_dir(&upstream_url, false, None);
    let manifest = dir.path().join("tool-manifests/bench.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, format!("{text}[agent_sessions]\nmax = {}\nidle = \"1h\"\n", n + 10)).expect("write");
    let config = dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    // (The last table of the bench's config is `[server]`.)
    std::fs::write(&config, format!("{text}max_sessions = {}\nmax_sessions_per_key = {}\n", 4 * n + 100, 4 * n + 100))
        .expect("write");
    let key = make_key(&dir);
    let (gateway, base) = start_server(serve(&dir)).await;
    let url = format!("{base}/mcp");
    wait_for_tool(&url, Some(&key)).await;
    let (gw_pid, up_pid) = (gateway.id().expect("gateway pid"), fixture.id().expect("fixture pid"));

    // Warm both paths, then measure agents that share the connection.
    drop(first_and_second(&url, &key, false, 20).await);
    drop(first_and_second(&url, &key, true, 20).await);
    let (gw0, up0) = (rss_kib(gw_pid), rss_kib(up_pid));
    let (shared_first, shared_second, plain) = first_and_second(&url, &key, false, n).await;
    let (gw1, up1) = (rss_kib(gw_pid), rss_kib(up_pid));
    let (own_first, own_second, asking) = first_and_second(&url, &key, true, n).await;
    let (gw2, up2) = (rss_kib(gw_pid), rss_kib(up_pid));

    println!("machine: {} cores; agents per path: {n}", std::thread::available_parallelism().map_or(0, |c| c.get()));
    println!(
        "shared path   first call p50 {:>8.1} us  second call p50 {:>8.1} us",
        p50(shared_first.clone()),
        p50(shared_second.clone())
    );
    println!(
        "own session   first call p50 {:>8.1} us  second call p50 {:>8.1} us  open time (first - second) {:>8.1} us",
        p50(own_first.clone()),
        p50(own_second.clone()),
        p50(own_first) - p50(own_second)
    );
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    println!(
        "tollgate RSS {gw0} -> {gw1} KiB with {n} sharing agents ({:.1} KiB each), -> {gw2} KiB with {n} asking agents ({:.1} KiB each): {:.1} KiB per own upstream session",
        per(gw0, gw1),
        per(gw1, gw2),
        per(gw1, gw2) - per(gw0, gw1)
    );
    println!(
        "upstream RSS {up0} -> {up1} KiB with sharing agents, -> {up2} KiB with asking agents: {:.1} KiB per session",
        per(up1, up2)
    );
    drop((plain, asking));
}
