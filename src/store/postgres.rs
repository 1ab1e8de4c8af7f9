//! The PostgreSQL backend: several gateway processes (replicas) on one
//! database.
//!
//! Writers are serialised as SQLite's `BEGIN IMMEDIATE` serialises them:
//! every write transaction first takes one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]). That keeps the audit chain one chain, budget admission
//! exact across replicas (a hold reads and writes the totals under the lock)
//! and the approvals' change counter in commit order. The lock lives only as
//! long as a short transaction, and the journal's group commit shares one
//! transaction among every call waiting in a process.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

mod admin;
mod approvals;
pub mod listen;
pub mod owners;

use super::changes::Feed;
use super::keycache::KeyCache;
use crate::store::audit::AuditDraft;
use crate::store::error::StoreError;
use crate::store::keys::KeyRow;
use crate::store::ledger::{CycleOutcome, HoldOutcome, HoldRequest, Resolution};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "keys and audit", include_str!("migrations/postgres/0001_keys_and_audit.sql")),
    (2, "budgets", include_str!("migrations/postgres/0002_budgets.sql")),
    (3, "approvals", include_str!("migrations/postgres/0003_approvals.sql")),
    (4, "admin", include_str!("migrations/postgres/0004_admin.sql")),
    (5, "notify", include_str!("migrations/postgres/0005_notify.sql")),
    (6, "rates", include_str!("migrations/postgres/0006_rates.sql")),
];

/// The database's clock in Unix microseconds (shared by every replica).
const NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint";

/// The advisory lock every write transaction takes first ("tollgate" in ASCII).
const WRITE_LOCK: i64 = 0x746f_6c6c_6761_7465;

type Conn = sqlx::PgConnection;

super::sql::chain_methods!(Postgres);
super::sql::ledger_statements!(sqlx::Postgres, sqlx::PgConnection);

#[derive(Clone, Debug)]
pub struct Postgres {
    pool: PgPool,
    /// What the listener hears (see `listen`); it also dates the key cache.
    feed: Arc<Feed>,
    keys: Arc<KeyCache<u64>>,
    /// The keys' generation last read by `catch_up`.
    keys_generation: Arc<std::sync::atomic::AtomicI64>,
}

/// Takes the write lock inside the transaction `conn` is in.
async fn lock(conn: &mut Conn) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *conn).await?;
    Ok(())
}

