//! Per upstream: how many agents' own sessions are open (see `own`), under
//! the manifest's `[agent_sessions] max`, and whether the upstream refused
//! the legacy handshake (then no agent asks it again).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub struct Seats {
    open: Arc<AtomicUsize>,
    no_legacy: AtomicBool,
}

/// A place under the cap, given back when dropped (the session closed).
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Seats {
    /// Agents' own sessions open now (the admin API's upstream status).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// A place, unless `cap` are taken.
    pub fn take(&self, cap: usize) -> Option<Seat> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= cap {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Seat(self.open.clone()))
    }

    pub fn refused_legacy(&self) -> bool {
        self.no_legacy.load(Ordering::SeqCst)
    }

    pub fn refuses_legacy(&self) {
        self.no_legacy.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seat_is_given_back_when_dropped_and_none_is_given_past_the_cap() {
        let seats = Seats::default();
        let a = seats.take(2).expect("first");
        let b = seats.take(2).expect("second");
        assert!(seats.take(2).is_none(), "past the cap");
        assert_eq!(seats.open(), 2, "a refusal takes no place");
        drop(a);
        assert_eq!(seats.open(), 1);
        let _c = seats.take(2).expect("a freed place");
        drop(b);
        assert!(seats.take(0).is_none(), "a cap of 0 gives none");
    }
}
