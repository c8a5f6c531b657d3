//! `Cgroup` against a fake cgroupfs in a temp dir: what is created, and what an error
//! leaves behind.

use std::fs as stdfs;

use oci_spec::runtime::LinuxResourcesBuilder;

use super::test_support::rule;
use super::*;

/// A fake hybrid host under `dir`: v1 memory, pids, devices, freezer, and cgroup2 at
/// `unified`, with only the top directories of each hierarchy.
fn fake_hybrid(dir: &Path) -> CgroupRoot {
    let mut mountinfo = format!("31 23 0:28 / {} rw - tmpfs tmpfs rw\n", dir.display());
    for (i, c) in ["memory", "pids", "devices", "freezer"].iter().enumerate() {
        stdfs::create_dir(dir.join(c)).expect("hierarchy dir");
        mountinfo.push_str(&format!(
            "{} 31 0:{} / {}/{c} rw - cgroup cgroup rw,{c}\n",
            40 + i,
            40 + i,
            dir.display()
        ));
    }
    stdfs::create_dir(dir.join("unified")).expect("unified dir");
    mountinfo.push_str(&format!(
        "50 31 0:50 / {}/unified rw - cgroup2 cgroup2 rw\n",
        dir.display()
    ));
    let own = "4:memory:/\n3:pids:/\n2:devices:/\n1:freezer:/\n0::/\n";
    CgroupRoot::from_tables(dir, &mountinfo, own).expect("fake tables")
}

fn all_dirs_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in stdfs::read_dir(dir).expect("readable").flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
            out.extend(all_dirs_below(&e.path()));
        }
    }
    out
}

#[test]
fn a_failed_create_removes_every_directory_it_made() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fake_hybrid(tmp.path());
    let before = all_dirs_below(tmp.path());
    let cfg = CgroupConfig {
        cgroups_path: Some("/gpurun/a/ctr"),
        container_id: "ctr",
        resources: None,
        systemd: false,
        root: &root,
    };
    // The fake hierarchies have no cgroup.procs, so create fails after making directories.
    let err = Cgroup::create(&cfg).expect_err("no kernel behind the fake cgroupfs");
    assert!(err.to_string().contains("cgroup.procs"), "{err}");
    assert_eq!(all_dirs_below(tmp.path()), before);
}

#[test]
fn invalid_device_rules_fail_before_any_directory_is_made() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fake_hybrid(tmp.path());
    let before = all_dirs_below(tmp.path());
    let r = LinuxResourcesBuilder::default()
        .devices(vec![rule(true, 'c', Some(1), Some(3), "rwx")])
        .build()
        .expect("resources");
    let cfg = CgroupConfig {
        cgroups_path: Some("/gpurun/ctr"),
        container_id: "ctr",
        resources: Some(&r),
        systemd: false,
        root: &root,
    };
    let err = Cgroup::create(&cfg).expect_err("bad access");
    assert!(
        matches!(err, CgroupError::InvalidDeviceRule { .. }),
        "{err}"
    );
    assert_eq!(all_dirs_below(tmp.path()), before);
}

#[test]
fn the_systemd_driver_validates_before_it_connects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fake_hybrid(tmp.path());
    let mut cfg = CgroupConfig {
        cgroups_path: Some("/not/systemd/form"),
        container_id: "ctr",
        resources: None,
        systemd: true,
        root: &root,
    };
    let err = Cgroup::create(&cfg).expect_err("bad form");
    assert!(err.to_string().contains("slice:prefix:name"), "{err}");
    let bad = LinuxResourcesBuilder::default()
        .devices(vec![rule(true, 'c', Some(1), Some(3), "rwx")])
        .build()
        .expect("resources");
    cfg.cgroups_path = Some("system.slice:gpurun:ctr");
    cfg.resources = Some(&bad);
    let err = Cgroup::create(&cfg).expect_err("bad rule");
    assert!(
        matches!(err, CgroupError::InvalidDeviceRule { .. }),
        "{err}"
    );
    assert!(all_dirs_below(&tmp.path().join("memory")).is_empty());
}

