//! What discovery found on the host: GPUs, nodes, driver files. Serializable, so it can be
//! cached; [`Inventory::validate`] re-checks a cached copy as hostile input.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::capabilities::{Capabilities, Capability};
use super::paths::is_clean_absolute;
use super::procfs::PciAddr;
use super::Roots;

/// Why a library is injected: its SONAME prefix and the capabilities that select it
/// (research §1.6; `video` also selects the compute libraries, `display` the graphics ones).
pub const LIBRARIES: &[(&str, &[Capability])] = {
    use Capability::*;
    &[
        ("libnvidia-ml.so", &[Utility]),
        ("libnvidia-cfg.so", &[Utility]),
        ("libnvidia-nscq.so", &[Utility]),
        ("libcuda.so", &[Compute, Video]),
        ("libcudadebugger.so", &[Compute, Video]),
        ("libnvidia-opencl.so", &[Compute, Video]),
        ("libnvidia-gpucomp.so", &[Compute, Video]),
        ("libnvidia-ptxjitcompiler.so", &[Compute, Video]),
        ("libnvidia-fatbinaryloader.so", &[Compute, Video]),
        ("libnvidia-allocator.so", &[Compute, Video]),
        ("libnvidia-compiler.so", &[Compute, Video]),
        ("libnvidia-pkcs11.so", &[Compute, Video]),
        ("libnvidia-pkcs11-openssl3.so", &[Compute, Video]),
        ("libnvidia-nvvm.so", &[Compute, Video]),
        ("libnvidia-tileiras.so", &[Compute, Video]),
        ("libvdpau_nvidia.so", &[Video]),
        ("libnvidia-encode.so", &[Video]),
        ("libnvidia-opticalflow.so", &[Video]),
        ("libnvcuvid.so", &[Video]),
        ("libnvidia-eglcore.so", &[Graphics, Display]),
        ("libnvidia-glcore.so", &[Graphics, Display]),
        ("libnvidia-tls.so", &[Graphics, Display]),
        ("libnvidia-glsi.so", &[Graphics, Display]),
        ("libnvidia-fbc.so", &[Graphics, Display]),
        ("libnvidia-ifr.so", &[Graphics, Display]),
        ("libnvidia-rtcore.so", &[Graphics, Display]),
        ("libnvoptix.so", &[Graphics, Display]),
        ("libGLX_nvidia.so", &[Graphics, Display]),
        ("libEGL_nvidia.so", &[Graphics, Display]),
        ("libGLESv2_nvidia.so", &[Graphics, Display]),
        ("libGLESv1_CM_nvidia.so", &[Graphics, Display]),
        ("libnvidia-glvkspirv.so", &[Graphics, Display]),
        ("libnvidia-cbl.so", &[Graphics, Display]),
        ("libnvidia-ngx.so", &[Ngx]),
    ]
};

/// Libraries that also get their unversioned `.so` development name in the container.
pub const DEV_LINKED: &[&str] = &["libcuda.so", "libnvidia-ml.so"];

/// Binaries and the capabilities that select them.
pub const BINARIES: &[(&str, Capability)] = &[
    ("nvidia-smi", Capability::Utility),
    ("nvidia-debugdump", Capability::Utility),
    ("nvidia-persistenced", Capability::Utility),
    ("nv-fabricmanager", Capability::Utility),
    ("nvidia-cuda-mps-control", Capability::Compute),
    ("nvidia-cuda-mps-server", Capability::Compute),
];

/// IPC sockets (in-root paths) and the capability that selects them. The MPS pipe
/// directory is deliberately absent: it is per tenant (research §4).
pub const IPC_SOCKETS: &[(&str, Capability)] = &[
    ("/run/nvidia-persistenced/socket", Capability::Utility),
    ("/run/nvidia-fabricmanager/socket", Capability::Utility),
];

/// The capabilities that select a library prefix.
pub fn library_capabilities(prefix: &str) -> Option<Capabilities> {
    LIBRARIES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, caps)| Capabilities::of(caps))
}

