//! A container without a terminal leaves its caller's session and process group, as runc
//! and crun do: Ctrl-C, timeout(1) or `kill 0` in the shell that ran `create` or `run -d`
//! must not reach it.

mod common;
use common::*;

/// (process group, session) of a pid, from /proc/<pid>/stat.
fn pgrp_and_session(pid: i64) -> (i64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<i64> = after
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|x| x.parse().expect("number"))
        .collect();
    (f[1], f[2])
}

fn ours() -> (i64, i64) {
    let pgrp = nix::unistd::getpgrp().as_raw() as i64;
    let sid = nix::unistd::getsid(None).expect("getsid").as_raw() as i64;
    (pgrp, sid)
}

fn sleeper() -> Bundle {
    Bundle::sh("sleep 60")
}

fn assert_own_session(rt: &Runtime, id: &str, who: &str) {
    let pid = rt.state(id)["pid"].as_i64().expect("pid");
    let (pgrp, sid) = pgrp_and_session(pid);
    let (our_pgrp, our_sid) = ours();
    assert_eq!(sid, pid, "{who}: init {pid} leads its own session");
    assert_eq!(pgrp, pid, "{who}: init {pid} leads its own process group");
    assert_ne!(sid, our_sid, "{who}");
    assert_ne!(pgrp, our_pgrp, "{who}");
}

#[test]
fn created_and_detached_containers_lead_their_own_session() {
    if skip("created_and_detached_containers_lead_their_own_session") {
        return;
    }
    let rt = Runtime::new();
    let b = sleeper();
    let created = id("sesscreate");
    let out = rt.create(&b, &created, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_own_session(&rt, &created, "create");
    let detached = id("sessdetach");
    let out = rt.run_detached(&b, &detached);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_own_session(&rt, &detached, "run -d");
}

/// A shell in a process group of its own runs `run -d`, then signals its whole group.
/// The container has no pid namespace, so a SIGTERM that reached its init would end it.
fn survives_kill_0(rt: &Runtime, name: &str) -> String {
    let mut b = sleeper();
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "pid");
    b.write();
    let cid = id(name);
    rt.track(&cid);
    let cmd = rt.cmd();
    let mut line = vec![cmd.get_program().to_string_lossy().into_owned()];
    line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let script = r#""$@" run -d -b "$B" "$ID" </dev/null >/dev/null 2>&1 || exit 3; kill -TERM 0"#;
    let st = std::process::Command::new("setsid")
        .args(["-w", "sh", "-c", script, "sh"])
        .args(&line)
        .env("B", b.path())
        .env("ID", &cid)
        .status()
        .expect("setsid");
    assert_eq!(
        st.code(),
        None,
        "the shell was ended by its own kill 0: {st:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    rt.status(&cid)
}

#[test]
fn kill_0_in_the_callers_process_group_does_not_reach_the_container() {
    if skip("kill_0_in_the_callers_process_group_does_not_reach_the_container") {
        return;
    }
    assert_eq!(survives_kill_0(&Runtime::new(), "kill0"), "running");
}

#[test]
fn runc_also_gives_detached_containers_their_own_session() {
    if skip("runc_also_gives_detached_containers_their_own_session") {
        return;
    }
    let Some(runc) = Runtime::runc("runc_also_gives_detached_containers_their_own_session") else {
        return;
    };
    let cid = id("runcsess");
    let out = runc.run_detached(&sleeper(), &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_own_session(&runc, &cid, "runc run -d");
    assert_eq!(survives_kill_0(&runc, "runckill0"), "running");
}
