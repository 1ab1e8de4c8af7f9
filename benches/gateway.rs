//! Direct vs bare proxy vs governed, in one run, against the same upstream.
//!
//! `cargo bench --bench gateway` starts `tollgate-fixture` over Streamable
//! HTTP and, each in its own process in front of it:
//! - the governed gateway: the real `tollgate serve` binary, with a key, a
//!   grant, schema validation and the durable audit trail;
//! - the bare proxy: this bench re-executed as a server built from the same
//!   library, edge and forwarding code, but with no governance stages (no
//!   identify, authorize, validate, limit or audit).
//!
//! An rmcp client on each path reports p50/p99 latency of a trivial `echo`
//! call at concurrency 1 and calls per second at concurrency 16 and 64, with
//! ratios. Paths are measured alternately in rounds so drift affects all alike.

#[path = "common/stages.rs"]
mod stages;

use std::process::Stdio;

use stages::report_stages;
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

async fn client(url: &str, key: Option<&str>) -> RunningService<RoleClient, Quiet> {
    let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.to_string()).max_concurrent_requests(256);
    if let Some(k) = key {
        cfg = cfg.auth_header(k.to_string());
    }
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

/// The ungoverned baseline: catalog and forwarding, nothing else.
#[derive(Clone)]
struct BareProxy {
    gw: tollgate::gateway::Gateway,
}

