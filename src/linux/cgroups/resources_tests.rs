//! Resource writes against a fake cgroupfs: directories holding empty knob files.

use std::collections::{BTreeMap, HashMap};
use std::fs as stdfs;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};
use tempfile::TempDir;

use super::*;
use crate::linux::cgroups::Layout;

fn fake_dir(files: &[&str]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in files {
        stdfs::write(dir.path().join(f), "").expect("knob file");
    }
    dir
}

fn content(dir: &TempDir, file: &str) -> String {
    stdfs::read_to_string(dir.path().join(file)).expect("knob readable")
}

fn v1_map(entries: &[(&str, &TempDir)]) -> BTreeMap<String, PathBuf> {
    entries
        .iter()
        .map(|(c, d)| (c.to_string(), d.path().to_path_buf()))
        .collect()
}

fn v2_leaf(controllers: &str, files: &[&str]) -> TempDir {
    let dir = fake_dir(files);
    stdfs::write(dir.path().join("cgroup.controllers"), controllers).expect("controllers");
    dir
}

#[test]
fn v1_memory_writes_limit_swap_reservation_and_swappiness() {
    let mem = fake_dir(&[
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.swappiness",
    ]);
    stdfs::write(
        mem.path().join("memory.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .expect("seed");
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Hybrid, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32i64 << 20)
                .swap(64i64 << 20)
                .reservation(16i64 << 20)
                .swappiness(10u64)
                .kernel(1i64 << 20)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    let warnings = apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(
        content(&mem, "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(
        content(&mem, "memory.memsw.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        content(&mem, "memory.soft_limit_in_bytes"),
        (16u64 << 20).to_string()
    );
    assert_eq!(content(&mem, "memory.swappiness"), "10");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("memory.kernel not applied"),
        "{warnings:?}"
    );
}

#[test]
fn v1_swappiness_above_100_is_rejected() {
    let mem = fake_dir(&["memory.swappiness"]);
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Legacy, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swappiness(101u64)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Create).expect_err("swappiness 101");
    assert!(err.to_string().contains("swappiness 101"), "{err}");
}

#[test]
fn v2_cpu_uses_weight_max_and_burst() {
    let leaf = v2_leaf(
        "cpu memory pids",
        &["cpu.weight", "cpu.max", "cpu.max.burst", "cpu.idle"],
    );
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(100_000u64)
                .burst(1000u64)
                .idle(0i64)
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(content(&leaf, "cpu.weight"), "100");
    assert_eq!(content(&leaf, "cpu.max"), "50000 100000");
    assert_eq!(content(&leaf, "cpu.max.burst"), "1000");
    assert_eq!(content(&leaf, "cpu.idle"), "0");
}

#[test]
fn v2_period_alone_keeps_the_current_quota() {
    let leaf = v2_leaf("cpu", &["cpu.max"]);
    stdfs::write(leaf.path().join("cpu.max"), "20000 100000\n").expect("seed");
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .period(50_000u64)
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Update).expect("applied");
    assert_eq!(content(&leaf, "cpu.max"), "20000 50000");
}

#[test]
fn v2_realtime_is_rejected() {
    let leaf = v2_leaf("cpu", &["cpu.max"]);
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_runtime(1000i64)
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Create).expect_err("realtime on v2");
    assert!(
        err.to_string().contains("not supported on cgroup v2"),
        "{err}"
    );
}

#[test]
fn v2_memory_converts_swap_to_swap_alone() {
    let leaf = v2_leaf("memory", &["memory.max", "memory.swap.max", "memory.low"]);
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(100i64)
                .swap(300i64)
                .reservation(-1i64)
                .swappiness(5u64)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    let warnings = apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(content(&leaf, "memory.max"), "100");
    assert_eq!(content(&leaf, "memory.swap.max"), "200");
    assert_eq!(content(&leaf, "memory.low"), "max");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("swappiness not applied")),
        "{warnings:?}"
    );
}

