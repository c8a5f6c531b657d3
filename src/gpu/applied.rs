//! NVIDIA device nodes that the engine put in `linux.devices` itself (CDI applied by
//! containerd, CRI-O, Podman, Docker, or a DRA driver), recognised by major number from the
//! host's `/proc/devices`, checked against the live driver, and mapped to the inventory's
//! GPUs and MIG devices: the grant the engine decided.
//!
//! Nothing here is cached: the majors, `mig-minors` and the capability `access` files are
//! read on every create, so a driver upgrade or a MIG layout change is seen by the next one.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::inventory::{DeviceNode, Gpu, Inventory, MigDevice, BINARIES, LIBRARIES};
use super::paths::normalize;
use super::procfs;
use super::{GpuError, Roots, STALE_FIX};

/// Who made the nodes and mounts checked here, as refusals name it.
pub use super::procfs::Majors;

pub const ORIGIN: &str = "applied by the engine";
/// The minors of the control nodes on the GPU major.
const CTL_MINOR: u32 = 255;
const MODESET_MINOR: u32 = 254;
/// `/dev/console` and `/dev/ptmx`, which every container has beside the OCI default
/// devices (`linux::devices::defaults`).
const CONSOLE_AND_PTMX: &[(u64, u64)] = &[(5, 1), (5, 2)];

/// A node every OCI container gets anyway: a spec listing it says nothing about the
/// host's nodes.
fn is_default_node(major: i64, minor: i64) -> bool {
    let (Ok(major), Ok(minor)) = (u64::try_from(major), u64::try_from(minor)) else {
        return false;
    };
    CONSOLE_AND_PTMX.contains(&(major, minor))
        || crate::linux::devices::defaults()
            .iter()
            .any(|d| (d.major, d.minor) == (major, minor))
}

impl Majors {
    /// From `<proc root>/proc/devices`; a host without one has no NVIDIA majors.
    pub fn read(proc_root: &Path) -> Result<Majors, GpuError> {
        let path = proc_root.join("proc/devices");
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Majors::from_devices(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Majors::default()),
            Err(e) => Err(GpuError::io("reading", &path, e)),
        }
    }

    /// No NVIDIA driver is loaded: no node can be checked against it.
    fn is_empty(&self) -> bool {
        [self.gpu, self.uvm, self.caps, self.imex] == [None; 4]
    }

    fn contains(&self, major: u32) -> bool {
        [self.gpu, self.uvm, self.caps, self.imex].contains(&Some(major))
    }

    fn describe(&self) -> String {
        let name = |n: &str, v: Option<u32>| v.map(|v| format!("{n}={v}"));
        let parts: Vec<String> = [
            name("nvidia", self.gpu),
            name("nvidia-uvm", self.uvm),
            name("nvidia-caps", self.caps),
            name("nvidia-caps-imex-channels", self.imex),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// What an applied node is to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `nvidiactl`, `nvidia-modeset`, `nvidia-uvm`, `nvidia-uvm-tools`.
    Control,
    /// `/dev/nvidia<minor>`.
    Gpu(u32),
    /// A capability node, by its `mig-minors` name (`gpu1/gi1/ci0/access`, `config`).
    Cap(String),
    /// `/dev/nvidia-caps-imex-channels/channel<n>`.
    Imex(u32),
}

/// One NVIDIA node of `linux.devices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub device: LinuxDevice,
    pub kind: Kind,
}

/// True when `linux.devices` lists a character device: only then can the engine have
/// applied NVIDIA nodes, and only then is the node configuration read for them.
pub fn lists_char_devices(spec: &Spec) -> bool {
    char_devices(spec).next().is_some()
}

fn char_devices(spec: &Spec) -> impl Iterator<Item = &LinuxDevice> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .filter(|d| matches!(d.typ(), LinuxDeviceType::C | LinuxDeviceType::U))
}

fn stale(entry: &Path, message: String) -> GpuError {
    GpuError::StaleNode {
        origin: ORIGIN.into(),
        entry: entry.display().to_string(),
        message,
        fix: STALE_FIX,
    }
}

