//! The module graph of `src/`: no import circles, and each layer imports only from the layers
//! below it. Read from the source (`use crate::...` and `crate::...` paths, `super::` paths),
//! without comments, the `#[cfg(test)] mod tests` blocks at the end of files and `tests.rs` and
//! `*_tests.rs` files (tests may reach anywhere).
//!
//! The layers, lowest first (see `src/lib.rs`):
//!
//! | layer | modules |
//! |---|---|
//! | 0 | `metrics`, `json_error`, `hash`, `header_map` |
//! | 1 | `host` |
//! | 2 | `token` |
//! | 3 | `reply` |
//! | 4 | `storage` |
//! | 5 | `config` |
//! | 6 | `pipeline` |
//! | 7 | `testing` (test support) |
//! | 8 | `wasm` |

// Test code: a failure to read the tree is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const LAYERS: &[&[&str]] = &[
    &["metrics", "json_error", "hash", "header_map"],
    &["host"],
    &["token"],
    &["reply"],
    &["storage"],
    &["config"],
    &["pipeline"],
    &["testing"],
    // The tops: the proxy glue, and the native command (`cli`, its `bin/` entry point).
    &["wasm", "cli", "bin"],
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir` as a module path (`storage::keys`, `config` for
/// `config/mod.rs`), with its text up to its first `#[cfg(test)]` block.
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            modules(&path, &join(prefix, &name), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = match name.as_str() {
                // The crate root, and test modules in files of their own (`tests.rs`,
                // `*_tests.rs`: tests may reach anywhere).
                "lib" | "tests" => continue,
                test if test.ends_with("_tests") => continue,
                "mod" => prefix.to_owned(),
                _ => join(prefix, &name),
            };
            let text = fs::read_to_string(&path).unwrap();
            let cut = text.find("#[cfg(test)]\nmod tests {").unwrap_or(text.len());
            // Code only: a comment naming a module is no dependency.
            let code: Vec<&str> = text[..cut]
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            out.insert(module, code.join("\n"));
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}::{name}")
    }
}

/// The modules a file's text names, resolved to the longest module prefix of each path.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut paths = Vec::new();
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    for (marker, base) in [("crate::", String::new()), ("super::", parent.to_owned())] {
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            let before = rest[..i].chars().last();
            rest = &rest[i + marker.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            expand(&base, rest, &mut paths);
        }
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let mut best = None;
            let mut cur = String::new();
            for part in p.split("::") {
                cur = join(&cur, part);
                if known.contains(&cur) {
                    best = Some(cur.clone());
                }
            }
            best
        })
        .filter(|m| m != module)
        .collect()
}

/// `a::b::{c, d::e}` after the marker: every full path it names.
fn expand(base: &str, rest: &str, out: &mut Vec<String>) {
    let ident = |s: &str| {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut path = base.to_owned();
    let mut s = rest;
    loop {
        let n = ident(s);
        if n == 0 {
            break;
        }
        path = join(&path, &s[..n]);
        s = &s[n..];
        if let Some(after) = s.strip_prefix("::{") {
            let end = after.find('}').unwrap_or(after.len());
            for item in after[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() && item != "self" {
                    expand(&path, item, out);
                }
            }
            break;
        }
        match s.strip_prefix("::") {
            Some(next) => s = next,
            None => break,
        }
    }
    out.push(path);
}

fn graph() -> Graph {
    let mut texts = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut texts,
    );
    let known: BTreeSet<String> = texts.keys().cloned().collect();
    texts
        .iter()
        .map(|(m, t)| (m.clone(), references(m, t, &known)))
        .collect()
}

/// A cycle of the graph, if there is one, as the modules along it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    // 0: unvisited, 1: on the stack, 2: done.
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().position(|l| l.contains(&top))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    assert!(g.len() > 20, "read the source tree: {:?}", g.keys());
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn each_layer_imports_only_from_below() {
    let mut wrong = Vec::new();
    for (module, refs) in graph() {
        let Some(own) = layer(&module) else {
            wrong.push(format!("{module} is in no layer"));
            continue;
        };
        for r in refs {
            if layer(&r).is_none_or(|l| l > own) {
                wrong.push(format!("{module} -> {r}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_finds_cycles_and_reads_grouped_paths() {
    let g: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);

    let known: BTreeSet<String> = [
        "token",
        "token::jwt",
        "storage::keys",
        "storage",
        "wasm",
        "wasm::host",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let text = "use crate::token::{jwt::Claims, scope};\nuse crate::storage::keys::{self, KeyState};\nuse super::host::Plugin;\nx::crate::no";
    let refs = references("wasm::http", text, &known);
    let want: BTreeSet<String> = ["token::jwt", "token", "storage::keys", "wasm::host"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(refs, want);
}
