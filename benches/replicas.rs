//! Governed calls on SQLite vs PostgreSQL, one and two replicas, in one run
//! against the same upstream.
//!
//! `cargo bench --bench replicas` needs a PostgreSQL server
//! (`TOLLGATE_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/test`):
//! it creates a database per PostgreSQL path and drops them at the end. Every
//! gateway is the real `tollgate serve` binary with a key, a grant, schema
//! validation, a budget hold and settle per call (the store's hot path) and
//! the durable audit trail. Paths are measured alternately in rounds; the
//! two-replica path spreads its clients evenly over both replicas.

#[path = "common/mcp.rs"]
mod mcp;

use mcp::*;
use sqlx::Connection;

struct Path {
    name: &'static str,
    /// One client per replica.
    clients: Vec<rmcp::service::RunningService<rmcp::RoleClient, Quiet>>,
    tool: &'static str,
    lat: Vec<std::time::Duration>,
    tput: Vec<(usize, f64)>,
}

impl Path {
    fn tput(&self, c: usize) -> f64 {
        let rows: Vec<f64> = self.tput.iter().filter(|r| r.0 == c).map(|r| r.1).collect();
        rows.iter().sum::<f64>() / rows.len() as f64
    }

    fn peers(&self) -> Vec<rmcp::Peer<rmcp::RoleClient>> {
        self.clients.iter().map(|c| c.peer().clone()).collect()
    }
}

/// A database of its own on the server; dropped by [`drop_database`].
async fn create_database(admin: &str, name: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("PostgreSQL answers (TOLLGATE_TEST_PG)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await;
    }
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let admin = std::env::var("TOLLGATE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (_fixture, upstream_url) = fixture("sse").await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (db1, db2) = (format!("tollgate_bench1_{run}"), format!("tollgate_bench2_{run}"));
    let pg1_url = create_database(&admin, &db1).await;
    let pg2_url = create_database(&admin, &db2).await;

    let sqlite_dir = gateway_dir(&upstream_url, true, None);
    let pg1_dir = gateway_dir(&upstream_url, true, Some(&pg1_url));
    let pg2_dir = gateway_dir(&upstream_url, true, Some(&pg2_url));
    let (sqlite_key, pg1_key, pg2_key) = (make_key(&sqlite_dir), make_key(&pg1_dir), make_key(&pg2_dir));
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for dir in [&sqlite_dir, &pg1_dir, &pg2_dir, &pg2_dir] {
        let (child, base) = start_server(serve(dir)).await;
        servers.push(child);
        urls.push(format!("{base}/mcp"));
    }
    for (url, key) in urls.iter().zip([&sqlite_key, &pg1_key, &pg2_key, &pg2_key]) {
        wait_for_tool(url, Some(key)).await;
    }
    let mut paths = vec![
        Path {
            name: "direct",
            clients: vec![client(&upstream_url, None).await],
            tool: "echo",
            lat: vec![],
            tput: vec![],
        },
        Path {
            name: "sqlite x1",
            clients: vec![client(&urls[0], Some(&sqlite_key)).await],
            tool: "bench__echo",
            lat: vec![],
            tput: vec![],
        },
        Path {
            name: "postgres x1",
            clients: vec![client(&urls[1], Some(&pg1_key)).await],
            tool: "bench__echo",
            lat: vec![],
            tput: vec![],
        },
        Path {
            name: "postgres x2",
            clients: vec![client(&urls[2], Some(&pg2_key)).await, client(&urls[3], Some(&pg2_key)).await],
            tool: "bench__echo",
            lat: vec![],
            tput: vec![],
        },
    ];
    for p in &paths {
        for c in &p.clients {
            latencies(c.peer(), p.tool, 200).await;
        }
    }
    for _ in 0..rounds {
        for p in paths.iter_mut() {
            // At concurrency 1 a call goes to one replica; alternate between them.
            for c in &p.clients {
                let n = 400 / p.clients.len();
                p.lat.extend(latencies(c.peer(), p.tool, n).await);
            }
        }
        for conc in [16usize, 64] {
            for p in paths.iter_mut() {
                let t = throughput(&p.peers(), p.tool, conc, 4096).await;
                p.tput.push((conc, t));
            }
        }
    }
    for p in paths.iter_mut() {
        p.lat.sort();
    }
    println!(
        "machine: {} cores; rounds: {rounds}; calls at c=1 per path: {}; every governed call holds and settles a budget",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        paths[0].lat.len()
    );
    let direct_p50 = us(pct(&paths[0].lat, 0.5));
    let direct_p99 = us(pct(&paths[0].lat, 0.99));
    for p in &paths {
        let (p50, p99) = (us(pct(&p.lat, 0.5)), us(pct(&p.lat, 0.99)));
        println!(
            "latency c=1   {:<12} p50 {p50:>8.1} us  p99 {p99:>8.1} us  added p50/p99 {:>7.1} / {:>7.1} us",
            p.name,
            p50 - direct_p50,
            p99 - direct_p99
        );
    }
    for conc in [16usize, 64] {
        let [d, s, p1, p2] = [0, 1, 2, 3].map(|i| paths[i].tput(conc));
        println!(
            "throughput c={conc:<3} direct {d:>7.0}/s  sqlite x1 {s:>7.0}/s  postgres x1 {p1:>7.0}/s  postgres x2 {p2:>7.0}/s  \
             sqlite/direct {:.2}  postgres x1/sqlite {:.2}  postgres x2/x1 {:.2}",
            s / d,
            p1 / s,
            p2 / p1
        );
    }
    drop(paths);
    for mut s in servers {
        let _ = s.kill().await;
    }
    drop_database(&admin, &db1).await;
    drop_database(&admin, &db2).await;
}
