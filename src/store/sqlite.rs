//! The embedded SQLite backend (WAL mode, migrations compiled in).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use super::{AuditDraft, AuditFilter, AuditRow, Durability, KeyRow, StoreError, chain};

const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "keys and audit", include_str!("migrations/sqlite/0001_keys_and_audit.sql"))];

#[derive(Clone, Debug)]
pub struct Sqlite {
    pool: SqlitePool,
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
        Ok(Sqlite { pool })
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
