//! Names the commit gpurun was built from, for `gpurun --version`: `GPURUN_COMMIT` when the
//! builder sets it (a release tarball has no `.git`), else `git rev-parse HEAD` of this
//! checkout, with `-dirty` when tracked files differ from it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=GPURUN_COMMIT");
    if std::env::var_os("GPURUN_COMMIT").is_some() {
        return;
    }
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    // Without these the script would run again on any change in the package; with them
    // it runs when HEAD moves, the index changes or a source file is edited.
    for p in ["src", "Cargo.toml", "build.rs"] {
        println!("cargo:rerun-if-changed={p}");
    }
    let Some(head) = git(&dir, &["rev-parse", "HEAD"]) else {
        return;
    };
    for p in ["HEAD", "index", "refs", "packed-refs"] {
        if let Some(path) = git(&dir, &["rev-parse", "--git-path", p]) {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let dirty = git(&dir, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    let commit = if dirty { format!("{head}-dirty") } else { head };
    println!("cargo:rustc-env=GPURUN_COMMIT={commit}");
}
