//! Pending actions, their webhook deliveries and used signatures.
//!
//! Every change of an action takes the next value of the store-wide counter
//! `rev` under the write lock, so feeds can follow changes in commit order
//! with `rev > last seen`.

use sqlx::{AssertSqlSafe, Row};

use super::{Conn, Postgres, append_in, placeholders, resolve_in};
use crate::store::approvals::{ApprovalRow, AttemptRow, DeliveryRow, Transition, Transitioned};
use crate::store::audit::AuditDraft;
use crate::store::error::StoreError;
use crate::store::kinds::Status;
use crate::store::ledger::{HOLD_OWNER_PREFIX, Resolution};
use crate::store::rows::{self, APPROVAL_COLUMNS as COLUMNS, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};

const NEXT_REV: &str = "(SELECT COALESCE(MAX(rev), 0) + 1 FROM approvals)";

impl Postgres {
    pub async fn create_approval(
        &self,
        row: &ApprovalRow,
        hold_expires_at: i64,
        webhooks: &[String],
        record: AuditDraft,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        // An open action for this exact call already exists: nothing is stored.
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES ({}, {NEXT_REV}, $30)
             ON CONFLICT (principal, tool, digest, tool_hash) WHERE reported = 0 DO NOTHING RETURNING {COLUMNS}",
            placeholders(1, 29)
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
        .bind(i64::from(row.reported))
        .bind(row.updated_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(inserted) = inserted else {
            tx.rollback().await?;
            return Ok(None);
        };
        let stored = rows::approval(&inserted)?;
        if let Some(hold) = &row.hold_id {
            sqlx::query("UPDATE holds SET owner = $1, expires_at = $2 WHERE id = $3 AND state = 'held'")
                .bind(format!("{HOLD_OWNER_PREFIX}{}", row.id))
                .bind(hold_expires_at)
                .bind(hold)
                .execute(&mut *tx)
                .await?;
        }
        for url in webhooks {
            sqlx::query(
                "INSERT INTO approval_deliveries (approval_id, route, url, state, attempts, next_at, created_at, updated_at)
                 VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
            )
            .bind(&row.id)
            .bind(&row.route)
            .bind(url)
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
            _ => "status = 'pending' AND expires_at > $3",
        };
        let keep_arguments = if t.to == Status::Approved { "arguments" } else { "NULL" };
        let changed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approvals SET status = $1, decided_at = $3, decided_by = $4, decision_reason = $5,
             arguments = {keep_arguments}, rev = {NEXT_REV}, updated_at = $3
             WHERE id = $2 AND {condition} RETURNING {COLUMNS}"
        )))
        .bind(t.to.as_str())
        .bind(&t.id)
        .bind(t.now)
        .bind(&t.by)
        .bind(&t.reason)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(changed) = changed else {
            let standing = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM approvals WHERE id = $1")))
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
        Ok(Transitioned::Done(row))
    }

    pub async fn expire_approvals(
        &self,
        now: i64,
        record: impl Fn(&ApprovalRow) -> AuditDraft + Send,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        // Cheap read first: most sweeps find nothing and take no write lock.
        let due = sqlx::query("SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= $1 LIMIT 256")
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
                "UPDATE approvals SET status = 'expired', decided_at = $1, decided_by = 'tollgate',
                 decision_reason = 'no decision before the approval expired', arguments = NULL,
                 rev = {NEXT_REV}, updated_at = $1
                 WHERE id = $2 AND status = 'pending' AND expires_at <= $1 RETURNING {COLUMNS}"
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
        Ok(expired)
    }

    /// One statement under the write lock (it takes a `rev`).
    async fn update_one(
        &self,
        sql: String,
        bind: impl FnOnce(Query<'_>) -> Query<'_>,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = bind(sqlx::query(AssertSqlSafe(sql))).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.map(|r| rows::approval(&r)).transpose()
    }

    pub async fn claim_execution(&self, id: &str, by: &str, now: i64) -> Result<Option<ApprovalRow>, StoreError> {
        let sql = format!(
            "UPDATE approvals SET execution = 'running', claimed_by = $1, rev = {NEXT_REV}, updated_at = $2
             WHERE id = $3 AND status = 'approved' AND execution = 'none' RETURNING {COLUMNS}"
        );
        self.update_one(sql, |q| q.bind(by.to_string()).bind(now).bind(id.to_string())).await
    }

    pub async fn finish_execution(
        &self,
        id: &str,
        result: &str,
        reported: bool,
        now: i64,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let sql = format!(
            "UPDATE approvals SET execution = 'done', result = $1, arguments = NULL, reported = $2,
             rev = {NEXT_REV}, updated_at = $3 WHERE id = $4 RETURNING {COLUMNS}"
        );
        self.update_one(sql, |q| q.bind(result.to_string()).bind(i64::from(reported)).bind(now).bind(id.to_string()))
            .await
    }

    pub async fn mark_reported(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE approvals SET reported = 1, rev = {NEXT_REV}, updated_at = $1 WHERE id = $2 AND reported = 0
             RETURNING {COLUMNS}"
        );
        self.update_one(sql, |q| q.bind(now).bind(id.to_string())).await?;
        Ok(())
    }

    pub async fn due_deliveries(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        // The lease moves `next_at` forward; SKIP LOCKED keeps two replicas'
        // workers from taking the same delivery at the same time.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approval_deliveries SET next_at = $1 WHERE id IN
               (SELECT id FROM approval_deliveries WHERE state = 'pending' AND next_at <= $2
                ORDER BY next_at LIMIT $3 FOR UPDATE SKIP LOCKED)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        )))
        .bind(a.delivery_id)
        .bind(a.attempt)
        .bind(a.at)
        .bind(a.micros)
        .bind(a.status)
        .bind(&a.error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE approval_deliveries SET state = $1, attempts = $2, next_at = $3, updated_at = $4 WHERE id = $5",
        )
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM used_signatures WHERE seen_at < $1").bind(forget_before).execute(&mut *tx).await?;
        let fresh =
            sqlx::query("INSERT INTO used_signatures (signature, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
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

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Releases the hold of an action that will not run.
async fn release_hold(conn: &mut Conn, row: &ApprovalRow, to: Status, now: i64) -> Result<(), StoreError> {
    if let Some(hold) = &row.hold_id {
        let state = if to == Status::Expired { "expired" } else { "released" };
        let r = Resolution { hold_id: hold.clone(), state, charged: 0, charged_tokens: 0, now };
        resolve_in(conn, &[r]).await?;
    }
    Ok(())
}

crate::store::approvals_sql::approval_reads!(super::Postgres);
