//! `LISTEN tollgate`: what other replicas (and this one) commit, heard as it
//! commits. The triggers of migration 5 notify with the topic's name.
//!
//! sqlx's listener reconnects by itself when its connection drops and says
//! so (`try_recv` gives `None`): notifications sent meanwhile are lost, so
//! every topic is announced as changed and followers read again. When it
//! cannot reconnect, followers fall back to their poll interval until it can.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio_util::sync::CancellationToken;

use crate::store::changes::{Feed, Topic};

pub const CHANNEL: &str = "tollgate";

/// Listens until `shutdown`, telling `feed` what it hears.
pub async fn run(pool: PgPool, feed: Arc<Feed>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = connect(&pool) => l,
        };
        match listener {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                feed.resumed();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = hear(&mut listener, &feed) => tracing::warn!("store notifications interrupted: {e}"),
                }
                feed.lost();
            }
            Err(e) => tracing::warn!("cannot listen for store notifications (followers poll meanwhile): {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // The pool closes at shutdown; the listener's task ends by `shutdown`.
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Passes notifications on until the listener fails for good.
async fn hear(listener: &mut PgListener, feed: &Feed) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match Topic::parse(n.payload()) {
                Some(t) => feed.heard(t),
                None => tracing::debug!(payload = n.payload(), "unknown store notification"),
            },
            // Reconnected after a drop: what was sent meanwhile is lost.
            Ok(None) => {
                tracing::info!("store notifications resumed after a dropped connection");
                feed.resumed();
            }
            Err(e) => return e,
        }
    }
}
