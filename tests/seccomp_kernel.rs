//! Compiled profiles loaded into a real kernel (root): a forked child installs the
//! profile, makes one system call and reports its errno as the exit code.

use std::path::Path;

use gpurun::linux::seccomp::{compile, install};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};

/// Exit codes above any errno the tests expect, for a child that could not get going.
const INSTALL_FAILED: i32 = 200;

fn needs_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    gpurun::skip::cannot_run("seccomp kernel test", "needs root");
    true
}

/// The errno of a call: 0 for success.
fn errno_of<T>(result: nix::Result<T>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(errno) => errno as i32,
    }
}

/// Fork; in the child install `profile` and exit with what `probe` returns. The child
/// only makes system calls (no allocation, no panic), so forking from the threaded test
/// harness is sound.
fn in_child(profile: Value, probe: impl FnOnce() -> i32) -> WaitStatus {
    let profile: LinuxSeccomp = serde_json::from_value(profile).expect("valid OCI profile");
    let compiled = compile(&profile).expect("profile compiles");
    // SAFETY: the child calls only async-signal-safe code before _exit: seccomp(2) through
    // `install`, which allocates nothing, the probe's raw system calls, and _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = match install(&compiled) {
                Ok(()) => probe(),
                Err(_) => INSTALL_FAILED,
            };
            // SAFETY: _exit ends the child at once, running no atexit handler and touching
            // no lock another thread of the parent might have held at fork.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// getppid cannot fail, so an error from it is the profile's errno.
fn getppid_errno() -> i32 {
    // SAFETY: getppid takes no arguments and touches no memory.
    let ret = unsafe { libc::syscall(libc::SYS_getppid) };
    if ret < 0 {
        Errno::last_raw()
    } else {
        0
    }
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        other => panic!("child did not exit: {other:?}"),
    }
}

#[test]
fn denying_mkdir_with_eperm_leaves_getpid_working() {
    if needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let target = dir.path().join("made");
    let mode = Mode::from_bits_truncate(0o755);
    let probe_mkdir = || errno_of(nix::unistd::mkdir(target.as_path(), mode));
    fn probe_getpid() -> i32 {
        // getpid cannot fail; a denial would show as the errno in place of a pid.
        let pid = nix::unistd::getpid().as_raw();
        if pid > 0 {
            0
        } else {
            -pid
        }
    }
    assert_eq!(
        exit_code(in_child(profile.clone(), probe_mkdir)),
        libc::EPERM
    );
    assert!(!target.exists());
    assert_eq!(exit_code(in_child(profile, probe_getpid)), 0);
    // Without the profile the same call succeeds.
    let allow_all = json!({"defaultAction": "SCMP_ACT_ALLOW"});
    assert_eq!(exit_code(in_child(allow_all, probe_mkdir)), 0);
    assert!(target.is_dir());
}

#[test]
fn errno_ret_38_gives_enosys() {
    if needs_root() {
        return;
    }
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    });
    assert_eq!(exit_code(in_child(profile, getppid_errno)), libc::ENOSYS);
}

#[test]
fn kill_process_kills_the_child_with_sigsys() {
    if needs_root() {
        return;
    }
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    fn probe() -> i32 {
        nix::unistd::getppid();
        0
    }
    match in_child(profile, probe) {
        WaitStatus::Signaled(_, Signal::SIGSYS, _) => {}
        other => panic!("expected SIGSYS, got {other:?}"),
    }
}

#[test]
fn an_argument_rule_allows_one_personality_and_denies_another() {
    if needs_root() {
        return;
    }
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["exit", "exit_group"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    fn personality(persona: u64) -> i32 {
        // SAFETY: personality takes an integer and touches no memory.
        let ret = unsafe { libc::syscall(libc::SYS_personality, persona) };
        if ret < 0 {
            Errno::last_raw()
        } else {
            0
        }
    }
    fn query() -> i32 {
        personality(0xffff_ffff)
    }
    fn set_linux32() -> i32 {
        personality(0x0008)
    }
    assert_eq!(exit_code(in_child(profile.clone(), query)), 0);
    assert_eq!(exit_code(in_child(profile, set_linux32)), libc::EPERM);
}

fn default_profile() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seccomp/default.json");
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn the_default_profile_denies_unshare_and_answers_clone3_with_enosys() {
    if needs_root() {
        return;
    }
    fn unshare() -> i32 {
        errno_of(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS))
    }
    fn clone3() -> i32 {
        // A null clone_args: without seccomp the kernel answers EINVAL.
        // SAFETY: with size 0 the kernel reads nothing through the null pointer.
        let ret = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
        if ret < 0 {
            Errno::last_raw()
        } else {
            0
        }
    }
    fn getpid() -> i32 {
        i32::from(nix::unistd::getpid().as_raw() <= 0)
    }
    assert_eq!(exit_code(in_child(default_profile(), unshare)), libc::EPERM);
    assert_eq!(exit_code(in_child(default_profile(), clone3)), libc::ENOSYS);
    assert_eq!(exit_code(in_child(default_profile(), getpid)), 0);
    // The same probes without seccomp, so the answers above are seccomp's.
    assert_eq!(
        exit_code(in_child(json!({"defaultAction": "SCMP_ACT_ALLOW"}), clone3)),
        libc::EINVAL
    );
    assert_eq!(
        exit_code(in_child(
            json!({"defaultAction": "SCMP_ACT_ALLOW"}),
            unshare
        )),
        0
    );
}

#[test]
fn a_profile_that_denies_seccomp_itself_still_loads_whole() {
    if needs_root() {
        return;
    }
    // Two distinct deny actions and seccomp(2) among the denied calls: loaded as separate
    // filters, the first would block the second.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["seccomp", "prctl"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    assert_eq!(exit_code(in_child(profile, getppid_errno)), libc::ENOSYS);
}

#[test]
fn install_sets_no_new_privs_itself_never_and_accepts_the_flags() {
    if needs_root() {
        return;
    }
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    });
    fn probe() -> i32 {
        match nix::sys::prctl::get_no_new_privs() {
            Ok(false) => 0,
            Ok(true) => 1,
            Err(errno) => errno as i32,
        }
    }
    assert_eq!(exit_code(in_child(profile, probe)), 0);
}
