//! GPUs the engine applied itself (root, real binary, fake two-GPU tree): NVIDIA nodes in
//! `linux.devices` that gpurun did not inject, as containerd 2.x, CRI-O, Podman or Docker
//! pass them after resolving CDI. They are a grant: leases, `gpurun gpus`, the
//! `/proc/driver/nvidia` view, device rules, IMEX channels, MPS, and stale specs refused.
//! The fake nodes have no driver behind them: opening one gives ENXIO when the device
//! cgroup allows it, EPERM when it does not.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::path::PathBuf;

use gpurun::gpu::fake::{IMEX_MAJOR, LIB_DIR, VERSION};
use serde_json::{json, Value};

/// Adds a node to `linux.devices` as an engine applying CDI does (no allow rule: the
/// runtime's part is to make sure of it).
fn applied_node(b: &mut Bundle, path: &str, major: u32, minor: u32) {
    if !b.config["linux"]["devices"].is_array() {
        b.config["linux"]["devices"] = json!([]);
    }
    b.config["linux"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "path": path, "type": "c", "major": major, "minor": minor,
            "fileMode": 438, "uid": 0, "gid": 0
        }));
}

/// GPU `minor` as a CDI spec applied by the engine gives it: its node, the control node,
/// `libcuda` bound from the driver root, and `NVIDIA_VISIBLE_DEVICES=void`.
fn engine_applied_gpu(node: &Node, b: &mut Bundle, minor: u32) {
    applied_node(b, &format!("/dev/nvidia{minor}"), 195, minor);
    applied_node(b, "/dev/nvidiactl", 195, 255);
    applied_library(
        b,
        node.host()
            .join(LIB_DIR)
            .join(format!("libcuda.so.{VERSION}")),
    );
    set_env(b, "NVIDIA_VISIBLE_DEVICES=void");
}

fn applied_library(b: &mut Bundle, source: PathBuf) {
    let name = source.file_name().unwrap().to_str().unwrap().to_string();
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": format!("/{LIB_DIR}/{name}"), "type": "bind",
        "source": source, "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"]
    }));
}

