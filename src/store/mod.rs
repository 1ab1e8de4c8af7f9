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

/// A budget as stored. Amounts are micro-units (`unit = "money"`) or tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRow {
    pub id: String,
    /// `key:<id>`, `team:<name>` or `org:<name>`.
    pub scope: String,
    pub org: Option<String>,
    pub unit: String,
    pub limit_amount: i64,
    /// `none`, `daily`, `weekly` or `monthly`.
    pub period: String,
    /// `file:<path>` or `api`.
    pub source: String,
    pub updated_at: i64,
}

/// A budget with what it has spent and holds in its current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub budget: BudgetRow,
    pub period_start: i64,
    pub spent: i64,
    pub held: i64,
}

/// Reserve `money` and `tokens` on every budget of `scopes`, all or nothing.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub hold_id: String,
    /// The process that holds it (see `budget::Owner`).
    pub owner: String,
    pub call_id: String,
    pub principal: String,
    pub tool: String,
    pub org: String,
    pub scopes: Vec<String>,
    pub money: i64,
    pub tokens: i64,
    pub now: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldLine {
    pub budget_id: String,
    pub unit: String,
    pub period_start: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Reserved on these budgets (none: no budget applies, nothing stored).
    Held(Vec<HoldLine>),
    /// This budget would go below zero; nothing was reserved anywhere.
    Denied { budget_id: String, unit: String, limit: i64, spent: i64, held: i64, needed: i64 },
}

/// How a hold ends: `settled` (charged), `released` or `expired` (charged 0
/// unless a failure cost applies).
#[derive(Debug, Clone)]
pub struct Resolution {
    pub hold_id: String,
    pub state: &'static str,
    pub charged: i64,
    pub charged_tokens: i64,
    pub now: i64,
}

/// A budget change with an idempotency key: the key and a digest of the request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// The outcome of an idempotent change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Done now; the stored response.
    Now(String),
    /// Done before under the same key; the first response.
    Replayed(String),
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

    /// Appends `drafts` to the chain in one transaction, in order. Several
    /// writers (processes, replicas) may append: each transaction reads the
    /// chain's head under the write lock.
    pub async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<(), StoreError> {
        self.backend.append_audit(drafts).await
    }

    /// The connection of the process's single writer task (SQLite allows one
    /// writer at a time; sharing one connection keeps our own writes from
    /// waiting on each other in SQLite's busy handler).
    pub async fn writer(&self) -> Result<Writer, StoreError> {
        Ok(Writer { inner: self.backend.writer().await? })
    }

    /// Background maintenance: moves the write-ahead log into the database.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.backend.checkpoint().await
    }

    /// Applies `change` to the budget `id` in one transaction: it receives the
    /// current row (if any) and returns the new one, or why not. With an
    /// idempotency key, a retry returns the first response and changes nothing.
    pub async fn change_budget(
        &self,
        id: &str,
        idem: Option<Idempotency>,
        change: impl FnOnce(Option<BudgetRow>) -> Result<BudgetRow, String> + Send,
    ) -> Result<Result<Applied, String>, StoreError> {
        self.backend.change_budget(id, idem, change).await
    }

    /// Replaces the budgets that came from policy files with `rows`.
    pub async fn sync_file_budgets(&self, rows: &[BudgetRow]) -> Result<(), StoreError> {
        self.backend.sync_file_budgets(rows).await
    }

    /// Budgets with their usage in the period containing `now`.
    pub async fn budget_usage(
        &self,
        org: Option<&str>,
        now: i64,
        period_start: fn(&str, i64) -> Option<i64>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.backend.budget_usage(org, now, period_start).await
    }

    /// Open holds past their expiry, or of owners in `dead_owners`.
    pub async fn stale_holds(&self, now: i64, dead_owners: &[String]) -> Result<Vec<String>, StoreError> {
        self.backend.stale_holds(now, dead_owners).await
    }

    /// Owners of open holds.
    pub async fn hold_owners(&self) -> Result<Vec<String>, StoreError> {
        self.backend.hold_owners().await
    }

    /// The state of a hold, if it exists.
    pub async fn hold_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.backend.hold_state(id).await
    }

    /// Audit rows in chain order.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.backend.audit(filter).await
    }

    /// Where processes sharing this store on one machine keep their liveness
    /// locks (see `budget::Owner`). `None` for stores shared across machines.
    pub fn owners_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.backend.sidecar("owners"))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.backend.close().await;
    }
}

/// The single writer's connection: audit appends and ledger transactions.
#[derive(Debug)]
pub struct Writer {
    inner: sqlite::AuditWriter,
}

/// What one writer cycle did, per job, in the order given.
pub use sqlite::CycleOutcome;

impl Writer {
    /// One transaction: resolves `resolves`, then takes `holds` (in order,
    /// each all or nothing), then appends `audits` and the records `then`
    /// makes from those outcomes to the chain.
    pub async fn cycle(
        &mut self,
        resolves: &[Resolution],
        holds: &[HoldRequest],
        audits: &[AuditDraft],
        period_start: fn(&str, i64) -> Option<i64>,
        then: impl FnOnce(&[bool], &[HoldOutcome]) -> Vec<AuditDraft> + Send,
    ) -> Result<CycleOutcome, StoreError> {
        self.inner.cycle(resolves, holds, audits, period_start, then).await
    }
}

/// A store URL without its password, for messages.
pub fn scrub(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
