//! The approval queue's statements (actions, their webhook deliveries and
//! used signatures), written once for both backends like `admin_sql`:
//! instantiated in each backend's `approvals` module with
//! `approval_reads!(super::Backend)` and
//! `approval_writes!(super::Backend, super::Conn)`.
//!
//! Every change of an action takes the next value of the store-wide counter
//! `rev` inside the backend's `begin_write` (the transaction that serialises
//! writers), so feeds follow changes in commit order with `rev > last seen`.
//! What differs stays in the backend: `after_erase` (SQLite empties its
//! write-ahead log of erased arguments), `begin_rows` (a write that needs no
//! store-wide order) and `SKIP_LOCKED` (PostgreSQL's row locks on a leased
//! delivery).

macro_rules! approval_reads {
    ($backend:ty) => {
        impl $backend {
            pub async fn approval(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::approvals::ApprovalRow>, $crate::store::error::StoreError> {
                let sql = format!("SELECT {} FROM approvals WHERE id = $1", $crate::store::rows::APPROVAL_COLUMNS);
                let row = sqlx::query(sqlx::AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| $crate::store::rows::approval(&r)).transpose()
            }

            pub async fn approval_for_call(
                &self,
                principal: &str,
                tool: &str,
                digest: &str,
                tool_hash: &str,
                replay_since: i64,
            ) -> Result<Option<$crate::store::approvals::ApprovalRow>, $crate::store::error::StoreError> {
                let sql = format!(
                    "SELECT {} FROM approvals WHERE principal = $1 AND tool = $2 AND digest = $3 AND tool_hash = $4
                     AND (reported = 0 OR (execution = 'done' AND updated_at >= $5)) ORDER BY created_at DESC LIMIT 1",
                    $crate::store::rows::APPROVAL_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(principal)
                    .bind(tool)
                    .bind(digest)
                    .bind(tool_hash)
                    .bind(replay_since)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| $crate::store::rows::approval(&r)).transpose()
            }

            pub async fn approvals(
                &self,
                org: Option<&str>,
                status: Option<$crate::store::kinds::Status>,
                limit: i64,
            ) -> Result<Vec<$crate::store::approvals::ApprovalRow>, $crate::store::error::StoreError> {
                let sql = format!(
                    "SELECT {} FROM approvals WHERE (CAST($1 AS TEXT) IS NULL OR org = $1)
                     AND (CAST($2 AS TEXT) IS NULL OR status = $2) ORDER BY created_at DESC, id LIMIT $3",
                    $crate::store::rows::APPROVAL_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(org)
                    .bind(status.map($crate::store::kinds::Status::as_str))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map($crate::store::rows::approval).collect()
            }

            pub async fn approvals_since(
                &self,
                rev: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::approvals::ApprovalRow>, $crate::store::error::StoreError> {
                let sql = format!(
                    "SELECT {} FROM approvals WHERE rev > $1 ORDER BY rev LIMIT $2",
                    $crate::store::rows::APPROVAL_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(rev)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map($crate::store::rows::approval).collect()
            }

            pub async fn approvals_rev(&self) -> Result<i64, $crate::store::error::StoreError> {
                use sqlx::Row as _;
                let row = sqlx::query("SELECT CAST(COALESCE(MAX(rev), 0) AS BIGINT) FROM approvals")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get(0)?)
            }

            pub async fn deliveries(
                &self,
                approval_id: &str,
            ) -> Result<
                Vec<($crate::store::approvals::DeliveryRow, Vec<$crate::store::approvals::AttemptRow>)>,
                $crate::store::error::StoreError,
            > {
                let sql = format!(
                    "SELECT {} FROM approval_deliveries WHERE approval_id = $1 ORDER BY id",
                    $crate::store::rows::DELIVERY_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(approval_id)
                    .fetch_all(&self.pool)
                    .await?;
                let sql = format!(
                    "SELECT {} FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
                    $crate::store::rows::ATTEMPT_COLUMNS
                );
                let sql = Self::sql(&sql).into_owned();
                let mut out = Vec::new();
                for r in &rows {
                    let d = $crate::store::rows::delivery(r)?;
                    let attempts =
                        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(d.id).fetch_all(&self.pool).await?;
                    let attempts = attempts
                        .iter()
                        .map($crate::store::rows::attempt)
                        .collect::<Result<Vec<_>, $crate::store::error::StoreError>>()?;
                    out.push((d, attempts));
                }
                Ok(out)
            }
        }
    };
}

macro_rules! approval_writes {
    ($backend:ty, $conn:ty) => {
        use sqlx::{AssertSqlSafe, Row};

        use super::{append_in, resolve_in};
        use $crate::store::approvals::{ApprovalRow, AttemptRow, DeliveryRow, Transition, Transitioned};
        use $crate::store::audit::AuditDraft;
        use $crate::store::error::StoreError;
        use $crate::store::kinds::{HoldState, Status};
        use $crate::store::ledger::{HOLD_OWNER_PREFIX, Resolution};
        use $crate::store::rows::{self, APPROVAL_COLUMNS as COLUMNS, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};

        const NEXT_REV: &str = "(SELECT COALESCE(MAX(rev), 0) + 1 FROM approvals)";

        impl $backend {
            /// Stores a new pending action with its webhook deliveries and
            /// its audit record, and hands its hold (if any) to the action.
            /// `None` if an open action for this exact call exists already:
            /// then nothing is stored.
            pub async fn create_approval(
                &self,
                row: &ApprovalRow,
                hold_expires_at: i64,
                webhooks: &[String],
                record: AuditDraft,
            ) -> Result<Option<ApprovalRow>, StoreError> {
                let mut tx = self.begin_write().await?;
                let values = (1..=29).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
                let sql = format!(
                    "INSERT INTO approvals ({COLUMNS}) VALUES ({values}, {NEXT_REV}, $30)
                     ON CONFLICT (principal, tool, digest, tool_hash) WHERE reported = 0 DO NOTHING
                     RETURNING {COLUMNS}"
                );
                let inserted = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
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
                    let sql = "UPDATE holds SET owner = $1, expires_at = $2 WHERE id = $3 AND state = 'held'";
                    sqlx::query(AssertSqlSafe(Self::sql(sql).into_owned()))
                        .bind(format!("{HOLD_OWNER_PREFIX}{}", row.id))
                        .bind(hold_expires_at)
                        .bind(hold)
                        .execute(&mut *tx)
                        .await?;
                }
                let sql = Self::sql(
                    "INSERT INTO approval_deliveries (approval_id, route, url, state, attempts, next_at, created_at, updated_at)
                     VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
                )
                .into_owned();
                for url in webhooks {
                    sqlx::query(AssertSqlSafe(sql.clone()))
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

            /// Decides, cancels or expires one action, with its audit record;
            /// an action that will not run releases its hold and forgets its
            /// arguments.
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
                let sql = format!(
                    "UPDATE approvals SET status = $1, decided_at = $3, decided_by = $4, decision_reason = $5,
                     arguments = {keep_arguments}, rev = {NEXT_REV}, updated_at = $3
                     WHERE id = $2 AND {condition} RETURNING {COLUMNS}"
                );
                let changed = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(t.to.as_str())
                    .bind(&t.id)
                    .bind(t.now)
                    .bind(&t.by)
                    .bind(&t.reason)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(changed) = changed else {
                    let sql = format!("SELECT {COLUMNS} FROM approvals WHERE id = $1");
                    let standing = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
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
                    self.after_erase().await;
                }
                Ok(Transitioned::Done(row))
            }

            /// Expires the pending actions whose time is up (at most 256 a sweep).
            pub async fn expire_approvals(
                &self,
                now: i64,
                record: impl Fn(&ApprovalRow) -> AuditDraft + Send,
            ) -> Result<Vec<ApprovalRow>, StoreError> {
                // Cheap read first: most sweeps find nothing and take no write lock.
                let sql = Self::sql("SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= $1 LIMIT 256");
                let due = sqlx::query(AssertSqlSafe(sql.into_owned())).bind(now).fetch_all(&self.pool).await?;
                if due.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "UPDATE approvals SET status = 'expired', decided_at = $1, decided_by = 'tollgate',
                     decision_reason = 'no decision before the approval expired', arguments = NULL,
                     rev = {NEXT_REV}, updated_at = $1
                     WHERE id = $2 AND status = 'pending' AND expires_at <= $1 RETURNING {COLUMNS}"
                );
                let sql = Self::sql(&sql).into_owned();
                let mut tx = self.begin_write().await?;
                let mut expired = Vec::new();
                for id in due {
                    let id: String = id.try_get(0)?;
                    // One row per statement: each takes its own `rev`.
                    let changed =
                        sqlx::query(AssertSqlSafe(sql.clone())).bind(now).bind(&id).fetch_optional(&mut *tx).await?;
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
                    self.after_erase().await;
                }
                Ok(expired)
            }

            /// One change of one action, in its own write transaction (it
            /// takes a `rev`).
            async fn update_one(&self, sql: String, bind: impl FnOnce(Query<'_>) -> Query<'_>) -> Result<Option<ApprovalRow>, StoreError> {
                let mut tx = self.begin_write().await?;
                let row = bind(sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))).fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row.map(|r| rows::approval(&r)).transpose()
            }

            /// Takes an approved action to run it: at most one taker wins.
            pub async fn claim_execution(&self, id: &str, by: &str, now: i64) -> Result<Option<ApprovalRow>, StoreError> {
                let sql = format!(
                    "UPDATE approvals SET execution = 'running', claimed_by = $1, rev = {NEXT_REV}, updated_at = $2
                     WHERE id = $3 AND status = 'approved' AND execution = 'none' RETURNING {COLUMNS}"
                );
                self.update_one(sql, |q| q.bind(by.to_string()).bind(now).bind(id.to_string())).await
            }

            /// Stores a run action's result and forgets its arguments.
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
                let row = self
                    .update_one(sql, |q| q.bind(result.to_string()).bind(i64::from(reported)).bind(now).bind(id.to_string()))
                    .await;
                self.after_erase().await;
                row
            }

            pub async fn mark_reported(&self, id: &str, now: i64) -> Result<(), StoreError> {
                let sql = format!(
                    "UPDATE approvals SET reported = 1, rev = {NEXT_REV}, updated_at = $1 WHERE id = $2 AND reported = 0
                     RETURNING {COLUMNS}"
                );
                self.update_one(sql, |q| q.bind(now).bind(id.to_string())).await?;
                Ok(())
            }

            /// Leases up to `limit` due deliveries until `lease_until`.
            pub async fn due_deliveries(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
                // A read first: the worker polls often, and an idle poll must not
                // take a write lock.
                let sql = Self::sql("SELECT 1 FROM approval_deliveries WHERE state = 'pending' AND next_at <= $1 LIMIT 1");
                let due = sqlx::query(AssertSqlSafe(sql.into_owned())).bind(now).fetch_optional(&self.pool).await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                // The lease moves `next_at` forward: a second worker (another
                // process or replica) does not take the same delivery while
                // this one tries it.
                let sql = format!(
                    "UPDATE approval_deliveries SET next_at = $1 WHERE id IN
                       (SELECT id FROM approval_deliveries WHERE state = 'pending' AND next_at <= $2
                        ORDER BY next_at LIMIT $3{})
                     RETURNING {DELIVERY_COLUMNS}",
                    Self::SKIP_LOCKED
                );
                let rows = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(rows::delivery).collect()
            }

            /// Records one delivery attempt and the delivery's next state.
            pub async fn record_attempt(&self, a: &AttemptRow, state: &str, next_at: i64) -> Result<(), StoreError> {
                let mut tx = self.begin_rows().await?;
                let sql = format!("INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)");
                sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(a.delivery_id)
                    .bind(a.attempt)
                    .bind(a.at)
                    .bind(a.micros)
                    .bind(a.status)
                    .bind(&a.error)
                    .execute(&mut *tx)
                    .await?;
                let sql = "UPDATE approval_deliveries SET state = $1, attempts = $2, next_at = $3, updated_at = $4 WHERE id = $5";
                sqlx::query(AssertSqlSafe(Self::sql(sql).into_owned()))
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

            /// `true` the first time a decision's signature is seen (within
            /// the replay window, which `forget_before` closes).
            pub async fn use_signature(&self, signature: &str, now: i64, forget_before: i64) -> Result<bool, StoreError> {
                let mut tx = self.begin_rows().await?;
                let sql = Self::sql("DELETE FROM used_signatures WHERE seen_at < $1");
                sqlx::query(AssertSqlSafe(sql.into_owned())).bind(forget_before).execute(&mut *tx).await?;
                let sql = Self::sql("INSERT INTO used_signatures (signature, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING");
                let fresh = sqlx::query(AssertSqlSafe(sql.into_owned()))
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

        type Query<'q> = sqlx::query::Query<'q, <$conn as sqlx::Connection>::Database, <<$conn as sqlx::Connection>::Database as sqlx::Database>::Arguments>;

        /// Releases the hold of an action that will not run.
        async fn release_hold(conn: &mut $conn, row: &ApprovalRow, to: Status, now: i64) -> Result<(), StoreError> {
            if let Some(hold) = &row.hold_id {
                let state = if to == Status::Expired { HoldState::Expired } else { HoldState::Released };
                let r = Resolution { hold_id: hold.clone(), state, charged: 0, charged_tokens: 0, now };
                resolve_in(conn, &[r]).await?;
            }
            Ok(())
        }
    };
}

pub(super) use approval_reads;
pub(super) use approval_writes;
