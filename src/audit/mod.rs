//! The audit trail: records built by the pipeline and the admin paths,
//! written through one group-commit writer into the store's hash chain.
//!
//! Write-ahead: a call's intent record is committed before it is dispatched
//! upstream, and its outcome record before the agent gets the answer. Many
//! concurrent calls share one transaction: the writer takes every record
//! waiting when it starts a commit, so throughput does not collapse to one
//! commit per call.

pub mod record;
pub mod redact;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditDraft, Store};

pub use record::CallRecord;

/// Most records in one transaction.
const MAX_BATCH: usize = 512;

/// The audit record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit trail unavailable: {0}")]
pub struct AuditError(pub String);

type Job = (AuditDraft, oneshot::Sender<Result<(), AuditError>>);

/// A handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
}

impl Auditor {
    /// Starts the writer. It runs until every handle is dropped, then
    /// finishes what it was given.
    pub fn start(store: Store) -> Auditor {
        let (tx, rx) = mpsc::channel(8 * MAX_BATCH);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(checkpointer(store.clone(), tx.downgrade()));
        tokio::spawn(writer(store, rx, commits.clone()));
        Auditor { tx, commits }
    }

    /// Transactions committed so far (each holds one or more records).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Returns once `draft` is committed.
    pub async fn write(&self, draft: AuditDraft) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send((draft, done)).await.map_err(|_| AuditError("the audit writer has stopped".into()))?;
        wait.await.map_err(|_| AuditError("the audit writer has stopped".into()))?
    }
}

/// Checkpoints the store's write-ahead log every second while the writer
/// lives, so that no audit commit stalls on a checkpoint.
async fn checkpointer(store: Store, alive: mpsc::WeakSender<Job>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(e) = store.checkpoint().await {
            tracing::warn!("store checkpoint failed: {e}");
        }
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut appender: Option<crate::store::AuditWriter> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (drafts, waiting): (Vec<AuditDraft>, Vec<_>) = batch.drain(..).unzip();
        if appender.is_none() {
            appender = store.audit_writer().await.map_err(|e| tracing::error!("audit writer: {e}")).ok();
        }
        let outcome = match appender.as_mut() {
            Some(w) => w.append(&drafts).await,
            None => Err(crate::store::StoreError::Unavailable("no audit connection".into())),
        };
        if outcome.is_err() {
            // A fresh connection (and chain head) for the next batch.
            appender = None;
        }
        let outcome = outcome
            .map(|_| {
                commits.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(|e| {
                tracing::error!("audit commit of {} records failed: {e}", drafts.len());
                AuditError(e.to_string())
            });
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }
}

/// Now, in Unix microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A Unix-microsecond time as RFC 3339.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    async fn store(dir: &std::path::Path) -> Store {
        Store::open("sqlite://audit.db", dir, Default::default()).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_commits_and_two_writers_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store(dir.path()).await, store(dir.path()).await);
        // Two writers on one file, as two processes would be.
        let (wa, wb) = (Auditor::start(a.clone()), Auditor::start(b));
        let mut tasks = Vec::new();
        for i in 0..600 {
            let w = if i % 2 == 0 { wa.clone() } else { wb.clone() };
            tasks.push(tokio::spawn(async move {
                let draft = record::change("test", None, "test", serde_json::json!({"n": i}));
                w.write(draft).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(verify::verify(&a).await.unwrap(), Ok(600));
        let commits = wa.commits() + wb.commits();
        assert!(commits < 600, "{commits} commits for 600 concurrent records: no grouping");
    }
}
