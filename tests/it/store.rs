//! One store test suite, run on both backends: the embedded SQLite file and
//! the machine's PostgreSQL (a database of its own per test). Several writer
//! connections stand in for several processes (replicas) on one store.

use std::sync::Arc;

use serde_json::json;
use tollgate::calendar::period_start;
use tollgate::store::*;

use crate::pg;

/// A store on one backend, with whatever keeps it alive.
struct Under {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    _db: Option<pg::Database>,
}

async fn sqlite() -> Under {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("sqlite://t.db", dir.path(), Durability::Normal).await.unwrap();
    Under { store, _dir: Some(dir), _db: None }
}

async fn postgres() -> Under {
    let db = pg::Database::create().await;
    let store = Store::open(&db.url, std::path::Path::new("."), Durability::Normal).await.unwrap();
    Under { store, _dir: None, _db: Some(db) }
}

impl Under {
    /// A second store on the same database: another process, as far as
    /// the store can tell.
    async fn another(&self) -> Store {
        match (&self._dir, &self._db) {
            (Some(dir), _) => Store::open("sqlite://t.db", dir.path(), Durability::Normal).await.unwrap(),
            (_, Some(db)) => Store::open(&db.url, std::path::Path::new("."), Durability::Normal).await.unwrap(),
            _ => unreachable!(),
        }
    }
}

/// Like `both!`, for bodies that take two stores on one database.
macro_rules! both_pair {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let under = super::sqlite().await;
                super::$body(under.store.clone(), under.another().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs postgres"]
            async fn postgres() {
                let under = super::postgres().await;
                super::$body(under.store.clone(), under.another().await).await;
            }
        }
    };
}

/// `sqlite_<name>` and `postgres_<name>` tests running `body` on each backend.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::sqlite().await.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs postgres"]
            async fn postgres() {
                let under = super::postgres().await;
                super::$body(under.store.clone()).await;
            }
        }
    };
}

both!(keys, keys_are_stored_found_and_revoked_once);
both!(audit_chain, concurrent_writers_make_one_verifiable_chain);
both!(audit_query, audit_filters_select_exactly_the_rows_they_name);
both!(budget_admission, concurrent_holds_across_writers_never_overspend);
both!(settle_once, a_hold_resolves_exactly_once);
both!(budget_changes, budget_changes_are_idempotent_by_key);
both!(approvals, approvals_move_once_and_execute_once);
both!(deliveries, deliveries_are_leased_to_one_worker_at_a_time);
both!(admin, grants_revisions_pins_and_the_change_counter);
both_pair!(liveness, a_process_tells_a_dead_owner_from_a_live_one);

fn draft(n: usize, tag: &str) -> AuditDraft {
    let mut fields = serde_json::Map::new();
    fields.insert("n".into(), json!(n));
    fields.insert("tag".into(), json!(tag));
    // The indexed columns repeat fields of the sealed body.
    fields.insert("call_id".into(), json!(format!("{tag}-{n}")));
    fields.insert("org".into(), json!("acme"));
    fields.insert("tool".into(), json!("t"));
    AuditDraft {
        id: uuid::Uuid::new_v4().to_string(),
        ts: 1_000 + n as i64,
        kind: "test".into(),
        call_id: Some(format!("{tag}-{n}")),
        org: Some("acme".into()),
        principal: None,
        tool: Some("t".into()),
        decision: None,
        fields,
    }
}

async fn keys_are_stored_found_and_revoked_once(store: Store) {
    let row = |id: &str, org: &str| KeyRow {
        id: id.into(),
        secret_hash: format!("hash-{id}"),
        org: org.into(),
        team: "eng".into(),
        role: Some("admin".into()),
        label: None,
        created_at: 5,
        revoked_at: None,
    };
    store.insert_key(&row("k1", "acme")).await.unwrap();
    store.insert_key(&row("k2", "other")).await.unwrap();
    assert_eq!(store.key_by_hash("hash-k1").await.unwrap(), Some(row("k1", "acme")));
    assert_eq!(store.key_by_id("k2").await.unwrap().unwrap().org, "other");
    assert_eq!(store.key_by_hash("nope").await.unwrap(), None);
    assert_eq!(store.list_keys(Some("acme")).await.unwrap().len(), 1);
    assert_eq!(store.list_keys(None).await.unwrap().len(), 2);
    assert!(store.insert_key(&row("k1", "acme")).await.is_err(), "ids are unique");
    assert!(store.revoke_key("k1", 9).await.unwrap());
    assert!(!store.revoke_key("k1", 10).await.unwrap(), "revoked once");
    assert_eq!(store.key_by_hash("hash-k1").await.unwrap().unwrap().revoked_at, Some(9));
}

