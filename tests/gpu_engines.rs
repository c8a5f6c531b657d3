//! GPUs that the engine already applied: config.json edited by CDI exactly as
//! containerd 2.x, CRI-O and Podman edit it ([`engine_cdi`](gpurun::gpu::fake::engine_cdi)), with specs shaped like
//! NVIDIA's own ([`nvidia_cdi`](gpurun::gpu::fake::nvidia_cdi): a DRA claim with a full GPU, a MIG device and
//! MPS, the device plugin's `cdi-cri` GPUs and IMEX channels, `nvidia-ctk cdi generate`),
//! run by the real binary on the fake two-GPU tree.
//!
//! The fake nodes have NVIDIA's majors and no driver behind them: `open()` in the
//! container gives ENXIO when the device cgroup allows the node, EPERM when not.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;

use std::path::PathBuf;

use common::*;
use gpu_node::*;
use gpurun::gpu::fake::engine_cdi;
use gpurun::gpu::fake::nvidia_cdi as nvidia;
use serde_json::Value;

/// A stand-in for NVIDIA's hook binary: if anything runs it, it leaves a line in `ran`.
struct FakeHook {
    path: PathBuf,
    ran: PathBuf,
}

impl FakeHook {
    fn new(node: &Node) -> FakeHook {
        let bin = node.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = bin.join("nvidia-cdi-hook");
        let ran = node.dir.path().join("nvidia-cdi-hook.ran");
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", ran.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeHook { path, ran }
    }

    fn assert_never_ran(&self) {
        assert!(
            !self.ran.exists(),
            "NVIDIA's hook was executed: {}",
            std::fs::read_to_string(&self.ran).unwrap_or_default()
        );
    }
}

fn holders(node: &Node, rt: &Runtime, gpu: usize) -> Vec<Value> {
    node.gpus_json(rt)[gpu]["holders"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What `open()` of each node gives inside: `path=ENXIO|EPERM|ENOENT`.
fn opens(nodes: &[&str]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "if ! test -e {n}; then echo {n}=ENOENT; \
                 elif cat {n} 2>&1 | grep -q 'not permitted'; then echo {n}=EPERM; \
                 else echo {n}=ENXIO; fi; "
            )
        })
        .collect()
}

/// A busybox bundle running `script`, with a CUDA image's `NVIDIA_VISIBLE_DEVICES=all`
/// and `devices` applied from `specs` as the engine applies them.
fn engine_bundle(script: &str, specs: &[Value], devices: &[&str]) -> Bundle {
    let mut b = bundle(script);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    engine_cdi::inject(&mut b.config, specs, devices).unwrap();
    b
}

fn dra_device(suffix: &str) -> String {
    format!("k8s.gpu.nvidia.com/claim={}-{suffix}", nvidia::CLAIM)
}

#[test]
fn a_dra_claim_applied_by_the_engine_is_a_lease_shown_as_a_holder_and_runs_no_nvidia_hook() {
    if skip(
        "a_dra_claim_applied_by_the_engine_is_a_lease_shown_as_a_holder_and_runs_no_nvidia_hook",
    ) {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let hook = FakeHook::new(&node);
    let claim = nvidia::dra_claim(&node.host(), &hook.path, Some(0), None);
    let device = dra_device("gpu-0");
    let script = format!(
        "{} ls /proc/driver/nvidia/gpus; readlink /usr/lib/x86_64-linux-gnu/libcuda.so; \
         echo NVD=$NVIDIA_VISIBLE_DEVICES",
        opens(&["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl"])
    );
    let out = node.run(
        &rt,
        &engine_bundle(&script, std::slice::from_ref(&claim), &[&device]),
        &id("dra-run"),
    );
    assert_ran(&out);
    hook.assert_never_ran();
    let text = stdout(&out);
    assert!(has_line(&out, "/dev/nvidia0=ENXIO"), "{text}");
    assert!(has_line(&out, "/dev/nvidiactl=ENXIO"), "{text}");
    assert!(has_line(&out, "/dev/nvidia1=ENOENT"), "{text}");
    assert!(
        has_line(&out, "0000:3b:00.0"),
        "its GPU's procfs entry: {text}"
    );
    assert!(
        !text.contains("0000:86:00.0"),
        "only its GPU's procfs entry: {text}"
    );
    assert!(
        has_line(&out, "libcuda.so.1"),
        "create-symlinks made its link: {text}"
    );
    assert!(has_line(&out, "NVD=void"), "{text}");

    let held = id("dra-held");
    let out = node.create(&rt, &engine_bundle("sleep 60", &[claim], &[&device]), &held);
    assert!(out.status.success(), "{}", stderr(&out));
    let h = holders(&node, &rt, 0);
    assert_eq!(h.len(), 1, "the claimed GPU has its holder: {h:?}");
    assert_eq!(h[0]["id"], held.as_str());
    assert!(holders(&node, &rt, 1).is_empty(), "GPU 1 was not claimed");
    let list = node.ok(&rt, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(held.as_str()) && l.contains(GPU0)),
        "{list}"
    );
    node.ok(&rt, &["delete", "--force", &held]);
    assert!(
        holders(&node, &rt, 0).is_empty(),
        "delete releases the lease"
    );
}