fn holders(node: &Node, rt: &Runtime, uuid: &str) -> Vec<String> {
    node.gpus_json(rt)
        .iter()
        .find(|g| g["uuid"] == uuid)
        .unwrap()["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

fn leases(node: &Node) -> Vec<Value> {
    let dir = node.dir.path().join("state/leases");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect()
}

/// `gpurun --log <file> run`, returning the output and the log.
fn run_logged(node: &Node, rt: &Runtime, b: &Bundle, cid: &str) -> (std::process::Output, String) {
    b.write();
    rt.track(cid);
    let log = b.path().join("gpurun.log");
    let out = node
        .cmd(rt)
        .arg("--log")
        .arg(&log)
        .args(["run", "-b"])
        .arg(b.path())
        .arg(cid)
        .output()
        .unwrap();
    (out, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn an_applied_gpu_is_leased_shown_in_gpus_and_refuses_a_second_exclusive_holder() {
    if skip("an_applied_gpu_is_leased_shown_in_gpus_and_refuses_a_second_exclusive_holder") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("true");
    engine_applied_gpu(&node, &mut b, 0);
    annotate(&mut b, "gpurun.dev/gpu-sharing", "exclusive");
    let first = id("applied-a");
    let out = node.create(&rt, &b, &first);
    assert_ran(&out);
    assert_eq!(holders(&node, &rt, GPU0), [first.as_str()]);
    assert!(holders(&node, &rt, GPU1).is_empty());
    let l = leases(&node);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["source"], "applied");
    assert_eq!(l[0]["sharing"], "exclusive");
    assert!(
        node.ok(&rt, &["list"]).contains(GPU0),
        "list's GPUS column names the applied GPU"
    );

    let second = id("applied-b");
    let out = node.create(&rt, &b, &second);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("[gpu-exclusive-held]") && err.contains(&first) && err.contains(GPU0),
        "{err}"
    );
    assert!(!rt.root.path().join(&second).exists());
    node.ok(&rt, &["delete", "--force", &first]);
    assert!(leases(&node).is_empty(), "delete releases the lease");
}

#[test]
fn an_applied_gpu_gets_its_rule_and_procfs_view_and_the_images_env_is_ignored() {
    if skip("an_applied_gpu_gets_its_rule_and_procfs_view_and_the_images_env_is_ignored") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle(&format!(
        "{} cat /dev/nvidia0; echo open0=$?; ls /proc/driver/nvidia/gpus; \
         grep ModifyDeviceFiles /proc/driver/nvidia/params; \
         echo visible=$NVIDIA_VISIBLE_DEVICES",
        probe(&["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia-uvm"])
    ));
    applied_node(&mut b, "/dev/nvidia0", 195, 0);
    applied_node(&mut b, "/dev/nvidiactl", 195, 255);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    let (out, log) = run_logged(&node, &rt, &b, &id("applied-env"));
    assert_ran(&out);
    for l in [
        "/dev/nvidia0=yes",
        "/dev/nvidia1=no",
        "/dev/nvidia-uvm=no",
        "open0=1",
        "0000:3b:00.0",
        "ModifyDeviceFiles: 0",
        &format!("visible={GPU0}"),
    ] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    assert!(
        !stdout(&out).contains("0000:86:00.0"),
        "GPU 1 is hidden: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!("can't open '/dev/nvidia0': {ENXIO}")),
        "the applied node is allowed by the device cgroup: {}",
        stderr(&out)
    );
    assert!(
        log.contains("NVIDIA_VISIBLE_DEVICES=all from the image ignored"),
        "{log}"
    );

    // Alone, a privileged container's env is the request: nothing to warn about.
    let mut b = bundle("true");
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    privileged(&mut b);
    let (out, log) = run_logged(&node, &rt, &b, &id("env-alone"));
    assert_ran(&out);
    assert!(!log.contains("ignored"), "{log}");
}

#[test]
fn a_cdi_annotation_naming_another_gpu_beside_applied_nodes_is_refused_naming_both() {
    if skip("a_cdi_annotation_naming_another_gpu_beside_applied_nodes_is_refused_naming_both") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let spec = node.cdi_dir().join("nvidia.yaml");
    node.ok(
        &rt,
        &["cdi", "generate", "--output", spec.to_str().unwrap()],
    );
    let mut b = bundle("true");
    engine_applied_gpu(&node, &mut b, 0);
    annotate(&mut b, "cdi.k8s.io/gpu", "nvidia.com/gpu=1");
    let cid = id("applied-cdi");
    let out = node.create(&rt, &b, &cid);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    for want in [
        "[gpu-request-conflict]",
        "/dev/nvidia0",
        "nvidia.com/gpu=1",
        GPU0,
        GPU1,
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert!(!rt.root.path().join(&cid).exists());
    assert!(leases(&node).is_empty());

    // The same GPU named by both is one grant.
    annotate(&mut b, "cdi.k8s.io/gpu", "nvidia.com/gpu=0");
    let cid = id("applied-cdi-same");
    assert_ran(&node.create(&rt, &b, &cid));
    assert_eq!(holders(&node, &rt, GPU0), [cid.as_str()]);
    node.ok(&rt, &["delete", "--force", &cid]);
}

#[test]
fn a_privileged_container_holding_every_host_node_gets_no_gpu_grant() {
    if skip("a_privileged_container_holding_every_host_node_gets_no_gpu_grant") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("true");
    privileged(&mut b);
    for (path, major, minor) in [
        ("/dev/nvidia0", 195, 0),
        ("/dev/nvidia1", 195, 1),
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvidia-uvm", 237, 0),
        ("/dev/kmsg", 1, 11),
    ] {
        applied_node(&mut b, path, major, minor);
    }
    let cid = id("dump");
    assert_ran(&node.create(&rt, &b, &cid));
    assert!(leases(&node).is_empty(), "{:?}", leases(&node));
    assert!(holders(&node, &rt, GPU0).is_empty());
    node.ok(&rt, &["delete", "--force", &cid]);

    // Without the other host node it is the engine's grant of both GPUs.
    b.config["linux"]["devices"].as_array_mut().unwrap().pop();
    let cid = id("not-dump");
    assert_ran(&node.create(&rt, &b, &cid));
    assert_eq!(holders(&node, &rt, GPU1), [cid.as_str()]);
    node.ok(&rt, &["delete", "--force", &cid]);
}

#[test]
fn mig_capability_nodes_applied_by_the_engine_are_a_mig_grant() {
    if skip("mig_capability_nodes_applied_by_the_engine_are_a_mig_grant") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle(
        "cat /dev/nvidia-caps/nvidia-cap13; echo open13=$?; \
         ls /proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0; ls /proc/driver/nvidia/gpus",
    );
    applied_node(&mut b, "/dev/nvidia1", 195, 1);
    applied_node(&mut b, "/dev/nvidiactl", 195, 255);
    applied_node(&mut b, "/dev/nvidia-caps/nvidia-cap12", 236, 12);
    applied_node(&mut b, "/dev/nvidia-caps/nvidia-cap13", 236, 13);
    let cid = id("applied-mig");
    let out = node.run(&rt, &b, &cid);
    assert_ran(&out);
    for l in ["open13=1", "access", "0000:86:00.0"] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    assert!(
        stderr(&out).contains(&format!(
            "can't open '/dev/nvidia-caps/nvidia-cap13': {ENXIO}"
        )),
        "{}",
        stderr(&out)
    );

    // The MIG device is destroyed: the next create of the same spec sees it (nothing about
    // the layout is cached).
    let caps = node
        .host()
        .join("proc/driver/nvidia/capabilities/gpu1/mig/gi1");
    std::fs::remove_dir_all(&caps).unwrap();
    let minors = node.host().join("proc/driver/nvidia-caps/mig-minors");
    std::fs::write(&minors, "config 1\nmonitor 2\n").unwrap();
    let again = id("applied-mig-destroyed");
    let out = node.create(&rt, &b, &again);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("[gpu-stale-node]") && err.contains("nvidia-cap12"),
        "{err}"
    );

    // A capability minor the driver's mig-minors no longer lists: the MIG layout changed.
    let mut b = bundle("true");
    applied_node(&mut b, "/dev/nvidia1", 195, 1);
    applied_node(&mut b, "/dev/nvidia-cap21", 236, 21);
    let cid = id("applied-mig-gone");
    let out = node.create(&rt, &b, &cid);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("[gpu-stale-node]")
            && err.contains("minor 21")
            && err.contains("mig-minors")
            && err.contains("gpurun cdi generate"),
        "{err}"
    );
}

#[test]
fn imex_channels_are_granted_with_their_device_rule() {
    if skip("imex_channels_are_granted_with_their_device_rule") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let ch = "/dev/nvidia-caps-imex-channels/channel0";
    let script = format!("cat {ch}; echo open=$?");
    // Applied by the engine (a ComputeDomain claim), beside a GPU.
    let mut b = bundle(&script);
    engine_applied_gpu(&node, &mut b, 0);
    applied_node(&mut b, ch, IMEX_MAJOR, 0);
    let out = node.run(&rt, &b, &id("imex-applied"));
    assert_ran(&out);
    assert!(has_line(&out, "open=1"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("can't open '{ch}': {ENXIO}")),
        "{}",
        stderr(&out)
    );
    // Asked for by NVIDIA_IMEX_CHANNELS.
    let mut b = bundle(&script);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    set_env(&mut b, "NVIDIA_IMEX_CHANNELS=0");
    privileged(&mut b);
    let out = node.run(&rt, &b, &id("imex-env"));
    assert_ran(&out);
    assert!(
        stderr(&out).contains(&format!("can't open '{ch}': {ENXIO}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn applied_mps_edits_are_kept_and_the_lease_says_mps() {
    if skip("applied_mps_edits_are_kept_and_the_lease_says_mps") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let pipe = node.dir.path().join("mps");
    std::fs::create_dir(&pipe).unwrap();
    let mut b = bundle("sleep 100");
    engine_applied_gpu(&node, &mut b, 0);
    set_env(&mut b, "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps");
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/tmp/nvidia-mps", "type": "bind", "source": pipe,
        "options": ["rw", "rbind"]
    }));
    let cid = id("mps");
    assert_ran(&node.create(&rt, &b, &cid));
    let l = leases(&node);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["mps"], true, "{:?}", l[0]);
    let g0 = node.gpus_json(&rt);
    let g0 = g0.iter().find(|g| g["uuid"] == GPU0).unwrap();
    assert_eq!(g0["holders"][0]["mps"], true, "{g0}");
    assert!(node.ok(&rt, &["gpus"]).contains(&format!("{cid} (MPS)")));
    node.ok(&rt, &["start", &cid]);
    let out = node
        .cmd(&rt)
        .args(["exec", &cid, "sh", "-c"])
        .arg("echo $CUDA_MPS_PIPE_DIRECTORY; touch /tmp/nvidia-mps/x && echo rw")
        .output()
        .unwrap();
    assert_ran(&out);
    assert!(has_line(&out, "/tmp/nvidia-mps"), "{}", stdout(&out));
    assert!(has_line(&out, "rw"), "{}", stdout(&out));
    assert!(pipe.join("x").exists());
    node.ok(&rt, &["delete", "--force", &cid]);
}

