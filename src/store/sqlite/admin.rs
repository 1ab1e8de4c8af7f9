//! Grants made through the admin API, their revisions, tool pins set by
//! admins, and the change counter other processes follow.

use sqlx::{AssertSqlSafe, Row};

use super::{Sqlite, append_in};
use crate::store::admin::{GrantEdit, GrantRevisionRow, GrantRow, PinRow};
use crate::store::audit::AuditDraft;
use crate::store::error::StoreError;

use crate::store::rows::{self, GRANT_COLUMNS, PIN_COLUMNS, REVISION_COLUMNS};

impl Sqlite {
    pub async fn grants(&self, org: Option<&str>) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE (?1 IS NULL OR org = ?1) ORDER BY created_at, id"
        )))
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::grant).collect()
    }

    pub async fn grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::grant).transpose()
    }

    pub async fn change_grant<E: Send>(
        &self,
        id: &str,
        decide: impl FnOnce(Option<&GrantRow>, i64) -> Result<GrantEdit, E> + Send,
    ) -> Result<Result<GrantRevisionRow, E>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let current = sqlx::query(AssertSqlSafe(format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(rows::grant)
            .transpose()?;
        let last: Option<i64> = sqlx::query("SELECT MAX(revision) FROM grant_revisions WHERE grant_id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let next = last.unwrap_or(0).max(current.as_ref().map_or(0, |c| c.revision)) + 1;
        let edit = match decide(current.as_ref(), next) {
            Ok(e) => e,
            Err(refused) => {
                tx.rollback().await?;
                return Ok(Err(refused));
            }
        };
        let (revision, record): (GrantRevisionRow, AuditDraft) = match edit {
            GrantEdit::Put { row, revision, record } => {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (id) DO UPDATE SET org = excluded.org, spec = excluded.spec,
                       revision = excluded.revision, updated_at = excluded.updated_at, updated_by = excluded.updated_by"
                )))
                .bind(&row.id)
                .bind(&row.org)
                .bind(&row.spec)
                .bind(row.revision)
                .bind(row.created_at)
                .bind(&row.created_by)
                .bind(row.updated_at)
                .bind(&row.updated_by)
                .execute(&mut *tx)
                .await?;
                (revision, record)
            }
            GrantEdit::Delete { revision, record } => {
                sqlx::query("DELETE FROM grants WHERE id = ?").bind(id).execute(&mut *tx).await?;
                (revision, record)
            }
        };
        sqlx::query(
            "INSERT INTO grant_revisions (grant_id, revision, org, at, actor, action, spec, diff)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&revision.grant_id)
        .bind(revision.revision)
        .bind(&revision.org)
        .bind(revision.at)
        .bind(&revision.actor)
        .bind(&revision.action)
        .bind(&revision.spec)
        .bind(&revision.diff)
        .execute(&mut *tx)
        .await?;
        note_change(&mut tx, "grants", revision.at).await?;
        append_in(&mut tx, &[record], None).await?;
        tx.commit().await?;
        Ok(Ok(revision))
    }

    pub async fn grant_revisions(&self, id: &str) -> Result<Vec<GrantRevisionRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {REVISION_COLUMNS} FROM grant_revisions WHERE grant_id = ? ORDER BY revision"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::revision).collect()
    }

    pub async fn pins(&self) -> Result<Vec<PinRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {PIN_COLUMNS} FROM tool_pins ORDER BY upstream, tool")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::pin).collect()
    }

    pub async fn set_pin(&self, pin: &PinRow, record: AuditDraft) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO tool_pins (upstream, tool, hash, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (upstream, tool) DO UPDATE SET hash = excluded.hash,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(&pin.upstream)
        .bind(&pin.tool)
        .bind(&pin.hash)
        .bind(pin.updated_at)
        .bind(&pin.updated_by)
        .execute(&mut *tx)
        .await?;
        note_change(&mut tx, "pins", pin.updated_at).await?;
        append_in(&mut tx, &[record], None).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn admin_changes(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM admin_changes").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }
}

async fn note_change(conn: &mut sqlx::SqliteConnection, what: &str, at: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO admin_changes (what, at) VALUES (?, ?)").bind(what).bind(at).execute(&mut *conn).await?;
    // The counter only needs its newest row.
    sqlx::query("DELETE FROM admin_changes WHERE seq < (SELECT MAX(seq) FROM admin_changes)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
