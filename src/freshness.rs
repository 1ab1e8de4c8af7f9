//! Read-your-writes across replicas. A request is decided against every key
//! and grant change committed before it arrived, on whichever replica: when
//! an admin's revocation through replica B has been answered, the next call
//! through replica A is refused, even if A has not yet heard B's
//! notification.
//!
//! On a shared store (PostgreSQL) each request first waits for a look at the
//! store's change counters that *started after the request arrived*. Looks
//! are coalesced: one is in flight at a time and serves every request that
//! arrived before it started, so under load the cost is one short read per
//! round of requests, not per request. SQLite needs none of this: its key
//! cache checks a marker file on every lookup, and admin changes made
//! beside the gateway (the CLI on the same file) are followed within 250 ms.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::admin::Admin;
use crate::store::StoreError;

#[derive(Default)]
pub struct Freshness {
    /// Looks started so far; a look's number is its place in this count.
    started: AtomicU64,
    /// The number of the last look finished.
    finished: AtomicU64,
    /// One look at a time.
    turn: tokio::sync::Mutex<()>,
}

impl Freshness {
    /// Returns once this process is up to date with every change committed
    /// before the call. Fails closed: when the store cannot be read, the
    /// request is refused (the caller answers 503), never decided on what
    /// this process happened to know.
    pub async fn ensure(&self, admin: &Admin) -> Result<(), StoreError> {
        if !admin.store.is_shared() {
            return Ok(());
        }
        let arrived = self.started.load(Ordering::SeqCst);
        let _turn = self.turn.lock().await;
        if self.finished.load(Ordering::SeqCst) > arrived {
            // A look that started after this request arrived has finished.
            return Ok(());
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(counter) = admin.store.catch_up().await?
            && admin.applied().await != Some(counter)
        {
            // On a task of its own: a request dropped mid-reload (its client
            // went away) must not leave the reload half done.
            let admin = admin.clone();
            let reloaded = tokio::spawn(async move { crate::admin::reload(&admin).await }).await;
            reloaded.map_err(|e| StoreError::Unavailable(format!("admin reload failed: {e}")))??;
        }
        self.finished.store(n, Ordering::SeqCst);
        Ok(())
    }
}
