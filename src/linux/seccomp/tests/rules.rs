//! Rule semantics: actions, operators, several rules per call, guards.

use serde_json::json;

use super::*;

#[test]
fn every_rule_action_returns_its_kernel_value() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["kill"], "action": "SCMP_ACT_KILL"},
            {"names": ["tkill"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["tgkill"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRAP"},
            {"names": ["gettid"], "action": "SCMP_ACT_TRACE"},
            {"names": ["getuid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["getgid"], "action": "SCMP_ACT_LOG"},
            {"names": ["geteuid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getegid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0}
        ]
    }));
    let cases = [
        ("getpid", errno(libc::EPERM)),
        ("getppid", errno(libc::ENOSYS)),
        ("kill", KILL_THREAD),
        ("tkill", KILL_THREAD),
        ("tgkill", KILL_PROCESS),
        ("ptrace", TRAP),
        ("gettid", trace(libc::EPERM as u32)),
        ("getuid", trace(7)),
        ("getgid", LOG),
        ("geteuid", ALLOW),
        ("getegid", errno(0)),
        ("read", ALLOW),
    ];
    for (name, want) in cases {
        assert_eq!(call(&c, name, [0; 6]), want, "{name}");
    }
}

#[test]
fn every_default_action_applies_to_unlisted_calls() {
    let cases = [
        (json!({"defaultAction": "SCMP_ACT_ALLOW"}), ALLOW),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO"}),
            errno(libc::EPERM),
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13}),
            errno(libc::EACCES),
        ),
        (json!({"defaultAction": "SCMP_ACT_KILL"}), KILL_THREAD),
        (
            json!({"defaultAction": "SCMP_ACT_KILL_THREAD"}),
            KILL_THREAD,
        ),
        (
            json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"}),
            KILL_PROCESS,
        ),
        (json!({"defaultAction": "SCMP_ACT_TRAP"}), TRAP),
        (json!({"defaultAction": "SCMP_ACT_TRACE"}), trace(1)),
        (json!({"defaultAction": "SCMP_ACT_LOG"}), LOG),
    ];
    for (mut json, want) in cases {
        json["syscalls"] = json!([{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]);
        if json["defaultAction"] == "SCMP_ACT_ALLOW" {
            json["syscalls"][0]["action"] = json!("SCMP_ACT_KILL_PROCESS");
        }
        let c = compile(json.clone());
        assert_eq!(call(&c, "read", [0; 6]), want, "{json}");
    }
}

/// Values whose halves straddle each other: equal high half, high half one apart with
/// the low half wrapping, and the extremes.
fn probes(v: u64) -> Vec<u64> {
    let mut out = vec![
        0,
        u64::MAX,
        v,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v ^ 0xffff_ffff,
        v ^ 0xffff_ffff_0000_0000,
        v.wrapping_add(1 << 32),
        v.wrapping_sub(1 << 32),
        (v & 0xffff_ffff_0000_0000) | 0xffff_ffff,
        v & 0xffff_ffff_0000_0000,
    ];
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn every_operator_compares_all_64_bits() {
    let values = [
        0,
        5,
        0xffff_ffff,
        0x1_0000_0000,
        0x0000_0001_0000_0005,
        0x8000_0000_0000_0000,
        0xffff_fffe_ffff_ffff,
        u64::MAX,
    ];
    type Op = (&'static str, fn(u64, u64) -> bool);
    let ops: [Op; 6] = [
        ("SCMP_CMP_NE", |a, v| a != v),
        ("SCMP_CMP_LT", |a, v| a < v),
        ("SCMP_CMP_LE", |a, v| a <= v),
        ("SCMP_CMP_EQ", |a, v| a == v),
        ("SCMP_CMP_GE", |a, v| a >= v),
        ("SCMP_CMP_GT", |a, v| a > v),
    ];
    for (op, holds) in ops {
        for v in values {
            let c = compile(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{
                    "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
                    "args": [{"index": 3, "value": v, "op": op}]
                }]
            }));
            for a in probes(v) {
                let want = if holds(a, v) { errno(99) } else { ALLOW };
                let args = [0, 0, 0, a, 0, 0];
                assert_eq!(call(&c, "personality", args), want, "{op} {a:#x} vs {v:#x}");
            }
        }
    }
}

