//! Helpers shared by the GPU integration tests: the fake-tree injection environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gpurun::config::Config;
use gpurun::gpu::fake::{self, FakeDriver, FakeSmi};
use gpurun::gpu::{self, GpuError, Injection, Inventory, Roots};
use oci_spec::runtime::{Mount, Spec};

pub const GPU0: &str = "GPU-00000000-0000-0000-0000-000000000000";
pub const GPU1: &str = "GPU-11111111-1111-1111-1111-111111111111";

pub struct Env {
    pub _t: tempfile::TempDir,
    pub root: PathBuf,
    pub rootfs: PathBuf,
    pub gen: PathBuf,
    pub cfg: Config,
    pub inv: Inventory,
}

pub fn env_with(debian_like: bool) -> Env {
    env_full(debian_like, FakeSmi::Recorded)
}

/// A tree whose nvidia-smi behaves as `smi` says.
pub fn env_smi(smi: FakeSmi) -> Env {
    env_full(true, smi)
}

pub fn env_full(debian_like: bool, smi: FakeSmi) -> Env {
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .smi(smi)
        .build(&t.path().join("host"))
        .unwrap();
    let rootfs = fake::rootfs(t.path(), debian_like).unwrap();
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    let mut cfg = Config::default();
    cfg.nvidia.cdi_spec_dirs = vec![t.path().join("cdi")];
    Env {
        root: f.root.clone(),
        gen: t.path().join("gen/proc-driver-nvidia"),
        _t: t,
        rootfs,
        cfg,
        inv,
    }
}

pub fn env() -> Env {
    env_with(true)
}

impl Env {
    pub fn inject(&self, spec: &mut Spec) -> Result<Option<Injection>, GpuError> {
        gpu::inject(spec, &self.rootfs, "c1", &self.gen, &self.cfg, &self.inv)
    }
    pub fn run(
        &self,
        env: &[&str],
        privileged: bool,
    ) -> (Spec, Result<Option<Injection>, GpuError>) {
        let mut s = fake::spec(env, privileged, &[]);
        let r = self.inject(&mut s);
        (s, r)
    }
    pub fn ok(&self, env: &[&str]) -> (Spec, Injection) {
        let (s, r) = self.run(env, true);
        (s, r.unwrap().expect("a request"))
    }
}

pub fn device_paths(s: &Spec) -> Vec<String> {
    let mut v: Vec<String> = s
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
        .iter()
        .map(|d| d.path().display().to_string())
        .collect();
    v.sort();
    v
}

pub fn rules(s: &Spec) -> Vec<String> {
    s.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default()
        .iter()
        .map(|r| r.to_string())
        .collect()
}

pub fn mount_at<'a>(s: &'a Spec, dest: &str) -> Option<&'a Mount> {
    s.mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(dest))
}

pub fn env_value(s: &Spec, key: &str) -> Option<String> {
    gpurun::gpu::request::env_map(s).get(key).cloned()
}
