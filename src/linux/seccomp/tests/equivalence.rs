//! The one-program layout gives what stacked filters would: one filter per distinct rule
//! action (its rules → that action, anything else → ALLOW), installed so that the first
//! listed action is loaded last, plus a default filter (every rule → ALLOW, anything else
//! → the default). The kernel runs them all and keeps the most restrictive result.

use serde_json::json;

use super::default_profile::DEFAULT_JSON;
use super::*;
use crate::linux::seccomp::translate::action_value;

/// The stacked-filter layout of `json`, each filter compiled on its own.
fn stacked(json: &Value) -> Vec<Vec<libc::sock_filter>> {
    let p = profile(json.clone());
    let default = action_value(p.default_action(), p.default_errno_ret(), "").expect("valid");
    let rules: Vec<_> = p.syscalls().clone().unwrap_or_default();
    let value = |r: &oci_spec::runtime::LinuxSyscall| {
        action_value(r.action(), r.errno_ret(), "").expect("valid")
    };

    let mut actions: Vec<u32> = Vec::new();
    for rule in &rules {
        let v = value(rule);
        if v != default && v != ALLOW && !actions.contains(&v) {
            actions.push(v);
        }
    }
    let mut programs = Vec::new();
    for action in actions.iter().rev() {
        let mine: Vec<_> = rules
            .iter()
            .filter(|r| value(r) == *action)
            .map(|r| serde_json::to_value(r).expect("serializes"))
            .collect();
        let mut f = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": mine});
        f["architectures"] = json["architectures"].clone();
        programs.extend(compile(f).programs);
    }
    let mut all = Vec::new();
    for rule in rules.iter().filter(|r| value(r) != default) {
        let mut r = serde_json::to_value(rule).expect("serializes");
        r["action"] = json!("SCMP_ACT_ALLOW");
        all.push(r);
    }
    let mut d = json.clone();
    d["syscalls"] = Value::Array(all);
    programs.extend(compile(d).programs);
    programs
}

fn assert_equivalent(json: Value, names: &[&str], values: &[u64]) {
    let single = compile(json.clone());
    let stacked = stacked(&json);
    assert!(stacked.len() > 1);
    for arch in [TargetArch::X86_64, TargetArch::X86, TargetArch::X32] {
        let mut numbers: Vec<u32> = names.iter().map(|n| nr(arch, n)).collect();
        numbers.extend([450, 0x3fff_ffff, X32_BIT | 2]);
        for &number in &numbers {
            for &a in values {
                for &b in values {
                    let d = data(arch, number, [a, b, 0, 0, 0, 0]);
                    let one = interp::run_all(&single.programs, &d);
                    let many = interp::run_all(&stacked, &d);
                    assert_eq!(one, many, "{arch:?} nr {number:#x} args {a:#x} {b:#x}");
                }
            }
        }
    }
}

#[test]
fn overlapping_rules_equal_the_stacked_filter_layout() {
    let json = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["personality", "kill"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_LE"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_GE"}]},
            {"names": ["personality", "tkill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
             "args": [{"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_LT"}]},
            {"names": ["kill"], "action": "SCMP_ACT_TRAP",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kill", "tkill"], "action": "SCMP_ACT_LOG",
             "args": [{"index": 0, "value": 0xff, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["tkill"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_NE"},
                      {"index": 1, "value": 3, "op": "SCMP_CMP_GT"}]},
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 4}
        ]
    });
    let values = [
        0,
        1,
        3,
        4,
        5,
        7,
        9,
        10,
        11,
        0x10,
        0x110,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX,
    ];
    let names = [
        "personality",
        "kill",
        "tkill",
        "read",
        "write",
        "getpid",
        "mkdir",
    ];
    assert_equivalent(json, &names, &values);
}

#[test]
fn the_default_profile_equals_the_stacked_filter_layout() {
    let json: Value = serde_json::from_str(DEFAULT_JSON).expect("fixture is JSON");
    let values = [
        0,
        8,
        0x11,
        0x20000,
        0x1234,
        0xffff_ffff,
        0x1000_0011,
        u64::MAX,
    ];
    let names = ["personality", "clone", "clone3", "read", "unshare", "mount"];
    assert_equivalent(json, &names, &values);
}
