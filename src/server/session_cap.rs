//! Caps on open agent sessions, per key and in total.
//!
//! A legacy Streamable HTTP session (and a WebSocket connection) holds memory
//! on the gateway until the agent closes it or it idles out, so a client that
//! opens sessions and abandons them could otherwise pin memory without bound.
//! The edge takes a [`Slot`] before a session is created and refuses past the
//! cap; the session keeps its slot for its whole life and gives it back when it
//! ends (the slot is released when its last clone drops).

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone)]
pub struct SessionCap {
    inner: Arc<Inner>,
}

struct Inner {
    per_key: usize,
    total: usize,
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_key: HashMap<String, usize>,
}

impl Inner {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.open.locked()
    }
}

/// One open session's place under the caps. Cheap to clone (it travels in
/// request extensions); the place is given back when the last clone drops.
#[derive(Clone)]
pub struct Slot(#[allow(dead_code)] Arc<Held>);

struct Held {
    key: String,
    cap: Arc<Inner>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut c = self.cap.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.by_key.remove(&self.key);
            }
        }
    }
}

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error(
        "this key already has {0} open sessions (server.max_sessions_per_key): close sessions you no longer use (DELETE /mcp with their Mcp-Session-Id) or wait for idle ones to expire"
    )]
    Key(usize),
    #[error("the gateway has {0} open sessions (server.max_sessions): try again later")]
    Total(usize),
}

impl SessionCap {
    pub fn new(per_key: usize, total: usize) -> Self {
        Self { inner: Arc::new(Inner { per_key, total, open: Mutex::default() }) }
    }

    /// A place for one more session of `key`, or why there is none.
    pub fn take(&self, key: &str) -> Result<Slot, Full> {
        let mut c = self.inner.counts();
        let mine = c.by_key.get(key).copied().unwrap_or(0);
        if mine >= self.inner.per_key {
            return Err(Full::Key(self.inner.per_key));
        }
        if c.total >= self.inner.total {
            return Err(Full::Total(self.inner.total));
        }
        c.total += 1;
        *c.by_key.entry(key.to_string()).or_default() += 1;
        drop(c);
        Ok(Slot(Arc::new(Held { key: key.to_string(), cap: self.inner.clone() })))
    }

    /// Sessions open now: all keys, and `key`'s.
    pub fn open(&self, key: &str) -> (usize, usize) {
        let c = self.inner.counts();
        (c.total, c.by_key.get(key).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_in_total_and_gives_places_back() {
        let cap = SessionCap::new(2, 3);
        let a1 = cap.take("a").expect("first");
        let a2 = cap.take("a").expect("second");
        assert_eq!(cap.take("a").err(), Some(Full::Key(2)));
        let b1 = cap.take("b").expect("b's first");
        assert_eq!(cap.take("c").err(), Some(Full::Total(3)));
        let a1_clone = a1.clone();
        drop(a1);
        assert_eq!(cap.open("a"), (3, 2), "a clone still holds the place");
        drop(a1_clone);
        assert_eq!(cap.open("a"), (2, 1));
        let c1 = cap.take("c").expect("a place came free");
        drop((a2, b1, c1));
        assert_eq!(cap.open("a"), (0, 0));
    }

    #[test]
    fn concurrent_takers_never_exceed_the_cap() {
        let cap = SessionCap::new(1000, 50);
        let held = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for i in 0..100 {
                        if let Ok(slot) = cap.take(&format!("k{}", i % 3)) {
                            held.lock().unwrap().push(slot);
                        }
                    }
                });
            }
        });
        assert_eq!(held.lock().unwrap().len(), 50);
        assert_eq!(cap.open("k0").0, 50);
    }
}