#[test]
fn a_dra_mig_claim_is_a_lease_on_its_parent_with_its_capability_nodes() {
    if skip("a_dra_mig_claim_is_a_lease_on_its_parent_with_its_capability_nodes") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let hook = FakeHook::new(&node);
    let claim = nvidia::dra_claim(&node.host(), &hook.path, None, Some(1));
    let device = dra_device("gpu-1-mig-1g10gb-19-0");
    let gi = format!("/dev/nvidia-caps/nvidia-cap{}", nvidia::MIG_GI_MINOR);
    let ci = format!("/dev/nvidia-caps/nvidia-cap{}", nvidia::MIG_CI_MINOR);
    let out = node.run(
        &rt,
        &engine_bundle(
            &opens(&[&gi, &ci, "/dev/nvidia0", "/dev/nvidia1"]),
            std::slice::from_ref(&claim),
            &[&device],
        ),
        &id("dra-mig-run"),
    );
    assert_ran(&out);
    for line in [
        format!("{gi}=ENXIO"),
        format!("{ci}=ENXIO"),
        "/dev/nvidia1=ENXIO".to_string(),
        "/dev/nvidia0=ENOENT".to_string(),
    ] {
        assert!(
            has_line(&out, &line),
            "{line} missing from: {}",
            stdout(&out)
        );
    }
    let held = id("dra-mig");
    let b = engine_bundle("sleep 60", &[claim], &[&device]);
    let out = node.create(&rt, &b, &held);
    assert!(out.status.success(), "{}", stderr(&out));
    let h = holders(&node, &rt, 1);
    assert_eq!(h.len(), 1, "the MIG device's parent has its holder: {h:?}");
    assert_eq!(h[0]["id"], held.as_str());
    assert!(holders(&node, &rt, 0).is_empty());
    node.ok(&rt, &["delete", "--force", &held]);
    hook.assert_never_ran();
}

#[test]
fn the_device_plugins_cdi_cri_gpus_are_the_grant_and_an_images_env_all_is_ignored() {
    if skip("the_device_plugins_cdi_cri_gpus_are_the_grant_and_an_images_env_all_is_ignored") {
        return;
    }
    let node = Node::new(true);
    let rt = Runtime::new();
    let hook = FakeHook::new(&node);
    let spec = nvidia::device_plugin_gpus(&node.host(), &hook.path, &[GPU0, GPU1]);
    let device = format!("k8s.device-plugin.nvidia.com/gpu={GPU1}");
    let mut b = bundle(&opens(&["/dev/nvidia0", "/dev/nvidia1"]));
    privileged(&mut b);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    engine_cdi::inject(&mut b.config, &[spec], &[&device]).unwrap();
    // The spec-wide edits set `void`; an image setting `all` after them is what a
    // Dockerfile's ENV and a later engine edit produce alike.
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    let out = node.run(&rt, &b, &id("dp-cri"));
    assert_ran(&out);
    assert!(has_line(&out, "/dev/nvidia1=ENXIO"), "{}", stdout(&out));
    assert!(
        has_line(&out, "/dev/nvidia0=ENOENT"),
        "only the applied GPU: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("NVIDIA_VISIBLE_DEVICES"),
        "the ignored env request is named in a warning: {}",
        stderr(&out)
    );
    hook.assert_never_ran();
}

