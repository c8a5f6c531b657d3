//! Deny-by-default profiles that gpurun did not write: they allow what the container
//! needs and nothing of gpurun's own (no close_range, no getcwd). gpurun adds nothing
//! to what a profile must allow: with noNewPrivileges only execve follows the filter;
//! without it, only the calls `runtime-spec/seccomp.md` lists.

mod common;
use common::*;

use serde_json::{json, Value};

fn containerd_default() -> Value {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seccomp/default.json"
    );
    serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("json")
}

/// containerd's default profile without `names`: the shape of older engines' profiles
/// and of the OCI validation suite's, which predate close_range.
fn default_without(names: &[&str]) -> Value {
    let mut p = containerd_default();
    for rule in p["syscalls"].as_array_mut().expect("syscalls") {
        rule["names"]
            .as_array_mut()
            .expect("names")
            .retain(|n| !names.iter().any(|x| n == x));
    }
    p
}

/// What static busybox needs to run `echo`, `true` and `sleep`.
const BUSYBOX_CALLS: &[&str] = &[
    "arch_prctl",
    "brk",
    "execve",
    "exit_group",
    "getrandom",
    "getuid",
    "mprotect",
    "prctl",
    "prlimit64",
    "readlink",
    "rseq",
    "set_robust_list",
    "set_tid_address",
    "write",
    "clock_nanosleep",
    "nanosleep",
    "restart_syscall",
];

/// The calls `runtime-spec/seccomp.md` lists as following the filter without
/// noNewPrivileges (runc needs each of them there too).
const AFTER_EARLY_FILTER: &[&str] = &[
    "prctl",
    "setgroups",
    "setresgid",
    "setresuid",
    "capset",
    "read",
    "write",
    "execve",
];

/// Allow exactly `names`, kill the process on anything else.
fn allow_only(names: &[&str]) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    })
}

fn bundle(script: &str, profile: Value, nnp: bool) -> Bundle {
    let mut b = Bundle::sh(script);
    b.config["linux"]["seccomp"] = profile;
    b.config["process"]["noNewPrivileges"] = nnp.into();
    b
}

fn exec(rt: &Runtime, args: &[&str]) -> std::process::Output {
    rt.cmd().arg("exec").args(args).output().expect("exec")
}

/// `run` prints ok; a running container with the same profile takes an `exec`.
fn run_and_exec(rt: &Runtime, profile: &Value, nnp: bool, name: &str) {
    let what = format!("{name} noNewPrivileges={nnp}");
    let mut b = bundle("echo ok", profile.clone(), nnp);
    b.config["process"]["args"] = json!(["echo", "ok"]);
    let out = rt.run(&b, &id(&format!("{name}-run-{nnp}")));
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n", "{what}");

    let mut b = bundle("unused", profile.clone(), nnp);
    b.config["process"]["args"] = json!(["sleep", "60"]);
    let cid = id(&format!("{name}-exec-{nnp}"));
    let out = rt.run_detached(&b, &cid);
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    let out = exec(rt, &[&cid, "echo", "exec-ok"]);
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
    assert_eq!(stdout(&out), "exec-ok\n", "{what}");
}

#[test]
fn a_profile_without_close_range_or_getcwd_runs_and_execs() {
    if skip("a_profile_without_close_range_or_getcwd_runs_and_execs") {
        return;
    }
    let rt = Runtime::new();
    let p = default_without(&["close_range", "getcwd"]);
    for nnp in [true, false] {
        run_and_exec(&rt, &p, nnp, "nocr");
    }
}

#[test]
fn with_no_new_privileges_only_execve_follows_the_filter() {
    if skip("with_no_new_privileges_only_execve_follows_the_filter") {
        return;
    }
    run_and_exec(
        &Runtime::new(),
        &allow_only(BUSYBOX_CALLS),
        true,
        "onlyexecve",
    );
}

#[test]
fn without_no_new_privileges_only_the_listed_calls_follow_the_filter() {
    if skip("without_no_new_privileges_only_the_listed_calls_follow_the_filter") {
        return;
    }
    let names: Vec<&str> = [BUSYBOX_CALLS, AFTER_EARLY_FILTER].concat();
    run_and_exec(&Runtime::new(), &allow_only(&names), false, "listed");
}

