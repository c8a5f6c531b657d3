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
        "containerd default profile: {} BPF instructions for x86_64, i386 and x32, names no \
         convention knows: {:?}",
        c.instruction_count(),
        c.skipped_syscalls()
    );
    assert!(c.instruction_count() < 2048, "{}", c.instruction_count());
    // i386-only names apply to i386 and are not reported as unknown.
    for name in [
        "read",
        "clone3",
        "personality",
        "arch_prctl",
        "_llseek",
        "mmap2",
        "chown32",
        "socketcall",
    ] {
        assert!(!c.skipped_syscalls().iter().any(|s| s == name), "{name}");
    }
}

#[test]
fn default_profile_decides_any_call_in_a_few_dozen_instructions() {
    let c = default_profile();
    let [program] = c.programs.as_slice() else {
        panic!("one program")
    };
    for (arch, base) in [
        (TargetArch::X86_64, 0),
        (TargetArch::X86, 0),
        (TargetArch::X32, X32_BIT),
    ] {
        let worst = (0..600)
            .map(|n| interp::run_counting(program, &data(arch, base | n, [0; 6])).1)
            .max()
            .unwrap_or_default();
        println!("containerd default profile: at most {worst} instructions per {arch:?} call");
        assert!(worst <= 36, "{arch:?}: {worst}");
    }
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
    // Each convention's threshold is its own highest named call; x32's is one of its
    // own numbers above 512 (as under runc).
    let i386 = TargetArch::X86;
    let above = nr(i386, "futex_waitv") + 1;
    assert_eq!(call_in(&c, i386, above, [0; 6]), errno(libc::ENOSYS));
    assert_eq!(
        call_in(&c, TargetArch::X32, X32_BIT | 548, [0; 6]),
        errno(libc::ENOSYS)
    );
    for arch in [i386, TargetArch::X32] {
        let clone3 = nr(arch, "clone3");
        assert_eq!(
            call_in(&c, arch, clone3, [0; 6]),
            errno(libc::ENOSYS),
            "{arch:?}"
        );
    }
}

#[test]
fn default_profile_filters_i386_and_x32_with_their_own_numbers() {
    let c = default_profile();
    let eperm = errno(libc::EPERM);
    for arch in [TargetArch::X86, TargetArch::X32] {
        for name in ["read", "write", "openat", "execve", "exit_group", "getpid"] {
            assert_eq!(
                call_in(&c, arch, nr(arch, name), [0; 6]),
                ALLOW,
                "{arch:?} {name}"
            );
        }
        for name in ["unshare", "mount", "keyctl"] {
            assert_eq!(
                call_in(&c, arch, nr(arch, name), [0; 6]),
                eperm,
                "{arch:?} {name}"
            );
        }
        let personality = nr(arch, "personality");
        assert_eq!(call_in(&c, arch, personality, arg0(8)), ALLOW, "{arch:?}");
        assert_eq!(
            call_in(&c, arch, personality, arg0(0x1234)),
            eperm,
            "{arch:?}"
        );
    }
    for name in ["_llseek", "mmap2", "socketcall", "set_thread_area"] {
        let i386 = TargetArch::X86;
        assert_eq!(call_in(&c, i386, nr(i386, name), [0; 6]), ALLOW, "{name}");
    }
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
