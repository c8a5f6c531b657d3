//! The environment nvidia-smi runs with (CVE-2025-23266 class): nothing from the caller's.
//! Its own test binary, because it sets variables in this process's environment.

#![allow(clippy::unwrap_used)]

use gpurun::gpu::fake::{smi, FakeDriver, LIB_DIR, VERSION};
use gpurun::gpu::{self, Roots};

#[test]
fn nvidia_smi_gets_an_explicit_environment_never_the_callers() {
    // What an image (or whoever ran gpurun) could have planted.
    std::env::set_var("LD_PRELOAD", "/proc/self/cwd/poc.so");
    std::env::set_var("LD_LIBRARY_PATH", "/tmp/evil-libs");
    std::env::set_var("GPURUN_LEAK_PROBE", "leaked");
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("root"))
        .unwrap();
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert!(inv.cuda_version.is_some(), "{:?}", inv.enrichment);

    let env = std::fs::read_to_string(f.root.join(smi::ENV)).unwrap();
    let vars: Vec<(&str, &str)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !matches!(*k, "PWD" | "SHLVL" | "_"))
        .collect();
    // The driver lives under a root of its own here: its own libnvidia-ml, by absolute
    // path, is the one preload, and no library directory of the caller's (or the root's) is
    // searched.
    let nvml = f
        .root
        .join(LIB_DIR)
        .join(format!("libnvidia-ml.so.{VERSION}"))
        .display()
        .to_string();
    let mut want = vec![
        ("LC_ALL", "C"),
        ("LD_PRELOAD", nvml.as_str()),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ];
    want.sort();
    let mut got = vars.clone();
    got.sort();
    assert_eq!(got, want, "the whole environment: {env}");
    assert!(env.lines().any(|l| l == "PWD=/"), "cwd is /: {env}");
}
