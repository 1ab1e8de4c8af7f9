//! The journal: the process's single writer. Audit appends and budget
//! ledger transactions go through one task on one store connection, in the
//! order they were asked for.
//!
//! One writer because SQLite allows one at a time: two connections of the
//! same process writing would wait on each other in SQLite's busy handler,
//! which sleeps. Audit records that are waiting together are appended in one
//! statement (group commit), so throughput does not collapse to one commit
//! per call. Write-ahead: callers await their record's commit before acting
//! on it (dispatching a call, answering an agent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::audit::AuditError;
use crate::ids::HoldId;
use crate::store::{AuditDraft, HoldOutcome, HoldRequest, Resolution, Store, StoreError, Writer};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

/// Makes the audit record that commits with a hold (the call's intent),
/// from the hold's id and outcome; `None`: no record.
pub type WithHold = Box<dyn FnOnce(&HoldId, &HoldOutcome) -> Option<AuditDraft> + Send>;
/// Makes the audit record that commits with a resolution (the call's
/// outcome), from whether this resolution was the one that took effect.
pub type WithResolution = Box<dyn FnOnce(bool) -> AuditDraft + Send>;

enum Job {
    Audit(AuditDraft, oneshot::Sender<Result<(), AuditError>>),
    Hold(Box<HoldRequest>, Option<WithHold>, oneshot::Sender<Result<HoldOutcome, StoreError>>),
    Resolve(Resolution, Option<WithResolution>, oneshot::Sender<Result<bool, StoreError>>),
}

/// A handle on the writer task; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
}

impl Journal {
    /// Starts the writer. It runs until every handle is dropped, then
    /// finishes what it was given.
    pub fn start(store: Store) -> Journal {
        let (tx, rx) = mpsc::channel(8 * MAX_BATCH);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(store, rx, commits.clone()));
        Journal { tx, commits }
    }

    /// Audit statements committed so far (each holds one or more records).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Returns once `draft` is committed.
    pub async fn audit(&self, draft: AuditDraft) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Job::Audit(draft, done)).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// Reserves on every applicable budget, all or nothing; `record`'s
    /// audit record (if any) commits in the same transaction.
    pub async fn hold(&self, req: HoldRequest, record: Option<WithHold>) -> Result<HoldOutcome, StoreError> {
        let (done, wait) = oneshot::channel();
        let closed = || StoreError::Unavailable("the journal has stopped".into());
        self.tx.send(Job::Hold(Box::new(req), record, done)).await.map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }

    /// Resolves a hold; `false` if something else resolved it first.
    /// `record`'s audit record commits in the same transaction.
    pub async fn resolve(&self, r: Resolution, record: Option<WithResolution>) -> Result<bool, StoreError> {
        let (done, wait) = oneshot::channel();
        let closed = || StoreError::Unavailable("the journal has stopped".into());
        self.tx.send(Job::Resolve(r, record, done)).await.map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }
}

fn stopped() -> AuditError {
    AuditError("the journal has stopped".into())
}

/// Under steady writes, a checkpoint of the write-ahead log follows this
/// many commits or records, whichever comes first. A one-record commit
/// writes about five pages (the row and its indexes), so the log stays
/// near 24 MB (measured: 23.8 MB for one-record commits, 34.7 MB in the
/// journal bench's mix of batches); each checkpoint stalls the writer for
/// an fsync (a few milliseconds here), which this many commits share.
const CHECKPOINT_COMMITS: u32 = 1_000;
const CHECKPOINT_RECORDS: usize = 10_000;

/// With commits since the last checkpoint, one is made after this long idle.
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

async fn writer(store: Store, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut conn: Option<Writer> = None;
    let (mut since_checkpoint, mut records_since) = (0u32, 0usize);
    loop {
        let received = match tokio::time::timeout(CHECKPOINT_IDLE, rx.recv_many(&mut jobs, MAX_BATCH)).await {
            Ok(n) => n,
            Err(_idle) => {
                if since_checkpoint > 0 {
                    checkpoint(conn.as_mut()).await;
                    (since_checkpoint, records_since) = (0, 0);
                }
                continue;
            }
        };
        if received == 0 {
            break;
        }
        if conn.is_none() {
            conn = store.writer().await.map_err(|e| tracing::error!("journal connection: {e}")).ok();
        }
        // Each caller waits for one job at a time, so no two jobs here are
        // from the same caller and they may be regrouped by kind: settles
        // first (they free budget), then holds, then audit records, all in
        // one transaction.
        let mut audits = Vec::new();
        let (mut reqs, mut hold_records, mut hold_waiting) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rs, mut resolve_records, mut resolve_waiting) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs.drain(..) {
            match job {
                Job::Audit(d, done) => audits.push((d, done)),
                Job::Hold(req, record, done) => {
                    reqs.push(*req);
                    hold_records.push(record);
                    hold_waiting.push(done);
                }
                Job::Resolve(r, record, done) => {
                    rs.push(r);
                    resolve_records.push(record);
                    resolve_waiting.push(done);
                }
            }
        }
        let (drafts, audit_waiting): (Vec<AuditDraft>, Vec<_>) = audits.into_iter().unzip();
        let hold_ids: Vec<HoldId> = reqs.iter().map(|r| r.hold_id.clone()).collect();
        let with_outcomes = move |resolved: &[bool], held: &[HoldOutcome]| {
            let mut out = Vec::new();
            for (make, r) in resolve_records.into_iter().zip(resolved) {
                out.extend(make.map(|m| m(*r)));
            }
            for ((make, h), id) in hold_records.into_iter().zip(held).zip(&hold_ids) {
                out.extend(make.and_then(|m| m(id, h)));
            }
            out
        };
        // Each hold and settle commits its call's record with it.
        let records = drafts.len() + reqs.len() + rs.len();
        let outcome = match conn.as_mut() {
            Some(c) => c.cycle(&rs, &reqs, &drafts, crate::calendar::period_start, with_outcomes).await,
            None => Err(StoreError::Unavailable("no store connection".into())),
        };
        match outcome {
            Ok(out) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for (done, r) in resolve_waiting.into_iter().zip(out.resolved) {
                    let _ = done.send(Ok(r));
                }
                for (done, r) in hold_waiting.into_iter().zip(out.held) {
                    let _ = done.send(Ok(r));
                }
                for done in audit_waiting {
                    let _ = done.send(Ok(()));
                }
                // After the callers are told: a checkpoint delays only the
                // commits asked for meanwhile, which then share one.
                since_checkpoint += 1;
                records_since += records;
                if since_checkpoint >= CHECKPOINT_COMMITS || records_since >= CHECKPOINT_RECORDS {
                    checkpoint(conn.as_mut()).await;
                    (since_checkpoint, records_since) = (0, 0);
                }
            }
            Err(e) => {
                tracing::error!(
                    "journal transaction failed ({} settles, {} holds, {} audit records): {e}",
                    rs.len(),
                    reqs.len(),
                    drafts.len()
                );
                // A fresh connection (and chain head) for the next cycle.
                conn = None;
                let text = e.to_string();
                for done in resolve_waiting {
                    let _ = done.send(Err(StoreError::Unavailable(text.clone())));
                }
                for done in hold_waiting {
                    let _ = done.send(Err(StoreError::Unavailable(text.clone())));
                }
                for done in audit_waiting {
                    let _ = done.send(Err(AuditError(text.clone())));
                }
            }
        }
    }
}

