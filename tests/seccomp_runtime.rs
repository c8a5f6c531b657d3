//! Seccomp through the real runtime: profiles loaded in the container's init, enforced
//! on busybox.

mod common;
use common::*;

fn run(b: &Bundle, name: &str) -> std::process::Output {
    Runtime::new().run(b, &id(name))
}

/// A bundle with a writable /tmp whose profile gives `mkdir` the action `rule` (its
/// `action` and extra fields) and allows everything else.
fn mkdir_rule(script: &str, rule: serde_json::Value) -> Bundle {
    let mut b = Bundle::sh(script);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    let mut r = rule;
    r["names"] = serde_json::json!(["mkdir", "mkdirat"]);
    b.config["linux"]["seccomp"] =
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [r]});
    b
}

#[test]
fn a_profile_denying_mkdir_gives_eperm_and_leaves_the_rest_working() {
    if skip("a_profile_denying_mkdir_gives_eperm_and_leaves_the_rest_working") {
        return;
    }
    let b = mkdir_rule(
        "mkdir /tmp/x; echo still-running",
        serde_json::json!({"action": "SCMP_ACT_ERRNO", "errnoRet": 1}),
    );
    let out = run(&b, "mkdir");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "still-running\n");
}

#[test]
fn errno_ret_38_gives_enosys() {
    if skip("errno_ret_38_gives_enosys") {
        return;
    }
    let b = mkdir_rule(
        "mkdir /tmp/x",
        serde_json::json!({"action": "SCMP_ACT_ERRNO", "errnoRet": 38}),
    );
    let out = run(&b, "enosys");
    assert!(
        stderr(&out).contains("Function not implemented"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kill_process_kills() {
    if skip("kill_process_kills") {
        return;
    }
    let mut b = Bundle::sh("unused");
    b.config["process"]["args"] = serde_json::json!(["mkdir", "/tmp/x"]);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]
    });
    let out = run(&b, "killproc");
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGSYS),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_profile_works_for_a_non_root_user_without_no_new_privileges() {
    if skip("a_profile_works_for_a_non_root_user_without_no_new_privileges") {
        return;
    }
    let mut b = Bundle::sh("id -u; mkdir /tmp/x 2>&1 | grep -c 'not permitted'");
    b.config["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    b.config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    b.config["process"]["noNewPrivileges"] = false.into();
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let out = run(&b, "nonroot");
    assert_eq!(stdout(&out), "1000\n1\n", "{}", stderr(&out));
}

#[test]
fn containerds_default_profile_runs_busybox_and_refuses_unshare_and_mount() {
    if skip("containerds_default_profile_runs_busybox_and_refuses_unshare_and_mount") {
        return;
    }
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seccomp/default.json"
    );
    let prof: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("json");
    let mut b = Bundle::sh(
        "ls / >/dev/null && echo ls-ok; \
         unshare -m true 2>/dev/null || echo unshare-refused; \
         mount -t tmpfs t /mnt 2>/dev/null || echo mount-refused; \
         echo done",
    );
    b.config["linux"]["seccomp"] = prof;
    let out = run(&b, "default");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ls-ok\nunshare-refused\nmount-refused\ndone\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_profile_that_blocks_execve_fails_create_clearly() {
    if skip("a_profile_that_blocks_execve_fails_create_clearly") {
        return;
    }
    let mut b = Bundle::sh("true");
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ERRNO"}]
    });
    let rt = Runtime::new();
    let out = rt.create(&b, &id("noexec"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("blocks execve"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(rt.root.path()).expect("root").count(),
        0,
        "nothing left"
    );
}
