//! The vocabulary of a text scan: which way data flows, what a detector
//! finds ([`Hit`]), what may be done with it ([`Action`]), the [`Detector`]
//! trait itself, and the small text helpers detectors share.

use std::collections::HashMap;

use serde::Serialize;

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

/// What a text scan does with a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Off,
    /// Recorded in the audit; the data passes unchanged.
    Log,
    /// The text is wrapped in an untrusted-content envelope (injection).
    Flag,
    /// The hit is replaced by a mask (`[EMAIL_1]`), the same for the same value within the call.
    Mask,
    /// The call (arguments) or its result is refused.
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Log => "log",
            Action::Flag => "flag",
            Action::Mask => "mask",
            Action::Block => "block",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "off" => Action::Off,
            "log" => Action::Log,
            "flag" => Action::Flag,
            "mask" => Action::Mask,
            "block" => Action::Block,
            _ => return None,
        })
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

/// Byte ranges, sorted and merged, for overlap tests in logarithmic time.
#[derive(Default)]
pub struct Spans(Vec<(usize, usize)>);

impl Spans {
    pub fn extend(&mut self, more: impl Iterator<Item = (usize, usize)>) {
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

    pub fn overlaps(&self, start: usize, end: usize) -> bool {
        // The last span starting before `end` is the only candidate: merged spans do not overlap.
        let i = self.0.partition_point(|(s, _)| *s < end);
        i > 0 && self.0[i - 1].1 > start
    }
}

/// `t` with each range replaced; of overlapping ranges the first (then longest) wins.
pub fn apply(t: &str, mut edits: Vec<(usize, usize, Option<String>)>) -> String {
    edits.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = String::with_capacity(t.len());
    let mut at = 0;
    for (start, end, with) in edits {
        if start < at {
            // Overlaps what was just replaced: replace its tail too.
            at = at.max(end);
            continue;
        }
        out.push_str(&t[at..start]);
        if let Some(w) = with {
            out.push_str(&w);
        }
        at = end;
    }
    out.push_str(&t[at..]);
    out
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
