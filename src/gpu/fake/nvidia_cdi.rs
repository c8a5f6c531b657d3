//! CDI specs shaped like the ones NVIDIA's tools write, pointing at a fake driver tree.
//! Each function names the release whose output it follows; the host paths, majors and
//! minors are the fake tree's.

use std::path::Path;

use super::{LIB_DIR, VERSION};
use serde_json::{json, Value};

/// Minors of the fake tree's MIG capability nodes for GPU 1's `gi1` and `gi1/ci0`
/// (`proc/driver/nvidia-caps/mig-minors`).
pub const MIG_GI_MINOR: u32 = 12;
pub const MIG_CI_MINOR: u32 = 13;
/// The `nvidia-caps` major of the fake tree's `/proc/devices`.
pub const CAPS_MAJOR: u32 = 236;
/// A DRA ResourceClaim UID.
pub const CLAIM: &str = "6f1c0c52-7a0e-4d1b-9a59-0c2cbd1b8e11";

fn hook(hook_path: &Path, args: &[&str]) -> Value {
    let mut a = vec!["nvidia-cdi-hook".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    json!({
        "hookName": "createContainer",
        "path": hook_path,
        "args": a,
        "env": ["NVIDIA_CTK_DEBUG=false"],
    })
}

fn node(host: &Path, name: &str) -> Value {
    json!({"path": format!("/dev/{name}"), "hostPath": host.join("dev").join(name)})
}

fn lib_mount(host: &Path, rel: &str) -> Value {
    let container = format!("/{LIB_DIR}/{rel}");
    json!({
        "hostPath": host.join(LIB_DIR).join(rel),
        "containerPath": container,
        "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"],
    })
}

/// The spec-wide edits of nvidia-container-toolkit v1.20.0's `nvcdi` library (what
/// `nvidia-ctk cdi generate` writes, and the common edits the DRA driver and the device
/// plugin take from the same library): env, control nodes, driver libraries and the five
/// hooks in the order the library emits them.
pub fn toolkit_common_edits(host: &Path, hook_path: &Path) -> Value {
    let lib_dir = format!("/{LIB_DIR}");
    json!({
        "env": [format!("NVIDIA_CTK_LIBCUDA_DIR={lib_dir}"), "NVIDIA_VISIBLE_DEVICES=void"],
        "deviceNodes": [
            node(host, "nvidiactl"),
            node(host, "nvidia-uvm"),
            node(host, "nvidia-uvm-tools"),
        ],
        "hooks": [
            hook(hook_path, &["create-symlinks", "--link", &format!("libcuda.so.1::{lib_dir}/libcuda.so")]),
            hook(hook_path, &["enable-cuda-compat", &format!("--host-driver-version={VERSION}")]),
            hook(hook_path, &["update-ldcache", "--folder", &lib_dir, "--folder", &format!("{lib_dir}/vdpau")]),
            hook(hook_path, &["disable-device-node-modification"]),
            hook(hook_path, &["update-application-profile"]),
        ],
        "mounts": [
            lib_mount(host, &format!("libcuda.so.{VERSION}")),
            lib_mount(host, &format!("libnvidia-ml.so.{VERSION}")),
            lib_mount(host, &format!("vdpau/libvdpau_nvidia.so.{VERSION}")),
        ],
    })
}

fn gpu_device(name: &str, host: &Path, minor: u32) -> Value {
    json!({"name": name, "containerEdits": {"deviceNodes": [node(host, &format!("nvidia{minor}"))]}})
}

/// `nvidia-ctk cdi generate` (nvidia-container-toolkit v1.20.0), kind `nvidia.com/gpu`:
/// devices by index, by UUID and `all`, cdiVersion 0.5.0.
pub fn ctk_generate(host: &Path, hook_path: &Path, uuids: &[&str]) -> Value {
    let mut devices = Vec::new();
    for (i, u) in uuids.iter().enumerate() {
        devices.push(gpu_device(&i.to_string(), host, i as u32));
        devices.push(gpu_device(u, host, i as u32));
    }
    let all: Vec<Value> = (0..uuids.len())
        .map(|i| node(host, &format!("nvidia{i}")))
        .collect();
    devices.push(json!({"name": "all", "containerEdits": {"deviceNodes": all}}));
    json!({
        "cdiVersion": "0.5.0",
        "kind": "nvidia.com/gpu",
        "devices": devices,
        "containerEdits": toolkit_common_edits(host, hook_path),
    })
}

