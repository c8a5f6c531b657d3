//! Architectures: each listed convention filtered with its own numbers, x32 inside x86_64,
//! i386's multiplexers, 32-bit argument comparisons, conventions skipped or unknown.

use serde_json::json;

use super::*;
use crate::linux::seccomp::SkippedArch;

const ALL_X86: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

fn x86(json: Value) -> CompiledSeccomp {
    compile_arch(json, TargetArch::X86_64)
}

/// The answer for the call `name` in convention `arch`.
fn named(c: &CompiledSeccomp, arch: TargetArch, name: &str, args: [u64; 6]) -> u32 {
    call_in(c, arch, nr(arch, name), args)
}

#[test]
fn each_listed_convention_is_filtered_with_its_own_numbers() {
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ALL_X86,
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES}]
    }));
    let denied = errno(libc::EACCES);
    for arch in [TargetArch::X86_64, TargetArch::X86, TargetArch::X32] {
        assert_eq!(named(&c, arch, "mkdir", [0; 6]), denied, "{arch:?} mkdir");
        assert_eq!(named(&c, arch, "getpid", [0; 6]), ALLOW, "{arch:?} getpid");
    }
    // The numbers differ: i386's mkdir (39) is x86_64's getpid, x86_64's mkdir (83) is
    // i386's select.
    assert_eq!(nr(TargetArch::X86, "mkdir"), 39);
    assert_eq!(call_in(&c, TargetArch::X86_64, 39, [0; 6]), ALLOW);
    assert_eq!(call_in(&c, TargetArch::X86, 83, [0; 6]), ALLOW);
    assert_eq!(call_in(&c, TargetArch::X86, 39, [0; 6]), denied);
}

#[test]
fn a_listed_convention_gets_the_default_for_calls_the_profile_does_not_name() {
    for (default, want) in [
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO"}),
            errno(libc::EPERM),
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": libc::EIO}),
            errno(libc::EIO),
        ),
        (
            json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"}),
            KILL_PROCESS,
        ),
        (json!({"defaultAction": "SCMP_ACT_TRAP"}), TRAP),
        (json!({"defaultAction": "SCMP_ACT_LOG"}), LOG),
    ] {
        let mut profile = default.clone();
        profile["architectures"] = json!(ALL_X86);
        profile["syscalls"] =
            json!([{"names": ["getpid", "exit_group"], "action": "SCMP_ACT_ALLOW"}]);
        let c = x86(profile);
        for arch in [TargetArch::X86, TargetArch::X32] {
            assert_eq!(
                named(&c, arch, "getpid", [0; 6]),
                ALLOW,
                "{default} {arch:?}"
            );
            assert_eq!(
                named(&c, arch, "exit_group", [0; 6]),
                ALLOW,
                "{default} {arch:?}"
            );
            assert_eq!(named(&c, arch, "mkdir", [0; 6]), want, "{default} {arch:?}");
        }
    }
}

#[test]
fn a_name_one_convention_lacks_is_ignored_there_only() {
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ALL_X86,
        "syscalls": [{"names": ["_llseek", "mmap2", "arch_prctl", "set_thread_area", "exit_group", "no_such_call"],
                      "action": "SCMP_ACT_ALLOW"}]
    }));
    let eperm = errno(libc::EPERM);
    assert_eq!(named(&c, TargetArch::X86, "_llseek", [0; 6]), ALLOW);
    assert_eq!(named(&c, TargetArch::X86, "mmap2", [0; 6]), ALLOW);
    assert_eq!(named(&c, TargetArch::X86_64, "arch_prctl", [0; 6]), ALLOW);
    assert_eq!(named(&c, TargetArch::X32, "arch_prctl", [0; 6]), ALLOW);
    // i386's _llseek number (140) is getpriority on x86_64: not allowed there.
    assert_eq!(call_in(&c, TargetArch::X86_64, 140, [0; 6]), eperm);
    // set_thread_area exists on x86_64 and i386, not on x32.
    assert_eq!(
        named(&c, TargetArch::X86_64, "set_thread_area", [0; 6]),
        ALLOW
    );
    assert_eq!(TargetArch::X32.syscall_number("set_thread_area"), None);
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT | 205, [0; 6]), eperm);
    // Only names no filtered convention knows are reported.
    assert_eq!(c.skipped_syscalls(), ["no_such_call"]);
}

