//! The layering rule, checked: every `crate::` and `super::` import in
//! `src/` must name a module of a strictly lower rank than the importer's
//! top-level module, with the ranks read from the table in ARCHITECTURE.md
//! (one definition: the document is the rule). An upward import fails, and
//! so does an import between two modules of the same rank, so no cycle can
//! form. Every top-level module of `lib.rs` must have a rank.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One import of one module by another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    /// The file it is in, relative to `src/`.
    file: String,
    /// Line number (1-based).
    line: usize,
    /// The importing top-level module.
    from: String,
    /// The imported top-level module.
    to: String,
}

/// `| rank | `module` | ... |` rows of the layer table.
fn ranks(architecture: &str) -> BTreeMap<String, u32> {
    let mut ranks = BTreeMap::new();
    for line in architecture.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(rank), Some(module)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let (Ok(rank), Some(module)) = (
            rank.parse::<u32>(),
            module.strip_prefix('`').and_then(|m| m.strip_suffix('`')),
        ) else {
            continue;
        };
        for name in module.split("`, `") {
            ranks.insert(name.to_owned(), rank);
        }
    }
    ranks
}

/// The module path of a file under `src/`: `supervisor/state.rs` is
/// `[supervisor, state]`, `supervisor/mod.rs` is `[supervisor]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The first path segment after each `crate::` (and each member of a
/// `crate::{a, b::c}` group), and where `super::` chains climb to the root.
fn imports_in(rel: &Path, text: &str, modules: &BTreeMap<String, u32>) -> Vec<Import> {
    let path = module_path(rel);
    let Some(from) = path.first().cloned() else {
        return Vec::new();
    };
    let file = rel.display().to_string();
    let mut found = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        // Comments name modules without importing them.
        let code = raw.split("//").next().unwrap_or_default();
        let mut targets = Vec::new();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                targets.extend(group[..end].split(',').map(|m| first_segment(m.trim())));
            } else {
                targets.push(first_segment(after));
            }
            rest = after;
        }
        // `super::` from `[a, b]` climbs to `a`, then to the root: the
        // segment after a climb to the root is a top-level module.
        let mut rest = code;
        while let Some(i) = rest.find("super::") {
            let glued = rest[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let mut chain = &rest[i..];
            let mut climbs = 0;
            while let Some(up) = chain.strip_prefix("super::") {
                climbs += 1;
                chain = up;
            }
            if !glued && climbs >= path.len() {
                targets.push(first_segment(chain));
            }
            rest = chain;
        }
        for to in targets {
            if to != from && modules.contains_key(&to) {
                found.push(Import {
                    file: file.clone(),
                    line: n + 1,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    found
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every import in `src` that breaks the ranks, in words.
fn violations(src: &Path, ranks: &BTreeMap<String, u32>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        // The crate root and the binary are the edge: they see every module.
        if rel == Path::new("lib.rs") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for import in imports_in(rel, &text, ranks) {
            let (Some(from), Some(to)) = (ranks.get(&import.from), ranks.get(&import.to)) else {
                bad.push(format!(
                    "{}:{}: {} has no rank",
                    import.file, import.line, import.from
                ));
                continue;
            };
            if to >= from {
                let kind = if to == from {
                    "a module of the same rank"
                } else {
                    "a higher layer"
                };
                bad.push(format!(
                    "{}:{}: {} (rank {from}) imports {} (rank {to}): {kind}",
                    import.file, import.line, import.from, import.to
                ));
            }
        }
    }
    bad
}

/// The top-level modules `lib.rs` declares.
fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

/// The layer map at the top of `lib.rs`: `//! 5 supervisor child  words`
/// lines, the module names before two spaces.
fn lib_map(lib: &str) -> Vec<(String, u32)> {
    let mut map = Vec::new();
    for line in lib.lines() {
        let Some(text) = line.strip_prefix("//!") else {
            continue;
        };
        let text = text.trim_start();
        let Some((rank, rest)) = text.split_once(' ') else {
            continue;
        };
        let Ok(rank) = rank.parse::<u32>() else {
            continue;
        };
        let names = rest.split("  ").next().unwrap_or_default();
        map.extend(names.split_whitespace().map(|m| (m.to_owned(), rank)));
    }
    map
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_import_goes_down_the_layers_of_architecture_md() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let ranks = ranks(&doc);
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let declared = declared_modules(&lib);
    assert!(declared.len() > 10, "lib.rs declares {declared:?}");
    let mut problems: Vec<String> = declared
        .iter()
        .filter(|m| !ranks.contains_key(*m))
        .map(|m| format!("{m} has no rank in ARCHITECTURE.md"))
        .collect();
    problems.extend(
        ranks
            .keys()
            .filter(|m| !declared.contains(m))
            .map(|m| format!("ARCHITECTURE.md ranks {m}, which lib.rs does not declare")),
    );
    problems.extend(violations(&root().join("src"), &ranks));
    for (module, rank) in lib_map(&lib) {
        if ranks.get(&module) != Some(&rank) {
            problems.push(format!(
                "lib.rs's map puts {module} at rank {rank}, ARCHITECTURE.md at {:?}",
                ranks.get(&module)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the code breaks the layering of ARCHITECTURE.md:\n{}",
        problems.join("\n")
    );
}

/// A tree of files under a temporary `src/`.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn test_ranks() -> BTreeMap<String, u32> {
    ranks(
        "| rank | module | owns |\n|---|---|---|\n| 0 | `util`, `proto` | x |\n| 1 | `engine` | x |\n| 2 | `worker` | x |\n| 3 | `api` | x |\n",
    )
}

#[test]
fn the_table_gives_every_module_its_rank() {
    let r = test_ranks();
    assert_eq!(r.get("util"), Some(&0));
    assert_eq!(r.get("proto"), Some(&0));
    assert_eq!(r.get("api"), Some(&3));
    assert_eq!(r.len(), 5);
}

#[test]
fn an_upward_import_fails_in_every_spelling() {
    let src = tree(&[
        ("engine/sampling.rs", "use crate::api::pb;\n"),
        ("engine/mod.rs", "use crate::{util::x, worker::{a, b}};\n"),
        (
            "engine/deep/mod.rs",
            "fn f() { super::super::api::go(); }\n",
        ),
        ("util.rs", "// crate::api in a comment is no import\n"),
    ]);
    let bad = violations(src.path(), &test_ranks());
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(bad[0].starts_with("engine/deep/mod.rs:1: engine (rank 1) imports api (rank 3)"));
    assert!(bad[1].starts_with("engine/mod.rs:1: engine (rank 1) imports worker (rank 2)"));
    assert!(bad[2].starts_with("engine/sampling.rs:1: engine (rank 1) imports api"));
}

#[test]
fn a_cycle_fails_even_between_modules_of_one_rank() {
    let src = tree(&[
        ("util.rs", "use crate::proto::X;\n"),
        ("proto/mod.rs", "use crate::util::human_bytes;\n"),
    ]);
    let bad = violations(src.path(), &test_ranks());
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad.iter().all(|b| b.contains("a module of the same rank")),
        "{bad:#?}"
    );
}

#[test]
fn downward_and_internal_imports_pass() {
    let src = tree(&[
        (
            "api/mod.rs",
            "use crate::engine::x;\nuse super::util::y;\nuse crate::api::z;\n",
        ),
        (
            "worker/process.rs",
            "use super::args::Args;\nuse super::super::proto::pb;\n",
        ),
        ("worker/mod.rs", "mod tests { use super::*; }\n"),
    ]);
    assert_eq!(violations(src.path(), &test_ranks()), Vec::<String>::new());
}