/// Moves the write-ahead log into the database, on the writer's own
/// connection (see `Writer::checkpoint`); a failure is only logged, the next
/// one tries again.
async fn checkpoint(conn: Option<&mut Writer>) {
    if let Some(c) = conn
        && let Err(e) = c.checkpoint().await
    {
        tracing::warn!("store checkpoint failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{record, verify};

    async fn store(dir: &std::path::Path) -> Store {
        Store::open("sqlite://audit.db", dir, Default::default()).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_commits_and_two_writers_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store(dir.path()).await, store(dir.path()).await);
        // Two writers on one file, as two processes would be.
        let (wa, wb) = (Journal::start(a.clone()), Journal::start(b));
        let mut tasks = Vec::new();
        for i in 0..600 {
            let w = if i % 2 == 0 { wa.clone() } else { wb.clone() };
            tasks.push(tokio::spawn(async move {
                let draft = record::change("test", None, "test", serde_json::json!({"n": i}));
                w.audit(draft).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(verify::verify(&a).await.unwrap(), Ok(600));
        let commits = wa.commits() + wb.commits();
        assert!(commits < 600, "{commits} commits for 600 concurrent records: no grouping");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_stays_bounded_under_steady_writes() {
        // Back-to-back commits, as under steady traffic. A checkpoint made
        // beside the writer never let the log start over (it grew by every
        // page of every commit); the writer's own let it start over after
        // CHECKPOINT_COMMITS commits.
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path()).await;
        let w = Journal::start(a.clone());
        let n = 3 * CHECKPOINT_COMMITS as usize;
        for i in 0..n {
            w.audit(record::change("test", None, "test", serde_json::json!({"n": i}))).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("audit.db-wal")).unwrap().len();
        // About five 4 KiB pages a commit, so the log of CHECKPOINT_COMMITS
        // commits is about 20 MiB; of all of them, three times that.
        let bound = 2 * u64::from(CHECKPOINT_COMMITS) * 5 * 4120;
        assert!(wal < bound, "the WAL grew to {wal} bytes over {n} commits");
        assert_eq!(verify::verify(&a).await.unwrap(), Ok(n as u64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_taking_turns_each_find_the_chain_moved_and_append_after_it() {
        // Each writer's cached head is stale on every turn after its first:
        // its fast append collides, writes nothing, and goes again after the
        // head read anew.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store(dir.path()).await, store(dir.path()).await);
        let (wa, wb) = (Journal::start(a.clone()), Journal::start(b));
        for i in 0..40 {
            let w = if i % 2 == 0 { &wa } else { &wb };
            w.audit(record::change("test", None, "test", serde_json::json!({"n": i}))).await.unwrap();
        }
        assert_eq!(verify::verify(&a).await.unwrap(), Ok(40));
        let rows = a.audit(&Default::default()).await.unwrap();
        let order: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(order, (1..=40).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_waits_out_another_connections_write_lock() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path()).await;
        let w = Journal::start(a.clone());
        w.audit(record::change("test", None, "test", serde_json::json!({"n": 0}))).await.unwrap();
        // Another process holds SQLite's write lock.
        let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.path().join("audit.db").display()))
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
        let pending = {
            let w = w.clone();
            tokio::spawn(
                async move { w.audit(record::change("test", None, "test", serde_json::json!({"n": 1}))).await },
            )
        };
        let (seen,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit").fetch_one(&mut other).await.unwrap();
        assert_eq!(seen, 1, "nothing is appended while the lock is held elsewhere");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        pending.await.unwrap().expect("the record commits once the lock is free, not an error");
        assert_eq!(verify::verify(&a).await.unwrap(), Ok(2));
    }
}