/// CVE-2024-21626: a cwd reaching a host directory through a preserved fd is refused,
/// whether or not the profile allows getcwd and whenever the filter is loaded.
#[test]
fn the_cwd_check_holds_when_the_profile_blocks_getcwd() {
    if skip("the_cwd_check_holds_when_the_profile_blocks_getcwd") {
        return;
    }
    let rt = Runtime::new();
    let host_dir = tempfile::tempdir().expect("tempdir");
    for nnp in [true, false] {
        let mut b = bundle("unused", default_without(&["close_range", "getcwd"]), nnp);
        b.config["process"]["args"] = json!(["sleep", "60"]);
        let cid = id(&format!("cwdcheck-{nnp}"));
        let out = rt.run_detached(&b, &cid);
        assert!(out.status.success(), "{}", stderr(&out));
        let cmd = rt.cmd();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$@" 3<"$HOSTDIR""#)
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .args([
                "exec",
                "--preserve-fds",
                "1",
                "--cwd",
                "/proc/self/fd/3",
                &cid,
            ])
            .args(["sh", "-c", "ls"])
            .env("HOSTDIR", host_dir.path())
            .output()
            .expect("exec");
        assert_eq!(out.status.code(), Some(255), "nnp={nnp}: {}", stderr(&out));
        assert!(stderr(&out).contains("cwd"), "{}", stderr(&out));
        assert_eq!(stdout(&out), "", "nothing listed from the host");
    }
}

/// runc on the same bundle: a profile without close_range runs there too, run and exec,
/// with and without noNewPrivileges. (Without getcwd and without noNewPrivileges runc
/// fails its own cwd check after the filter; gpurun checks before loading it.)
#[test]
fn runc_runs_the_same_profile_without_close_range() {
    if skip("runc_runs_the_same_profile_without_close_range") {
        return;
    }
    let Some(runc) = Runtime::runc("runc_runs_the_same_profile_without_close_range") else {
        return;
    };
    let p = default_without(&["close_range"]);
    for nnp in [true, false] {
        run_and_exec(&runc, &p, nnp, "runc-nocr");
        run_and_exec(&Runtime::new(), &p, nnp, "ours-nocr");
    }
}

/// Where close_range is missing (an old kernel) or blocked (gpurun itself under an outer
/// runtime's profile), init walks /proc/self/fd instead: strace makes every close_range
/// fail with ENOSYS, and the container still sees only its stdio, for run and exec.
#[test]
fn init_walks_proc_self_fd_where_close_range_is_unavailable() {
    let name = "init_walks_proc_self_fd_where_close_range_is_unavailable";
    if skip(name) {
        return;
    }
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        gpurun::skip::cannot_run(name, "strace is not installed");
        return;
    }
    let rt = Runtime::new();
    let list_fds = "ls /proc/self/fd | sort -n | tr '\\n' ' '";
    let without_close_range = |args: &[&str]| {
        let cmd = rt.cmd();
        std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec strace -f -qq -o /dev/null -e trace=close_range -e inject=close_range:error=ENOSYS "$@" 5</etc/passwd"#)
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("strace")
    };
    let b = Bundle::sh(list_fds);
    b.write();
    let cid = id("walkfds");
    rt.track(&cid);
    let out = without_close_range(&["run", "-b", &b.path().to_string_lossy(), &cid]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0 1 2 3 ", "{}", stderr(&out));

    let cid = id("walkfds-exec");
    let out = rt.run_detached(&Bundle::sh("sleep 60"), &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = without_close_range(&["exec", &cid, "sh", "-c", list_fds]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0 1 2 3 ", "{}", stderr(&out));
}

/// The cwd is entered before the filter and the uid change, as root; where root may not
/// enter but the container's user may (here: a directory whose owner the user namespace
/// does not map, open to the user's group only), it is entered with the user's ids.
/// runc gets there by a second chdir after its user change.
#[test]
fn a_cwd_only_the_containers_user_may_enter_works() {
    let name = "a_cwd_only_the_containers_user_may_enter_works";
    if skip(name) {
        return;
    }
    let mut b = Bundle::own_rootfs("pwd; id -u");
    let work = b.rootfs().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    nix::unistd::chown(
        &work,
        Some(nix::unistd::Uid::from_raw(5)),
        Some(nix::unistd::Gid::from_raw(101_000)),
    )
    .expect("chown");
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o750))
        .expect("chmod");
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(json!({"type": "user"}));
    let map = json!([{"containerID": 0, "hostID": 100_000, "size": 65536}]);
    b.config["linux"]["uidMappings"] = map.clone();
    b.config["linux"]["gidMappings"] = map;
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.config["process"]["cwd"] = "/work".into();
    // `pwd` itself needs getcwd.
    b.config["linux"]["seccomp"] = default_without(&["close_range"]);
    for nnp in [true, false] {
        b.config["process"]["noNewPrivileges"] = nnp.into();
        let out = Runtime::new().run(&b, &id(&format!("usercwd-{nnp}")));
        assert_eq!(out.status.code(), Some(0), "nnp={nnp}: {}", stderr(&out));
        assert_eq!(stdout(&out), "/work\n1000\n", "nnp={nnp}");
    }
    let Some(runc) = Runtime::runc(name) else {
        return;
    };
    let out = runc.run(&b, &id("runc-usercwd"));
    assert_eq!(stdout(&out), "/work\n1000\n", "runc: {}", stderr(&out));
}
