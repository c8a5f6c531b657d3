//! OCI hooks through the real runtime: every phase once, in order, with the right
//! status on stdin and only its own environment; and each phase's failure policy.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A hook script that appends `<phase> <status> home=<$HOME> foo=<$FOO> pwd=<pwd>`.
const SCRIPT: &str = r#"#!/bin/sh
state=$(/bin/cat)
status=$(echo "$state" | /bin/sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
echo "$1 $status home=$HOME foo=$FOO pwd=$(pwd)" >> "$2"
exit "${3:-0}"
"#;

struct Setup {
    b: Bundle,
    logdir: tempfile::TempDir,
    host_hook: PathBuf,
}

fn setup(script: &str) -> Setup {
    let mut b = Bundle::own_rootfs(script);
    let logdir = tempfile::tempdir().expect("logdir");
    let host_hook = logdir.path().join("hook.sh");
    std::fs::write(&host_hook, SCRIPT).expect("hook");
    std::fs::set_permissions(&host_hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The startContainer hook runs in the container: the same script inside the rootfs.
    std::fs::write(b.rootfs().join("hook.sh"), SCRIPT).expect("hook in rootfs");
    std::fs::set_permissions(
        b.rootfs().join("hook.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
        "destination": "/log", "type": "bind", "source": logdir.path(), "options": ["rbind"]}));
    Setup {
        b,
        logdir,
        host_hook,
    }
}

fn hook(
    path: &Path,
    phase: &str,
    log: &Path,
    exit: i32,
    env: Option<&[&str]>,
) -> serde_json::Value {
    let mut h = serde_json::json!({
        "path": path,
        "args": ["hook.sh", phase, log, exit.to_string()],
    });
    if let Some(env) = env {
        h["env"] = serde_json::json!(env);
    }
    h
}

fn all_hooks(s: &Setup, fail: Option<&str>) -> serde_json::Value {
    let log = s.logdir.path().join("log");
    let code = |p: &str| if fail == Some(p) { 1 } else { 0 };
    serde_json::json!({
        "prestart": [hook(&s.host_hook, "prestart", &log, code("prestart"), None)],
        "createRuntime": [hook(&s.host_hook, "createRuntime", &log, code("createRuntime"), Some(&["FOO=runtime"]))],
        "createContainer": [hook(&s.host_hook, "createContainer", &log, code("createContainer"), None)],
        "startContainer": [hook(Path::new("/hook.sh"), "startContainer", Path::new("/log/log"), code("startContainer"), None)],
        "poststart": [hook(&s.host_hook, "poststart", &log, code("poststart"), None)],
        "poststop": [hook(&s.host_hook, "poststop", &log, code("poststop"), None)],
    })
}

fn log_of(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(s.logdir.path().join("log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn every_phase_runs_once_in_order_with_its_status_and_only_its_env() {
    if skip("every_phase_runs_once_in_order_with_its_status_and_only_its_env") {
        return;
    }
    let mut s = setup("true");
    s.b.config["process"]["env"] = serde_json::json!(["PATH=/bin", "HOME=/root", "FOO=container"]);
    s.b.config["hooks"] = all_hooks(&s, None);
    let rt = Runtime::new();
    let out = rt.run(&s.b, &id("hooks"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&s);
    let bundle = s.b.path().display().to_string();
    let want = [
        format!("prestart creating home= foo= pwd={bundle}"),
        format!("createRuntime creating home= foo=runtime pwd={bundle}"),
        format!("createContainer creating home= foo= pwd={bundle}"),
        "startContainer created home= foo= pwd=/".to_string(),
        format!("poststart running home= foo= pwd={bundle}"),
        format!("poststop stopped home= foo= pwd={bundle}"),
    ];
    assert_eq!(log, want);
}

fn assert_create_fails_cleanly(phase: &str) {
    let mut s = setup("true");
    s.b.config["hooks"] = all_hooks(&s, Some(phase));
    let rt = Runtime::new();
    let out = rt.run(&s.b, &id(&format!("fail-{}", phase.to_lowercase())));
    assert_eq!(out.status.code(), Some(1), "{phase}: {}", stderr(&out));
    assert!(stderr(&out).contains(phase), "{phase}: {}", stderr(&out));
    assert!(
        rt.ok(&["list", "-q"]).trim().is_empty(),
        "{phase}: nothing left"
    );
    assert!(
        !log_of(&s).iter().any(|l| l.starts_with("startContainer")),
        "{phase}: the process never started"
    );
}

#[test]
fn a_failing_prestart_create_runtime_or_create_container_hook_fails_create() {
    if skip("a_failing_prestart_create_runtime_or_create_container_hook_fails_create") {
        return;
    }
    for phase in ["prestart", "createRuntime", "createContainer"] {
        assert_create_fails_cleanly(phase);
    }
}

#[test]
fn a_failing_start_container_hook_stops_the_process_from_running() {
    if skip("a_failing_start_container_hook_stops_the_process_from_running") {
        return;
    }
    let mut s = setup("echo process-ran");
    s.b.config["hooks"] = all_hooks(&s, Some("startContainer"));
    let rt = Runtime::new();
    let out = rt.run(&s.b, &id("failstart"));
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout(&out).contains("process-ran"));
    assert!(stderr(&out).contains("startContainer"), "{}", stderr(&out));
}

/// The startContainer hooks are part of `start` (runtime spec, "Lifecycle" step 7): their
/// failure is `start`'s error, and the container has stopped without running its process.
/// runc 1.1's `start` returns 0 before the hooks run.
#[test]
fn a_failing_start_container_hook_fails_start() {
    if skip("a_failing_start_container_hook_fails_start") {
        return;
    }
    let mut s = setup("echo process-ran > /log/ran; sleep 60");
    s.b.config["hooks"] = serde_json::json!({
        "startContainer": [hook(Path::new("/hook.sh"), "startContainer", Path::new("/log/log"), 1, None)],
    });
    let rt = Runtime::new();
    let cid = id("failstartcreate");
    let out = rt.create(&s.b, &cid, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = rt.cmd().args(["start", &cid]).output().expect("start");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("startContainer"), "{}", stderr(&out));
    assert_eq!(rt.status(&cid), "stopped");
    assert!(
        !s.logdir.path().join("ran").exists(),
        "the process never ran"
    );
    assert_eq!(log_of(&s).len(), 1, "the hook ran once");
}

/// The runtime spec (and crun) against runc 1.1, which kills the container and fails
/// `start`: a failing poststart hook is a warning, the later poststart hooks still run,
/// `start` succeeds and the container keeps running.
#[test]
fn a_failing_poststart_hook_is_a_warning_and_the_container_keeps_running() {
    if skip("a_failing_poststart_hook_is_a_warning_and_the_container_keeps_running") {
        return;
    }
    let mut s = setup("sleep 60");
    let log = s.logdir.path().join("log");
    s.b.config["hooks"] = serde_json::json!({
        "poststart": [
            hook(&s.host_hook, "poststart-fails", &log, 1, None),
            hook(&s.host_hook, "poststart-after", &log, 0, None),
        ],
    });
    let rt = Runtime::new();
    let cid = id("failpoststart");
    let out = rt.create(&s.b, &cid, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let runtime_log = s.logdir.path().join("gpurun.log");
    let out = rt
        .cmd()
        .arg("--log")
        .arg(&runtime_log)
        .args(["start", &cid])
        .output()
        .expect("start");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(rt.status(&cid), "running");
    let ran: Vec<String> = log_of(&s)
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ran, ["poststart-fails", "poststart-after"]);
    let warning = std::fs::read_to_string(&runtime_log).unwrap_or_default();
    assert!(
        warning.contains("level=warning") && warning.contains("poststart hook"),
        "{warning}"
    );
}

/// The pid in each hook's state: as the runtime sees it for hooks run in the runtime's
/// namespaces, as the container sees it for createContainer and startContainer, none once
/// stopped; with and without a pid namespace of the container's own.
#[test]
fn each_hook_gets_the_pid_as_seen_where_it_runs() {
    if skip("each_hook_gets_the_pid_as_seen_where_it_runs") {
        return;
    }
    for own_pid_ns in [true, false] {
        let mut s = setup("sleep 60");
        for path in [s.host_hook.clone(), s.b.rootfs().join("hook.sh")] {
            std::fs::write(&path, PID_SCRIPT).expect("hook");
        }
        s.b.config["hooks"] = all_hooks(&s, None);
        if !own_pid_ns {
            let ns = s.b.config["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces");
            ns.retain(|n| n["type"] != "pid");
        }
        let rt = Runtime::new();
        let cid = id(&format!("hookpid-{own_pid_ns}"));
        let out = rt.create(&s.b, &cid, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let pid = rt.state(&cid)["pid"].as_i64().expect("pid").to_string();
        rt.ok(&["start", &cid]);
        rt.ok(&["delete", "--force", &cid]);
        let inside = if own_pid_ns { "1" } else { pid.as_str() };
        let want = [
            format!("prestart pid={pid}"),
            format!("createRuntime pid={pid}"),
            format!("createContainer pid={inside}"),
            format!("startContainer pid={inside}"),
            format!("poststart pid={pid}"),
            "poststop pid=".to_string(),
        ];
        assert_eq!(log_of(&s), want, "own pid namespace: {own_pid_ns}");
    }
}

/// Appends `<phase> pid=<the state's pid>`.
const PID_SCRIPT: &str = r#"#!/bin/sh
pid=$(/bin/cat | /bin/sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
echo "$1 pid=$pid" >> "$2"
"#;

#[test]
fn a_failing_poststop_hook_is_only_a_warning() {
    if skip("a_failing_poststop_hook_is_only_a_warning") {
        return;
    }
    let mut s = setup("exit 3");
    s.b.config["hooks"] = all_hooks(&s, Some("poststop"));
    let rt = Runtime::new();
    let out = rt.run(&s.b, &id("failpoststop"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(log_of(&s).last().is_some_and(|l| l.starts_with("poststop")));
    assert!(rt.ok(&["list", "-q"]).trim().is_empty());
}
