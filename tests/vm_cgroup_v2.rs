//! gpurun's cgroup limits on a pure cgroup v2 host: `integration/vm/run.sh` boots Debian's
//! own kernel under QEMU (TCG) with only cgroup2 mounted and runs the cases listed in
//! runtime-spec/cgroups.md ("Tested in the VM"): OOM kill under memory.max, pids.max
//! against a fork bomb, a CPU quota, a cpuset, the eBPF device filter across an update,
//! freeze and thaw, and `update`.
//!
//! The second test boots the same guest with systemd 252 as pid 1
//! (`GPURUN_VM_INIT=systemd`) for the systemd cgroup driver: `systemd_smoke` checks the host
//! (transient delegated scopes over /run/systemd/private, daemon-reload), `systemd_scope`,
//! `systemd_devices` and `systemd_oom_update` run `gpurun --systemd-cgroup`. The third boots
//! systemd with its hybrid layout (`GPURUN_VM_CGROUP=hybrid`: v1 controllers, cgroup2 at
//! /sys/fs/cgroup/unified) for `systemd_hybrid`.
//!
//! Booting a VM takes about half a minute and may install packages, so the tests run only
//! with GPURUN_VM_TESTS=1 (CI sets it). They take turns: two emulated VMs at once on a small
//! machine would slow the timing-sensitive cases down.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs integration/vm/run.sh with `env`; false when the tests are not enabled.
fn run_vm(env: &[(&str, &str)]) -> bool {
    if std::env::var("GPURUN_VM_TESTS").as_deref() != Ok("1") {
        gpurun::skip::cannot_run("VM case", "GPURUN_VM_TESTS=1 (the VM cases are off)");
        return false;
    }
    // A failed VM test poisons the lock; the next one may still run.
    let _turn = ONE_VM_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/vm/run.sh");
    // The harness prints the VM's console as it goes and ends with one line per case.
    let status = Command::new("bash")
        .arg(&script)
        .envs(env.iter().copied())
        .status()
        .expect("run integration/vm/run.sh");
    assert!(
        status.success(),
        "{} {env:?} failed ({status}): see the FAIL lines above and the console.log it names",
        script.display()
    );
    true
}

#[test]
fn cgroup_v2_cases_pass_in_a_vm_on_debians_kernel() {
    run_vm(&[("GPURUN_VM_INIT", "busybox")]);
}

#[test]
fn systemd_cgroup_driver_cases_pass_in_a_vm_with_systemd_as_pid_1() {
    run_vm(&[
        ("GPURUN_VM_INIT", "systemd"),
        (
            "GPURUN_VM_CASES",
            "systemd_smoke,systemd_scope,systemd_devices,systemd_oom_update",
        ),
    ]);
}

#[test]
fn systemd_cgroup_driver_works_on_systemds_hybrid_layout() {
    run_vm(&[
        ("GPURUN_VM_INIT", "systemd"),
        ("GPURUN_VM_CGROUP", "hybrid"),
        ("GPURUN_VM_CASES", "systemd_hybrid"),
    ]);
}
