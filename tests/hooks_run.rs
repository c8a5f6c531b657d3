//! Running OCI hooks: what a hook receives (stdin, argv, env, cwd) and how failures,
//! timeouts and bad definitions are reported.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gpurun::hooks::{run_all, run_all_continue, run_one, HookError, HookState, Phase};
use oci_spec::runtime::Hook;
use serde_json::json;

struct Fixture {
    dir: tempfile::TempDir,
    annotations: HashMap<String, String>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            annotations: HashMap::from([("org.example/key".to_string(), "value".to_string())]),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `#!/bin/sh` script in the temp dir; `@OUT@` in `body` becomes the temp dir.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path(name);
        let body = body.replace("@OUT@", &self.dir.path().display().to_string());
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// A script that records its stdin, environment, argv and working directory.
    fn recorder(&self) -> PathBuf {
        self.script(
            "record.sh",
            "/bin/cat > @OUT@/stdin\n\
             /usr/bin/tr '\\0' '\\n' < /proc/$$/environ > @OUT@/env\n\
             /usr/bin/tr '\\0' '\\n' < /proc/$$/cmdline > @OUT@/argv\n\
             /bin/readlink /proc/$$/cwd > @OUT@/cwd",
        )
    }

    fn state(&self, pid: i32) -> HookState<'_> {
        HookState {
            oci_version: "1.2.0",
            id: "c1",
            status: "creating",
            pid,
            bundle: Path::new("/run/bundles/c1"),
            annotations: &self.annotations,
        }
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    fn lines(&self, name: &str) -> Vec<String> {
        self.read(name).lines().map(str::to_string).collect()
    }
}

fn hook(v: serde_json::Value) -> Hook {
    serde_json::from_value(v).expect("hook json")
}

#[test]
fn hook_reads_the_state_json_on_stdin() {
    let f = Fixture::new();
    let h = hook(json!({"path": f.recorder()}));
    run_one(Phase::CreateRuntime, &h, &f.state(4242), f.dir.path()).expect("hook runs");
    let v: serde_json::Value = serde_json::from_str(&f.read("stdin")).expect("stdin is JSON");
    assert_eq!(
        v,
        json!({
            "ociVersion": "1.2.0",
            "id": "c1",
            "status": "creating",
            "pid": 4242,
            "bundle": "/run/bundles/c1",
            "annotations": {"org.example/key": "value"}
        })
    );
}

#[test]
fn zero_pid_and_empty_annotations_are_left_out_of_the_state() {
    let mut f = Fixture::new();
    f.annotations.clear();
    let h = hook(json!({"path": f.recorder()}));
    run_one(Phase::Poststop, &h, &f.state(0), f.dir.path()).expect("hook runs");
    let v: serde_json::Value = serde_json::from_str(&f.read("stdin")).expect("stdin is JSON");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{v}");
    assert!(
        v.get("pid").is_none() && v.get("annotations").is_none(),
        "{v}"
    );
}

#[test]
fn args_are_the_full_argv_including_argv0() {
    let f = Fixture::new();
    let rec = f.recorder();
    let h = hook(json!({"path": "/bin/sh", "args": ["my-argv0", rec, "a", "b c"]}));
    run_one(Phase::Prestart, &h, &f.state(1), f.dir.path()).expect("hook runs");
    assert_eq!(
        f.lines("argv"),
        ["my-argv0", rec.to_str().expect("utf-8"), "a", "b c"]
    );
}

/// `sh` reading commands from stdin prefixes its errors with its argv[0]: the state
/// JSON is not a command, so the captured stderr shows which argv[0] it got.
#[test]
fn without_args_argv0_is_the_path() {
    let f = Fixture::new();
    let err = run_one(
        Phase::Prestart,
        &hook(json!({"path": "/bin/sh"})),
        &f.state(1),
        f.dir.path(),
    )
    .expect_err("JSON is not a shell command");
    assert!(err.to_string().contains("stderr: /bin/sh: 1:"), "{err}");
    let h = hook(json!({"path": "/bin/sh", "args": ["custom0"]}));
    let err = run_one(Phase::Prestart, &h, &f.state(1), f.dir.path())
        .expect_err("JSON is not a shell command");
    assert!(err.to_string().contains("stderr: custom0: 1:"), "{err}");
}

#[test]
fn unset_env_means_an_empty_environment() {
    let f = Fixture::new();
    // Whatever the runtime itself runs with must not reach the hook (CVE-2025-23266).
    assert!(
        std::env::vars().next().is_some(),
        "the test runs with some environment"
    );
    run_one(
        Phase::CreateContainer,
        &hook(json!({"path": f.recorder()})),
        &f.state(1),
        f.dir.path(),
    )
    .expect("hook runs");
    assert_eq!(f.read("env"), "");
}

