//! The repository tests itself: no code, test, script or config refers to a
//! path outside the checkout (such as the reference fixtures' original home
//! beside it), so a plain `git clone` has everything its tests read.

mod common;

use std::path::{Component, Path, PathBuf};

use common::root;

/// The reference fixtures' original home beside the checkout (spelt in
/// pieces so this file does not name it).
const SHARED_FIXTURES: &str = concat!("shared", "/", "fixtures");

/// Files whose text names paths that code, tests and scripts read.
fn is_checked(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    matches!(extension, "rs" | "sh" | "py" | "toml" | "ron" | "cpp" | "h") || matches!(name, "Makefile" | "run")
}

/// Directories that hold no project sources (builds, the virtualenv, runs).
fn is_skipped(dir: &Path) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    matches!(name, "target" | ".git" | ".venv" | ".libtorch" | "runs" | ".device" | "fixtures")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() && !is_skipped(&path) {
            files(&path, out);
        } else if kind.is_file() && is_checked(&path) {
            out.push(path);
        }
    }
}

/// Where relative paths in `file` start: a Rust or Cargo file's crate, a
/// config's own directory, the repository root for scripts (they `cd` there).
fn base_of(file: &Path, root: &Path) -> PathBuf {
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or_default();
    match extension {
        "rs" | "toml" => {
            file.ancestors().skip(1).find(|dir| dir.join("Cargo.toml").is_file()).unwrap_or(root).to_path_buf()
        }
        "ron" => file.parent().unwrap_or(root).to_path_buf(),
        _ => root.to_path_buf(),
    }
}

/// `base/relative` with `..` applied lexically; `None` if it climbs above `/`.
fn normalise(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in base.join(relative).components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The path-like tokens of `line` that start with `../`.
fn parent_relative_tokens(line: &str) -> Vec<&str> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    let mut tokens = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("../") {
        let start = rest[..at].rfind(|c: char| !is_path_char(c)).map_or(0, |i| i + 1);
        let end = at + rest[at..].find(|c: char| !is_path_char(c)).unwrap_or(rest.len() - at);
        tokens.push(&rest[start..end]);
        rest = &rest[end..];
    }
    tokens
}

#[test]
fn nothing_reads_outside_the_repository() {
    let root = root().canonicalize().unwrap();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(all.len() > 50, "only {} files found under {}", all.len(), root.display());
    let mut escapes = Vec::new();
    for file in &all {
        // This checker spells escaping paths in its own test.
        if file.ends_with("tests/self_contained.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let base = base_of(file, &root);
        for (number, line) in text.lines().enumerate() {
            let place = format!("{}:{}", file.strip_prefix(&root).unwrap().display(), number + 1);
            if line.contains(SHARED_FIXTURES) && !line.contains("tests/fixtures") {
                escapes.push(format!("{place}: names the shared fixtures: {}", line.trim()));
            }
            // `$ORIGIN/../…` in an rpath is relative to the binary, not to a source.
            for token in parent_relative_tokens(line).into_iter().filter(|t| !t.starts_with("ORIGIN")) {
                let relative = token.trim_start_matches(|c: char| c != '.');
                match normalise(&base, relative) {
                    Some(path) if path.starts_with(&root) => {}
                    _ => escapes.push(format!("{place}: `{token}` leaves the repository")),
                }
            }
        }
    }
    assert!(escapes.is_empty(), "paths outside the repository:\n{}", escapes.join("\n"));
}

#[test]
fn the_checker_catches_an_escaping_path() {
    let root = Path::new("/repo");
    let escaping = format!("../{SHARED_FIXTURES}/edm");
    let line = format!("let dir = root().join(\"{escaping}\");");
    let tokens = parent_relative_tokens(&line);
    assert_eq!(tokens, [escaping.as_str()]);
    assert!(!normalise(root, tokens[0]).unwrap().starts_with(root));
    assert!(normalise(&root.join("zoo"), "../tests/fixtures").unwrap().starts_with(root));
}
