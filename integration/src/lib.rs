//! The harness for gpurun's end-to-end tests with real clients: a private containerd 1.6
//! (driven by `ctr` and by a small CRI client, the Kubernetes path) and podman, each on
//! private sockets, roots and state directories, with images built offline from static
//! binaries.
//!
//! Every test needs root and the client binaries; without them it prints why it skips
//! and returns, and under `CI=true` it fails instead. `scripts/deps.sh clients` installs the clients. The gpurun binary under
//! test is `$GPURUN_BIN`, or the `gpurun` cargo built beside the tests (build it first:
//! `cargo build --bin gpurun`).

pub mod containerd;
pub mod cri;
pub mod fakegpu;
pub mod image;
pub mod leftovers;
pub mod podman;
pub mod pods;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The workspace root (the gpurun package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The gpurun binary under test: `$GPURUN_BIN`, else the one cargo built beside this test
/// executable (`<target>/<triple>/debug/gpurun`: the test runs from `…/debug/deps/`).
pub fn gpurun_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GPURUN_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "GPURUN_BIN={} is not a file", p.display());
        return std::fs::canonicalize(&p).unwrap_or(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <profile>/deps");
    let p = profile_dir.join("gpurun");
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build --bin gpurun` (or set GPURUN_BIN)",
        p.display()
    );
    p
}

/// Finds `name` on `PATH` (plus the sbin directories root's PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when the test can run: root, and every tool installed. Otherwise prints why the
/// test skips (and fails it under `CI=true`).
pub fn can_run(tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        gpurun::skip::cannot_run("client test", "needs root");
        return false;
    }
    for t in tools {
        if which(t).is_none() {
            gpurun::skip::cannot_run(
                "client test",
                &format!("{t} is not installed (scripts/deps.sh installs it)"),
            );
            return false;
        }
    }
    true
}

/// One test at a time per test binary: each starts its own daemon, and two cores are
/// shared with everything else.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A name no other test (or run) uses: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The result of a command run by [`run`].
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Panics with the whole output unless the command exited 0.
    pub fn expect_ok(self, what: &str) -> Ran {
        assert!(self.ok(), "{what} failed: {self:#?}");
        self
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` with no stdin, capturing its output; kills it (the process this call
/// started, nothing else) and panics when it runs longer than `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Ran {
    run_inner(cmd, limit, false)
}

/// As [`run`], with stdin an open pipe that is never written (for `script`, which ends
/// its session at the end of its input).
pub fn run_open_stdin(cmd: &mut Command, limit: Duration) -> Ran {
    run_inner(cmd, limit, true)
}

fn run_inner(cmd: &mut Command, limit: Duration, stdin_open: bool) -> Ran {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin_open {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {desc}: {e}"));
    let _stdin = child.stdin.take();
    // Drain both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().map(reader);
    let mut err = child.stderr.take().map(reader);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let so = out.take().map(join).unwrap_or_default();
                let se = err.take().map(join).unwrap_or_default();
                panic!("{desc} ran longer than {limit:?}\nstdout: {so}\nstderr: {se}");
            }
            Err(e) => panic!("waiting for {desc}: {e}"),
        }
    };
    Ran {
        code: status.code(),
        stdout: out.map(join).unwrap_or_default(),
        stderr: err.map(join).unwrap_or_default(),
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    })
}

fn join(h: std::thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

/// Waits until `f` returns `Some`, polling, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
