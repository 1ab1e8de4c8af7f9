//! The policy in force, and its hot reload.
//!
//! The folder is re-read when any file's content changes (checked by content
//! hash on a short interval: no platform file-watching to miss events on
//! network or container filesystems). A folder that fails to load leaves the
//! last good policy in force; the error is logged, kept in [`Status`] for
//! `/readyz`, and handed to the caller for the audit trail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::rate::Limiter;
use super::{Grant, Policy, load};
use crate::sync::Locked;
use crate::sync::ReadWrite;

/// What the last load attempt did.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Increases with every policy put in force.
    pub version: u64,
    /// The last failed reload's errors, cleared by the next good load.
    pub last_error: Option<String>,
    /// Why the store's grants could not be put in force, if they could not.
    pub stored_error: Option<String>,
}

/// A change put in force, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub files: Vec<(PathBuf, String)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Outcome of a reload attempt that changed something on disk.
#[derive(Debug, Clone)]
pub enum Reload {
    Applied(Diff),
    Refused(String),
}

#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The files' policy with the store's grants: what decides calls.
    current: RwLock<Arc<Policy>>,
    /// The policy as the files define it.
    files: RwLock<Arc<Policy>>,
    /// Grants made through the admin API, compiled.
    stored: RwLock<Arc<Vec<Arc<Grant>>>>,
    status: Mutex<Status>,
    /// The content digest of the folder last seen, loaded or refused.
    seen: Mutex<String>,
    changed: watch::Sender<u64>,
    /// Ticks on every reload attempt, good or refused.
    attempts: watch::Sender<u64>,
    limiter: Limiter,
}

impl Policies {
    /// `digest` is [`folder_digest`] taken *before* `initial` was loaded, so
    /// a change made while loading is picked up by the first poll.
    pub fn new(dir: &Path, initial: Policy, digest: String) -> Policies {
        let (changed, _) = watch::channel(1);
        let (attempts, _) = watch::channel(0);
        let seen = digest;
        Policies {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                current: RwLock::new(Arc::new(initial.clone())),
                files: RwLock::new(Arc::new(initial)),
                stored: RwLock::default(),
                status: Mutex::new(Status { version: 1, last_error: None, stored_error: None }),
                seen: Mutex::new(seen),
                changed,
                attempts,
                limiter: Limiter::default(),
            }),
        }
    }

    pub fn current(&self) -> Arc<Policy> {
        self.inner.current.reading().clone()
    }

    pub fn status(&self) -> Status {
        self.inner.status.locked().clone()
    }

    /// Ticks with the version each time a new policy is put in force.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Ticks after every reload attempt, whether it was put in force or refused.
    pub fn attempts(&self) -> watch::Receiver<u64> {
        self.inner.attempts.subscribe()
    }

    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    /// The grants made through the admin API now in force.
    pub fn stored(&self) -> Arc<Vec<Arc<Grant>>> {
        self.inner.stored.reading().clone()
    }

    /// Records why the store's grants could not be put in force (`None`: they were).
    pub fn note_stored_error(&self, error: Option<String>) {
        self.inner.status.locked().stored_error = error;
    }

    /// Puts the store's grants in force beside the files' (after them, in
    /// the order given), and tells listeners.
    pub fn set_stored(&self, grants: Vec<Arc<Grant>>) {
        *self.inner.stored.writing() = Arc::new(grants);
        self.combine();
        let version = {
            let mut status = self.inner.status.locked();
            status.version += 1;
            status.version
        };
        self.inner.changed.send_replace(version);
    }

    /// Rebuilds the policy in force from the files' and the store's parts.
    /// A store grant whose id a file took since is left out (files win; the
    /// API refuses to make such a grant, so only a later file edit causes it).
    fn combine(&self) {
        // Taken first: combines run one at a time, so the last one reads the
        // newest of both parts.
        let mut current = self.inner.current.writing();
        let files = self.inner.files.reading().clone();
        let stored = self.stored();
        let mut policy = (*files).clone();
        for g in stored.iter() {
            if policy.grant(&g.id).is_some() {
                tracing::warn!(grant = %g.id, "an API grant has the id of a file grant: the file's is in force");
                continue;
            }
            policy.grants.push(g.clone());
        }
        *current = Arc::new(policy);
    }

    /// Re-reads the folder if its content changed since last seen.
    pub fn reload_if_changed(&self) -> Option<Reload> {
        let digest = folder_digest(&self.inner.dir);
        {
            let mut seen = self.inner.seen.locked();
            if *seen == digest {
                return None;
            }
            *seen = digest;
        }
        Some(self.reload())
    }

    /// The policy as the files alone define it.
    pub fn files(&self) -> Arc<Policy> {
        self.inner.files.reading().clone()
    }

    /// Re-reads the folder and puts it in force if it loads.
    pub fn reload(&self) -> Reload {
        match load::load_dir(&self.inner.dir) {
            Ok(policy) => {
                let diff = {
                    let mut files = self.inner.files.writing();
                    let diff = diff(&files, &policy);
                    *files = Arc::new(policy);
                    diff
                };
                self.combine();
                let version = {
                    let mut status = self.inner.status.locked();
                    status.version += 1;
                    status.last_error = None;
                    status.version
                };
                self.inner.changed.send_replace(version);
                tracing::info!(
                    added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed,
                    "policy reloaded from {}", self.inner.dir.display()
                );
                Reload::Applied(diff)
            }
            Err(errors) => {
                let text = errors.to_string();
                tracing::error!("policy reload refused, the previous policy stays in force:\n{text}");
                self.inner.status.locked().last_error = Some(text.clone());
                Reload::Refused(text)
            }
        }
    }

    /// Polls the folder every `interval` until `shutdown`, reporting each
    /// reload attempt (and waiting for the report) before [`Self::attempts`] ticks.
    pub async fn watch<F>(self, interval: Duration, shutdown: CancellationToken, report: impl Fn(Reload) -> F + Send)
    where
        F: Future<Output = ()> + Send,
    {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            // Reading files and compiling schemas is blocking work.
            if let Ok(Some(outcome)) = tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                report(outcome).await;
                self.inner.attempts.send_modify(|n| *n += 1);
            }
        }
    }
}

