//! Liveness of replicas: each process holds a session advisory lock keyed by
//! its owner id on a connection of its own. A lock another session can take
//! belongs to a process that is gone, or to one that lost its connection and
//! is taking the lock again: `store::liveness` only calls an owner dead when
//! its lock stayed free for longer than a lost connection takes to recover.

use std::time::Duration;

use sha2::Digest;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Postgres;
use crate::store::error::StoreError;

/// The first key of the two-key advisory locks ("toll"); two-key locks
/// never collide with the one-key write lock.
const OWNER_SPACE: i32 = 0x746f_6c6c;

/// How often the session's connection is checked, so a lost one (and with
/// it the lock) is taken again.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A check that takes longer counts as a lost connection (a half-open
/// socket would otherwise hang it for minutes).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The second key: 32 bits of the owner id's SHA-256. Two live owners
/// sharing it would only make a dead one look alive (its holds then expire
/// by time).
fn key_of(owner: &str) -> i32 {
    let d = sha2::Sha256::digest(owner.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Holds the lock while it lives.
pub struct Session {
    _stop: DropGuard,
}

impl Postgres {
    /// Takes `owner`'s lock now (or, if the database does not answer, as soon
    /// as it does) and keeps it until the returned session is dropped.
    pub async fn hold_session(&self, owner: &str) -> Session {
        let stop = CancellationToken::new();
        let key = key_of(owner);
        let first = self.lock_session(key).await;
        if let Err(e) = &first {
            tracing::warn!("cannot take this replica's liveness lock yet (retrying): {e}");
        }
        tokio::spawn(keep(self.clone(), key, first.ok(), stop.clone()));
        Session { _stop: stop.drop_guard() }
    }

    /// A connection holding the lock. Never waits for the lock: another
    /// replica's liveness look holds it for an instant, and a key shared
    /// with a live owner (a 32-bit collision) would wait forever.
    async fn lock_session(&self, key: i32) -> Result<PgConnection, StoreError> {
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
            .bind(OWNER_SPACE)
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if !taken {
            return Err(StoreError::Unavailable("this replica's liveness lock is held by another session".into()));
        }
        Ok(conn)
    }

    /// Of `owners`, those whose lock is free: their process is gone. Each
    /// lock is taken and given back in the same statement.
    pub async fn dead_sessions(&self, owners: &[&String]) -> Result<Vec<String>, StoreError> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = owners.iter().map(|o| o.as_str()).collect();
        let keys: Vec<i32> = owners.iter().map(|o| key_of(o)).collect();
        // CASE fixes the order: unlock only what was just locked.
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT o FROM unnest($1::text[], $2::int4[]) AS t(o, k)
             WHERE CASE WHEN pg_try_advisory_lock($3, k) THEN pg_advisory_unlock($3, k) ELSE false END",
        )
        .bind(&names)
        .bind(&keys)
        .bind(OWNER_SPACE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(o,)| o).collect())
    }
}

/// Keeps the session (and its lock) alive, taking it again after a loss.
async fn keep(store: Postgres, key: i32, mut conn: Option<PgConnection>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let wait = if conn.is_some() { CHECK_EVERY } else { backoff };
        tokio::select! {
            _ = stop.cancelled() => {
                if let Some(c) = conn {
                    let _ = c.close().await;
                }
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        match &mut conn {
            Some(c) => {
                let checked = tokio::time::timeout(CHECK_TIMEOUT, c.ping()).await;
                if !matches!(checked, Ok(Ok(()))) {
                    tracing::warn!("liveness session lost; taking it again");
                    conn = None;
                }
            }
            None => match store.lock_session(key).await {
                Ok(c) => {
                    tracing::info!("liveness lock taken");
                    conn = Some(c);
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!("cannot take this replica's liveness lock: {e}");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            },
        }
    }
}
