//! The command line is the top layer: it parses and prints, and nothing of the runtime
//! depends on it (the binary's `main` is its only user).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Whether code (comments left out) names the `cli` module from elsewhere in the crate.
fn names_cli(text: &str) -> bool {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .any(|l| {
            let l: String = l.split_whitespace().collect();
            let grouped = l.split_once("crate::{").is_some_and(|(_, rest)| {
                rest.split([',', '{', '}'])
                    .any(|item| item == "cli" || item.starts_with("cli::"))
            });
            l.contains("crate::cli::") || l.contains("crate::cli;") || grouped
        })
}

#[test]
fn nothing_in_the_library_imports_the_cli() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| !p.starts_with(src.join("cli")) && *p != &src.join("main.rs"))
        .filter(|p| names_cli(&std::fs::read_to_string(p).expect("read source")))
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "these import cli: {offenders:?}");
}

#[test]
fn the_check_sees_an_import_of_the_cli() {
    assert!(names_cli("        .arg(crate::cli::REFRESH_GPUS)"));
    assert!(names_cli("use crate::{cli, spec};"));
    assert!(!names_cli("// crate::cli is the top layer"));
    assert!(names_cli("use crate::{error::Error, cli::Cli};"));
    assert!(!names_cli("use crate::runtime::Globals;"));
    assert!(!names_cli("use crate::{client, spec};"));
}