/// The NVIDIA nodes of `linux.devices` (by major, or by a `/dev/nvidia` path whose major
/// the driver no longer has), each checked against the live driver: a node that names a
/// host node must have its major:minor; a capability node must be in `mig-minors` with a
/// matching `access` file. A host with no NVIDIA major has no driver to grant from: its
/// nodes are left to the spec, as runc leaves them.
pub fn scan(spec: &Spec, roots: &Roots) -> Result<Vec<Node>, GpuError> {
    let majors = Majors::read(&roots.proc)?;
    if majors.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut mig_minors = None;
    for d in char_devices(spec) {
        let (Ok(major), Ok(minor)) = (u32::try_from(d.major()), u32::try_from(d.minor())) else {
            continue;
        };
        let path = normalize(d.path());
        let named_nvidia = path.to_string_lossy().starts_with("/dev/nvidia");
        if (!majors.contains(major) && !named_nvidia) || majors.others.contains(&major) {
            continue;
        }
        check_host_node(&path, major, minor, roots)?;
        let kind = if majors.gpu == Some(major) {
            match minor {
                CTL_MINOR | MODESET_MINOR => Kind::Control,
                m => Kind::Gpu(m),
            }
        } else if majors.uvm == Some(major) {
            Kind::Control
        } else if majors.caps == Some(major) {
            let table = match &mig_minors {
                Some(t) => t,
                None => mig_minors.insert(read_mig_minors(roots)?),
            };
            Kind::Cap(cap_name(&path, minor, table, roots)?)
        } else if majors.imex == Some(major) {
            Kind::Imex(minor)
        } else {
            return Err(stale(
                &path,
                format!(
                    "the spec has major {major}, which /proc/devices does not give to any \
                     NVIDIA driver (it has {})",
                    majors.describe()
                ),
            ));
        };
        out.push(Node {
            device: d.clone(),
            kind,
        });
    }
    Ok(out)
}

/// A node the spec names that also exists on the host (under the dev root) must be the
/// same device: after a driver upgrade or a MIG change the spec's numbers are old.
fn check_host_node(path: &Path, major: u32, minor: u32, roots: &Roots) -> Result<(), GpuError> {
    let Ok(rel) = path.strip_prefix("/") else {
        return Ok(());
    };
    let host = roots.dev.join(rel);
    let Ok(meta) = std::fs::metadata(&host) else {
        return Ok(());
    };
    if !meta.file_type().is_char_device() {
        return Ok(());
    }
    let rdev = meta.rdev();
    let live = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if live == (u64::from(major), u64::from(minor)) {
        return Ok(());
    }
    Err(stale(
        path,
        format!(
            "the spec has {major}:{minor}, the host's {} is {}:{}",
            host.display(),
            live.0,
            live.1
        ),
    ))
}

fn read_mig_minors(roots: &Roots) -> Result<std::collections::BTreeMap<String, u32>, GpuError> {
    let path = roots.proc.join("proc/driver/nvidia-caps/mig-minors");
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(procfs::parse_mig_minors(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(GpuError::io("reading", &path, e)),
    }
}

/// The `mig-minors` name of capability minor `minor`, with its `access` file under
/// `/proc/driver/nvidia/capabilities` still naming that minor.
fn cap_name(
    path: &Path,
    minor: u32,
    table: &std::collections::BTreeMap<String, u32>,
    roots: &Roots,
) -> Result<String, GpuError> {
    let Some((name, _)) = table.iter().find(|(_, m)| **m == minor) else {
        return Err(stale(
            path,
            format!(
                "capability minor {minor} is not in the driver's nvidia-caps/mig-minors: the \
                 MIG layout changed"
            ),
        ));
    };
    let access = roots
        .proc
        .join("proc/driver/nvidia/capabilities")
        .join(access_rel(name));
    let live = std::fs::read_to_string(&access)
        .ok()
        .and_then(|t| procfs::parse_access_minor(&t));
    if live == Some(minor) {
        return Ok(name.clone());
    }
    Err(stale(
        path,
        format!(
            "capability minor {minor} ({name}): {} {}; the MIG device is gone",
            access.display(),
            live.map_or_else(|| "is missing".to_string(), |m| format!("names minor {m}"))
        ),
    ))
}

/// `gpu1/gi1/ci0/access` → `gpu1/mig/gi1/ci0/access`; `config` → `mig/config`.
fn access_rel(name: &str) -> PathBuf {
    match name.split_once('/') {
        Some((gpu, rest)) if gpu.starts_with("gpu") => Path::new(gpu).join("mig").join(rest),
        _ => Path::new("mig").join(name),
    }
}

/// `(gpu minor, gi, ci)` of a compute instance's `access` name.
fn mig_instance(name: &str) -> Option<(u32, u32, u32)> {
    let mut it = name.split('/');
    let gpu = it.next()?.strip_prefix("gpu")?.parse().ok()?;
    let gi = it.next()?.strip_prefix("gi")?.parse().ok()?;
    let ci = it.next()?.strip_prefix("ci")?.parse().ok()?;
    (it.next()? == "access").then_some((gpu, gi, ci))
}

/// The engine's grant in the inventory's terms.
#[derive(Debug, Default)]
pub struct Mapped<'i> {
    pub gpus: Vec<&'i Gpu>,
    pub mig: Vec<&'i MigDevice>,
    /// Every applied node, with the host's mode and owner where the inventory knows it.
    pub nodes: Vec<DeviceNode>,
    pub imex: Vec<u32>,
}