#[test]
fn a_missing_controller_is_an_error_naming_it_and_the_cgroup() {
    let mem = fake_dir(&["memory.limit_in_bytes"]);
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Hybrid, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .pids(
            LinuxPidsBuilder::default()
                .limit(5i64)
                .build()
                .expect("pids"),
        )
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Create).expect_err("no pids hierarchy");
    match err {
        CgroupError::MissingController { controller, path } => {
            assert_eq!(controller, "pids");
            assert_eq!(path, mem.path());
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn pids_limit_zero_is_one_and_negative_is_max() {
    let pids = fake_dir(&["pids.max"]);
    let v1 = v1_map(&[("pids", &pids)]);
    let t = Target::new(Layout::Legacy, &v1, None).expect("target");
    for (limit, want) in [(16, "16"), (0, "1"), (-1, "max")] {
        let r = LinuxResourcesBuilder::default()
            .pids(
                LinuxPidsBuilder::default()
                    .limit(limit)
                    .build()
                    .expect("pids"),
            )
            .build()
            .expect("resources");
        apply(&t, &r, Phase::Create).expect("applied");
        assert_eq!(content(&pids, "pids.max"), want);
    }
}

#[test]
fn zero_hugepage_limits_without_hugetlb_only_warn() {
    let mem = fake_dir(&[]);
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Legacy, &v1, None).expect("target");
    let limit = |size: &str, limit: i64| {
        LinuxHugepageLimitBuilder::default()
            .page_size(size.to_string())
            .limit(limit)
            .build()
            .expect("hugepage limit")
    };
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![limit("2MB", 0), limit("1GB", 0)])
        .build()
        .expect("resources");
    let warnings = apply(&t, &r, Phase::Create).expect("zero limits are fine");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![limit("2MB", 1 << 21)])
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Create).expect_err("a real limit needs hugetlb");
    assert!(
        matches!(err, CgroupError::MissingController { ref controller, .. } if controller == "hugetlb"),
        "{err}"
    );
}

#[test]
fn hybrid_hugepages_go_to_the_unified_leaf() {
    let mem = fake_dir(&[]);
    let leaf = v2_leaf("hugetlb", &["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max"]);
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Hybrid, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB".to_string())
            .limit(4i64 << 21)
            .build()
            .expect("limit")])
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(content(&leaf, "hugetlb.2MB.max"), (4u64 << 21).to_string());
    assert_eq!(
        content(&leaf, "hugetlb.2MB.rsvd.max"),
        (4u64 << 21).to_string()
    );
}

#[test]
fn v1_blkio_writes_bfq_weight_and_throttles() {
    let blk = fake_dir(&["blkio.bfq.weight", "blkio.throttle.read_bps_device"]);
    let v1 = v1_map(&[("blkio", &blk)]);
    let t = Target::new(Layout::Hybrid, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(300u16)
                .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(8i64)
                    .minor(0i64)
                    .rate(1_048_576u64)
                    .build()
                    .expect("throttle")])
                .build()
                .expect("blkio"),
        )
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(content(&blk, "blkio.bfq.weight"), "300");
    assert_eq!(
        content(&blk, "blkio.throttle.read_bps_device"),
        "8:0 1048576"
    );
}

#[test]
fn unified_keys_must_exist_and_belong_to_an_enabled_controller() {
    let leaf = v2_leaf("memory", &["memory.high", "cgroup.max.descendants"]);
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let with = |k: &str, v: &str| {
        LinuxResourcesBuilder::default()
            .unified(HashMap::from([(k.to_string(), v.to_string())]))
            .build()
            .expect("resources")
    };
    apply(&t, &with("memory.high", "1000"), Phase::Create).expect("memory.high");
    assert_eq!(content(&leaf, "memory.high"), "1000");
    apply(&t, &with("cgroup.max.descendants", "5"), Phase::Create).expect("core key");
    let err = apply(&t, &with("pids.max", "5"), Phase::Create).expect_err("pids not enabled");
    assert!(
        matches!(err, CgroupError::MissingController { ref controller, .. } if controller == "pids"),
        "{err}"
    );
    let err = apply(&t, &with("memory.nope", "5"), Phase::Create).expect_err("no such file");
    assert!(err.to_string().contains("does not exist"), "{err}");
    for bad in [
        "../memory.high",
        "memoryhigh",
        "cgroup.procs",
        "cgroup.kill",
    ] {
        assert!(apply(&t, &with(bad, "1"), Phase::Create).is_err(), "{bad}");
    }
}

#[test]
fn unified_keys_on_a_v1_host_are_rejected() {
    let mem = fake_dir(&[]);
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Legacy, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .unified(HashMap::from([(
            "memory.high".to_string(),
            "1".to_string(),
        )]))
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Create).expect_err("no cgroup2");
    assert!(err.to_string().contains("needs cgroup v2"), "{err}");
}