#[test]
fn env_is_passed_exactly_as_given() {
    let f = Fixture::new();
    let h = hook(json!({"path": f.recorder(), "env": ["A=1", "B=x=y", "EMPTY="]}));
    run_one(Phase::CreateContainer, &h, &f.state(1), f.dir.path()).expect("hook runs");
    let mut env = f.lines("env");
    env.sort();
    assert_eq!(env, ["A=1", "B=x=y", "EMPTY="]);
}

#[test]
fn env_entries_must_be_key_value() {
    let f = Fixture::new();
    for bad in ["NOEQUALS", "=novalue"] {
        let h = hook(json!({"path": f.recorder(), "env": [bad]}));
        let err =
            run_one(Phase::CreateRuntime, &h, &f.state(1), f.dir.path()).expect_err("bad env");
        assert!(matches!(err, HookError::BadEnv { .. }), "{err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn the_hook_runs_in_the_given_directory() {
    let f = Fixture::new();
    let cwd = tempfile::tempdir().expect("tempdir");
    run_one(
        Phase::CreateRuntime,
        &hook(json!({"path": f.recorder()})),
        &f.state(1),
        cwd.path(),
    )
    .expect("hook runs");
    let want = fs::canonicalize(cwd.path()).expect("canonicalize");
    assert_eq!(f.read("cwd").trim_end(), want.to_str().expect("utf-8"));
}

#[test]
fn a_missing_working_directory_fails_to_start_the_hook() {
    let f = Fixture::new();
    let err = run_one(
        Phase::Poststart,
        &hook(json!({"path": f.recorder()})),
        &f.state(1),
        &f.path("no-such-dir"),
    )
    .expect_err("no cwd");
    assert!(matches!(err, HookError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn nonzero_exit_names_phase_path_status_and_output() {
    let f = Fixture::new();
    let p = f.script("fail.sh", "echo to-stdout; echo to-stderr >&2; exit 3");
    let err = run_one(
        Phase::CreateRuntime,
        &hook(json!({"path": p})),
        &f.state(1),
        f.dir.path(),
    )
    .expect_err("exit 3 fails");
    let msg = err.to_string();
    assert!(matches!(err, HookError::Failed { .. }), "{msg}");
    for want in [
        "createRuntime hook",
        p.to_str().expect("utf-8"),
        "exit status 3",
        "stdout: to-stdout",
        "stderr: to-stderr",
    ] {
        assert!(msg.contains(want), "{want:?} missing from {msg:?}");
    }
}

#[test]
fn a_hook_killed_by_a_signal_reports_the_signal() {
    let f = Fixture::new();
    let p = f.script("die.sh", "kill -9 $$");
    let err = run_one(
        Phase::Poststart,
        &hook(json!({"path": p})),
        &f.state(1),
        f.dir.path(),
    )
    .expect_err("killed");
    assert!(
        err.to_string().contains("killed by signal SIGKILL"),
        "{err}"
    );
}

#[test]
fn failure_output_is_bounded() {
    let f = Fixture::new();
    let p = f.script(
        "noisy.sh",
        "i=0; while [ $i -lt 20000 ]; do echo line-$i >&2; i=$((i+1)); done; exit 1",
    );
    let err = run_one(
        Phase::Poststart,
        &hook(json!({"path": p})),
        &f.state(1),
        f.dir.path(),
    )
    .expect_err("exit 1");
    let msg = err.to_string();
    assert!(
        msg.len() < 2 * gpurun::hooks::OUTPUT_LIMIT,
        "{} bytes",
        msg.len()
    );
    assert!(
        msg.trim_end().ends_with("line-19999"),
        "the tail is kept: {msg}"
    );
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_children() {
    let f = Fixture::new();
    let p = f.script("slow.sh", "/bin/sleep 600 & echo $! > @OUT@/child; wait");
    let h = hook(json!({"path": p, "timeout": 1}));
    let err = run_one(Phase::CreateRuntime, &h, &f.state(1), f.dir.path()).expect_err("times out");
    assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("hook ran past specified timeout of 1 seconds"),
        "{err}"
    );
    let child: i32 = f.read("child").trim().parse().expect("child pid");
    // The child was SIGKILLed with the hook's process group; whoever inherited it reaps
    // it, so wait (bounded) until it is gone or a zombie.
    let gone = (0..500).any(|_| {
        let dead = match fs::read_to_string(format!("/proc/{child}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        };
        if !dead {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        dead
    });
    assert!(gone, "the hook's child {child} survived the timeout");
}

#[test]
fn timeout_must_be_positive() {
    let f = Fixture::new();
    let h = hook(json!({"path": f.recorder(), "timeout": 0}));
    let err = run_one(Phase::CreateRuntime, &h, &f.state(1), f.dir.path()).expect_err("timeout 0");
    assert!(
        matches!(err, HookError::BadTimeout { timeout: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_relative_path_is_refused() {
    let f = Fixture::new();
    let err = run_one(
        Phase::Prestart,
        &hook(json!({"path": "bin/true"})),
        &f.state(1),
        f.dir.path(),
    )
    .expect_err("relative");
    assert!(matches!(err, HookError::RelativePath { .. }), "{err}");
    assert!(err.to_string().contains("prestart hook bin/true"), "{err}");
}

#[test]
fn a_hook_that_does_not_read_a_large_state_still_succeeds() {
    let mut f = Fixture::new();
    f.annotations.insert("big".into(), "x".repeat(512 * 1024));
    let p = f.script("ignore.sh", "exit 0");
    run_one(
        Phase::Poststart,
        &hook(json!({"path": p})),
        &f.state(1),
        f.dir.path(),
    )
    .expect("EPIPE is not a failure");
    // And one that reads it gets all of it.
    run_one(
        Phase::Poststart,
        &hook(json!({"path": f.recorder()})),
        &f.state(1),
        f.dir.path(),
    )
    .expect("runs");
    let want = f.state(1).to_json().expect("json");
    assert_eq!(f.read("stdin").len(), want.len());
}

#[test]
fn the_hook_exiting_ends_the_wait_even_if_its_output_pipe_lives_on() {
    let f = Fixture::new();
    let p = f.script(
        "daemon.sh",
        "/bin/sleep 600 & echo $! > @OUT@/child; exit 0",
    );
    run_one(
        Phase::Poststart,
        &hook(json!({"path": p})),
        &f.state(1),
        f.dir.path(),
    )
    .expect("hook runs");
    let child: i32 = f.read("child").trim().parse().expect("child pid");
    // Still alive: run_one returned without waiting for it to close stdout.
    let alive = fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        alive,
        "the background child {child} should still be running"
    );
}

#[test]
fn run_all_stops_at_the_first_failure_and_run_all_continue_does_not() {
    let f = Fixture::new();
    let mark = |n: &str| f.script(&format!("mark-{n}.sh"), &format!(": > @OUT@/ran-{n}"));
    let fail = f.script("fail.sh", "exit 7");
    let hooks = [
        hook(json!({"path": mark("1")})),
        hook(json!({"path": fail})),
        hook(json!({"path": mark("2")})),
    ];
    let err =
        run_all(Phase::CreateRuntime, &hooks, &f.state(1), f.dir.path()).expect_err("second fails");
    assert!(err.to_string().contains("exit status 7"), "{err}");
    assert!(f.path("ran-1").exists() && !f.path("ran-2").exists());

    let errs = run_all_continue(Phase::Poststop, &hooks, &f.state(0), f.dir.path());
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].to_string().starts_with("poststop hook"),
        "{}",
        errs[0]
    );
    assert!(
        f.path("ran-2").exists(),
        "poststop hooks after a failure still run"
    );
}

#[test]
fn phases_pick_their_hooks_from_the_spec() {
    let hooks: oci_spec::runtime::Hooks = serde_json::from_value(json!({
        "prestart": [{"path": "/a"}],
        "createContainer": [{"path": "/b"}, {"path": "/c"}]
    }))
    .expect("hooks");
    assert_eq!(Phase::Prestart.hooks_in(&hooks).len(), 1);
    assert_eq!(
        Phase::CreateContainer.hooks_in(&hooks)[1].path(),
        Path::new("/c")
    );
    assert!(Phase::Poststop.hooks_in(&hooks).is_empty());
}

/// `gpurun run` blocks every signal before it creates the container (they are read from a
/// signalfd); a hook must still start with an empty signal mask.
#[test]
fn hooks_start_with_no_blocked_signals() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let f = Fixture::new();
    let p = f.script("term.sh", "kill -TERM $$; exit 0");
    let mut all = SigSet::empty();
    all.add(Signal::SIGTERM);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old)).expect("block");
    let res = run_one(
        Phase::Poststart,
        &hook(json!({"path": p})),
        &f.state(1),
        f.dir.path(),
    );
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).expect("restore");
    let err = res.expect_err("SIGTERM ends the hook");
    assert!(
        err.to_string().contains("killed by signal SIGTERM"),
        "{err}"
    );
}
