//! The module map's two rules, checked on the source (ARCHITECTURE.md):
//!
//! - In no folder of `src/` do two children (files or sub-folders, counting everything
//!   below a sub-folder; the folder's own `mod.rs` aside) import each other, directly or
//!   through other siblings.
//! - Nothing under `src/` but `main.rs` imports `cli`.
//!
//! References are read from `crate::`, `super::` and `self::` paths in the code (`use`
//! trees included), comments and string literals left out. Test modules (`tests.rs`,
//! `*_tests.rs`, `tests/` folders) may reach anything and are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every source file under `src/` with the module path it defines.
fn modules(src: &Path) -> Vec<(PathBuf, Module)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let stem = rel.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem == "tests" || stem.ends_with("_tests") || stem == "main" {
                continue;
            }
            let mut m: Module = rel
                .parent()
                .into_iter()
                .flat_map(|p| p.iter())
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if stem != "mod" && stem != "lib" {
                m.push(stem.to_string());
            }
            out.push((path, m));
        }
    }
    out
}

/// The source without comments and with string and char literals emptied.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#")) {
            let start = i + 1;
            let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
            if b.get(start + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i = start + hashes + 1;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::d}`) into its paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Module>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let base: Vec<String> = prefix.iter().cloned().chain(head).collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
        return;
    }
    let path: Vec<String> = tree
        .split(" as ")
        .next()
        .unwrap_or("")
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
        .map(String::from)
        .collect();
    out.push(prefix.iter().cloned().chain(path).collect());
}

/// Resolves a path starting with `crate`, `super` or `self` to a module path from the
/// crate root, seen from `at` (a `mod.rs` is its folder's module).
fn resolve(at: &[String], is_mod_file: bool, path: &[String]) -> Option<Module> {
    let mut base: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") => at.to_vec(),
        Some("super") => at.to_vec(),
        _ => return None,
    };
    let mut rest = path;
    if path[0] == "crate" || path[0] == "self" {
        rest = &path[1..];
    } else {
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?;
            rest = &rest[1..];
        }
    }
    let _ = is_mod_file;
    Some(base.into_iter().chain(rest.iter().cloned()).collect())
}

/// Every module path `file` refers to.
fn references(code: &str, at: &[String], is_mod_file: bool) -> Vec<Module> {
    let mut paths: Vec<Module> = Vec::new();
    // `use` trees, which may hold braces.
    let mut rest = code;
    while let Some(pos) = rest.find("use ") {
        let before_ok = pos == 0 || !is_ident(rest[..pos].chars().last().unwrap_or(' '));
        let after = &rest[pos + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before_ok {
            let tree = after[..end].trim();
            for root in ["crate::", "super::", "self::"] {
                if let Some(t) = tree.strip_prefix(root) {
                    let r = root.trim_end_matches("::").to_string();
                    expand(&[r], t, &mut paths);
                }
            }
        }
        rest = &after[end.min(after.len())..];
    }
    // Paths written inline: `crate::a::b`, `super::x`.
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(p) = code[from..].find(root) {
            let start = from + p;
            from = start + root.len();
            if start > 0 && is_ident(code[..start].chars().last().unwrap_or(' ')) {
                continue;
            }
            let tail: String = code[start..]
                .chars()
                .take_while(|&c| is_ident(c) || c == ':')
                .collect();
            let path: Vec<String> = tail
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            paths.push(path);
        }
    }
    paths
        .iter()
        .filter_map(|p| resolve(at, is_mod_file, p))
        .collect()
}

/// For each folder, the edges between its children: child → sibling it imports.
type Graphs = BTreeMap<Module, BTreeMap<String, BTreeSet<String>>>;

fn sibling_graphs(src: &Path) -> (Graphs, Vec<String>) {
    let mut graphs: Graphs = BTreeMap::new();
    let mut cli_importers = Vec::new();
    let known: BTreeSet<Module> = modules(src).into_iter().map(|(_, m)| m).collect();
    for (path, m) in modules(src) {
        let text = std::fs::read_to_string(&path).expect("read source");
        let is_mod = path
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let code = code_only(&text);
        for target in references(&code, &m, is_mod) {
            // Keep the longest prefix that is a module: `crate::a::b::Type` is module a::b.
            let target: Module = (1..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|t| known.contains(t))
                .unwrap_or(target);
            if target.first().is_some_and(|f| f == "cli") && m.first().is_none_or(|f| f != "cli") {
                cli_importers.push(path.display().to_string());
            }
            // Every folder that holds both: the first place their paths part.
            let common = m.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < m.len() && common < target.len() {
                let folder = m[..common].to_vec();
                graphs
                    .entry(folder)
                    .or_default()
                    .entry(m[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
    }
    cli_importers.sort();
    cli_importers.dedup();
    (graphs, cli_importers)
}

/// The strongly connected groups of more than one child (Tarjan's algorithm).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(next) = t.edges.get(v) {
            for w in next {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut group = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                t.out.push(group);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(v.iter().map(String::as_str)))
        .collect();
    for n in nodes {
        if !t.index.contains_key(n) {
            visit(&mut t, n);
        }
    }
    t.out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_two_children_of_a_folder_import_each_other() {
    let (graphs, _) = sibling_graphs(&src());
    let mut found = Vec::new();
    for (folder, edges) in &graphs {
        for group in circles(edges) {
            let name = if folder.is_empty() {
                "src".to_string()
            } else {
                format!("src/{}", folder.join("/"))
            };
            found.push(format!("{name}: {}", group.join(" ⇄ ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn nothing_under_src_imports_the_cli() {
    let (_, importers) = sibling_graphs(&src());
    assert!(importers.is_empty(), "import cli: {importers:?}");
}

#[test]
fn the_checker_sees_a_circle_through_a_third_sibling_and_a_use_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = dir.path();
    std::fs::create_dir_all(s.join("a")).expect("mkdir");
    std::fs::write(s.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").expect("lib");
    std::fs::write(s.join("a/mod.rs"), "pub mod x;").expect("a");
    // a (through its child x) → b, b → c, c → a: one circle of three.
    std::fs::write(s.join("a/x.rs"), "use crate::{b::{self, Thing}};").expect("x");
    std::fs::write(s.join("b.rs"), "fn f() { crate::c::g() } // crate::a::no").expect("b");
    std::fs::write(
        s.join("c.rs"),
        "use super::a::x;\nconst S: &str = \"crate::b\";",
    )
    .expect("c");
    let (graphs, _) = sibling_graphs(s);
    let root = &graphs[&Vec::<String>::new()];
    assert_eq!(circles(root), vec![vec!["a", "b", "c"]]);
    // Without c → a there is none; the comment and the string never counted.
    std::fs::write(s.join("c.rs"), "const S: &str = \"crate::a::x\";").expect("c");
    let (graphs, _) = sibling_graphs(s);
    assert!(circles(&graphs[&Vec::<String>::new()]).is_empty());
    // An import of the cli from a use tree is seen; one from the cli itself is its own.
    std::fs::create_dir_all(s.join("cli")).expect("mkdir");
    std::fs::write(s.join("cli/mod.rs"), "use crate::b;").expect("cli");
    std::fs::write(s.join("b.rs"), "use crate::{c, cli::{Cmd}};").expect("b");
    let (_, importers) = sibling_graphs(s);
    assert_eq!(importers, vec![s.join("b.rs").display().to_string()]);
}