/// The per-claim transient spec of NVIDIA's DRA driver (k8s-dra-driver-gpu v25.12 /
/// its 2026-05 tree, `cmd/gpu-kubelet-plugin/cdi.go`), kind `k8s.gpu.nvidia.com/claim`:
/// a full GPU is `<claimUID>-gpu-<minor>`; a MIG device is the parent GPU's device edits
/// plus its GI and CI capability nodes, given by type, major and minor only (no host
/// node), named `<claimUID>-gpu-<parent>-mig-<profile>-<profileID>-<placement>`.
pub fn dra_claim(
    host: &Path,
    hook_path: &Path,
    full_gpu: Option<u32>,
    mig_parent: Option<u32>,
) -> Value {
    let mut devices = Vec::new();
    if let Some(minor) = full_gpu {
        devices.push(gpu_device(&format!("{CLAIM}-gpu-{minor}"), host, minor));
    }
    if let Some(parent) = mig_parent {
        let cap = |minor: u32| {
            json!({"path": format!("/dev/nvidia-caps/nvidia-cap{minor}"), "type": "c",
                   "fileMode": 0o444, "major": CAPS_MAJOR, "minor": minor})
        };
        let mut d = gpu_device(
            &format!("{CLAIM}-gpu-{parent}-mig-1g10gb-19-0"),
            host,
            parent,
        );
        if let Some(nodes) = d["containerEdits"]["deviceNodes"].as_array_mut() {
            nodes.push(cap(MIG_GI_MINOR));
            nodes.push(cap(MIG_CI_MINOR));
        }
        devices.push(d);
    }
    json!({
        "cdiVersion": "0.5.0",
        "kind": "k8s.gpu.nvidia.com/claim",
        "devices": devices,
        "containerEdits": toolkit_common_edits(host, hook_path),
    })
}

/// The MPS edits the DRA driver adds to a claim's device when its GPU is shared through
/// MPS (`cmd/gpu-kubelet-plugin/sharing.go`, `GetCDIContainerEdits`): the pipe directory
/// variable and read-write binds of the control daemon's pipe and shm directories.
pub fn with_mps(mut claim: Value, pipe_dir: &Path, shm_dir: &Path) -> Value {
    let opts = json!(["rw", "nosuid", "nodev", "bind"]);
    if let Some(d) = claim["devices"].get_mut(0) {
        let e = &mut d["containerEdits"];
        e["env"] = json!(["CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"]);
        e["mounts"] = json!([
            {"containerPath": "/dev/shm", "hostPath": shm_dir, "options": opts},
            {"containerPath": "/tmp/nvidia-mps", "hostPath": pipe_dir, "options": opts},
        ]);
    }
    claim
}

/// The device plugin's `cdi-cri` strategy (k8s-device-plugin v0.20.0): vendor
/// `k8s.device-plugin.nvidia.com`, class `gpu` with devices named by UUID (the default
/// device-id strategy) and the toolkit's common edits.
pub fn device_plugin_gpus(host: &Path, hook_path: &Path, uuids: &[&str]) -> Value {
    let devices: Vec<Value> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| gpu_device(u, host, i as u32))
        .collect();
    json!({
        "cdiVersion": "0.5.0",
        "kind": "k8s.device-plugin.nvidia.com/gpu",
        "devices": devices,
        "containerEdits": toolkit_common_edits(host, hook_path),
    })
}

/// The device plugin's IMEX channel spec (v0.20.0, `internal/cdi/imex.go`): class
/// `imex-channel`, one device per channel id with its node and host node, no other edit.
pub fn device_plugin_imex(host: &Path, channels: &[u32]) -> Value {
    let devices: Vec<Value> = channels
        .iter()
        .map(|c| {
            let rel = format!("nvidia-caps-imex-channels/channel{c}");
            json!({"name": c.to_string(), "containerEdits": {"deviceNodes": [
                {"path": format!("/dev/{rel}"), "hostPath": host.join("dev").join(&rel)}
            ]}})
        })
        .collect();
    json!({
        "cdiVersion": "0.5.0",
        "kind": "k8s.device-plugin.nvidia.com/imex-channel",
        "devices": devices,
    })
}
