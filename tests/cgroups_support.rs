//! Shared helpers for the cgroup root tests (included by the `cgroups_*` test files with
//! `#[path]`; as a test target of its own it only runs the helper hook).
//!
//! The tests run a helper process that is a copy of the test binary itself: it starts, waits
//! for "go" on stdin (so the test can move it into a cgroup first), does one thing and prints
//! `RESULT=<value>`. That gives exact errnos without depending on a shell's messages.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use gpurun::linux::cgroups::{Cgroup, CgroupRoot};

const HELPER_ENV: &str = "GPURUN_CGROUP_TEST_HELPER";

/// The host's cgroups, or `None` (after saying so) when not root.
pub fn root_or_skip() -> Option<CgroupRoot> {
    if !nix::unistd::geteuid().is_root() {
        gpurun::skip::cannot_run("cgroup test", "needs root");
        return None;
    }
    Some(CgroupRoot::system().expect("cgroup mounts readable"))
}

/// A parent cgroup name no other test or run uses.
pub fn unique_parent(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "gpurun-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Destroys the cgroup (killing what is in it) when the test ends, however it ends.
pub struct CgroupGuard(pub Cgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.destroy() {
            eprintln!("cleanup: destroying the test cgroup: {e}");
        }
    }
}

/// Removes a directory the test made in a cgroup hierarchy.
pub struct DirGuard(pub PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        for _ in 0..200 {
            match std::fs::remove_dir(&self.0) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => return,
            }
        }
    }
}

/// A child process of the test, killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.0.wait().expect("wait for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_sleep() -> ChildGuard {
    ChildGuard(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    )
}

/// The helper hook's test name in a file that includes this one as `mod support`.
const HELPER_TEST: &str = "support::zz_helper_process";

/// A helper process (see the module doc); `mode` is `open:<path>` (prints the errno, 0 on
/// success), `alloc:<MiB>` (touches that much memory), `spawn:<n>` (prints how many
/// `sleep` children it could start) or `mknod:<b|c>:<major>:<minor>:<path>` (the errno).
pub struct Helper {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    pub fn spawn(mode: &str) -> Helper {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([HELPER_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn helper");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("helper stdout"));
        Helper {
            child: ChildGuard(child),
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Lets the helper act, and returns what it printed after `RESULT=` (empty if it died
    /// first).
    pub fn go(&mut self) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return String::new(),
                Ok(_) => {
                    // libtest may have printed the test's name on the same line.
                    if let Some((_, v)) = line.trim().split_once("RESULT=") {
                        return v.to_string();
                    }
                }
            }
        }
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait()
    }
}

/// Call from a `#[test]` in each test file: in a helper process it does the helper's job and
/// exits; in a normal run it returns at once.
pub fn run_helper_if_asked() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let result = match mode.split_once(':') {
        Some(("open", path)) => match std::fs::File::open(path) {
            Ok(_) => "0".to_string(),
            Err(e) => e.raw_os_error().unwrap_or(-1).to_string(),
        },
        Some(("alloc", mib)) => {
            let mib: usize = mib.parse().expect("MiB count");
            let mut v: Vec<u8> = Vec::with_capacity(mib << 20);
            for i in 0..(mib << 20) {
                v.push((i % 251) as u8);
            }
            v.iter().map(|&b| u64::from(b)).sum::<u64>().to_string()
        }
        Some(("spawn", n)) => {
            let n: usize = n.parse().expect("process count");
            let mut children = Vec::new();
            for _ in 0..n {
                match Command::new("sleep")
                    .arg("300")
                    .stdin(Stdio::null())
                    .spawn()
                {
                    Ok(c) => children.push(c),
                    Err(_) => break,
                }
            }
            let count = children.len();
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
            count.to_string()
        }
        Some(("mknod", spec)) => make_node(spec),
        _ => "unknown-mode".to_string(),
    };
    println!("RESULT={result}");
    std::process::exit(0);
}

/// `b:<major>:<minor>:<path>` (or `c:...`): the errno of mknod(2) making that node, 0 if
/// it was made.
fn make_node(spec: &str) -> String {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let mut parts = spec.splitn(4, ':');
    let (Some(kind), Some(major), Some(minor), Some(path)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return "bad-mknod-spec".to_string();
    };
    let kind = if kind == "b" {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFCHR
    };
    let dev = makedev(major.parse().expect("major"), minor.parse().expect("minor"));
    match mknod(path, kind, Mode::from_bits_truncate(0o600), dev) {
        Ok(()) => "0".to_string(),
        Err(e) => (e as i32).to_string(),
    }
}

/// The lines of `/proc/<pid>/cgroup`.
pub fn proc_cgroup(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/<pid>/cgroup")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn zz_helper_process() {
    run_helper_if_asked();
}
