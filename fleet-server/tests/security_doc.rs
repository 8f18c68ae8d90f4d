//! `docs/security.md` maps every threat, bad input and fault to the tests that prove the
//! defence, as `file.rs::test_name`. This keeps that map true: every test it names exists.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

/// Every `name.rs::function` reference in `text` (the file as written, e.g.
/// `faults.rs` or `domain/journal.rs`).
fn references(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for span in text.split('`').skip(1).step_by(2) {
        let Some((file, item)) = span.split_once(".rs::") else { continue };
        let ident = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if !file.is_empty() && file.chars().all(|c| ident(c) || c == '/') && !item.is_empty() && item.chars().all(ident)
        {
            out.push((format!("{file}.rs"), item.to_owned()));
        }
    }
    out
}

/// Every `.rs` file of the workspace's crates.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            sources(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_test_the_security_doc_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let refs = references(&doc);
    assert!(refs.len() >= 50, "the doc names its tests as file.rs::test ({} found)", refs.len());
    let mut files = Vec::new();
    for krate in ["fleet-server", "edge-agent", "shared", "migrations", "simulator"] {
        if root.join(krate).exists() {
            sources(&root.join(krate), &mut files);
        }
    }
    let mut missing = Vec::new();
    for (file, test) in &refs {
        let found = files.iter().filter(|p| p.to_string_lossy().ends_with(&format!("/{file}"))).any(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.contains(&format!("fn {test}(")) || text.contains(&format!("fn {test}<"))
        });
        if !found {
            missing.push(format!("{file}::{test}"));
        }
    }
    assert!(missing.is_empty(), "docs/security.md names tests that do not exist: {missing:?}");
}

#[test]
fn references_are_read_from_code_spans_only() {
    let refs = references("see `faults.rs::a_test`, `domain/journal.rs::b`, `Row::x`, plain.rs::c and `x.rs::Y`");
    assert_eq!(refs, [("faults.rs".into(), "a_test".into()), ("domain/journal.rs".into(), "b".into())]);
}
