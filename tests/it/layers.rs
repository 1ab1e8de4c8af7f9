//! The house has no import cycle: among the files of `src/`, no file
//! reaches itself through the paths its code names (`use` statements and
//! paths written inline: `crate::`, `super::`, `self::` and child modules).
//!
//! A `pub use` in a `mod.rs` or `lib.rs` is the module's face (what it
//! offers), not an import; test modules (`#[cfg(test)]`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::harness::repo_root;

/// Source without comments, string and character literals, and without its
/// test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if matches!(b.get(i + 1), Some(b'#') | Some(b'"')) && (i == 0 || !is_ident(b[i - 1])) => {
                let mut j = i + 1;
                while b.get(j) == Some(&b'#') {
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let hashes = j - i - 1;
                let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                i = text[j + 1..].find(&close).map_or(b.len(), |k| j + 1 + k + close.len());
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The module path of a file under `src/` (`src/a/mod.rs` and `src/a.rs` are `a`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn file_of(src: &Path, module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return Some(src.join("lib.rs"));
    }
    let base = src.join(module.join("/"));
    [base.with_extension("rs"), base.join("mod.rs")].into_iter().find(|p| p.exists())
}

/// `a::{b, c::{d}}` → `a::b`, `a::c::d`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else { return vec![tree] };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).flat_map(|p| expand(&format!("{prefix}{p}"))).collect()
}

/// The file a path names, from `file` (module `here`, children `children`).
fn resolve(src: &Path, here: &[String], children: &BTreeSet<String>, path: &str) -> Option<PathBuf> {
    let segs: Vec<&str> = path.split("::").map(|s| s.split(" as ").next().unwrap_or(s)).collect();
    let mut module: Vec<String>;
    let mut rest = &segs[..];
    match segs.first().copied() {
        Some("crate") => {
            module = Vec::new();
            rest = &segs[1..];
        }
        Some("self") => {
            module = here.to_vec();
            rest = &segs[1..];
        }
        Some("super") => {
            module = here.to_vec();
            while rest.first() == Some(&"super") {
                module.pop();
                rest = &rest[1..];
            }
        }
        Some(first) if children.contains(first) => module = here.to_vec(),
        _ => return None,
    }
    for s in rest {
        let mut next = module.clone();
        next.push((*s).to_string());
        if file_of(src, &next).is_some() {
            module = next;
        } else {
            break;
        }
    }
    file_of(src, &module)
}

/// file → the files it imports.
fn imports() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = repo_root().join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && p != src.join("main.rs") {
                files.push(p);
            }
        }
    }
    let path_re = |code: &str| -> Vec<String> {
        // Every `a::b::c` run of identifiers.
        let b = code.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if is_ident(b[i]) && (i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':')) {
                let start = i;
                let mut end = i;
                loop {
                    while end < b.len() && is_ident(b[end]) {
                        end += 1;
                    }
                    if code[end..].starts_with("::") && b.get(end + 2).is_some_and(|c| is_ident(*c)) {
                        end += 2;
                    } else {
                        break;
                    }
                }
                if code[start..end].contains("::") {
                    out.push(code[start..end].to_string());
                }
                i = end.max(i + 1);
            } else {
                i += 1;
            }
        }
        out
    };
    let mut graph = BTreeMap::new();
    for file in files {
        let here = module_of(&src, &file);
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let face = matches!(file.file_name().and_then(|n| n.to_str()), Some("mod.rs" | "lib.rs"));
        let mut children = BTreeSet::new();
        let mut paths = Vec::new();
        let mut body = String::new();
        for stmt in code.split_inclusive(';') {
            // The statement proper: attributes and closed blocks may precede
            // it, so it starts at its last line that opens a `use` or `mod`.
            let start = stmt
                .match_indices('\n')
                .map(|(i, _)| i + 1)
                .chain(std::iter::once(0))
                .filter(|&i| {
                    let line = stmt[i..].trim_start();
                    let line =
                        line.strip_prefix("pub(crate) ").or_else(|| line.strip_prefix("pub(super) ")).unwrap_or(line);
                    let line = line.strip_prefix("pub ").unwrap_or(line);
                    line.starts_with("use ") || line.starts_with("mod ")
                })
                .max();
            let s_tail = start.map_or("", |i| stmt[i..].trim_start());
            let words: Vec<&str> = s_tail.split_whitespace().take(3).collect();
            let is_pub = words.first().is_some_and(|w| w.starts_with("pub"));
            let after_vis = if is_pub { &words[1..] } else { &words[..] };
            let before = &stmt[..stmt.len() - s_tail.len()];
            match (after_vis.first(), after_vis.get(1)) {
                (Some(&"mod"), Some(name)) if name.ends_with(';') => {
                    children.insert(name.trim_end_matches(';').to_string());
                    body.push_str(before);
                }
                (Some(&"use"), _) => {
                    let tree = s_tail.split_once("use").map_or("", |(_, t)| t).trim().trim_end_matches(';');
                    if !(face && is_pub) {
                        paths.extend(expand(tree));
                    }
                    body.push_str(before);
                }
                _ => body.push_str(stmt),
            }
        }
        paths.extend(path_re(&body));
        let mut to = BTreeSet::new();
        for p in paths {
            if let Some(f) = resolve(&src, &here, &children, &p)
                && f != file
            {
                to.insert(f);
            }
        }
        graph.insert(file, to);
    }
    graph
}

