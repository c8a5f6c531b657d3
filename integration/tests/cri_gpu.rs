//! GPUs through the Kubernetes path, on the two-GPU fake driver tree: a CDI annotation
//! (passed by containerd's `container_annotations`), the device plugin's volume-mount
//! list, and an unknown device whose error reaches the CRI caller.
//!
//! The fake nodes have NVIDIA's major numbers and no driver behind them, so `open()` in
//! the container says exactly what the device cgroup decided: ENXIO ("No such device or
//! address") when the rule allows the node, EPERM when it does not.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use gpurun::gpu::lease::Leases;
use gpurun_integration::containerd::K8S_NS;
use gpurun_integration::cri::{self, v1};
use gpurun_integration::fakegpu::{FakeGpus, GPU1};
use gpurun_integration::pods::{setup, CriEnv};
use gpurun_integration::{can_run, serial};

const LOOP: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 1; done",
];

fn fake() -> Option<FakeGpus> {
    if !can_run(&["cc", "ldconfig"]) {
        return None;
    }
    Some(FakeGpus::build())
}

/// What `open()` of `node` gives in the container: "ENXIO", "EPERM", "ENOENT" or the text.
fn open_result(e: &CriEnv, id: &str, node: &str) -> String {
    let (code, _, err) = e
        .cri
        .exec(id, &["sh", "-c", &format!("cat {node} >/dev/null")])
        .unwrap();
    assert_ne!(code, 0, "reading a driverless node succeeded");
    if err.contains("No such device or address") {
        "ENXIO".into()
    } else if err.contains("Operation not permitted") {
        "EPERM".into()
    } else if err.contains("No such file or directory") {
        "ENOENT".into()
    } else {
        err
    }
}

/// The environment of the container's init (the one gpurun edited; an exec'd process
/// gets the caller's process spec instead).
fn init_env(e: &CriEnv, id: &str) -> String {
    e.sh(id, "tr '\\0' '\\n' < /proc/1/environ")
}

fn state_dir(e: &CriEnv) -> std::path::PathBuf {
    e.c.dir().join("gpu-state")
}

fn holders(e: &CriEnv) -> Vec<String> {
    Leases::new(&state_dir(e))
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.holder.container_id)
        .collect()
}

#[test]
fn cri_gpu_by_cdi_annotation() {
    let _g = serial();
    let Some(f) = fake() else { return };
    let Some(e) = setup(&f.gpurun_toml()) else {
        return;
    };
    let pod_cfg = e.pod_config("cdi");
    let pod = e.run_pod(&pod_cfg);
    let mut cfg = cri::container_config("cuda", &pod_cfg, LOOP);
    cfg.annotations = HashMap::from([(
        "cdi.k8s.io/gpurun-test".to_string(),
        "nvidia.com/gpu=0".to_string(),
    )]);
    let id = e.start_container(&pod, &pod_cfg, &cfg);

    assert_eq!(open_result(&e, &id, "/dev/nvidia0"), "ENXIO");
    assert_eq!(open_result(&e, &id, "/dev/nvidiactl"), "ENXIO");
    assert_eq!(open_result(&e, &id, "/dev/nvidia1"), "ENOENT");
    // The spec-wide edits of the CDI spec: driver libraries, and the env it sets.
    e.sh(&id, "test -f /usr/lib/x86_64-linux-gnu/libcuda.so.1");
    assert!(init_env(&e, &id).contains("NVIDIA_VISIBLE_DEVICES=void"));
    // The sandbox got no GPU.
    let sandbox = e.c.gpurun_state(K8S_NS, &pod).unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert!(!Path::new(&format!("/proc/{sandbox}/root/dev/nvidia0")).exists());
    assert_eq!(holders(&e), vec![id.clone()]);

    e.remove_container(&id);
    assert!(holders(&e).is_empty(), "{:?}", holders(&e));
    e.remove_pod(&pod);
}

#[test]
fn cri_gpu_by_device_plugin_mounts() {
    let _g = serial();
    let Some(f) = fake() else { return };
    let Some(e) = setup(&f.gpurun_toml()) else {
        return;
    };
    let pod_cfg = e.pod_config("plugin");
    let pod = e.run_pod(&pod_cfg);
    let mut cfg = cri::container_config("cuda", &pod_cfg, LOOP);
    // What NVIDIA's device plugin returns with DEVICE_LIST_STRATEGY=volume-mounts.
    cfg.envs = vec![v1::KeyValue {
        key: "NVIDIA_VISIBLE_DEVICES".into(),
        value: "/var/run/nvidia-container-devices".into(),
    }];
    cfg.mounts = vec![v1::Mount {
        container_path: format!("/var/run/nvidia-container-devices/{GPU1}"),
        host_path: "/dev/null".into(),
        readonly: true,
        ..Default::default()
    }];
    let id = e.start_container(&pod, &pod_cfg, &cfg);

    assert_eq!(open_result(&e, &id, "/dev/nvidia1"), "ENXIO");
    assert_eq!(open_result(&e, &id, "/dev/nvidia0"), "ENOENT");
    assert_eq!(open_result(&e, &id, "/dev/nvidia-uvm"), "ENXIO");
    // The marker became the list it stands for; the driver's files and procfs view came along.
    assert!(init_env(&e, &id).contains(&format!("NVIDIA_VISIBLE_DEVICES={GPU1}")));
    e.sh(&id, "test -f /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1");
    e.sh(&id, "test -x /usr/bin/nvidia-smi");
    // With or without NVIDIA's kernel module, the container sees the filtered procfs
    // view: only its GPU, and node creation forbidden.
    let params = e.sh(&id, "cat /proc/driver/nvidia/params");
    assert!(params.contains("ModifyDeviceFiles: 0"), "{params}");
    let gpus = e.sh(&id, "ls /proc/driver/nvidia/gpus");
    assert_eq!(
        gpus.split_whitespace().collect::<Vec<_>>(),
        ["0000:86:00.0"]
    );
    assert_eq!(holders(&e), vec![id.clone()]);

    e.remove_container(&id);
    assert!(holders(&e).is_empty(), "{:?}", holders(&e));
    e.remove_pod(&pod);
}

#[test]
fn cri_unknown_gpu_error_reaches_the_caller() {
    let _g = serial();
    let Some(f) = fake() else { return };
    let Some(e) = setup(&f.gpurun_toml()) else {
        return;
    };
    let pod_cfg = e.pod_config("nogpu");
    let pod = e.run_pod(&pod_cfg);
    let mut cfg = cri::container_config("cuda", &pod_cfg, LOOP);
    cfg.annotations = HashMap::from([(
        "cdi.k8s.io/gpurun-test".to_string(),
        "nvidia.com/gpu=7".to_string(),
    )]);
    let id = e.cri.create(&pod, &cfg, &pod_cfg).unwrap();
    let err = e.cri.start(&id).expect_err("GPU 7 does not exist");
    let msg = err.message();
    assert!(msg.contains("OCI runtime create failed"), "{msg}");
    assert!(msg.contains("nvidia.com/gpu=7"), "{msg}");
    e.cri.remove(&id).unwrap();
    e.assert_gone(&id);
    assert!(holders(&e).is_empty(), "{:?}", holders(&e));
    e.remove_pod(&pod);
}