/// Maps applied nodes to the inventory: a GPU node to its GPU, a compute instance's
/// capability node to its MIG device (and its parent GPU).
pub fn map<'i>(nodes: &[Node], inv: &'i Inventory) -> Result<Mapped<'i>, GpuError> {
    let mut out = Mapped::default();
    for n in nodes {
        out.nodes.push(host_node(&n.device, inv));
        match &n.kind {
            Kind::Control => {}
            Kind::Gpu(minor) => {
                let g = inv.gpu_by_minor(*minor).ok_or_else(|| {
                    stale(
                        n.device.path(),
                        format!("no GPU of this host has minor {minor}"),
                    )
                })?;
                push_gpu(&mut out.gpus, g);
            }
            Kind::Cap(name) => {
                let Some((gpu, gi, ci)) = mig_instance(name) else {
                    continue;
                };
                let found = inv
                    .mig_devices
                    .iter()
                    .find(|m| (m.parent_minor, m.gi, m.ci) == (gpu, gi, ci));
                if let Some(m) = found {
                    if let Some(p) = inv.gpu_by_minor(m.parent_minor) {
                        push_gpu(&mut out.gpus, p);
                    }
                    out.mig.push(m);
                }
            }
            Kind::Imex(ch) => out.imex.push(*ch),
        }
    }
    Ok(out)
}

fn push_gpu<'i>(gpus: &mut Vec<&'i Gpu>, g: &'i Gpu) {
    if !gpus.iter().any(|x| x.minor == g.minor) {
        gpus.push(g);
    }
}

