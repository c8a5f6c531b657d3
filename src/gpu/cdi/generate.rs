//! `cdi generate`: a self-contained CDI spec for an inventory. Devices by index, by UUID
//! and `all`; spec-wide edits for the control nodes and driver files. It needs no hook:
//! every SONAME and `.so` name is its own bind mount of the real file.

use std::path::Path;

use super::{CdiDevice, CdiSpec, ContainerEdits, DeviceNodeEdit, MountEdit};
use crate::gpu::capabilities::Capabilities;
use crate::gpu::editor::{FILE_OPTIONS, IPC_OPTIONS};
use crate::gpu::inventory::{node_groups, DeviceNode, Inventory, DEV_LINKED};

pub const CDI_KIND: &str = "nvidia.com/gpu";
/// Device names starting with a digit and `hostPath` need 0.5.0.
const VERSION: &str = "0.5.0";
/// `additionalGids` needs 0.7.0: used only when a node needs its group, so specs for hosts
/// with world read-write nodes stay readable by engines that know only older versions.
const VERSION_GIDS: &str = "0.7.0";

fn node(inv: &Inventory, n: &DeviceNode) -> DeviceNodeEdit {
    let restricted = !node_groups(std::slice::from_ref(n)).is_empty();
    let host = inv
        .roots
        .dev
        .join(n.path.strip_prefix("/").unwrap_or(&n.path));
    DeviceNodeEdit {
        path: n.path.to_string_lossy().into_owned(),
        host_path: Some(host.to_string_lossy().into_owned()),
        typ: Some("c".into()),
        major: Some(i64::from(n.major)),
        minor: Some(i64::from(n.minor)),
        file_mode: Some(n.mode & 0o777),
        permissions: Some("rw".into()),
        // With the numbers given, an engine takes the owner from here, not the host node:
        // a node only its group may open must keep that group for `additionalGids` to work.
        uid: restricted.then_some(n.uid),
        gid: restricted.then_some(n.gid),
    }
}

fn mount(host: &Path, container: &Path, options: &[&str]) -> MountEdit {
    MountEdit {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.to_string_lossy().into_owned(),
        options: options.iter().map(|s| s.to_string()).collect(),
        typ: Some("bind".into()),
    }
}

/// The in-root path of a host path under the driver root.
fn in_root(inv: &Inventory, host: &Path) -> Option<std::path::PathBuf> {
    let rel = host.strip_prefix(&inv.roots.driver).ok()?;
    Some(Path::new("/").join(rel))
}

/// A spec for every GPU in `inv`, with the driver files `caps` select.
pub fn generate(inv: &Inventory, caps: Capabilities) -> CdiSpec {
    let mut devices = Vec::new();
    for g in &inv.gpus {
        let edits = ContainerEdits {
            device_nodes: vec![node(inv, &g.node)],
            additional_gids: node_groups(std::slice::from_ref(&g.node)),
            ..Default::default()
        };
        devices.push(CdiDevice {
            name: g.index.to_string(),
            annotations: None,
            container_edits: edits.clone(),
        });
        devices.push(CdiDevice {
            name: g.uuid.clone(),
            annotations: None,
            container_edits: edits,
        });
    }
    let gpu_nodes: Vec<DeviceNode> = inv.gpus.iter().map(|g| g.node.clone()).collect();
    if !inv.gpus.is_empty() {
        devices.push(CdiDevice {
            name: "all".into(),
            annotations: None,
            container_edits: ContainerEdits {
                device_nodes: inv.gpus.iter().map(|g| node(inv, &g.node)).collect(),
                additional_gids: node_groups(&gpu_nodes),
                ..Default::default()
            },
        });
    }

    let mut common = ContainerEdits {
        // Keeps a hook-based NVIDIA runtime from acting on the image's own request again.
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".into()],
        ..Default::default()
    };
    let control: Vec<DeviceNode> = std::iter::once(&inv.nvidiactl)
        .chain(
            [&inv.uvm, &inv.uvm_tools, &inv.modeset]
                .into_iter()
                .flatten(),
        )
        .cloned()
        .collect();
    common.device_nodes = control.iter().map(|n| node(inv, n)).collect();
    common.additional_gids = node_groups(&control);
    for lib in inv.libraries_for(caps) {
        let Some(path) = in_root(inv, &lib.host_path) else {
            continue;
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        let mut names = vec![lib.name.clone()];
        names.extend(lib.soname.clone());
        if DEV_LINKED.contains(&lib.prefix.as_str()) {
            names.push(lib.prefix.clone());
        }
        names.dedup();
        for n in names {
            common
                .mounts
                .push(mount(&lib.host_path, &dir.join(n), FILE_OPTIONS));
        }
    }
    for b in inv.binaries_for(caps) {
        common
            .mounts
            .push(mount(&b.host_path, &b.path, FILE_OPTIONS));
    }
    for f in &inv.firmware {
        common
            .mounts
            .push(mount(&f.host_path, &f.path, FILE_OPTIONS));
    }
    for s in inv.ipc_for(caps) {
        common
            .mounts
            .push(mount(&s.host_path, &s.path, IPC_OPTIONS));
    }
    let gids = !common.additional_gids.is_empty()
        || devices
            .iter()
            .any(|d| !d.container_edits.additional_gids.is_empty());
    CdiSpec {
        cdi_version: if gids { VERSION_GIDS } else { VERSION }.into(),
        kind: CDI_KIND.into(),
        annotations: None,
        devices,
        container_edits: Some(common),
    }
}

/// The spec as CDI 0.5.0 readers (Podman 4.x) accept it: no `additionalGids`. The nodes
/// keep their uid and gid, from which gpurun adds the groups when it receives them
/// applied.
pub fn without_additional_gids(spec: &mut CdiSpec) {
    if let Some(e) = spec.container_edits.as_mut() {
        e.additional_gids.clear();
    }
    for d in &mut spec.devices {
        d.container_edits.additional_gids.clear();
    }
    spec.cdi_version = VERSION.into();
}
