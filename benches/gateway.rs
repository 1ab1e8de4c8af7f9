//! Direct vs bare proxy vs governed, in one run, against the same upstream.
//!
//! `cargo bench --bench gateway` starts `tollgate-fixture` over Streamable
//! HTTP and, each in its own process in front of it:
//! - the governed gateway: the real `tollgate serve` binary, with a key, a
//!   grant, schema validation and the durable audit trail;
//! - the bare proxy: this bench re-executed as a server built from the same
//!   library, edge and forwarding code, but with no governance stages (no
//!   identify, authorize, validate, limit or audit);
//! - the relay: this bench re-executed as an HTTP relay on the same stack
//!   (axum, a pooled reqwest client, the same runtime) that passes bytes
//!   through and knows nothing of MCP: the cost of one more HTTP hop, the
//!   floor under any proxy built this way.
//!
//! An rmcp client on each path reports p50/p99 latency of a trivial `echo`
//! call at concurrency 1 and calls per second at concurrency 16 and 64, with
//! ratios. Paths are measured alternately in rounds so drift affects all alike.
//!
//! The governed paths run the `tollgate` and `tollgate-fixture` binaries at
//! the paths this bench was compiled with (`target/<profile>/...`). To
//! compare two builds, keep each build's bench binary and `tollgate` aside
//! and copy the matching `tollgate` into place before each run: two builds
//! in one target folder otherwise both run the later build's `tollgate`.

#[path = "common/mcp.rs"]
mod mcp;
#[path = "common/stages.rs"]
mod stages;

use std::time::Duration;

use mcp::*;
use rmcp::model::CallToolRequestParams;
use stages::report_stages;

// The allocator `tollgate` itself uses (src/main.rs), so the bare proxy and
// the relay, which run in this binary, are not slowed by another one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        tollgate::pipeline::bench_floor::forward_ungoverned(
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

async fn run_bare_proxy(config: tollgate::config::Config) {
    let store = tollgate::app::open_store(&config).await.expect("store");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = tollgate::app::open(&config, store, shutdown.clone()).await.expect("gateway");
    let router = tollgate::server::http::ungoverned_router(gw.clone(), &config.server, BareProxy { gw });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("tollgate listening on http://{}", listener.local_addr().expect("addr"));
    tollgate::server::http::serve(listener, router, shutdown).await.expect("serve");
}

