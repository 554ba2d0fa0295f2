//! The code's shape, checked (issue 17): source files small enough to read
//! in one sitting, and module dependencies in the streamer that point one way
//! (sources and outputs on the stream/buffer core, never on the server that
//! wires them).
//!
//! Both are ratchets while the redesign is under way: the files and cycles
//! that exist today are listed with their current size, may shrink but not
//! grow, and a listed one that is fixed must leave the list (the test says
//! so). Nothing new may join them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines of non-test code (not blank, not comments) a file may have.
const MAX_LINES: usize = 600;

/// Files over [`MAX_LINES`] today, with the most they may have until split.
const OVERSIZE: &[(&str, usize)] = &[];

/// Cycles among the streamer's top-level modules today (each a strongly
/// connected set); they may only lose members.
const CYCLES: &[&[&str]] = &[];

/// Top-level modules that use `crate::server` besides the wiring (`cli`):
/// none any more; each part takes the host trait it defines.
const SERVER_USERS: &[&str] = &[];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text before a file's `#[cfg(test)] mod …` (its unit tests).
fn non_test(text: &str) -> &str {
    let lines: Vec<&str> = text.lines().collect();
    let mut offset = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]" {
            let next = lines.get(i + 1).map_or("", |n| n.trim());
            let next = next
                .strip_prefix("pub(crate) ")
                .or_else(|| next.strip_prefix("pub "))
                .unwrap_or(next);
            if next.starts_with("mod ") {
                return &text[..offset];
            }
        }
        offset += l.len() + 1;
    }
    text
}

fn code_lines(text: &str) -> usize {
    non_test(text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

#[test]
fn no_source_file_is_too_long_to_read_in_one_sitting() {
    let root = root();
    let mut files = Vec::new();
    for dir in [
        "streamer/src",
        "operator/src",
        "config/src",
        "crds/src",
        "tests/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found {} files", files.len());
    let listed: BTreeMap<&str, usize> = OVERSIZE.iter().copied().collect();
    let mut problems = Vec::new();
    for (listed, _) in OVERSIZE {
        if !root.join(listed).exists() {
            problems.push(format!("{listed} is gone: remove it from OVERSIZE"));
        }
    }
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let n = code_lines(&std::fs::read_to_string(&f).unwrap());
        match listed.get(rel.as_str()) {
            None if n > MAX_LINES => problems.push(format!(
                "{rel}: {n} lines of code (at most {MAX_LINES}): split it"
            )),
            Some(&ceiling) if n > ceiling => problems.push(format!(
                "{rel}: {n} lines of code, more than its {ceiling} while it waits to be split"
            )),
            Some(_) if n <= MAX_LINES => {
                problems.push(format!("{rel}: {n} lines now: remove it from OVERSIZE"))
            }
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `top -> the top-level modules its non-test code names as crate::…`.
fn streamer_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("streamer/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top_of = |p: &Path| -> String {
        let rel = p.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    };
    let tops: BTreeSet<String> = files.iter().map(|p| top_of(p)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let top = top_of(f);
        let text = std::fs::read_to_string(f).unwrap();
        let code = non_test(&text);
        let mut names = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // use crate::{a::b, c, d::{e, f}}: the first name of each path.
                let mut depth = 0;
                let mut start = true;
                let mut word = String::new();
                for ch in group.chars() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if c.is_alphanumeric() || c == '_' => {
                            if start {
                                word.push(c);
                            }
                        }
                        _ => {
                            if start && !word.is_empty() {
                                names.insert(std::mem::take(&mut word));
                                start = false;
                            }
                        }
                    }
                }
                if !word.is_empty() {
                    names.insert(word);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
        let edges = graph.entry(top.clone()).or_default();
        for n in names {
            if n != top && tops.contains(&n) {
                edges.insert(n);
            }
        }
    }
    graph
}

/// Strongly connected sets of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = BTreeSet::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                c.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn streamer_modules_depend_one_way() {
    let graph = streamer_graph();
    assert!(graph.len() > 15, "found {} top-level modules", graph.len());
    let known: Vec<BTreeSet<String>> = CYCLES
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let mut problems = Vec::new();
    for c in cycles(&graph) {
        if !known.iter().any(|k| c.is_subset(k)) {
            problems.push(format!("a new import cycle among {c:?}"));
        } else if !known.contains(&c) {
            problems.push(format!("a cycle shrank to {c:?}: update CYCLES"));
        }
    }
    for k in &known {
        if !cycles(&graph)
            .iter()
            .any(|c| c.is_subset(k) && !c.is_empty())
        {
            problems.push(format!("the cycle {k:?} is gone: remove it from CYCLES"));
        }
    }
    let users: BTreeSet<&str> = graph
        .iter()
        .filter(|(m, e)| m.as_str() != "cli" && e.contains("server"))
        .map(|(m, _)| m.as_str())
        .collect();
    let allowed: BTreeSet<&str> = SERVER_USERS.iter().copied().collect();
    for u in users.difference(&allowed) {
        problems.push(format!(
            "{u} uses crate::server: take the component it needs instead"
        ));
    }
    for gone in allowed.difference(&users) {
        problems.push(format!(
            "{gone} no longer uses crate::server: remove it from SERVER_USERS"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
