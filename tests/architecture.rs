//! The shape of `src/`, checked from the source text (no build of the crate needed):
//!
//! - no import cycle among the top-level modules (the folders and the few files directly
//!   under `src/`), read from every `crate::` path outside comments: the rooms are layered,
//!   data flows one way (`src/lib.rs` has the map). The crate root itself (`AppState`, the
//!   wiring) is above every room and not a node;
//! - no source file over 600 lines unless its module doc says `One concern:` and which.
//!
//! Functions over 80 lines are clippy's `too_many_lines` (Cargo.toml, clippy.toml).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to; `None` for the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(name) => Some(name.to_string()),
        None => Some(first),
    }
}

/// `text` without comments (`//`, doc comments, nested `/* */`) and with string literals
/// blanked, so that neither can hide or fake a path. Line breaks are kept.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut block, mut in_string, mut in_line) = (0usize, false, false);
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if c == '\n' {
            in_line = false;
            out.push('\n');
        } else if in_line {
        } else if block > 0 {
            match (c, next) {
                ('*', Some('/')) => {
                    chars.next();
                    block -= 1;
                }
                ('/', Some('*')) => {
                    chars.next();
                    block += 1;
                }
                _ => {}
            }
        } else if in_string {
            match c {
                // An escape: the next character is the string's (a line break stays).
                '\\' if chars.peek() != Some(&'\n') => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
        } else {
            match (c, next) {
                ('/', Some('/')) => in_line = true,
                ('/', Some('*')) => {
                    chars.next();
                    block += 1;
                }
                ('"', _) => {
                    in_string = true;
                    out.push('"');
                }
                // A char literal such as '"' must not open a string.
                ('\'', Some('"')) => {
                    chars.next();
                    out.push_str("'\"");
                }
                _ => out.push(c),
            }
        }
    }
    out
}

/// The crate root's re-exports (`pub use config::Config;`): a path through the root to
/// one of them is a path to its module.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub use ")?.strip_suffix(';'))
        .filter_map(|path| {
            let (module, item) = path.split_once("::")?;
            let item = item.rsplit("::").next()?;
            Some((item.to_string(), module.to_string()))
        })
        .collect()
}

/// The top-level modules named by `crate::` paths in `code`: `crate::a::b` and every first
/// name of a group `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.push((name, n + 1));
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((name, n + 1));
            }
        }
    }
    // A root re-export is its module; the root's own items (`crate::AppState`, the wiring)
    // are above every room, not a node.
    let reexports = root_reexports();
    for (name, _) in &mut found {
        if let Some(module) = reexports.get(name.as_str()) {
            *name = module.clone();
        }
    }
    found.retain(|(name, _)| name.starts_with(|c: char| c.is_ascii_lowercase()));
    found
}

/// Every edge between top-level modules, with one place that makes it.
fn module_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = src_dir();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for (to, line) in crate_paths(&code) {
            if to != from && modules.contains(&to) {
                let rel = file.strip_prefix(&src).unwrap().display().to_string();
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(format!("src/{rel}:{line}"));
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|m| m.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = module_graph();
    assert!(
        graph.len() > 5,
        "the source was not read: {:?}",
        graph.keys()
    );
    let found = cycles(&graph);
    let report: Vec<String> = found
        .iter()
        .map(|component| {
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| component.contains(to))
                        .map(move |(to, at)| format!("  {from} -> {to} ({at})"))
                })
                .collect();
            format!("cycle among {component:?}:\n{}", edges.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), String::new());
    }
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let code =
        code_only("use crate::{a, b::c};\n// crate::zz\nlet x = crate::d::e; /* crate::yy */");
    let names: Vec<String> = crate_paths(&code).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b", "d"]);
}

#[test]
fn long_source_files_say_which_one_concern_they_hold() {
    let src = src_dir();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let lines = text.lines().count();
            let says = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .any(|l| l.contains("One concern:"));
            (lines > MAX_LINES && !says).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines without `//! One concern: ...` in the module doc: {long:?}"
    );
}
