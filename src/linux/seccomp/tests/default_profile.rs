//! containerd's default profile (tests/fixtures/seccomp/default.json, unprivileged).

use super::*;

pub(crate) const DEFAULT_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seccomp/default.json"
));

fn default_profile() -> CompiledSeccomp {
    compile(serde_json::from_str(DEFAULT_JSON).expect("fixture is JSON"))
}

#[test]
fn default_profile_compiles_well_under_the_limit() {
    let c = default_profile();
    println!(
        "containerd default profile: {} BPF instructions, {} names skipped on x86_64",
        c.instruction_count(),
        c.skipped_syscalls().len()
    );
    assert!(c.instruction_count() < 1024, "{}", c.instruction_count());
    // 32-bit-only names are skipped on x86_64; the common ones are all known.
    for name in ["_llseek", "mmap2", "chown32", "socketcall"] {
        assert!(c.skipped_syscalls().iter().any(|s| s == name), "{name}");
    }
    for name in ["read", "clone3", "personality", "arch_prctl"] {
        assert!(!c.skipped_syscalls().iter().any(|s| s == name), "{name}");
    }
}

#[test]
fn default_profile_decides_any_call_in_a_few_dozen_instructions() {
    let c = default_profile();
    let [program] = c.programs.as_slice() else {
        panic!("one program")
    };
    let arch = TargetArch::X86_64;
    let worst = (0..500)
        .map(|n| interp::run_counting(program, &data(arch, n, [0; 6])).1)
        .max()
        .unwrap_or_default();
    println!("containerd default profile: at most {worst} instructions per call");
    assert!(worst <= 32, "{worst}");
}

#[test]
fn default_profile_allows_ordinary_calls() {
    let c = default_profile();
    for name in [
        "read",
        "write",
        "openat",
        "close",
        "execve",
        "exit_group",
        "mmap",
        "futex",
    ] {
        assert_eq!(call(&c, name, [0; 6]), ALLOW, "{name}");
    }
}

#[test]
fn default_profile_denies_privileged_calls_with_eperm() {
    let c = default_profile();
    for name in [
        "unshare",
        "mount",
        "keyctl",
        "setns",
        "bpf",
        "reboot",
        "init_module",
    ] {
        assert_eq!(call(&c, name, [0; 6]), errno(libc::EPERM), "{name}");
    }
}

#[test]
fn default_profile_gives_enosys_to_clone3_and_newer_calls() {
    let c = default_profile();
    assert_eq!(call(&c, "clone3", [0; 6]), errno(libc::ENOSYS));
    let highest = TargetArch::X86_64
        .syscall_number("futex_waitv")
        .expect("x86_64 call");
    assert_eq!(call_nr(&c, highest + 1), errno(libc::ENOSYS));
    assert_eq!(call_nr(&c, X32_BIT | 1), errno(libc::ENOSYS));
}

#[test]
fn default_profile_checks_personality_and_clone_arguments() {
    let c = default_profile();
    for persona in [0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(
            call(&c, "personality", arg0(persona)),
            ALLOW,
            "{persona:#x}"
        );
    }
    assert_eq!(call(&c, "personality", arg0(0x1234)), errno(libc::EPERM));
    assert_eq!(
        call(&c, "personality", arg0(0x1_0000_0000)),
        errno(libc::EPERM)
    );
    // fork-like clone passes; namespace flags do not.
    let sigchld = libc::SIGCHLD as u64;
    assert_eq!(call(&c, "clone", arg0(sigchld)), ALLOW);
    let newuser = libc::CLONE_NEWUSER as u64 | sigchld;
    assert_eq!(call(&c, "clone", arg0(newuser)), errno(libc::EPERM));
}
