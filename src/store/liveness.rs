//! Whether the process that owns a budget hold is still running, so that a
//! dead process's holds are released at once instead of when they expire.
//!
//! - SQLite (processes on one machine): a lock file per process
//!   (`<db>-owners/<id>`), held for the process's life. A lock that can be
//!   taken belongs to a dead process; the OS releases it on `kill -9`.
//! - PostgreSQL (replicas on several machines): a session advisory lock per
//!   process, held on a connection of its own. PostgreSQL releases it when
//!   the session ends, which it notices when the process dies (its socket
//!   closes) or, for a machine that vanished, at TCP keepalive's timeout. A
//!   lock must stay free for [`SESSION_GRACE`] before its owner counts as
//!   dead.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Backend, Store, postgres};
use crate::store::error::StoreError;
use crate::sync::Locked;

/// How long a PostgreSQL owner's lock must stay free before the owner is
/// called dead: longer than a live replica takes to notice a lost
/// connection and take its lock again (`postgres::owners`), so a network
/// blip or a database restart never releases a live replica's holds.
const SESSION_GRACE: Duration = Duration::from_secs(10);

/// This process's claim to be alive, for as long as it is held.
pub struct Liveness {
    id: String,
    inner: Inner,
}

enum Inner {
    Files {
        dir: PathBuf,
        _lock: Option<File>,
    },
    Session {
        store: postgres::Postgres,
        _session: postgres::owners::Session,
        /// Owners seen without their lock, and since when.
        suspects: Mutex<HashMap<String, Instant>>,
        grace: Duration,
    },
}

impl Store {
    /// Registers the process `id` as alive.
    pub async fn register_owner(&self, id: &str) -> Liveness {
        let inner = match &self.backend {
            Backend::Sqlite(b) => {
                let dir = b.sidecar("owners");
                let lock = std::fs::create_dir_all(&dir).ok().and_then(|()| {
                    let f = File::create(dir.join(id)).ok()?;
                    f.try_lock().ok()?;
                    Some(f)
                });
                if lock.is_none() {
                    tracing::warn!("cannot take a liveness lock; this process's holds will only expire by time");
                }
                Inner::Files { dir, _lock: lock }
            }
            Backend::Postgres(b) => Inner::Session {
                store: b.clone(),
                _session: b.hold_session(id).await,
                suspects: Mutex::default(),
                grace: SESSION_GRACE,
            },
        };
        Liveness { id: id.to_string(), inner }
    }
}

impl Liveness {
    /// The same claim with another grace for PostgreSQL owners (tests).
    pub fn with_grace(mut self, d: Duration) -> Liveness {
        if let Inner::Session { grace, .. } = &mut self.inner {
            *grace = d;
        }
        self
    }

    /// Of `owners`, those whose process is gone (never this one, never an
    /// owner that is not a process).
    pub async fn dead(&self, owners: &[String]) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<&String> = owners
            .iter()
            .filter(|o| **o != self.id)
            // Holds of pending actions belong to no process: they outlive restarts.
            .filter(|o| !o.starts_with(super::HOLD_OWNER_PREFIX))
            .collect();
        match &self.inner {
            Inner::Files { dir, .. } => Ok(candidates
                .into_iter()
                .filter(|o| !o.contains(['/', '\\', '.']))
                .filter(|o| match File::open(dir.join(o)) {
                    // Nobody holds the lock: its process is gone.
                    Ok(f) => f.try_lock().is_ok(),
                    Err(_) => true,
                })
                .cloned()
                .collect()),
            Inner::Session { store, suspects, grace, .. } => {
                let free = store.dead_sessions(&candidates).await?;
                let now = Instant::now();
                let mut suspects = suspects.locked();
                // An owner whose lock is held again is no longer suspect.
                suspects.retain(|o, _| free.contains(o));
                Ok(free
                    .into_iter()
                    .filter(|o| now.duration_since(*suspects.entry(o.clone()).or_insert(now)) >= *grace)
                    .collect())
            }
        }
    }

    /// Forgets the dead owners whose holds were released, and (on SQLite)
    /// removes the lock files of processes that are gone, so the folder does
    /// not grow with every process ever started.
    pub async fn forget(&self, dead: &[String]) {
        let Inner::Files { dir, .. } = &self.inner else { return };
        for o in dead {
            let _ = std::fs::remove_file(dir.join(o));
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let names: Vec<String> =
            entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
        if let Ok(gone) = self.dead(&names).await {
            for o in gone {
                let _ = std::fs::remove_file(dir.join(o));
            }
        }
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        // A clean exit leaves no lock file behind (its holds were settled or
        // are released by the next sweep as expired). The PostgreSQL session
        // ends with its task.
        if let Inner::Files { dir, .. } = &self.inner {
            let _ = std::fs::remove_file(dir.join(&self.id));
        }
    }
}
