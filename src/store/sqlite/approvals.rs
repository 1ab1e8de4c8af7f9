//! Pending actions, their webhook deliveries and used signatures.
//!
//! Every change of an action takes the next value of the store-wide counter
//! `rev` in its own write transaction, so feeds can follow changes in commit
//! order with `rev > last seen`.

use sqlx::{AssertSqlSafe, Row};

use super::{Conn, Sqlite, append_in, resolve_in};
use crate::store::approvals::{ApprovalRow, AttemptRow, DeliveryRow, Transition, Transitioned};
use crate::store::audit::AuditDraft;
use crate::store::error::StoreError;
use crate::store::kinds::Status;
use crate::store::ledger::{HOLD_OWNER_PREFIX, Resolution};
use crate::store::rows::{self, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};

const COLUMNS: &str = rows::APPROVAL_COLUMNS;

const NEXT_REV: &str = "(SELECT COALESCE(MAX(rev), 0) + 1 FROM approvals)";

impl Sqlite {
    pub async fn create_approval(
        &self,
        row: &ApprovalRow,
        hold_expires_at: i64,
        webhooks: &[String],
        record: AuditDraft,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             ?, ?, ?, ?, ?, ?, ?, {NEXT_REV}, ?) RETURNING {COLUMNS}"
        )))
        .bind(&row.id)
        .bind(&row.org)
        .bind(&row.principal)
        .bind(&row.principal_label)
        .bind(&row.team)
        .bind(&row.tool)
        .bind(&row.upstream)
        .bind(&row.arguments)
        .bind(&row.arguments_redacted)
        .bind(&row.digest)
        .bind(&row.tool_hash)
        .bind(&row.grant_id)
        .bind(&row.route)
        .bind(&row.reason)
        .bind(&row.risk)
        .bind(row.cost)
        .bind(&row.hold_id)
        .bind(&row.call_id)
        .bind(row.mode.as_str())
        .bind(row.status.as_str())
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.decided_at)
        .bind(&row.decided_by)
        .bind(&row.decision_reason)
        .bind(row.execution.as_str())
        .bind(&row.claimed_by)
        .bind(&row.result)
        .bind(row.reported)
        .bind(row.updated_at)
        .fetch_one(&mut *tx)
        .await;
        let inserted = match inserted {
            Ok(r) => r,
            // An open action for this exact call exists already.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let stored = rows::approval(&inserted)?;
        if let Some(hold) = &row.hold_id {
            sqlx::query("UPDATE holds SET owner = ?, expires_at = ? WHERE id = ? AND state = 'held'")
                .bind(format!("{HOLD_OWNER_PREFIX}{}", row.id))
                .bind(hold_expires_at)
                .bind(hold)
                .execute(&mut *tx)
                .await?;
        }
        for url in webhooks {
            sqlx::query(
                "INSERT INTO approval_deliveries (approval_id, route, url, state, attempts, next_at, created_at, updated_at)
                 VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
            )
            .bind(&row.id)
            .bind(&row.route)
            .bind(url)
            .bind(row.created_at)
            .bind(row.created_at)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await?;
        }
        append_in(&mut tx, &[record], None).await?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    pub async fn transition_approval(
        &self,
        t: &Transition,
        record: impl FnOnce(&ApprovalRow) -> AuditDraft + Send,
    ) -> Result<Transitioned, StoreError> {
        let mut tx = self.begin_write().await?;
        // Decisions need an unexpired pending action; a cancel also stops an
        // approved one that has not started running.
        let condition = match t.to {
            Status::Cancelled => "(status = 'pending' OR (status = 'approved' AND execution = 'none'))",
            Status::Expired => "status = 'pending'",
            _ => "status = 'pending' AND expires_at > ?3",
        };
        let keep_arguments = if t.to == Status::Approved { "arguments" } else { "NULL" };
        let changed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approvals SET status = ?1, decided_at = ?3, decided_by = ?4, decision_reason = ?5,
             arguments = {keep_arguments}, rev = {NEXT_REV}, updated_at = ?3
             WHERE id = ?2 AND {condition} RETURNING {COLUMNS}"
        )))
        .bind(t.to.as_str())
        .bind(&t.id)
        .bind(t.now)
        .bind(&t.by)
        .bind(&t.reason)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(changed) = changed else {
            let standing = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM approvals WHERE id = ?")))
                .bind(&t.id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Ok(match standing {
                Some(r) => Transitioned::Standing(rows::approval(&r)?),
                None => Transitioned::Missing,
            });
        };
        let row = rows::approval(&changed)?;
        if t.to != Status::Approved {
            release_hold(&mut tx, &row, t.to, t.now).await?;
        }
        append_in(&mut tx, &[record(&row)], None).await?;
        tx.commit().await?;
        if t.to != Status::Approved {
            self.scrub_log().await;
        }
        Ok(Transitioned::Done(row))
    }

    pub async fn expire_approvals(
        &self,
        now: i64,
        record: impl Fn(&ApprovalRow) -> AuditDraft + Send,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        // Cheap read first: most sweeps find nothing and take no write lock.
        let due = sqlx::query("SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= ? LIMIT 256")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut expired = Vec::new();
        for id in due {
            let id: String = id.try_get(0)?;
            // One row per statement: each takes its own `rev`.
            let changed = sqlx::query(AssertSqlSafe(format!(
                "UPDATE approvals SET status = 'expired', decided_at = ?1, decided_by = 'tollgate',
                 decision_reason = 'no decision before the approval expired', arguments = NULL,
                 rev = {NEXT_REV}, updated_at = ?1
                 WHERE id = ?2 AND status = 'pending' AND expires_at <= ?1 RETURNING {COLUMNS}"
            )))
            .bind(now)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = changed {
                let row = rows::approval(&r)?;
                release_hold(&mut tx, &row, Status::Expired, now).await?;
                expired.push(row);
            }
        }
        let records: Vec<AuditDraft> = expired.iter().map(&record).collect();
        append_in(&mut tx, &records, None).await?;
        tx.commit().await?;
        if !expired.is_empty() {
            self.scrub_log().await;
        }
        Ok(expired)
    }

    pub async fn claim_execution(&self, id: &str, by: &str, now: i64) -> Result<Option<ApprovalRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approvals SET execution = 'running', claimed_by = ?1, rev = {NEXT_REV}, updated_at = ?2
             WHERE id = ?3 AND status = 'approved' AND execution = 'none' RETURNING {COLUMNS}"
        )))
        .bind(by)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::approval(&r)).transpose()
    }

    pub async fn finish_execution(
        &self,
        id: &str,
        result: &str,
        reported: bool,
        now: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approvals SET execution = 'done', result = ?1, arguments = NULL, reported = ?2,
             rev = {NEXT_REV}, updated_at = ?3 WHERE id = ?4 RETURNING {COLUMNS}"
        )))
        .bind(result)
        .bind(reported)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        self.scrub_log().await;
        row.map(|r| rows::approval(&r)).transpose()
    }

    /// After an action's arguments are erased: with `secure_delete` the
    /// database pages no longer hold them, but the write-ahead log still has
    /// the frames that first wrote them until it is overwritten. A TRUNCATE
    /// checkpoint copies the log into the database and empties the file.
    /// Rare (a decision, an expiry, an executed action), so its wait for
    /// other connections' readers and its fsync cost no call. If it cannot
    /// complete now (a reader holds an old snapshot), the frames are gone at
    /// the next complete checkpoint's restart.
    async fn scrub_log(&self) {
        match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await {
            Ok(row) if row.try_get::<i64, _>(0).unwrap_or(1) == 0 => {}
            Ok(_) => tracing::debug!("the write-ahead log could not be emptied yet (busy)"),
            Err(e) => tracing::debug!("the write-ahead log could not be emptied: {e}"),
        }
    }

    pub async fn mark_reported(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE approvals SET reported = 1, rev = {NEXT_REV}, updated_at = ? WHERE id = ? AND reported = 0"
        )))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn due_deliveries(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        // A read first: the worker polls often, and an idle poll must not
        // take the write lock.
        let due = sqlx::query("SELECT 1 FROM approval_deliveries WHERE state = 'pending' AND next_at <= ? LIMIT 1")
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        // The lease moves `next_at` forward: a second worker (another
        // process) does not take the same delivery while this one tries it.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approval_deliveries SET next_at = ?1 WHERE id IN
               (SELECT id FROM approval_deliveries WHERE state = 'pending' AND next_at <= ?2 ORDER BY next_at LIMIT ?3)
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::delivery).collect()
    }

    pub async fn record_attempt(&self, a: &AttemptRow, state: &str, next_at: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        )))
        .bind(a.delivery_id)
        .bind(a.attempt)
        .bind(a.at)
        .bind(a.micros)
        .bind(a.status)
        .bind(&a.error)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE approval_deliveries SET state = ?, attempts = ?, next_at = ?, updated_at = ? WHERE id = ?")
            .bind(state)
            .bind(a.attempt)
            .bind(next_at)
            .bind(a.at)
            .bind(a.delivery_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn use_signature(&self, signature: &str, now: i64, forget_before: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM used_signatures WHERE seen_at < ?").bind(forget_before).execute(&mut *tx).await?;
        let fresh = sqlx::query("INSERT OR IGNORE INTO used_signatures (signature, seen_at) VALUES (?, ?)")
            .bind(signature)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(fresh)
    }
}

/// Releases the hold of an action that will not run.
async fn release_hold(conn: &mut Conn, row: &ApprovalRow, to: Status, now: i64) -> Result<(), StoreError> {
    if let Some(hold) = &row.hold_id {
        let state = if to == Status::Expired { "expired" } else { "released" };
        let r = Resolution { hold_id: hold.clone(), state, charged: 0, charged_tokens: 0, now };
        resolve_in(conn, &[r]).await?;
    }
    Ok(())
}

crate::store::approvals_sql::approval_reads!(super::Sqlite);