#[test]
fn x32_calls_are_x86_64_numbers_with_bit_30_and_their_own_from_512() {
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "getpid", "execve", "rt_sigaction"], "action": "SCMP_ACT_ALLOW"}]
    }));
    let eperm = errno(libc::EPERM);
    assert_eq!(nr(TargetArch::X32, "getpid"), X32_BIT | 39);
    assert_eq!(nr(TargetArch::X32, "execve"), X32_BIT | 520);
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT, [0; 6]), ALLOW, "read");
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT | 39, [0; 6]), ALLOW);
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT | 520, [0; 6]), ALLOW);
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT | 512, [0; 6]), ALLOW);
    // x86_64's execve number with the bit is not x32's execve.
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT | 59, [0; 6]), eperm);
    assert_eq!(call_in(&c, TargetArch::X32, X32_BIT | 83, [0; 6]), eperm);
    // Each convention has its own ENOSYS threshold: above x32's highest (520) and above
    // x86_64's (59).
    assert_eq!(
        call_in(&c, TargetArch::X32, X32_BIT | 521, [0; 6]),
        errno(libc::ENOSYS)
    );
    assert_eq!(
        call_in(&c, TargetArch::X86_64, 60, [0; 6]),
        errno(libc::ENOSYS)
    );
    assert_eq!(call_in(&c, TargetArch::X86_64, 59, [0; 6]), ALLOW);
    assert_eq!(
        call_in(&c, TargetArch::X86_64, 512, [0; 6]),
        errno(libc::ENOSYS)
    );
}

#[test]
fn x32_calls_get_enosys_unless_x32_is_filtered() {
    let no_x32 = HostFacts {
        config: Some("CONFIG_IA32_EMULATION=y\n# CONFIG_X86_X32_ABI is not set\n".into()),
        ..HostFacts::default()
    };
    for default in [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_LOG",
    ] {
        let profile = |archs: &[&str]| {
            json!({
                "defaultAction": default,
                "architectures": archs,
                "syscalls": [{"names": ["read", "mkdir"], "action": "SCMP_ACT_TRAP"}]
            })
        };
        let unlisted = x86(profile(&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]));
        let skipped = checked(
            compile_with(profile(&ALL_X86), TargetArch::X86_64, &no_x32).expect("compiles"),
        );
        for c in [&unlisted, &skipped] {
            for number in [0, 83, 0x200, 0x3fff_ffff] {
                assert_eq!(
                    call_nr(c, X32_BIT | number),
                    errno(libc::ENOSYS),
                    "{default} x32 {number}"
                );
            }
            assert_eq!(call_nr(c, u32::MAX), errno(libc::ENOSYS), "{default} nr -1");
            assert_eq!(call(c, "mkdir", [0; 6]), TRAP, "{default} native mkdir");
        }
        assert!(unlisted.skipped_architectures().is_empty());
        assert_eq!(
            skipped.skipped_architectures(),
            [SkippedArch {
                name: "SCMP_ARCH_X32".into(),
                reason: "the kernel is built without x32 support (CONFIG_X86_X32_ABI)".into()
            }]
        );
        assert_eq!(
            skipped.skipped_architectures()[0].to_string(),
            "SCMP_ARCH_X32 skipped: the kernel is built without x32 support (CONFIG_X86_X32_ABI)"
        );
    }
}

#[test]
fn conventions_the_profile_does_not_list_are_killed() {
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(named(&c, TargetArch::X86, "getpid", [0; 6]), KILL_PROCESS);
    let listed = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ALL_X86,
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(named(&listed, TargetArch::X86, "getpid", [0; 6]), ALLOW);
    for c in [&c, &listed] {
        for arch in [
            TargetArch::Aarch64.audit_arch(),
            TargetArch::Arm.audit_arch(),
            0,
        ] {
            let d = Data {
                arch,
                ..data(TargetArch::X86_64, 3, [0; 6])
            };
            assert_eq!(interp::run_all(&c.programs, &d), KILL_PROCESS, "{arch:#x}");
        }
    }
}

