//! The embedded SQLite backend (WAL mode, migrations compiled in).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, SqlSafeStr};

use super::{
    Applied, AuditDraft, AuditFilter, AuditRow, BudgetRow, Durability, HoldLine, HoldOutcome, HoldRequest, Idempotency,
    KeyRow, Resolution, StoreError, UsageRow, chain,
};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "keys and audit", include_str!("migrations/sqlite/0001_keys_and_audit.sql")),
    (2, "budgets", include_str!("migrations/sqlite/0002_budgets.sql")),
];

#[derive(Clone, Debug)]
pub struct Sqlite {
    pool: SqlitePool,
    keys: std::sync::Arc<KeyCache>,
    path: PathBuf,
}

/// Key lookups are on every request; they are served from memory while the
/// keys have not changed. Every process that changes keys through a `Store`
/// replaces a marker file next to the database (`<db>-keys`) after its
/// commit; a changed marker (inode, mtime, length: one `stat`) empties the
/// cache. Entries also expire after [`KEY_TTL`], a backstop for a process
/// that died between its commit and the marker.
#[derive(Debug)]
struct KeyCache {
    marker: PathBuf,
    state: std::sync::RwLock<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    epoch: Option<Marker>,
    by_hash: std::collections::HashMap<String, (KeyRow, std::time::Instant)>,
}

const KEY_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    inode: u64,
    mtime_ns: i128,
    len: u64,
}

impl KeyCache {
    fn marker(&self) -> Option<Marker> {
        let m = std::fs::metadata(&self.marker).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        Some(Marker { inode, mtime_ns, len: m.len() })
    }

    fn get(&self, secret_hash: &str) -> Option<KeyRow> {
        let now = self.marker();
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if state.epoch != now {
            return None;
        }
        state.by_hash.get(secret_hash).filter(|(_, at)| at.elapsed() < KEY_TTL).map(|(row, _)| row.clone())
    }

    fn put(&self, epoch: Option<Marker>, row: KeyRow) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.epoch != epoch {
            state.by_hash.clear();
            state.epoch = epoch;
        }
        if state.by_hash.len() > 100_000 {
            state.by_hash.clear();
        }
        state.by_hash.insert(row.secret_hash.clone(), (row, std::time::Instant::now()));
    }

    /// Tells every process sharing the database that keys changed.
    fn bump(&self) {
        let tmp = self.marker.with_extension(format!("tmp{}", std::process::id()));
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let result = std::fs::write(&tmp, stamp).and_then(|()| std::fs::rename(&tmp, &self.marker));
        if let Err(e) = result {
            tracing::error!("cannot update the key-change marker {}: {e}", self.marker.display());
        }
        self.state.write().unwrap_or_else(|p| p.into_inner()).by_hash.clear();
    }
}

/// The file a `sqlite:` URL names, relative paths resolved against `base`.
fn path_of(url: &str, base: &Path) -> Result<PathBuf, StoreError> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() || rest == ":memory:" {
        return Err(StoreError::Invalid(format!(
            "store `{url}`: name a database file (an in-memory store would lose the audit trail)"
        )));
    }
    let p = PathBuf::from(rest);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

