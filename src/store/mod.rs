//! Persistence: keys and the audit chain (budgets, holds and approvals follow
//! in their own issues). Everything above this module speaks in the row
//! types below; SQL lives only in the backend modules, so a PostgreSQL
//! backend is one more module, not a change to the domain.
//!
//! Durability: SQLite runs in WAL mode; `durability = "normal"` (the default)
//! survives `kill -9` of the gateway without an fsync per commit, `"full"`
//! also survives power loss.

pub mod chain;
mod sqlite;

use std::path::Path;

use serde_json::{Map, Value};

/// Failures of the store, as the layers above need to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(format!("migration failed: {e}"))
    }
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a crash of the process (SQLite `synchronous = NORMAL` in WAL mode).
    #[default]
    Normal,
    /// Survives power loss too (`synchronous = FULL`: an fsync per commit).
    Full,
}

/// An API key as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub secret_hash: String,
    pub org: String,
    pub team: String,
    pub role: Option<String>,
    pub label: Option<String>,
    /// Unix microseconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// An audit record before it joins the chain.
#[derive(Debug, Clone)]
pub struct AuditDraft {
    pub id: String,
    /// Unix microseconds.
    pub ts: i64,
    pub kind: String,
    pub call_id: Option<String>,
    pub org: Option<String>,
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    /// Every field of the record; the indexed columns above are copies.
    pub fields: Map<String, Value>,
}

/// An audit record in the chain, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub ts: i64,
    pub kind: String,
    pub call_id: Option<String>,
    pub org: Option<String>,
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Which audit records a query wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<i64>,
    pub since_ts: Option<i64>,
    pub until_ts: Option<i64>,
    pub org: Option<String>,
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    pub call_id: Option<String>,
    pub limit: i64,
}

/// The store: a cheap, cloneable handle.
#[derive(Clone, Debug)]
pub struct Store {
    backend: sqlite::Sqlite,
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up
    /// to date. A relative SQLite path is resolved against `base`.
    pub async fn open(url: &str, base: &Path, durability: Durability) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Store { backend: sqlite::Sqlite::open(url, base, durability).await? });
        }
        Err(StoreError::Invalid(format!(
            "store `{}`: only sqlite:// is available in this build (PostgreSQL is a later issue)",
            scrub(url)
        )))
    }

    pub async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        self.backend.insert_key(key).await
    }

    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        self.backend.key_by_hash(secret_hash).await
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        self.backend.key_by_id(id).await
    }

    pub async fn list_keys(&self, org: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        self.backend.list_keys(org).await
    }

    /// Marks a key revoked; `false` when there is no such live key.
    pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        self.backend.revoke_key(id, at).await
    }

    /// Appends `drafts` to the chain in one transaction, in order. Returns
    /// the rows as sealed. Several writers (processes, replicas) may append:
    /// each transaction reads the chain's head under the write lock.
    pub async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditRow>, StoreError> {
        self.backend.append_audit(drafts).await
    }

    /// A dedicated appender for the audit writer task (one per process).
    pub async fn audit_writer(&self) -> Result<AuditWriter, StoreError> {
        Ok(AuditWriter { inner: self.backend.audit_writer().await? })
    }

    /// Background maintenance: moves the write-ahead log into the database.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.backend.checkpoint().await
    }

    /// Audit rows in chain order.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.backend.audit(filter).await
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.backend.close().await;
    }
}

/// Appends audit records to the chain, batch by batch.
#[derive(Debug)]
pub struct AuditWriter {
    inner: sqlite::AuditWriter,
}

impl AuditWriter {
    /// Appends `drafts` in order, atomically; returns them as sealed.
    pub async fn append(&mut self, drafts: &[AuditDraft]) -> Result<Vec<AuditRow>, StoreError> {
        self.inner.append(drafts).await
    }
}

/// A store URL without its password, for messages.
pub fn scrub(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
