//! Several `tollgate serve` processes (replicas) on one PostgreSQL: what
//! holds on one process holds across them. Each test has a database of its
//! own; the replicas are the real binary, the upstream a real MCP server
//! over HTTP shared by all of them, the agents real MCP clients.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tollgate::store::{Durability, Store};

use crate::harness::*;
use crate::pg;

/// Bound on what a notification must beat: the followers' backstop
/// (`store::changes::BACKSTOP`) is twice as long, so a pass means the
/// notification, not the backstop, delivered the change.
const NOTIFIED: Duration = Duration::from_secs(5);

/// echo costs 0.01: a budget of 1.00 admits exactly 100 calls.
fn priced(url: &str) -> String {
    format!("{}[tools.echo]\ncost = \"0.01\"\n", remote_manifest("fs", "http", url))
}

/// A folder for the replicas (config, manifests, policy) on a fresh database.
struct Cluster {
    db: pg::Database,
    dir: tempfile::TempDir,
    up: Listening,
    replicas: Vec<Served>,
}

impl Cluster {
    async fn start(n: usize, policy: &str) -> Cluster {
        let up = fixture_http("fs").await;
        let db = pg::Database::create().await;
        let dir = config_dir(&[("fs", priced(&up.url))]);
        std::fs::write(dir.path().join("tollgate.toml"), format!("store = \"{}\"\n", db.url)).unwrap();
        std::fs::write(dir.path().join("policies/all.toml"), policy).unwrap();
        let mut cluster = Cluster { db, dir, up, replicas: Vec::new() };
        for _ in 0..n {
            cluster.replicas.push(cluster.replica().await);
        }
        cluster
    }

    /// One more replica, once it hears the others' changes.
    async fn replica(&self) -> Served {
        let served = serve_binary(self.dir.path(), Stdio::null()).await;
        let ready = format!("{}/readyz", served.base);
        eventually("the replica listens for store notifications", || {
            let ready = ready.clone();
            async move {
                let r = reqwest::get(&ready).await.ok()?;
                let body: Value = r.json().await.ok()?;
                (body["store"] == json!({"backend": "postgres", "notifications": true})).then_some(())
            }
        })
        .await;
        served
    }

    fn url(&self, i: usize) -> String {
        self.replicas[i].mcp_url()
    }

    fn base(&self, i: usize) -> &str {
        &self.replicas[i].base
    }