#[test]
fn an_exclusive_engine_applied_gpu_refuses_a_second_holder_naming_the_first() {
    if skip("an_exclusive_engine_applied_gpu_refuses_a_second_holder_naming_the_first") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let hook = FakeHook::new(&node);
    let spec = nvidia::ctk_generate(&node.host(), &hook.path, &[GPU0, GPU1]);
    let held = |name: &str| {
        let mut b = engine_bundle(
            "sleep 60",
            std::slice::from_ref(&spec),
            &["nvidia.com/gpu=0"],
        );
        annotate(&mut b, "gpurun.dev/gpu-sharing", "exclusive");
        (b, id(name))
    };
    let (b1, first) = held("ctk-a");
    let out = node.create(&rt, &b1, &first);
    assert!(out.status.success(), "{}", stderr(&out));
    let (b2, second) = held("ctk-b");
    let out = node.create(&rt, &b2, &second);
    assert!(
        !out.status.success(),
        "a second exclusive holder was admitted"
    );
    assert!(
        stderr(&out).contains(&first),
        "the refusal names the holder: {}",
        stderr(&out)
    );
    assert!(
        !rt.root.path().join(&second).exists(),
        "nothing of the refused container is left"
    );
    node.ok(&rt, &["delete", "--force", &first]);
    let out = node.create(&rt, &b2, &second);
    assert!(
        out.status.success(),
        "free again after delete: {}",
        stderr(&out)
    );
    node.ok(&rt, &["delete", "--force", &second]);
    hook.assert_never_ran();
}

#[test]
fn an_mps_claim_keeps_its_edits_and_shows_as_mps() {
    if skip("an_mps_claim_keeps_its_edits_and_shows_as_mps") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let hook = FakeHook::new(&node);
    let (pipe, shm) = (
        node.dir.path().join("mps/pipe"),
        node.dir.path().join("mps/shm"),
    );
    for d in [&pipe, &shm] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(pipe.join("control"), "mps").unwrap();
    let claim = nvidia::with_mps(
        nvidia::dra_claim(&node.host(), &hook.path, Some(0), None),
        &pipe,
        &shm,
    );
    let device = dra_device("gpu-0");
    let script = "cat /tmp/nvidia-mps/control; echo; echo P=$CUDA_MPS_PIPE_DIRECTORY; \
                  touch /dev/shm/written && echo shm=rw";
    let out = node.run(
        &rt,
        &engine_bundle(script, std::slice::from_ref(&claim), &[&device]),
        &id("mps-run"),
    );
    assert_ran(&out);
    assert!(has_line(&out, "mps"), "{}", stdout(&out));
    assert!(has_line(&out, "P=/tmp/nvidia-mps"), "{}", stdout(&out));
    assert!(has_line(&out, "shm=rw"), "{}", stdout(&out));
    assert!(
        shm.join("written").exists(),
        "the shm bind is the host's directory"
    );

    let held = id("mps-held");
    let out = node.create(&rt, &engine_bundle("sleep 60", &[claim], &[&device]), &held);
    assert!(out.status.success(), "{}", stderr(&out));
    let h = holders(&node, &rt, 0);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(
        h[0]["mps"], true,
        "the holder shares its GPU through MPS: {h:?}"
    );
    node.ok(&rt, &["delete", "--force", &held]);
    hook.assert_never_ran();
}

#[test]
fn the_device_plugins_imex_channel_is_granted_with_its_device_rule() {
    if skip("the_device_plugins_imex_channel_is_granted_with_its_device_rule") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let spec = nvidia::device_plugin_imex(&node.host(), &[0]);
    let b = engine_bundle(
        &opens(&["/dev/nvidia-caps-imex-channels/channel0"]),
        &[spec],
        &["k8s.device-plugin.nvidia.com/imex-channel=0"],
    );
    let out = node.run(&rt, &b, &id("imex"));
    assert_ran(&out);
    assert!(
        has_line(&out, "/dev/nvidia-caps-imex-channels/channel0=ENXIO"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_refused_request_has_its_reason_code_in_the_json_log() {
    if skip("a_refused_request_has_its_reason_code_in_the_json_log") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let b = bundle("true");
    b.write();
    let log = node.dir.path().join("log.json");
    let cid = id("code");
    rt.track(&cid);
    let out = node
        .cmd(&rt)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "create", "--gpus", "7", "-b"])
        .arg(b.path())
        .arg(&cid)
        .output()
        .unwrap();
    assert!(!out.status.success(), "GPU 7 does not exist");
    let text = std::fs::read_to_string(&log).unwrap();
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["level"] == "error")
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert_eq!(line["code"], "gpu-unknown-device", "{line}");
    assert!(line["msg"].as_str().unwrap().contains("7"), "{line}");
}
