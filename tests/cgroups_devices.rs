//! Device rules enforced by the kernel, as root: a character node with a major no driver
//! claims opens with ENXIO when the rules allow it and EPERM when they deny it, through the
//! v1 devices controller and through gpurun's eBPF program on a cgroup2 directory.

#[path = "cgroups_support.rs"]
mod support;

use std::path::{Path, PathBuf};

use gpurun::linux::cgroups::{
    apply_device_filter_v2, attach_device_filter, detach_device_programs, device_program_ids,
    Cgroup, CgroupConfig, CgroupRoot, Layout,
};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResourcesBuilder};
use support::{read, root_or_skip, unique_parent, CgroupGuard, DirGuard, Helper};

const ENXIO: &str = "6";
const EPERM: &str = "1";

/// A character major no driver has registered (absent from /proc/devices).
fn free_char_major() -> u32 {
    let devices = std::fs::read_to_string("/proc/devices").expect("/proc/devices");
    let chars = devices.split("Block devices:").next().unwrap_or_default();
    let used: Vec<u32> = chars
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (234..=254)
        .find(|m| !used.contains(m))
        .expect("a free character major in 234..=254")
}

/// A temp dir holding `node`, a character device `major:0` with no driver behind it.
fn driverless_node(major: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node");
    mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(major.into(), 0),
    )
    .expect("mknod");
    (dir, node)
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

fn deny_all() -> LinuxDeviceCgroup {
    rule(false, LinuxDeviceType::A, None, None, "rwm")
}

fn allow_node(major: u32, minor: i64) -> Vec<LinuxDeviceCgroup> {
    vec![
        deny_all(),
        rule(
            true,
            LinuxDeviceType::C,
            Some(major.into()),
            Some(minor),
            "rw",
        ),
    ]
}

/// Opens `node` from a helper placed in the cgroup by `join`; returns the errno (0: opened).
fn open_from(node: &Path, join: impl FnOnce(i32)) -> String {
    let mut helper = Helper::spawn(&format!("open:{}", node.display()));
    join(helper.pid());
    let errno = helper.go();
    helper.wait();
    errno
}

fn create(root: &CgroupRoot, path: &str, rules: Vec<LinuxDeviceCgroup>) -> CgroupGuard {
    let r = LinuxResourcesBuilder::default()
        .devices(rules)
        .build()
        .expect("resources");
    let cfg = CgroupConfig {
        cgroups_path: Some(path),
        container_id: "ctr",
        resources: Some(&r),
        systemd: false,
        root,
    };
    CgroupGuard(Cgroup::create(&cfg).expect("create cgroup").0)
}

#[test]
fn v1_devices_controller_allows_and_denies_opens() {
    let Some(root) = root_or_skip() else { return };
    if root.layout() == Layout::Unified {
        gpurun::skip::not_applicable(
            "v1_devices_controller_allows_and_denies_opens",
            "no v1 devices controller on a cgroup v2 host",
        );
        return;
    }
    let major = free_char_major();
    let (_tmp, node) = driverless_node(major);

    let allowed = create(
        &root,
        &format!("/{}/ctr", unique_parent("dev-allow")),
        allow_node(major, 0),
    );
    let list = read(&allowed.0.state().v1["devices"].join("devices.list"));
    assert_eq!(list, format!("c {major}:0 rw"));
    assert_eq!(
        open_from(&node, |pid| allowed.0.add_task(pid).expect("join")),
        ENXIO
    );

    let denied = create(
        &root,
        &format!("/{}/ctr", unique_parent("dev-deny")),
        allow_node(major, 1),
    );
    assert_eq!(
        open_from(&node, |pid| denied.0.add_task(pid).expect("join")),
        EPERM
    );
}

/// A directory of the test's own in the cgroup2 hierarchy.
fn cgroup2_dir(root: &CgroupRoot, tag: &str) -> DirGuard {
    let mount = &root.unified().expect("a cgroup2 mount").mountpoint;
    let dir = mount.join(unique_parent(tag));
    std::fs::create_dir(&dir).expect("mkdir in cgroup2");
    DirGuard(dir)
}

fn join_dir(dir: &Path) -> impl FnOnce(i32) + '_ {
    move |pid| std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("join cgroup2 dir")
}

