//! `/v1/chat/completions` through tollgate vs straight to the provider, in one run.
//!
//! `cargo bench --bench llm` starts the tests' LLM provider (OpenAI wire
//! format, in this process) and the real `tollgate serve` binary in front of
//! it, with a key, an allow grant on `llm__chat` and a token budget (so every
//! call takes a hold and settles it, with its intent and outcome audit
//! records). A reqwest client measures, alternating paths in rounds:
//! - non-streaming: latency of a whole completion at concurrency 1, and
//!   completions per second at concurrency 16;
//! - streaming: time to the first content chunk (TTFT) at concurrency 1.

#[allow(dead_code)]
#[path = "../tests/it/provider.rs"]
mod provider;
#[path = "common/stages.rs"]
mod stages;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

fn body(stream: bool) -> Value {
    json!({"model": "bench", "max_tokens": 50, "stream": stream,
        "messages": [{"role": "user", "content": "hello from the benchmark"}]})
}

async fn whole(client: &reqwest::Client, url: &str, key: Option<&str>) {
    let mut r = client.post(url).json(&body(false));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.expect("sent");
    assert!(resp.status().is_success(), "status {}", resp.status());
    let v: Value = resp.json().await.expect("json");
    assert!(v["choices"][0]["message"]["content"].as_str().is_some_and(|t| t.starts_with("echo")), "{v}");
}

/// Time to the first content chunk; the rest of the stream is read too.
async fn first_token(client: &reqwest::Client, url: &str, key: Option<&str>) -> Duration {
    let started = Instant::now();
    let mut r = client.post(url).json(&body(true));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let mut resp = r.send().await.expect("sent");
    assert!(resp.status().is_success(), "status {}", resp.status());
    let mut seen = String::new();
    let mut ttft = None;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if ttft.is_none() && seen.contains("\"content\":\"echo") {
            ttft = Some(started.elapsed());
        }
    }
    assert!(seen.contains("[DONE]"));
    ttft.expect("a content chunk")
}

async fn throughput(client: &reqwest::Client, url: &str, key: Option<&str>, concurrency: usize, total: usize) -> f64 {
    let start = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key) = (client.clone(), url.to_string(), key.map(str::to_string));
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                whole(&client, &url, key.as_deref()).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per * concurrency) as f64 / start.elapsed().as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn gateway_dir(provider: &provider::Provider) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("tool-manifests")).expect("dir");
    std::fs::create_dir_all(p.join("policies")).expect("dir");
    std::fs::write(p.join("tollgate.toml"), "[server]\nlisten = \"127.0.0.1:0\"\n").expect("write");
    let manifest = provider.manifest(
        "bench-llm",
        "openai",
        "timeout = \"10s\"",
        &[("bench", "id = \"ok\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"2\"")],
    );
    std::fs::write(p.join("tool-manifests/llm.toml"), manifest).expect("write");
    std::fs::write(
        p.join("policies/bench.toml"),
        "[[grant]]\nid = \"bench\"\nprincipals = [\"team:bench\"]\ntools = [\"llm__chat\"]\neffect = \"allow\"\n\
         [[budget]]\nid = \"bench-tokens\"\nscope = \"team:bench\"\nunit = \"tokens\"\nlimit = \"1000000000\"\nperiod = \"daily\"\n",
    )
    .expect("write");
    dir
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let provider = provider::Provider::start().await;
    let dir = gateway_dir(&provider);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(dir.path().join("tollgate.toml"))
        .args(["keys", "create", "--team", "bench", "--org", "bench", "--json"])
        .output()
        .expect("keys create");
    let key: Value = serde_json::from_slice(&out.stdout).expect("key JSON");
    let key = key["secret"].as_str().expect("secret").to_string();
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(dir.path().join("tollgate.toml"))
        .arg("serve")
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tollgate serve");
    let mut lines = BufReader::new(gateway.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines.next_line().await.expect("read").expect("gateway exited");
        if let Some(u) = line.strip_prefix("tollgate listening on ") {
            break u.trim().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let client = reqwest::Client::new();
    let direct = format!("{}/v1/chat/completions", provider.url);
    let governed = format!("{base}/v1/chat/completions");
    let paths: [(&str, &str, Option<&str>); 2] = [("direct", &direct, None), ("tollgate", &governed, Some(&key))];
    for (_, url, key) in paths {
        for _ in 0..100 {
            whole(&client, url, key).await;
            first_token(&client, url, key).await;
        }
    }
    let mut lat: [Vec<Duration>; 2] = Default::default();
    let mut ttft: [Vec<Duration>; 2] = Default::default();
    let mut tput: [Vec<f64>; 2] = Default::default();
    for _ in 0..rounds {
        for (i, (_, url, key)) in paths.iter().enumerate() {
            for _ in 0..300 {
                let t = Instant::now();
                whole(&client, url, *key).await;
                lat[i].push(t.elapsed());
            }
            for _ in 0..300 {
                ttft[i].push(first_token(&client, url, *key).await);
            }
            tput[i].push(throughput(&client, url, *key, 16, 2048).await);
        }
    }
    println!("rounds: {rounds}; 300 calls per path per round for each latency, 2,048 at c=16 for throughput\n");
    println!("| path | p50 whole | p99 whole | p50 TTFT | p99 TTFT | completions/s c=16 |");
    println!("|---|---|---|---|---|---|");
    let mut p50 = [0.0; 2];
    let mut p99 = [0.0; 2];
    let mut t50 = [0.0; 2];
    let mut t99 = [0.0; 2];
    let mut cps = [0.0; 2];
    for i in 0..2 {
        lat[i].sort();
        ttft[i].sort();
        p50[i] = us(pct(&lat[i], 0.5));
        p99[i] = us(pct(&lat[i], 0.99));
        t50[i] = us(pct(&ttft[i], 0.5));
        t99[i] = us(pct(&ttft[i], 0.99));
        cps[i] = tput[i].iter().sum::<f64>() / tput[i].len() as f64;
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} |",
            paths[i].0, p50[i], p99[i], t50[i], t99[i], cps[i]
        );
    }
    println!();
    println!("added p50 whole: +{:.0} µs, p99: +{:.0} µs", p50[1] - p50[0], p99[1] - p99[0]);
    println!("added p50 TTFT: +{:.0} µs, p99: +{:.0} µs", t50[1] - t50[0], t99[1] - t99[0]);
    println!("completions/s tollgate / direct, c=16: {:.2}", cps[1] / cps[0]);
    drop(gateway);
    stage_report(&dir).await;
}

/// p50 of each pipeline stage, from the gateway's own audit records.
async fn stage_report(dir: &tempfile::TempDir) {
    let config = tollgate::config::load(&dir.path().join("tollgate.toml")).expect("config");
    let store = tollgate::app::open_store(&config).await.expect("store");
    let filter = tollgate::store::AuditFilter { kind: Some("call".into()), ..Default::default() };
    let rows = store.audit(&filter).await.expect("audit");
    stages::report_stages("all", &rows);
}
