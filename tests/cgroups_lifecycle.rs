//! The container cgroup on this host, as root: create with limits, join, list, freeze,
//! signal, update, stats, destroy. Each test works under its own `gpurun-test-*` parent and
//! removes it. Without root every test prints "skipping: needs root" and passes; under
//! `CI=true` it fails instead.

#[path = "cgroups_support.rs"]
mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use gpurun::linux::cgroups::{
    default_device_rules, resolve, Cgroup, CgroupConfig, CgroupRoot, Layout,
};
use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use support::{proc_cgroup, read, root_or_skip, spawn_sleep, unique_parent, CgroupGuard, Helper};

const MIB: i64 = 1 << 20;

fn limits(memory: i64, pids: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .swap(memory)
                .build()
                .expect("memory"),
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .expect("pids"),
        )
        .devices(default_device_rules())
        .build()
        .expect("resources")
}

fn create(root: &CgroupRoot, path: &str, r: Option<&LinuxResources>) -> (CgroupGuard, Vec<String>) {
    let cfg = CgroupConfig {
        cgroups_path: Some(path),
        container_id: "ctr",
        resources: r,
        systemd: false,
        root,
    };
    let (cg, warnings) = Cgroup::create(&cfg).expect("create cgroup");
    (CgroupGuard(cg), warnings)
}

/// The directory holding `controller`'s files for this cgroup.
fn dir_of(cg: &Cgroup, controller: &str) -> PathBuf {
    let st = cg.state();
    match st.layout {
        Layout::Unified => st.unified.clone().expect("v2 dir"),
        _ => st.v1.get(controller).cloned().expect("v1 dir"),
    }
}

#[test]
fn create_writes_memory_and_pids_limits_before_any_process_joins() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("limits");
    let r = limits(32 * MIB, 16);
    let (cg, warnings) = create(&root, &format!("/{parent}/ctr"), Some(&r));
    assert!(warnings.is_empty(), "{warnings:?}");
    let mem = dir_of(&cg.0, "memory");
    let pids = dir_of(&cg.0, "pids");
    assert!(mem.ends_with(format!("{parent}/ctr")), "{}", mem.display());
    if root.layout() == Layout::Unified {
        assert_eq!(read(&mem.join("memory.max")), (32 * MIB).to_string());
        assert_eq!(read(&mem.join("memory.swap.max")), "0");
    } else {
        assert_eq!(
            read(&mem.join("memory.limit_in_bytes")),
            (32 * MIB).to_string()
        );
        assert_eq!(
            read(&mem.join("memory.memsw.limit_in_bytes")),
            (32 * MIB).to_string()
        );
    }
    assert_eq!(read(&pids.join("pids.max")), "16");
    assert!(cg.0.pids().expect("pids").is_empty());
}

#[test]
fn a_task_joins_every_hierarchy_and_the_unified_leaf() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("join");
    let (cg, _) = create(&root, &format!("/{parent}/ctr"), None);
    let child = spawn_sleep();
    cg.0.add_task(child.pid()).expect("add task");
    assert_eq!(cg.0.pids().expect("pids"), [child.pid()]);
    let lines = proc_cgroup(child.pid());
    let want = format!("/{parent}/ctr");
    let st = cg.0.state();
    for controller in st.v1.keys() {
        let line = lines
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("{controller} missing from {lines}"));
        assert!(line.ends_with(&want), "{controller}: {line}");
    }
    if st.unified.is_some() {
        let line = lines
            .lines()
            .find(|l| l.starts_with("0::"))
            .expect("cgroup2 line");
        assert_eq!(line, format!("0::{want}"));
    }
}