#[test]
fn on_v1_the_systemd_driver_refuses_device_rules_systemd_would_widen_on_reload() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fake_hybrid(tmp.path());
    for rules in [
        // A whole major with no name in /proc/devices.
        vec![rule(true, 'c', Some(4000), None, "rw")],
        // A deny rule under a default of allow.
        vec![
            rule(true, 'a', None, None, "rwm"),
            rule(false, 'c', Some(5), Some(1), "rwm"),
        ],
    ] {
        let r = LinuxResourcesBuilder::default()
            .devices(rules)
            .build()
            .expect("resources");
        let cfg = CgroupConfig {
            cgroups_path: Some("system.slice:gpurun:ctr"),
            container_id: "ctr",
            resources: Some(&r),
            systemd: true,
            root: &root,
        };
        let err = Cgroup::create(&cfg).expect_err("refused on v1");
        assert!(
            matches!(err, CgroupError::InvalidResources(_))
                && err
                    .to_string()
                    .contains("daemon-reload would then allow every device"),
            "{err}"
        );
    }
    assert!(all_dirs_below(&tmp.path().join("memory")).is_empty());
}

#[test]
fn the_systemd_drivers_planned_state_names_the_unit_and_its_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fake_hybrid(tmp.path());
    let st =
        systemd_cgroup::planned_state(&root, "kubepods-pod1.slice:cri:abc", "abc").expect("state");
    assert_eq!(st.driver, Driver::Systemd);
    assert_eq!(st.unit.as_deref(), Some("cri-abc.scope"));
    let scope = "kubepods.slice/kubepods-pod1.slice/cri-abc.scope";
    assert_eq!(
        st.v1.get("memory"),
        Some(&tmp.path().join("memory").join(scope))
    );
    assert_eq!(
        st.unified.as_deref(),
        Some(tmp.path().join("unified").join(scope).as_path())
    );
    assert!(st.created.is_empty());
    let json = serde_json::to_value(&st).expect("json");
    assert_eq!(json["unit"], "cri-abc.scope");
    assert!(systemd_cgroup::planned_state(&root, "not-a-form", "abc").is_none());
}

#[test]
fn state_round_trips_through_json() {
    let st = CgroupState {
        driver: Driver::Cgroupfs,
        layout: Layout::Hybrid,
        v1: BTreeMap::from([
            (
                "cpu".to_string(),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"),
            ),
            (
                "cpuacct".to_string(),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"),
            ),
            (
                "memory".to_string(),
                PathBuf::from("/sys/fs/cgroup/memory/a"),
            ),
        ]),
        unified: Some(PathBuf::from("/sys/fs/cgroup/unified/a")),
        unified_mount: Some(PathBuf::from("/sys/fs/cgroup/unified")),
        created: vec![PathBuf::from("/sys/fs/cgroup/memory/a")],
        unit: None,
    };
    let json = serde_json::to_string(&st).expect("serialize");
    assert!(
        json.contains("\"layout\":\"hybrid\"") && json.contains("\"driver\":\"cgroupfs\""),
        "{json}"
    );
    let back: CgroupState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, st);
    // Co-mounted controllers share one directory, which is listed once.
    assert_eq!(Cgroup::from_state(&back).state().dirs().len(), 3);
}

#[test]
fn v2_wants_every_controller_and_hybrid_only_what_the_unified_side_needs() {
    use oci_spec::runtime::LinuxHugepageLimitBuilder;
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB".to_string())
            .limit(0i64)
            .build()
            .expect("limit")])
        .build()
        .expect("resources");
    assert_eq!(wanted_v2(Layout::Hybrid, &r), ["hugetlb"]);
    assert!(wanted_v2(Layout::Hybrid, &LinuxResources::default()).is_empty());
    assert!(wanted_v2(Layout::Unified, &LinuxResources::default()).contains(&"memory".to_string()));
}

#[test]
fn a_systemd_containers_cgroup_is_removed_when_systemd_is_not_there_to_stop_its_unit() {
    if std::path::Path::new(systemd::SYSTEMD_PRIVATE_SOCKET).exists() {
        crate::skip::not_applicable(
            "a_systemd_containers_cgroup_is_removed_when_systemd_is_not_there_to_stop_its_unit",
            "systemd runs here",
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let leaf = tmp.path().join("system.slice/gpurun-x.scope");
    stdfs::create_dir_all(&leaf).expect("leaf");
    let st = CgroupState {
        driver: Driver::Systemd,
        layout: Layout::Unified,
        v1: BTreeMap::new(),
        unified: Some(leaf.clone()),
        unified_mount: Some(tmp.path().to_path_buf()),
        created: Vec::new(),
        unit: Some("gpurun-x.scope".into()),
    };
    Cgroup::from_state(&st).destroy().expect("destroyed");
    assert!(!leaf.exists());
}