#[test]
fn the_native_convention_is_filtered_even_when_not_listed() {
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(call(&c, "mkdir", [0; 6]), errno(libc::EPERM));
    assert_eq!(
        named(&c, TargetArch::X86, "mkdir", [0; 6]),
        errno(libc::EPERM)
    );
    let native = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_NATIVE"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(call(&native, "mkdir", [0; 6]), errno(libc::EPERM));
    assert_eq!(
        named(&native, TargetArch::X86, "getpid", [0; 6]),
        KILL_PROCESS
    );
}

#[test]
fn i386_socket_and_ipc_calls_through_their_multiplexers_follow_the_same_rules() {
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ALL_X86,
        "syscalls": [
            {"names": ["socket", "semget"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EAFNOSUPPORT},
            {"names": ["connect"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    let denied = errno(libc::EAFNOSUPPORT);
    let i386 = TargetArch::X86;
    assert_eq!(named(&c, i386, "socket", [0; 6]), denied);
    assert_eq!(named(&c, i386, "socketcall", arg0(1)), denied, "SYS_SOCKET");
    assert_eq!(named(&c, i386, "socketcall", arg0(2)), ALLOW, "SYS_BIND");
    // A rule with argument checks decides the direct call only.
    assert_eq!(named(&c, i386, "connect", arg0(3)), errno(libc::EPERM));
    assert_eq!(named(&c, i386, "socketcall", arg0(3)), ALLOW, "SYS_CONNECT");
    // ipc: the call is in the low 16 bits, a version above them.
    assert_eq!(named(&c, i386, "ipc", arg0(2)), denied, "SEMGET");
    assert_eq!(
        named(&c, i386, "ipc", arg0(0x1_0002)),
        denied,
        "SEMGET, version 1"
    );
    assert_eq!(named(&c, i386, "ipc", arg0(1)), ALLOW, "SEMOP");
    // x86_64 has no multiplexer: its socket is its own call.
    assert_eq!(named(&c, TargetArch::X86_64, "socket", [0; 6]), denied);

    // In an allow-list, allowing socket allows socketcall(SYS_SOCKET) and nothing more;
    // `send` and `recv` exist on i386 only through socketcall and are not reported.
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ALL_X86,
        "syscalls": [{"names": ["socket", "send"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(named(&c, i386, "socketcall", arg0(1)), ALLOW);
    assert_eq!(named(&c, i386, "socketcall", arg0(9)), ALLOW, "SYS_SEND");
    assert_eq!(named(&c, i386, "socketcall", arg0(3)), errno(libc::EPERM));
    assert!(
        c.skipped_syscalls().is_empty(),
        "{:?}",
        c.skipped_syscalls()
    );

    // socketcall (102) is numbered above every other call named here: the ENOSYS rule for
    // newer calls must not hide it.
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ALL_X86,
        "syscalls": [{"names": ["read", "send"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(named(&c, i386, "socketcall", arg0(9)), ALLOW, "SYS_SEND");
    assert_eq!(named(&c, i386, "socketcall", arg0(10)), errno(libc::EPERM));
    assert_eq!(call_in(&c, i386, 103, [0; 6]), errno(libc::ENOSYS));
}

#[test]
fn thirty_two_bit_conventions_compare_the_low_32_bits() {
    let rule = |op: &str, value: u64| {
        x86(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ALL_X86,
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 0, "value": value, "op": op}]}]
        }))
    };
    let eperm = errno(libc::EPERM);
    let c = rule("SCMP_CMP_EQ", 0x1_0000_0008);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(8)), eperm);
    assert_eq!(named(&c, TargetArch::X32, "personality", arg0(8)), eperm);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(9)), ALLOW);
    // x86_64 compares all 64 bits.
    assert_eq!(named(&c, TargetArch::X86_64, "personality", arg0(8)), ALLOW);
    let c = rule("SCMP_CMP_GT", 7);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(8)), eperm);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(7)), ALLOW);
    let c = rule("SCMP_CMP_LE", 7);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(7)), eperm);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(8)), ALLOW);
    let c = rule("SCMP_CMP_LT", 7);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(6)), eperm);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(7)), ALLOW);
    let c = rule("SCMP_CMP_GE", 7);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(7)), eperm);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(6)), ALLOW);
    let c = rule("SCMP_CMP_NE", 7);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(6)), eperm);
    assert_eq!(named(&c, TargetArch::X86, "personality", arg0(7)), ALLOW);
    let c = x86(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ALL_X86,
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 0xff, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    assert_eq!(
        named(&c, TargetArch::X86, "personality", arg0(0x108)),
        eperm
    );
    assert_eq!(
        named(&c, TargetArch::X86, "personality", arg0(0x109)),
        ALLOW
    );
}