#[test]
fn check_before_update_refuses_a_limit_below_usage() {
    let leaf = v2_leaf("memory", &["memory.max", "memory.current"]);
    stdfs::write(leaf.path().join("memory.current"), "5000\n").expect("seed");
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(4000i64)
                .check_before_update(true)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Update).expect_err("below usage");
    assert!(err.to_string().contains("checkBeforeUpdate"), "{err}");
    apply(&t, &r, Phase::Create).expect("not checked at create");
}

#[test]
fn v1_cpu_writes_shares_quota_period_and_the_cpuset() {
    let cpu = fake_dir(&[
        "cpu.shares",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.cfs_burst_us",
    ]);
    let cpuset = fake_dir(&["cpuset.cpus", "cpuset.mems"]);
    let v1 = v1_map(&[("cpu", &cpu), ("cpuset", &cpuset)]);
    let t = Target::new(Layout::Hybrid, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(25_000i64)
                .period(50_000u64)
                .burst(500u64)
                .cpus("0-1".to_string())
                .mems("0".to_string())
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(content(&cpu, "cpu.shares"), "512");
    assert_eq!(content(&cpu, "cpu.cfs_quota_us"), "25000");
    assert_eq!(content(&cpu, "cpu.cfs_period_us"), "50000");
    assert_eq!(content(&cpu, "cpu.cfs_burst_us"), "500");
    assert_eq!(content(&cpuset, "cpuset.cpus"), "0-1");
    assert_eq!(content(&cpuset, "cpuset.mems"), "0");
}

#[test]
fn network_without_net_cls_is_an_error_naming_it() {
    use oci_spec::runtime::LinuxNetworkBuilder;
    let mem = fake_dir(&[]);
    let v1 = v1_map(&[("memory", &mem)]);
    let t = Target::new(Layout::Hybrid, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .network(
            LinuxNetworkBuilder::default()
                .class_id(0x10001u32)
                .build()
                .expect("network"),
        )
        .build()
        .expect("resources");
    let err = apply(&t, &r, Phase::Create).expect_err("no net_cls");
    assert!(
        matches!(err, CgroupError::MissingController { ref controller, .. } if controller == "net_cls"),
        "{err}"
    );
}

#[test]
fn rdma_limits_are_one_line_per_device() {
    use oci_spec::runtime::LinuxRdmaBuilder;
    let leaf = v2_leaf("rdma", &["rdma.max"]);
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let limit = LinuxRdmaBuilder::default()
        .hca_handles(2u32)
        .hca_objects(2000u32)
        .build()
        .expect("rdma");
    let r = LinuxResourcesBuilder::default()
        .rdma(HashMap::from([("mlx5_0".to_string(), limit)]))
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(
        content(&leaf, "rdma.max"),
        "mlx5_0 hca_handle=2 hca_object=2000"
    );
}

#[test]
fn leaf_weight_without_cfq_only_warns() {
    let blk = fake_dir(&["blkio.bfq.weight"]);
    let v1 = v1_map(&[("blkio", &blk)]);
    let t = Target::new(Layout::Hybrid, &v1, None).expect("target");
    let r = LinuxResourcesBuilder::default()
        .block_io(
            LinuxBlockIoBuilder::default()
                .leaf_weight(200u16)
                .build()
                .expect("blkio"),
        )
        .build()
        .expect("resources");
    let warnings = apply(&t, &r, Phase::Create).expect("applied");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("leafWeight not applied")),
        "{warnings:?}"
    );
}

#[test]
fn v2_block_io_converts_the_weight_and_writes_io_max() {
    let leaf = v2_leaf("io", &["io.weight", "io.max"]);
    let v1 = BTreeMap::new();
    let t = Target::new(Layout::Unified, &v1, Some(leaf.path())).expect("target");
    let r = LinuxResourcesBuilder::default()
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .throttle_write_iops_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(254i64)
                    .minor(0i64)
                    .rate(100u64)
                    .build()
                    .expect("throttle")])
                .build()
                .expect("blkio"),
        )
        .build()
        .expect("resources");
    apply(&t, &r, Phase::Create).expect("applied");
    assert_eq!(content(&leaf, "io.weight"), "4950");
    assert_eq!(content(&leaf, "io.max"), "254:0 wiops=100");
}