#[test]
fn no_file_in_src_reaches_itself_through_its_imports() {
    let graph = imports();
    let root = repo_root().join("src");
    let name = |p: &PathBuf| p.strip_prefix(&root).unwrap().display().to_string();
    // Tarjan's strongly connected components: every one of two files or more is a cycle.
    struct T<'a> {
        g: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<&'a PathBuf>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a PathBuf) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else { continue };
            if !t.index.contains_key(w) {
                visit(t, w);
                let l = t.low[w].min(t.low[v]);
                t.low.insert(v, l);
            } else if t.on.contains(w) {
                let l = t.index[w].min(t.low[v]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let mut t =
        T { g: &graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), out: vec![] };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    let mut cycles: Vec<String> = t
        .out
        .iter()
        .map(|scc| {
            let mut files: Vec<String> = scc.iter().map(|f| name(f)).collect();
            files.sort();
            files.join(" ")
        })
        .collect();
    cycles.sort();
    let arrows = |cycle: &str| -> String {
        let set: BTreeSet<PathBuf> = cycle.split(' ').map(|f| root.join(f)).collect();
        set.iter()
            .flat_map(|f| {
                graph[f].iter().filter(|g| set.contains(*g)).map(move |g| format!("{} -> {}", name(f), name(g)))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found: Vec<String> = cycles.iter().map(|c| format!("{c}: {}", arrows(c))).collect();
    assert!(found.is_empty(), "import cycles among src/ files:\n{}", found.join("\n"));
    assert!(graph.len() > 100 && graph.values().map(BTreeSet::len).sum::<usize>() > 200, "the graph was read");
}

/// lib.rs's codemap lists every top-level module, and a module uses only
/// modules listed below it: the layers hold between modules too.
#[test]
fn modules_use_only_modules_below_them_in_the_codemap() {
    let root = repo_root().join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let listed: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once('`').map(|(m, _)| m.to_string()))
        .collect();
    let declared: BTreeSet<String> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';').to_string()).collect();
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), declared, "the codemap names every module once");
    let top = |f: &PathBuf| -> String {
        let rel = f.strip_prefix(&root).unwrap();
        rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string()
    };
    let place = |m: &str| listed.iter().position(|l| l == m);
    let mut upward = Vec::new();
    for (file, to) in imports() {
        let from = top(&file);
        for t in to {
            let target = top(&t);
            if target == from || target == "lib" || from == "lib" {
                continue;
            }
            if let (Some(a), Some(b)) = (place(&from), place(&target))
                && b < a
            {
                upward.push(format!("{} -> {target}", file.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run up the codemap:\n{}", upward.join("\n"));
}