#[test]
fn v2_ebpf_filter_allows_and_denies_opens() {
    let Some(root) = root_or_skip() else { return };
    let major = free_char_major();
    let (_tmp, node) = driverless_node(major);
    let dir = cgroup2_dir(&root, "bpf");

    apply_device_filter_v2(&dir.0, &allow_node(major, 0)).expect("allow filter");
    assert_eq!(device_program_ids(&dir.0).expect("query").len(), 1);
    assert_eq!(open_from(&node, join_dir(&dir.0)), ENXIO);

    apply_device_filter_v2(&dir.0, &[deny_all()]).expect("deny filter");
    assert_eq!(device_program_ids(&dir.0).expect("query").len(), 1);
    assert_eq!(open_from(&node, join_dir(&dir.0)), EPERM);

    // Wildcards: any minor of the major, read only.
    let rules = vec![
        deny_all(),
        rule(true, LinuxDeviceType::C, Some(major.into()), None, "r"),
    ];
    apply_device_filter_v2(&dir.0, &rules).expect("wildcard filter");
    assert_eq!(open_from(&node, join_dir(&dir.0)), ENXIO);
}

/// A block major no driver has registered (absent from /proc/devices).
fn free_block_major() -> u32 {
    let devices = std::fs::read_to_string("/proc/devices").expect("/proc/devices");
    let blocks = devices.split("Block devices:").nth(1).unwrap_or_default();
    let used: Vec<u32> = blocks
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (240..=254)
        .find(|m| !used.contains(m))
        .expect("a free block major in 240..=254")
}

/// A rule's access is what the program enforces: `b M:20 rw` lets the node be opened but
/// not made; `rwm` lets it be made too.
#[test]
fn v2_ebpf_filter_allows_opens_but_refuses_mknod_for_a_read_write_rule() {
    let Some(root) = root_or_skip() else { return };
    let major = free_block_major();
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = tmp.path().join("disk");
    mknod(
        &node,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(major.into(), 20),
    )
    .expect("mknod outside the cgroup");
    let dir = cgroup2_dir(&root, "bpf-rw");
    let block_rule = |access| {
        vec![
            deny_all(),
            rule(
                true,
                LinuxDeviceType::B,
                Some(major.into()),
                Some(20),
                access,
            ),
        ]
    };
    let make = |name: &str| {
        let mut helper = Helper::spawn(&format!(
            "mknod:b:{major}:20:{}",
            tmp.path().join(name).display()
        ));
        join_dir(&dir.0)(helper.pid());
        let errno = helper.go();
        helper.wait();
        errno
    };

    apply_device_filter_v2(&dir.0, &block_rule("rw")).expect("rw filter");
    assert_eq!(open_from(&node, join_dir(&dir.0)), ENXIO);
    assert_eq!(make("made-rw"), EPERM);

    apply_device_filter_v2(&dir.0, &block_rule("rwm")).expect("rwm filter");
    assert_eq!(make("made-rwm"), "0");
}

#[test]
fn v2_filter_replacement_attaches_the_new_program_before_detaching_the_old() {
    let Some(root) = root_or_skip() else { return };
    let major = free_char_major();
    let (_tmp, node) = driverless_node(major);
    let dir = cgroup2_dir(&root, "bpf-replace");

    apply_device_filter_v2(&dir.0, &[deny_all()]).expect("deny filter");
    let first = device_program_ids(&dir.0).expect("query");
    assert_eq!(first.len(), 1);

    // Replace deny with allow: while both are attached every program must allow, so the
    // old one keeps denying until it is detached.
    let old = attach_device_filter(&dir.0, &allow_node(major, 0)).expect("attach new");
    assert_eq!(old, first);
    let both = device_program_ids(&dir.0).expect("query");
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(open_from(&node, join_dir(&dir.0)), EPERM);

    detach_device_programs(&dir.0, &old).expect("detach old");
    let after = device_program_ids(&dir.0).expect("query");
    assert_eq!(after.len(), 1);
    assert!(
        !after.contains(&first[0]),
        "the old program is gone: {after:?}"
    );
    assert_eq!(open_from(&node, join_dir(&dir.0)), ENXIO);
}

#[test]
fn hybrid_unified_leaf_filter_denies_what_v1_allows() {
    let Some(root) = root_or_skip() else { return };
    if root.layout() != Layout::Hybrid {
        gpurun::skip::not_applicable(
            "hybrid_unified_leaf_filter_denies_what_v1_allows",
            "needs a hybrid host",
        );
        return;
    }
    let major = free_char_major();
    let (_tmp, node) = driverless_node(major);
    let cg = create(
        &root,
        &format!("/{}/ctr", unique_parent("dev-hybrid")),
        allow_node(major, 0),
    );
    assert_eq!(
        open_from(&node, |pid| cg.0.add_task(pid).expect("join")),
        ENXIO
    );
    cg.0.apply_unified_device_filter(&[deny_all()])
        .expect("unified filter");
    assert_eq!(
        open_from(&node, |pid| cg.0.add_task(pid).expect("join")),
        EPERM
    );
}