#[test]
fn masked_eq_takes_the_mask_from_value_and_the_datum_from_value_two() {
    let mask: u64 = 0xff00_0000_0000_00f0;
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": mask, "valueTwo": 0x1200_0000_0000_0030u64,
                      "op": "SCMP_CMP_MASKED_EQ"}]
        }]
    }));
    let cases = [
        (0x1200_0000_0000_0030, true),
        (0x12ab_cdef_1234_5639, true),
        (0x1300_0000_0000_0030, false),
        (0x1200_0000_0000_0040, false),
        (0x0000_0000_0000_0030, false),
        (0, false),
    ];
    for (a, denied) in cases {
        let want = if denied { errno(libc::EPERM) } else { ALLOW };
        assert_eq!(call(&c, "personality", arg0(a)), want, "{a:#x}");
    }

    // A missing valueTwo is 0: "no bit of the mask set", as containerd's clone rule uses.
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0x7e02_0000u64, "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    assert_eq!(call(&c, "clone", arg0(0x0001_1200)), ALLOW);
    assert_eq!(call(&c, "clone", arg0(0x1000_0000)), errno(libc::EPERM));
}

#[test]
fn several_rules_for_one_call_each_match() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 0, "value": 0x100, "op": "SCMP_CMP_GE"}]}
        ]
    }));
    assert_eq!(call(&c, "personality", arg0(0)), ALLOW);
    assert_eq!(call(&c, "personality", arg0(8)), ALLOW);
    assert_eq!(call(&c, "personality", arg0(4)), errno(libc::EPERM));
    assert_eq!(call(&c, "personality", arg0(0x1234)), errno(libc::EINVAL));
}

#[test]
fn comparisons_on_distinct_arguments_all_hold_and_on_one_argument_any_holds() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["tkill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    assert_eq!(call(&c, "kill", [1, 9, 0, 0, 0, 0]), errno(libc::EPERM));
    assert_eq!(call(&c, "kill", [1, 15, 0, 0, 0, 0]), ALLOW);
    assert_eq!(call(&c, "kill", [2, 9, 0, 0, 0, 0]), ALLOW);
    // runc's reading of a repeated argument: one rule per comparison.
    assert_eq!(call(&c, "tkill", arg0(1)), errno(libc::EPERM));
    assert_eq!(call(&c, "tkill", arg0(2)), errno(libc::EPERM));
    assert_eq!(call(&c, "tkill", arg0(3)), ALLOW);
}

#[test]
fn default_errno_with_an_allow_list() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "syscalls": [{"names": ["read", "write", "openat", "exit_group"], "action": "SCMP_ACT_ALLOW"}]
    }));
    for name in ["read", "write", "openat", "exit_group"] {
        assert_eq!(call(&c, name, [0; 6]), ALLOW, "{name}");
    }
    for name in ["mkdir", "mount", "open", "getpid"] {
        assert_eq!(call(&c, name, [0; 6]), errno(libc::EPERM), "{name}");
    }
}

#[test]
fn an_errno_rule_inside_an_allow_by_default_profile() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    }));
    assert_eq!(call(&c, "mkdir", [0; 6]), errno(libc::EPERM));
    assert_eq!(call(&c, "mkdirat", [0; 6]), errno(libc::EPERM));
    assert_eq!(call(&c, "getpid", [0; 6]), ALLOW);
    // Far above every rule and still allowed: no ENOSYS stub under a permissive default.
    assert_eq!(call_nr(&c, 460), ALLOW);
}

