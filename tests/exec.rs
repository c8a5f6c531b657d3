//! `gpurun exec` into running containers: namespaces, cgroup, credentials, exit codes.

mod common;
use common::*;

fn running(rt: &Runtime, b: &Bundle, name: &str) -> String {
    let cid = id(name);
    let out = rt.run_detached(b, &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    cid
}

fn exec(rt: &Runtime, args: &[&str]) -> std::process::Output {
    rt.cmd().arg("exec").args(args).output().expect("exec")
}

#[test]
fn exec_prints_passes_the_status_and_joins_the_pid_namespace() {
    if skip("exec_prints_passes_the_status_and_joins_the_pid_namespace") {
        return;
    }
    let rt = Runtime::new();
    let cid = running(&rt, &Bundle::sh("sleep 60"), "exec1");
    let out = exec(
        &rt,
        &[
            &cid,
            "sh",
            "-c",
            "echo $$; ps -o comm | grep -c sleep; exit 9",
        ],
    );
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_ne!(lines[0], "1", "the exec'd shell is not pid 1");
    assert_eq!(
        lines[1], "1",
        "the container's sleep is visible: {:?}",
        lines
    );
    let pids: Vec<i32> =
        serde_json::from_str(&rt.ok(&["ps", "--format", "json", &cid])).expect("pids");
    assert_eq!(
        pids.len(),
        1,
        "the exec'd process was in the container's cgroup and is gone"
    );
}

#[test]
fn a_missing_binary_exits_255_and_writes_no_pid_file() {
    if skip("a_missing_binary_exits_255_and_writes_no_pid_file") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("sleep 60");
    let cid = running(&rt, &b, "exec255");
    let pidfile = b.path().join("exec.pid");
    let out = exec(
        &rt,
        &[
            "--pid-file",
            pidfile.to_str().expect("utf8"),
            &cid,
            "no-such-binary",
        ],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );
    assert!(!pidfile.exists());
    let out = exec(
        &rt,
        &[
            "-d",
            "--pid-file",
            pidfile.to_str().expect("utf8"),
            &cid,
            "no-such-binary",
        ],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(!pidfile.exists());
    assert_eq!(
        rt.status(&cid),
        "running",
        "a failed exec leaves the container alone"
    );
}

#[test]
fn detached_exec_writes_the_pid_file() {
    if skip("detached_exec_writes_the_pid_file") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("sleep 60");
    let cid = running(&rt, &b, "execd");
    let pidfile = b.path().join("exec.pid");
    let out = rt
        .cmd()
        .args(["exec", "-d", "--pid-file"])
        .arg(&pidfile)
        .args([&cid, "sleep", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("exec -d");
    assert!(out.success());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .parse()
        .expect("decimal");
    let pids: Vec<i32> =
        serde_json::from_str(&rt.ok(&["ps", "--format", "json", &cid])).expect("pids");
    assert!(pids.contains(&pid), "{pid} in {pids:?}");
}

/// runc writes `--pid-file` in the foreground too (conmon reads it while the process
/// runs): the file names the exec'd process while it is still running.
#[test]
fn foreground_exec_writes_the_pid_file_while_the_process_runs() {
    use std::io::{BufRead, Write};
    if skip("foreground_exec_writes_the_pid_file_while_the_process_runs") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("sleep 60");
    let cid = running(&rt, &b, "execfg");
    let pidfile = b.path().join("exec.pid");
    let mut child = rt
        .cmd()
        .args(["exec", "--pid-file"])
        .arg(&pidfile)
        .args([&cid, "sh", "-c", "echo $$; read go"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("exec");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the process's pid");
    let written = (0..200).find_map(|_| {
        let text = std::fs::read_to_string(&pidfile).ok();
        if text.is_none() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        text
    });
    // Let the process finish before asserting, so a failure leaves nothing waiting.
    let nspid = written.as_deref().map(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            .unwrap_or_default()
            .to_string()
    });
    let _ = child.stdin.take().expect("stdin").write_all(b"go\n");
    let status = child.wait().expect("exec exits");
    assert!(status.success(), "{status}");
    let nspid = nspid.expect("the pid file is written while the process runs");
    assert_eq!(nspid, first.trim(), "the pid file names the exec'd process");
}

#[test]
fn exec_cap_never_sets_inheritable_and_no_fd_leaks() {
    if skip("exec_cap_never_sets_inheritable_and_no_fd_leaks") {
        return;
    }
    let rt = Runtime::new();
    let cid = running(&rt, &Bundle::sh("sleep 60"), "execcap");
    let out = exec(
        &rt,
        &[
            "--cap",
            "CAP_SYS_ADMIN",
            &cid,
            "grep",
            "-E",
            "CapInh|CapEff",
            "/proc/self/status",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("CapInh:\t0000000000000000"), "{text}");
    assert!(
        text.contains("CapEff:\t00000000202"),
        "CAP_SYS_ADMIN (bit 21) effective: {text}"
    );
    let out = exec(
        &rt,
        &[
            &cid,
            "sh",
            "-c",
            "ls /proc/self/fd | sort -n | tr '\\n' ' '",
        ],
    );
    assert_eq!(stdout(&out), "0 1 2 3 ");
}

#[test]
fn exec_user_env_cwd_flags_and_process_file() {
    if skip("exec_user_env_cwd_flags_and_process_file") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("sleep 60");
    let cid = running(&rt, &b, "execflags");
    let out = exec(
        &rt,
        &[
            "-u",
            "1000:1001",
            "-g",
            "7",
            "-e",
            "FOO=bar",
            "--cwd",
            "/tmp",
            &cid,
            "sh",
            "-c",
            "id -u; id -G; echo $FOO; pwd",
        ],
    );
    assert_eq!(
        stdout(&out),
        "1000\n1001 7\nbar\n/tmp\n",
        "{}",
        stderr(&out)
    );
    let pfile = b.path().join("process.json");
    std::fs::write(&pfile, serde_json::to_vec(&serde_json::json!({
        "args": ["sh", "-c", "echo from-file $X"], "env": ["X=1", "PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}
    })).expect("json")).expect("write");
    let out = exec(&rt, &["--process", pfile.to_str().expect("utf8"), &cid]);
    assert_eq!(stdout(&out), "from-file 1\n", "{}", stderr(&out));
    let bad = exec(&rt, &["-u", "1000:x", &cid, "true"]);
    assert_eq!(bad.status.code(), Some(255));
}

#[test]
fn exec_refuses_stopped_and_paused_containers() {
    if skip("exec_refuses_stopped_and_paused_containers") {
        return;
    }
    let rt = Runtime::new();
    let cid = running(&rt, &Bundle::sh("sleep 60"), "execpause");
    rt.ok(&["pause", &cid]);
    assert_eq!(rt.status(&cid), "paused");
    let out = exec(&rt, &[&cid, "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("paused"), "{}", stderr(&out));
    rt.ok(&["resume", &cid]);
    assert_eq!(rt.status(&cid), "running");
    rt.ok(&["kill", &cid, "KILL"]);
    for _ in 0..200 {
        if rt.status(&cid) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = exec(&rt, &[&cid, "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
}

#[test]
fn exec_joins_a_user_namespaced_container() {
    if skip("exec_joins_a_user_namespaced_container") {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::sh("sleep 60");
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(serde_json::json!({"type": "user"}));
    b.config["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    b.config["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    let cid = running(&rt, &b, "execuserns");
    let out = exec(&rt, &[&cid, "cat", "/proc/self/uid_map"]);
    let f: Vec<String> = stdout(&out).split_whitespace().map(String::from).collect();
    assert_eq!(f, ["0", "200000", "65536"], "{}", stderr(&out));
}

#[test]
fn exec_applies_the_containers_seccomp_profile() {
    if skip("exec_applies_the_containers_seccomp_profile") {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::sh("sleep 60");
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let cid = running(&rt, &b, "execseccomp");
    let out = exec(&rt, &[&cid, "mkdir", "/tmp/x"]);
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
}
