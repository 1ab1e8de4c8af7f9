//! Budget holds: reserve before, settle after, never overspend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use tollgate::store::AuditFilter;

use crate::governance::{call_records, params};
use crate::harness::*;

/// The fixture over HTTP (so the test can count at the upstream), with
/// costs: echo 0.01, add 0.02, hang 0.01 (0.005 if it fails) with a short timeout.
fn priced(url: &str) -> String {
    format!(
        "{}[tools.echo]\ncost = \"0.01\"\n[tools.add]\ncost = \"0.02\"\n[tools.hang]\ncost = \"0.01\"\nfailure_cost = \"0.005\"\ntimeout = \"300ms\"\n[tools.fail]\ncost = \"0.5\"\n",
        remote_manifest("fs", "http", url)
    )
}

fn policy(budgets: &str) -> String {
    format!("{ALLOW_ALL}\n{budgets}")
}

fn budget(id: &str, scope: &str, limit: &str) -> String {
    format!("[[budget]]\nid = \"{id}\"\nscope = \"{scope}\"\nlimit = \"{limit}\"\n")
}

async fn usage(tg: &TestGateway) -> Vec<tollgate::store::UsageRow> {
    tg.gw.store.budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start).await.unwrap()
}

async fn usage_of(tg: &TestGateway, id: &str) -> (i64, i64, i64) {
    let u = usage(tg).await.into_iter().find(|u| u.budget.id == id).expect("budget");
    (u.budget.limit_amount, u.spent, u.held)
}