#[test]
fn freeze_and_thaw_stop_and_resume_the_container() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("freeze");
    let (cg, _) = create(&root, &format!("/{parent}/ctr"), None);
    let child = spawn_sleep();
    cg.0.add_task(child.pid()).expect("add task");
    assert!(!cg.0.is_frozen().expect("state"));
    cg.0.freeze().expect("freeze");
    assert!(cg.0.is_frozen().expect("state"));
    if root.layout() != Layout::Unified {
        assert_eq!(
            read(&dir_of(&cg.0, "freezer").join("freezer.state")),
            "FROZEN"
        );
    }
    cg.0.thaw().expect("thaw");
    assert!(!cg.0.is_frozen().expect("state"));
    if root.layout() != Layout::Unified {
        assert_eq!(
            read(&dir_of(&cg.0, "freezer").join("freezer.state")),
            "THAWED"
        );
    }
}

#[test]
fn signal_all_sigkill_kills_every_process() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("kill");
    let (cg, _) = create(&root, &format!("/{parent}/ctr"), None);
    let mut a = spawn_sleep();
    let mut b = spawn_sleep();
    cg.0.add_task(a.pid()).expect("add a");
    cg.0.add_task(b.pid()).expect("add b");
    cg.0.signal_all(Signal::SIGKILL).expect("kill all");
    assert_eq!(a.wait().signal(), Some(libc::SIGKILL));
    assert_eq!(b.wait().signal(), Some(libc::SIGKILL));
}

#[test]
fn signal_all_sigterm_goes_through_freeze_signal_thaw() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("term");
    let (cg, _) = create(&root, &format!("/{parent}/ctr"), None);
    let mut a = spawn_sleep();
    cg.0.add_task(a.pid()).expect("add");
    cg.0.signal_all(Signal::SIGTERM).expect("signal all");
    assert_eq!(a.wait().signal(), Some(libc::SIGTERM));
    assert!(!cg.0.is_frozen().expect("state"), "thawed again");
}

#[test]
fn signal_all_sigkill_kills_a_paused_container() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("pausedkill");
    let (cg, _) = create(&root, &format!("/{parent}/ctr"), None);
    let mut a = spawn_sleep();
    cg.0.add_task(a.pid()).expect("add");
    cg.0.freeze().expect("freeze");
    cg.0.signal_all(Signal::SIGKILL).expect("kill all");
    assert_eq!(a.wait().signal(), Some(libc::SIGKILL));
}

fn all_dirs(cg: &Cgroup) -> Vec<PathBuf> {
    let st = cg.state();
    let mut dirs: Vec<PathBuf> = st.dirs().iter().map(|d| d.to_path_buf()).collect();
    dirs.extend(st.created.iter().cloned());
    dirs
}

#[test]
fn destroy_kills_leftovers_and_removes_every_directory_and_created_parent() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("destroy");
    let (cg, _) = create(
        &root,
        &format!("/{parent}/a/ctr"),
        Some(&limits(64 * MIB, 32)),
    );
    let mut child = spawn_sleep();
    cg.0.add_task(child.pid()).expect("add task");
    let dirs = all_dirs(&cg.0);
    let tops: Vec<PathBuf> =
        cg.0.state()
            .created
            .iter()
            .filter(|d| d.ends_with(&parent))
            .cloned()
            .collect();
    assert_eq!(
        tops.len(),
        cg.0.state().dirs().len(),
        "one created top per hierarchy: {tops:?}"
    );
    cg.0.destroy().expect("destroy");
    assert_eq!(child.wait().signal(), Some(libc::SIGKILL));
    for d in dirs {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    cg.0.destroy().expect("destroying again is fine");
}

#[test]
fn destroy_keeps_a_created_parent_that_another_cgroup_still_uses() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("shared");
    let (first, _) = create(&root, &format!("/{parent}/one"), None);
    let (second, _) = create(&root, &format!("/{parent}/two"), None);
    first.0.destroy().expect("destroy first");
    let second_dirs: Vec<PathBuf> = second
        .0
        .state()
        .dirs()
        .iter()
        .map(|d| d.to_path_buf())
        .collect();
    for d in &second_dirs {
        assert!(d.exists(), "{} was removed with its sibling", d.display());
    }
    drop(second);
    // The shared parent was created by the first cgroup; nobody owns it now.
    for d in &second_dirs {
        let _ = std::fs::remove_dir(d.parent().expect("parent"));
    }
}

