//! The admin API's statements (grants, their revisions, tool pins, the
//! change counter), written once for both backends: instantiated in each
//! backend's `admin` module with `admin_statements!(Backend, Connection)`.
//! The text is PostgreSQL's (`$1` placeholders, `CAST`s both read alike);
//! the backend's `sql` adapts it (SQLite numbers them `?1`), and its
//! `begin_write` opens the transaction that serialises writers.

macro_rules! admin_statements {
    ($backend:ty, $conn:ty) => {
        use sqlx::{AssertSqlSafe, Row};

        use $crate::store::admin::{GrantEdit, GrantRevisionRow, GrantRow, PinRow};
        use $crate::store::audit::AuditDraft;
        use $crate::store::error::StoreError;
        use $crate::store::rows::{self, GRANT_COLUMNS, PIN_COLUMNS, REVISION_COLUMNS};

        impl $backend {
            pub async fn grants(&self, org: Option<&str>) -> Result<Vec<GrantRow>, StoreError> {
                let sql = format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE (CAST($1 AS TEXT) IS NULL OR org = $1) \
                     ORDER BY created_at, id"
                );
                let rows =
                    sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned())).bind(org).fetch_all(&self.pool).await?;
                rows.iter().map(rows::grant).collect()
            }

            pub async fn grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
                let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
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
                let mut tx = self.begin_write().await?;
                let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1");
                let current = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .as_ref()
                    .map(rows::grant)
                    .transpose()?;
                let sql = "SELECT MAX(revision) FROM grant_revisions WHERE grant_id = $1";
                let last: Option<i64> = sqlx::query(AssertSqlSafe(Self::sql(sql).into_owned()))
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
                        let sql = format!(
                            "INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                             ON CONFLICT (id) DO UPDATE SET org = excluded.org, spec = excluded.spec,
                               revision = excluded.revision, updated_at = excluded.updated_at,
                               updated_by = excluded.updated_by"
                        );
                        sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
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
                        sqlx::query(AssertSqlSafe(Self::sql("DELETE FROM grants WHERE id = $1").into_owned()))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        (revision, record)
                    }
                };
                let sql =
                    format!("INSERT INTO grant_revisions ({REVISION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
                sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
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
                Self::note_change(&mut tx, "grants", revision.at).await?;
                super::append_in(&mut tx, &[record], None).await?;
                tx.commit().await?;
                Ok(Ok(revision))
            }

            pub async fn grant_revisions(&self, id: &str) -> Result<Vec<GrantRevisionRow>, StoreError> {
                let sql =
                    format!("SELECT {REVISION_COLUMNS} FROM grant_revisions WHERE grant_id = $1 ORDER BY revision");
                let rows =
                    sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned())).bind(id).fetch_all(&self.pool).await?;
                rows.iter().map(rows::revision).collect()
            }

            pub async fn pins(&self) -> Result<Vec<PinRow>, StoreError> {
                let sql = format!("SELECT {PIN_COLUMNS} FROM tool_pins ORDER BY upstream, tool");
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
                rows.iter().map(rows::pin).collect()
            }

            pub async fn set_pin(&self, pin: &PinRow, record: AuditDraft) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let sql = format!(
                    "INSERT INTO tool_pins ({PIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (upstream, tool) DO UPDATE SET hash = excluded.hash,
                       updated_at = excluded.updated_at, updated_by = excluded.updated_by"
                );
                sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(&pin.upstream)
                    .bind(&pin.tool)
                    .bind(&pin.hash)
                    .bind(pin.updated_at)
                    .bind(&pin.updated_by)
                    .execute(&mut *tx)
                    .await?;
                Self::note_change(&mut tx, "pins", pin.updated_at).await?;
                super::append_in(&mut tx, &[record], None).await?;
                tx.commit().await?;
                Ok(())
            }

            pub async fn admin_changes(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM admin_changes")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get(0)?)
            }

            async fn note_change(conn: &mut $conn, what: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query(AssertSqlSafe(
                    Self::sql("INSERT INTO admin_changes (what, at) VALUES ($1, $2)").into_owned(),
                ))
                .bind(what)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                // The counter only needs its newest row.
                sqlx::query("DELETE FROM admin_changes WHERE seq < (SELECT MAX(seq) FROM admin_changes)")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(super) use admin_statements;
