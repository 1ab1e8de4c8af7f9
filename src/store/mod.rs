//! Persistence. Everything above this module speaks in the row types of
//! its domain files (`keys`, `audit`, `ledger`, `approvals`, `admin`), in
//! the typed words of `kinds` and in [`StoreError`]; the [`Store`] facade
//! here dispatches each call to a backend, and SQL lives only in the
//! backend modules (`sqlite`, `postgres`) and the statements they share,
//! written once in PostgreSQL's text (`sql` for the ledger and the chain,
//! `keys_sql`, `budgets_sql`, `approvals_sql`, `admin_sql`). The backends import the domain files, never this one.
//!
//! Durability: SQLite runs in WAL mode; `durability = "normal"` (the default)
//! survives `kill -9` of the gateway without an fsync per commit, `"full"`
//! also survives power loss.

mod admin;
mod admin_sql;
mod approvals;
mod approvals_sql;
mod audit;
mod budgets_sql;
pub mod chain;
pub mod changes;
mod error;
mod holds;
mod keycache;
mod keys;
mod keys_sql;
pub mod kinds;
mod ledger;
pub mod liveness;
mod location;
mod postgres;
mod rows;
mod sql;
mod sqlite;

pub use admin::{GrantEdit, GrantRevisionRow, GrantRow, PinRow};
pub use approvals::{ApprovalRow, AttemptRow, DeliveryRow, Transition, Transitioned};
pub use audit::{AuditDraft, AuditFilter, AuditRow};
pub use error::StoreError;
pub use keys::KeyRow;
pub use kinds::{Durability, HoldState, Status};
pub use ledger::{
    Applied, BudgetRow, CycleOutcome, HOLD_OWNER_PREFIX, HoldLine, HoldOutcome, HoldRequest, Idempotency, Resolution,
    ReusedKey, UsageRow,
};
pub use location::{Location, scrub};
use std::path::Path;