    fn key(&self, team: &str, role: Option<&str>) -> (String, String) {
        let mut args = vec!["keys", "create", "--team", team, "--org", "acme", "--json"];
        if let Some(r) = role {
            args.extend(["--role", r]);
        }
        let v: Value = serde_json::from_str(&tollgate_cli(self.dir.path(), &args)).unwrap();
        (v["secret"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
    }

    /// The database, opened as one more process would.
    async fn store(&self) -> Store {
        Store::open(&self.db.url, std::path::Path::new("."), Durability::Normal).await.unwrap()
    }

    fn audit_verifies(&self) {
        let verify = tollgate_cli(self.dir.path(), &["audit", "verify"]);
        assert!(verify.starts_with("ok: "), "{verify}");
    }
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default())
}

fn budget_policy() -> String {
    format!("{ALLOW_ALL}\n[[budget]]\nid = \"eng\"\nscope = \"team:eng\"\nlimit = \"1.00\"\n")
}

/// 2,000 calls at once, spread over every replica's agents; returns
/// (executed, refused by the budget).
async fn race_across(c: &Cluster, key: &str) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicUsize::new(0));
    let agents_per_replica = 8;
    let agents = agents_per_replica * c.replicas.len();
    let mut tasks = Vec::new();
    for a in 0..agents {
        let era = if a % 2 == 0 { Era::Modern } else { Era::Legacy };
        let (agent, _) = http_agent_with(&c.url(a % c.replicas.len()), era, None, Some(key)).await;
        let agent = Arc::new(agent);
        for _ in 0..2000 / agents {
            let (agent, ok, over) = (agent.clone(), ok.clone(), over.clone());
            tasks.push(tokio::spawn(async move {
                let r = agent.peer().call_tool(call("fs__echo", json!({"message": "x"}))).await.expect("answered");
                if r.is_error == Some(true) {
                    assert!(text_of(&r).contains("budget `eng`"), "{}", text_of(&r));
                    over.fetch_add(1, Ordering::Relaxed);
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    assert_eq!(tasks.len(), 2000 / agents * agents);
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), over.load(Ordering::Relaxed))
}

async fn exactly_one_hundred_of_two_thousand_execute_on(replicas: usize) {
    let c = Cluster::start(replicas, &budget_policy()).await;
    let (key, _) = c.key("eng", None);
    let (ok, over) = race_across(&c, &key).await;
    let total = ok + over;
    assert_eq!((ok, over), (100, total - 100), "exactly 100 admitted");
    assert_eq!(upstream_calls(&c.up.url, "echo").await, 100, "exactly 100 executed at the upstream");
    let store = c.store().await;
    let usage =
        store.budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start).await.unwrap();
    let eng = usage.iter().find(|u| u.budget.id == "eng").unwrap();
    assert_eq!((eng.spent, eng.held), (1_000_000, 0), "spent = 100 calls, nothing left held");
    c.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn two_replicas_two_thousand_calls_a_budget_for_one_hundred_exactly_one_hundred_execute() {
    exactly_one_hundred_of_two_thousand_execute_on(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn three_replicas_two_thousand_calls_a_budget_for_one_hundred_exactly_one_hundred_execute() {
    exactly_one_hundred_of_two_thousand_execute_on(3).await;
}

const APPROVAL_POLICY: &str = r#"org = "acme"

[[grant]]
id = "echo-needs-approval"
principals = ["team:eng"]
tools = ["fs__echo"]
effect = "approve"
approval = { timeout = "10m" }

[[budget]]
id = "eng"
scope = "team:eng"
limit = "5.00"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn an_approval_asked_through_one_replica_and_decided_through_another_runs_once_for_the_waiting_agent() {
    let c = Cluster::start(2, APPROVAL_POLICY).await;
    let (key, _) = c.key("eng", None);
    let (approver, _) = c.key("security", Some("approver"));
    let (agent, _) = http_agent_with(&c.url(0), Era::Legacy, None, Some(&key)).await;
    let waiting =
        tokio::spawn(async move { agent.peer().call_tool(call("fs__echo", json!({"message": "ship it"}))).await });

    // The approver's console talks to the other replica.
    let http = reqwest::Client::new();
    let pending_url = format!("{}/v1/approvals?status=pending", c.base(1));
    let id = eventually("the action is pending on replica B", || {
        let (http, url, approver) = (http.clone(), pending_url.clone(), approver.clone());
        async move {
            let body: Value = http.get(&url).bearer_auth(&approver).send().await.ok()?.json().await.ok()?;
            body["approvals"].as_array()?.first()?["id"].as_str().map(str::to_string)
        }
    })
    .await;
    assert_eq!(upstream_calls(&c.up.url, "echo").await, 0, "nothing runs before the decision");
    let decided = http
        .post(format!("{}/v1/approvals/{id}/decision", c.base(1)))
        .bearer_auth(&approver)
        .json(&json!({"decision": "approve", "reason": "reviewed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200, "{}", decided.text().await.unwrap_or_default());

    // Replica A's agent, still waiting on its open call, gets the result:
    // woken by B's notification, well before A's follower would look on its
    // own (`store::changes::BACKSTOP`, 10 s).
    let result = tokio::time::timeout(NOTIFIED, waiting).await.expect("released").unwrap().expect("the call completes");
    assert_eq!(text_of(&result), "echo: ship it");
    assert_eq!(upstream_calls(&c.up.url, "echo").await, 1, "executed once, by one replica");
    let store = c.store().await;
    let row = store.approval(&id).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.execution.as_str(), row.reported), ("approved", "done", true));
    let outcomes = store
        .audit(&tollgate::store::AuditFilter { kind: Some("call".into()), ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.body.contains(&id))
        .count();
    assert_eq!(outcomes, 1, "one outcome record for the one execution");
    c.audit_verifies();
}

fn echo_grant() -> Value {
    json!({"id": "api-echo", "principals": ["team:eng"], "tools": ["fs__echo"], "effect": "allow"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_grant_or_key_revoked_through_one_replica_refuses_the_next_call_on_another() {
    // The files allow nothing with echo: the API grant made through B does.
    let files = "[[grant]]\nid = \"file-add\"\norg = \"acme\"\nprincipals = [\"team:eng\"]\ntools = [\"fs__add\"]\neffect = \"allow\"\n";
    let c = Cluster::start(2, files).await;
    let (admin, _) = c.key("ops", Some("admin"));
    let (key, key_id) = c.key("eng", None);
    let http = reqwest::Client::new();
    let api = |i: usize, path: &str| format!("{}/admin/v1{path}", c.base(i));

    let made = http.post(api(1, "/grants")).bearer_auth(&admin).json(&echo_grant()).send().await.unwrap();
    assert_eq!(made.status(), 201);
    // The next call on A is allowed: A is never behind a change already answered.
    let (legacy, mut heard) = http_agent_with(&c.url(0), Era::Legacy, None, Some(&key)).await;
    let (modern, _) = http_agent_with(&c.url(0), Era::Modern, None, Some(&key)).await;
    let ok = modern.peer().call_tool(call("fs__echo", json!({"message": "hi"}))).await.unwrap();
    assert_eq!(text_of(&ok), "echo: hi");
    assert!(legacy.peer().list_all_tools().await.unwrap().iter().any(|t| t.name == "fs__echo"));
    while heard.try_recv().is_ok() {}

    let gone = http.request(Method::DELETE, api(1, "/grants/api-echo")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(gone.status(), 204);
    for agent in [&modern, &legacy] {
        let refused = match agent.peer().call_tool(call("fs__echo", json!({"message": "hi"}))).await {
            Err(e) => e.to_string(),
            Ok(r) => {
                assert_eq!(r.is_error, Some(true), "the call must not run: {r:?}");
                text_of(&r)
            }
        };
        assert!(refused.contains("fs__echo"), "{refused}");
    }
    assert_eq!(upstream_calls(&c.up.url, "echo").await, 1, "only the call made while granted ran");
    // The open session on A is told its list changed (on B's notification:
    // A receives no request meanwhile).
    tokio::time::timeout(NOTIFIED, async {
        while let Some(h) = heard.recv().await {
            if matches!(h, Heard::ToolsChanged) {
                return;
            }
        }
    })
    .await
    .expect("the agent on A hears tools/list_changed");
    assert!(!legacy.peer().list_all_tools().await.unwrap().iter().any(|t| t.name == "fs__echo"));

    // A key revoked through B: A refuses its next request at once.
    let add = modern.peer().call_tool(call("fs__add", json!({"a": 1, "b": 2}))).await.unwrap();
    assert_ne!(add.is_error, Some(true), "{add:?}");
    let revoked =
        http.request(Method::DELETE, api(1, &format!("/keys/{key_id}"))).bearer_auth(&admin).send().await.unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let after = http
        .post(c.url(0))
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "a revoked key is refused by the other replica");
    assert!(modern.peer().call_tool(call("fs__add", json!({"a": 1, "b": 2}))).await.is_err());
    c.audit_verifies();
}

async fn held(store: &Store) -> i64 {
    let usage =
        store.budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start).await.unwrap();
    usage.iter().find(|u| u.budget.id == "eng").map_or(0, |u| u.held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn kill_9_of_one_replica_under_load_the_others_serve_its_holds_are_released_and_the_audit_verifies() {
    let policy = format!("{ALLOW_ALL}\n[[budget]]\nid = \"eng\"\nscope = \"team:eng\"\nlimit = \"1000.00\"\n");
    let c = Cluster::start(2, &policy).await;
    // `hang` never answers and may take ten minutes: its holds outlive the
    // test unless the victim's death releases them.
    let manifest = format!("{}[tools.hang]\ncost = \"0.50\"\ntimeout = \"10m\"\n", priced(&c.up.url));
    std::fs::write(c.dir.path().join("tool-manifests/fs.toml"), manifest).unwrap();
    let victim = c.replica().await;
    let (key, _) = c.key("eng", None);
    let store = c.store().await;

    // The victim has four calls in flight, each holding 0.50.
    let mut hanging = Vec::new();
    for _ in 0..4 {
        let (agent, _) = http_agent_with(&victim.mcp_url(), Era::Modern, None, Some(&key)).await;
        hanging.push(tokio::spawn(async move { agent.peer().call_tool(call("fs__hang", json!({}))).await }));
    }
    eventually("the victim holds its four calls", || {
        let store = store.clone();
        async move { (held(&store).await == 2_000_000).then_some(()) }
    })
    .await;

    // Load on every replica; the victim dies in the middle of it.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (agent, _) = http_agent_with(&c.url(w % 2), Era::Modern, None, Some(&key)).await;
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            for n in 0..150 {
                let r = agent.peer().call_tool(call("fs__echo", json!({"message": format!("w{w}-{n}")}))).await;
                let r = r.expect("a surviving replica answers");
                assert_eq!(text_of(&r), format!("echo: w{w}-{n}"));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // What the victim answered before it died: each must be in the chain.
    let victim_answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut victim_load = Vec::new();
    for a in 0..4 {
        let (agent, _) = http_agent_with(&victim.mcp_url(), Era::Legacy, None, Some(&key)).await;
        let answered = victim_answered.clone();
        victim_load.push(tokio::spawn(async move {
            for n in 0.. {
                let message = format!("v{a}-{n}");
                match agent.peer().call_tool(call("fs__echo", json!({"message": message}))).await {
                    Ok(r) if text_of(&r) == format!("echo: {message}") => answered.lock().unwrap().push(message),
                    _ => return,
                }
            }
        }));
    }
    eventually("load is flowing", || {
        let a = answered.clone();
        async move { (a.load(Ordering::Relaxed) >= 100).then_some(()) }
    })
    .await;
    let mut child = victim.child;
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    for w in workers {
        tokio::time::timeout(WAIT, w).await.expect("survivors' load done").expect("no surviving replica failed a call");
    }
    // The victim's own agents are left to their client's reconnect logic.
    victim_load.iter().for_each(|t| t.abort());
    hanging.iter().for_each(|t| t.abort());
    assert_eq!(answered.load(Ordering::Relaxed), 8 * 150);

    // The survivors keep serving, new agents included.
    for i in 0..c.replicas.len() {
        let (agent, _) = http_agent_with(&c.url(i), Era::Legacy, None, Some(&key)).await;
        let r = agent.peer().call_tool(call("fs__echo", json!({"message": "after"}))).await.unwrap();
        assert_eq!(text_of(&r), "echo: after");
    }
    // A survivor's sweep finds the victim's liveness lock gone and releases
    // its holds, minutes before they would expire.
    eventually("the victim's holds are released", || {
        let store = store.clone();
        async move { (held(&store).await == 0).then_some(()) }
    })
    .await;
    // Nothing committed is lost with the victim: every call it answered has
    // its outcome record.
    let outcomes =
        store.audit(&tollgate::store::AuditFilter { kind: Some("call".into()), ..Default::default() }).await.unwrap();
    let recorded: std::collections::HashSet<String> = outcomes
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter(|b| b["status"] == "ok")
        .filter_map(|b| b["arguments"]["message"].as_str().map(str::to_string))
        .collect();
    let victim_answered = victim_answered.lock().unwrap().clone();
    assert!(!victim_answered.is_empty(), "the victim answered calls before it died");
    let lost: Vec<&String> = victim_answered.iter().filter(|m| !recorded.contains(*m)).collect();
    assert!(lost.is_empty(), "answered by the victim but not recorded: {lost:?}");
    // Every call the victim dispatched is known: its intent is in the chain.
    let intents = store
        .audit(&tollgate::store::AuditFilter { kind: Some("call.intent".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(intents.iter().filter(|r| r.tool.as_deref() == Some("fs__hang")).count() >= 4);
    c.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_rate_limit_holds_across_replicas() {
    let policy = "[[grant]]\nid = \"echo-ten-an-hour\"\nprincipals = [\"team:eng\"]\ntools = [\"fs__echo\"]\neffect = \"allow\"\nrate = \"10/hour\"\n";
    let c = Cluster::start(2, policy).await;
    let (key, _) = c.key("eng", None);
    let mut agents = Vec::new();
    for i in 0..2 {
        agents.push(Arc::new(http_agent_with(&c.url(i), Era::Modern, None, Some(&key)).await.0));
    }
    let calls = (0..30).map(|n| {
        let agent = agents[n % 2].clone();
        async move { agent.peer().call_tool(call("fs__echo", json!({"message": "x"}))).await.unwrap() }
    });
    let results = futures::future::join_all(calls).await;
    let limited: Vec<_> = results.iter().filter(|r| r.is_error == Some(true)).collect();
    assert_eq!(results.len() - limited.len(), 10, "ten calls an hour, whichever replica serves them");
    assert!(limited.iter().all(|r| text_of(r).contains("rate limit of grant `echo-ten-an-hour`")));
    assert_eq!(upstream_calls(&c.up.url, "echo").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn a_legacy_session_lives_on_its_replica_another_says_404_and_a_new_session_there_works() {
    let c = Cluster::start(2, ALLOW_ALL).await;
    let (key, _) = c.key("eng", None);
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let post = |url: String, body: &Value, session: Option<&str>| {
        let mut req = http
            .post(url)
            .bearer_auth(&key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let opened = post(c.url(0), &init, None).await.unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let elsewhere = post(c.url(1), &list, Some(&session)).await.unwrap();
    assert_eq!(elsewhere.status(), 404, "the other replica does not know the session");
    // The client starts over on the replica it reached: that works.
    let (agent, _) = http_agent_with(&c.url(1), Era::Legacy, None, Some(&key)).await;
    let r = agent.peer().call_tool(call("fs__echo", json!({"message": "again"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: again");
}

/// docs/operations.md's replicas block, run as written with bash (createdb,
/// two `serve` in the background, curl), on a database of its own: the
/// block's database name is the one thing changed. Both replicas answer
/// ready on PostgreSQL with notifications, and the key it made is in the
/// shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn the_replicas_docs_block_runs_as_written() {
    let block = doc_block("docs/operations.md", "replicas");
    let name = format!("tollgate_doc_{}", uuid::Uuid::new_v4().simple());
    let ours = block
        .replace("-U postgres tollgate ", &format!("-U postgres {name} "))
        .replace("5432/tollgate\"", &format!("5432/{name}\""));
    assert_eq!(ours.matches(&name).count(), 2, "the block names its database twice: {block}");
    let work = tempfile::tempdir().unwrap();
    let (ok, out) = run_doc_block(work.path(), &ours, &[]).await;
    // The database goes whatever happened (createdb made it, not pg::Database).
    let admin = pg::admin_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    let keys: Result<i64, _> = {
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/{name}")).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM keys").fetch_one(&mut db).await;
        let _ = sqlx::Connection::close(db).await;
        n
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(ok, "{ours}\n---\n{out}");
    assert_eq!(keys.expect("the key table"), 1, "the key it made is in the shared store");
    // curl prints each /readyz answer without a newline: read JSON values
    // wherever they start.
    let mut ready = Vec::new();
    let mut at = 0;
    while let Some(i) = out[at..].find('{') {
        let mut values = serde_json::Deserializer::from_str(&out[at + i..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                at += i + values.byte_offset();
                if v.get("store").is_some() {
                    ready.push(v);
                }
            }
            _ => at += i + 1,
        }
    }
    assert_eq!(ready.len(), 2, "both replicas answered /readyz: {out}");
    for r in ready {
        assert_eq!(r["store"]["backend"], "postgres", "{r}");
        assert_eq!(r["store"]["notifications"], true, "{r}");
    }
}
