//! The architecture as DESIGN.md draws it, checked: difi-core depends on no
//! other difi crate, libraries depend only "downwards", and no crate's
//! modules import each other in a cycle.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::root;

/// Library crates, lowest first: each may depend only on crates before it.
const LAYERS: [(&str, &str); 10] = [
    ("core", "difi-core"),
    ("torch-ext", "difi-torch-ext"),
    ("formats", "difi-formats"),
    ("metrics", "difi-metrics"),
    ("divergences", "difi-divergences"),
    ("zoo", "difi-zoo"),
    ("train", "difi-train"),
    ("plugins/datasets", "difi-datasets"),
    ("plugins/sds", "difi-plugin-sds"),
    ("fuzz", "difi-fuzz"),
];

/// The difi crates named in `[dependencies]` of a manifest (not dev-dependencies).
fn difi_dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && line.starts_with("difi-") {
            found.push(line.split(['.', ' ', '=']).next().unwrap().to_string());
        }
    }
    found
}

#[test]
fn crates_depend_only_on_lower_layers() {
    for (position, (dir, name)) in LAYERS.iter().enumerate() {
        let allowed: Vec<&str> = LAYERS[..position].iter().map(|(_, n)| *n).collect();
        for dependency in difi_dependencies(&root().join(dir).join("Cargo.toml")) {
            assert!(allowed.contains(&dependency.as_str()), "{name} depends on {dependency}, a crate above it");
        }
    }
    assert!(difi_dependencies(&root().join("core/Cargo.toml")).is_empty());
    // A runtime plugin builds against difi-core alone.
    assert_eq!(difi_dependencies(&root().join("plugins/sds/Cargo.toml")), ["difi-core"]);
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `lib.rs` → ``.
fn module_name(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules of the crate whose sources are in `src` that each module
/// refers to through `crate::…` or `super::…` outside its tests.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: Vec<(String, PathBuf)> = files.iter().map(|f| (module_name(src, f), f.clone())).collect();
    let names: BTreeSet<String> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        // Code outside tests; comments may mention any module.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut targets = BTreeSet::new();
        // `crate::a::b` names `a::b`; `super::x` in `a::b` names `a::x`.
        let parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let parent = parent[..parent.len().saturating_sub(1)].join("::");
        for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
            for (at, _) in code.match_indices(prefix) {
                let preceded_by_path = code[..at].ends_with(':') || code[..at].ends_with(|c: char| c.is_alphanumeric());
                if preceded_by_path {
                    continue;
                }
                let rest: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut segments: Vec<&str> = base.split("::").filter(|s| !s.is_empty()).collect();
                segments.extend(rest.split("::").filter(|s| !s.is_empty()));
                // The longest prefix of the path that is a module of this crate.
                let target = (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| names.contains(m));
                if let Some(target) = target.filter(|t| t != module && !module.starts_with(&format!("{t}::"))) {
                    targets.insert(target);
                }
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// A cycle in `graph`, if any, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut crates: Vec<PathBuf> = LAYERS.iter().map(|(dir, _)| root().join(dir).join("src")).collect();
    crates.push(root().join("src"));
    for src in crates {
        let graph = module_graph(&src);
        assert!(!graph.is_empty(), "{}: no modules found", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: modules import each other in a cycle: {}", src.display(), cycle.join(" → "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}
