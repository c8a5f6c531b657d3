//! What a removed container must not leave behind: state directories, cgroups, mounts.
//! Also the clean-up of cgroup parents and mounts that a test's own daemon created.

use std::path::{Path, PathBuf};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Mount points (from this process's mountinfo) at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every cgroup hierarchy mounted under `/sys/fs/cgroup` (v1 controllers, `unified`, or
/// the v2 root itself).
pub fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The directories named `rel` (a cgroup path like `/ns/id`) that exist in any hierarchy.
pub fn cgroups_named(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the cgroup `rel` and its (empty) children in every hierarchy, deepest first.
/// Only for parents a test's own daemon created; a cgroup that still has tasks stays.
pub fn remove_cgroups(rel: &str) {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    for top in cgroups_named(rel) {
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Lazily unmounts every mount at or under `dir`, deepest first (a test daemon's leftovers
/// after a failed test, so its temporary directory can be removed).
pub fn unmount_under(dir: &Path) {
    let mut m = mounts_under(dir);
    m.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in m {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Names in `dir` (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Asserts that no state directory, cgroup or mount of container `id` remains.
pub fn assert_gone(what: &str, state_root: &Path, id: &str, cgroup: &str, mounts_in: &Path) {
    assert!(
        !state_root.join(id).exists(),
        "{what}: state dir {} left behind",
        state_root.join(id).display()
    );
    let cg = cgroups_named(cgroup);
    assert!(cg.is_empty(), "{what}: cgroups left behind: {cg:?}");
    let m: Vec<PathBuf> = mounts_under(mounts_in)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(id))
        .collect();
    assert!(m.is_empty(), "{what}: mounts left behind: {m:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }
}
