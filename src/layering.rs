//! The layering check: cli -> domains -> storage -> db -> core, no import upward.
//!
//! Every `.rs` file of the library is given a layer (most specific path wins). Each
//! `crate::a::b` and `super::b` path in its code (comments skipped) is resolved to the file
//! it names, and a file may only name files of its own layer or below. The CLI
//! (`src/bin/`) is another crate and sees only the public API, so nothing can import it.
//!
//! | layer | files |
//! |---|---|
//! | 0 core | `clock`, `diagnostics` (shared shape helpers), `error`, `integrity` (hashes), `machine`, `text_enum`, `looping`, `events` (types and bus), and the pure model files of each domain: `job/{state,types}`, `run/{state,timeline}`, `schedule/{state,rule}` |
//! | 1 db | `db`, `wal`, `file_identity`, `pg/{db,error}` |
//! | 2 storage | `storage/`, `engine`, `backend` (the seam other backends implement), `run/pending` (run endings the engine's write path writes), `pg/engine`, `pg/storage/` |
//! | 3 domains and ops | `job/`, `run/`, `schedule/`, `flex/`, `doctor` (and `doctor/`, with `doctor/damage`), `backup`, `runbook`, `pg/` (its facades) |
//! | 4 crate root and HTTP | `lib`, `engine_open` (`Engine::open`: a file or a backend), `guide` (module list and re-exports), `http/` (the API, the event stream and the Trust UI, over the facades) |

use std::path::{Path, PathBuf};

/// `(path prefix, layer)`: the longest matching prefix gives a file's layer.
const LAYERS: &[(&str, u8)] = &[
    ("src/clock.rs", 0),
    ("src/diagnostics.rs", 0),
    ("src/error.rs", 0),
    ("src/integrity.rs", 0),
    ("src/machine.rs", 0),
    ("src/text_enum.rs", 0),
    ("src/looping.rs", 0),
    ("src/events.rs", 0),
    ("src/job/state.rs", 0),
    ("src/job/types.rs", 0),
    ("src/run/state.rs", 0),
    ("src/run/timeline.rs", 0),
    ("src/schedule/state.rs", 0),
    ("src/schedule/rule.rs", 0),
    ("src/db.rs", 1),
    ("src/wal.rs", 1),
    ("src/file_identity.rs", 1),
    ("src/storage/", 2),
    ("src/engine.rs", 2),
    ("src/backend.rs", 2),
    ("src/run/pending.rs", 2),
    ("src/job/", 3),
    ("src/run/", 3),
    ("src/schedule/", 3),
    ("src/flex/", 3),
    ("src/doctor.rs", 3),
    ("src/doctor/", 3),
    ("src/runbook.rs", 3),
    ("src/backup.rs", 3),
    ("src/lib.rs", 4),
    ("src/engine_open.rs", 4),
    ("src/http/", 4),
    ("src/guide.rs", 4),
    ("src/layering.rs", 4),
    // [feature postgres] the PostgreSQL backend, layered like the SQLite one
    ("src/pg/error.rs", 1),
    ("src/pg/db.rs", 1),
    ("src/pg/engine.rs", 2),
    ("src/pg/storage/", 2),
    ("src/pg/", 3),
];

/// Upward imports known today, each waiting for the change that removes it. The test
/// fails when one disappears too, so the list cannot go stale.
const KNOWN: &[&str] = &[];

fn layer_of(path: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, layer)| *layer)
}

