//! The embedded SQLite backend (WAL mode, migrations compiled in).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr};

mod admin;
mod approvals;
#[allow(unsafe_code)] // The one module that may: see its header.
mod direct;

use super::keycache::KeyCache;
use crate::store::audit::AuditDraft;
use crate::store::error::StoreError;
use crate::store::keys::KeyRow;
use crate::store::kinds::Durability;
use crate::store::ledger::{CycleOutcome, HoldOutcome, HoldRequest, Resolution};

/// How long a statement waits for another writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "keys and audit", include_str!("migrations/sqlite/0001_keys_and_audit.sql")),
    (2, "budgets", include_str!("migrations/sqlite/0002_budgets.sql")),
    (3, "approvals", include_str!("migrations/sqlite/0003_approvals.sql")),
    (4, "admin", include_str!("migrations/sqlite/0004_admin.sql")),
];

#[derive(Clone, Debug)]
pub struct Sqlite {
    pool: SqlitePool,
    keys: std::sync::Arc<Keys>,
    path: PathBuf,
    durability: Durability,
}

/// The key cache's epoch on SQLite: every process that changes keys through
/// a `Store` replaces a marker file next to the database (`<db>-keys`) after
/// its commit; a changed marker (inode, mtime, length: one `stat`) is a new
/// epoch.
#[derive(Debug)]
struct Keys {
    marker: PathBuf,
    cache: KeyCache<Option<Marker>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    inode: u64,
    mtime_ns: i128,
    len: u64,
}

impl Keys {
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

    /// Tells every process sharing the database that keys changed.
    fn bump(&self) {
        let tmp = self.marker.with_extension(format!("tmp{}", std::process::id()));
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let result = std::fs::write(&tmp, stamp).and_then(|()| std::fs::rename(&tmp, &self.marker));
        if let Err(e) = result {
            tracing::error!("cannot update the key-change marker {}: {e}", self.marker.display());
        }
        self.cache.clear();
    }
}

/// The file a `sqlite:` URL names, relative paths resolved against `base`.
pub(super) fn path_of(url: &str, base: &Path) -> Result<PathBuf, StoreError> {
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
    /// A statement written once for both backends (PostgreSQL's `$1`
    /// placeholders) in SQLite's numbering (`?1`).
    pub(super) fn sql(text: &str) -> std::borrow::Cow<'_, str> {
        if !text.contains('$') {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('?');
            } else {
                out.push(c);
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes SQLite's write lock at
    /// once, so writers queue here rather than fail at their first write.
    pub(super) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

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
            // Erased values (an action's arguments once decided) are
            // overwritten in the file, not only unlinked.
            .pragma("secure_delete", "on")
            // Other processes (the CLI, a second gateway) share the file.
            .busy_timeout(BUSY_TIMEOUT);
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
        let keys = Keys { marker: PathBuf::from(marker), cache: KeyCache::default() };
        Ok(Sqlite { pool, keys: std::sync::Arc::new(keys), path, durability })
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

    /// Served from the cache while the key-change marker stands still.
    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let epoch = self.keys.marker();
        if let Some(row) = self.keys.cache.get(epoch, secret_hash) {
            return Ok(Some(row));
        }
        let found = self.key_by_hash_uncached(secret_hash).await?;
        if let Some(row) = &found {
            self.keys.cache.put(epoch, row.clone());
        }
        Ok(found)
    }

    /// Tells every process sharing the database that keys changed.
    fn keys_changed(&self) {
        self.keys.bump();
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

    /// A connection of its own for the audit writer, which checkpoints
    /// itself between commits (see [`AuditWriter::checkpoint`]), never
    /// inside one.
    pub async fn writer(&self) -> Result<AuditWriter, StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
        // Detached: the writer owns it, and locks it out of sqlx's worker
        // for direct appends (see `direct`).
        let conn = direct::Direct::new(conn.detach(), BUSY_TIMEOUT);
        // An fsync per commit (`full`) would block the runtime's thread in a
        // direct append: those writers keep to sqlx.
        Ok(AuditWriter { conn, head: None, direct: self.durability == Durability::Normal })
    }
}

/// The single writer's connection. One [`AuditWriter::cycle`] is one
/// transaction holding everything the journal gathered: hold resolutions,
/// new holds and audit records, each kind with a fixed number of statements
/// whatever its size. The audit chain's head is cached between cycles; a
/// cycle that finds another writer appended meanwhile (the sequence number
/// is the primary key) re-reads the head and seals again.
pub struct AuditWriter {
    conn: direct::Direct,
    head: Option<(i64, String)>,
    /// Small audit-only cycles append through SQLite's C API.
    direct: bool,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter").field("head", &self.head).finish()
    }
}

type Conn = sqlx::SqliteConnection;

super::sql::chain_methods!(Sqlite);
super::sql::ledger_statements!(sqlx::Sqlite, sqlx::SqliteConnection);

