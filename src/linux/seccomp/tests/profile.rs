//! Profile-level fields: what is rejected and how, flags, skipped names, size, features.

use serde_json::json;

use super::*;
use crate::linux::seccomp::features;

fn error(json: Value) -> String {
    match try_compile(json) {
        Ok(c) => panic!("compiled to {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn notify_is_rejected_by_name() {
    let e = error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    assert!(
        e.contains("SCMP_ACT_NOTIFY") && e.contains("syscalls[0] (mkdir)"),
        "{e}"
    );
    let e = error(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
    assert!(
        e.contains("SCMP_ACT_NOTIFY") && e.contains("defaultAction"),
        "{e}"
    );
}

#[test]
fn listener_path_is_rejected_by_name() {
    let e = error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "x"
    }));
    assert!(e.contains("listenerPath /run/agent.sock"), "{e}");
}

#[test]
fn unknown_actions_operators_and_flags_are_errors_naming_them() {
    // The OCI types refuse them when the spec is read, naming the value.
    let parse = |json: Value| match serde_json::from_value::<LinuxSeccomp>(json) {
        Ok(p) => panic!("parsed {p:?}"),
        Err(e) => e.to_string(),
    };
    let e = parse(json!({"defaultAction": "SCMP_ACT_EXPLODE"}));
    assert!(e.contains("SCMP_ACT_EXPLODE"), "{e}");
    let e = parse(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]
    }));
    assert!(e.contains("SCMP_CMP_ALMOST"), "{e}");
    let e =
        parse(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]}));
    assert!(e.contains("SECCOMP_FILTER_FLAG_FAST"), "{e}");
    // Known to the spec but meaningless without a listener.
    let e = error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    }));
    assert!(e.contains("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"), "{e}");
}

#[test]
fn bad_argument_index_and_errno_are_rejected() {
    let e = error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert!(
        e.contains("syscalls[0] (kill)") && e.contains("index 6"),
        "{e}"
    );
    // Checked even when no name of the entry is known.
    let e = error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["nope"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert!(e.contains("index 9"), "{e}");
    let e = error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]
    }));
    assert!(e.contains("errnoRet 70000"), "{e}");
    let e = error(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536}));
    assert!(e.contains("defaultAction") && e.contains("65536"), "{e}");
}

#[test]
fn errno_ret_is_ignored_where_the_action_has_no_data() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS", "errnoRet": 5}]
    }));
    assert_eq!(call(&c, "kill", [0; 6]), KILL_PROCESS);
}

#[test]
fn unknown_names_are_skipped_and_listed_once() {
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "_llseek", "not_a_syscall"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["not_a_syscall", "write", ""], "action": "SCMP_ACT_ALLOW"}
        ]
    }));
    assert_eq!(c.skipped_syscalls(), ["_llseek", "not_a_syscall", ""]);
    assert_eq!(call(&c, "write", [0; 6]), ALLOW);
}

#[test]
fn flags_become_seccomp_flags() {
    let c = compile(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert_eq!(c.flags, 0);
    let c = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_TSYNC"]
    }));
    assert_eq!(
        c.flags,
        libc::SECCOMP_FILTER_FLAG_LOG
            | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            | libc::SECCOMP_FILTER_FLAG_TSYNC
    );
}

#[test]
fn an_empty_profile_is_one_small_program() {
    let c = compile(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert_eq!(c.programs.len(), 1);
    // arch load, check and jump to the section, kill; nr load, x32 guard + ENOSYS, default.
    assert_eq!(c.instruction_count(), 8);
    assert_eq!(call(&c, "read", [0; 6]), ALLOW);
}

#[test]
fn a_profile_over_the_kernel_limit_is_a_clear_error() {
    let rules: Vec<_> = (0..900u64)
        .map(|v| {
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let e = try_compile(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules}))
        .expect_err("over 4096 instructions");
    match &e {
        SeccompError::TooLarge { instructions } => assert!(*instructions > 4096),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("at most 4096"), "{e}");

    // Just under the limit still compiles and every rule still matches.
    let rules: Vec<_> = (0..800u64)
        .map(|v| {
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": v * 3, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let c = compile(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules}));
    assert!(c.instruction_count() <= 4096);
    for v in [0u64, 3, 1500, 2397] {
        assert_eq!(call(&c, "personality", arg0(v)), ALLOW, "{v}");
    }
    assert_eq!(call(&c, "personality", arg0(1)), errno(libc::EPERM));
}

#[test]
fn features_list_exactly_what_compiles() {
    let f = features();
    assert_eq!(*f.enabled(), Some(true));
    let actions = f.actions().clone().unwrap_or_default();
    assert_eq!(actions.len(), 8);
    for action in &actions {
        let json = json!({"defaultAction": "SCMP_ACT_ALLOW",
                          "syscalls": [{"names": ["kill"], "action": action}]});
        try_compile(json).unwrap_or_else(|e| panic!("{action}: {e}"));
    }
    let operators = f.operators().clone().unwrap_or_default();
    assert_eq!(operators.len(), 7);
    for op in &operators {
        let json = json!({"defaultAction": "SCMP_ACT_ALLOW",
                          "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                                        "args": [{"index": 0, "value": 1, "op": op}]}]});
        try_compile(json).unwrap_or_else(|e| panic!("{op}: {e}"));
    }
    for flag in f.supported_flags().clone().unwrap_or_default() {
        let json = json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [flag]});
        try_compile(json).unwrap_or_else(|e| panic!("{e}"));
    }
    let known = f.known_flags().clone().unwrap_or_default();
    assert!(known.contains(&"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV".to_string()));
    assert_eq!(known.len(), 4);
    let native = TargetArch::native().expect("x86_64 or aarch64");
    let archs = f.archs().clone().unwrap_or_default();
    let family: Vec<_> = TargetArch::family(native).iter().map(|a| a.oci()).collect();
    assert_eq!(archs, family);
    let listed = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": archs,
                        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]});
    let c = compile_arch(listed, native);
    for &arch in TargetArch::family(native) {
        assert_eq!(
            call_in(&c, arch, nr(arch, "getpid"), [0; 6]),
            errno(libc::EPERM),
            "{arch:?}"
        );
    }
    let json = serde_json::to_value(&f).expect("features serialize");
    assert_eq!(json["knownFlags"].as_array().map(Vec::len), Some(4));
}