/// What a refused create must not leave: its state, a lease, a cgroup.
fn assert_nothing_left(node: &Node, rt: &Runtime, cid: &str, cgroup: &str) {
    assert!(!rt.root.path().join(cid).exists(), "state left");
    assert!(leases(node).is_empty(), "lease left");
    for c in std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
    {
        let p = c.path().join(cgroup.trim_start_matches('/'));
        assert!(!p.exists(), "cgroup {} left", p.display());
    }
}

#[test]
fn stale_applied_nodes_and_files_fail_create_with_the_fix_and_leave_nothing() {
    if skip("stale_applied_nodes_and_files_fail_create_with_the_fix_and_leave_nothing") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    type Edit<'a> = Box<dyn Fn(&mut Bundle) + 'a>;
    let cases: Vec<(&str, Edit, Vec<String>)> = vec![
        (
            "minor",
            Box::new(|b: &mut Bundle| applied_node(b, "/dev/nvidia0", 195, 7)),
            vec!["/dev/nvidia0".into(), "195:7".into(), "195:0".into()],
        ),
        (
            "major",
            Box::new(|b: &mut Bundle| applied_node(b, "/dev/nvidia-uvm", 240, 0)),
            vec!["/dev/nvidia-uvm".into(), "240:0".into(), "237:0".into()],
        ),
        (
            "major-without-host-node",
            Box::new(|b: &mut Bundle| {
                applied_node(b, "/dev/nvidia-caps-imex-channels/channel5", 240, 5)
            }),
            vec!["channel5".into(), "major 240".into()],
        ),
        (
            "library",
            Box::new(|b: &mut Bundle| {
                applied_node(b, "/dev/nvidia0", 195, 0);
                applied_library(b, node.host().join(LIB_DIR).join("libcuda.so.998.1.2"));
            }),
            vec!["[gpu-stale-file]".into(), "libcuda.so.998.1.2".into()],
        ),
    ];
    for (name, edit, wants) in cases {
        let cid = id(&format!("stale-{name}"));
        let cgroup = format!("/gpurun-test-{cid}");
        let mut b = bundle("true");
        b.config["linux"]["cgroupsPath"] = cgroup.clone().into();
        edit(&mut b);
        let out = node.create(&rt, &b, &cid);
        assert_ne!(out.status.code(), Some(0), "{name}");
        let err = stderr(&out);
        for want in wants.iter().map(String::as_str).chain([
            "applied by the engine",
            "gpurun cdi generate",
            "[gpu-stale",
        ]) {
            assert!(err.contains(want), "{name}: {want} missing from: {err}");
        }
        assert_nothing_left(&node, &rt, &cid, &cgroup);
    }
}

