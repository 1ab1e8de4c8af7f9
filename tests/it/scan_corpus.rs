//! The content scans against their corpus (`tests/fixtures/scans`): every
//! labelled positive is found with exactly its kinds and gets the configured
//! action; every hard negative is left alone; findings on ordinary text
//! (code, prose, JSON) are counted and bounded by the figures BENCHMARKS.md
//! reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tollgate::scan::{self, CallScan, DETECTORS, Settings};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scans")
}

struct Sample {
    line: usize,
    text: String,
    kinds: BTreeSet<String>,
}

fn corpus(scan: &str) -> Vec<Sample> {
    let path = fixtures().join(format!("{scan}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{scan}.jsonl:{}: {e}", i + 1));
            Sample {
                line: i + 1,
                text: v["text"].as_str().expect("text").to_string(),
                kinds: v["kinds"]
                    .as_array()
                    .expect("kinds")
                    .iter()
                    .map(|k| k.as_str().expect("kind").to_string())
                    .collect(),
            }
        })
        .collect()
}

fn found(scan: &str, text: &str) -> Vec<scan::Hit> {
    let (_, d) = scan::detector(scan).expect("detector");
    let mut hits = Vec::new();
    d.find(text, None, &mut hits);
    hits
}

/// Runs `scan`'s corpus: zero misses, zero wrong kinds, zero hits on negatives,
/// and the built-in action (`mask` or `flag`) applied to every positive.
fn check(scan: &str, action: &str) {
    let samples = corpus(scan);
    let (mut positives, mut negatives) = (0, 0);
    let mut problems = Vec::new();
    for s in &samples {
        let hits = found(scan, &s.text);
        let kinds: BTreeSet<String> = hits.iter().map(|h| h.kind.to_string()).collect();
        if s.kinds.is_empty() {
            negatives += 1;
        } else {
            positives += 1;
        }
        if kinds != s.kinds {
            problems.push(format!("{scan}.jsonl:{}: expected {:?}, found {:?}", s.line, s.kinds, kinds));
            continue;
        }
        // The action, through the engine, as a tool result would get it.
        let mut call = CallScan::new("corpus");
        let mut result = json!({"content": [{"type": "text", "text": s.text}]});
        scan::result(&mut result, &Settings::default(), &mut call);
        let out = result["content"][0]["text"].as_str().unwrap_or_default().to_string();
        let acted: BTreeSet<&str> = call.findings.iter().filter(|f| f.scan == scan).map(|f| f.action).collect();
        if s.kinds.is_empty() {
            continue;
        }
        if acted != BTreeSet::from([action]) {
            problems.push(format!("{scan}.jsonl:{}: action {acted:?}, expected {action}", s.line));
        }
        if action == "mask" {
            for h in &hits {
                let secret = &s.text[h.start..h.end];
                if out.contains(secret) {
                    problems.push(format!("{scan}.jsonl:{}: `{}` still in the masked text", s.line, h.kind));
                }
            }
        } else if !out.starts_with("[untrusted content ") {
            problems.push(format!("{scan}.jsonl:{}: not wrapped in the untrusted-content envelope", s.line));
        }
    }
    assert!(positives >= 30 && negatives >= 20, "{scan}: {positives} positives, {negatives} negatives");
    assert!(problems.is_empty(), "{} of {} samples wrong:\n{}", problems.len(), samples.len(), problems.join("\n"));
}

#[test]
fn secrets_corpus_zero_misses_and_masked() {
    check("secrets", "mask");
}

#[test]
fn pii_corpus_zero_misses_and_masked() {
    check("pii", "mask");
}

#[test]
fn injection_corpus_zero_misses_and_flagged() {
    check("injection", "flag");
}

#[test]
fn descriptions_corpus_zero_misses() {
    use tollgate::scan::describe::{Other, injection, shadowing};
    let others = [
        Other { upstream: "mail", exposed: "mail__send_email", own: "send_email" },
        Other { upstream: "github", exposed: "github__create_issue", own: "create_issue" },
        Other { upstream: "github", exposed: "github__list_issues", own: "list_issues" },
        Other { upstream: "fs", exposed: "fs__read_file", own: "read_file" },
        Other { upstream: "slack", exposed: "slack__post_message", own: "post_message" },
    ];
    let path = fixtures().join("descriptions.jsonl");
    let text = std::fs::read_to_string(&path).expect("descriptions.jsonl");
    let mut problems = Vec::new();
    let (mut positives, mut negatives) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).expect("json line");
        let tool = json!({"name": "x", "description": v["description"], "inputSchema": {"type": "object"}});
        let expected: BTreeSet<String> =
            v["kinds"].as_array().expect("kinds").iter().map(|k| k.as_str().expect("kind").to_string()).collect();
        let found: BTreeSet<String> = injection(&tool)
            .into_iter()
            .chain(shadowing(&tool, "notes", &others))
            .map(|f| f.kind.to_string())
            .collect();
        if expected.is_empty() {
            negatives += 1;
        } else {
            positives += 1;
        }
        if found != expected {
            problems.push(format!("descriptions.jsonl:{}: expected {expected:?}, found {found:?}", i + 1));
        }
    }
    assert!(positives >= 15 && negatives >= 15, "{positives} positives, {negatives} negatives");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The most findings each scan may have on `ordinary/` (see BENCHMARKS.md,
/// which lists and classifies every one).
const ORDINARY_CEILING: &[(&str, usize)] = &[("secrets", 0), ("pii", 25), ("injection", 0)];

#[test]
fn false_positives_on_ordinary_text_are_counted() {
    let dir = fixtures().join("ordinary");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ordinary/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "ordinary text: {} files", files.len());
    let mut bytes = 0;
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut report = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        bytes += text.len();
        for d in DETECTORS {
            let mut hits = Vec::new();
            d.find(&text, None, &mut hits);
            for h in hits {
                *counts.entry((d.name(), h.kind)).or_default() += 1;
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let at = text[..h.start].lines().count().max(1);
                report.push(format!("{name}:{at}: {} {} `{}`", d.name(), h.kind, &text[h.start..h.end]));
            }
        }
    }
    println!("ordinary text: {} files, {bytes} bytes", files.len());
    for ((scan, kind), n) in &counts {
        println!("  {scan} {kind}: {n}");
    }
    for line in &report {
        println!("  {line}");
    }
    for (scan, ceiling) in ORDINARY_CEILING {
        let n: usize = counts.iter().filter(|((s, _), _)| s == scan).map(|(_, n)| n).sum();
        assert!(n <= *ceiling, "{scan}: {n} findings on ordinary text, more than the {ceiling} reported");
    }
}