impl Sqlite {
    pub async fn open(url: &str, base: &Path, durability: Durability) -> Result<Sqlite, StoreError> {
        let path = path_of(url, base)?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| StoreError::Invalid(e.to_string()))?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            // Other processes (the CLI, a second gateway) share the file.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect::<Vec<_>>();
        let migrator = Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT };
        migrator.run(&pool).await?;
        let mut marker = path.clone().into_os_string();
        marker.push("-keys");
        let keys = KeyCache { marker: PathBuf::from(marker), state: Default::default() };
        Ok(Sqlite { pool, keys: std::sync::Arc::new(keys), path })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A folder beside the database for per-process files.
    pub fn sidecar(&self, name: &str) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push("-");
        p.push(name);
        PathBuf::from(p)
    }

    pub async fn insert_key(&self, k: &KeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO keys (id, secret_hash, org, team, role, label, created_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.secret_hash)
        .bind(&k.org)
        .bind(&k.team)
        .bind(&k.role)
        .bind(&k.label)
        .bind(k.created_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        if let Some(row) = self.keys.get(secret_hash) {
            return Ok(Some(row));
        }
        // The marker is read before the lookup: a change made meanwhile
        // leaves the entry under an old epoch, and it is not served.
        let epoch = self.keys.marker();
        let found = self.key_by_hash_uncached(secret_hash).await?;
        if let Some(row) = &found {
            self.keys.put(epoch, row.clone());
        }
        Ok(found)
    }

    async fn key_by_hash_uncached(&self, secret_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret_hash, org, team, role, label, created_at, revoked_at FROM keys WHERE secret_hash = ?",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_row(&r)).transpose()
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret_hash, org, team, role, label, created_at, revoked_at FROM keys WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| key_row(&r)).transpose()
    }

    pub async fn list_keys(&self, org: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, secret_hash, org, team, role, label, created_at, revoked_at FROM keys
             WHERE (?1 IS NULL OR org = ?1) ORDER BY created_at, id",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_row).collect()
    }

    pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.keys.bump();
        Ok(done.rows_affected() == 1)
    }

    pub async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditRow>, StoreError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        // IMMEDIATE takes the write lock before reading the head, so two
        // writers (the gateway and a CLI, say) never fork the chain.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head =
            sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *tx).await?;
        let (mut seq, mut prev) = match head {
            Some(r) => (r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?),
            None => (0, chain::GENESIS.to_string()),
        };
        let mut sealed = Vec::with_capacity(drafts.len());
        for d in drafts {
            seq += 1;
            let row = chain::seal(d, seq, &prev);
            sqlx::query(
                "INSERT INTO audit (seq, id, ts, kind, call_id, org, principal, tool, decision, body, prev_hash, hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.seq)
            .bind(&row.id)
            .bind(row.ts)
            .bind(&row.kind)
            .bind(&row.call_id)
            .bind(&row.org)
            .bind(&row.principal)
            .bind(&row.tool)
            .bind(&row.decision)
            .bind(&row.body)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&mut *tx)
            .await?;
            prev = row.hash.clone();
            sealed.push(row);
        }
        tx.commit().await?;
        Ok(sealed)
    }

    pub async fn change_budget(
        &self,
        id: &str,
        idem: Option<Idempotency>,
        change: impl FnOnce(Option<BudgetRow>) -> Result<BudgetRow, String> + Send,
    ) -> Result<Result<Applied, String>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(i) = &idem {
            let seen = sqlx::query("SELECT request_hash, response FROM idempotency WHERE key = ?")
                .bind(&i.key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(r) = seen {
                let (hash, response): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                tx.rollback().await?;
                return Ok(if hash == i.request_hash {
                    Ok(Applied::Replayed(response))
                } else {
                    Err(format!("idempotency key `{}` was already used for a different request", i.key))
                });
            }
        }
        let current = sqlx::query(BUDGET_SELECT_BY_ID).bind(id).fetch_optional(&mut *tx).await?;
        let current = current.map(|r| budget_row(&r)).transpose()?;
        let new = match change(current) {
            Ok(row) => row,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(Err(refused));
            }
        };
        sqlx::query(
            "INSERT INTO budgets (id, scope, org, unit, limit_amount, period, source, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, org = excluded.org, unit = excluded.unit,
               limit_amount = excluded.limit_amount, period = excluded.period, source = excluded.source,
               updated_at = excluded.updated_at",
        )
        .bind(&new.id)
        .bind(&new.scope)
        .bind(&new.org)
        .bind(&new.unit)
        .bind(new.limit_amount)
        .bind(&new.period)
        .bind(&new.source)
        .bind(new.updated_at)
        .execute(&mut *tx)
        .await?;
        let response =
            format!("budget {} ({}) limit {} {} per {}", new.id, new.scope, new.limit_amount, new.unit, new.period);
        if let Some(i) = &idem {
            sqlx::query("INSERT INTO idempotency (key, request_hash, response, created_at) VALUES (?, ?, ?, ?)")
                .bind(&i.key)
                .bind(&i.request_hash)
                .bind(&response)
                .bind(new.updated_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(Applied::Now(response)))
    }

    pub async fn sync_file_budgets(&self, rows: &[BudgetRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM budgets WHERE source LIKE 'file:%'").execute(&mut *tx).await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO budgets (id, scope, org, unit, limit_amount, period, source, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, org = excluded.org, unit = excluded.unit,
                   limit_amount = excluded.limit_amount, period = excluded.period, source = excluded.source,
                   updated_at = excluded.updated_at",
            )
            .bind(&r.id)
            .bind(&r.scope)
            .bind(&r.org)
            .bind(&r.unit)
            .bind(r.limit_amount)
            .bind(&r.period)
            .bind(&r.source)
            .bind(r.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn budget_usage(
        &self,
        org: Option<&str>,
        now: i64,
        period_start: fn(&str, i64) -> Option<i64>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, scope, org, unit, limit_amount, period, source, updated_at FROM budgets
             WHERE (?1 IS NULL OR org IS NULL OR org = ?1) ORDER BY id",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let budget = budget_row(r)?;
            let start = period_start(&budget.period, now).unwrap_or(0);
            let usage = sqlx::query("SELECT spent, held FROM budget_usage WHERE budget_id = ? AND period_start = ?")
                .bind(&budget.id)
                .bind(start)
                .fetch_optional(&self.pool)
                .await?;
            let (spent, held) = match usage {
                Some(u) => (u.try_get(0)?, u.try_get(1)?),
                None => (0, 0),
            };
            out.push(UsageRow { budget, period_start: start, spent, held });
        }
        Ok(out)
    }

    pub async fn stale_holds(&self, now: i64, dead_owners: &[String]) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = sqlx::query("SELECT id FROM holds WHERE state = 'held' AND expires_at <= ?")
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for owner in dead_owners {
            let more = sqlx::query("SELECT id FROM holds WHERE state = 'held' AND owner = ?")
                .bind(owner)
                .fetch_all(&self.pool)
                .await?;
            for r in &more {
                ids.push(r.try_get(0)?);
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub async fn hold_owners(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT owner FROM holds WHERE state = 'held'").fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get(0).map_err(StoreError::from)).collect()
    }

    pub async fn hold_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM holds WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get(0).map_err(StoreError::from)).transpose()
    }

    /// A connection of its own for the audit writer, which checkpoints are
    /// kept off (see [`Sqlite::checkpoint`]).
    pub async fn writer(&self) -> Result<AuditWriter, StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
        Ok(AuditWriter { conn, head: None })
    }

    /// Copies the WAL into the database without blocking readers or writers.
    /// Run in the background so no commit pays for a checkpoint (and its fsync).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, ts, kind, call_id, org, principal, tool, decision, body, prev_hash, hash FROM audit
             WHERE (?1 IS NULL OR seq > ?1) AND (?2 IS NULL OR ts >= ?2) AND (?3 IS NULL OR ts < ?3)
               AND (?4 IS NULL OR org = ?4) AND (?5 IS NULL OR principal = ?5) AND (?6 IS NULL OR tool = ?6)
               AND (?7 IS NULL OR decision = ?7) AND (?8 IS NULL OR kind = ?8) AND (?9 IS NULL OR call_id = ?9)
             ORDER BY seq LIMIT ?10",
        )
        .bind(f.after_seq)
        .bind(f.since_ts)
        .bind(f.until_ts)
        .bind(&f.org)
        .bind(&f.principal)
        .bind(&f.tool)
        .bind(&f.decision)
        .bind(&f.kind)
        .bind(&f.call_id)
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    ts: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    call_id: r.try_get(4)?,
                    org: r.try_get(5)?,
                    principal: r.try_get(6)?,
                    tool: r.try_get(7)?,
                    decision: r.try_get(8)?,
                    body: r.try_get(9)?,
                    prev_hash: r.try_get(10)?,
                    hash: r.try_get(11)?,
                })
            })
            .collect()
    }
}