#[test]
fn a_cdi_spec_naming_a_library_the_driver_no_longer_has_fails_create_naming_the_file() {
    if skip("a_cdi_spec_naming_a_library_the_driver_no_longer_has_fails_create_naming_the_file") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let spec = node.cdi_dir().join("nvidia.yaml");
    let yaml = node.ok(&rt, &["cdi", "generate"]);
    let old = yaml.replace(&format!("libcuda.so.{VERSION}"), "libcuda.so.998.1.2");
    assert_ne!(old, yaml, "the generated spec mounts libcuda");
    std::fs::write(&spec, old).unwrap();
    let mut b = bundle("true");
    annotate(&mut b, "cdi.k8s.io/gpu", "nvidia.com/gpu=0");
    let cid = id("cdi-stale");
    let out = node.create(&rt, &b, &cid);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    for want in [
        "[gpu-stale-file]",
        "libcuda.so.998.1.2",
        spec.to_str().unwrap(),
        "gpurun cdi generate",
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert_nothing_left(&node, &rt, &cid, "/none");
}

#[test]
fn a_non_root_user_opens_an_applied_group_only_node_through_its_group() {
    if skip("a_non_root_user_opens_an_applied_group_only_node_through_its_group") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    const VIDEO: u32 = 44;
    let node = Node::new(false);
    let host = node.host().join("dev/nvidia0");
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::os::unix::fs::chown(&host, Some(0), Some(VIDEO)).unwrap();
    let rt = Runtime::new();
    let mut b = bundle("grep ^Groups: /proc/self/status; cat /dev/nvidia0; echo open=$?");
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.config["linux"]["devices"] = json!([
        {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0,
         "fileMode": 0o660, "uid": 0, "gid": VIDEO},
        {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255,
         "fileMode": 0o666, "uid": 0, "gid": 0}
    ]);
    let out = node.run(&rt, &b, &id("applied-gid"));
    assert_ran(&out);
    let groups = stdout(&out)
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        groups.split_whitespace().any(|g| g == VIDEO.to_string()),
        "{groups:?} lacks the node's group"
    );
    assert!(
        stderr(&out).contains(&format!("can't open '/dev/nvidia0': {ENXIO}")),
        "{}",
        stderr(&out)
    );
}
