//! Host discovery: GPUs and nodes from procfs, driver files from the driver root (research
//! §1), then NVML enrichment through the driver root's nvidia-smi ([`super::nvml`]). Every
//! read goes through one of the three roots.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::inventory::{DeviceNode, Gpu, Inventory, MigDevice};
use super::procfs;
use super::{driverfiles, nvml, GpuError, Roots};

/// Minors of the nodes on the `nvidia` major (research §1.1).
const CTL_MINOR: u32 = 255;
const MODESET_MINOR: u32 = 254;

/// Discovers the host's GPUs and driver files through `roots`, and enriches them through
/// the driver root's nvidia-smi (each run bounded by [`nvml::TIMEOUT`]). A missing,
/// failing or hung nvidia-smi is not an error: its facts stay unknown and
/// `inventory.enrichment` says why.
pub fn discover(roots: &Roots) -> Result<Inventory, GpuError> {
    discover_with(roots, nvml::TIMEOUT)
}

/// [`discover`] with another bound on each nvidia-smi run.
pub fn discover_with(roots: &Roots, timeout: Duration) -> Result<Inventory, GpuError> {
    let mut inv = scan(roots)?;
    nvml::enrich(&mut inv, timeout);
    Ok(inv)
}

/// Procfs and the driver root only: no process is run.
pub(super) fn scan(roots: &Roots) -> Result<Inventory, GpuError> {
    let proc = roots.proc.join("proc");
    let majors = read_majors(&proc)?;
    let gpus_found = read_gpus(&proc)?;
    let proc_version =
        read_optional(&proc.join("driver/nvidia/version"))?.and_then(|t| procfs::parse_version(&t));
    let (driver_version, libraries) =
        driverfiles::libraries(&roots.driver, proc_version.as_deref())?;

    let Some(nvidia_major) = majors.gpu else {
        return Err(GpuError::NoDriver(format!(
            "no nvidia or nvidia-frontend character device in {}",
            proc.join("devices").display()
        )));
    };

    let node = |name: &str, major: u32, minor: u32| node(roots, name, major, minor);
    let mut gpus = Vec::new();
    for (index, (info, dir)) in gpus_found.into_iter().enumerate() {
        gpus.push(Gpu {
            index: index as u32,
            minor: info.minor,
            uuid: info.uuid,
            model: info.model,
            bus: info.bus,
            proc_dir: dir,
            node: node(&format!("nvidia{}", info.minor), nvidia_major, info.minor)?,
            compute_capability: None,
            brand: None,
        });
    }
    let nvidiactl = node("nvidiactl", nvidia_major, CTL_MINOR)?;
    let modeset = if host_node_exists(roots, "nvidia-modeset") {
        Some(node("nvidia-modeset", nvidia_major, MODESET_MINOR)?)
    } else {
        None
    };
    let (uvm, uvm_tools) = match majors.uvm {
        Some(m) => (
            Some(node("nvidia-uvm", m, 0)?),
            Some(node("nvidia-uvm-tools", m, 1)?),
        ),
        None => (None, None),
    };
    let mig_devices = match majors.caps {
        Some(m) => read_mig(roots, &proc, &gpus, m)?,
        None => Vec::new(),
    };

    Ok(Inventory {
        roots: roots.clone(),
        binaries: driverfiles::binaries(&roots.driver)?,
        firmware: driverfiles::firmware(&roots.driver, &driver_version)?,
        ipc: driverfiles::ipc_sockets(&roots.driver)?,
        driver_version,
        cuda_version: None,
        gpus,
        mig_devices,
        nvidiactl,
        uvm,
        uvm_tools,
        modeset,
        libraries,
        enrichment: Default::default(),
    })
}

fn read_optional(path: &Path) -> Result<Option<String>, GpuError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GpuError::io("reading", path, e)),
    }
}

fn read_majors(proc: &Path) -> Result<procfs::Majors, GpuError> {
    let path = proc.join("devices");
    let text = std::fs::read_to_string(&path).map_err(|e| GpuError::io("reading", &path, e))?;
    Ok(procfs::Majors::from_devices(&text))
}

