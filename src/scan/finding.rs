//! One call's scan state and what it records: stable masks, the
//! untrusted-content envelope's nonce, and [`Finding`]s for the audit
//! (never the text found).

use std::collections::HashMap;

use serde::Serialize;

use super::{pii, secrets};

/// What a scan found and did, as the audit records it: never the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub scan: &'static str,
    pub kind: &'static str,
    /// `arguments`, `result` or `resource`.
    pub direction: &'static str,
    /// JSON pointer of the value it was found in.
    pub at: String,
    /// What was done: `log`, `mask`, `flag`, `block`; output policy also
    /// `drop`, `strip`, `truncate`.
    pub action: &'static str,
    pub count: u32,
}

/// Most findings one call records (each counts its repeats).
const MAX_FINDINGS: usize = 64;

/// One call's scan state: masks stay the same for the same value for the
/// whole call (arguments and result), so the agent can still tell that two
/// masked emails are the same email.
#[derive(Debug, Clone, Default)]
pub struct CallScan {
    masks: HashMap<String, String>,
    counters: HashMap<&'static str, u32>,
    pub findings: Vec<Finding>,
    /// Marks the untrusted-content envelope of this call (unguessable, so a
    /// tool cannot close the envelope early).
    nonce: String,
    /// What the flagged text came from, for the envelope.
    pub(super) source: String,
    /// Whether a scan changed the data (masked, wrapped, removed, cut).
    pub changed: bool,
    /// The last pointer noted, and what the audit keeps of it.
    pointer: (String, String),
}

impl CallScan {
    pub fn new(source: &str) -> CallScan {
        CallScan { source: source_label(source), ..CallScan::default() }
    }

    /// The mask for `value`, the same every time within the call.
    pub(super) fn mask(&mut self, stem: &'static str, value: &str) -> String {
        let key = format!("{stem}\u{0}{value}");
        if let Some(m) = self.masks.get(&key) {
            return m.clone();
        }
        let n = self.counters.entry(stem).or_default();
        *n += 1;
        let m = format!("[{stem}_{n}]");
        self.masks.insert(key, m.clone());
        m
    }

    pub(super) fn note(
        &mut self,
        scan: &'static str,
        kind: &'static str,
        direction: &'static str,
        at: &str,
        action: &'static str,
    ) {
        // Checked here, on findings only (not on every key walked), and once
        // for the many hits one text may have.
        if self.pointer.0 != at {
            self.pointer = (at.to_string(), audit_pointer(at));
        }
        let at = self.pointer.1.as_str();
        if let Some(f) = self
            .findings
            .iter_mut()
            .find(|f| f.scan == scan && f.kind == kind && f.at == at && f.direction == direction)
        {
            f.count = f.count.saturating_add(1);
            if action == "block" {
                f.action = action;
            }
            return;
        }
        // A block is never dropped for lack of room: it decides the outcome.
        if self.findings.len() >= MAX_FINDINGS && action == "block" {
            self.findings.pop();
        }
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding { scan, kind, direction, at: at.to_string(), action, count: 1 });
        }
    }

    pub(super) fn nonce(&mut self) -> &str {
        if self.nonce.is_empty() {
            self.nonce = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        }
        &self.nonce
    }

    /// Whether a finding in `direction` blocks the call or its result.
    pub fn blocked(&self, direction: &str) -> bool {
        self.findings.iter().any(|f| f.direction == direction && f.action == "block")
    }

    /// What blocked, for the agent: scan, kind and where, never the text.
    pub fn block_reason(&self, direction: &str) -> String {
        let parts: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.direction == direction && f.action == "block")
            .map(|f| format!("{} ({}) at {}", f.kind, f.scan, if f.at.is_empty() { "/" } else { &f.at }))
            .collect();
        parts.join(", ")
    }

    /// Findings as the audit stores them.
    pub fn audit(&self) -> serde_json::Value {
        serde_json::to_value(&self.findings).unwrap_or_default()
    }
}

/// What the envelope names as the text's source: secrets masked, and only
/// characters that cannot imitate the envelope's own punctuation or lines.
fn source_label(source: &str) -> String {
    secrets::redact(source, "[SECRET]")
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '[' | ']' | '\n' | '\r'))
        .take(200)
        .collect()
}

/// A pointer as the audit may keep it: a segment that is itself something
/// a scan would mask (a map keyed by email) is replaced by `*`.
fn audit_pointer(at: &str) -> String {
    let mut hits = Vec::new();
    at.split('/')
        .map(|segment| {
            hits.clear();
            secrets::find(segment, None, &mut hits);
            pii::find(segment, None, &mut hits);
            if hits.is_empty() { segment } else { "*" }
        })
        .collect::<Vec<_>>()
        .join("/")
}