#[test]
fn calls_newer_than_any_named_get_enosys_when_the_default_denies() {
    let rules = json!([
        {"names": ["read", "openat"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    ]);
    let highest = nr(TargetArch::X86_64, "clone3");
    let cases = [
        ("SCMP_ACT_ERRNO", errno(libc::EPERM), errno(libc::ENOSYS)),
        ("SCMP_ACT_KILL_PROCESS", KILL_PROCESS, errno(libc::ENOSYS)),
        ("SCMP_ACT_TRAP", TRAP, errno(libc::ENOSYS)),
        ("SCMP_ACT_LOG", LOG, LOG),
        ("SCMP_ACT_TRACE", trace(1), trace(1)),
    ];
    for (default, below, above) in cases {
        let c = compile(json!({"defaultAction": default, "syscalls": rules.clone()}));
        assert_eq!(call(&c, "mkdir", [0; 6]), below, "{default} mkdir");
        assert_eq!(call_nr(&c, highest - 1), below, "{default} below");
        assert_eq!(
            call(&c, "clone3", [0; 6]),
            errno(libc::ENOSYS),
            "{default} clone3"
        );
        assert_eq!(call_nr(&c, highest + 1), above, "{default} above");
        assert_eq!(call_nr(&c, 0x3fff_ffff), above, "{default} far above");
    }
    // Names skipped as unknown do not raise the bar.
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "not_a_syscall"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(call(&c, "read", [0; 6]), ALLOW);
    assert_eq!(call(&c, "write", [0; 6]), errno(libc::ENOSYS));
}

#[test]
fn overlapping_rules_resolve_to_the_most_restrictive_then_the_first_listed() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_LOG"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11,
             "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_GE"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 12,
             "args": [{"index": 0, "value": 20, "op": "SCMP_CMP_GE"}]},
            {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 0, "value": 30, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    assert_eq!(call(&c, "personality", arg0(5)), LOG);
    assert_eq!(call(&c, "personality", arg0(15)), errno(11));
    assert_eq!(call(&c, "personality", arg0(25)), errno(11));
    assert_eq!(call(&c, "personality", arg0(30)), KILL_PROCESS);
}

#[test]
fn a_rule_repeating_the_default_is_dropped_as_runc_does() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW"}
        ]
    }));
    assert_eq!(call(&c, "personality", arg0(5)), ALLOW);
    assert_eq!(call(&c, "personality", arg0(6)), ALLOW);
}

#[test]
fn long_dispatch_tables_reach_every_target() {
    // Every x86_64 call with its own errno: hundreds of distinct targets, so the dispatch
    // spans several chunks.
    let arch = TargetArch::X86_64;
    let calls: Vec<(String, u32)> = syscalls::x86_64::Sysno::iter()
        .map(|s| (s.name().to_string(), s.id() as u32))
        .collect();
    let rules: Vec<_> = calls
        .iter()
        .map(|(name, nr)| json!({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": nr + 1000}))
        .collect();
    let c = compile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
    assert!(c.skipped_syscalls().is_empty());
    for (name, nr) in &calls {
        let got = interp::run_all(&c.programs, &data(arch, *nr, [0; 6]));
        assert_eq!(got, errno((nr + 1000) as i32), "{name}");
    }
    assert_eq!(call_nr(&c, 1000), ALLOW);
}

#[test]
fn aarch64_profiles_use_the_aarch64_table_and_arch() {
    let arch = TargetArch::Aarch64;
    let c = compile_arch(
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        }),
        arch,
    );
    assert_eq!(c.skipped_syscalls(), ["mkdir"]);
    let run = |nr: u32, arch: u32| {
        let d = Data {
            arch,
            ..data(TargetArch::Aarch64, nr, [0; 6])
        };
        interp::run_all(&c.programs, &d)
    };
    let mkdirat = nr(arch, "mkdirat");
    assert_eq!(run(mkdirat, arch.audit_arch()), errno(libc::EPERM));
    assert_eq!(run(nr(arch, "getpid"), arch.audit_arch()), ALLOW);
    // No x32 on aarch64: the bit means nothing special here.
    assert_eq!(run(X32_BIT | 1, arch.audit_arch()), ALLOW);
    assert_eq!(run(mkdirat, TargetArch::X86_64.audit_arch()), KILL_PROCESS);
}
