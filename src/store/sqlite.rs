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

mod admin;
mod approvals;

pub use approvals::HOLD_OWNER_PREFIX;

use super::{
    Applied, AuditDraft, AuditFilter, AuditRow, BudgetRow, Durability, HoldLine, HoldOutcome, HoldRequest, Idempotency,
    KeyRow, Resolution, ReusedKey, StoreError, UsageRow, chain,
};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "keys and audit", include_str!("migrations/sqlite/0001_keys_and_audit.sql")),
    (2, "budgets", include_str!("migrations/sqlite/0002_budgets.sql")),
    (3, "approvals", include_str!("migrations/sqlite/0003_approvals.sql")),
    (4, "admin", include_str!("migrations/sqlite/0004_admin.sql")),
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

    pub async fn append_audit(&self, drafts: &[AuditDraft]) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock before the head is read, so two
        // writers (the gateway and a CLI, say) never fork the chain.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        append_in(&mut tx, drafts, None).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn change_budget<E: From<ReusedKey> + Send>(
        &self,
        id: &str,
        idem: Option<Idempotency>,
        change: impl FnOnce(Option<BudgetRow>) -> Result<BudgetRow, E> + Send,
    ) -> Result<Result<Applied, E>, StoreError> {
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
                    Err(ReusedKey(i.key.clone()).into())
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
        upsert_budget(&mut tx, &new).await?;
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
            upsert_budget(&mut tx, r).await?;
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

/// The single writer's connection. One [`AuditWriter::cycle`] is one
/// transaction holding everything the journal gathered: hold resolutions,
/// new holds and audit records, each kind with a fixed number of statements
/// whatever its size. The audit chain's head is cached between cycles; a
/// cycle that finds another writer appended meanwhile (the sequence number
/// is the primary key) re-reads the head and seals again.
pub struct AuditWriter {
    conn: PoolConnection<sqlx::Sqlite>,
    head: Option<(i64, String)>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").field("head", &self.head).finish()
    }
}

/// What one cycle did, per job, in the order given.
pub struct CycleOutcome {
    pub resolved: Vec<bool>,
    pub held: Vec<HoldOutcome>,
}

type Conn = sqlx::SqliteConnection;

impl AuditWriter {
    pub async fn cycle(
        &mut self,
        resolves: &[Resolution],
        holds: &[HoldRequest],
        audits: &[AuditDraft],
        period_start: fn(&str, i64) -> Option<i64>,
        then: impl FnOnce(&[bool], &[HoldOutcome]) -> Vec<AuditDraft> + Send,
    ) -> Result<CycleOutcome, StoreError> {
        let head = self.head.take();
        if resolves.is_empty() && holds.is_empty() {
            // Audit records alone: one multi-row INSERT is its own atomic
            // transaction, so no BEGIN/COMMIT round trips. A collision with
            // another writer fails the statement whole; it is retried after
            // the head.
            self.head = append_in(&mut self.conn, audits, head).await?;
            return Ok(CycleOutcome { resolved: Vec::new(), held: Vec::new() });
        }
        let mut tx = sqlx::Connection::begin_with(&mut *self.conn, "BEGIN IMMEDIATE").await?;
        let resolved = resolve_in(&mut tx, resolves).await?;
        let held = hold_in(&mut tx, holds, period_start).await?;
        // Records that depend on what was resolved and held (a call's intent
        // with its hold, an outcome with its charge) commit with them.
        let mut audits = audits.to_vec();
        audits.extend(then(&resolved, &held));
        let head = append_in(&mut tx, &audits, head).await?;
        tx.commit().await?;
        self.head = head;
        Ok(CycleOutcome { resolved, held })
    }
}

