//! Pending actions, their webhook deliveries and used signatures: the
//! statements of `store::approvals_sql`, on SQLite, and what SQLite alone
//! does after an action's arguments are erased.

use super::Sqlite;

impl Sqlite {
    /// Delivery leases need no row locks: SQLite has one writer at a time.
    const SKIP_LOCKED: &str = "";

    /// A write that needs no store-wide order still takes SQLite's write
    /// lock at once (`BEGIN IMMEDIATE`), so it queues instead of failing.
    async fn begin_rows(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, crate::store::error::StoreError> {
        self.begin_write().await
    }

    /// After an action's arguments are erased: with `secure_delete` the
    /// database pages no longer hold them, but the write-ahead log still has
    /// the frames that first wrote them until it is overwritten. A TRUNCATE
    /// checkpoint copies the log into the database and empties the file.
    /// Rare (a decision, an expiry, an executed action), so its wait for
    /// other connections' readers and its fsync cost no call. If it cannot
    /// complete now (a reader holds an old snapshot), the frames are gone at
    /// the next complete checkpoint's restart.
    async fn after_erase(&self) {
        match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await {
            Ok(row) if sqlx::Row::try_get::<i64, _>(&row, 0).unwrap_or(1) == 0 => {}
            Ok(_) => tracing::debug!("the write-ahead log could not be emptied yet (busy)"),
            Err(e) => tracing::debug!("the write-ahead log could not be emptied: {e}"),
        }
    }
}

crate::store::approvals_sql::approval_reads!(super::Sqlite);
crate::store::approvals_sql::approval_writes!(super::Sqlite, super::Conn);
