//! Pending actions, their webhook deliveries and used signatures: the
//! statements of `store::approvals_sql`, on PostgreSQL.

use super::Postgres;

impl Postgres {
    /// Two replicas' delivery workers never lease the same delivery.
    const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

    /// A write that needs no store-wide order: no write lock.
    async fn begin_rows(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, crate::store::error::StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Nothing to scrub: PostgreSQL's WAL is the server's to manage.
    async fn after_erase(&self) {}
}

crate::store::approvals_sql::approval_reads!(super::Postgres);
crate::store::approvals_sql::approval_writes!(super::Postgres, super::Conn);
