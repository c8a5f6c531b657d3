//! The lifecycle as containerd, podman and people drive it: run, create/start/state/
//! kill/delete, pid files, errors callers match on, and nothing left after a failure.

mod common;
use common::*;

#[test]
fn run_passes_the_exit_status_through() {
    if skip("run_passes_the_exit_status_through") {
        return;
    }
    let rt = Runtime::new();
    let out = rt.run(&Bundle::sh("echo out; echo err >&2; exit 7"), &id("exit7"));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    assert!(
        rt.ok(&["list", "-q"]).trim().is_empty(),
        "run without --keep removes the container"
    );
}

#[test]
fn run_of_a_killed_container_exits_128_plus_signal() {
    if skip("run_of_a_killed_container_exits_128_plus_signal") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("killed");
    let b = Bundle::sh("sleep 30");
    let mut child = rt.spawn_run(&b, &cid);
    rt.wait_status(&cid, "running");
    rt.ok(&["kill", &cid, "KILL"]);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(137));
}

#[test]
fn foreground_run_forwards_signals() {
    if skip("foreground_run_forwards_signals") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("fwd");
    let b = Bundle::sh("trap 'exit 42' TERM; while true; do sleep 0.1; done");
    let mut child = rt.spawn_run(&b, &cid);
    rt.wait_status(&cid, "running");
    std::thread::sleep(std::time::Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    assert_eq!(child.wait().expect("wait").code(), Some(42));
}

#[test]
fn create_start_kill_delete_walks_every_status() {
    if skip("create_start_kill_delete_walks_every_status") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("walk");
    let b = Bundle::sh("sleep 60");
    let pidfile = b.path().join("init.pid");
    let out = rt.create(&b, &cid, &["--pid-file", pidfile.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = rt.state(&cid);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], cid.as_str());
    let pid = st["pid"].as_i64().expect("pid");
    assert!(pid > 0);
    let pf = std::fs::read_to_string(&pidfile).expect("pid file");
    assert_eq!(pf, pid.to_string(), "pid file: decimal, no newline");
    rt.ok(&["start", &cid]);
    assert_eq!(rt.status(&cid), "running");
    let err = rt.cmd().args(["start", &cid]).output().expect("start");
    assert!(!err.status.success());
    assert!(
        stderr(&err).contains("cannot start an already running container"),
        "{}",
        stderr(&err)
    );
    let del = rt.cmd().args(["delete", &cid]).output().expect("delete");
    assert!(
        !del.status.success(),
        "deleting a running container needs --force"
    );
    assert!(stderr(&del).contains("not stopped"));
    rt.ok(&["kill", &cid, "9"]);
    let mut status = String::new();
    for _ in 0..200 {
        status = rt.status(&cid);
        if status == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status, "stopped");
    assert_eq!(rt.state(&cid)["pid"], 0);
    rt.ok(&["kill", "--all", &cid, "9"]);
    let k = rt.cmd().args(["kill", &cid, "9"]).output().expect("kill");
    assert!(
        stderr(&k).contains("container not running"),
        "{}",
        stderr(&k)
    );
    rt.ok(&["delete", &cid]);
    assert!(!rt.root.path().join(&cid).exists());
}

#[test]
fn a_created_container_can_be_deleted_without_force() {
    if skip("a_created_container_can_be_deleted_without_force") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("delcreated");
    let out = rt.create(&Bundle::sh("true"), &cid, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = rt.state(&cid)["pid"].as_i64().expect("pid") as i32;
    rt.ok(&["delete", &cid]);
    assert!(
        gpurun::state::process_start_time(pid).is_none(),
        "init is gone"
    );
}

#[test]
fn unknown_ids_and_bad_ids_give_runcs_errors() {
    if skip("unknown_ids_and_bad_ids_give_runcs_errors") {
        return;
    }
    let rt = Runtime::new();
    let out = rt.cmd().args(["state", "nope"]).output().expect("state");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("container does not exist"),
        "{}",
        stderr(&out)
    );
    let out = rt.cmd().args(["delete", "nope"]).output().expect("delete");
    assert!(stderr(&out).contains("container does not exist"));
    rt.ok(&["delete", "--force", "nope"]);
    let out = rt.cmd().args(["state", ".."]).output().expect("state");
    assert!(
        stderr(&out).contains("invalid container ID format"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_second_create_with_the_same_id_fails_and_leaves_the_first() {
    if skip("a_second_create_with_the_same_id_fails_and_leaves_the_first") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("dup");
    let b = Bundle::sh("sleep 60");
    assert!(rt.create(&b, &cid, &[]).status.success());
    let pid = rt.state(&cid)["pid"].clone();
    let second = rt.create(&b, &cid, &[]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("container with given ID already exists"),
        "{}",
        stderr(&second)
    );
    let st = rt.state(&cid);
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    if skip("a_failed_create_leaves_nothing_behind") {
        return;
    }
    let rt = Runtime::new();
    let before = mount_count();
    let mut b = Bundle::sh("true");
    b.config["process"]["args"] = serde_json::json!(["no-such-binary"]);
    let pidfile = b.path().join("p.pid");
    let out = rt.create(
        &b,
        &id("missing"),
        &["--pid-file", pidfile.to_str().expect("utf8")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("executable file not found in $PATH"),
        "{}",
        stderr(&out)
    );
    assert!(!pidfile.exists(), "no pid file on failure");
    assert_eq!(
        std::fs::read_dir(rt.root.path()).expect("root").count(),
        0,
        "no state dir"
    );
    assert_eq!(mount_count(), before, "no mount leaked");
}

#[test]
fn errors_reach_the_json_log_as_containerd_parses_it() {
    if skip("errors_reach_the_json_log_as_containerd_parses_it") {
        return;
    }
    let rt = Runtime::new();
    let log = rt.root.path().join("log.json");
    let mut b = Bundle::sh("true");
    b.config["process"]["args"] = serde_json::json!(["no-such-binary"]);
    b.write();
    let out = rt
        .cmd()
        .args(["--log"])
        .arg(&log)
        .args(["--log-format", "json", "create", "-b"])
        .arg(b.path())
        .arg(id("log"))
        .output()
        .expect("create");
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&log).expect("log");
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a line")).expect("json line");
    assert_eq!(last["level"], "error");
    assert!(last["msg"]
        .as_str()
        .is_some_and(|m| m.contains("executable file not found")));
    assert!(last["time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('T')));
}

#[test]
fn run_takes_a_bundle_path_and_derives_the_id() {
    if skip("run_takes_a_bundle_path_and_derives_the_id") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("exit 5");
    b.write();
    let out = rt
        .cmd()
        .arg("run")
        .arg(format!("{}/", b.path().display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(rt.ok(&["list", "-q"]).trim().is_empty());
}

#[test]
fn run_detached_then_list_ps_and_delete() {
    if skip("run_detached_then_list_ps_and_delete") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("detached");
    let b = Bundle::sh("sleep 60");
    let out = rt.run_detached(&b, &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rt.status(&cid), "running");
    let list: serde_json::Value =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).expect("json");
    assert_eq!(list[0]["id"], cid.as_str());
    let table = rt.ok(&["list"]);
    assert!(table.starts_with("ID") && table.contains(&cid));
    let pids: Vec<i32> =
        serde_json::from_str(&rt.ok(&["ps", "--format", "json", &cid])).expect("pids");
    assert!(pids.contains(&(rt.state(&cid)["pid"].as_i64().expect("pid") as i32)));
    rt.ok(&["delete", "--force", &cid]);
    assert!(rt.ok(&["list", "-q"]).trim().is_empty());
}

#[test]
fn start_reports_an_init_that_died() {
    if skip("start_reports_an_init_that_died") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("died");
    assert!(rt.create(&Bundle::sh("true"), &cid, &[]).status.success());
    let pid = rt.state(&cid)["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    for _ in 0..200 {
        if gpurun::state::process_start_time(pid).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = rt.cmd().args(["start", &cid]).output().expect("start");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stopped") || stderr(&out).contains("died"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn features_and_version_answer() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpurun"))
        .arg("features")
        .output()
        .expect("features");
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(f["ociVersionMin"], "1.0.0");
    let v = std::process::Command::new(env!("CARGO_BIN_EXE_gpurun"))
        .arg("--version")
        .output()
        .expect("version");
    let version = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(version.starts_with("gpurun version "), "{version}");
    let git = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output();
    if git.is_ok_and(|g| g.status.success()) {
        // Built from a git checkout: the commit it was built from (`-dirty` or not), which
        // is HEAD or, when a commit landed since the build, an ancestor of it.
        let line = version.lines().find(|l| l.starts_with("commit: "));
        let commit = line.and_then(|l| l.strip_prefix("commit: ")).unwrap_or("");
        let commit = commit.trim_end_matches("-dirty");
        assert!(
            commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{version}"
        );
        let ancestor = std::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "merge-base",
                "--is-ancestor",
            ])
            .args([commit, "HEAD"])
            .status()
            .expect("git merge-base");
        assert!(
            ancestor.success(),
            "{commit} is not in this checkout's history"
        );
    }
    let c = std::process::Command::new(env!("CARGO_BIN_EXE_gpurun"))
        .args(["checkpoint", "x"])
        .output()
        .expect("checkpoint");
    assert_eq!(c.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&c.stderr).contains("not supported"));
}

#[test]
fn a_state_directory_without_its_state_file_is_no_container_yet() {
    // What `state` and `ps` see in the microseconds between create's mkdir and its first
    // write of state.json.
    let rt = Runtime::new();
    std::fs::create_dir(rt.root.path().join("halfway")).expect("mkdir");
    for verb in [["state", "halfway"], ["ps", "halfway"]] {
        let out = rt.cmd().args(verb).output().expect("gpurun");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("container does not exist"),
            "{}",
            stderr(&out)
        );
    }
    assert!(rt.ok(&["list", "-q"]).trim().is_empty());
}

#[test]
fn the_systemd_driver_without_systemd_fails_create_and_leaves_nothing() {
    if skip("the_systemd_driver_without_systemd_fails_create_and_leaves_nothing") {
        return;
    }
    if std::path::Path::new("/run/systemd/private").exists() {
        gpurun::skip::not_applicable(
            "the_systemd_driver_without_systemd_fails_create_and_leaves_nothing",
            "systemd runs here (the VM cases cover the driver)",
        );
        return;
    }
    let rt = Runtime::new();
    let before = mount_count();
    let cid = id("sdcg");
    let mut b = Bundle::sh("true");
    b.config["linux"]["cgroupsPath"] = format!("system.slice:gpurun:{cid}").into();
    b.write();
    let out = rt
        .cmd()
        .arg("--systemd-cgroup")
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&cid)
        .output()
        .expect("spawn gpurun");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("systemd cgroup driver") && err.contains("/run/systemd/private"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(rt.root.path()).expect("root").count(),
        0,
        "no state dir"
    );
    assert_eq!(mount_count(), before, "no mount leaked");
    for dir in ["memory", "pids", "cpu", "unified"] {
        let leaf = std::path::Path::new("/sys/fs/cgroup")
            .join(dir)
            .join("system.slice")
            .join(format!("gpurun-{cid}.scope"));
        assert!(!leaf.exists(), "{} left behind", leaf.display());
    }

    // A path not in the systemd form is refused by name.
    b.config["linux"]["cgroupsPath"] = "/not/systemd".into();
    b.write();
    let out = rt
        .cmd()
        .arg("--systemd-cgroup")
        .args(["create", "-b"])
        .arg(b.path())
        .arg(&cid)
        .output()
        .expect("spawn gpurun");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("slice:prefix:name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn events_reports_an_oom_kill_when_it_happens_not_at_the_next_interval() {
    if skip("events_reports_an_oom_kill_when_it_happens_not_at_the_next_interval") {
        return;
    }
    use std::io::BufRead;
    let rt = Runtime::new();
    let cid = id("oomev");
    // The process waits for /go, then builds a 64 MiB string under a 32 MiB limit.
    let mut b = Bundle::own_rootfs(
        "while [ ! -e /go ]; do sleep 0.05; done; \
         awk 'BEGIN { s = sprintf(\"%67108864s\", \"\"); print length(s) }'; exec sleep 600",
    );
    b.config["linux"]["resources"] = serde_json::json!({
        "memory": {"limit": 32 << 20, "swap": 32 << 20}
    });
    let out = rt.run_detached(&b, &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut events = rt
        .cmd()
        .args(["events", "--interval", "1h", &cid])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn events");
    let stdout = events.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first stats record means the watch is registered.
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a stats record");
    assert!(first.contains("\"type\":\"stats\""), "{first}");
    std::fs::write(b.rootfs().join("go"), "").expect("trigger");
    // The interval is an hour: only the OOM notification can produce the next line.
    let next = rx.recv_timeout(std::time::Duration::from_secs(60));
    let _ = events.kill();
    let _ = events.wait();
    let next = next.expect("an oom record before the next interval");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&next).expect("json"),
        serde_json::json!({"type": "oom", "id": cid})
    );
}
