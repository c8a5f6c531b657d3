//! Applying the requested CDI devices' container edits (plus their specs' own edits).
//!
//! Every hook is added to the spec as an OCI hook, with an explicit (possibly empty)
//! environment. NVIDIA's own (`nvidia-cdi-hook`, `nvidia-ctk hook`) are then taken out
//! and done by gpurun with those an engine put in the config ([`crate::gpu::nvhooks`]);
//! `disable-device-node-modification` also asks for the generated `/proc/driver/nvidia`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, LinuxDevice, LinuxDeviceType};

use super::{ContainerEdits, HookEdit, Registry};
use crate::gpu::editor::Editor;
use crate::gpu::paths::{is_clean_absolute, normalize};
use crate::gpu::GpuError;

/// What applying CDI devices did, beyond the spec edits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Minors of `/dev/nvidia<N>` nodes injected (to find the GPUs for leases/REQUIRE).
    pub gpu_minors: Vec<u32>,
    /// An NVIDIA hook asked for `ModifyDeviceFiles: 0`.
    pub disable_device_node_modification: bool,
}

fn cdi_err(msg: String) -> GpuError {
    GpuError::Cdi(msg)
}

/// Applies the fully-qualified `names` from `registry`.
pub fn apply(
    ed: &mut Editor<'_>,
    registry: &Registry,
    names: &[String],
) -> Result<Applied, GpuError> {
    let mut edits: Vec<(String, &ContainerEdits)> = Vec::new();
    let mut specs_done: Vec<usize> = Vec::new();
    for name in names {
        let (s, d) = registry.lookup(name).map_err(cdi_err)?;
        let spec = &registry.specs[s].1;
        if !specs_done.contains(&s) {
            specs_done.push(s);
            if let Some(e) = &spec.container_edits {
                edits.push((
                    format!("{} (spec {})", spec.kind, registry.specs[s].0.display()),
                    e,
                ));
            }
        }
        edits.push((name.clone(), &spec.devices[d].container_edits));
    }
    let mut applied = Applied::default();
    for (origin, e) in &edits {
        if e.intel_rdt.is_some() {
            return Err(cdi_err(format!(
                "{origin}: intelRdt edits are not supported by gpurun"
            )));
        }
        if !e.net_devices.is_empty() {
            return Err(cdi_err(format!(
                "{origin}: netDevices edits are not supported by gpurun"
            )));
        }
        for kv in &e.env {
            if let Some((k, v)) = kv.split_once('=') {
                ed.set_env(k, v);
            }
        }
        for n in &e.device_nodes {
            let (dev, access) = device(n).map_err(|m| cdi_err(format!("{origin}: {m}")))?;
            if let Some(minor) = gpu_minor(dev.path()) {
                applied.gpu_minors.push(minor);
            }
            ed.device(dev, &access);
        }
        ed.add_gids(&e.additional_gids);
        for h in &e.hooks {
            applied.disable_device_node_modification |= asks_for_params(h);
            add_hook(ed, h);
        }
    }
    // Mounts last, sorted by depth (as CDI does) so a parent is mounted before its children.
    let mut mounts: Vec<(&str, &super::MountEdit)> = edits
        .iter()
        .flat_map(|(o, e)| e.mounts.iter().map(move |m| (o.as_str(), m)))
        .collect();
    mounts.sort_by_key(|(_, m)| Path::new(&m.container_path).components().count());
    for (origin, m) in mounts {
        let dest = Path::new(&m.container_path);
        if !is_clean_absolute(&normalize(dest)) || !m.host_path.starts_with('/') {
            return Err(GpuError::UnsafePath {
                path: dest.to_path_buf(),
                message: format!("{origin}: CDI mount paths must be absolute with no `..`"),
            });
        }
        let typ = m.typ.clone().or_else(|| {
            m.options
                .iter()
                .any(|o| o == "bind" || o == "rbind")
                .then(|| "bind".to_string())
        });
        ed.mount(
            Path::new(&m.host_path),
            dest,
            typ.as_deref(),
            m.options.clone(),
        );
    }
    applied.gpu_minors.sort_unstable();
    applied.gpu_minors.dedup();
    Ok(applied)
}

fn device(n: &super::DeviceNodeEdit) -> Result<(LinuxDevice, String), String> {
    let host = n.host_path.as_deref().unwrap_or(&n.path);
    let mut typ = n.typ.clone();
    let (mut major, mut minor) = (n.major, n.minor);
    let mut mode = n.file_mode;
    let (mut uid, mut gid) = (n.uid, n.gid);
    if typ.is_none() || major.is_none() || minor.is_none() {
        let meta = std::fs::metadata(host).map_err(|e| format!("device node {host}: {e}"))?;
        let ft = meta.file_type();
        let t = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            return Err(format!("device node {host} is not a device"));
        };
        typ.get_or_insert_with(|| t.to_string());
        major.get_or_insert(nix::sys::stat::major(meta.rdev()) as i64);
        minor.get_or_insert(nix::sys::stat::minor(meta.rdev()) as i64);
        mode.get_or_insert(meta.mode() & 0o777);
        uid.get_or_insert(meta.uid());
        gid.get_or_insert(meta.gid());
    }
    let typ = match typ.as_deref() {
        Some("b") => LinuxDeviceType::B,
        Some("u") => LinuxDeviceType::U,
        Some("p") => LinuxDeviceType::P,
        _ => LinuxDeviceType::C,
    };
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(&n.path));
    d.set_typ(typ);
    d.set_major(major.unwrap_or(0));
    d.set_minor(minor.unwrap_or(0));
    d.set_file_mode(mode);
    d.set_uid(uid);
    d.set_gid(gid);
    Ok((d, n.permissions.clone().unwrap_or_else(|| "rwm".into())))
}

/// `/dev/nvidia<N>` → N.
fn gpu_minor(path: &Path) -> Option<u32> {
    path.to_str()?.strip_prefix("/dev/nvidia")?.parse().ok()
}

/// NVIDIA's `disable-device-node-modification` (its binary named by file name): a grant
/// from this spec gets the generated `/proc/driver/nvidia` with its params.
fn asks_for_params(h: &HookEdit) -> bool {
    let nvidia = Path::new(&h.path)
        .file_name()
        .is_some_and(|n| n == "nvidia-cdi-hook" || n == "nvidia-ctk");
    nvidia
        && h.args
            .iter()
            .any(|a| a == "disable-device-node-modification")
}

fn add_hook(ed: &mut Editor<'_>, h: &HookEdit) {
    let mut hook = Hook::default();
    hook.set_path(PathBuf::from(&h.path));
    hook.set_args((!h.args.is_empty()).then(|| h.args.clone()));
    // Never let a hook inherit the runtime's environment (CVE-2025-23266's lesson).
    hook.set_env(Some(h.env.clone()));
    hook.set_timeout(h.timeout);
    let spec = ed.spec();
    let mut hooks = spec.hooks().clone().unwrap_or_default();
    let list = match h.hook_name.as_str() {
        "createRuntime" => hooks.create_runtime_mut(),
        "createContainer" => hooks.create_container_mut(),
        "startContainer" => hooks.start_container_mut(),
        "poststart" => hooks.poststart_mut(),
        _ => hooks.poststop_mut(),
    };
    list.get_or_insert_with(Vec::new).push(hook);
    spec.set_hooks(Some(hooks));
}