/// The inventory's record of the same device (its host mode and group decide
/// `additionalGids`), else the spec's own entry.
fn host_node(d: &LinuxDevice, inv: &Inventory) -> DeviceNode {
    let (major, minor) = (d.major() as u32, d.minor() as u32);
    if let Some(n) = inv
        .all_nodes()
        .find(|n| (n.major, n.minor) == (major, minor))
    {
        return DeviceNode {
            path: d.path().clone(),
            ..n.clone()
        };
    }
    DeviceNode {
        path: d.path().clone(),
        major,
        minor,
        mode: d.file_mode().unwrap_or(0o666) & 0o777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

/// A privileged container whose `linux.devices` is the host's whole `/dev` (Podman's and
/// Docker's `--privileged`): it holds every GPU node of the host and a host node that is
/// neither NVIDIA's nor one every container gets. Those nodes alone grant nothing.
pub fn is_host_dump(spec: &Spec, nodes: &[Node], inv: &Inventory, privileged: bool) -> bool {
    if !privileged || inv.gpus.is_empty() {
        return false;
    }
    let every_gpu = inv
        .gpus
        .iter()
        .all(|g| nodes.iter().any(|n| n.kind == Kind::Gpu(g.minor)));
    let other_host_node = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .filter(|d| !nodes.iter().any(|n| n.device.path() == d.path()))
        .any(|d| !is_default_node(d.major(), d.minor()));
    every_gpu && other_host_node
}

/// Every driver file an applied spec bind-mounts from the driver root must exist: after a
/// driver upgrade the spec still names the old version's libraries.
pub fn check_files(spec: &Spec, roots: &Roots) -> Result<(), GpuError> {
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    check_mounts(mounts, roots, ORIGIN)
}

/// [`check_files`] for `mounts` that `origin` (an applied spec, a CDI spec file) made.
pub fn check_mounts(mounts: &[Mount], roots: &Roots, origin: &str) -> Result<(), GpuError> {
    for m in mounts {
        let Some(src) = driver_file_source(m, &roots.driver) else {
            continue;
        };
        if let Err(e) = std::fs::symlink_metadata(src) {
            return Err(GpuError::StaleFile {
                origin: origin.into(),
                path: src.to_path_buf(),
                message: format!("{} (mounted at {})", e, m.destination().display()),
                fix: super::STALE_FIX,
            });
        }
    }
    Ok(())
}

/// The source of a bind mount from under the driver root whose name is a driver file's:
/// a library of the capability table, a driver binary, or a name with `nvidia` in it.
fn driver_file_source<'m>(m: &'m Mount, driver_root: &Path) -> Option<&'m Path> {
    let src = m.source().as_deref()?;
    let bind = m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
    if !bind || !src.is_absolute() || !src.starts_with(driver_root) {
        return None;
    }
    let name = src.file_name()?.to_str()?;
    let driver_file = LIBRARIES.iter().any(|(p, _)| name.starts_with(p))
        || BINARIES.iter().any(|(b, _)| name == *b)
        || name.contains("nvidia");
    driver_file.then_some(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_their_access_files_and_instances() {
        assert_eq!(
            access_rel("gpu1/gi1/ci0/access"),
            Path::new("gpu1/mig/gi1/ci0/access")
        );
        assert_eq!(access_rel("config"), Path::new("mig/config"));
        assert_eq!(mig_instance("gpu1/gi1/ci0/access"), Some((1, 1, 0)));
        assert_eq!(mig_instance("gpu1/gi1/access"), None);
        assert_eq!(mig_instance("config"), None);
    }

    fn spec_with_node(path: &str, major: i64, minor: i64) -> Spec {
        let mut s = crate::gpu::fake::spec(&[], false, &[]);
        let mut d = LinuxDevice::default();
        d.set_path(PathBuf::from(path));
        d.set_typ(LinuxDeviceType::C);
        d.set_major(major);
        d.set_minor(minor);
        if let Some(l) = s.linux_mut().as_mut() {
            l.set_devices(Some(vec![d]));
        }
        s
    }

    #[test]
    fn nodes_are_recognised_by_major_or_nvidia_path_only_where_a_driver_is_loaded() {
        let t = tempfile::tempdir().expect("tempdir");
        let roots = Roots::at(t.path());
        let s = spec_with_node("/dev/nvidia0", 195, 0);
        assert!(lists_char_devices(&s));
        assert_eq!(scan(&s, &roots).expect("no driver: nothing"), []);
        std::fs::create_dir(t.path().join("proc")).expect("mkdir proc");
        std::fs::write(
            t.path().join("proc/devices"),
            "Character devices:\n195 nvidia\n241 nvidia-nvswitch\n242 nvidia-fs\n",
        )
        .expect("write devices");
        let nodes = scan(&s, &roots).expect("GPU node");
        // Other NVIDIA modules' nodes (NVSwitch, GPUDirect Storage) are live, not stale,
        // and not gpurun's to grant.
        for (path, major) in [("/dev/nvidia-nvswitch0", 241), ("/dev/nvidia-fs0", 242)] {
            assert_eq!(
                scan(&spec_with_node(path, major, 0), &roots).expect("a live NVIDIA major"),
                [],
                "{path}"
            );
        }
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].kind, Kind::Gpu(0));
        assert_eq!(
            scan(&spec_with_node("/dev/fuse", 10, 229), &roots).expect("not NVIDIA"),
            []
        );
        let e = scan(&spec_with_node("/dev/nvidia-uvm", 240, 0), &roots)
            .expect_err("an NVIDIA path on a major the driver does not have");
        assert_eq!(e.code(), crate::gpu::reason::STALE_NODE);
        assert!(e.to_string().contains("major 240"), "{e}");
    }

    #[test]
    fn majors_come_from_either_name_of_the_gpu_major() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("proc")).expect("mkdir proc");
        std::fs::write(
            t.path().join("proc/devices"),
            "Character devices:\n195 nvidia-frontend\n236 nvidia-caps\n238 nvidia-caps-imex-channels\n",
        )
        .expect("write devices");
        let m = Majors::read(t.path()).expect("read majors");
        assert_eq!(
            m,
            Majors {
                gpu: Some(195),
                uvm: None,
                caps: Some(236),
                imex: Some(238),
                others: Vec::new(),
            }
        );
        assert_eq!(
            Majors::read(&t.path().join("none")).expect("no file"),
            Majors::default()
        );
    }
}
