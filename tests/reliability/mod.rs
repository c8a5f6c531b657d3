//! What the reliability tests (faults, races, load, hostile) check after the fact: that
//! nothing a container had is left — state directories, cgroups, mounts, processes, fds,
//! zombies — plus a gpurun built with fail points, and commands bounded by a deadlock
//! guard. Used beside `common`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A cgroup parent unique to this test binary and `name`: `/gpurun-test-<name>-<pid>`.
/// Every container of a test lives under it, so a leak is a directory that is still there.
pub fn cgroup_parent(name: &str) -> String {
    format!("/gpurun-test-{name}-{}", std::process::id())
}

/// [`cgroup_parent`], removed (when empty) on drop, even when the test fails. Declare it
/// before the `Runtime`, so the containers are deleted first.
pub struct CgroupParent(String);

impl CgroupParent {
    pub fn new(name: &str) -> CgroupParent {
        CgroupParent(cgroup_parent(name))
    }
}

impl std::ops::Deref for CgroupParent {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        remove_cgroup_parent(&self.0);
    }
}

/// Every directory of `parent` (a cgroupsPath-style absolute path) in any hierarchy.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = hierarchies
        .filter_map(Result::ok)
        .map(|e| e.path().join(rel))
        .filter(|p| p.is_dir())
        .collect();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let p = Path::new("/sys/fs/cgroup").join(rel);
        if p.is_dir() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every directory below the parent's directories (the containers' own cgroups).
pub fn cgroup_children(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in cgroup_dirs(parent) {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            out.extend(
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort();
    out
}

/// Removes the (empty) parent directories a test's containers left on delete, deepest
/// first; a parent that still has a child is left and reported by the caller's check.
pub fn remove_cgroup_parent(parent: &str) {
    for dir in cgroup_dirs(parent) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The mount points of this mount namespace at or below any of `prefixes`.
pub fn mounts_under(prefixes: &[&Path]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|mp| prefixes.iter().any(|p| Path::new(mp).starts_with(p)))
        .collect();
    out.sort();
    out
}

/// Every line of mountinfo without the two ids, sorted: what a leaked mount would add.
pub fn mount_table() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<String> = text
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Pids of processes (other than this one) whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// Children of this process that exited and were never reaped.
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next();
            let ppid = f.next().and_then(|p| p.parse::<i32>().ok());
            state == Some("Z") && ppid == Some(me)
        })
        .collect()
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Run `cmd` (its stdio as the caller set it) to completion, killing it and failing the
/// test if it takes longer than `limit`: a deadlock guard, not a speed check.
pub fn status_within(cmd: &mut Command, limit: Duration, what: &str) -> ExitStatus {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("deadlock guard: {what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`status_within`], capturing the output in files, never pipes: a container started by
/// the command inherits them and may keep them open.
pub fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    use std::io::{Read, Seek};
    let mut out = tempfile::tempfile().expect("stdout file");
    let mut err = tempfile::tempfile().expect("stderr file");
    cmd.stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    let status = status_within(cmd, limit, what);
    let read = |f: &mut std::fs::File| {
        let mut v = Vec::new();
        let _ = f.rewind().and_then(|()| f.read_to_end(&mut v));
        v
    };
    Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// A gpurun built with `--features failpoints` (`GPURUN_FAILPOINT=<step>` makes init
/// SIGKILL itself at that step). `GPURUN_FAILPOINTS_BIN` names a prebuilt one; otherwise it
/// is built once into `target/failpoints` (the first run pays for a full build there).
pub fn failpoints_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("GPURUN_FAILPOINTS_BIN") {
            return PathBuf::from(p);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = manifest.join("target/failpoints");
        let out = Command::new(env!("CARGO"))
            .current_dir(manifest)
            .args([
                "build",
                "--quiet",
                "--message-format=json",
                "--features",
                "failpoints",
                "--bin",
                "gpurun",
            ])
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("running cargo build --features failpoints");
        assert!(
            out.status.success(),
            "building gpurun with fail points failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Where the binary lands depends on the build target (.cargo/config.toml): cargo
        // names it in its artifact message.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo named the gpurun executable it built")
    })
}

/// True when gpurun's stderr shows a Rust panic rather than an error.
pub fn panicked(stderr: &str) -> bool {
    stderr.contains("panicked at") || stderr.contains("RUST_BACKTRACE")
}
