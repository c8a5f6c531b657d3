//! "Who is on GPU N, and since when?" through the real binary (root), on the fake node
//! whose nvidia-smi lists the processes a test writes: holders with the time they took
//! the GPU, idle holders with "idle since" from earlier runs of `gpurun gpus`,
//! `gpus --wait` released by a delete or timing out with the holder's name, and a
//! container's GPU processes with the pid the container sees, marked by `gpurun ps`.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use gpurun::gpu::fake::smi;
use gpurun::gpu::observe::OBSERVED_FILE;
use serde_json::Value;

fn unix_now() -> u64 {
    gpurun::log::unix_secs(SystemTime::now())
}

/// `2026-12-06T15:40:02Z`, as `gpurun gpus` prints a time.
fn clock(unix: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    stdout(&out).trim().to_string()
}

fn gpu_bundle(script: &str, visible: &str) -> Bundle {
    let mut b = bundle(script);
    set_env(&mut b, &format!("NVIDIA_VISIBLE_DEVICES={visible}"));
    privileged(&mut b);
    b
}

fn set_apps(node: &Node, apps: &str) {
    std::fs::write(node.host().join(smi::COMPUTE_APPS), apps).unwrap();
}

/// The holder `cid` of GPU `gpu` in `gpus --format json`.
fn holder(node: &Node, rt: &Runtime, gpu: usize, cid: &str) -> Value {
    let gpus = node.gpus_json(rt);
    let holders = gpus[gpu]["holders"].as_array().unwrap();
    holders
        .iter()
        .find(|h| h["id"] == cid)
        .cloned()
        .unwrap_or_else(|| panic!("{cid} does not hold GPU {gpu}: {holders:?}"))
}

/// Runs `f` between two readings of the clock: (before, what f gave, after).
fn timed<T>(f: impl FnOnce() -> T) -> (u64, T, u64) {
    let before = unix_now();
    let v = f();
    (before, v, unix_now())
}

#[test]
fn holders_show_since_when_and_idle_since_from_earlier_runs() {
    if skip("holders_show_since_when_and_idle_since_from_earlier_runs") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let cid = id("idle");
    let (t0, out, t1) = timed(|| node.create(&rt, &gpu_bundle("sleep 60", "0"), &cid));
    assert!(out.status.success(), "{}", stderr(&out));
    let init = rt.state(&cid)["pid"].as_i64().unwrap();
    set_apps(&node, "");
    let observed = node.dir.path().join("state").join(OBSERVED_FILE);

    // The first run has no earlier observation, and says so.
    let (r1, h, r1_end) = timed(|| holder(&node, &rt, 0, &cid));
    let acquired = h["acquired"].as_u64().unwrap();
    assert!((t0..=t1).contains(&acquired), "{h}");
    assert_eq!(h["mps"], false);
    let act = &h["activity"];
    assert_eq!(act["state"], "idle", "{h}");
    assert_eq!(act["earlier_observation"], false, "{h}");
    let since = act["since"].as_u64().unwrap();
    assert!((r1..=r1_end).contains(&since), "{h}");
    assert!(observed.exists(), "the run kept no record");
    // The table says the same, here of a run with no record before it.
    std::fs::remove_file(&observed).unwrap();
    let (r2, table, r2_end) = timed(|| node.ok(&rt, &["gpus"]));
    let row = table.lines().find(|l| l.contains(&cid)).unwrap();
    assert!(
        row.contains(&format!("pid {init}"))
            && row.contains(&format!("since {}", clock(acquired)))
            && row.contains("idle since at least")
            && row.contains("no earlier observation"),
        "{table}"
    );
    assert!(table.contains("gpurun runs no daemon"), "{table}");

    // A later run keeps the first sighting's time.
    std::thread::sleep(Duration::from_millis(1100));
    let h = holder(&node, &rt, 0, &cid);
    assert_eq!(h["activity"]["state"], "idle");
    let since = h["activity"]["since"].as_u64().unwrap();
    assert!((r2..=r2_end).contains(&since), "{h}");
    assert_eq!(h["activity"]["earlier_observation"], true, "{h}");
    let table = node.ok(&rt, &["gpus"]);
    let row = table.lines().find(|l| l.contains(&cid)).unwrap();
    assert!(
        row.contains(&format!("idle since at least {}", clock(since)))
            && !row.contains("no earlier observation"),
        "{table}"
    );

    // A GPU process of the holder makes it busy; idle again, it starts a new series.
    set_apps(&node, &format!("{init}, {GPU0}, 100\n"));
    let (b0, h, b1) = timed(|| holder(&node, &rt, 0, &cid));
    assert_eq!(h["activity"]["state"], "busy", "{h}");
    std::thread::sleep(Duration::from_millis(1100));
    set_apps(&node, "");
    let h = holder(&node, &rt, 0, &cid);
    let last_busy = h["activity"]["last_busy"].as_u64().unwrap();
    assert!((b0..=b1).contains(&last_busy), "{h}");
    assert!(h["activity"]["since"].as_u64().unwrap() > since, "{h}");
    assert_eq!(h["activity"]["earlier_observation"], false, "{h}");

    // Create and delete record lease facts only: no nvidia-smi, no observation.
    let calls = node.smi_calls().len();
    let record = std::fs::read(&observed).unwrap();
    let other = id("other");
    let out = node.create(&rt, &gpu_bundle("sleep 60", "1"), &other);
    assert!(out.status.success(), "{}", stderr(&out));
    node.ok(&rt, &["delete", "--force", &other]);
    assert_eq!(node.smi_calls().len(), calls, "{:?}", node.smi_calls());
    assert_eq!(std::fs::read(&observed).unwrap(), record);
}

