//! gpurun's cgroup limits on a pure cgroup v2 host: `integration/vm/run.sh` boots Debian's
//! own kernel under QEMU (TCG) with only cgroup2 mounted and runs the cases listed in
//! runtime-spec/cgroups.md ("Tested in the VM"): OOM kill under memory.max, pids.max
//! against a fork bomb, a CPU quota, a cpuset, the eBPF device filter across an update,
//! freeze and thaw, and `update`.
//!
//! Booting a VM takes about half a minute and may install packages, so the test runs only
//! with GPURUN_VM_TESTS=1 (CI sets it).

use std::path::Path;
use std::process::Command;

#[test]
fn cgroup_v2_cases_pass_in_a_vm_on_debians_kernel() {
    if std::env::var("GPURUN_VM_TESTS").as_deref() != Ok("1") {
        eprintln!("skipping: set GPURUN_VM_TESTS=1");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/vm/run.sh");
    // The harness prints the VM's console as it goes and ends with one line per case.
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("run integration/vm/run.sh");
    assert!(
        status.success(),
        "{} failed ({status}): see the FAIL lines above and target/vm/console.log",
        script.display()
    );
}
