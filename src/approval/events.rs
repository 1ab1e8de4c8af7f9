//! The feed of pending-action changes: the WebSocket stream, calls waiting
//! for a decision and the task executor all listen here.
//!
//! Changes made by this process are published as they commit. Changes made
//! by other processes on the same store (the CLI, another gateway) are found
//! by [`Events::follow`], which reads rows whose `rev` is past the last one
//! seen. Each (action, rev) is published once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::store::{ApprovalRow, Store};

/// Changes buffered per listener before a slow one lags (and re-reads).
const CAPACITY: usize = 1024;
/// Most actions remembered for de-duplication.
const REMEMBERED: usize = 10_000;

pub struct Events {
    tx: broadcast::Sender<Arc<ApprovalRow>>,
    /// The newest rev published per action.
    seen: Mutex<HashMap<String, i64>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events { tx: broadcast::channel(CAPACITY).0, seen: Mutex::default() }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ApprovalRow>> {
        self.tx.subscribe()
    }

    /// Publishes `row` unless this or a newer change of it was published.
    pub fn publish(&self, row: Arc<ApprovalRow>) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(&row.id).is_some_and(|r| *r >= row.rev) {
                return;
            }
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            seen.insert(row.id.clone(), row.rev);
        }
        let _ = self.tx.send(row);
    }

    /// Publishes changes committed by other processes, checking every `every`.
    pub async fn follow(self: Arc<Self>, store: Store, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let last = match store.approvals_rev().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("approval feed: {e}");
                0
            }
        };
        // The newest rev seen, carried from one run to the next.
        let last = Arc::new(std::sync::atomic::AtomicI64::new(last));
        crate::periodic::every(every, shutdown, || {
            let (events, store, last) = (self.clone(), store.clone(), last.clone());
            async move {
                let since = last.load(std::sync::atomic::Ordering::Relaxed);
                match store.approvals_since(since, 512).await {
                    Ok(rows) => {
                        for row in rows {
                            last.fetch_max(row.rev, std::sync::atomic::Ordering::Relaxed);
                            events.publish(Arc::new(row));
                        }
                    }
                    Err(e) => tracing::warn!("approval feed: {e}"),
                }
            }
        })
        .await;
    }
}