/// Appends `drafts` after `head` (or the head read from the table); returns
/// the new head.
async fn append_in(
    conn: &mut Conn,
    drafts: &[AuditDraft],
    mut head: Option<(i64, String)>,
) -> Result<Option<(i64, String)>, StoreError> {
    if drafts.is_empty() {
        return Ok(head);
    }
    for _ in 0..8 {
        let (mut seq, mut prev) = match head.take() {
            Some(h) => h,
            None => {
                let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?;
                match row {
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
        // On a collision (another writer appended since the cached head) the
        // head is read again and the records sealed after it; a failed
        // statement changes nothing, in or out of a transaction.
        match q.build().execute(&mut *conn).await {
            Ok(_) => return Ok(Some((seq, prev))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Unavailable("the audit chain kept moving under this writer".into()))
}

/// Holds for a batch of calls, in order: the budgets and their usage rows
/// are read once, each request is admitted (all of its budgets fit) or
/// denied in memory, and the new totals and holds are written back.
async fn hold_in(
    conn: &mut Conn,
    reqs: &[HoldRequest],
    period_start: fn(&str, i64) -> Option<i64>,
) -> Result<Vec<HoldOutcome>, StoreError> {
    if reqs.is_empty() {
        return Ok(Vec::new());
    }
    let mut scopes: Vec<&str> = reqs.iter().flat_map(|r| r.scopes.iter().map(String::as_str)).collect();
    scopes.sort_unstable();
    scopes.dedup();
    // Every period start a request of this batch can fall in.
    let mut starts: Vec<i64> =
        reqs.iter().flat_map(|r| crate::budget::PERIODS.iter().filter_map(move |p| period_start(p, r.now))).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut q = QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT b.id, b.scope, b.org, b.unit, b.period, b.limit_amount, u.period_start, u.spent, u.held
         FROM budgets b LEFT JOIN budget_usage u ON u.budget_id = b.id AND u.period_start IN (",
    );
    let mut sep = q.separated(", ");
    for st in &starts {
        sep.push_bind(*st);
    }
    q.push(") WHERE b.scope IN (");
    let mut sep = q.separated(", ");
    for scope in &scopes {
        sep.push_bind(*scope);
    }
    q.push(") ORDER BY b.id");
    type Budget = (String, String, Option<String>, String, String, i64);
    let mut budgets: Vec<Budget> = Vec::new();
    let mut totals: std::collections::HashMap<(usize, i64), (i64, i64)> = Default::default();
    for r in q.build().fetch_all(&mut *conn).await? {
        let id: String = r.try_get(0)?;
        let i = match budgets.iter().position(|b| b.0 == id) {
            Some(i) => i,
            None => {
                budgets.push((id, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?));
                budgets.len() - 1
            }
        };
        if let Some(start) = r.try_get::<Option<i64>, _>(6)? {
            totals.insert((i, start), (r.try_get(7)?, r.try_get(8)?));
        }
    }
    let mut outcomes = Vec::with_capacity(reqs.len());
    let mut admitted: Vec<(usize, Vec<HoldLine>)> = Vec::new();
    let mut touched: std::collections::BTreeSet<(usize, i64)> = Default::default();
    for (n, req) in reqs.iter().enumerate() {
        let lines: Vec<(usize, i64, i64)> = budgets
            .iter()
            .enumerate()
            .filter(|(_, b)| req.scopes.contains(&b.1) && b.2.as_ref().is_none_or(|o| *o == req.org))
            .filter_map(|(i, b)| {
                let amount = if b.3 == "tokens" { req.tokens } else { req.money };
                (amount > 0).then(|| (i, period_start(&b.4, req.now).unwrap_or(0), amount))
            })
            .collect();
        let refusal = lines.iter().find_map(|(i, p, amount)| {
            let (spent, held) = totals.get(&(*i, *p)).copied().unwrap_or((0, 0));
            (spent + held + amount > budgets[*i].5).then_some((*i, spent, held, *amount))
        });
        if let Some((i, spent, held, needed)) = refusal {
            let b = &budgets[i];
            outcomes.push(HoldOutcome::Denied {
                budget_id: b.0.clone(),
                unit: b.3.clone(),
                limit: b.5,
                spent,
                held,
                needed,
            });
            continue;
        }
        let mut held_lines = Vec::with_capacity(lines.len());
        for (i, p, amount) in lines {
            totals.entry((i, p)).or_insert((0, 0)).1 += amount;
            touched.insert((i, p));
            held_lines.push(HoldLine {
                budget_id: budgets[i].0.clone(),
                unit: budgets[i].3.clone(),
                period_start: p,
                amount,
            });
        }
        if !held_lines.is_empty() {
            admitted.push((n, held_lines.clone()));
        }
        outcomes.push(HoldOutcome::Held(held_lines));
    }
    if admitted.is_empty() {
        return Ok(outcomes);
    }
    // New totals for every usage row touched, created if it is the period's first.
    let mut q = QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO budget_usage (budget_id, period_start, spent, held) ");
    q.push_values(&touched, |mut b, (i, p)| {
        let (spent, held) = totals[&(*i, *p)];
        b.push_bind(&budgets[*i].0).push_bind(*p).push_bind(spent).push_bind(held);
    });
    q.push(" ON CONFLICT (budget_id, period_start) DO UPDATE SET held = excluded.held");
    q.build().execute(&mut *conn).await?;
    let mut q = QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO holds (id, owner, call_id, principal, tool, amount, tokens, state, created_at, expires_at, lines) ",
    );
    q.push_values(&admitted, |mut b, (n, lines)| {
        let r = &reqs[*n];
        let lines: Vec<serde_json::Value> =
            lines.iter().map(|l| serde_json::json!([l.budget_id, l.period_start, l.unit, l.amount])).collect();
        b.push_bind(&r.hold_id)
            .push_bind(&r.owner)
            .push_bind(&r.call_id)
            .push_bind(&r.principal)
            .push_bind(&r.tool)
            .push_bind(r.money)
            .push_bind(r.tokens)
            .push_bind("held")
            .push_bind(r.now)
            .push_bind(r.expires_at)
            .push_bind(serde_json::Value::Array(lines).to_string());
    });
    q.build().execute(&mut *conn).await?;
    Ok(outcomes)
}

/// Resolves a batch of holds: each moves out of `held` at most once (a hold
/// already resolved answers `false`), and its amounts move from held to
/// spent (the charge, at most the amount held) on every budget it touched.
async fn resolve_in(conn: &mut Conn, rs: &[Resolution]) -> Result<Vec<bool>, StoreError> {
    if rs.is_empty() {
        return Ok(Vec::new());
    }
    // Two resolutions of one hold in a batch (a settle racing the sweeper):
    // the first asked wins, the other is told it came second.
    let mut first: std::collections::HashMap<&str, usize> = Default::default();
    for (i, r) in rs.iter().enumerate() {
        first.entry(r.hold_id.as_str()).or_insert(i);
    }
    let winners: Vec<&Resolution> =
        rs.iter().enumerate().filter(|(i, r)| first[r.hold_id.as_str()] == *i).map(|(_, r)| r).collect();
    let mut q = QueryBuilder::<sqlx::Sqlite>::new(
        "UPDATE holds SET state = v.column2, charged = v.column3, charged_tokens = v.column4, resolved_at = v.column5 FROM (VALUES ",
    );
    let mut sep = q.separated(", ");
    for r in &winners {
        sep.push("(")
            .push_bind_unseparated(&r.hold_id)
            .push_unseparated(", ")
            .push_bind_unseparated(r.state)
            .push_unseparated(", ")
            .push_bind_unseparated(r.charged)
            .push_unseparated(", ")
            .push_bind_unseparated(r.charged_tokens)
            .push_unseparated(", ")
            .push_bind_unseparated(r.now)
            .push_unseparated(")");
    }
    q.push(") AS v WHERE holds.id = v.column1 AND holds.state = 'held' RETURNING holds.id, holds.lines");
    let mut done = std::collections::HashSet::new();
    let mut deltas: std::collections::BTreeMap<(String, i64), (i64, i64)> = Default::default();
    for row in q.build().fetch_all(&mut *conn).await? {
        let (hold, lines): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let lines: Vec<(String, i64, String, i64)> =
            serde_json::from_str(&lines).map_err(|e| StoreError::Invalid(format!("hold {hold}: bad lines: {e}")))?;
        if let Some(r) = winners.iter().find(|r| r.hold_id == hold) {
            for (budget, start, unit, amount) in lines {
                let charge = if unit == "tokens" { r.charged_tokens } else { r.charged }.clamp(0, amount);
                let d = deltas.entry((budget, start)).or_default();
                d.0 += amount;
                d.1 += charge;
            }
        }
        done.insert(hold);
    }
    if !deltas.is_empty() {
        let mut q = QueryBuilder::<sqlx::Sqlite>::new(
            "UPDATE budget_usage SET held = held - v.column3, spent = spent + v.column4 FROM (VALUES ",
        );
        let mut sep = q.separated(", ");
        for ((budget, start), (released, charged)) in &deltas {
            sep.push("(")
                .push_bind_unseparated(budget)
                .push_unseparated(", ")
                .push_bind_unseparated(*start)
                .push_unseparated(", ")
                .push_bind_unseparated(*released)
                .push_unseparated(", ")
                .push_bind_unseparated(*charged)
                .push_unseparated(")");
        }
        q.push(") AS v WHERE budget_usage.budget_id = v.column1 AND budget_usage.period_start = v.column2");
        q.build().execute(&mut *conn).await?;
    }
    Ok(rs.iter().enumerate().map(|(i, r)| done.contains(&r.hold_id) && first[r.hold_id.as_str()] == i).collect())
}

async fn upsert_budget(conn: &mut Conn, b: &BudgetRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO budgets (id, scope, org, unit, limit_amount, period, source, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, org = excluded.org, unit = excluded.unit,
           limit_amount = excluded.limit_amount, period = excluded.period, source = excluded.source,
           updated_at = excluded.updated_at",
    )
    .bind(&b.id)
    .bind(&b.scope)
    .bind(&b.org)
    .bind(&b.unit)
    .bind(b.limit_amount)
    .bind(&b.period)
    .bind(&b.source)
    .bind(b.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
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