/// A character device node on the host, and where it goes in the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceNode {
    /// Path in the container, the same as on the host relative to the dev root (`/dev/nvidia0`).
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// Permission bits (from the host node when it exists, else 0666).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The groups a non-root process needs to open `nodes`: the group of each node that is not
/// read-write for others, as NVIDIA's toolkit adds them. Added whatever the container's
/// user, since root gains nothing and loses nothing by them. Group 0 is never added: a node
/// only root's group may open stays closed to a non-root user rather than handing it
/// root's group for every file.
pub fn node_groups(nodes: &[DeviceNode]) -> Vec<u32> {
    let mut out = Vec::new();
    for n in nodes {
        if n.mode & 0o006 != 0o006 && n.gid != 0 && !out.contains(&n.gid) {
            out.push(n.gid);
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// nvidia-smi's index: position in PCI bus order.
    pub index: u32,
    pub minor: u32,
    pub uuid: String,
    pub model: String,
    pub bus: PciAddr,
    /// Host path of `/proc/driver/nvidia/gpus/<bus>` (under the proc root).
    pub proc_dir: PathBuf,
    pub node: DeviceNode,
    /// From NVML enrichment (the `nvml` module): the compute capability (`8.0`), for
    /// `arch` requirements.
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// From NVML enrichment: the brand as nvidia-smi prints it (`Tesla`, `NVIDIA RTX`).
    #[serde(default)]
    pub brand: Option<String>,
}

/// A MIG device (GPU instance + compute instance) from the capability files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigDevice {
    /// Minor of the parent GPU.
    pub parent_minor: u32,
    pub gi: u32,
    pub ci: u32,
    pub gi_node: DeviceNode,
    pub ci_node: DeviceNode,
    /// Host paths of the GI and CI `access` files under `/proc/driver/nvidia/capabilities`.
    pub gi_access: PathBuf,
    pub ci_access: PathBuf,
    /// From NVML enrichment: `MIG-<uuid>` and the index NVML enumerates it by within its
    /// parent (the `<mig>` of a `<gpu>:<mig>` request).
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub index: Option<u32>,
}

/// A driver library found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Library {
    /// The table prefix it matched (`libcuda.so`).
    pub prefix: String,
    /// Real file name (`libcuda.so.580.65.06`).
    pub name: String,
    /// `DT_SONAME` (`libcuda.so.1`), when the file has one.
    pub soname: Option<String>,
    /// Sub-directory of the library directory it lives in (`vdpau`), if any.
    pub subdir: Option<String>,
    /// Host path of the real file (under the driver root).
    pub host_path: PathBuf,
    /// 32-bit copy, for `compat32`.
    pub lib32: bool,
}

/// A plain file injected at a fixed container path (binary, firmware, socket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub name: String,
    /// Path in the container.
    pub path: PathBuf,
    /// Host path (under the driver root).
    pub host_path: PathBuf,
}

/// Everything discovery found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub roots: Roots,
    pub driver_version: String,
    /// From NVML enrichment: the CUDA driver API version (`12.4`).
    #[serde(default)]
    pub cuda_version: Option<String>,
    pub gpus: Vec<Gpu>,
    pub mig_devices: Vec<MigDevice>,
    pub nvidiactl: DeviceNode,
    pub uvm: Option<DeviceNode>,
    pub uvm_tools: Option<DeviceNode>,
    pub modeset: Option<DeviceNode>,
    pub libraries: Vec<Library>,
    pub binaries: Vec<HostFile>,
    pub firmware: Vec<HostFile>,
    pub ipc: Vec<HostFile>,
    /// How NVML enrichment went.
    #[serde(default)]
    pub enrichment: Enrichment,
}

impl Inventory {
    /// Libraries selected by `caps` (`compat32` adds the 32-bit copies).
    pub fn libraries_for(&self, caps: Capabilities) -> impl Iterator<Item = &Library> {
        self.libraries.iter().filter(move |l| {
            (!l.lib32 || caps.contains(Capability::Compat32))
                && library_capabilities(&l.prefix).is_some_and(|c| c.intersects(caps))
        })
    }

    pub fn binaries_for(&self, caps: Capabilities) -> impl Iterator<Item = &HostFile> {
        self.binaries.iter().filter(move |b| {
            BINARIES
                .iter()
                .any(|(n, c)| *n == b.name && caps.contains(*c))
        })
    }

    pub fn ipc_for(&self, caps: Capabilities) -> impl Iterator<Item = &HostFile> {
        self.ipc.iter().filter(move |s| {
            IPC_SOCKETS
                .iter()
                .any(|(p, c)| Path::new(p) == s.path && caps.contains(*c))
        })
    }