/// Appends audit records with one statement per batch: the chain head is
/// cached, and a batch that collides with another writer's records (the
/// sequence number is the primary key) re-reads the head and is sealed again.
pub struct AuditWriter {
    conn: PoolConnection<sqlx::Sqlite>,
    head: Option<(i64, String)>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").field("head", &self.head).finish()
    }
}

impl AuditWriter {
    /// All or nothing: every applicable budget is checked and reserved in one
    /// transaction; the first that would go below zero denies the hold.
    pub async fn hold(
        &mut self,
        req: &HoldRequest,
        period_start: fn(&str, i64) -> Option<i64>,
    ) -> Result<HoldOutcome, StoreError> {
        let mut tx = sqlx::Connection::begin_with(&mut *self.conn, "BEGIN IMMEDIATE").await?;
        let mut q = QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT id, unit, period, limit_amount FROM budgets WHERE (org IS NULL OR org = ",
        );
        q.push_bind(&req.org).push(") AND scope IN (");
        let mut sep = q.separated(", ");
        for scope in &req.scopes {
            sep.push_bind(scope);
        }
        q.push(") ORDER BY id");
        let budgets = q.build().fetch_all(&mut *tx).await?;
        let mut lines = Vec::new();
        for b in &budgets {
            let (id, unit, period, limit): (String, String, String, i64) =
                (b.try_get(0)?, b.try_get(1)?, b.try_get(2)?, b.try_get(3)?);
            let amount = if unit == "tokens" { req.tokens } else { req.money };
            if amount <= 0 {
                continue;
            }
            let start = period_start(&period, req.now).unwrap_or(0);
            sqlx::query("INSERT OR IGNORE INTO budget_usage (budget_id, period_start) VALUES (?, ?)")
                .bind(&id)
                .bind(start)
                .execute(&mut *tx)
                .await?;
            // Reserve only if it fits: the check and the reservation are one statement.
            let reserved = sqlx::query(
                "UPDATE budget_usage SET held = held + ?1
                 WHERE budget_id = ?2 AND period_start = ?3 AND spent + held + ?1 <= ?4",
            )
            .bind(amount)
            .bind(&id)
            .bind(start)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
            if reserved.rows_affected() != 1 {
                let u = sqlx::query("SELECT spent, held FROM budget_usage WHERE budget_id = ? AND period_start = ?")
                    .bind(&id)
                    .bind(start)
                    .fetch_one(&mut *tx)
                    .await?;
                let (spent, held) = (u.try_get(0)?, u.try_get(1)?);
                tx.rollback().await?;
                return Ok(HoldOutcome::Denied { budget_id: id, unit, limit, spent, held, needed: amount });
            }
            lines.push(HoldLine { budget_id: id, unit, period_start: start, amount });
        }
        if lines.is_empty() {
            tx.rollback().await?;
            return Ok(HoldOutcome::Held(lines));
        }
        sqlx::query(
            "INSERT INTO holds (id, owner, call_id, principal, tool, amount, tokens, state, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'held', ?, ?)",
        )
        .bind(&req.hold_id)
        .bind(&req.owner)
        .bind(&req.call_id)
        .bind(&req.principal)
        .bind(&req.tool)
        .bind(req.money)
        .bind(req.tokens)
        .bind(req.now)
        .bind(req.expires_at)
        .execute(&mut *tx)
        .await?;
        let mut q = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO hold_lines (hold_id, budget_id, period_start, unit, amount) ",
        );
        q.push_values(&lines, |mut b, l| {
            b.push_bind(&req.hold_id)
                .push_bind(&l.budget_id)
                .push_bind(l.period_start)
                .push_bind(&l.unit)
                .push_bind(l.amount);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(HoldOutcome::Held(lines))
    }

    /// Moves a hold out of `held` (once) and its amounts from held to spent.
    pub async fn resolve(&mut self, r: &Resolution) -> Result<bool, StoreError> {
        let mut tx = sqlx::Connection::begin_with(&mut *self.conn, "BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE holds SET state = ?, charged = ?, charged_tokens = ?, resolved_at = ? WHERE id = ? AND state = 'held'",
        )
        .bind(r.state)
        .bind(r.charged)
        .bind(r.charged_tokens)
        .bind(r.now)
        .bind(&r.hold_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let lines = sqlx::query("SELECT budget_id, period_start, unit, amount FROM hold_lines WHERE hold_id = ?")
            .bind(&r.hold_id)
            .fetch_all(&mut *tx)
            .await?;
        for l in &lines {
            let (budget, start, unit, amount): (String, i64, String, i64) =
                (l.try_get(0)?, l.try_get(1)?, l.try_get(2)?, l.try_get(3)?);
            let charge = if unit == "tokens" { r.charged_tokens } else { r.charged }.clamp(0, amount);
            sqlx::query(
                "UPDATE budget_usage SET held = held - ?, spent = spent + ? WHERE budget_id = ? AND period_start = ?",
            )
            .bind(amount)
            .bind(charge)
            .bind(&budget)
            .bind(start)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn append(&mut self, drafts: &[AuditDraft]) -> Result<Vec<AuditRow>, StoreError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        for _ in 0..8 {
            let (mut seq, mut prev) = match self.head.take() {
                Some(h) => h,
                None => {
                    let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *self.conn)
                        .await?;
                    match head {
                        Some(r) => (r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?),
                        None => (0, chain::GENESIS.to_string()),
                    }
                }
            };
            let rows: Vec<AuditRow> = drafts
                .iter()
                .map(|d| {
                    seq += 1;
                    let row = chain::seal(d, seq, &prev);
                    prev = row.hash.clone();
                    row
                })
                .collect();
            let mut q = QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit (seq, id, ts, kind, call_id, org, principal, tool, decision, body, prev_hash, hash) ",
            );
            q.push_values(&rows, |mut b, row| {
                b.push_bind(row.seq)
                    .push_bind(&row.id)
                    .push_bind(row.ts)
                    .push_bind(&row.kind)
                    .push_bind(&row.call_id)
                    .push_bind(&row.org)
                    .push_bind(&row.principal)
                    .push_bind(&row.tool)
                    .push_bind(&row.decision)
                    .push_bind(&row.body)
                    .push_bind(&row.prev_hash)
                    .push_bind(&row.hash);
            });
            // One statement is one atomic transaction in SQLite.
            match q.build().execute(&mut *self.conn).await {
                Ok(_) => {
                    self.head = Some((seq, prev));
                    return Ok(rows);
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable("the audit chain kept moving under this writer".into()))
    }
}

const BUDGET_SELECT_BY_ID: &str =
    "SELECT id, scope, org, unit, limit_amount, period, source, updated_at FROM budgets WHERE id = ?";

fn budget_row(r: &SqliteRow) -> Result<BudgetRow, StoreError> {
    Ok(BudgetRow {
        id: r.try_get(0)?,
        scope: r.try_get(1)?,
        org: r.try_get(2)?,
        unit: r.try_get(3)?,
        limit_amount: r.try_get(4)?,
        period: r.try_get(5)?,
        source: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

fn key_row(r: &SqliteRow) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        id: r.try_get(0)?,
        secret_hash: r.try_get(1)?,
        org: r.try_get(2)?,
        team: r.try_get(3)?,
        role: r.try_get(4)?,
        label: r.try_get(5)?,
        created_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let base = Path::new("/etc/tollgate");
        assert_eq!(path_of("sqlite://tollgate.db", base).unwrap(), PathBuf::from("/etc/tollgate/tollgate.db"));
        assert_eq!(path_of("sqlite:///var/lib/t.db", base).unwrap(), PathBuf::from("/var/lib/t.db"));
        assert_eq!(path_of("sqlite:data/t.db?mode=rwc", base).unwrap(), PathBuf::from("/etc/tollgate/data/t.db"));
        assert!(path_of("sqlite::memory:", base).is_err());
    }
}
