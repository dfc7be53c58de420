//! The dependency rule of docs/architecture.md, checked on the sources:
//! the image stack (block, qcow2, volume, tree) imports nothing from the
//! layers above it, the CLI goes through the library and never through the
//! HTTP module, and SQL stays inside the catalog.

use std::path::{Path, PathBuf};

/// The image stack: it knows disks, images, filesystems and trees.
const LOWER: &[&str] = &["block", "qcow2", "volume", "tree"];
/// What the image stack must not import.
const UPPER: &[&str] = &["catalog", "repo", "engine", "restore", "api", "daemon", "cli", "schedule"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src(sub: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub), &mut v);
    v
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `text` names through `crate::`, `backchain::` or
/// (from a top-level module's own files) `super::`, grouped imports
/// (`crate::{a, b::c}`) included.
fn crate_paths(text: &str, top_level: bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut prefixes = vec!["crate::", "backchain::"];
    if top_level {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if c.is_whitespace() => {}
                        _ if item_start && depth == 0 => {
                            found.push(ident(&group[i..]).to_string());
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.push(ident(rest).to_string());
            }
        }
    }
    found
}

/// Lines of code, without `//` comments (docs may name any layer).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_scanner_sees_every_form_of_import() {
    let text = "use crate::{block::ReadAt, engine::Repo};\nuse backchain::api::x;\nlet a = crate::repo::open();\nfoo::crate::x";
    assert_eq!(crate_paths(text, false), ["block", "engine", "repo", "api"]);
    assert_eq!(crate_paths("use super::catalog;", true), ["catalog"]);
    assert!(crate_paths("use super::catalog;", false).is_empty());
}

#[test]
fn the_image_stack_imports_nothing_from_the_layers_above() {
    let mut bad = Vec::new();
    for layer in LOWER {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
        for f in src(layer) {
            // `super::` reaches the crate root only from the layer's own mod.rs.
            let top = f == dir.join("mod.rs");
            for m in crate_paths(&code(&f), top) {
                if UPPER.contains(&m.as_str()) {
                    bad.push(format!("{}: imports {m}", f.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "the dependency rule is broken:\n{}", bad.join("\n"));
}

#[test]
fn the_cli_calls_the_library_not_the_http_module() {
    let mut bad = Vec::new();
    for f in src("cli") {
        let text = code(&f);
        if text.contains("api::") {
            bad.push(f.display().to_string());
        }
    }
    assert!(bad.is_empty(), "the CLI names api:: in {bad:?}");
}

#[test]
fn sql_stays_in_the_catalog() {
    let mut bad = Vec::new();
    for f in src("") {
        if f.components().any(|c| c.as_os_str() == "catalog") {
            continue;
        }
        if code(&f).contains("sqlx") {
            bad.push(f.display().to_string());
        }
    }
    assert!(bad.is_empty(), "sqlx is used outside src/catalog: {bad:?}");
}