impl Postgres {
    /// A statement written once for both backends, as it is (see `Sqlite::sql`).
    pub(super) fn sql(text: &str) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(text)
    }

    pub async fn open(url: &str) -> Result<Postgres, StoreError> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| StoreError::Invalid(format!("store `{}`: {e}", super::location::scrub(url))))?;
        // The listener keeps one of these connections for itself.
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to {}: {e}", super::location::scrub(url))))?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect::<Vec<_>>();
        // sqlx's migrator holds an advisory lock while it runs: replicas
        // starting together migrate once.
        let migrator = Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT };
        migrator.run(&pool).await?;
        Ok(Postgres { pool, feed: Arc::default(), keys: Arc::default(), keys_generation: Arc::default() })
    }

    /// Takes one call from the GCRA bucket of (`grant`, `key`): `Ok(None)`
    /// if allowed, else how long (µs) until one is free. One statement: the
    /// row lock serialises replicas taking from the same bucket. Time is the
    /// database's, so replicas' clocks do not matter.
    pub async fn take_rate(
        &self,
        grant: &str,
        key: &str,
        interval: i64,
        window: i64,
    ) -> Result<Option<i64>, StoreError> {
        let taken: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH c AS (SELECT {NOW} AS now)
             INSERT INTO rate_buckets (grant_id, key_id, tat) SELECT $1, $2, c.now + $3 FROM c
             ON CONFLICT (grant_id, key_id) DO UPDATE
               SET tat = GREATEST(rate_buckets.tat, (SELECT now FROM c)) + $3
               WHERE GREATEST(rate_buckets.tat, (SELECT now FROM c)) + $3 - (SELECT now FROM c) <= $4
             RETURNING tat"
        )))
        .bind(grant)
        .bind(key)
        .bind(interval)
        .bind(window)
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let wait: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT GREATEST(GREATEST(tat, {NOW}) + $3 - {NOW} - $4, 0) FROM rate_buckets
             WHERE grant_id = $1 AND key_id = $2"
        )))
        .bind(grant)
        .bind(key)
        .bind(interval)
        .bind(window)
        .fetch_optional(&self.pool)
        .await?;
        Ok(Some(wait.map_or(0, |(w,)| w)))
    }

    /// Forgets buckets that are full again (their time is past).
    pub async fn prune_rates(&self) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM rate_buckets WHERE tat < {NOW}"))).execute(&self.pool).await?;
        Ok(())
    }

    /// Listens for other replicas' changes until `shutdown` (a task).
    pub fn listen(&self, shutdown: tokio_util::sync::CancellationToken) {
        tokio::spawn(listen::run(self.pool.clone(), self.feed.clone(), shutdown));
    }

    pub fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    /// Brings the key cache up to every key change committed so far, by any
    /// replica, and returns the admin change counter (see `Store::catch_up`).
    pub async fn catch_up(&self) -> Result<i64, StoreError> {
        let (keys, admin): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT n FROM generations WHERE topic = 'keys'),
                    (SELECT COALESCE(MAX(seq), 0)::bigint FROM admin_changes)",
        )
        .fetch_one(&self.pool)
        .await?;
        if self.keys_generation.swap(keys, std::sync::atomic::Ordering::SeqCst) != keys {
            self.feed.keys_changed_here();
        }
        Ok(admin)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction holding the write lock.
    pub(super) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        Ok(tx)
    }

    /// Served from the cache only while the listener hears key changes.
    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let epoch = self.feed.keys_epoch();
        if let Some(row) = epoch.and_then(|e| self.keys.get(e, secret_hash)) {
            return Ok(Some(row));
        }
        let found = self.key_by_hash_uncached(secret_hash).await?;
        if let (Some(e), Some(row)) = (epoch, &found) {
            self.keys.put(e, row.clone());
        }
        Ok(found)
    }

    /// A new epoch here at once; other replicas when they catch up.
    fn keys_changed(&self) {
        self.feed.keys_changed_here();
    }

    pub async fn stale_holds(&self, now: i64, dead_owners: &[String]) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM holds WHERE state = 'held' AND (expires_at <= $1 OR owner = ANY($2)) ORDER BY id",
        )
        .bind(now)
        .bind(dead_owners)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get(0).map_err(StoreError::from)).collect()
    }

    /// The journal's connection; every cycle is a locked transaction on it.
    pub async fn writer(&self) -> Result<AuditWriter, StoreError> {
        Ok(AuditWriter { conn: self.pool.acquire().await? })
    }
}

/// The journal's connection. A cycle is one transaction under the write
/// lock: hold resolutions, new holds, and the audit records, read against
/// the chain's head as it stands under the lock.
pub struct AuditWriter {
    conn: PoolConnection<sqlx::Postgres>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").finish_non_exhaustive()
    }
}

impl AuditWriter {
    pub async fn cycle(
        &mut self,
        resolves: &[Resolution],
        holds: &[HoldRequest],
        audits: &[AuditDraft],
        period_start: fn(crate::calendar::Period, i64) -> Option<i64>,
        then: impl FnOnce(&[bool], &[HoldOutcome]) -> Vec<AuditDraft> + Send,
    ) -> Result<CycleOutcome, StoreError> {
        let mut tx = sqlx::Connection::begin(&mut *self.conn).await?;
        lock(&mut tx).await?;
        let resolved = resolve_in(&mut tx, resolves).await?;
        let held = hold_in(&mut tx, holds, period_start).await?;
        let mut audits = audits.to_vec();
        audits.extend(then(&resolved, &held));
        append_in(&mut tx, &audits, None).await?;
        tx.commit().await?;
        Ok(CycleOutcome { resolved, held })
    }
}

mod keys {
    crate::store::keys_sql::key_statements!(crate::store::postgres::Postgres);
}

mod budgets {
    crate::store::budgets_sql::budget_statements!(crate::store::postgres::Postgres, crate::store::postgres::Conn);
}
