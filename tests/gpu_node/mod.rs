//! The fake GPU node the root runtime tests run the real binary on: the fake two-GPU
//! driver tree, a state and a CDI directory and the `config.toml` pointing at them, and
//! busybox bundles asking for GPUs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use gpurun::gpu::fake::{smi, FakeDriver, LIB_DIR};
use serde_json::Value;

use crate::common::*;

pub const GPU0: &str = "GPU-00000000-0000-0000-0000-000000000000";
pub const GPU1: &str = "GPU-11111111-1111-1111-1111-111111111111";
pub const ENXIO: &str = "No such device or address";
pub const EPERM: &str = "Operation not permitted";

/// A fake GPU node: the driver tree, a state directory, a CDI directory and the
/// `config.toml` pointing at them. Declare it before the [`Runtime`] so the containers
/// are deleted before the tree goes.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Node {
    pub fn new(accept_env_when_unprivileged: bool) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("gpurun-gpu-node-")
            .tempdir()
            .unwrap();
        let host = dir.path().join("host");
        FakeDriver::two_gpus().build(&host).unwrap();
        for d in ["state", "cdi"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let config = dir.path().join("config.toml");
        let p = |s: &str| dir.path().join(s).display().to_string();
        std::fs::write(
            &config,
            format!(
                "[nvidia]\ndriver-root = {h:?}\ndev-root = {h:?}\nproc-root = {h:?}\n\
                 accept-env-when-unprivileged = {accept_env_when_unprivileged}\n\
                 cdi-spec-dirs = [{cdi:?}]\n[gpus]\nstate-dir = {state:?}\n\
                 [journal]\ndir = {journal:?}\n",
                h = host.display().to_string(),
                cdi = p("cdi"),
                state = p("state"),
                journal = p("journal"),
            ),
        )
        .unwrap();
        Node { dir, config }
    }

    pub fn host(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    /// Where this node's GPU journal is kept (never the host's /var/lib/gpurun).
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    pub fn cdi_dir(&self) -> PathBuf {
        self.dir.path().join("cdi")
    }

    /// The arguments of every run of the fake tree's nvidia-smi so far.
    pub fn smi_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.host().join(smi::CALLS))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `gpurun --root <rt>` with this node's configuration.
    pub fn cmd(&self, rt: &Runtime) -> Command {
        let mut c = rt.cmd();
        c.env("GPURUN_CONFIG", &self.config);
        c
    }

    pub fn ok(&self, rt: &Runtime, args: &[&str]) -> String {
        let out = self.cmd(rt).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "gpurun {args:?} failed: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    /// `gpurun run` in the foreground, capturing the container's output.
    pub fn run(&self, rt: &Runtime, b: &Bundle, id: &str) -> Output {
        b.write();
        rt.track(id);
        self.cmd(rt)
            .args(["run", "-b"])
            .arg(b.path())
            .arg(id)
            .output()
            .unwrap()
    }

    /// `gpurun create`; the container's stdio goes to files (a pipe would stay open).
    pub fn create(&self, rt: &Runtime, b: &Bundle, id: &str) -> Output {
        self.create_with(rt, b, id, &[])
    }

    /// `gpurun create <flags>` (`--gpus 1`, …).
    pub fn create_with(&self, rt: &Runtime, b: &Bundle, id: &str, flags: &[&str]) -> Output {
        b.write();
        rt.track(id);
        let err_path = b.path().join(format!("create-{id}.stderr"));
        let status = self
            .cmd(rt)
            .arg("create")
            .args(flags)
            .arg("-b")
            .arg(b.path())
            .arg(id)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    pub fn gpus_json(&self, rt: &Runtime) -> Vec<Value> {
        let text = self.ok(rt, &["gpus", "--format", "json"]);
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }
}

/// A busybox bundle with its own writable rootfs that looks like Debian
/// (`/usr/lib/x86_64-linux-gnu` exists), running `script`.
pub fn bundle(script: &str) -> Bundle {
    let dir = tempfile::Builder::new()
        .prefix("gpurun-bundle-")
        .tempdir()
        .unwrap();
    make_rootfs(&dir.path().join("rootfs"));
    std::fs::create_dir_all(dir.path().join("rootfs").join(LIB_DIR)).unwrap();
    let mut config = gpurun::features::default_spec(false);
    config["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
    config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    config["process"]["terminal"] = false.into();
    Bundle { dir, config }
}

pub fn set_env(b: &mut Bundle, kv: &str) {
    b.config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(kv.into());
}

pub fn annotate(b: &mut Bundle, key: &str, value: &str) {
    b.config["annotations"][key] = value.into();
}

/// Adds a capability to the sets; `bounding` alone is what makes a request privileged.
pub fn add_cap(b: &mut Bundle, cap: &str, sets: &[&str]) {
    for set in sets {
        b.config["process"]["capabilities"][*set]
            .as_array_mut()
            .unwrap()
            .push(cap.into());
    }
}

pub fn privileged(b: &mut Bundle) {
    add_cap(b, "CAP_SYS_ADMIN", &["bounding"]);
}

/// `test -e` for each path inside the container, as `path=yes|no` lines.
pub fn probe(paths: &[&str]) -> String {
    paths
        .iter()
        .map(|p| format!("if test -e {p}; then echo {p}=yes; else echo {p}=no; fi; "))
        .collect()
}

pub fn assert_ran(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

pub fn has_line(out: &Output, line: &str) -> bool {
    stdout(out).lines().any(|l| l == line)
}
