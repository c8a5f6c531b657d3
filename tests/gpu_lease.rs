//! Leases: exclusive refusal names the holder, stale leases are ignored, release, list.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gpurun::config::Sharing;
use gpurun::gpu::lease::{Holder, Leases};
use gpurun::linux::procstat::{self, ProcState};

const G0: &str = "GPU-00000000-0000-0000-0000-000000000000";
const G1: &str = "GPU-11111111-1111-1111-1111-111111111111";

fn me(id: &str, root: &str) -> Holder {
    let pid = std::process::id() as i32;
    Holder {
        container_id: id.into(),
        root: PathBuf::from(root),
        pid,
        start_time: procstat::live_start_time(pid).expect("own stat"),
    }
}

/// A pid that has exited: a child this test started and reaped.
fn dead_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

#[test]
fn exclusive_refuses_a_second_live_holder_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let l = Leases::new(t.path());
    l.acquire(
        &me("job-a", "/run/containerd/runc/k8s.io"),
        &[G0.into()],
        Sharing::Exclusive,
    )
    .unwrap();
    let e = l
        .acquire(
            &me("job-b", "/run/gpurun"),
            &[G1.into(), G0.into()],
            Sharing::Shared,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(G0) && e.contains("job-a") && e.contains("/run/containerd/runc/k8s.io"),
        "{e}"
    );
    // Another GPU is free.
    l.acquire(&me("job-b", "/run/gpurun"), &[G1.into()], Sharing::Shared)
        .unwrap();
    // An exclusive request on a shared-held GPU is refused too.
    let e = l
        .acquire(
            &me("job-c", "/run/gpurun"),
            &[G1.into()],
            Sharing::Exclusive,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains(G1) && e.contains("job-b"), "{e}");
}

#[test]
fn shared_holders_coexist_and_list_shows_them() {
    let t = tempfile::tempdir().unwrap();
    let l = Leases::new(t.path());
    l.acquire(&me("a", "/r"), &[G0.into()], Sharing::Shared)
        .unwrap();
    l.acquire(&me("b", "/r"), &[G0.into()], Sharing::Shared)
        .unwrap();
    // Same id under another root is another holder.
    l.acquire(&me("a", "/other"), &[G0.into()], Sharing::Shared)
        .unwrap();
    let mut ids: Vec<(String, PathBuf)> = l
        .list()
        .unwrap()
        .into_iter()
        .map(|x| (x.holder.container_id, x.holder.root))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("a".into(), "/other".into()),
            ("a".into(), "/r".into()),
            ("b".into(), "/r".into())
        ]
    );
}

#[test]
fn stale_leases_are_ignored_and_removed() {
    let t = tempfile::tempdir().unwrap();
    let l = Leases::new(t.path());
    let mut dead = me("gone", "/r");
    dead.pid = dead_pid();
    l.acquire(&dead, &[G0.into()], Sharing::Exclusive).unwrap();
    let mut reused = me("reused", "/r");
    reused.start_time += 1; // the pid now belongs to another process
    l.acquire(&reused, &[G1.into()], Sharing::Exclusive)
        .unwrap();
    l.acquire(
        &me("new", "/r"),
        &[G0.into(), G1.into()],
        Sharing::Exclusive,
    )
    .unwrap();
    let left: Vec<String> = l
        .list()
        .unwrap()
        .into_iter()
        .map(|x| x.holder.container_id)
        .collect();
    assert_eq!(left, ["new"]);
    let files = std::fs::read_dir(t.path().join("leases")).unwrap().count();
    assert_eq!(files, 2, "the lock file and one lease");
}

#[test]
fn release_frees_the_gpu() {
    let t = tempfile::tempdir().unwrap();
    let l = Leases::new(t.path());
    l.acquire(&me("a", "/r"), &[G0.into()], Sharing::Exclusive)
        .unwrap();
    assert!(l
        .acquire(&me("b", "/r"), &[G0.into()], Sharing::Shared)
        .is_err());
    l.release("a", Path::new("/r")).unwrap();
    l.release("a", Path::new("/r")).unwrap();
    l.acquire(&me("b", "/r"), &[G0.into()], Sharing::Shared)
        .unwrap();
}