/// The store: a cheap, cloneable handle.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Runs the same call on whichever backend the store has.
macro_rules! on {
    ($self:expr, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up
    /// to date. A relative SQLite path is resolved against `base`.
    pub async fn open(url: &str, base: &Path, durability: Durability) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Store { backend: Backend::Sqlite(sqlite::Sqlite::open(url, base, durability).await?) });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Store { backend: Backend::Postgres(postgres::Postgres::open(url).await?) });
        }
        Err(StoreError::Invalid(format!("store `{}`: must be a sqlite:// or postgres:// URL", scrub(url))))
    }

    /// Where `url` points, for people: a SQLite file's absolute path and
    /// whether it exists yet, or a PostgreSQL URL without its credentials.
    pub fn location(url: &str, base: &Path) -> Location {
        if url.starts_with("sqlite:") {
            return match sqlite::path_of(url, base) {
                Ok(p) => {
                    let p = std::path::absolute(&p).unwrap_or(p);
                    Location { exists: p.exists(), text: p.display().to_string() }
                }
                Err(e) => Location { exists: false, text: e.to_string() },
            };
        }
        Location { exists: true, text: scrub(url) }
    }

    pub async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        on!(self, b => b.insert_key(key).await)
    }

    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        on!(self, b => b.key_by_hash(secret_hash).await)
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        on!(self, b => b.key_by_id(id).await)
    }

    pub async fn list_keys(&self, org: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        on!(self, b => b.list_keys(org).await)
    }

    /// Marks a key revoked; `false` when there is no such live key.
    pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        on!(self, b => b.revoke_key(id, at).await)
    }

    /// Appends `drafts` to the chain in one transaction, in order. Several
    /// writers (processes, replicas) may append: each transaction reads the
    /// chain's head under the write lock.
    pub async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<(), StoreError> {
        on!(self, b => b.append_audit(drafts).await)
    }

    /// The connection of the process's single writer task (SQLite allows one
    /// writer at a time; sharing one connection keeps our own writes from
    /// waiting on each other in SQLite's busy handler).
    pub async fn writer(&self) -> Result<Writer, StoreError> {
        Ok(Writer {
            inner: match &self.backend {
                Backend::Sqlite(b) => WriterInner::Sqlite(b.writer().await?),
                Backend::Postgres(b) => WriterInner::Postgres(b.writer().await?),
            },
        })
    }

    /// Applies `change` to the budget `id` in one transaction: it receives the
    /// current row (if any) and returns the new one, or why not. With an
    /// idempotency key, a retry returns the first response and changes nothing.
    pub async fn change_budget<E: From<ReusedKey> + Send>(
        &self,
        id: &str,
        idem: Option<Idempotency>,
        change: impl FnOnce(Option<BudgetRow>) -> Result<BudgetRow, E> + Send,
    ) -> Result<Result<Applied, E>, StoreError> {
        on!(self, b => b.change_budget(id, idem, change).await)
    }

    /// Replaces the budgets that came from policy files with `rows`.
    pub async fn sync_file_budgets(&self, rows: &[BudgetRow]) -> Result<(), StoreError> {
        on!(self, b => b.sync_file_budgets(rows).await)
    }

    /// Budgets with their usage in the period containing `now`.
    pub async fn budget_usage(
        &self,
        org: Option<&str>,
        now: i64,
        period_start: fn(crate::calendar::Period, i64) -> Option<i64>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        on!(self, b => b.budget_usage(org, now, period_start).await)
    }

    /// Open holds past their expiry, or of owners in `dead_owners`.
    pub async fn stale_holds(&self, now: i64, dead_owners: &[String]) -> Result<Vec<String>, StoreError> {
        on!(self, b => b.stale_holds(now, dead_owners).await)
    }

    /// Owners of open holds.
    pub async fn hold_owners(&self) -> Result<Vec<String>, StoreError> {
        on!(self, b => b.hold_owners().await)
    }

    /// The state of a hold, if it exists.
    pub async fn hold_state(&self, id: &str) -> Result<Option<HoldState>, StoreError> {
        on!(self, b => b.hold_state(id).await)
    }

    /// Audit rows in chain order.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        on!(self, b => b.audit(filter).await)
    }

    /// Starts hearing what other processes commit, where the backend can
    /// tell (PostgreSQL's LISTEN/NOTIFY; nothing to start on SQLite). For a
    /// long-running process; until `shutdown`.
    pub fn listen(&self, shutdown: tokio_util::sync::CancellationToken) {
        if let Backend::Postgres(b) = &self.backend {
            b.listen(shutdown);
        }
    }

    /// For `/readyz`: the backend, and on PostgreSQL whether other replicas'
    /// changes are being heard now (else followers poll until they are).
    pub fn status(&self) -> serde_json::Value {
        match &self.backend {
            Backend::Sqlite(_) => serde_json::json!({"backend": "sqlite"}),
            Backend::Postgres(b) => {
                serde_json::json!({"backend": "postgres", "notifications": b.feed().listening()})
            }
        }
    }

    /// Whether several processes on several machines may share this store
    /// (PostgreSQL), so that what they commit must be looked for.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// On a shared store: brings this process's key cache up to every key
    /// change committed so far, by any process, and returns the admin change
    /// counter (see [`Store::admin_changes`]) for the caller to compare with
    /// the one it has applied. One short read. `None` on SQLite, whose key
    /// cache checks its marker on every lookup.
    pub async fn catch_up(&self) -> Result<Option<i64>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(b) => b.catch_up().await.map(Some),
        }
    }

    /// On a shared store: takes one call from the rate bucket of (`grant`,
    /// `key`) that every replica shares (GCRA on the database's clock; µs).
    /// `Ok(None)`: allowed; `Ok(Some(wait))`: refused, free again in `wait`.
    /// `None` on SQLite, whose one gateway process keeps its buckets in memory.
    pub async fn take_rate(
        &self,
        grant: &str,
        key: &str,
        interval: i64,
        window: i64,
    ) -> Option<Result<Option<i64>, StoreError>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.take_rate(grant, key, interval, window).await),
        }
    }

    /// Forgets shared rate buckets that are full again.
    pub async fn prune_rates(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(b) => b.prune_rates().await,
        }
    }

    /// Changes of `topic` committed by any process: notified where the
    /// backend tells (after [`Store::listen`]), else every `poll`.
    pub fn changes(&self, topic: changes::Topic, poll: std::time::Duration) -> changes::Changes {
        let feed = match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.feed()),
        };
        changes::Changes::new(topic, poll, feed)
    }

    /// Stores a new pending action, its deliveries (one per webhook URL) and
    /// its audit record in one transaction, and makes its hold (if any)
    /// belong to the action, so that the hold outlives this process.
    /// `None`: an open action for the same exact call exists (nothing stored).
    pub async fn create_approval(
        &self,
        row: &ApprovalRow,
        hold_expires_at: i64,
        webhooks: &[String],
        record: AuditDraft,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        on!(self, b => b.create_approval(row, hold_expires_at, webhooks, record).await)
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        on!(self, b => b.approval(id).await)
    }

    /// The newest action for this exact call whose outcome the agent has not
    /// been told yet, or that ran at or after `replay_since` (a retry of it
    /// gets its result again).
    pub async fn approval_for_call(
        &self,
        principal: &str,
        tool: &str,
        digest: &str,
        tool_hash: &str,
        replay_since: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        on!(self, b => b.approval_for_call(principal, tool, digest, tool_hash, replay_since).await)
    }

    /// Actions of `org` (all orgs: `None`), newest first.
    pub async fn approvals(
        &self,
        org: Option<&str>,
        status: Option<Status>,
        limit: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        on!(self, b => b.approvals(org, status, limit).await)
    }

    /// Actions changed after `rev`, in change order.
    pub async fn approvals_since(&self, rev: i64, limit: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        on!(self, b => b.approvals_since(rev, limit).await)
    }

    /// The newest change counter of the approvals.
    pub async fn approvals_rev(&self) -> Result<i64, StoreError> {
        on!(self, b => b.approvals_rev().await)
    }

    /// Moves a pending action to `t.to` (a cancel also takes an approved
    /// action that has not started), releasing its hold unless approved, and
    /// commits `record`'s audit record with it. At most one transition of an
    /// action ever succeeds.
    pub async fn transition_approval(
        &self,
        t: &Transition,
        record: impl FnOnce(&ApprovalRow) -> AuditDraft + Send,
    ) -> Result<Transitioned, StoreError> {
        on!(self, b => b.transition_approval(t, record).await)
    }

    /// Pending actions past their expiry become `expired`, their holds
    /// released, each with its audit record.
    pub async fn expire_approvals(
        &self,
        now: i64,
        record: impl Fn(&ApprovalRow) -> AuditDraft + Send,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        on!(self, b => b.expire_approvals(now, record).await)
    }

    /// Claims the execution of an approved action: `true` for exactly one caller.
    pub async fn claim_execution(&self, id: &str, by: &str, now: i64) -> Result<Option<ApprovalRow>, StoreError> {
        on!(self, b => b.claim_execution(id, by, now).await)
    }

    /// Records the executed call's result; the stored arguments are dropped.
    /// Returns the action as it now stands.
    pub async fn finish_execution(
        &self,
        id: &str,
        result: &str,
        reported: bool,
        now: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        on!(self, b => b.finish_execution(id, result, reported, now).await)
    }

    /// Notes that the agent has been told the action's final outcome.
    pub async fn mark_reported(&self, id: &str, now: i64) -> Result<(), StoreError> {
        on!(self, b => b.mark_reported(id, now).await)
    }

    /// Claims up to `limit` deliveries that are due, until `lease_until`.
    pub async fn due_deliveries(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        on!(self, b => b.due_deliveries(now, lease_until, limit).await)
    }

    /// Records an attempt and the delivery's new state.
    pub async fn record_attempt(&self, a: &AttemptRow, state: &str, next_at: i64) -> Result<(), StoreError> {
        on!(self, b => b.record_attempt(a, state, next_at).await)
    }

    /// The deliveries of an action with their attempts.
    pub async fn deliveries(&self, approval_id: &str) -> Result<Vec<(DeliveryRow, Vec<AttemptRow>)>, StoreError> {
        on!(self, b => b.deliveries(approval_id).await)
    }

    /// Remembers a signature; `false` if it was seen before (a replay).
    /// Signatures older than `forget_before` are forgotten.
    pub async fn use_signature(&self, signature: &str, now: i64, forget_before: i64) -> Result<bool, StoreError> {
        on!(self, b => b.use_signature(signature, now, forget_before).await)
    }

    /// Grants made through the API (of `org`, or all), oldest first.
    pub async fn grants(&self, org: Option<&str>) -> Result<Vec<GrantRow>, StoreError> {
        on!(self, b => b.grants(org).await)
    }

    pub async fn grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        on!(self, b => b.grant(id).await)
    }

    /// Changes the API grant `id` in one transaction with its revision and
    /// audit record: `decide` sees the current row and the next revision
    /// number, and returns the edit or why not (nothing is written then).
    pub async fn change_grant<E: Send>(
        &self,
        id: &str,
        decide: impl FnOnce(Option<&GrantRow>, i64) -> Result<GrantEdit, E> + Send,
    ) -> Result<Result<GrantRevisionRow, E>, StoreError> {
        on!(self, b => b.change_grant(id, decide).await)
    }

    /// Every revision of an API grant, oldest first (deleted grants too).
    pub async fn grant_revisions(&self, id: &str) -> Result<Vec<GrantRevisionRow>, StoreError> {
        on!(self, b => b.grant_revisions(id).await)
    }

    /// Pins set by admins.
    pub async fn pins(&self) -> Result<Vec<PinRow>, StoreError> {
        on!(self, b => b.pins().await)
    }

    /// Sets an admin pin with its audit record, in one transaction.
    pub async fn set_pin(&self, pin: &PinRow, record: AuditDraft) -> Result<(), StoreError> {
        on!(self, b => b.set_pin(pin, record).await)
    }

    /// A counter that increases with every admin change of grants or pins,
    /// by any process on this store.
    pub async fn admin_changes(&self) -> Result<i64, StoreError> {
        on!(self, b => b.admin_changes().await)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        on!(self, b => b.close().await)
    }
}