#[test]
fn update_changes_limits_and_leaves_device_rules_alone() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("update");
    let (cg, _) = create(
        &root,
        &format!("/{parent}/ctr"),
        Some(&limits(32 * MIB, 16)),
    );
    let devices_before = (root.layout() != Layout::Unified)
        .then(|| read(&dir_of(&cg.0, "devices").join("devices.list")));
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(64).build().expect("pids"))
        .build()
        .expect("resources");
    let warnings = cg.0.update(&r).expect("update");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(read(&dir_of(&cg.0, "pids").join("pids.max")), "64");
    if let Some(before) = devices_before {
        assert_eq!(read(&dir_of(&cg.0, "devices").join("devices.list")), before);
    }
}

#[test]
fn pids_limit_stops_a_process_from_forking_past_it() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("forkbomb");
    let (cg, _) = create(
        &root,
        &format!("/{parent}/ctr"),
        Some(&limits(256 * MIB, 8)),
    );
    let mut helper = Helper::spawn("spawn:20");
    cg.0.add_task(helper.pid()).expect("add helper");
    let started: usize = helper.go().parse().expect("count of children");
    // The helper itself counts against the limit, and /dev/null (for the children's stdin)
    // is allowed by the default device rules, so only pids.max stops it.
    assert!(
        started > 0 && started < 20,
        "pids.max 8 let {started} children start"
    );
    helper.wait();
    let events = read(&dir_of(&cg.0, "pids").join("pids.events"));
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("max ") && l != "max 0"),
        "{events}"
    );
}

#[test]
fn memory_limit_oom_kills_and_is_counted() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("oom");
    let (cg, _) = create(
        &root,
        &format!("/{parent}/ctr"),
        Some(&limits(32 * MIB, 64)),
    );
    assert_eq!(cg.0.oom_events().expect("oom count"), 0);
    let mut helper = Helper::spawn("alloc:96");
    cg.0.add_task(helper.pid()).expect("add helper");
    let printed = helper.go();
    assert!(printed.is_empty(), "the helper finished: {printed}");
    assert_eq!(helper.wait().signal(), Some(libc::SIGKILL));
    assert!(cg.0.oom_events().expect("oom count") >= 1);
}

#[test]
fn stats_report_limits_and_usage_in_runc_shape() {
    let Some(root) = root_or_skip() else { return };
    let parent = unique_parent("stats");
    let (cg, _) = create(
        &root,
        &format!("/{parent}/ctr"),
        Some(&limits(32 * MIB, 16)),
    );
    let child = spawn_sleep();
    cg.0.add_task(child.pid()).expect("add task");
    let s = cg.0.stats().expect("stats");
    assert_eq!(s["memory"]["usage"]["limit"], 32 * MIB);
    assert_eq!(s["pids"]["current"], 1);
    assert_eq!(s["pids"]["limit"], 16);
    for key in ["cpu", "cpuset", "blkio", "hugetlb"] {
        assert!(s.get(key).is_some(), "{key} missing: {s}");
    }
}

#[test]
fn relative_paths_start_at_the_callers_own_cgroup_in_each_hierarchy() {
    // Reads the real tables only; creates nothing.
    let Ok(root) = CgroupRoot::system() else {
        gpurun::skip::cannot_run(
            "relative_paths_start_at_the_callers_own_cgroup_in_each_hierarchy",
            "no cgroup mounts",
        );
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
    let p = resolve(&root, Some("gpurun-x/ctr"), "id").expect("resolve");
    for v in &p.v1 {
        let line = own
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == v.controllers[0]))
            })
            .expect("own cgroup line");
        let own_path = line
            .splitn(3, ':')
            .nth(2)
            .expect("path")
            .trim_start_matches('/');
        let mut want = v.mountpoint.clone();
        if !own_path.is_empty() {
            want.push(own_path);
        }
        assert_eq!(v.leaf, want.join("gpurun-x/ctr"), "{:?}", v.controllers);
    }
    assert!(p.v1.iter().all(|v| v.leaf.starts_with(root.mount())));
}