#[test]
fn hostile_ids_and_lease_files() {
    let t = tempfile::tempdir().unwrap();
    let l = Leases::new(t.path());
    for id in ["../x", "a/b", "", "leases", "proc-driver-nvidia"] {
        assert!(
            l.acquire(&me(id, "/r"), &[G0.into()], Sharing::Shared)
                .is_err(),
            "{id:?}"
        );
    }
    // The one id rule of every verb (runc's): a hidden name is a valid container id.
    l.acquire(&me(".hidden", "/r"), &[G0.into()], Sharing::Shared)
        .unwrap();
    l.release(".hidden", Path::new("/r")).unwrap();
    std::fs::write(t.path().join("leases/garbage.json"), "{").unwrap();
    assert!(l.list().unwrap().is_empty());
    assert!(!t.path().join("leases/garbage.json").exists());
}

#[test]
fn concurrent_exclusive_acquires_serialize() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                Leases::new(&dir)
                    .acquire(
                        &me(&format!("c{i}"), "/r"),
                        &[G0.into()],
                        Sharing::Exclusive,
                    )
                    .is_ok()
            })
        })
        .collect();
    let won = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(won, 1);
}

#[test]
fn listing_a_table_never_written_creates_nothing() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    assert!(Leases::new(&state).list().unwrap().is_empty());
    assert!(!state.exists(), "list made {}", state.display());
}

/// Containers created before the GPU state had its own directory hold their leases in the
/// old one: the new table still sees them, refuses what they exclude, and writes nothing
/// there.
#[test]
fn a_lease_at_the_old_location_is_honoured() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    Leases::new(&old)
        .acquire(
            &me("before", "/run/gpurun"),
            &[G0.into()],
            Sharing::Exclusive,
        )
        .unwrap();
    let l = Leases::new(&new).with_legacy(&old);

    let listed = l.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].holder.container_id, "before");
    let e = l
        .acquire(&me("after", "/r"), &[G0.into()], Sharing::Shared)
        .unwrap_err()
        .to_string();
    assert!(e.contains("before") && e.contains(G0), "{e}");
    let e = l
        .check("after", Path::new("/r"), &[G0.into()], Sharing::Shared)
        .unwrap_err()
        .to_string();
    assert!(e.contains("before"), "{e}");

    l.acquire(&me("after", "/r"), &[G1.into()], Sharing::Shared)
        .unwrap();
    let old_files = std::fs::read_dir(old.join("leases")).unwrap().count();
    assert_eq!(old_files, 2, "the old table's lock and its one lease");
    assert!(new.join("leases").read_dir().unwrap().count() == 2);

    // Its delete, by the new binary, releases it.
    l.release("before", Path::new("/run/gpurun")).unwrap();
    l.acquire(&me("after", "/r"), &[G0.into()], Sharing::Exclusive)
        .unwrap();
}

#[test]
fn the_node_table_reads_the_old_location_only_with_the_default_state_dir() {
    let mut cfg = gpurun::config::Config::default();
    assert_eq!(
        cfg.gpus.state_dir,
        Path::new(gpurun::config::DEFAULT_STATE_DIR)
    );
    assert!(format!("{:?}", Leases::for_node(&cfg)).contains(gpurun::gpu::lease::LEGACY_STATE_DIR));
    cfg.gpus.state_dir = PathBuf::from("/srv/gpu-state");
    assert!(!format!("{:?}", Leases::for_node(&cfg)).contains("/run/gpurun"));
}

/// A container init that has exited but is not yet reaped (its parent is busy) holds
/// nothing: its GPU is free for the next container.
#[test]
fn a_zombie_init_releases_its_lease() {
    let t = tempfile::tempdir().unwrap();
    let l = Leases::new(t.path());
    let mut init = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = init.id() as i32;
    let holder = Holder {
        start_time: procstat::live_start_time(pid).expect("init start time"),
        pid,
        ..me("zombie-init", "/r")
    };
    l.acquire(&holder, &[G0.into()], Sharing::Exclusive)
        .unwrap();
    init.kill().unwrap();
    let zombie = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        procstat::read(pid).is_ok_and(|s| s.state == ProcState::Zombie)
    });
    assert!(zombie, "pid {pid} never became a zombie");
    let next = l.acquire(&me("next", "/r"), &[G0.into()], Sharing::Exclusive);
    init.wait().unwrap();
    next.expect("a zombie's lease is stale");
    let held: Vec<String> = l
        .list()
        .unwrap()
        .into_iter()
        .map(|x| x.holder.container_id)
        .collect();
    assert_eq!(held, ["next"]);
}
