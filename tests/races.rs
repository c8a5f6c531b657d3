//! Races (root): concurrent `create` of one id, and create/start/kill/delete of many ids at
//! once. Exactly one create of an id wins; whatever the interleaving, every command ends
//! (a deadlock guard bounds each one), none panics, and after a final `delete --force`
//! nothing is left: no state directory, cgroup, process or zombie.

mod common;
mod reliability;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use common::*;
use reliability::*;

const LIMIT: Duration = Duration::from_secs(120);

/// `gpurun --root <root>`, for threads (the `Runtime` guard stays on the test's thread).
fn gpurun(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpurun"));
    c.arg("--root").arg(root).stdin(Stdio::null());
    c
}

fn bundle(parent: &str, id: &str) -> Bundle {
    let mut b = Bundle::sh("sleep 100");
    b.config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
    b.write();
    b
}

#[test]
fn eight_concurrent_creates_of_one_id_exactly_one_wins() {
    if skip("eight_concurrent_creates_of_one_id_exactly_one_wins") {
        return;
    }
    let parent = CgroupParent::new("race-one-id");
    let rt = Runtime::new();
    let root = rt.root.path();
    for round in 0..5 {
        let id = id(&format!("same-{round}"));
        rt.track(&id);
        let b = bundle(&parent, &id);
        let barrier = Barrier::new(8);
        let outs: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let mut cmd = gpurun(root);
                        cmd.args(["create", "-b"]).arg(b.path()).arg(&id);
                        barrier.wait();
                        output_within(&mut cmd, LIMIT, "create")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("create thread"))
                .collect()
        });
        let won = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(won, 1, "round {round}: {won} creates of one id succeeded");
        for o in outs.iter().filter(|o| !o.status.success()) {
            let err = stderr(o);
            assert!(
                err.contains("container with given ID already exists"),
                "round {round}: {err}"
            );
        }
        assert_eq!(rt.status(&id), "created");
        rt.ok(&["delete", "--force", &id]);
        assert!(!rt.root.path().join(&id).exists());
    }
    assert!(
        cgroup_children(&parent).is_empty(),
        "{:?}",
        cgroup_children(&parent)
    );
}

fn race_ids() -> usize {
    std::env::var("GPURUN_RACE_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// One verb on `id`, bounded by the deadlock guard; returns its outcome for the summary
/// ("ok" or the error's kind, without the id).
fn verb(root: &Path, bundle: &Path, id: &str, verb: &str) -> String {
    let mut cmd = gpurun(root);
    match verb {
        "create" => cmd.args(["create", "-b"]).arg(bundle).arg(id),
        "kill" => cmd.args(["kill", id, "KILL"]),
        "delete" => cmd.args(["delete", "--force", id]),
        _ => cmd.args([verb, id]),
    };
    let out = output_within(&mut cmd, LIMIT, &format!("{verb} {id}"));
    let err = stderr(&out);
    assert!(!panicked(&err), "{verb} {id}: {err}");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{verb} {id}: {:?} {err}",
        out.status
    );
    if out.status.success() {
        return format!("{verb}: ok");
    }
    let msg = err.rsplit("msg=").next().unwrap_or(&err);
    let kind = msg.split(':').next().unwrap_or("");
    format!("{verb}: {}", kind.trim_matches(['"', '\n']))
}

#[test]
fn create_start_kill_delete_of_many_ids_at_once_leak_nothing_and_never_hang() {
    if skip("create_start_kill_delete_of_many_ids_at_once_leak_nothing_and_never_hang") {
        return;
    }
    let parent = CgroupParent::new("race-many");
    let rt = Runtime::new();
    let root = rt.root.path();
    let marker = format!("race-{}-", std::process::id());
    let n = race_ids();
    let ids: Vec<String> = (0..n).map(|i| format!("{marker}{i}")).collect();
    let bundles: Vec<Bundle> = ids
        .iter()
        .map(|id| {
            rt.track(id);
            bundle(&parent, id)
        })
        .collect();
    // Two ids at a time, the four verbs of each at once, each after a delay drawn from a
    // fixed sequence: eight gpurun processes in every interleaving of one id's verbs.
    let next = Mutex::new(0usize);
    let outcomes = Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = {
                    let mut next = next.lock().expect("next");
                    *next += 1;
                    *next - 1
                };
                if i >= n {
                    return;
                }
                let barrier = Barrier::new(4);
                std::thread::scope(|s| {
                    for (k, v) in ["create", "start", "kill", "delete"]
                        .into_iter()
                        .enumerate()
                    {
                        let (barrier, outcomes, id, b) =
                            (&barrier, &outcomes, &ids[i], &bundles[i]);
                        s.spawn(move || {
                            let delay = (i * 7919 + k * 104_729) % 16;
                            barrier.wait();
                            std::thread::sleep(Duration::from_millis(delay as u64));
                            let o = verb(root, b.path(), id, v);
                            *outcomes.lock().expect("outcomes").entry(o).or_insert(0) += 1;
                        });
                    }
                });
            });
        }
    });
    eprintln!(
        "{n} ids, create/start/kill/delete of each at once: {:#?}",
        outcomes.lock().expect("outcomes")
    );
    for id in &ids {
        let out = output_within(
            rt.cmd().args(["delete", "--force", id]),
            LIMIT,
            "final delete --force",
        );
        assert!(out.status.success(), "{id}: {}", stderr(&out));
    }
    let left: Vec<_> = std::fs::read_dir(root)
        .expect("state root")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "state directories left: {left:?}");
    let cgroups = cgroup_children(&parent);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let procs = processes_with(&marker);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let zombies = zombie_children();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
}

/// Found by the race above: a verb that waited for the lock while `delete` removed the
/// container read "reading state …: No such file or directory" instead of the error callers
/// match on.
#[test]
fn a_verb_that_waited_for_a_delete_reports_that_the_container_does_not_exist() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().expect("tempdir");
    let root = gpurun::state::Root::new(t.path()).expect("root");
    let held = root.create("gone").expect("create");
    let ino = std::fs::metadata(&held.dir).expect("stat").ino();
    let path = t.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        gpurun::state::Root::new(&path)
            .expect("root")
            .open("gone")
            .err()
            .map(|e| e.to_string())
    });
    // Wait until the waiter is blocked on the lock (/proc/locks shows it with "->").
    let me = std::process::id().to_string();
    let blocked = |l: &&str| {
        l.contains("->") && l.split_whitespace().any(|f| f == me) && l.contains(&format!(":{ino} "))
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while !std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| blocked(&l))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "deadlock guard: never blocked"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    held.remove().expect("remove");
    let err = waiter.join().expect("waiter");
    assert_eq!(err.as_deref(), Some("container does not exist: gone"));
}
