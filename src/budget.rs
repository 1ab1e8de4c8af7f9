//! Budgets and the ledger: a hold before a call, a settle after it.
//!
//! A hold reserves the call's estimated cost on every budget that applies to
//! the caller (its key, its team, its org), all or nothing, in one store
//! transaction; it is denied, with what is left, when any budget would go
//! below zero. A hold resolves exactly once: settled (charged), released, or
//! expired. Holds of a process that died are released by the next process
//! to start on the store, or by any process's sweeper once they expire.
//!
//! Whether a process is alive is the store's to tell (`store::liveness`: a
//! lock file per process on SQLite, a session advisory lock per replica on
//! PostgreSQL; both released when the process dies, `kill -9` included).

use std::sync::Arc;
use std::time::Duration;

use crate::identity::Principal;
use crate::ids::{CallId, HoldId};
use crate::journal::{Journal, WithHold, WithResolution};
use crate::store::liveness::Liveness;
use crate::store::{HoldLine, HoldOutcome, HoldRequest, HoldState, Resolution, Store, StoreError};

pub use crate::calendar::{PERIODS, Period};
pub use crate::store::kinds::Unit;

/// Whose calls a budget counts: `key:<id>`, `team:<name>` or `org:<name>`.
pub fn valid_scope(scope: &str) -> bool {
    match scope.split_once(':') {
        Some(("key" | "team" | "org", name)) => crate::identity::valid_name(name),
        _ => false,
    }
}

/// The scopes that apply to a caller, tightest first.
pub fn scopes_of(p: &Principal) -> Vec<String> {
    vec![format!("key:{}", p.key_id), format!("team:{}", p.team), format!("org:{}", p.org)]
}

/// This process, as the owner of its holds.
pub struct Owner {
    pub id: String,
    /// Held for the life of the process (see `store::liveness`).
    liveness: Liveness,
}

impl Owner {
    /// Registers this process as alive on the store.
    pub async fn register(store: &Store) -> Owner {
        let id = uuid::Uuid::new_v4().to_string();
        let liveness = store.register_owner(&id).await;
        Owner { id, liveness }
    }
}

/// A hold taken for one call.
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: HoldId,
    pub money: i64,
    pub tokens: i64,
    pub lines: Vec<HoldLine>,
}

impl Hold {
    pub fn budget_ids(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.budget_id.clone()).collect()
    }
}

/// The hold stage's outcome.
#[derive(Debug, Clone)]
pub enum Held {
    /// No budget applies with a non-zero amount: nothing to hold.
    Free,
    Held(Hold),
    /// Refused by this budget: what it has left, and what the call needs.
    Denied {
        budget_id: String,
        unit: Unit,
        remaining: i64,
        needed: i64,
    },
}

/// What a call asks the ledger to hold.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub principal: &'a Principal,
    pub call_id: &'a CallId,
    pub tool: &'a str,
    /// Micro-units of money.
    pub money: i64,
    pub tokens: i64,
    /// How long the hold may stay unresolved before the sweeper releases it.
    pub ttl: Duration,
}

/// Takes and resolves holds for calls.
#[derive(Clone)]
pub struct Ledger {
    journal: Journal,
    store: Store,
    owner: Arc<Owner>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl Ledger {
    pub fn new(journal: Journal, store: Store, owner: Owner) -> Ledger {
        Ledger { journal, store, owner: Arc::new(owner), clock: Arc::new(crate::audit::now_micros) }
    }

    /// The same ledger on another clock (Unix microseconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Ledger {
        self.clock = Arc::new(clock);
        self
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Reserves `money` (micro-units) and `tokens` on every budget of the
    /// caller, for at most `ttl`. `record`'s audit record (the call's intent)
    /// commits in the same transaction as the hold; it is not called when
    /// there is nothing to hold.
    pub async fn hold(&self, ask: Ask<'_>, record: Option<WithHold>) -> Result<Held, StoreError> {
        let Ask { principal, call_id, tool, money, tokens, ttl } = ask;
        if money <= 0 && tokens <= 0 {
            return Ok(Held::Free);
        }
        let now = self.now();
        let id = HoldId::random();
        let req = HoldRequest {
            hold_id: id.clone(),
            owner: self.owner.id.clone(),
            call_id: call_id.clone(),
            principal: principal.to_string(),
            tool: tool.to_string(),
            org: principal.org.clone(),
            scopes: scopes_of(principal),
            money: money.max(0),
            tokens: tokens.max(0),
            now,
            expires_at: now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)),
        };
        Ok(match self.journal.hold(req, record).await? {
            HoldOutcome::Held(lines) if lines.is_empty() => Held::Free,
            HoldOutcome::Held(lines) => Held::Held(Hold { id, money, tokens, lines }),
            HoldOutcome::Denied { budget_id, unit, limit, spent, held, needed } => {
                Held::Denied { budget_id, unit, remaining: (limit - spent - held).max(0), needed }
            }
        })
    }

    /// Charges `money`/`tokens` (at most what was held) and releases the rest.
    /// `false` if the hold had already been resolved. `record`'s audit record
    /// commits in the same transaction.
    pub async fn settle(
        &self,
        hold: &Hold,
        money: i64,
        tokens: i64,
        record: Option<WithResolution>,
    ) -> Result<bool, StoreError> {
        let state = if money > 0 || tokens > 0 { HoldState::Settled } else { HoldState::Released };
        self.resolve(&hold.id, state, money, tokens, record).await
    }

    async fn resolve(
        &self,
        id: &HoldId,
        state: HoldState,
        money: i64,
        tokens: i64,
        record: Option<WithResolution>,
    ) -> Result<bool, StoreError> {
        let r = Resolution { hold_id: id.clone(), state, charged: money, charged_tokens: tokens, now: self.now() };
        self.journal.resolve(r, record).await
    }

    /// Releases holds that expired, and every hold of a process that died.
    /// Returns how many were released.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let owners = self.store.hold_owners().await?;
        // Liveness unknown: release only what expired.
        let dead = self.owner.liveness.dead(&owners).await.unwrap_or_else(|e| {
            tracing::warn!("cannot tell which hold owners are alive: {e}");
            Vec::new()
        });
        let stale = self.store.stale_holds(self.now(), &dead).await?;
        let mut released = 0;
        for id in stale {
            if self.resolve(&HoldId::from(id), HoldState::Expired, 0, 0, None).await? {
                released += 1;
            }
        }
        self.owner.liveness.forget(&dead).await;
        Ok(released)
    }

    /// Sweeps every `every` until `shutdown`.
    pub async fn sweeper(self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        crate::periodic::every(every, shutdown, || {
            let ledger = self.clone();
            async move {
                match ledger.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("released {n} abandoned budget holds"),
                    Err(e) => tracing::warn!("hold sweep failed: {e}"),
                }
            }
        })
        .await;
    }
}
