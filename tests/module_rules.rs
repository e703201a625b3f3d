//! Each top-level module's header says which other modules it may call ("May call: `a`,
//! `b` ..." in its `//!` comment). This test reads the sources and checks the header against
//! the `crate::` paths the module really uses, both ways: a call the header does not allow
//! fails, and so does a module the header names but the code never calls.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level modules: `src/NAME.rs` or `src/NAME/mod.rs` (not lib.rs nor main.rs).
fn modules() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(src()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            out.push((name, path.join("mod.rs")));
        } else if path.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main" {
            out.push((name, path));
        }
    }
    out.sort();
    out
}

fn rust_files(root: &Path, out: &mut Vec<PathBuf>) {
    if root.is_file() {
        out.push(root.to_path_buf());
        return;
    }
    for e in std::fs::read_dir(root).unwrap() {
        rust_files(&e.unwrap().path(), out);
    }
}

/// The modules named in backticks after "May call:" in the header, up to the end of that
/// sentence. Lowercase backticked words must be modules; others (type names) are skipped.
fn allowed(header_file: &Path, all: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let text = std::fs::read_to_string(header_file).unwrap();
    let doc: String = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ");
    let at = doc
        .find("May call:")
        .ok_or_else(|| format!("{}: no \"May call:\" in the header", header_file.display()))?;
    let rest = &doc[at + "May call:".len()..];
    let sentence = rest.split(". ").next().unwrap_or(rest);
    let mut names = BTreeSet::new();
    for (i, part) in sentence.split('`').enumerate() {
        let word = part.trim();
        if i % 2 == 1
            && !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            if !all.contains(word) {
                return Err(format!(
                    "{}: the header names `{word}`, which is no module of the crate",
                    header_file.display()
                ));
            }
            names.insert(word.to_string());
        }
    }
    Ok(names)
}

/// The modules a module's files reach through `crate::NAME`, test code excluded.
fn used(root: &Path, me: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != me {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_module_calls_what_its_header_allows_and_nothing_else() {
    let mods = modules();
    let all: BTreeSet<String> = mods.iter().map(|(n, _)| n.clone()).collect();
    assert!(all.contains("replication") && all.contains("s3"), "{all:?}");
    let mut problems = Vec::new();
    for (name, header) in &mods {
        let root = if header.ends_with("mod.rs") {
            header.parent().unwrap().to_path_buf()
        } else {
            header.clone()
        };
        let allowed = match allowed(header, &all) {
            Ok(a) => a,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let used = used(&root, name);
        for u in used.difference(&allowed) {
            problems.push(format!(
                "{name} calls `{u}`, which its header does not allow"
            ));
        }
        for a in allowed.difference(&used) {
            problems.push(format!(
                "{name}'s header allows `{a}`, which it never calls"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_replication_pipeline_knows_nothing_of_kafka() {
    let used = used(&src().join("replication"), "replication");
    assert!(
        !used.contains("queue"),
        "replication uses the queue: {used:?}"
    );
    assert!(
        !used.contains("engine"),
        "replication uses the engine: {used:?}"
    );
}

/// The files of `s3/` (outside `ops/`) that a file uses through `super::` or `crate::s3::`.
fn s3_edges() -> Vec<(String, String)> {
    let dir = src().join("s3");
    let mut edges = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let me = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for prefix in ["super::", "crate::s3::"] {
            for (i, _) in code.match_indices(prefix) {
                let name: String = code[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if dir.join(format!("{name}.rs")).exists() && name != me {
                    edges.push((me.clone(), name));
                }
            }
        }
    }
    edges.sort();
    edges.dedup();
    edges
}

#[test]
fn the_s3_client_has_no_import_cycles_and_its_errors_are_a_leaf() {
    let edges = s3_edges();
    assert!(
        edges.iter().any(|(a, b)| a == "body" && b == "http"),
        "the pipe feeds the HTTP layer: {edges:?}"
    );
    assert!(
        !edges.iter().any(|(a, _)| a == "error"),
        "error.rs must be a leaf: {edges:?}"
    );
    // Depth-first search for a cycle.
    fn visit<'a>(
        n: &'a str,
        edges: &'a [(String, String)],
        path: &mut Vec<&'a str>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            return Some(format!("{} -> {n}", path[i..].join(" -> ")));
        }
        path.push(n);
        for (_, to) in edges.iter().filter(|(from, _)| from == n) {
            if let Some(c) = visit(to, edges, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    for (from, _) in &edges {
        if let Some(cycle) = visit(from, &edges, &mut Vec::new()) {
            panic!("import cycle in s3/: {cycle}");
        }
    }
}
