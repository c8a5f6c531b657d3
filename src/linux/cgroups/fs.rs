//! cgroupfs file access: one write per value (the kernel parses each write whole), files are
//! never created (a missing knob must show as missing), and every error names the path.
//! Writes open with `O_TRUNC` as a shell's `>` does: cgroupfs ignores it, and a fake
//! cgroupfs in a test directory then holds exactly the last value written.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use super::error::CgroupError;

pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

pub(crate) fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Creates `leaf` and every missing directory between `mountpoint` and it, top down.
/// Returns the directories it created, parents first.
pub(crate) fn mkdir_all(mountpoint: &Path, leaf: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = leaf
        .strip_prefix(mountpoint)
        .map_err(|_| CgroupError::InvalidPath {
            path: leaf.display().to_string(),
            reason: format!("it is not below {}", mountpoint.display()),
        })?;
    let mut created = Vec::new();
    let mut dir = mountpoint.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                remove_created(&created);
                return Err(CgroupError::Mkdir { path: dir, source });
            }
        }
    }
    Ok(created)
}

/// Removes directories created by [`mkdir_all`] (deepest first), ignoring failures: used on
/// the error path, where the first error is the one to report.
pub(crate) fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// Removes a cgroup directory and any child cgroups below it, deepest first. A missing
/// directory is not an error. `EBUSY` (a cgroup whose last task is still exiting) is retried
/// a bounded number of times.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path())?;
        }
    }
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                tries += 1;
                sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(CgroupError::Rmdir {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The pids in `cgroup.procs` of `dir` alone.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let text = read(dir, "cgroup.procs")?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The pids in `dir` and every cgroup below it.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut pids = match procs(dir) {
        Ok(p) => p,
        Err(CgroupError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(procs_recursive(&entry.path())?);
            }
        }
    }
    Ok(pids)
}

/// Writes `pid` to `cgroup.procs`. `EINVAL` can mean the task is still being created
/// (`TASK_NEW`), so it is retried a few times.
pub(crate) fn add_proc(dir: &Path, pid: i32) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match write(dir, "cgroup.procs", &pid.to_string()) {
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && tries < 5 =>
            {
                tries += 1;
                sleep(Duration::from_millis(30));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_never_creates_a_missing_knob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write(dir.path(), "memory.max", "1").expect_err("file is missing");
        assert!(err.to_string().contains("memory.max"), "{err}");
        assert!(!dir.path().join("memory.max").exists());
    }

    #[test]
    fn mkdir_all_reports_only_what_it_created_and_rmdir_tree_removes_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("a")).expect("mkdir a");
        let leaf = dir.path().join("a/b/c");
        let created = mkdir_all(dir.path(), &leaf).expect("mkdir_all");
        assert_eq!(created, [dir.path().join("a/b"), leaf.clone()]);
        fs::create_dir(leaf.join("nested")).expect("mkdir nested");
        rmdir_tree(&dir.path().join("a/b")).expect("rmdir_tree");
        assert!(!dir.path().join("a/b").exists());
        assert!(dir.path().join("a").exists());
        rmdir_tree(&dir.path().join("a/b")).expect("missing dir is fine");
    }

    #[test]
    fn keyed_reads_flat_keyed_files() {
        let text = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(keyed(text, "oom_kill"), Some(2));
        assert_eq!(keyed(text, "oom"), Some(1));
        assert_eq!(keyed(text, "nope"), None);
    }
}