/// Fires `total` calls of `tool` from `agents` sessions at once; returns
/// (succeeded, refused by a budget).
async fn race(tg: &TestGateway, key: &str, agents: usize, total: usize, tool: &str) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let over = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for a in 0..agents {
        let era = if a % 2 == 0 { Era::Modern } else { Era::Legacy };
        let (agent, _) = http_agent_with(&tg.mcp_url(), era, None, Some(key)).await;
        let agent = Arc::new(agent);
        for _ in 0..total / agents {
            let (agent, ok, over, tool) = (agent.clone(), ok.clone(), over.clone(), tool.to_string());
            tasks.push(tokio::spawn(async move {
                let args = if tool == "fs__add" { json!({"a": 1, "b": 2}) } else { json!({"message": "x"}) };
                let r = agent.peer().call_tool(params(&tool, args)).await.expect("answered");
                if r.is_error == Some(true) {
                    assert!(text_of(&r).contains("budget `"), "{}", text_of(&r));
                    over.fetch_add(1, Ordering::Relaxed);
                } else {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), over.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_calls_against_a_budget_for_one_hundred() {
    let up = fixture_http("fs").await;
    let tg = TestGateway::builder()
        .manifest("fs", priced(&up.url))
        .policy("all", policy(&budget("eng", "team:eng", "1.00")))
        .spawn()
        .await;
    // A sampler reads the ledger throughout the race.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, stop) = (tg.gw.store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                let rows = store
                    .budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start)
                    .await
                    .unwrap();
                for u in rows {
                    assert!(u.spent + u.held <= u.budget.limit_amount, "overspent: {u:?}");
                    assert!(u.held >= 0 && u.spent >= 0, "{u:?}");
                }
                samples += 1;
                tokio::task::yield_now().await;
            }
            samples
        })
    };
    let (ok, over) = race(&tg, &tg.key, 40, 2000, "fs__echo").await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(samples > 10, "the sampler ran during the race ({samples})");
    assert_eq!((ok, over), (100, 1900));
    assert_eq!(upstream_calls(&up.url, "echo").await, 100, "exactly 100 executed at the upstream");
    assert_eq!(usage_of(&tg, "eng").await, (1_000_000, 1_000_000, 0), "spent = 100 calls, held back to zero");
    let records = call_records(&tg).await;
    assert_eq!(records.iter().filter(|r| r["decision"] == "over_budget").count(), 1900);
    let charged = records.iter().find(|r| r["decision"] == "allowed").unwrap();
    assert_eq!(charged["cost"]["held"], "0.010000");
    assert_eq!(charged["cost"]["charged"], "0.010000");
    assert_eq!(charged["hold"]["budgets"], json!(["eng"]));
    assert!(charged["hold"]["id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_budgets_the_tightest_decides_and_none_is_overspent() {
    let up = fixture_http("fs").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tollgate.toml"), "").unwrap();
    let store = tollgate::store::Store::open("sqlite://tollgate.db", dir.path(), Default::default()).await.unwrap();
    let k1 = tollgate::identity::create_key(&store, "acme", "eng", None, None, 0).await.unwrap();
    let k2 = tollgate::identity::create_key(&store, "acme", "eng", None, None, 0).await.unwrap();
    let k3 = tollgate::identity::create_key(&store, "acme", "ops", None, None, 0).await.unwrap();
    store.close().await;
    let budgets = budget("k1", &format!("key:{}", k1.row.id), "0.30")
        + &budget("eng", "team:eng", "0.50")
        + &budget("acme", "org:acme", "0.70");
    let tg = TestGateway::builder()
        .in_dir(dir)
        .manifest("fs", priced(&up.url))
        .policy("all", policy(&budgets))
        .spawn()
        .await;
    assert_eq!(race(&tg, &k1.secret, 4, 40, "fs__echo").await, (30, 10), "key budget: 30 calls");
    assert_eq!(race(&tg, &k2.secret, 4, 40, "fs__echo").await, (20, 20), "team budget: 20 left");
    assert_eq!(race(&tg, &k3.secret, 4, 40, "fs__echo").await, (20, 20), "org budget: 20 left");
    for (id, limit) in [("k1", 300_000), ("eng", 500_000), ("acme", 700_000)] {
        let (l, spent, held) = usage_of(&tg, id).await;
        assert_eq!((l, spent, held), (limit, limit, 0), "{id}");
    }
    assert_eq!(upstream_calls(&up.url, "echo").await, 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_limit_mid_race_admits_exactly_the_calls_it_pays_for() {
    let up = fixture_http("fs").await;
    let tg = TestGateway::builder().manifest("fs", priced(&up.url)).spawn().await;
    tollgate_cli(tg.dir(), &["budgets", "set", "--id", "race", "--scope", "team:eng", "--limit", "0.50"]);
    assert_eq!(race(&tg, &tg.key, 4, 80, "fs__echo").await, (50, 30));
    // The race goes on while the limit is raised by 0.25 (25 calls), with a
    // retried request under the same idempotency key applying once.
    let denied = Arc::new(AtomicUsize::new(0));
    let (agent, _) = tg.agent(Era::Modern).await;
    let agent = Arc::new(agent);
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let (agent, denied) = (agent.clone(), denied.clone());
        tasks.push(tokio::spawn(async move {
            let r = agent.peer().call_tool(params("fs__echo", json!({"message": "x"}))).await.unwrap();
            if r.is_error == Some(true) {
                denied.fetch_add(1, Ordering::Relaxed);
                false
            } else {
                true
            }
        }));
    }
    let dir = tg.dir().to_path_buf();
    let topups = tokio::task::spawn_blocking(move || {
        let a =
            tollgate_cli(&dir, &["budgets", "topup", "--id", "race", "--amount", "0.25", "--idempotency-key", "t-1"]);
        let b =
            tollgate_cli(&dir, &["budgets", "topup", "--id", "race", "--amount", "0.25", "--idempotency-key", "t-1"]);
        (a, b)
    })
    .await
    .unwrap();
    assert!(topups.1.contains("already applied"), "{topups:?}");
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 25, "exactly the calls the top-up pays for");
    assert_eq!(usage_of(&tg, "race").await, (750_000, 750_000, 0));
    assert_eq!(upstream_calls(&up.url, "echo").await, 75);
    // The same key with a different request is refused.
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(tg.dir().join("tollgate.toml"))
        .args(["budgets", "topup", "--id", "race", "--amount", "9.00", "--idempotency-key", "t-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_timed_out_and_cancelled_calls_release_their_holds() {
    let up = fixture_http("fs").await;
    let tg = TestGateway::builder()
        .manifest("fs", priced(&up.url))
        .policy("all", policy(&budget("eng", "team:eng", "10.00")))
        .spawn()
        .await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    // Times out (hang gets 300 ms): the hold is released and only the
    // manifest's failure cost is charged.
    let r = agent.peer().call_tool(params("fs__hang", json!({}))).await;
    assert!(r.is_err() || r.as_ref().unwrap().is_error == Some(true), "{r:?}");
    assert_eq!(usage_of(&tg, "eng").await, (10_000_000, 5_000, 0));
    let records = call_records(&tg).await;
    assert_eq!(records[0]["cost"]["charged"], "0.005000", "{}", records[0]);

    // Fails at the upstream (a tool error): released, nothing charged (no
    // failure cost for `fail`).
    let r = agent.peer().call_tool(params("fs__fail", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(usage_of(&tg, "eng").await, (10_000_000, 5_000, 0));
    assert_eq!(upstream_calls(&up.url, "fail").await, 1);
    let records = call_records(&tg).await;
    assert_eq!(
        (records[1]["status"].as_str(), records[1]["cost"]["held"].as_str()),
        (Some("tool_error"), Some("0.500000"))
    );
    assert_eq!(records[1]["cost"]["charged"], "0.000000");

    // Cancelled by the agent while it runs: released, nothing charged.
    let up2 = fixture_http("fs").await;
    let tg2 = TestGateway::builder()
        .manifest("fs", priced(&up2.url).replace("failure_cost = \"0.005\"\ntimeout = \"300ms\"", "timeout = \"10m\""))
        .policy("all", policy(&budget("eng", "team:eng", "10.00")))
        .spawn()
        .await;
    for era in [Era::Legacy, Era::Modern] {
        let (agent, _) = tg2.agent(era).await;
        let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(params(
            "fs__hang",
            json!({}),
        )));
        let handle = agent
            .peer()
            .send_request_with_option(request, rmcp::service::PeerRequestOptions::no_options())
            .await
            .unwrap();
        wait_for(|| async { usage_of(&tg2, "eng").await.2 }, |held| *held == 10_000).await;
        handle.cancel(Some("agent gave up".into())).await.unwrap();
        let u = wait_for(|| async { usage_of(&tg2, "eng").await }, |u| u.2 == 0).await;
        assert_eq!(u, (10_000_000, 0, 0), "{era:?}");
    }
}

/// Re-evaluates `probe` until `done` holds (bounded by `WAIT`); each probe
/// is a store read, so this waits on the ledger's state, not on time.
async fn wait_for<T, F, Fut>(probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    tokio::time::timeout(WAIT, async {
        loop {
            let v = probe().await;
            if done(&v) {
                return v;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition reached")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_outstanding_holds_are_released_and_charges_stay() {
    let up = fixture_http("fs").await;
    let dir = config_dir(&[("fs", priced(&up.url).replace("timeout = \"300ms\"", "timeout = \"10m\""))]);
    std::fs::write(dir.path().join("policies/budget.toml"), budget("eng", "team:eng", "10.00")).unwrap();
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let mut served = serve_binary(dir.path(), std::process::Stdio::null()).await;
    let (agent, _) = http_agent_with(&served.mcp_url(), Era::Modern, None, Some(&key)).await;
    for _ in 0..3 {
        let r = agent.peer().call_tool(params("fs__echo", json!({"message": "charged"}))).await.unwrap();
        assert_ne!(r.is_error, Some(true));
    }
    // Three calls that never answer hold 0.03 between them.
    let agent = Arc::new(agent);
    for _ in 0..3 {
        let agent = agent.clone();
        tokio::spawn(async move {
            let _ = agent.peer().call_tool(params("fs__hang", json!({}))).await;
        });
    }
    let spend = |dir: std::path::PathBuf| async move {
        let out =
            tokio::task::spawn_blocking(move || tollgate_cli(&dir, &["budgets", "spend", "--json"])).await.unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let b = v.as_array().unwrap().iter().find(|b| b["id"] == "eng").cloned().unwrap();
        (b["spent"].as_i64().unwrap(), b["held"].as_i64().unwrap())
    };
    let d = dir.path().to_path_buf();
    let seen = wait_for(|| spend(d.clone()), |(_, held)| *held == 30_000).await;
    assert_eq!(seen, (30_000, 30_000));
    served.child.start_kill().unwrap();
    served.child.wait().await.unwrap();

    let _restarted = serve_binary(dir.path(), std::process::Stdio::null()).await;
    assert_eq!(spend(dir.path().to_path_buf()).await, (30_000, 0), "no hold left; charged calls stay charged");
    // Only the live process's lock file is left (the CLI runs take none).
    let owners = std::fs::read_dir(dir.path().join("tollgate.db-owners")).unwrap().count();
    assert_eq!(owners, 1);
}

fn ask(who: &tollgate::identity::Principal, money: i64) -> tollgate::budget::Ask<'_> {
    static CALL: std::sync::LazyLock<tollgate::ids::CallId> = std::sync::LazyLock::new(|| "c".into());
    tollgate::budget::Ask {
        principal: who,
        call_id: &CALL,
        tool: "t",
        money,
        tokens: 0,
        ttl: std::time::Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periods_reset_on_the_calendar_by_an_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store = tollgate::store::Store::open("sqlite://t.db", dir.path(), Default::default()).await.unwrap();
    let row = |period: &str, id: &str| tollgate::store::BudgetRow {
        id: id.into(),
        scope: "team:eng".into(),
        org: None,
        unit: tollgate::budget::Unit::Money,
        limit_amount: 2_000,
        period: tollgate::budget::Period::parse(period).unwrap(),
        source: "api".into(),
        updated_at: 0,
    };
    store.sync_file_budgets(&[]).await.unwrap();
    for (p, id) in [("daily", "d")] {
        let r = row(p, id);
        store.change_budget(id, None, move |_| Ok::<_, String>(r)).await.unwrap().unwrap();
    }
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(
        chrono::DateTime::parse_from_rfc3339("2026-11-26T23:59:00Z").unwrap().timestamp_micros(),
    ));
    let journal = tollgate::journal::Journal::start(store.clone());
    let c = clock.clone();
    let ledger = tollgate::budget::Ledger::new(journal, store.clone(), tollgate::budget::Owner::register(&store).await)
        .with_clock(move || c.load(Ordering::Relaxed));
    let who = tollgate::identity::Principal { key_id: "k".into(), org: "acme".into(), team: "eng".into(), role: None };
    use tollgate::budget::Held;
    for _ in 0..2 {
        match ledger.hold(ask(&who, 1_000), None).await.unwrap() {
            Held::Held(h) => assert!(ledger.settle(&h, 1_000, 0, None).await.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(ledger.hold(ask(&who, 1_000), None).await.unwrap(), Held::Denied { remaining: 0, .. }));
    // Two minutes later it is the next day (UTC): a fresh period.
    clock.fetch_add(120_000_000, Ordering::Relaxed);
    let h = match ledger.hold(ask(&who, 1_000), None).await.unwrap() {
        Held::Held(h) => h,
        other => panic!("{other:?}"),
    };
    // A hold resolves once: a second settle does nothing.
    assert!(ledger.settle(&h, 1_000, 0, None).await.unwrap());
    assert!(!ledger.settle(&h, 1_000, 0, None).await.unwrap());
    let now = clock.load(Ordering::Relaxed);
    let u = store.budget_usage(None, now, tollgate::calendar::period_start).await.unwrap();
    assert_eq!((u[0].spent, u[0].held), (1_000, 0));
    // An expired hold is released by the sweeper, once.
    let h = match ledger.hold(ask(&who, 500), None).await.unwrap() {
        Held::Held(h) => h,
        other => panic!("{other:?}"),
    };
    clock.fetch_add(61_000_000, Ordering::Relaxed);
    assert_eq!(ledger.sweep().await.unwrap(), 1);
    assert!(!ledger.settle(&h, 500, 0, None).await.unwrap(), "an expired hold cannot be settled");
    assert_eq!(store.hold_state(h.id.as_str()).await.unwrap(), Some(tollgate::store::HoldState::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_budgets_are_read_only_from_the_cli_and_spend_is_reported() {
    let up = fixture_http("fs").await;
    let tg = TestGateway::builder()
        .manifest("fs", priced(&up.url))
        .policy("all", policy(&budget("eng", "team:eng", "1.00")))
        .spawn()
        .await;
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(tg.dir().join("tollgate.toml"))
        .args(["budgets", "set", "--id", "eng", "--scope", "team:eng", "--limit", "99"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("all.toml"), "{}", String::from_utf8_lossy(&out.stderr));
    let (agent, _) = tg.agent(Era::Modern).await;
    agent.peer().call_tool(params("fs__echo", json!({"message": "x"}))).await.unwrap();
    let table = tollgate_cli(tg.dir(), &["budgets", "spend"]);
    assert!(table.contains("eng") && table.contains("0.990000"), "{table}");
    let v: Value = serde_json::from_str(&tollgate_cli(tg.dir(), &["budgets", "spend", "--json"])).unwrap();
    assert_eq!(v[0]["remaining"], 990_000);
    let set = tg.gw.store.audit(&AuditFilter { kind: Some("policy.load".into()), ..Default::default() }).await.unwrap();
    assert!(!set.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_shows_spend_to_admins_and_auditors_of_the_org() {
    let up = fixture_http("fs").await;
    let budgets = budget("eng", "team:eng", "1.00").replace("[[budget]]\n", "[[budget]]\norg = \"acme\"\n")
        + &budget("globex", "org:globex", "5.00");
    let tg = TestGateway::builder().manifest("fs", priced(&up.url)).policy("all", policy(&budgets)).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    agent.peer().call_tool(params("fs__echo", json!({"message": "x"}))).await.unwrap();
    let admin =
        tollgate::identity::create_key(&tg.gw.store, "acme", "ops", Some(tollgate::identity::Role::Auditor), None, 0)
            .await
            .unwrap();
    let url = format!("{}/admin/v1/budgets", tg.base);
    let client = reqwest::Client::new();
    let r = client.get(&url).bearer_auth(&admin.secret).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let items = v["budgets"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only its own org's budgets: {v}");
    assert_eq!(items[0]["id"], "eng");
    assert_eq!((items[0]["limit"].as_i64(), items[0]["spent"].as_i64()), (Some(1_000_000), Some(10_000)));
    assert_eq!(items[0]["held"], 0);
    assert_eq!(items[0]["remaining"], 990_000);
    for (auth, status, code) in [(None, 401, "unauthorized"), (Some(tg.key.as_str()), 403, "forbidden")] {
        let mut req = client.get(&url);
        if let Some(k) = auth {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grants_max_cost_per_call_refuses_costlier_calls() {
    let up = fixture_http("fs").await;
    let policy = "[[grant]]\nid = \"cheap\"\nprincipals = [\"*\"]\ntools = [\"*\"]\neffect = \"allow\"\nmax_cost_per_call = \"0.015\"\n";
    let tg = TestGateway::builder().manifest("fs", priced(&up.url)).policy("all", policy).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let ok = agent.peer().call_tool(params("fs__echo", json!({"message": "x"}))).await.unwrap();
    assert_ne!(ok.is_error, Some(true), "0.01 is within 0.015");
    let r = agent.peer().call_tool(params("fs__add", json!({"a": 1, "b": 2}))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("cheap") && text_of(&r).contains("0.020000"), "{}", text_of(&r));
    assert_eq!(upstream_calls(&up.url, "add").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_ledger_cannot_record_a_hold_the_call_does_not_run() {
    let up = fixture_http("fs").await;
    let tg = TestGateway::builder()
        .manifest("fs", priced(&up.url))
        .policy("all", policy(&budget("eng", "team:eng", "10.00")))
        .spawn()
        .await;
    let (agent, _) = tg.agent(Era::Modern).await;
    assert_ne!(agent.peer().call_tool(params("fs__echo", json!({"message": "a"}))).await.unwrap().is_error, Some(true));
    // From now on the store refuses to record holds.
    let url = format!("sqlite://{}", tg.dir().join("tollgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TRIGGER no_holds BEFORE INSERT ON holds BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(&pool)
        .await
        .unwrap();
    let refused = agent.peer().call_tool(params("fs__echo", json!({"message": "b"}))).await;
    match refused {
        Err(e) => assert!(e.to_string().contains("not run"), "{e}"),
        Ok(r) => panic!("answered: {}", text_of(&r)),
    }
    assert_eq!(upstream_calls(&up.url, "echo").await, 1, "the second call never reached the upstream");
    assert_eq!(usage_of(&tg, "eng").await, (10_000_000, 10_000, 0));
    sqlx::query("DROP TRIGGER no_holds").execute(&pool).await.unwrap();
    assert_ne!(agent.peer().call_tool(params("fs__echo", json!({"message": "c"}))).await.unwrap().is_error, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_settled_twice_at_once_is_charged_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = tollgate::store::Store::open("sqlite://t.db", dir.path(), Default::default()).await.unwrap();
    let row = tollgate::store::BudgetRow {
        id: "b".into(),
        scope: "team:eng".into(),
        org: None,
        unit: tollgate::budget::Unit::Money,
        limit_amount: 1_000_000,
        period: tollgate::budget::Period::None,
        source: "api".into(),
        updated_at: 0,
    };
    store.change_budget("b", None, move |_| Ok::<_, String>(row)).await.unwrap().unwrap();
    let journal = tollgate::journal::Journal::start(store.clone());
    let ledger = tollgate::budget::Ledger::new(journal, store.clone(), tollgate::budget::Owner::register(&store).await);
    let who = tollgate::identity::Principal { key_id: "k".into(), org: "acme".into(), team: "eng".into(), role: None };
    let mut expected_spent = 0;
    for _ in 0..50 {
        let h = match ledger.hold(ask(&who, 1_000), None).await.unwrap() {
            tollgate::budget::Held::Held(h) => h,
            other => panic!("{other:?}"),
        };
        // Two settles race (they often share one journal transaction).
        let (a, b) = tokio::join!(ledger.settle(&h, 700, 0, None), ledger.settle(&h, 300, 0, None));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a ^ b, "exactly one settle takes effect ({a}, {b})");
        expected_spent += if a { 700 } else { 300 };
    }
    let u = store.budget_usage(None, ledger.now(), tollgate::calendar::period_start).await.unwrap();
    assert_eq!((u[0].spent, u[0].held), (expected_spent, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budgets_hold_tokens_and_money_budgets_hold_money() {
    let dir = tempfile::tempdir().unwrap();
    let store = tollgate::store::Store::open("sqlite://t.db", dir.path(), Default::default()).await.unwrap();
    for (id, unit, limit) in [("tok", "tokens", 100), ("usd", "money", 1_000)] {
        let row = tollgate::store::BudgetRow {
            id: id.into(),
            scope: "team:eng".into(),
            org: None,
            unit: tollgate::budget::Unit::parse(unit).unwrap(),
            limit_amount: limit,
            period: tollgate::budget::Period::None,
            source: "api".into(),
            updated_at: 0,
        };
        store.change_budget(id, None, move |_| Ok::<_, String>(row)).await.unwrap().unwrap();
    }
    let journal = tollgate::journal::Journal::start(store.clone());
    let ledger = tollgate::budget::Ledger::new(journal, store.clone(), tollgate::budget::Owner::register(&store).await);
    let who = tollgate::identity::Principal { key_id: "k".into(), org: "acme".into(), team: "eng".into(), role: None };
    use tollgate::budget::{Ask, Held};
    let ask = |money, tokens| Ask { tokens, ..ask(&who, money) };
    let h = match ledger.hold(ask(100, 60), None).await.unwrap() {
        Held::Held(h) => h,
        other => panic!("{other:?}"),
    };
    let mut budgets = h.budget_ids();
    budgets.sort();
    assert_eq!(budgets, ["tok", "usd"]);
    match ledger.hold(ask(100, 60), None).await.unwrap() {
        Held::Denied { budget_id, unit, remaining, needed } => {
            assert_eq!((budget_id.as_str(), unit, remaining, needed), ("tok", tollgate::budget::Unit::Tokens, 40, 60));
        }
        other => panic!("{other:?}"),
    }
    // A call with no token estimate touches only the money budget.
    match ledger.hold(ask(100, 0), None).await.unwrap() {
        Held::Held(h) => assert_eq!(h.budget_ids(), ["usd"]),
        other => panic!("{other:?}"),
    }
    // Settled with what was used: 25 tokens of the 60 held.
    assert!(ledger.settle(&h, 100, 25, None).await.unwrap());
    let u = store.budget_usage(None, ledger.now(), tollgate::calendar::period_start).await.unwrap();
    let tok = u.iter().find(|u| u.budget.id == "tok").unwrap();
    assert_eq!((tok.spent, tok.held), (25, 0));
}