/// One digest over every policy file's name and content.
pub fn folder_digest(dir: &Path) -> String {
    let files = crate::config::toml_files(dir).unwrap_or_default();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update([0]);
        match std::fs::read(&f) {
            Ok(bytes) => h.update(Sha256::digest(&bytes)),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn fingerprint(g: &Grant) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        g.org,
        g.principals,
        g.tools,
        g.effect,
        g.when.as_ref().map(|c| &c.schema),
        g.arguments.as_ref().map(|c| &c.schema),
        g.rate,
        g.max_cost_per_call,
        g.approve_above,
        g.approval,
        g.scans.as_ref().map(|l| &l.source)
    )
}

fn diff(old: &Policy, new: &Policy) -> Diff {
    let before: BTreeMap<&str, String> = old.grants.iter().map(|g| (g.id.as_str(), fingerprint(g))).collect();
    let after: BTreeMap<&str, String> = new.grants.iter().map(|g| (g.id.as_str(), fingerprint(g))).collect();
    let mut d = Diff { files: new.files.clone(), ..Diff::default() };
    if old.scans.as_ref().map(|l| &l.source) != new.scans.as_ref().map(|l| &l.source) {
        d.changed.push("scans".to_string());
    }
    for (id, fp) in &after {
        match before.get(id) {
            None => d.added.push(id.to_string()),
            Some(old) if old != fp => d.changed.push(id.to_string()),
            Some(_) => {}
        }
    }
    d.removed = before.keys().filter(|id| !after.contains_key(*id)).map(|id| id.to_string()).collect();
    // Budgets defined in files, as `budget:<id>`.
    for b in &new.budgets {
        match old.budgets.iter().find(|o| o.id == b.id) {
            None => d.added.push(format!("budget:{}", b.id)),
            Some(o)
                if (&o.scope, &o.org, o.unit, o.limit, &o.period) != (&b.scope, &b.org, b.unit, b.limit, &b.period) =>
            {
                d.changed.push(format!("budget:{}", b.id))
            }
            Some(_) => {}
        }
    }
    for o in &old.budgets {
        if !new.budgets.iter().any(|b| b.id == o.id) {
            d.removed.push(format!("budget:{}", o.id));
        }
    }
    d
}
