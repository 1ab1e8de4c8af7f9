//! Calls parked while a 2026-07-28 agent answers an upstream's question.
//!
//! The agent got an `input_required` result whose `requestState` names the
//! parked call (`tollgate-parked:<uuid>`: 122 random bits, looked up here, so
//! a forged or altered state finds nothing). Its retry takes the call back
//! and resumes it. Parked calls expire (a sweeper drops them on time);
//! dropping one drops the upstream request, whose pending question then fails.
//! Until identity lands (issue 3) any holder of the state may answer; the
//! uuid is the only bearer of that right.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::flight::Flight;
use super::inflight::Pending;
use crate::sync::Locked;

pub const STATE_PREFIX: &str = "tollgate-parked:";
const TTL: Duration = Duration::from_secs(600);
const MAX_PARKED: usize = 10_000;

pub struct Parked {
    pub flight: Flight,
    pub pending: Pending,
    /// The key the question was asked under in `inputRequests`.
    pub key: String,
    /// The tool the call was made to; a retry must name the same one.
    pub tool: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Lot {
    calls: Mutex<HashMap<String, Parked>>,
}

impl Lot {
    /// Parks a call; returns the `requestState` that resumes it, or `None` when full.
    pub fn park(&self, flight: Flight, pending: Pending, key: String, tool: String) -> Option<String> {
        let mut calls = self.calls.locked();
        let now = Instant::now();
        if calls.len() >= MAX_PARKED {
            return None;
        }
        let id = uuid::Uuid::new_v4().to_string();
        calls.insert(id.clone(), Parked { flight, pending, key, tool, expires: now + TTL });
        Some(format!("{STATE_PREFIX}{id}"))
    }

    /// Takes back the call `state` names, if it is one of ours, unexpired, for
    /// `tool`. A retry naming another tool finds nothing and leaves the call parked.
    pub fn resume(&self, state: &str, tool: &str) -> Option<Parked> {
        let id = state.strip_prefix(STATE_PREFIX)?;
        let mut calls = self.calls.locked();
        let p = calls.get(id)?;
        if p.tool != tool || p.expires <= Instant::now() {
            return None;
        }
        calls.remove(id)
    }

    /// Drops expired calls (and with them their upstream requests).
    pub fn sweep(&self) {
        let now = Instant::now();
        // Dropped outside the lock: dropping a flight runs rmcp and channel cleanup.
        let expired: Vec<Parked> = {
            let mut calls = self.calls.locked();
            let ids: Vec<String> = calls.iter().filter(|(_, p)| p.expires <= now).map(|(id, _)| id.clone()).collect();
            ids.into_iter().filter_map(|id| calls.remove(&id)).collect()
        };
        drop(expired);
    }

    /// Sweeps every `every` until `shutdown`.
    pub async fn sweeper(self: std::sync::Arc<Self>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        crate::periodic::every(every, shutdown, || {
            self.sweep();
            std::future::ready(())
        })
        .await;
    }
}