/// The file a module path (`["job", "state", "JobState"]`) names: the longest prefix of
/// it that is a file or a folder's `mod.rs`.
fn resolve(root: &Path, segments: &[&str]) -> Option<String> {
    for n in (1..=segments.len()).rev() {
        let dir: PathBuf = segments[..n].iter().collect();
        for candidate in [dir.with_extension("rs"), dir.join("mod.rs")] {
            if root.join("src").join(&candidate).is_file() {
                let rel = Path::new("src").join(candidate);
                return Some(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    None
}

/// Every module path the code of `text` names: `crate::a::b` as `[a, b]`, and `super::b`
/// relative to `module` (the file's own module path).
fn named_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                let after = &rest[at + prefix.len()..];
                rest = after;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let mut path = base.clone();
                let named = path.len();
                for seg in after.split("::") {
                    let word: String = seg
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if word.is_empty() || word.chars().next().is_some_and(char::is_uppercase) {
                        break;
                    }
                    path.push(word);
                }
                // `super::*` (a test module's glob) names nothing new.
                if path.len() > named {
                    out.push(path);
                }
            }
        }
    }
    out
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// The module path of a source file: `src/job/mod.rs` is `[job]`, `src/job/state.rs`
/// `[job, state]`, `src/lib.rs` `[]`.
fn module_of(rel: &str) -> Vec<String> {
    let inner = rel.trim_start_matches("src/").trim_end_matches(".rs");
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("bin") {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// `from -> to` for every import of a higher layer (`to` as its layer prefix).
fn upward(root: &Path, files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, text) in files {
        let from = layer_of(rel).unwrap_or_else(|| panic!("{rel} has no layer"));
        for path in named_paths(text, &module_of(rel)) {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            let Some(target) = resolve(root, &segs) else {
                continue;
            };
            let to = layer_of(&target).unwrap_or_else(|| panic!("{target} has no layer"));
            if to > from {
                let group = LAYERS
                    .iter()
                    .filter(|(p, _)| target.starts_with(p))
                    .max_by_key(|(p, _)| p.len())
                    .map_or(target.as_str(), |(p, _)| p);
                found.push(format!("{rel} -> {group}"));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The unit of a file in [`LAYERS`] (its longest matching prefix: `src/run/probe.rs` ->
/// `src/run/`, `src/run/state.rs` -> itself); the crate root is no unit.
fn group(rel: &str) -> String {
    LAYERS
        .iter()
        .filter(|(p, _)| rel.starts_with(p))
        .max_by_key(|(p, _)| p.len())
        .filter(|(_, layer)| *layer < 4)
        .map_or(String::new(), |(p, _)| p.to_string())
}

/// A cycle among the units of [`LAYERS`] (`src/run/ -> src/schedule/ -> src/run/`), if
/// there is one. Imports inside a unit and from the crate root are not edges.
fn group_cycle(root: &Path, files: &[(String, String)]) -> Option<Vec<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let from = group(rel);
        for path in named_paths(text, &module_of(rel)) {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(target) = resolve(root, &segs) {
                let to = group(&target);
                if !from.is_empty() && !to.is_empty() && to != from {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, &edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), root, &mut files);
    assert!(files.len() > 40, "the scan found the sources");
    assert_eq!(upward(root, &files), KNOWN);
    assert_eq!(group_cycle(root, &files), None);
}

#[test]
fn the_check_sees_a_planted_upward_import() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = |rel: &str, text: &str| (rel.to_string(), text.to_string());
    let files = [
        file(
            "src/storage/planted.rs",
            concat!(
                "use crate::clock::Timestamp;\n",
                "use crate::job::state::JobState;\n",
                "// use crate::run::orchestrator; (a comment)\n",
                "fn f() { crate::schedule::tick::run(); }\n",
            ),
        ),
        file(
            "src/job/planted.rs",
            "use super::worker::Worker;\nuse crate::storage::jobs;\nuse super::*;\n",
        ),
        file("src/run/timeline.rs", "use super::pipeline::Sleeper;\n"),
        file("src/clock.rs", "use crate::engine::Engine;\n"),
    ];
    assert_eq!(
        upward(root, &files),
        [
            "src/clock.rs -> src/engine.rs",
            "src/run/timeline.rs -> src/run/",
            "src/storage/planted.rs -> src/schedule/",
        ]
    );
    let cycle = [
        file("src/job/a.rs", "use crate::run::b;\n"),
        file("src/run/b.rs", "use crate::schedule::c;\n"),
        file("src/schedule/c.rs", "use crate::job::a;\n"),
    ];
    assert_eq!(
        group_cycle(root, &cycle),
        Some(vec![
            "src/job/".into(),
            "src/run/".into(),
            "src/schedule/".into(),
            "src/job/".into()
        ])
    );
    assert_eq!(group_cycle(root, &cycle[..2]), None);
}
