//! Key lookups are on every request; they are served from memory while the
//! keys have not changed. What "not changed" means is the backend's: an
//! epoch it can read cheaply (SQLite: a marker file's identity; PostgreSQL:
//! a counter its listener bumps on every key notification). An entry is
//! served only under the epoch it was read in, and for at most [`KEY_TTL`],
//! a backstop for a change whose signal was lost.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::store::keys::KeyRow;
use crate::sync::ReadWrite;

pub const KEY_TTL: Duration = Duration::from_secs(5);

/// Most entries kept; past it the cache starts over.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct KeyCache<E> {
    state: RwLock<State<E>>,
}

#[derive(Debug)]
struct State<E> {
    epoch: Option<E>,
    by_hash: HashMap<String, (KeyRow, Instant)>,
}

impl<E> Default for KeyCache<E> {
    fn default() -> Self {
        KeyCache { state: RwLock::new(State { epoch: None, by_hash: HashMap::new() }) }
    }
}

impl<E: Copy + Eq> KeyCache<E> {
    /// The row cached for `secret_hash` under `epoch`, if fresh.
    pub fn get(&self, epoch: E, secret_hash: &str) -> Option<KeyRow> {
        let state = self.state.reading();
        if state.epoch != Some(epoch) {
            return None;
        }
        state.by_hash.get(secret_hash).filter(|(_, at)| at.elapsed() < KEY_TTL).map(|(row, _)| row.clone())
    }

    /// Caches `row`, read in `epoch` (the epoch read *before* the lookup: a
    /// change made meanwhile leaves the entry under an old epoch, unserved).
    pub fn put(&self, epoch: E, row: KeyRow) {
        let mut state = self.state.writing();
        if state.epoch != Some(epoch) {
            state.by_hash.clear();
            state.epoch = Some(epoch);
        }
        if state.by_hash.len() > MAX_ENTRIES {
            state.by_hash.clear();
        }
        state.by_hash.insert(row.secret_hash.clone(), (row, Instant::now()));
    }

    pub fn clear(&self) {
        self.state.writing().by_hash.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: &str) -> KeyRow {
        KeyRow {
            id: "k".into(),
            secret_hash: hash.into(),
            org: "acme".into(),
            team: "eng".into(),
            role: None,
            label: None,
            created_at: 0,
            revoked_at: None,
        }
    }

    #[test]
    fn an_entry_is_served_only_in_the_epoch_it_was_read_in() {
        let cache = KeyCache::<u64>::default();
        cache.put(1, row("h"));
        assert_eq!(cache.get(1, "h").map(|r| r.secret_hash), Some("h".into()));
        assert!(cache.get(2, "h").is_none(), "a newer epoch does not see older entries");
        cache.put(2, row("g"));
        assert!(cache.get(1, "h").is_none(), "moving to a new epoch forgets the old one");
        cache.clear();
        assert!(cache.get(2, "g").is_none());
    }
}