/// The floor under any proxy on this stack: one more HTTP hop (axum server,
/// pooled reqwest client, the same TCP settings as tollgate) that relays
/// bytes both ways and understands no MCP at all.
async fn run_relay(upstream: String) {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    #[derive(Clone)]
    struct Relay {
        http: reqwest::Client,
        upstream: std::sync::Arc<str>,
    }
    async fn relay(State(r): State<Relay>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        let mut out = r.http.post(&*r.upstream).body(body);
        for name in ["content-type", "accept", "mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id"] {
            if let Some(v) = parts.headers.get(name) {
                out = out.header(name, v);
            }
        }
        let up = out.send().await.expect("upstream");
        let mut resp = Response::builder().status(up.status().as_u16());
        for (k, v) in up.headers() {
            if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                resp = resp.header(k.as_str(), v.as_bytes());
            }
        }
        resp.body(Body::from_stream(up.bytes_stream())).expect("response")
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().expect("client");
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(relay))
        .with_state(Relay { http, upstream: upstream.into() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("tollgate listening on http://{}", listener.local_addr().expect("addr"));
    tollgate::server::http::serve(listener, app, tokio_util::sync::CancellationToken::new()).await.expect("serve");
}

/// p50 of each governance stage, from the governed gateway's own audit
/// records (every allowed call records its stage latencies).
async fn stage_report(path: &str, dir: &tempfile::TempDir) {
    let config = tollgate::config::load(&dir.path().join("tollgate.toml")).expect("config");
    let store = tollgate::app::open_store(&config).await.expect("store");
    let filter = tollgate::store::AuditFilter { kind: Some("call".into()), ..Default::default() };
    let rows = store.audit(&filter).await.expect("audit");
    // The governed path's first 600 calls are its warm-up and first latency
    // round, at concurrency 1.
    report_stages(&format!("{path} c=1"), &rows[..rows.len().min(600)]);
    report_stages(&format!("{path} all"), &rows);
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

fn main() {
    // The server roles (`BENCH_ROLE=relay|bare-proxy <config>`) run on the
    // runtime `tollgate serve` builds from the same config.
    if let Ok(role) = std::env::var("BENCH_ROLE") {
        let path = std::env::args().nth(1).expect("config path");
        let config = tollgate::config::load(std::path::Path::new(&path)).expect("config");
        let runtime = tollgate::cli::runtime(&config.server).expect("runtime");
        return match role.as_str() {
            "relay" => runtime.block_on(run_relay(std::env::args().nth(2).expect("upstream url"))),
            "bare-proxy" => runtime.block_on(run_bare_proxy(config)),
            other => panic!("unknown BENCH_ROLE {other}"),
        };
    }
    tokio::runtime::Runtime::new().expect("runtime").block_on(bench());
}

async fn bench() {
    // BENCH_UPSTREAM=sse (default: the upstream answers every call on an SSE
    // stream, rmcp's default) or json (plain JSON responses).
    let mode = std::env::var("BENCH_UPSTREAM").unwrap_or_else(|_| "sse".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let (_fixture, upstream_url) = fixture(&mode).await;

    // Each server has its own folder and store.
    let governed_dir = gateway_dir(&upstream_url, false, None);
    let budgeted_dir = gateway_dir(&upstream_url, true, None);
    let bare_dir = gateway_dir(&upstream_url, false, None);
    let key = make_key(&governed_dir);
    let budget_key = make_key(&budgeted_dir);
    let (_governed, governed_base) = start_server(serve(&governed_dir)).await;
    let (_budgeted, budgeted_base) = start_server(serve(&budgeted_dir)).await;
    let budgeted_url = format!("{budgeted_base}/mcp");
    wait_for_tool(&budgeted_url, Some(&budget_key)).await;
    let mut bare_cmd = tokio::process::Command::new(std::env::current_exe().expect("bench exe"));
    bare_cmd.arg(bare_dir.path().join("tollgate.toml")).env("BENCH_ROLE", "bare-proxy").env("TOLLGATE_LOG", "warn");
    let (_bare, bare_base) = start_server(bare_cmd).await;
    let mut relay_cmd = tokio::process::Command::new(std::env::current_exe().expect("bench exe"));
    relay_cmd.arg(bare_dir.path().join("tollgate.toml")).arg(&upstream_url).env("BENCH_ROLE", "relay");
    let (_relay, relay_base) = start_server(relay_cmd).await;
    let relay_url = format!("{relay_base}/mcp");
    let governed_url = format!("{governed_base}/mcp");
    let bare_url = format!("{bare_base}/mcp");
    wait_for_tool(&governed_url, Some(&key)).await;
    wait_for_tool(&bare_url, None).await;

    let clients = [
        client(&upstream_url, None).await,
        client(&relay_url, None).await,
        client(&bare_url, None).await,
        client(&governed_url, Some(&key)).await,
        client(&budgeted_url, Some(&budget_key)).await,
    ];
    let mut paths = [
        Path3 { name: "direct", tool: "echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "relay", tool: "echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "bare proxy", tool: "bench__echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "governed", tool: "bench__echo", lat: Vec::new(), tput: Vec::new() },
        Path3 { name: "budgeted", tool: "bench__echo", lat: Vec::new(), tput: Vec::new() },
    ];
    // BENCH_SOAK=<path>:<seconds>[:<concurrency>] (path: direct, relay, bare,
    // governed, budgeted): only that path, at concurrency 1 unless given, for
    // that long, after printing the pids, so a profiler can be attached to
    // the process of interest.
    if let Ok(soak) = std::env::var("BENCH_SOAK") {
        let mut parts = soak.split(':');
        let name = parts.next().unwrap_or_default();
        let secs: u64 = parts.next().and_then(|s| s.parse().ok()).expect("BENCH_SOAK=<path>:<seconds>[:<concurrency>]");
        let conc: usize = parts.next().map_or(1, |c| c.parse().expect("concurrency"));
        let i = ["direct", "relay", "bare", "governed", "budgeted"].iter().position(|p| *p == name).expect("path name");
        println!(
            "soak {name} for {secs}s; pids: fixture {:?} relay {:?} bare {:?} governed {:?} budgeted {:?}",
            _fixture.id(),
            _relay.id(),
            _bare.id(),
            _governed.id(),
            _budgeted.id()
        );
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        if conc > 1 {
            let mut calls = 0;
            while std::time::Instant::now() < until {
                throughput(std::slice::from_ref(clients[i].peer()), paths[i].tool, conc, 16 * conc).await;
                calls += 16 * conc;
            }
            println!("soak {name}: {calls} calls at concurrency {conc}");
            return;
        }
        let mut lat = Vec::new();
        while std::time::Instant::now() < until {
            lat.extend(latencies(clients[i].peer(), paths[i].tool, 200).await);
        }
        lat.sort();
        println!("soak {name}: {} calls, p50 {:.1} us", lat.len(), us(pct(&lat, 0.5)));
        return;
    }
    // Warm up every path.
    for (c, p) in clients.iter().zip(&paths) {
        latencies(c.peer(), p.tool, 200).await;
    }
    for _ in 0..rounds {
        // One call per path in turn, so that the VM's drift (the other
        // core's load, its clock) lands on every path alike: with 400 calls
        // per path in a row, the governed-minus-bare difference swung by
        // ±100 µs between runs.
        for _ in 0..400 {
            for (c, p) in clients.iter().zip(paths.iter_mut()) {
                p.lat.extend(latencies(c.peer(), p.tool, 1).await);
            }
        }
        for conc in [16usize, 64] {
            for (c, p) in clients.iter().zip(paths.iter_mut()) {
                let t = throughput(std::slice::from_ref(c.peer()), p.tool, conc, 4096).await;
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
    let [direct, relay, bare, governed, budgeted] = &paths;
    println!(
        "added p50/p99  HTTP hop (relay - direct)     {:>8.1} / {:>8.1} us",
        added(relay, direct, 0.5),
        added(relay, direct, 0.99)
    );
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
        let (d, r, b, g, h) =
            (direct.tput(conc), relay.tput(conc), bare.tput(conc), governed.tput(conc), budgeted.tput(conc));
        println!(
            "throughput c={conc:<3} direct {d:>7.0}/s  relay {r:>7.0}/s  bare {b:>7.0}/s  governed {g:>7.0}/s  budgeted {h:>7.0}/s  relay/direct {:.2}  bare/direct {:.2}  governed/direct {:.2}  governed/bare {:.2}  budgeted/governed {:.2}",
            r / d,
            b / d,
            g / d,
            g / b,
            h / g
        );
    }
}