#[test]
fn a_convention_this_kernel_cannot_run_is_skipped_and_named() {
    let no_ia32 = HostFacts {
        cmdline: "console=ttyS0 ia32_emulation=0".into(),
        vsyscall32: true,
        ..HostFacts::default()
    };
    let c = checked(
        compile_with(
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS",
                                  "SCMP_ARCH_X86", "SCMP_ARCH_MIPS"],
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
            }),
            TargetArch::X86_64,
            &no_ia32,
        )
        .expect("compiles"),
    );
    let names: Vec<String> = c
        .skipped_architectures()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "SCMP_ARCH_X86 skipped: IA-32 emulation is off (ia32_emulation= on the kernel command line)",
            "SCMP_ARCH_ARM skipped: this is an x86_64 kernel",
            "SCMP_ARCH_MIPS skipped: this is an x86_64 kernel",
        ]
    );
    assert_eq!(named(&c, TargetArch::X86, "getpid", [0; 6]), KILL_PROCESS);
    assert_eq!(call(&c, "mkdir", [0; 6]), errno(libc::EPERM));
}

#[test]
fn an_unknown_architecture_is_an_error_naming_it() {
    let e = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]
    }))
    .expect_err("no such architecture");
    assert!(e.to_string().contains("SCMP_ARCH_VAX"), "{e}");
}

#[test]
fn arm_beside_aarch64_uses_the_arm_table_and_its_private_calls() {
    let c = compile_arch(
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "syscalls": [{"names": ["mkdir", "mkdirat", "cacheflush", "set_tls", "getpid"],
                          "action": "SCMP_ACT_ALLOW"}]
        }),
        TargetArch::Aarch64,
    );
    let arm = TargetArch::Arm;
    assert_eq!(named(&c, arm, "mkdir", [0; 6]), ALLOW);
    assert_eq!(call_in(&c, arm, 0x0f_0002, [0; 6]), ALLOW, "cacheflush");
    assert_eq!(call_in(&c, arm, 0x0f_0005, [0; 6]), ALLOW, "set_tls");
    assert_eq!(named(&c, arm, "getpid", [0; 6]), ALLOW);
    assert_eq!(named(&c, arm, "rmdir", [0; 6]), errno(libc::EPERM));
    assert_eq!(named(&c, TargetArch::Aarch64, "mkdirat", [0; 6]), ALLOW);
    // aarch64 has no mkdir: its number 39 is umount2 there, not allowed.
    assert_eq!(
        call_in(&c, TargetArch::Aarch64, 39, [0; 6]),
        errno(libc::EPERM)
    );
    assert!(
        c.skipped_syscalls().is_empty(),
        "{:?}",
        c.skipped_syscalls()
    );
    assert_eq!(named(&c, TargetArch::X86, "getpid", [0; 6]), KILL_PROCESS);
}

#[test]
fn every_x86_call_of_every_convention_reaches_its_own_rule() {
    // One errno per call number in each convention: hundreds of targets per section, so
    // every section's dispatch spans several levels.
    let mut rules = Vec::new();
    for name in syscalls::x86::Sysno::iter().map(|s| s.name()) {
        rules.push(json!({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}));
    }
    let c = x86(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ALL_X86, "syscalls": rules}),
    );
    for s in syscalls::x86::Sysno::iter() {
        assert_eq!(
            call_in(&c, TargetArch::X86, s.id() as u32, [0; 6]),
            errno(1),
            "{}",
            s.name()
        );
    }
    assert_eq!(call_in(&c, TargetArch::X86, 1000, [0; 6]), ALLOW);
}
