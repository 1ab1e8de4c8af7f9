//! The feed of pending-action changes: the WebSocket stream, calls waiting
//! for a decision and the task executor all listen here.
//!
//! Changes made by this process are published as they commit. Changes made
//! by other processes on the same store (the CLI, another replica) are found
//! by [`Events::follow`], which reads rows whose `rev` is past the last one
//! seen when the store notifies a change (PostgreSQL) or on a timer
//! (SQLite). Each (action, rev) is published once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::ids::ApprovalId;
use crate::store::changes::Topic;
use crate::store::{ApprovalRow, Store};
use crate::sync::Locked;

/// Changes buffered per listener before a slow one lags (and re-reads).
const CAPACITY: usize = 1024;
/// Changes read per query when catching up.
const PAGE: i64 = 512;
/// Most actions remembered for de-duplication.
const REMEMBERED: usize = 10_000;

pub struct Events {
    tx: broadcast::Sender<Arc<ApprovalRow>>,
    /// The newest rev published per action.
    seen: Mutex<HashMap<ApprovalId, i64>>,
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
            let mut seen = self.seen.locked();
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

    /// Publishes changes committed by other processes: when the store
    /// notifies (PostgreSQL), else checking every `every` (SQLite).
    pub async fn follow(self: Arc<Self>, store: Store, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        // Subscribed before the first read: a change committed after it is heard.
        let mut changes = store.changes(Topic::Approvals, every);
        let mut last = match store.approvals_rev().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("approval feed: {e}");
                0
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changes.next() => {}
            }
            // More than a page may have changed: read until caught up.
            loop {
                match store.approvals_since(last, PAGE).await {
                    Ok(rows) => {
                        let full = rows.len() as i64 == PAGE;
                        for row in rows {
                            last = last.max(row.rev);
                            self.publish(Arc::new(row));
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("approval feed: {e}");
                        break;
                    }
                }
            }
        }
    }
}
