//! Content scans on both directions of a governed call: what agents write
//! into tool arguments and what tools (and resources) return to agents.
//!
//! A scan is a [`Detector`]: a plain function from text to [`Hit`]s, each
//! with a kind (`aws_access_key_id`, `email`, `instruction_override`...).
//! What happens to a hit is configuration, not the detector's business:
//! [`Settings`] say, per scan and direction, `block`, `mask`, `flag`, `log`
//! or `off`, layered from built-in defaults, the policy files' `[scans]`,
//! the manifest (upstream, then tool) and the deciding grant. The engine
//! (`walk`) applies them to JSON values, tool results and resource contents
//! and records every [`Finding`] (never the text it found) for the audit.
//!
//! Adding a scan: write its `find` function (with its table of cases), give
//! it a `Detector` impl and add it to [`DETECTORS`]. Its configuration key
//! (`[scans.<name>]`), the audit, `explain` and the pipeline take it from
//! there. `output` (size, content types, links) and `describe` (tool
//! descriptions at catalog time) are policies of another shape and have
//! their own entry points.

pub mod describe;
pub mod injection;
pub mod output;
pub mod pii;
pub mod secrets;
pub mod settings;
mod walk;

use std::collections::HashMap;

use serde::Serialize;

pub use settings::{Action, DescriptionAction, Layer, Place, Settings};
pub use walk::{arguments, closing, contents, error_message, prompt, result};

/// Which way the data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Tool arguments, from the agent to the tool.
    Arguments,
    /// Tool results and resource contents, from the tool to the agent.
    Results,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Arguments => "arguments",
            Direction::Results => "results",
        }
    }
}

/// Something a detector found: a byte range of the text and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub kind: &'static str,
}

/// One scan: finds things in text. Pure; the engine decides what to do.
pub trait Detector: Sync {
    /// The configuration key and the audit's name for it (`secrets`).
    fn name(&self) -> &'static str;
    /// Every kind `find` may report.
    fn kinds(&self) -> &'static [&'static str];
    /// The actions that make sense in `direction` (`off` and `log` always do).
    fn actions(&self, direction: Direction) -> &'static [Action];
    /// What it does when nothing configures it.
    fn default_action(&self, direction: Direction) -> Action;
    /// The stem of a mask (`EMAIL` gives `[EMAIL_1]`).
    fn label(&self, kind: &str) -> &'static str;
    /// Appends what it finds in `text`; `key` is the JSON property the text
    /// is the value of, if any (`"password": "..."`).
    fn find(&self, text: &str, key: Option<&str>, out: &mut Vec<Hit>);
}

/// Every text scan, in the order they run (and are listed by `explain`).
pub static DETECTORS: [&dyn Detector; 3] = [&secrets::Secrets, &pii::Pii, &injection::Injection];

/// The detector configured under `name`.
pub fn detector(name: &str) -> Option<(usize, &'static dyn Detector)> {
    DETECTORS.iter().enumerate().find(|(_, d)| d.name() == name).map(|(i, d)| (i, *d))
}

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
    source: String,
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
    fn mask(&mut self, stem: &'static str, value: &str) -> String {
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

    fn note(
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

    fn nonce(&mut self) -> &str {
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

/// Byte ranges, sorted and merged, for overlap tests in logarithmic time.
#[derive(Default)]
pub(crate) struct Spans(Vec<(usize, usize)>);

impl Spans {
    pub(crate) fn extend(&mut self, more: impl Iterator<Item = (usize, usize)>) {
        self.0.extend(more);
        self.0.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.0.len());
        for (s, e) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    pub(crate) fn overlaps(&self, start: usize, end: usize) -> bool {
        // The last span starting before `end` is the only candidate: merged spans do not overlap.
        let i = self.0.partition_point(|(s, _)| *s < end);
        i > 0 && self.0[i - 1].1 > start
    }
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

/// `key` as a JSON pointer segment (RFC 6901: `~` as `~0`, `/` as `~1`).
pub fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Shannon entropy of `s` in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts: HashMap<char, u32> = HashMap::new();
    let mut n = 0u32;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts.values().map(|&c| f64::from(c) / n).map(|p| -p * p.log2()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_stable_within_a_call_and_numbered_per_kind() {
        let mut c = CallScan::new("t");
        assert_eq!(c.mask("EMAIL", "a@x.io"), "[EMAIL_1]");
        assert_eq!(c.mask("EMAIL", "b@x.io"), "[EMAIL_2]");
        assert_eq!(c.mask("PHONE", "+1 415 555 0100"), "[PHONE_1]");
        assert_eq!(c.mask("EMAIL", "a@x.io"), "[EMAIL_1]");
    }

    #[test]
    fn entropy_separates_random_from_repetitive() {
        assert!(entropy("q8Zr2LmX7vN4tKp9Wc3s") > 4.0);
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy("changemechangeme") < 3.0);
    }

    #[test]
    fn every_detector_has_a_unique_name_and_kinds() {
        let mut names: Vec<&str> = DETECTORS.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DETECTORS.len());
        for d in DETECTORS {
            assert!(!d.kinds().is_empty(), "{}", d.name());
            for dir in [Direction::Arguments, Direction::Results] {
                let a = d.default_action(dir);
                assert!(a == Action::Off || a == Action::Log || d.actions(dir).contains(&a), "{} {dir:?}", d.name());
            }
        }
    }
}
