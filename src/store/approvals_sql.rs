//! The approval queue's reads (an action, the open action for a call,
//! listings, the change feed, deliveries and their attempts), written once
//! for both backends like `admin_sql`: instantiated in each backend's
//! `approvals` module with `approval_reads!(Backend)`. Its writes stay per
//! backend: they differ in how a duplicate action is detected, how writers
//! are serialised and what SQLite scrubs from its log afterwards.

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

pub(super) use approval_reads;
