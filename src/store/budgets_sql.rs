//! The budgets table and the reads of holds, written once for both
//! backends like `admin_sql` (PostgreSQL's text, adapted by the backend's
//! `sql`): instantiated inside a module of each backend with
//! `budget_statements!(super::Backend, super::Conn)`. Admission and
//! settlement (holds taken and resolved in the journal's cycle) are
//! `store::sql`'s.

macro_rules! budget_statements {
    ($backend:ty, $conn:ty) => {
        use sqlx::{AssertSqlSafe, Row};

        use $crate::store::error::StoreError;
        use $crate::store::kinds::HoldState;
        use $crate::store::ledger::{Applied, BudgetRow, Idempotency, ReusedKey, UsageRow};
        use $crate::store::rows::{self, BUDGET_COLUMNS};

        impl $backend {
            /// Applies `change` to the budget `id` (absent: `None`) in one
            /// write transaction. With an idempotency key, a request seen
            /// before answers its first response (or `ReusedKey` if its body
            /// differs) and changes nothing.
            pub async fn change_budget<E: From<ReusedKey> + Send>(
                &self,
                id: &str,
                idem: Option<Idempotency>,
                change: impl FnOnce(Option<BudgetRow>) -> Result<BudgetRow, E> + Send,
            ) -> Result<Result<Applied, E>, StoreError> {
                let mut tx = self.begin_write().await?;
                if let Some(i) = &idem {
                    let sql = Self::sql("SELECT request_hash, response FROM idempotency WHERE key = $1");
                    let seen =
                        sqlx::query(AssertSqlSafe(sql.into_owned())).bind(&i.key).fetch_optional(&mut *tx).await?;
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
                let sql = format!("SELECT {BUDGET_COLUMNS} FROM budgets WHERE id = $1");
                let current =
                    sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned())).bind(id).fetch_optional(&mut *tx).await?;
                let current = current.map(|r| rows::budget(&r)).transpose()?;
                let new = match change(current) {
                    Ok(row) => row,
                    Err(refused) => {
                        tx.rollback().await?;
                        return Ok(Err(refused));
                    }
                };
                upsert_budget(&mut tx, &new).await?;
                let response = $crate::store::ledger::budget_response(&new);
                if let Some(i) = &idem {
                    let sql = "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES ($1, $2, $3, $4)";
                    sqlx::query(AssertSqlSafe(Self::sql(sql).into_owned()))
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

            /// Replaces every budget the policy files declare with `rows`.
            pub async fn sync_file_budgets(&self, rows: &[BudgetRow]) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM budgets WHERE source LIKE 'file:%'").execute(&mut *tx).await?;
                for r in rows {
                    upsert_budget(&mut tx, r).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// Every budget visible to `org` (all of them for `None`) with
            /// its spent and held amounts in the period that holds `now`.
            pub async fn budget_usage(
                &self,
                org: Option<&str>,
                now: i64,
                period_start: fn($crate::calendar::Period, i64) -> Option<i64>,
            ) -> Result<Vec<UsageRow>, StoreError> {
                let sql = format!(
                    "SELECT {BUDGET_COLUMNS} FROM budgets WHERE (CAST($1 AS TEXT) IS NULL OR org IS NULL OR org = $1)
                     ORDER BY id"
                );
                let rows =
                    sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned())).bind(org).fetch_all(&self.pool).await?;
                let usage_sql =
                    Self::sql("SELECT spent, held FROM budget_usage WHERE budget_id = $1 AND period_start = $2")
                        .into_owned();
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let budget = rows::budget(r)?;
                    let start = period_start(budget.period, now).unwrap_or(0);
                    let usage = sqlx::query(AssertSqlSafe(usage_sql.clone()))
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

            /// The owners (processes, pending actions) of every open hold.
            pub async fn hold_owners(&self) -> Result<Vec<String>, StoreError> {
                let rows =
                    sqlx::query("SELECT DISTINCT owner FROM holds WHERE state = 'held'").fetch_all(&self.pool).await?;
                rows.iter().map(|r| r.try_get(0).map_err(StoreError::from)).collect()
            }

            pub async fn hold_state(&self, id: &str) -> Result<Option<HoldState>, StoreError> {
                use $crate::store::rows::Cols as _;
                let sql = Self::sql("SELECT state FROM holds WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql.into_owned())).bind(id).fetch_optional(&self.pool).await?;
                row.map(|r| r.word(0)).transpose()
            }
        }

        async fn upsert_budget(conn: &mut $conn, b: &BudgetRow) -> Result<(), StoreError> {
            let sql = format!(
                "INSERT INTO budgets ({BUDGET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET scope = excluded.scope, org = excluded.org, unit = excluded.unit,
                   limit_amount = excluded.limit_amount, period = excluded.period, source = excluded.source,
                   updated_at = excluded.updated_at"
            );
            sqlx::query(AssertSqlSafe(<$backend>::sql(&sql).into_owned()))
                .bind(&b.id)
                .bind(&b.scope)
                .bind(&b.org)
                .bind(b.unit.as_str())
                .bind(b.limit_amount)
                .bind(b.period.as_str())
                .bind(&b.source)
                .bind(b.updated_at)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    };
}

pub(super) use budget_statements;