/// Reads a quick key of the host's GPU set: the driver version line and each GPU's
/// information file. Used to decide whether a cached inventory still applies.
pub(crate) fn read_gpus(proc: &Path) -> Result<Vec<(procfs::Information, PathBuf)>, GpuError> {
    let dir = proc.join("driver/nvidia/gpus");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GpuError::io("listing", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| GpuError::io("listing", &dir, e))?;
        let path = entry.path().join("information");
        let text = std::fs::read_to_string(&path).map_err(|e| GpuError::io("reading", &path, e))?;
        let info = procfs::parse_information(&text).map_err(|message| GpuError::Parse {
            path: path.clone(),
            message,
        })?;
        if !info.excluded {
            out.push((info, entry.path()));
        }
    }
    // nvidia-smi and NVML number GPUs in PCI bus order.
    out.sort_by_key(|(i, _)| i.bus);
    Ok(out)
}

fn host_node_exists(roots: &Roots, name: &str) -> bool {
    std::fs::symlink_metadata(roots.dev.join("dev").join(name)).is_ok()
}

/// A node at `/dev/<name>`: the host node, when present, must be the expected character
/// device (a regular file stands in for it in unprivileged test trees).
pub(super) fn node(
    roots: &Roots,
    name: &str,
    major: u32,
    minor: u32,
) -> Result<DeviceNode, GpuError> {
    let path = PathBuf::from("/dev").join(name);
    let host = roots.dev.join("dev").join(name);
    let mut n = DeviceNode {
        path,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    };
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(n),
        Err(e) => return Err(GpuError::io("inspecting", &host, e)),
    };
    if meta.file_type().is_char_device() {
        let rdev = meta.rdev();
        let (ma, mi) = (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        );
        if (ma, mi) != (major, minor) {
            return Err(GpuError::HostNode {
                path: host,
                message: format!("is c {ma}:{mi}, expected c {major}:{minor}"),
            });
        }
    } else if !meta.file_type().is_file() {
        return Err(GpuError::HostNode {
            path: host,
            message: "is neither a character device nor a test placeholder file".into(),
        });
    }
    n.mode = meta.mode() & 0o7777;
    n.uid = meta.uid();
    n.gid = meta.gid();
    Ok(n)
}

/// MIG devices that exist: `capabilities/gpu<minor>/mig/gi<G>/ci<C>/access` files.
fn read_mig(
    roots: &Roots,
    proc: &Path,
    gpus: &[Gpu],
    caps_major: u32,
) -> Result<Vec<MigDevice>, GpuError> {
    let mut out = Vec::new();
    for g in gpus {
        let mig = proc.join(format!("driver/nvidia/capabilities/gpu{}/mig", g.minor));
        for gi in numbered_dirs(&mig, "gi")? {
            let gi_dir = mig.join(format!("gi{gi}"));
            let gi_access = gi_dir.join("access");
            let Some(gi_minor) = access_minor(&gi_access)? else {
                continue;
            };
            for ci in numbered_dirs(&gi_dir, "ci")? {
                let ci_access = gi_dir.join(format!("ci{ci}/access"));
                let Some(ci_minor) = access_minor(&ci_access)? else {
                    continue;
                };
                out.push(MigDevice {
                    parent_minor: g.minor,
                    gi,
                    ci,
                    gi_node: node(
                        roots,
                        &format!("nvidia-caps/nvidia-cap{gi_minor}"),
                        caps_major,
                        gi_minor,
                    )?,
                    ci_node: node(
                        roots,
                        &format!("nvidia-caps/nvidia-cap{ci_minor}"),
                        caps_major,
                        ci_minor,
                    )?,
                    gi_access: gi_access.clone(),
                    ci_access,
                    uuid: None,
                    index: None,
                });
            }
        }
    }
    Ok(out)
}

pub(crate) fn numbered_dirs(dir: &Path, prefix: &str) -> Result<Vec<u32>, GpuError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GpuError::io("listing", dir, e)),
    };
    let mut out: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn access_minor(path: &Path) -> Result<Option<u32>, GpuError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    procfs::parse_access_minor(&text)
        .map(Some)
        .ok_or_else(|| GpuError::Parse {
            path: path.to_path_buf(),
            message: "no DeviceFileMinor line".into(),
        })
}