async fn concurrent_writers_make_one_verifiable_chain(store: Store) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut writer = s.writer().await.unwrap();
            for batch in 0..10 {
                let drafts: Vec<_> = (0..5).map(|i| draft(batch * 5 + i, &format!("w{w}"))).collect();
                writer.cycle(&[], &[], &drafts, period_start, |_, _| Vec::new()).await.unwrap();
            }
        }));
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                store.append_audit(&[draft(i, &format!("a{w}"))]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(tollgate::audit::verify::verify(&store).await.unwrap(), Ok(240));
    let rows = store.audit(&AuditFilter { call_id: Some("w2-7".into()), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(rows.len(), 1);
    let seqs: Vec<i64> = store.audit(&AuditFilter::default()).await.unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=240).collect::<Vec<_>>(), "no gaps, no forks");
}

async fn audit_filters_select_exactly_the_rows_they_name(store: Store) {
    // 24 records: n in 0..24 at ts 1000 + n, the other columns cycling so
    // that every combination of filters has a known answer.
    let drafts: Vec<AuditDraft> = (0..24)
        .map(|n| {
            let mut d = draft(n, "q");
            d.org = Some(["acme", "other"][n % 2].into());
            d.principal = Some(["key:a", "key:b", "key:c"][n % 3].into());
            d.tool = Some(["x__one", "y__two"][n / 12].into());
            d.decision = (n % 4 != 0).then(|| ["allow", "deny"][n % 4 / 2].into());
            d.kind = ["call", "call.intent"][n % 4 / 3].into();
            d
        })
        .collect();
    store.append_audit(&drafts).await.unwrap();
    let pick =
        |keep: &dyn Fn(usize) -> bool| -> Vec<i64> { (0..24).filter(|n| keep(*n)).map(|n| n as i64 + 1).collect() };
    let run = |f: AuditFilter| {
        let store = store.clone();
        async move { store.audit(&f).await.unwrap().iter().map(|r| r.seq).collect::<Vec<i64>>() }
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(run(AuditFilter::default()).await, pick(&|_| true));
    assert_eq!(run(AuditFilter { after_seq: Some(20), ..Default::default() }).await, vec![21, 22, 23, 24]);
    assert_eq!(
        run(AuditFilter { since_ts: Some(1_005), until_ts: Some(1_008), ..Default::default() }).await,
        vec![6, 7, 8]
    );
    assert_eq!(run(AuditFilter { org: s("other"), ..Default::default() }).await, pick(&|n| n % 2 == 1));
    assert_eq!(run(AuditFilter { principal: s("key:c"), ..Default::default() }).await, pick(&|n| n % 3 == 2));
    assert_eq!(run(AuditFilter { tool: s("y__two"), ..Default::default() }).await, pick(&|n| n >= 12));
    assert_eq!(run(AuditFilter { decision: s("deny"), ..Default::default() }).await, pick(&|n| n % 4 >= 2));
    assert_eq!(run(AuditFilter { kind: s("call.intent"), ..Default::default() }).await, pick(&|n| n % 4 == 3));
    assert_eq!(run(AuditFilter { call_id: s("q-17"), ..Default::default() }).await, vec![18]);
    assert_eq!(
        run(AuditFilter { org: s("acme"), since_ts: Some(1_010), tool: s("x__one"), ..Default::default() }).await,
        vec![11]
    );
    assert_eq!(
        run(AuditFilter {
            principal: s("key:a"),
            decision: s("allow"),
            after_seq: Some(3),
            limit: 2,
            ..Default::default()
        })
        .await,
        pick(&|n| n > 2 && n % 3 == 0 && n % 4 == 1).into_iter().take(2).collect::<Vec<_>>()
    );
    assert_eq!(run(AuditFilter { org: s("nobody"), ..Default::default() }).await, Vec::<i64>::new());
    // Hostile values are values, not SQL.
    assert_eq!(run(AuditFilter { tool: s("t' OR '1'='1"), ..Default::default() }).await, Vec::<i64>::new());
}

fn budget(id: &str, limit: i64) -> BudgetRow {
    BudgetRow {
        id: id.into(),
        scope: "team:eng".into(),
        org: None,
        unit: tollgate::budget::Unit::Money,
        limit_amount: limit,
        period: tollgate::budget::Period::None,
        source: "api".into(),
        updated_at: 0,
    }
}

fn hold(id: String, money: i64) -> HoldRequest {
    HoldRequest {
        hold_id: id.as_str().into(),
        owner: "test".into(),
        call_id: id.into(),
        principal: "k".into(),
        tool: "t".into(),
        org: "acme".into(),
        scopes: vec!["team:eng".into()],
        money,
        tokens: 0,
        now: 1,
        expires_at: i64::MAX,
    }
}

async fn concurrent_holds_across_writers_never_overspend(store: Store) {
    let b = budget("b", 100);
    store.change_budget("b", None, move |_| Ok::<_, String>(b)).await.unwrap().unwrap();
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..5 {
        let (store, held) = (store.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            let mut writer = store.writer().await.unwrap();
            for batch in 0..10 {
                let reqs: Vec<_> = (0..6).map(|i| hold(format!("h{w}-{batch}-{i}"), 1)).collect();
                let out = writer.cycle(&[], &reqs, &[], period_start, |_, _| Vec::new()).await.unwrap();
                let n = out.held.iter().filter(|h| matches!(h, HoldOutcome::Held(l) if !l.is_empty())).count();
                held.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(held.load(std::sync::atomic::Ordering::SeqCst), 100, "300 asked for 1 each; the budget has 100");
    let u = store.budget_usage(None, 1, period_start).await.unwrap();
    assert_eq!((u[0].spent, u[0].held), (0, 100));
}

async fn a_hold_resolves_exactly_once(store: Store) {
    let b = budget("b", 1_000);
    store.change_budget("b", None, move |_| Ok::<_, String>(b)).await.unwrap().unwrap();
    let mut w = store.writer().await.unwrap();
    w.cycle(&[], &[hold("h".into(), 600)], &[], period_start, |_, _| Vec::new()).await.unwrap();
    assert_eq!(store.hold_state("h").await.unwrap(), Some(HoldState::Held));
    assert_eq!(store.hold_owners().await.unwrap(), vec!["test".to_string()]);
    let settle =
        |charged| Resolution { hold_id: "h".into(), state: HoldState::Settled, charged, charged_tokens: 0, now: 2 };
    // Two resolutions of one hold in one cycle, then a third in another writer.
    let out = w.cycle(&[settle(400), settle(500)], &[], &[], period_start, |_, _| Vec::new()).await.unwrap();
    assert_eq!(out.resolved, vec![true, false]);
    let mut w2 = store.writer().await.unwrap();
    let out = w2.cycle(&[settle(100)], &[], &[], period_start, |_, _| Vec::new()).await.unwrap();
    assert_eq!(out.resolved, vec![false]);
    let u = store.budget_usage(None, 1, period_start).await.unwrap();
    assert_eq!((u[0].spent, u[0].held), (400, 0));
    assert_eq!(store.hold_state("h").await.unwrap(), Some(HoldState::Settled));
    // Expiry and dead owners.
    w.cycle(&[], &[HoldRequest { expires_at: 5, ..hold("x".into(), 1) }], &[], period_start, |_, _| Vec::new())
        .await
        .unwrap();
    assert_eq!(store.stale_holds(4, &[]).await.unwrap(), Vec::<String>::new());
    assert_eq!(store.stale_holds(5, &[]).await.unwrap(), vec!["x".to_string()]);
    assert_eq!(store.stale_holds(0, &["test".into()]).await.unwrap(), vec!["x".to_string()]);
}

async fn budget_changes_are_idempotent_by_key(store: Store) {
    let idem = |hash: &str| Some(Idempotency { key: "k1".into(), request_hash: hash.into() });
    let first = store.change_budget("b", idem("r1"), |_| Ok::<_, String>(budget("b", 5))).await.unwrap().unwrap();
    assert!(matches!(first, Applied::Now(_)));
    let again = store.change_budget("b", idem("r1"), |_| Ok::<_, String>(budget("b", 9))).await.unwrap().unwrap();
    assert!(matches!(again, Applied::Replayed(_)));
    let reused = store.change_budget("b", idem("r2"), |_| Ok::<_, String>(budget("b", 9))).await.unwrap();
    assert!(reused.is_err(), "a key reused for another request is refused");
    let refused =
        store.change_budget("b", None, |cur| Err::<BudgetRow, _>(format!("{:?}", cur.map(|c| c.limit_amount))));
    assert_eq!(refused.await.unwrap(), Err("Some(5)".to_string()), "the change sees the current row");
    store.sync_file_budgets(&[BudgetRow { source: "file:p.toml".into(), ..budget("f", 3) }]).await.unwrap();
    store.sync_file_budgets(&[BudgetRow { source: "file:p.toml".into(), ..budget("g", 3) }]).await.unwrap();
    let ids: Vec<String> =
        store.budget_usage(None, 1, period_start).await.unwrap().into_iter().map(|u| u.budget.id).collect();
    assert_eq!(ids, vec!["b", "g"], "file budgets are replaced, API budgets kept");
}

fn approval(id: &str, digest: &str) -> ApprovalRow {
    ApprovalRow {
        id: id.into(),
        org: "acme".into(),
        principal: "k".into(),
        principal_label: "key:k".into(),
        team: "eng".into(),
        tool: "fs__write".into(),
        upstream: Some("fs".into()),
        arguments: Some("{\"a\":1}".into()),
        arguments_redacted: "{\"a\":1}".into(),
        digest: digest.into(),
        tool_hash: "th".into(),
        grant_id: Some("g".into()),
        route: "default".into(),
        reason: "r".into(),
        risk: None,
        cost: 0,
        hold_id: None,
        call_id: format!("call-{id}").into(),
        mode: tollgate::approval::Mode::Wait,
        status: tollgate::approval::Status::Pending,
        created_at: 10,
        expires_at: 100,
        decided_at: None,
        decided_by: None,
        decision_reason: None,
        execution: tollgate::approval::Execution::None,
        claimed_by: None,
        result: None,
        reported: false,
        rev: 0,
        updated_at: 10,
    }
}

async fn approvals_move_once_and_execute_once(store: Store) {
    let hooks = vec!["http://127.0.0.1:9/hook".to_string()];
    let a = store.create_approval(&approval("a1", "d1"), 100, &hooks, draft(0, "ap")).await.unwrap().unwrap();
    assert!(a.rev > 0);
    assert!(
        store.create_approval(&approval("a2", "d1"), 100, &[], draft(1, "ap")).await.unwrap().is_none(),
        "one open action per exact call"
    );
    let b = store.create_approval(&approval("b1", "d2"), 100, &[], draft(2, "ap")).await.unwrap().unwrap();
    assert!(b.rev > a.rev);
    assert_eq!(store.approval_for_call("k", "fs__write", "d1", "th", 0).await.unwrap().unwrap().id, "a1");
    assert_eq!(store.approvals(Some("acme"), Some(tollgate::approval::Status::Pending), 10).await.unwrap().len(), 2);
    assert_eq!(store.approvals(Some("other"), None, 10).await.unwrap().len(), 0);

    // Two approvers decide at once: one decision stands.
    let t = |to: &str, by: &str| Transition {
        id: "a1".into(),
        to: tollgate::approval::Status::parse(to).unwrap(),
        by: Some(by.into()),
        reason: None,
        now: 20,
    };
    let (approve, deny) = (t("approved", "alice"), t("denied", "bob"));
    let (x, y) = tokio::join!(
        store.transition_approval(&approve, |_| draft(3, "ap")),
        store.transition_approval(&deny, |_| draft(4, "ap"))
    );
    let done = [&x, &y].iter().filter(|r| matches!(r, Ok(Transitioned::Done(_)))).count();
    assert_eq!(done, 1, "{x:?} {y:?}");
    let winner = store.approval("a1").await.unwrap().unwrap();
    if winner.status.as_str() == "approved" {
        // Replicas race to run it: exactly one claims it.
        let claims = futures::future::join_all((0..6).map(|i| {
            let store = store.clone();
            async move { store.claim_execution("a1", &format!("p{i}"), 30).await.unwrap() }
        }))
        .await;
        assert_eq!(claims.iter().filter(|c| c.is_some()).count(), 1);
        let f = store.finish_execution("a1", "{\"ok\":true}", false, 40).await.unwrap().unwrap();
        assert_eq!((f.execution.as_str(), f.arguments.as_deref(), f.reported), ("done", None, false));
        store.mark_reported("a1", 50).await.unwrap();
        assert!(store.approval("a1").await.unwrap().unwrap().reported);
    }
    let expired = store.expire_approvals(100, |_| draft(5, "ap")).await.unwrap();
    assert_eq!(expired.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["b1"]);
    let changes = store.approvals_since(0, 100).await.unwrap();
    let revs: Vec<i64> = changes.iter().map(|r| r.rev).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(store.approvals_rev().await.unwrap(), *revs.last().unwrap());
    assert!(store.use_signature("sig", 1, 0).await.unwrap());
    assert!(!store.use_signature("sig", 2, 0).await.unwrap(), "a replayed signature is refused");
    // Two creations, one decision, one expiry: what did not happen left no record.
    assert_eq!(tollgate::audit::verify::verify(&store).await.unwrap(), Ok(4));
}

async fn deliveries_are_leased_to_one_worker_at_a_time(store: Store) {
    let hooks: Vec<String> = (0..20).map(|i| format!("http://127.0.0.1:9/h{i}")).collect();
    store.create_approval(&approval("a", "d"), 100, &hooks, draft(0, "d")).await.unwrap().unwrap();
    let leased = futures::future::join_all((0..4).map(|_| {
        let store = store.clone();
        async move { store.due_deliveries(10, 1_000, 8).await.unwrap() }
    }))
    .await;
    let mut ids: Vec<i64> = leased.iter().flatten().map(|d| d.id).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "no delivery leased twice");
    assert_eq!(n, 20);
    assert!(store.due_deliveries(10, 1_000, 8).await.unwrap().is_empty(), "all leased");
    let d = ids[0];
    let attempt = AttemptRow { delivery_id: d, attempt: 1, at: 11, micros: 5, status: Some(500), error: None };
    store.record_attempt(&attempt, "pending", 20).await.unwrap();
    let all = store.deliveries("a").await.unwrap();
    let (row, attempts) = all.iter().find(|(r, _)| r.id == d).unwrap();
    assert_eq!((row.attempts, row.next_at, attempts.len()), (1, 20, 1));
}

async fn grants_revisions_pins_and_the_change_counter(store: Store) {
    let before = store.admin_changes().await.unwrap();
    let put = |rev: i64, spec: &str| {
        let spec = spec.to_string();
        move |cur: Option<&GrantRow>, next: i64| {
            assert_eq!(cur.map(|c| c.revision), if next == 1 { None } else { Some(rev) });
            let row = GrantRow {
                id: "g".into(),
                org: "acme".into(),
                spec: spec.clone(),
                revision: next,
                created_at: 1,
                created_by: "a".into(),
                updated_at: next,
                updated_by: "a".into(),
            };
            let revision = GrantRevisionRow {
                grant_id: "g".into(),
                revision: next,
                org: "acme".into(),
                at: next,
                actor: "a".into(),
                action: if next == 1 { "create" } else { "update" }.into(),
                spec: Some(spec),
                diff: "{}".into(),
            };
            Ok::<_, String>(GrantEdit::Put { row, revision, record: draft(next as usize, "g") })
        }
    };
    store.change_grant("g", put(0, "{\"v\":1}")).await.unwrap().unwrap();
    store.change_grant("g", put(1, "{\"v\":2}")).await.unwrap().unwrap();
    assert_eq!(store.grant("g").await.unwrap().unwrap().spec, "{\"v\":2}");
    assert_eq!(store.grants(Some("acme")).await.unwrap().len(), 1);
    assert_eq!(store.grants(Some("other")).await.unwrap().len(), 0);
    let refused = store.change_grant("g", |_, _| Err::<GrantEdit, _>("stale".to_string())).await.unwrap();
    assert_eq!(refused.unwrap_err(), "stale");
    assert_eq!(store.grant_revisions("g").await.unwrap().iter().map(|r| r.revision).collect::<Vec<_>>(), vec![1, 2]);
    let pin = PinRow { upstream: "fs".into(), tool: "echo".into(), hash: None, updated_at: 3, updated_by: "a".into() };
    store.set_pin(&pin, draft(9, "p")).await.unwrap();
    assert_eq!(store.pins().await.unwrap(), vec![pin]);
    assert!(store.admin_changes().await.unwrap() > before);
    assert_eq!(tollgate::audit::verify::verify(&store).await.unwrap(), Ok(3));
}

/// Waits (bounded) until `cond` holds; `what` names it in the failure.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_process_tells_a_dead_owner_from_a_live_one(a: Store, b: Store) {
    let alive = a.register_owner("owner-a").await;
    // On PostgreSQL a free lock counts as dead only after a grace (a live
    // replica may be taking its lock again): at first, nobody is dead.
    let cautious = b.register_owner("owner-d").await;
    let never = vec!["owner-never-seen".to_string()];
    if b.is_shared() {
        assert!(cautious.dead(&never).await.unwrap().is_empty(), "a newly free lock is only suspect");
    }
    drop(cautious);
    let me = b.register_owner("owner-b").await.with_grace(std::time::Duration::ZERO);
    let owners = vec!["owner-a".to_string(), "owner-b".to_string(), "owner-never-seen".to_string()];
    assert_eq!(
        me.dead(&owners).await.unwrap(),
        vec!["owner-never-seen".to_string()],
        "itself and a live one are alive"
    );
    let pending = format!("{}x", tollgate::store::HOLD_OWNER_PREFIX);
    assert!(me.dead(std::slice::from_ref(&pending)).await.unwrap().is_empty(), "a pending action is no process");
    // The process ends: its lock goes with it (file closed; session closed).
    drop(alive);
    let gone = vec!["owner-a".to_string()];
    eventually("owner-a is dead", || {
        let (me, gone) = (&me, &gone);
        async move { me.dead(gone).await.unwrap() == *gone }
    })
    .await;
    // Asking did not take the lock for good: it stays free for the next to ask.
    let other = a.register_owner("owner-c").await.with_grace(std::time::Duration::ZERO);
    assert_eq!(other.dead(&gone).await.unwrap(), gone);
    assert_eq!(me.dead(&gone).await.unwrap(), gone);
}

/// Two PostgreSQL stores on one database, the first listening, once its
/// listener is connected.
async fn listening_pair() -> (pg::Database, Store, Store, tokio_util::sync::CancellationToken) {
    let db = pg::Database::create().await;
    let a = Store::open(&db.url, std::path::Path::new("."), Durability::Normal).await.unwrap();
    let b = Store::open(&db.url, std::path::Path::new("."), Durability::Normal).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    a.listen(stop.clone());
    eventually("the listener is connected", || {
        let a = a.clone();
        async move { a.changes(changes::Topic::Keys, std::time::Duration::from_secs(3600)).notified() }
    })
    .await;
    (db, a, b, stop)
}

/// A follower that would otherwise look once an hour wakes when another
/// process commits: the notification is the mechanism.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn postgres_notifies_other_processes_of_approval_and_admin_commits() {
    let (_db, a, b, _stop) = listening_pair().await;
    let hour = std::time::Duration::from_secs(3600);
    let mut approvals = a.changes(changes::Topic::Approvals, hour);
    let mut admin = a.changes(changes::Topic::Admin, hour);
    b.create_approval(&approval("n1", "dn"), 100, &[], draft(0, "n")).await.unwrap().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), approvals.next()).await.expect("approval change heard");
    let pin = PinRow { upstream: "fs".into(), tool: "echo".into(), hash: None, updated_at: 3, updated_by: "a".into() };
    b.set_pin(&pin, draft(1, "n")).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), admin.next()).await.expect("admin change heard");
    // The change itself is there to read when the notification arrives.
    assert_eq!(a.approvals_since(0, 10).await.unwrap().len(), 1);
    assert_eq!(a.pins().await.unwrap(), vec![pin]);
}

/// A key revoked through one process is refused by another's cache as soon
/// as the notification arrives, not when the cache entry would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres"]
async fn postgres_key_cache_forgets_a_key_revoked_by_another_process() {
    let (_db, a, b, _stop) = listening_pair().await;
    let key = KeyRow {
        id: "k1".into(),
        secret_hash: "hash-k1".into(),
        org: "acme".into(),
        team: "eng".into(),
        role: None,
        label: None,
        created_at: 5,
        revoked_at: None,
    };
    let mut keys = a.changes(changes::Topic::Keys, std::time::Duration::from_secs(3600));
    b.insert_key(&key).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), keys.next()).await.expect("insert heard");
    assert_eq!(a.key_by_hash("hash-k1").await.unwrap().unwrap().revoked_at, None, "cached now");
    assert!(b.revoke_key("k1", 9).await.unwrap());
    tokio::time::timeout(std::time::Duration::from_secs(5), keys.next()).await.expect("revocation heard");
    assert_eq!(a.key_by_hash("hash-k1").await.unwrap().unwrap().revoked_at, Some(9));
}