/// A lease written before gpurun recorded the time says "since unknown"; one sharing
/// through MPS says so beside the holder.
#[test]
fn an_old_lease_is_since_unknown_and_an_mps_holder_is_marked() {
    if skip("an_old_lease_is_since_unknown_and_an_mps_holder_is_marked") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let me = std::process::id() as i32;
    let lease = serde_json::json!({
        "format": 1,
        "holder": {
            "container_id": "old-job",
            "root": "/run/old",
            "pid": me,
            "start_time": gpurun::linux::procstat::live_start_time(me).unwrap(),
        },
        "gpus": [GPU1],
        "sharing": "shared",
        "mps": true,
    });
    let leases = node.dir.path().join("state/leases");
    std::fs::create_dir_all(&leases).unwrap();
    std::fs::write(leases.join("old-job@0.json"), lease.to_string()).unwrap();
    let h = holder(&node, &rt, 1, "old-job");
    assert_eq!(h["acquired"], Value::Null, "{h}");
    assert_eq!(h["mps"], true, "{h}");
    let table = node.ok(&rt, &["gpus"]);
    assert!(
        table.contains(&format!(
            "old-job (MPS) (pid {me}, root /run/old, since unknown"
        )),
        "{table}"
    );
}

#[test]
fn wait_returns_when_a_delete_releases_the_gpu() {
    if skip("wait_returns_when_a_delete_releases_the_gpu") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let cid = id("waited");
    let out = node.create(&rt, &gpu_bundle("sleep 60", "0"), &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    // The GPU by its PCI address, as NVIDIA_VISIBLE_DEVICES may name it.
    let mut waiter = node
        .cmd(&rt)
        .args(["gpus", "--wait", "0000:3b:00.0", "--timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "--wait returned while {cid} held the GPU"
    );
    node.ok(&rt, &["delete", "--force", &cid]);
    let released = Instant::now();
    let status = loop {
        if let Some(s) = waiter.try_wait().unwrap() {
            break s;
        }
        if released.elapsed() > Duration::from_secs(15) {
            let _ = waiter.kill();
            let _ = waiter.wait();
            panic!("--wait did not return 15 s after the delete");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn wait_times_out_naming_the_holder() {
    if skip("wait_times_out_naming_the_holder") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let cid = id("holder");
    let out = node.create(&rt, &gpu_bundle("sleep 60", "1"), &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    let init = rt.state(&cid)["pid"].as_i64().unwrap();
    // GPU 1's MIG device stands for GPU 1.
    let started = Instant::now();
    let out = node
        .cmd(&rt)
        .args(["gpus", "--wait", smi::MIG_UUID, "--timeout", "1s"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(!out.status.success(), "--wait gave up without failing");
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("timed out")
            && err.contains(GPU1)
            && err.contains(&format!("container {cid}"))
            && err.contains(&format!("pid {init}"))
            && err.contains("since 20"),
        "{err}"
    );
    // A free GPU: at once.
    node.ok(&rt, &["gpus", "--wait", "0", "--timeout", "0"]);
    // A holder whose init has died holds nothing, deleted or not.
    node.ok(&rt, &["kill", &cid, "KILL"]);
    node.ok(&rt, &["gpus", "--wait", "1", "--timeout", "10s"]);
    let out = node
        .cmd(&rt)
        .args(["gpus", "--wait", "7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--wait 7"), "{}", stderr(&out));
}

/// The host pid of the first child of `init`, once it has one.
fn first_child(init: i64) -> i64 {
    let children = format!("/proc/{init}/task/{init}/children");
    for _ in 0..200 {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(p) = text.split_whitespace().next() {
            return p.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{init} started no child");
}

#[test]
fn gpu_processes_show_the_pid_the_container_sees_and_ps_marks_them() {
    if skip("gpu_processes_show_the_pid_the_container_sees_and_ps_marks_them") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let cid = id("nspid");
    let b = gpu_bundle("sleep 60 & echo $! > /sleeper.pid; wait", "0");
    let out = node.create(&rt, &b, &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.ok(&["start", &cid]);
    let init = rt.state(&cid)["pid"].as_i64().unwrap();
    let sleeper = first_child(init);
    let mut inner = String::new();
    for _ in 0..200 {
        inner = std::fs::read_to_string(b.rootfs().join("sleeper.pid")).unwrap_or_default();
        if inner.ends_with('\n') {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let inner: i64 = inner.trim().parse().unwrap();
    assert_ne!(inner, sleeper, "the container has its own pid namespace");
    set_apps(
        &node,
        &format!("{sleeper}, {GPU0}, 300\n{init}, {GPU0}, 20\n"),
    );

    let gpus = node.gpus_json(&rt);
    let procs = gpus[0]["processes"].as_array().unwrap();
    let of = |host: i64| procs.iter().find(|p| p["pid"] == host).unwrap();
    assert_eq!(of(sleeper)["container_pid"], inner, "{procs:?}");
    assert_eq!(of(init)["container_pid"], 1, "{procs:?}");
    assert_eq!(of(sleeper)["container"], cid.as_str());

    // `ps` inside the container shows the same pids.
    let inside = node.ok(&rt, &["exec", &cid, "ps", "-o", "pid,comm"]);
    let pid_of = |cmd: &str| {
        inside
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(cmd))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|p| p.parse::<i64>().ok())
    };
    assert_eq!(pid_of("sleep"), Some(inner), "{inside}");
    assert_eq!(pid_of("sh"), Some(1), "{inside}");
    let table = node.ok(&rt, &["gpus"]);
    assert!(
        table.contains(&format!("{sleeper} ({cid}, 300 MiB) pid {inner} inside")),
        "{table}"
    );

    // `ps ID` marks them; its JSON stays the array of pids containerd reads, and asks
    // no nvidia-smi.
    let ps = node.ok(&rt, &["ps", &cid]);
    let mut lines = ps.lines();
    assert!(lines.next().unwrap().starts_with("GPU "), "{ps}");
    let marked = |host: i64| {
        ps.lines()
            .find(|l| l.split_whitespace().nth(2) == Some(&host.to_string()))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    assert_eq!(marked(sleeper).as_deref(), Some("0=300MiB"), "{ps}");
    assert_eq!(marked(init).as_deref(), Some("0=20MiB"), "{ps}");
    let calls = node.smi_calls().len();
    let json = node.ok(&rt, &["ps", "--format", "json", &cid]);
    let mut pids: Vec<i64> = serde_json::from_str(&json).unwrap();
    assert_eq!(json, format!("{}\n", serde_json::to_string(&pids).unwrap()));
    pids.sort_unstable();
    let mut want = vec![init, sleeper];
    want.sort_unstable();
    assert_eq!(pids, want);
    assert_eq!(
        node.smi_calls().len(),
        calls,
        "ps --format json ran nvidia-smi"
    );

    // nvidia-smi failing: the table unmarked, with a warning.
    let smi_path = node.host().join("usr/bin/nvidia-smi");
    std::fs::write(&smi_path, "#!/bin/sh\necho 'no driver' >&2\nexit 9\n").unwrap();
    let out = node.cmd(&rt).args(["ps", &cid]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("UID "), "{text}");
    assert!(text.contains(&sleeper.to_string()), "{text}");
    assert!(stderr(&out).contains("not marked"), "{}", stderr(&out));
}
