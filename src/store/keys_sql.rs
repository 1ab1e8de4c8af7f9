//! The keys table's statements, written once for both backends like
//! `admin_sql` (PostgreSQL's text, adapted by the backend's `sql`):
//! instantiated inside a module of each backend with
//! `key_statements!(super::Backend)`. What differs stays in the backend:
//! how its key cache learns of a change (`keys_changed`) and how
//! `key_by_hash` consults that cache.

macro_rules! key_statements {
    ($backend:ty) => {
        use sqlx::AssertSqlSafe;

        use $crate::store::error::StoreError;
        use $crate::store::keys::KeyRow;
        use $crate::store::rows::{self, KEY_COLUMNS};

        impl $backend {
            pub async fn insert_key(&self, k: &KeyRow) -> Result<(), StoreError> {
                let sql = format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
                sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
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

            /// The key whose secret hashes to `secret_hash`, read from the
            /// table (the backend's `key_by_hash` caches it).
            pub(super) async fn key_by_hash_uncached(
                &self,
                secret_hash: &str,
            ) -> Result<Option<KeyRow>, StoreError> {
                let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE secret_hash = $1");
                let row = sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned()))
                    .bind(secret_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| rows::key(&r)).transpose()
            }

            pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
                let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1");
                let row =
                    sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned())).bind(id).fetch_optional(&self.pool).await?;
                row.map(|r| rows::key(&r)).transpose()
            }

            pub async fn list_keys(&self, org: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE (CAST($1 AS TEXT) IS NULL OR org = $1) ORDER BY created_at, id"
                );
                let rows =
                    sqlx::query(AssertSqlSafe(Self::sql(&sql).into_owned())).bind(org).fetch_all(&self.pool).await?;
                rows.iter().map(rows::key).collect()
            }

            pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
                let sql = "UPDATE keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
                let done = sqlx::query(AssertSqlSafe(Self::sql(sql).into_owned()))
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                self.keys_changed();
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(super) use key_statements;