impl rmcp::ServerHandler for BareProxy {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(rmcp::model::ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _r: Option<rmcp::model::PaginatedRequestParams>,
        _c: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let tools = self.gw.upstreams.catalog().tools().iter().map(|e| e.tool.clone()).collect();
        Ok(rmcp::model::ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let catalog = self.gw.upstreams.catalog();
        let entry =
            catalog.tool(&request.name).cloned().ok_or_else(|| rmcp::ErrorData::invalid_params("unknown", None))?;
        let index =
            entry.target.upstream().ok_or_else(|| rmcp::ErrorData::invalid_params("not an upstream tool", None))?;
        let upstream = self.gw.upstreams.get(index).clone();
        tollgate::pipeline::forward_tool(
            &self.gw,
            &upstream,
            &entry,
            request,
            &tollgate::trace::Carrier::default(),
            ctx,
        )
        .await
    }
}

async fn run_bare_proxy(config: &str) {
    let config = tollgate::config::load(std::path::Path::new(config)).expect("config");
    let store = tollgate::gateway::open_store(&config).await.expect("store");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = tollgate::gateway::Gateway::open(&config, store, shutdown.clone()).await.expect("gateway");
    let router = tollgate::server::http::ungoverned_router(gw.clone(), &config.server, BareProxy { gw });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("tollgate listening on http://{}", listener.local_addr().expect("addr"));
    tollgate::server::http::serve(listener, router, shutdown).await.expect("serve");
}

/// p50 of each governance stage, from the governed gateway's own audit
/// records (every allowed call records its stage latencies).
async fn stage_report(path: &str, dir: &tempfile::TempDir) {
    let config = tollgate::config::load(&dir.path().join("tollgate.toml")).expect("config");
    let store = tollgate::gateway::open_store(&config).await.expect("store");
    let filter = tollgate::store::AuditFilter { kind: Some("call".into()), ..Default::default() };
    let rows = store.audit(&filter).await.expect("audit");
    // The governed path's first 600 calls are its warm-up and first latency
    // round, at concurrency 1.
    report_stages(&format!("{path} c=1"), &rows[..rows.len().min(600)]);
    report_stages(&format!("{path} all"), &rows);
}

/// Starts a server process and returns it with its base URL.
async fn start_server(mut cmd: tokio::process::Command) -> (tokio::process::Child, String) {
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

/// Writes a gateway folder: config, the bench manifest, an allow grant, and
/// with `budget`, a cost on `echo` and a budget that covers every call.
fn gateway_dir(upstream_url: &str, budget: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).expect("dir");
    std::fs::create_dir_all(dir.path().join("policies")).expect("dir");
    std::fs::write(dir.path().join("tollgate.toml"), gateway_config()).expect("write");
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

async fn wait_for_tool(url: &str, key: Option<&str>) {
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

struct Path3 {
    name: &'static str,
    tool: &'static str,
    lat: Vec<Duration>,
    tput: Vec<(usize, f64)>,
}

impl Path3 {
    fn tput(&self, c: usize) -> f64 {
        let rows: Vec<f64> = self.tput.iter().filter(|r| r.0 == c).map(|r| r.1).collect();
        rows.iter().sum::<f64>() / rows.len() as f64
    }
}

#[tokio::main]
async fn main() {
    if std::env::var("BENCH_ROLE").as_deref() == Ok("bare-proxy") {
        let config = std::env::args().nth(1).expect("config path");
        return run_bare_proxy(&config).await;
    }
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

    // Each server has its own folder and store.
    let governed_dir = gateway_dir(&upstream_url, false);
    let budgeted_dir = gateway_dir(&upstream_url, true);
    let bare_dir = gateway_dir(&upstream_url, false);
    let make_key = |dir: &tempfile::TempDir| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(dir.path().join("tollgate.toml"))
            .args(["keys", "create", "--team", "bench", "--org", "bench", "--json"])
            .output()
            .expect("keys create");
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("key JSON");
        key["secret"].as_str().expect("secret").to_string()
    };
    let key = make_key(&governed_dir);
    let budget_key = make_key(&budgeted_dir);
    let serve = |dir: &tempfile::TempDir| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.arg("--config").arg(dir.path().join("tollgate.toml")).arg("serve").env("TOLLGATE_LOG", "warn");
        cmd
    };
    let (_governed, governed_base) = start_server(serve(&governed_dir)).await;
    let (_budgeted, budgeted_base) = start_server(serve(&budgeted_dir)).await;
    let budgeted_url = format!("{budgeted_base}/mcp");
    wait_for_tool(&budgeted_url, Some(&budget_key)).await;
    let mut bare_cmd = tokio::process::Command::new(std::env::current_exe().expect("bench exe"));
    bare_cmd.arg(bare_dir.path().join("tollgate.toml")).env("BENCH_ROLE", "bare-proxy").env("TOLLGATE_LOG", "warn");
    let (_bare, bare_base) = start_server(bare_cmd).await;
    let governed_url = format!("{governed_base}/mcp");
    let bare_url = format!("{bare_base}/mcp");
    wait_for_tool(&governed_url, Some(&key)).await;
    wait_for_tool(&bare_url, None).await;

    let clients = [
        client(&upstream_url, None).await,
        client(&bare_url, None).await,
        client(&governed_url, Some(&key)).await,
        client(&budgeted_url, Some(&budget_key)).await,
    ];
    let mut paths = [
        Path3 { name: "direct", tool: "echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "bare proxy", tool: "bench__echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "governed", tool: "bench__echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "budgeted", tool: "bench__echo", lat: Vec::new(), tput: Vec::new() },
    ];
    // Warm up every path.
    for (c, p) in clients.iter().zip(&paths) {
        latencies(c.peer(), p.tool, 200).await;
    }
    for _ in 0..rounds {
        for (c, p) in clients.iter().zip(paths.iter_mut()) {
            p.lat.extend(latencies(c.peer(), p.tool, 400).await);
        }
        for conc in [16usize, 64] {
            for (c, p) in clients.iter().zip(paths.iter_mut()) {
                let t = throughput(c.peer(), p.tool, conc, 4096).await;
                p.tput.push((conc, t));
            }
        }
    }
    for p in paths.iter_mut() {
        p.lat.sort();
    }
    println!(
        "upstream responses: {mode}; gateway threads: {}",
        std::env::var("BENCH_GATEWAY_THREADS").unwrap_or_else(|_| "one per core".into())
    );
    println!(
        "machine: {} cores; rounds: {rounds}; calls at c=1 per path: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        paths[0].lat.len()
    );
    for p in &paths {
        println!(
            "latency c=1   {:<10} p50 {:>8.1} us  p99 {:>8.1} us",
            p.name,
            us(pct(&p.lat, 0.5)),
            us(pct(&p.lat, 0.99))
        );
    }
    let added = |a: &Path3, b: &Path3, q: f64| us(pct(&a.lat, q)) - us(pct(&b.lat, q));
    let [direct, bare, governed, budgeted] = &paths;
    println!(
        "added p50/p99  proxy (bare - direct)        {:>8.1} / {:>8.1} us",
        added(bare, direct, 0.5),
        added(bare, direct, 0.99)
    );
    println!(
        "added p50/p99  governance (governed - bare) {:>8.1} / {:>8.1} us",
        added(governed, bare, 0.5),
        added(governed, bare, 0.99)
    );
    println!(
        "added p50/p99  total (governed - direct)    {:>8.1} / {:>8.1} us",
        added(governed, direct, 0.5),
        added(governed, direct, 0.99)
    );
    println!(
        "added p50/p99  budget hold (budgeted - governed) {:>6.1} / {:>8.1} us",
        added(budgeted, governed, 0.5),
        added(budgeted, governed, 0.99)
    );
    stage_report("governed", &governed_dir).await;
    stage_report("budgeted", &budgeted_dir).await;
    for conc in [16usize, 64] {
        let (d, b, g, h) = (direct.tput(conc), bare.tput(conc), governed.tput(conc), budgeted.tput(conc));
        println!(
            "throughput c={conc:<3} direct {d:>7.0}/s  bare {b:>7.0}/s  governed {g:>7.0}/s  budgeted {h:>7.0}/s  bare/direct {:.2}  governed/direct {:.2}  governed/bare {:.2}  budgeted/governed {:.2}",
            b / d,
            g / d,
            g / b,
            h / g
        );
    }
}
