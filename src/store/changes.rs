//! Changes other processes commit to the store, as far as the store can tell.
//!
//! PostgreSQL tells: replicas `LISTEN` and a trigger notifies on every commit
//! that changes approvals, admin grants and pins, or keys (see
//! `postgres::listen`). SQLite cannot tell another process anything, so a
//! follower on SQLite looks again after its own interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Approvals,
    /// API grants and admin pins.
    Admin,
    Keys,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Approvals, Topic::Admin, Topic::Keys];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Approvals => "approvals",
            Topic::Admin => "admin",
            Topic::Keys => "keys",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// How long a follower on a notifying store waits without a notification
/// before it looks anyway: a backstop for a notification lost in a way the
/// listener could not see, not the mechanism.
pub const BACKSTOP: Duration = Duration::from_secs(10);

/// What a notifying backend's listener shares with the store's users.
#[derive(Debug)]
pub struct Feed {
    tx: broadcast::Sender<Topic>,
    /// Whether notifications are being received now.
    listening: AtomicBool,
    /// Increases with every key change heard (and whenever the listener
    /// may have missed one): the key cache's epoch.
    keys: AtomicU64,
}

impl Default for Feed {
    fn default() -> Self {
        Feed { tx: broadcast::channel(256).0, listening: AtomicBool::new(false), keys: AtomicU64::new(0) }
    }
}

impl Feed {
    pub fn heard(&self, topic: Topic) {
        if topic == Topic::Keys {
            self.keys.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.tx.send(topic);
    }

    /// The listener is connected again after a gap: anything may have
    /// changed meanwhile.
    pub fn resumed(&self) {
        for t in Topic::ALL {
            self.heard(t);
        }
        // After the announcement: whoever sees `listening` hears what follows.
        self.listening.store(true, Ordering::SeqCst);
    }

    /// The listener lost its connection: nothing is heard until it resumes.
    pub fn lost(&self) {
        self.listening.store(false, Ordering::SeqCst);
        // Waiting followers look once more, then poll until it resumes.
        for t in Topic::ALL {
            self.heard(t);
        }
    }

    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// The key cache's epoch; `None` while nothing is heard (no caching then).
    pub fn keys_epoch(&self) -> Option<u64> {
        self.listening().then(|| self.keys.load(Ordering::SeqCst))
    }

    /// A key changed in this process: its own cache forgets at once rather
    /// than when the notification comes back.
    pub fn keys_changed_here(&self) {
        self.keys.fetch_add(1, Ordering::SeqCst);
    }
}

/// A follower's view of one topic.
pub struct Changes {
    topic: Topic,
    /// How often to look when the store cannot tell.
    poll: Duration,
    feed: Option<(Arc<Feed>, broadcast::Receiver<Topic>)>,
}

impl Changes {
    pub(super) fn new(topic: Topic, poll: Duration, feed: Option<Arc<Feed>>) -> Changes {
        let feed = feed.map(|f| {
            let rx = f.tx.subscribe();
            (f, rx)
        });
        Changes { topic, poll, feed }
    }

    /// Whether the store notifies (the wait is on notifications, not a timer).
    pub fn notified(&self) -> bool {
        self.feed.as_ref().is_some_and(|(f, _)| f.listening())
    }

    /// Resolves when the topic may have changed: when the store says so,
    /// or, where it cannot (SQLite, or PostgreSQL's listener between
    /// connections), after the poll interval.
    pub async fn next(&mut self) {
        let Some((feed, rx)) = &mut self.feed else {
            tokio::time::sleep(self.poll).await;
            return;
        };
        loop {
            let wait = if feed.listening() { BACKSTOP } else { self.poll };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Ok(t)) if t == self.topic => return,
                Ok(Ok(_)) => {}
                // Lagged: something was missed, perhaps ours.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    self.feed = None;
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
