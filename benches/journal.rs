//! What the write-ahead audit costs a governed call, apart from the rest.
//!
//! Every governed call waits for two durable commits (its intent before it is
//! dispatched, its outcome before the agent is answered), so two commits are
//! the floor under the governance a call adds. `cargo bench --bench journal`
//! measures, one after another at concurrency 1, on a SQLite store in a
//! temporary folder (WAL, `durability = "normal"`, the gateway's migrations)
//! already holding `BENCH_PREFILL` records (default 20,000):
//! - `sqlite insert`: SQLite alone, the same INSERT into the same table
//!   through its C API on a connection of this bench, in autocommit (one
//!   commit per record): no tollgate code at all;
//! - `journal audit`: `Journal::audit` of a call's intent record, as the
//!   pipeline makes it (the record built, redacted, hashed into the chain,
//!   committed), and of an intent and outcome pair, as one allowed call waits
//!   for them.

#[path = "common/mcp.rs"]
mod mcp;

use std::ffi::{CString, c_int};
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;
use mcp::{pct, us};
use serde_json::json;
use tollgate::audit::CallRecord;
use tollgate::identity::Principal;
use tollgate::journal::Journal;
use tollgate::store::{Durability, Store};

fn record() -> CallRecord {
    let mut rec = CallRecord::start("bench__echo", None);
    rec.principal = Some(Principal { key_id: "k1".into(), org: "bench".into(), team: "bench".into(), role: None });
    rec.upstream = Some("bench".into());
    rec.decision = "allowed";
    rec.reason = Some("allowed by grant `bench`".into());
    rec.grants = vec!["bench".into()];
    rec.arguments = Some(json!({"message": "bench"}));
    for stage in ["identify", "resolve", "authorize", "validate", "scan_arguments", "limit"] {
        rec.stage(stage);
    }
    rec
}

fn report(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    let (p50, p99) = (us(pct(&lat, 0.5)), us(pct(&lat, 0.99)));
    println!("{name:<28} p50 {p50:>7.1} us  p99 {p99:>7.1} us  ({} samples)", lat.len());
}

/// One INSERT per record through SQLite's C API, each its own commit.
fn sqlite_inserts(path: &std::path::Path, after: i64, n: usize) -> Vec<Duration> {
    let cpath = CString::new(path.to_str().expect("utf-8 path")).expect("path");
    let mut db = std::ptr::null_mut();
    let exec = |db: *mut ffi::sqlite3, sql: &str| {
        let sql = CString::new(sql).expect("sql");
        // SAFETY: `db` is open; `sql` is NUL-terminated; no callback.
        let rc = unsafe { ffi::sqlite3_exec(db, sql.as_ptr(), None, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(rc, ffi::SQLITE_OK, "{sql:?}");
    };
    // SAFETY: out-pointer to a new connection; closed below.
    let rc = unsafe { ffi::sqlite3_open(cpath.as_ptr(), &mut db) };
    assert_eq!(rc, ffi::SQLITE_OK);
    // SAFETY: `db` is open.
    unsafe { ffi::sqlite3_busy_timeout(db, 5_000) };
    exec(db, "PRAGMA journal_mode = WAL");
    exec(db, "PRAGMA synchronous = NORMAL");
    exec(db, "PRAGMA wal_autocheckpoint = 0");
    let sql = CString::new(
        "INSERT INTO audit (seq, id, ts, kind, call_id, org, principal, tool, decision, body, prev_hash, hash)
         VALUES (?6, ?1, ?2, 'bench', ?3, 'bench', 'key:k1', 'bench__echo', 'allowed', ?4, ?5, ?5)",
    )
    .expect("sql");
    let mut stmt = std::ptr::null_mut();
    // SAFETY: `db` is open; `sql` is NUL-terminated; `stmt` is an out-pointer.
    let rc = unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut()) };
    assert_eq!(rc, ffi::SQLITE_OK);
    let body = serde_json::to_string(&record().intent().fields).expect("body");
    let hash = "0".repeat(64);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (id, call) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        let bind = |i: c_int, s: &str| {
            // SAFETY: `stmt` is ours; SQLITE_TRANSIENT copies the bytes now.
            unsafe { ffi::sqlite3_bind_text(stmt, i, s.as_ptr().cast(), s.len() as c_int, ffi::SQLITE_TRANSIENT()) }
        };
        let t = Instant::now();
        bind(1, &id);
        // SAFETY: `stmt` is ours.
        unsafe {
            ffi::sqlite3_bind_int64(stmt, 2, i as i64);
            ffi::sqlite3_bind_int64(stmt, 6, after + 1 + i as i64);
        }
        bind(3, &call);
        bind(4, &body);
        bind(5, &hash);
        // SAFETY: `stmt` is ours and fully bound.
        let rc = unsafe { ffi::sqlite3_step(stmt) };
        assert_eq!(rc, ffi::SQLITE_DONE);
        // SAFETY: `stmt` is ours.
        unsafe { ffi::sqlite3_reset(stmt) };
        out.push(t.elapsed());
        if i % 1000 == 999 {
            exec(db, "PRAGMA wal_checkpoint(PASSIVE)");
        }
    }
    // SAFETY: both are ours and no longer used.
    unsafe {
        ffi::sqlite3_finalize(stmt);
        ffi::sqlite3_close(db);
    }
    out
}

#[tokio::main]
async fn main() {
    let prefill: usize = std::env::var("BENCH_PREFILL").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let n: usize = std::env::var("BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open("sqlite://bench.db", dir.path(), Durability::Normal).await.expect("store");
    let journal = Journal::start(store.clone());
    // Indexes as deep as a store that has been running a while.
    let fill: Vec<_> = (0..prefill)
        .map(|_| {
            let j = journal.clone();
            tokio::spawn(async move { j.audit(record().outcome()).await })
        })
        .collect();
    for f in fill {
        f.await.expect("task").expect("prefill");
    }
    println!("store: SQLite, WAL, durability normal, {prefill} records before measuring; {n} samples each");

    // On a runtime worker, as the gateway's calls are (`main`'s own future
    // runs on the thread that called `block_on`, outside the workers).
    let measured = {
        let journal = journal.clone();
        tokio::spawn(async move {
            let mut one = Vec::with_capacity(n);
            let mut pair = Vec::with_capacity(n);
            for _ in 0..n {
                let rec = record();
                let t = Instant::now();
                journal.audit(rec.intent()).await.expect("intent");
                one.push(t.elapsed());
                let t = Instant::now();
                journal.audit(rec.intent()).await.expect("intent");
                journal.audit(rec.outcome()).await.expect("outcome");
                pair.push(t.elapsed());
            }
            (one, pair)
        })
    };
    let (one, pair) = measured.await.expect("task");
    drop(journal);
    let head = (prefill + 3 * n) as i64;
    let raw = sqlite_inserts(&dir.path().join("bench.db"), head, n);
    report("sqlite insert (C API)", raw);
    report("journal audit, one record", one);
    report("journal audit, intent+outcome", pair);
}
