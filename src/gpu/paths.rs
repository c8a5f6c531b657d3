//! Path rules: host reads confined to a root, container destinations computed lexically.
//!
//! Host-side lookups (driver root, rootfs probes) resolve symlinks *as if the root were
//! `/`*: an absolute link target or a `..` that climbs above the root stays inside it.
//! Container destinations are never resolved at all here: they are built from fixed
//! directories and file names, and checked to hold only normal components. The runtime
//! resolves them inside the rootfs later with `openat2(RESOLVE_IN_ROOT)` semantics.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::GpuError;

/// Linux's own limit on symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` inside `root` with every symlink interpreted relative to `root`.
/// Returns the resolved in-root path (absolute, no symlinks, no `..`). A missing component
/// is `NotFound`.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut done: Vec<OsString> = Vec::new();
    let mut followed = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        if part.is_empty() {
            done.clear();
            continue;
        }
        let here = join_parts(root, &done).join(&part);
        let meta = std::fs::symlink_metadata(&here)?;
        if !meta.file_type().is_symlink() {
            done.push(part);
            continue;
        }
        followed += 1;
        if followed > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = std::fs::read_link(&here)?;
        push_components(&mut todo, &target);
    }
    Ok(in_root_path(&done))
}

/// The host path of an in-root path.
pub fn host_path(root: &Path, in_root: &Path) -> PathBuf {
    root.join(in_root.strip_prefix("/").unwrap_or(in_root))
}

/// Pushes `path`'s components in reverse onto a stack; an absolute path pushes an empty
/// marker meaning "back to the root".
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let mut parts: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => parts.push(OsString::new()),
            Component::CurDir => {}
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::Normal(n) => parts.push(n.to_os_string()),
        }
    }
    todo.extend(parts.into_iter().rev());
}

fn join_parts(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

fn in_root_path(parts: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(parts);
    p
}

/// True when `path` is absolute and holds only normal components (no `.`, no `..`).
pub fn is_clean_absolute(path: &Path) -> bool {
    let mut comps = path.components();
    comps.next() == Some(Component::RootDir) && comps.all(|c| matches!(c, Component::Normal(_)))
}

/// A container destination: `dir` joined with `name`, checked lexically. `name` may hold
/// `/` separated normal components (e.g. `vdpau/libvdpau_nvidia.so.1`) but never `..`.
pub fn container_dest(dir: &str, name: &str) -> Result<PathBuf, GpuError> {
    let p = Path::new(dir).join(name);
    if name.is_empty() || Path::new(name).is_absolute() || !is_clean_absolute(&p) {
        return Err(GpuError::UnsafePath {
            path: p,
            message: "a container destination must be absolute with no `.` or `..`".into(),
        });
    }
    Ok(p)
}

/// Lexically normalises an absolute container path for comparison (`//a/./b/` → `/a/b`);
/// `..` is kept as written, so two paths that differ only through `..` never compare equal.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// True when `rootfs/dir` is a directory when resolved inside the rootfs. Symlinks in the
/// rootfs are followed only as the container would see them, never to the host.
pub fn rootfs_has_dir(rootfs: &Path, dir: &str) -> bool {
    match resolve_in_root(rootfs, Path::new(dir)) {
        Ok(p) => std::fs::symlink_metadata(host_path(rootfs, &p))
            .map(|m| m.is_dir())
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libcuda.so.9"), "").unwrap();
        symlink(
            "libcuda.so.9",
            r.join("usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        )
        .unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/../../../../usr", r.join("escape")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/lib/x86_64-linux-gnu/libcuda.so.1")).unwrap(),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.9")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/escape/lib")).unwrap(),
            PathBuf::from("/usr/lib")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/../../usr")).unwrap(),
            PathBuf::from("/usr")
        );
    }

    #[test]
    fn symlink_loops_fail_with_eloop() {
        let t = tempfile::tempdir().unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        let e = resolve_in_root(t.path(), Path::new("/a")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn destinations_reject_dot_dot() {
        assert!(container_dest("/usr/lib64", "libcuda.so.1").is_ok());
        assert!(container_dest("/usr/lib64", "vdpau/libvdpau_nvidia.so.1").is_ok());
        assert!(container_dest("/usr/lib64", "../../etc/passwd").is_err());
        assert!(container_dest("/usr/lib64", "/etc/passwd").is_err());
        assert!(container_dest("/usr/lib64", "").is_err());
        assert!(container_dest("relative", "x").is_err());
    }
}
