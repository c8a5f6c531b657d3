//! Device nodes that are not world read-write on the host: their group joins the
//! container process's `additionalGids`, and the discovery cache notices a host node whose
//! mode or owner changed.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gpurun::gpu::fake::{self, FakeDriver};
use gpurun::gpu::{self, Inventory, Roots};
use oci_spec::runtime::Spec;

const VIDEO: u32 = 44;

fn restrict(node: &Path) {
    std::fs::set_permissions(node, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::os::unix::fs::chown(node, Some(0), Some(VIDEO)).unwrap();
}

/// The spec after a request for GPU 0, the process already holding group 5.
fn inject_gpu0(root: &Path, inv: &Inventory) -> Spec {
    let t = tempfile::tempdir().unwrap();
    let rootfs = fake::rootfs(t.path(), true).unwrap();
    let mut s = fake::spec(&["NVIDIA_VISIBLE_DEVICES=0"], true, &[]);
    let process = s.process_mut().as_mut().unwrap();
    let mut user = process.user().clone();
    user.set_additional_gids(Some(vec![5]));
    process.set_user(user);
    let cfg = fake::config(root, &t.path().join("state"));
    gpu::inject(&mut s, &rootfs, "c1", &t.path().join("gen"), &cfg, inv)
        .unwrap()
        .expect("a request");
    s
}

fn gids(s: &Spec) -> Vec<u32> {
    s.process()
        .as_ref()
        .unwrap()
        .user()
        .additional_gids()
        .clone()
        .unwrap_or_default()
}

fn node_in_spec(s: &Spec, path: &str) -> (u32, u32) {
    let d = s
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .iter()
        .flatten()
        .find(|d| d.path() == Path::new(path))
        .unwrap();
    (d.file_mode().unwrap(), d.gid().unwrap())
}

#[test]
fn a_group_only_node_adds_its_group_once_and_world_rw_nodes_add_none() {
    if skip("a_group_only_node_adds_its_group_once_and_world_rw_nodes_add_none") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("host"))
        .unwrap();
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert_eq!(
        gids(&inject_gpu0(&f.root, &inv)),
        [5],
        "0666 nodes add nothing"
    );

    restrict(&f.root.join("dev/nvidia0"));
    restrict(&f.root.join("dev/nvidiactl"));
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    let s = inject_gpu0(&f.root, &inv);
    assert_eq!(gids(&s), [5, VIDEO], "kept, added once for two nodes");
    assert_eq!(node_in_spec(&s, "/dev/nvidia0"), (0o660, VIDEO));
}

#[test]
fn the_discovery_cache_notices_a_node_whose_mode_or_group_changed() {
    if skip("the_discovery_cache_notices_a_node_whose_mode_or_group_changed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("host"))
        .unwrap();
    let cfg = fake::config(&f.root, &t.path().join("state"));
    let before = gpu::discover_cached(&cfg).unwrap();
    assert_eq!(
        node_in_spec(&inject_gpu0(&f.root, &before), "/dev/nvidia0"),
        (0o666, 0)
    );
    assert!(
        gpu::load_cache(&cfg.gpus.state_dir.join(gpu::CACHE_FILE), &cfg.roots())
            .unwrap()
            .is_some()
    );

    restrict(&f.root.join("dev/nvidia0"));
    let after = gpu::discover_cached(&cfg).unwrap();
    let s = inject_gpu0(&f.root, &after);
    assert_eq!(node_in_spec(&s, "/dev/nvidia0"), (0o660, VIDEO));
    assert_eq!(gids(&s), [5, VIDEO]);
}

#[test]
fn a_uid_1000_container_opens_its_group_only_gpu_node() {
    if skip("a_uid_1000_container_opens_its_group_only_gpu_node") {
        return;
    }
    let node = Node::new(false);
    restrict(&node.host().join("dev/nvidia0"));
    let rt = Runtime::new();
    let mut b = bundle("grep ^Groups: /proc/self/status; id -u; cat /dev/nvidia0; echo open=$?");
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut b);
    b.config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    let out = node.run(&rt, &b, &id("gid44"));
    assert_ran(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("can't open '/dev/nvidia0': {ENXIO}")),
        "past the permission check, no driver behind the node: {err}"
    );
    let groups = stdout(&out)
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        groups.split_whitespace().any(|g| g == VIDEO.to_string()),
        "{groups:?} lacks the node's group:\n{}",
        stdout(&out)
    );
    assert!(
        has_line(&out, "1000") && has_line(&out, "open=1"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn cdi_generate_emits_the_groups_of_group_only_nodes_at_0_7_0() {
    if skip("cdi_generate_emits_the_groups_of_group_only_nodes_at_0_7_0") {
        return;
    }
    let caps = gpu::Capabilities::parse("utility,compute").unwrap();
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("host"))
        .unwrap();
    let open = gpu::cdi::generate(&gpu::discover(&Roots::at(&f.root)).unwrap(), caps);
    assert_eq!(
        open.cdi_version, "0.5.0",
        "no group needed: readable by older engines"
    );
    assert!(!open.to_yaml().unwrap().contains("additionalGids"));

    restrict(&f.root.join("dev/nvidia0"));
    restrict(&f.root.join("dev/nvidiactl"));
    let spec = gpu::cdi::generate(&gpu::discover(&Roots::at(&f.root)).unwrap(), caps);
    spec.validate().unwrap();
    assert_eq!(spec.cdi_version, "0.7.0");
    let edit_gids = |name: &str| {
        let d = spec.devices.iter().find(|d| d.name == name).unwrap();
        d.container_edits.additional_gids.clone()
    };
    assert_eq!(edit_gids("0"), [VIDEO]);
    assert_eq!(
        edit_gids("1"),
        Vec::<u32>::new(),
        "GPU 1's node is still 0666"
    );
    assert_eq!(edit_gids("all"), [VIDEO]);
    let common = spec.container_edits.as_ref().unwrap();
    assert_eq!(common.additional_gids, [VIDEO], "nvidiactl's group");

    // Applied: the node keeps its group and the process gets it.
    let dir = t.path().join("cdi");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nvidia.yaml"), spec.to_yaml().unwrap()).unwrap();
    let mut cfg = fake::config(&f.root, &t.path().join("state"));
    cfg.nvidia.cdi_spec_dirs = vec![dir];
    let rootfs = fake::rootfs(t.path(), true).unwrap();
    let mut s = fake::spec(&[], false, &[("cdi.k8s.io/x", "nvidia.com/gpu=0")]);
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    gpu::inject(&mut s, &rootfs, "c1", &t.path().join("gen"), &cfg, &inv)
        .unwrap()
        .expect("a request");
    assert_eq!(gids(&s), [VIDEO]);
    assert_eq!(node_in_spec(&s, "/dev/nvidia0"), (0o660, VIDEO));

    // For CDI 0.5.0 readers (Podman 4.x): no additionalGids, the nodes keep their group.
    let mut old = spec.clone();
    gpu::cdi::without_additional_gids(&mut old);
    old.validate().unwrap();
    assert_eq!(old.cdi_version, "0.5.0");
    let yaml = old.to_yaml().unwrap();
    assert!(!yaml.contains("additionalGids"), "{yaml}");
    assert!(yaml.contains(&format!("gid: {VIDEO}")), "{yaml}");
}
