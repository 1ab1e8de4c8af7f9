//! Calls parked while a 2026-07-28 agent answers an upstream's question.
//!
//! The agent got an `input_required` result whose `requestState` names the
//! parked call (`tollgate-parked:<uuid>`: 122 random bits, looked up here, so
//! a forged or altered state finds nothing). Its retry takes the call back
//! and resumes it. Parked calls expire; dropping one drops the upstream
//! request, whose pending question then fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::forward::Flight;
use crate::upstream::handler::Pending;

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
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        calls.retain(|_, p| p.expires > now);
        if calls.len() >= MAX_PARKED {
            return None;
        }
        let id = uuid::Uuid::new_v4().to_string();
        calls.insert(id.clone(), Parked { flight, pending, key, tool, expires: now + TTL });
        Some(format!("{STATE_PREFIX}{id}"))
    }

    /// Takes back the call `state` names, if it is one of ours, unexpired, for `tool`.
    pub fn resume(&self, state: &str, tool: &str) -> Option<Parked> {
        let id = state.strip_prefix(STATE_PREFIX)?;
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let parked = calls.remove(id)?;
        if parked.tool != tool || parked.expires <= Instant::now() {
            return None;
        }
        Some(parked)
    }
}