/// The single writer's connection: audit appends and ledger transactions.
#[derive(Debug)]
pub struct Writer {
    inner: WriterInner,
}

#[derive(Debug)]
enum WriterInner {
    Sqlite(sqlite::AuditWriter),
    Postgres(postgres::AuditWriter),
}

impl Writer {
    /// Moves SQLite's write-ahead log into the database (see
    /// `sqlite::AuditWriter::checkpoint`); PostgreSQL checkpoints on its own.
    pub async fn checkpoint(&mut self) -> Result<(), StoreError> {
        match &mut self.inner {
            WriterInner::Sqlite(w) => w.checkpoint().await,
            WriterInner::Postgres(_) => Ok(()),
        }
    }

    /// One transaction: resolves `resolves`, then takes `holds` (in order,
    /// each all or nothing), then appends `audits` and the records `then`
    /// makes from those outcomes to the chain.
    pub async fn cycle(
        &mut self,
        resolves: &[Resolution],
        holds: &[HoldRequest],
        audits: &[AuditDraft],
        period_start: fn(crate::calendar::Period, i64) -> Option<i64>,
        then: impl FnOnce(&[bool], &[HoldOutcome]) -> Vec<AuditDraft> + Send,
    ) -> Result<CycleOutcome, StoreError> {
        match &mut self.inner {
            WriterInner::Sqlite(w) => w.cycle(resolves, holds, audits, period_start, then).await,
            WriterInner::Postgres(w) => w.cycle(resolves, holds, audits, period_start, then).await,
        }
    }
}
