//! Shared fixtures for the root integration tests: busybox bundles, the real binary, and
//! a guard that force-deletes every container a test made.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True (and a message) when the test must be skipped: not root. Under `CI=true` the
/// test fails instead (`gpurun::skip`).
pub fn skip(name: &str) -> bool {
    if !is_root() {
        gpurun::skip::cannot_run(name, "needs root");
        return true;
    }
    if !Path::new(BUSYBOX).exists() {
        panic!("{BUSYBOX} is missing: install Debian's busybox-static (make test does)");
    }
    false
}

pub const BUSYBOX: &str = "/bin/busybox";

/// Build a busybox rootfs in `dir`: the static binary, its applets as symlinks, and the
/// files `id` and friends read.
pub fn make_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    for d in ["proc", "sys", "dev", "etc", "tmp", "root", "run"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}

/// One read-only rootfs shared by every test: built once into a private directory and
/// renamed into place, so concurrent test binaries never see half of it, and reused by
/// later runs instead of leaving one copy per run behind.
pub fn shared_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = std::env::temp_dir().join("gpurun-test-rootfs");
        if dir.join("bin/busybox").exists() {
            return dir;
        }
        let tmp = std::env::temp_dir().join(format!("gpurun-test-rootfs.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        make_rootfs(&tmp);
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another test binary won the race: use its copy.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub config: Value,
}

impl Bundle {
    /// A bundle whose root is the shared read-only rootfs, running `sh -c script`.
    pub fn sh(script: &str) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("gpurun-bundle-")
            .tempdir()
            .expect("tempdir");
        let mut config = gpurun::features::default_spec(false);
        config["root"]["path"] = shared_rootfs().display().to_string().into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        config["process"]["terminal"] = false.into();
        Bundle { dir, config }
    }

    /// A bundle with its own writable rootfs (for tests that plant files in it).
    pub fn own_rootfs(script: &str) -> Bundle {
        let mut b = Bundle::sh(script);
        let rootfs = b.dir.path().join("rootfs");
        make_rootfs(&rootfs);
        b.config["root"]["path"] = "rootfs".into();
        b.config["root"]["readonly"] = false.into();
        b
    }

    pub fn rootfs(&self) -> PathBuf {
        let p = self.config["root"]["path"].as_str().expect("root.path");
        self.dir.path().join(p)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).expect("json"),
        )
        .expect("write config.json");
    }
}

/// A state root per test, and the ids made in it, force-deleted on drop. The binary is
/// gpurun, or runc for the tests that compare the two on one bundle.
pub struct Runtime {
    pub root: tempfile::TempDir,
    binary: PathBuf,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime::with_binary(PathBuf::from(env!("CARGO_BIN_EXE_gpurun")))
    }

    /// runc from `PATH`, to run the same bundle under both runtimes; `None` (after saying
    /// so) where runc is not installed, and under `CI=true` the test fails instead.
    pub fn runc(test: &str) -> Option<Runtime> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
            .map(|d| d.join("runc"))
            .find(|p| p.is_file());
        if found.is_none() {
            gpurun::skip::cannot_run(test, "runc is not installed (scripts/deps.sh installs it)");
        }
        found.map(Runtime::with_binary)
    }

    fn with_binary(binary: PathBuf) -> Runtime {
        Runtime {
            root: tempfile::Builder::new()
                .prefix("gpurun-root-")
                .tempdir()
                .expect("tempdir"),
            binary,
            ids: Default::default(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(self.root.path());
        c.stdin(Stdio::null());
        c
    }

    pub fn track(&self, id: &str) {
        self.ids.borrow_mut().push(id.to_string());
    }

    /// `gpurun run -b <bundle> <id>` in the foreground, capturing output.
    pub fn run(&self, b: &Bundle, id: &str) -> Output {
        b.write();
        self.track(id);
        self.cmd()
            .args(["run", "-b"])
            .arg(b.path())
            .arg(id)
            .output()
            .expect("spawn gpurun")
    }

    /// `gpurun create`. The container inherits create's stdio, so it goes to files here:
    /// a pipe would stay open as long as the container runs.
    pub fn create(&self, b: &Bundle, id: &str, extra: &[&str]) -> Output {
        let mut args = vec!["create"];
        args.extend_from_slice(extra);
        self.detached(b, id, &args)
    }

    /// `gpurun run -d`, with the container's stdio in files.
    pub fn run_detached(&self, b: &Bundle, id: &str) -> Output {
        self.detached(b, id, &["run", "-d"])
    }

    fn detached(&self, b: &Bundle, id: &str, verb: &[&str]) -> Output {
        b.write();
        self.track(id);
        let err_path = b.path().join(format!("{}-{id}.stderr", verb[0]));
        let err = std::fs::File::create(&err_path).expect("stderr file");
        let status = self
            .cmd()
            .args(verb)
            .arg("-b")
            .arg(b.path())
            .arg(id)
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .expect("spawn gpurun");
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// Wait (bounded) until the container reports `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        for _ in 0..500 {
            let out = self.cmd().args(["state", id]).output().expect("state");
            if String::from_utf8_lossy(&out.stdout).contains(&format!("\"{status}\"")) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{id} never reached {status}");
    }

    /// Start `run -b <bundle> <id>` in the foreground as a child process.
    pub fn spawn_run(&self, b: &Bundle, id: &str) -> std::process::Child {
        b.write();
        self.track(id);
        self.cmd()
            .args(["run", "-b"])
            .arg(b.path())
            .arg(id)
            .spawn()
            .expect("spawn gpurun")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("spawn gpurun");
        assert!(
            out.status.success(),
            "gpurun {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state json")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.cmd().args(["delete", "--force", id]).output();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Unique container ids within one test binary.
pub fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}