    pub fn gpu_by_minor(&self, minor: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.minor == minor)
    }

    /// Checks a cached inventory before trusting it: every host path inside its root,
    /// every container path clean, every file name what its table entry says.
    /// Every device node the inventory knows: control, GPU and MIG capability nodes.
    pub fn all_nodes(&self) -> impl Iterator<Item = &DeviceNode> {
        let control = [&self.uvm, &self.uvm_tools, &self.modeset]
            .into_iter()
            .flatten()
            .chain(std::iter::once(&self.nvidiactl));
        let mig = self
            .mig_devices
            .iter()
            .flat_map(|m| [&m.gi_node, &m.ci_node]);
        control.chain(self.gpus.iter().map(|g| &g.node)).chain(mig)
    }

    pub fn validate(&self, roots: &Roots) -> Result<(), String> {
        if &self.roots != roots {
            return Err("recorded for other roots".into());
        }
        let under = |p: &Path, root: &Path, what: &str| -> Result<(), String> {
            let rel = p
                .strip_prefix(root)
                .map_err(|_| format!("{what} {} outside {}", p.display(), root.display()))?;
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!("{what} {} is not a clean path", p.display()));
            }
            Ok(())
        };
        let node_ok = |n: &DeviceNode| -> Result<(), String> {
            let ok = is_clean_absolute(&n.path) && n.path.starts_with("/dev/");
            ok.then_some(())
                .ok_or(format!("device path {}", n.path.display()))
        };
        for g in &self.gpus {
            under(&g.proc_dir, &roots.proc, "GPU procfs dir")?;
            node_ok(&g.node)?;
            fact_ok(g.compute_capability.as_deref(), is_version)?;
            fact_ok(g.brand.as_deref(), is_label)?;
        }
        for m in &self.mig_devices {
            under(&m.gi_access, &roots.proc, "MIG access file")?;
            under(&m.ci_access, &roots.proc, "MIG access file")?;
            node_ok(&m.gi_node)?;
            node_ok(&m.ci_node)?;
            fact_ok(m.uuid.as_deref(), is_device_uuid)?;
        }
        fact_ok(self.cuda_version.as_deref(), is_version)?;
        if let Some(smi) = &self.enrichment.smi {
            under(smi, &roots.driver, "nvidia-smi")?;
        }
        for n in [&self.uvm, &self.uvm_tools, &self.modeset]
            .into_iter()
            .flatten()
        {
            node_ok(n)?;
        }
        node_ok(&self.nvidiactl)?;
        for l in &self.libraries {
            under(&l.host_path, &roots.driver, "library")?;
            let suffix = format!("{}.{}", l.prefix, self.driver_version);
            if library_capabilities(&l.prefix).is_none() || l.name != suffix {
                return Err(format!("library {} does not match the driver", l.name));
            }
            if l.host_path.file_name() != Some(l.name.as_ref()) {
                return Err(format!("library {} has another host name", l.name));
            }
            for n in l.soname.iter().chain(l.subdir.iter()) {
                if !is_plain_name(n) {
                    return Err(format!("library name {n:?}"));
                }
            }
        }
        for f in self.binaries.iter().chain(&self.firmware).chain(&self.ipc) {
            under(&f.host_path, &roots.driver, "file")?;
            if !is_clean_absolute(&f.path) || !is_plain_name(&f.name) {
                return Err(format!("file {}", f.path.display()));
            }
        }
        Ok(())
    }
}

/// An enrichment fact, when present, must look like one.
fn fact_ok(v: Option<&str>, ok: fn(&str) -> bool) -> Result<(), String> {
    match v {
        Some(v) if !ok(v) => Err(format!("implausible NVML fact {v:?}")),
        _ => Ok(()),
    }
}

/// A single file-name component: no `/`, not `.` or `..`, not empty.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// How enrichment went, recorded in the inventory (and so in the cache).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrichment {
    /// The nvidia-smi that was run (a host path under the driver root); `None` when the
    /// driver root has none.
    pub smi: Option<PathBuf>,
    /// nvidia-smi failed, hung or answered nonsense: facts are missing that a healthy
    /// driver would give. `gpurun gpus` tries again.
    pub failed: bool,
    /// What is unknown, and why.
    pub notes: Vec<String>,
    /// Not run yet: discovery on a container's start path left it to a background refresh
    /// (`gpu::discover_for_start`).
    #[serde(default)]
    pub pending: bool,
}

impl Enrichment {
    /// One line for the log, or `None` when everything was learnt.
    pub fn warning(&self) -> Option<String> {
        if self.notes.is_empty() {
            return None;
        }
        let via = match &self.smi {
            Some(p) => format!(" through {}", p.display()),
            None => String::new(),
        };
        Some(format!(
            "NVML enrichment{via}: {} (NVIDIA_REQUIRE_* terms over these facts are not \
             checked; MIG devices without a UUID cannot be requested)",
            self.notes.join("; ")
        ))
    }
}

/// `12.4`, `8.0`, `580.65.06`: one to four dot-separated decimal parts.
pub fn is_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (1..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| (1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A UUID-like name (`GPU-…`, `MIG-…`, `MIG-GPU-…/1/0`): printable ASCII, no spaces.
pub fn is_device_uuid(s: &str) -> bool {
    (s.starts_with("GPU-") || s.starts_with("MIG-"))
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Text safe to keep and print: short, no control characters.
pub fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_groups_takes_each_group_only_group_once_never_root_s() {
        let n = |mode, gid| DeviceNode {
            path: std::path::PathBuf::from("/dev/nvidia0"),
            major: 195,
            minor: 0,
            mode,
            uid: 0,
            gid,
        };
        let nodes = [
            n(0o666, 27),
            n(0o660, 44),
            n(0o664, 44),
            n(0o660, 0),
            n(0o600, 45),
        ];
        assert_eq!(node_groups(&nodes), [44, 45]);
        assert!(node_groups(&[n(0o666, 44)]).is_empty());
    }
}
