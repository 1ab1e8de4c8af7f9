//! The user docs hold: every TOML block in README.md and docs/ is loaded
//! through the real loader as what its marker says it is, and an unmarked
//! block fails (a new block must say what it is, or why it is not checked).

use std::path::{Path, PathBuf};

use crate::harness::*;

struct Block {
    file: PathBuf,
    line: usize,
    kind: String,
    text: String,
}

/// The ```toml blocks of `file`, each with the `<!-- check: KIND -->` or
/// `<!-- untested: why -->` marker on the line before it.
fn blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("```toml") {
            let marker = i.checked_sub(1).map_or("", |p| lines[p].trim());
            let kind = marker
                .strip_prefix("<!-- check: ")
                .and_then(|m| m.strip_suffix(" -->"))
                .map(str::to_string)
                .or_else(|| marker.starts_with("<!-- untested:").then(|| "untested".to_string()))
                .unwrap_or_else(|| panic!("{}:{}: a TOML block without a check marker", file.display(), i + 1));
            let end = (i + 1..lines.len()).find(|&j| lines[j].trim_start().starts_with("```")).expect("closed");
            out.push(Block { file: file.to_path_buf(), line: i + 1, kind, text: lines[i + 1..end].join("\n") });
            i = end;
        }
        i += 1;
    }
    out
}

fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A deployment folder around one block.
fn folder(gateway: &str, manifest: Option<&str>, policy: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("tollgate.toml"), gateway).unwrap();
    if let Some(m) = manifest {
        std::fs::write(dir.path().join("tool-manifests/block.toml"), m).unwrap();
    }
    if let Some(p) = policy {
        std::fs::write(dir.path().join("policies/block.toml"), p).unwrap();
    }
    dir
}

#[test]
fn every_toml_block_in_the_docs_loads_through_the_real_loader() {
    // Every `${env:NAME}` a block names is set; OpenTelemetry's own are not
    // (they would turn export on).
    let lookup = |n: &str| (!n.starts_with("OTEL_")).then(|| "tg_placeholder0123456789abcdef0123456789".to_string());
    // Policy files read the process environment: set what the blocks name.
    for file in doc_files() {
        for b in blocks(&file) {
            for name in b.text.split("${env:").skip(1).filter_map(|r| r.split_once('}')).map(|(n, _)| n) {
                if !name.starts_with("OTEL_") && std::env::var_os(name).is_none() {
                    // SAFETY: the test runner (cargo-nextest, README) runs each test
                    // in its own process, and no other thread reads the environment yet.
                    unsafe { std::env::set_var(name, "tg_placeholder0123456789abcdef0123456789") };
                }
            }
        }
    }
    let mut checked = 0;
    for file in doc_files() {
        for b in blocks(&file) {
            let at = format!("{}:{}", b.file.display(), b.line);
            let dir = match b.kind.as_str() {
                "tollgate.toml" => folder(&b.text, None, None),
                "manifest" => folder("", Some(&b.text), None),
                // An LLM provider whose fallback is the shipped Anthropic example's model.
                "llm-manifest" => {
                    let dir = folder("", Some(&b.text), None);
                    let other = repo_root().join("examples/llm/tool-manifests/anthropic.toml");
                    std::fs::copy(other, dir.path().join("tool-manifests/anthropic.toml")).unwrap();
                    dir
                }
                "policy" => folder("", None, Some(&b.text)),
                "untested" => continue,
                other => panic!("{at}: unknown marker `{other}`"),
            };
            let config = tollgate::config::load_with_env(&dir.path().join("tollgate.toml"), &lookup)
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            if b.kind == "manifest" {
                assert_eq!(config.manifests.len() + config.llm.providers.len(), 1, "{at}: one manifest");
            }
            let policy = tollgate::policy::load::load_dir(&config.policies_dir).unwrap_or_else(|e| panic!("{at}: {e}"));
            if b.kind == "policy" {
                assert_eq!(policy.files.len(), 1, "{at}: the block is a policy file");
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} blocks checked");
}

/// Every command block (sh, bash, json) says how it is checked: run by the
/// quickstart test, a synopsis, or why it is not run as written.
#[test]
fn every_command_block_in_the_docs_says_how_it_is_checked() {
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let lang = line.trim_start().strip_prefix("```").unwrap_or("");
            if ["sh", "bash", "json"].contains(&lang) {
                let marker = i.checked_sub(1).map_or("", |p| lines[p].trim());
                let known = ["<!-- quickstart -->", "<!-- synopsis", "<!-- untested", "<!-- tested", "<!-- run: "];
                assert!(
                    known.iter().any(|k| marker.starts_with(k)),
                    "{}:{}: a {lang} block without a marker saying how it is checked",
                    file.display(),
                    i + 1
                );
            }
        }
    }
}

/// A `<!-- run: NAME (module::test ...) -->` block names the test that runs
/// it, and that test exists and reads the block by its name.
#[test]
fn every_run_block_names_a_test_that_runs_it() {
    let mut seen = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("<!-- run: ")) {
            let (name, rest) =
                line.split_once(" (").unwrap_or_else(|| panic!("{}: `{line}` names no test", file.display()));
            let test = rest.split([' ', ',', ')']).next().unwrap();
            let (module, function) = test.split_once("::").expect("module::test");
            let source = std::fs::read_to_string(repo_root().join(format!("tests/it/{module}.rs")))
                .unwrap_or_else(|_| panic!("{}: no test module `{module}`", file.display()));
            let body = source
                .split(&format!("fn {function}("))
                .nth(1)
                .unwrap_or_else(|| panic!("{}: `{test}` does not exist", file.display()));
            let body = body.split("\n}\n").next().unwrap();
            assert!(body.contains(&format!("\"{name}\"")), "{test} does not run the block `{name}`");
            seen += 1;
        }
    }
    assert!(seen >= 6, "{seen} run blocks");
}
