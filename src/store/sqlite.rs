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

use super::{AuditDraft, AuditFilter, AuditRow, Durability, KeyRow, StoreError, chain};

const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "keys and audit", include_str!("migrations/sqlite/0001_keys_and_audit.sql"))];

#[derive(Clone, Debug)]
pub struct Sqlite {
    pool: SqlitePool,
    keys: std::sync::Arc<KeyCache>,
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
        Ok(Sqlite { pool, keys: std::sync::Arc::new(keys) })
    }

    pub async fn close(&self) {
        self.pool.close().await;
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

    /// A connection of its own for the audit writer, which checkpoints are
    /// kept off (see [`Sqlite::checkpoint`]).
    pub async fn audit_writer(&self) -> Result<AuditWriter, StoreError> {
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