impl AuditWriter {
    /// Copies the write-ahead log into the database, on this connection,
    /// between two of its commits. The log starts over from its beginning at
    /// the first commit after a complete checkpoint, which only holds when no
    /// commit came in between: a checkpoint run from another connection
    /// races the appends and, under steady writes, never let the log start
    /// over (it grew by over 100 MB a second, and each append extending the
    /// file cost the kernel more than SQLite's own work). Through sqlx, so
    /// its fsync waits on sqlx's thread, not the runtime's.
    pub async fn checkpoint(&mut self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(self.conn.sqlx()).await?;
        Ok(())
    }

    pub async fn cycle(
        &mut self,
        resolves: &[Resolution],
        holds: &[HoldRequest],
        audits: &[AuditDraft],
        period_start: fn(crate::calendar::Period, i64) -> Option<i64>,
        then: impl FnOnce(&[bool], &[HoldOutcome]) -> Vec<AuditDraft> + Send,
    ) -> Result<CycleOutcome, StoreError> {
        let mut head = self.head.take();
        if resolves.is_empty() && holds.is_empty() {
            // Audit records alone, few (the common case at low load), after
            // a known head: straight into SQLite. Any failure there writes
            // nothing, and the records go the sqlx way below after the head
            // read again.
            if self.direct
                && audits.len() <= direct::MAX_ROWS
                && let Some(start) = head.take()
            {
                let (rows, next) = super::chain::seal_after(audits, start);
                match self.conn.append(&rows).await {
                    Ok(()) => {
                        self.head = Some(next);
                        return Ok(CycleOutcome { resolved: Vec::new(), held: Vec::new() });
                    }
                    Err(direct::Fallback(why)) => tracing::debug!("direct audit append fell back to sqlx: {why}"),
                }
            }
            // One multi-row INSERT is its own atomic transaction, so no
            // BEGIN/COMMIT round trips. When other writers (processes) keep
            // the chain moving, the append is made again under the write
            // lock, where it cannot collide.
            self.head = match append_in(self.conn.sqlx(), audits, head).await {
                Ok(h) => h,
                Err(_) => {
                    let mut tx = sqlx::Connection::begin_with(self.conn.sqlx(), "BEGIN IMMEDIATE").await?;
                    let h = append_in(&mut tx, audits, None).await?;
                    tx.commit().await?;
                    h
                }
            };
            return Ok(CycleOutcome { resolved: Vec::new(), held: Vec::new() });
        }
        let mut tx = sqlx::Connection::begin_with(self.conn.sqlx(), "BEGIN IMMEDIATE").await?;
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

mod keys {
    crate::store::keys_sql::key_statements!(crate::store::sqlite::Sqlite);
}

mod budgets {
    crate::store::budgets_sql::budget_statements!(crate::store::sqlite::Sqlite, crate::store::sqlite::Conn);
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_statements_take_sqlite_numbering() {
        assert_eq!(super::Sqlite::sql("a = $1 OR b = $12 AND c = '$x'"), "a = ?1 OR b = ?12 AND c = '$x'");
        assert!(matches!(super::Sqlite::sql("SELECT 1"), std::borrow::Cow::Borrowed(_)));
    }
    use super::*;
    use crate::store::audit::AuditFilter;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let base = Path::new("/etc/tollgate");
        assert_eq!(path_of("sqlite://tollgate.db", base).unwrap(), PathBuf::from("/etc/tollgate/tollgate.db"));
        assert_eq!(path_of("sqlite:///var/lib/t.db", base).unwrap(), PathBuf::from("/var/lib/t.db"));
        assert_eq!(path_of("sqlite:data/t.db?mode=rwc", base).unwrap(), PathBuf::from("/etc/tollgate/data/t.db"));
        assert!(path_of("sqlite::memory:", base).is_err());
    }

    #[tokio::test]
    async fn audit_filters_are_served_by_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open("sqlite://t.db", dir.path(), Durability::Normal).await.unwrap();
        let plan = |f: AuditFilter| {
            let pool = store.pool.clone();
            async move {
                let sql = format!("EXPLAIN QUERY PLAN {}", audit_select(&f).sql().as_str());
                // EXPLAIN needs the binds too; their values do not matter.
                let n = sql.matches('?').count();
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for _ in 0..n {
                    query = query.bind(1_i64);
                }
                let rows = query.fetch_all(&pool).await.unwrap();
                rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("; ")
            }
        };
        let some = |v: &str| Some(v.to_string());
        let by_call = plan(AuditFilter { call_id: some("c"), ..Default::default() }).await;
        assert!(by_call.contains("audit_call"), "{by_call}");
        let by_org = plan(AuditFilter { org: some("acme"), since_ts: Some(1), ..Default::default() }).await;
        assert!(by_org.contains("audit_org_ts"), "{by_org}");
        let by_ts = plan(AuditFilter { since_ts: Some(1), until_ts: Some(2), ..Default::default() }).await;
        assert!(by_ts.contains("audit_ts"), "{by_ts}");
    }
}
