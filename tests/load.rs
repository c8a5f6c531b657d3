//! Load (root): many containers created, run and deleted in parallel batches — half with
//! `run` in the foreground, half with create/start/state/delete — all succeed, and nothing
//! is left: no mount, cgroup, fd of this process, zombie or container process.
//! `GPURUN_LOAD_CONTAINERS` (default 200) and `GPURUN_LOAD_PARALLEL` (default 8) size it
//! (`make stress` raises them).

mod common;
mod reliability;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use reliability::*;

const LIMIT: Duration = Duration::from_secs(120);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gpurun(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpurun"));
    c.arg("--root").arg(root).stdin(Stdio::null());
    c
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = output_within(gpurun(root).args(args), LIMIT, &args.join(" "));
    assert!(out.status.success(), "gpurun {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// One container's whole life; returns what it printed.
fn life(root: &Path, bundle: &Path, id: &str, foreground: bool) -> String {
    if foreground {
        let out = output_within(
            gpurun(root).args(["run", "-b"]).arg(bundle).arg(id),
            LIMIT,
            "run",
        );
        assert_eq!(out.status.code(), Some(0), "run {id}: {}", stderr(&out));
        return stdout(&out);
    }
    // The container writes to create's stdout, long after create returned: a file.
    let log = bundle.join("out");
    let err = bundle.join("err");
    let mut cmd = gpurun(root);
    cmd.args(["create", "-b"])
        .arg(bundle)
        .arg(id)
        .stdout(std::fs::File::create(&log).expect("out file"))
        .stderr(std::fs::File::create(&err).expect("err file"));
    let status = status_within(&mut cmd, LIMIT, "create");
    let err = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "create {id}: {err}");
    ok(root, &["start", id]);
    let deadline = Instant::now() + LIMIT;
    while !ok(root, &["state", id]).contains("\"stopped\"") {
        assert!(
            Instant::now() < deadline,
            "deadlock guard: {id} never stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    ok(root, &["delete", id]);
    std::fs::read_to_string(&log).expect("container output")
}

#[test]
fn many_containers_in_parallel_batches_all_succeed_and_leak_nothing() {
    if skip("many_containers_in_parallel_batches_all_succeed_and_leak_nothing") {
        return;
    }
    let n = env_or("GPURUN_LOAD_CONTAINERS", 200);
    let parallel = env_or("GPURUN_LOAD_PARALLEL", 8);
    let parent = CgroupParent::new("load");
    let rt = Runtime::new();
    let root = rt.root.path();
    let work = tempfile::Builder::new()
        .prefix("gpurun-load-")
        .tempdir()
        .expect("tempdir");
    let marker = format!("load-{}-", std::process::id());
    let bundles: Vec<(String, PathBuf)> = (0..n)
        .map(|i| {
            let id = format!("{marker}{i}");
            let dir = work.path().join(&id);
            std::fs::create_dir(&dir).expect("bundle dir");
            let mut config = gpurun::features::default_spec(false);
            config["root"]["path"] = shared_rootfs().display().to_string().into();
            config["process"]["terminal"] = false.into();
            config["process"]["args"] =
                serde_json::json!(["sh", "-c", "echo hello from $(hostname)"]);
            config["hostname"] = id.clone().into();
            config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
            std::fs::write(
                dir.join("config.json"),
                serde_json::to_vec(&config).expect("json"),
            )
            .expect("config.json");
            rt.track(&id);
            (id, dir)
        })
        .collect();
    let watched: [&Path; 3] = [root, work.path(), shared_rootfs()];
    let mounts_before = mounts_under(&watched);
    let table_before = mount_table().len();
    let fds_before = fd_count();

    let next = Mutex::new(0usize);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = {
                    let mut next = next.lock().expect("next");
                    *next += 1;
                    *next - 1
                };
                let Some((id, dir)) = bundles.get(i) else {
                    return;
                };
                let out = life(root, dir, id, i % 2 == 0);
                assert_eq!(out, format!("hello from {id}\n"), "{id}");
            });
        }
    });
    let took = started.elapsed();

    let left: Vec<_> = std::fs::read_dir(root)
        .expect("state root")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "state directories left: {left:?}");
    assert_eq!(mounts_under(&watched), mounts_before, "mounts left");
    let cgroups = cgroup_children(&parent);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    assert_eq!(fd_count(), fds_before, "fds of the test process");
    let zombies = zombie_children();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    let procs = processes_with(&marker);
    assert!(procs.is_empty(), "container processes left: {procs:?}");
    eprintln!(
        "{n} containers, {parallel} at a time, in {took:?}; mount table {table_before} -> {} lines",
        mount_table().len()
    );
}
