//! A grant turned into plain OCI spec edits: `linux.devices`, `linux.resources.devices`,
//! bind mounts and env. Nothing here touches the rootfs except a read-only probe of which
//! library directory the image's loader searches.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::applied::Mapped;
use super::capabilities::{Capabilities, Capability};
use super::cdi;
use super::inventory::{node_groups, DeviceNode, Gpu, Inventory, MigDevice, DEV_LINKED};
use super::paths::{container_dest, normalize, rootfs_has_dir};
use super::procfs;
use super::request::{self, Grant, Request, RequestSource, Selection};
use super::require::{self, Facts};
use super::{GpuError, Injection};
use crate::gpu::config::{Config, Sharing};

pub use super::editor::{Editor, FILE_OPTIONS, IPC_OPTIONS, PROC_OPTIONS};

const PROC_DRIVER: &str = "/proc/driver";
const PROC_DRIVER_NVIDIA: &str = "/proc/driver/nvidia";

/// Where the image's loader looks for libraries (see runtime-spec/gpu.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryDirs {
    pub lib64: &'static str,
    pub lib32: &'static str,
}

/// Debian-like (`/usr/lib/<triplet>` is a directory inside the rootfs) → the multiarch
/// directories; an image with `/usr/lib64` → RHEL-like; a musl image without `/usr/lib64`
/// → `/usr/lib`. The probe resolves symlinks only inside the rootfs.
pub fn library_dirs(rootfs: &Path) -> LibraryDirs {
    let (triplet, triplet32, musl) = if cfg!(target_arch = "aarch64") {
        (
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib/arm-linux-gnueabihf",
            "/lib/ld-musl-aarch64.so.1",
        )
    } else {
        (
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/i386-linux-gnu",
            "/lib/ld-musl-x86_64.so.1",
        )
    };
    if rootfs_has_dir(rootfs, triplet) {
        return LibraryDirs {
            lib64: triplet,
            lib32: triplet32,
        };
    }
    let musl_only = !rootfs_has_dir(rootfs, "/usr/lib64")
        && std::fs::symlink_metadata(rootfs.join(&musl[1..])).is_ok();
    LibraryDirs {
        lib64: if musl_only { "/usr/lib" } else { "/usr/lib64" },
        lib32: "/usr/lib",
    }
}

fn linux_device(n: &DeviceNode) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(n.path.clone());
    d.set_typ(LinuxDeviceType::C);
    d.set_major(i64::from(n.major));
    d.set_minor(i64::from(n.minor));
    d.set_file_mode(Some(n.mode & 0o777));
    d.set_uid(Some(n.uid));
    d.set_gid(Some(n.gid));
    d
}

/// Device nodes for the selected GPUs and MIG devices, plus the control nodes the
/// capabilities need (uvm with compute, modeset with display).
pub fn device_nodes(inv: &Inventory, sel: &Selection<'_>, caps: Capabilities) -> Vec<DeviceNode> {
    if sel.gpus.is_empty() && sel.mig.is_empty() {
        return Vec::new();
    }
    let mut out = vec![inv.nvidiactl.clone()];
    if caps.contains(Capability::Compute) || caps.contains(Capability::Video) {
        out.extend(inv.uvm.iter().chain(inv.uvm_tools.iter()).cloned());
    }
    if caps.contains(Capability::Display) {
        out.extend(inv.modeset.iter().cloned());
    }
    out.extend(sel.gpus.iter().map(|g| g.node.clone()));
    for m in &sel.mig {
        out.push(m.gi_node.clone());
        out.push(m.ci_node.clone());
    }
    out
}

/// Libraries, binaries, firmware and IPC sockets for `caps`.
pub fn driver_file_mounts(
    ed: &mut Editor<'_>,
    inv: &Inventory,
    caps: Capabilities,
    dirs: &LibraryDirs,
) -> Result<(), GpuError> {
    for lib in inv.libraries_for(caps) {
        let dir = if lib.lib32 { dirs.lib32 } else { dirs.lib64 };
        let sub = |n: &str| match &lib.subdir {
            Some(s) => format!("{s}/{n}"),
            None => n.to_string(),
        };
        // The real name, the SONAME the loader asks for, and the `.so` name some build
        // systems and dlopen callers use: all bind mounts of the same file, so the edits
        // stay plain spec content (no symlinks to create inside the rootfs).
        let mut names = vec![sub(&lib.name)];
        if let Some(s) = &lib.soname {
            names.push(sub(s));
        }
        if DEV_LINKED.contains(&lib.prefix.as_str()) {
            names.push(sub(&lib.prefix));
        }
        names.dedup();
        for n in names {
            ed.bind(&lib.host_path, &container_dest(dir, &n)?, FILE_OPTIONS);
        }
    }
    for b in inv.binaries_for(caps) {
        ed.bind(
            &b.host_path,
            &container_dest("/usr/bin", &b.name)?,
            FILE_OPTIONS,
        );
    }
    for f in &inv.firmware {
        ed.bind(&f.host_path, &checked(&f.path)?, FILE_OPTIONS);
    }
    for s in inv.ipc_for(caps) {
        ed.bind(&s.host_path, &checked(&s.path)?, IPC_OPTIONS);
    }
    Ok(())
}

fn checked(p: &Path) -> Result<PathBuf, GpuError> {
    if super::paths::is_clean_absolute(p) {
        Ok(p.to_path_buf())
    } else {
        Err(GpuError::UnsafePath {
            path: p.to_path_buf(),
            message: "a container destination must be absolute with no `.` or `..`".into(),
        })
    }
}

/// The container's `/proc/driver/nvidia`, generated into the content-addressed store
/// `gen_dir` (see `procdir`) and mounted: `params` with `ModifyDeviceFiles: 0`, `version`
/// and `registry` copies, and only the granted GPUs' `gpus/<bus>` directories (bind mounts
/// of the host's) and MIG `access` files.
pub fn proc_driver_mounts(
    ed: &mut Editor<'_>,
    inv: &Inventory,
    gpus: &[&Gpu],
    mig: &[&MigDevice],
    gen_dir: &Path,
) -> Result<(), GpuError> {
    let host = inv.roots.proc.join("proc/driver/nvidia");
    let params = std::fs::read_to_string(host.join("params")).unwrap_or_default();
    let mut content = super::procdir::Content::default();
    content.files.push((
        "params".into(),
        procfs::params_without_device_modification(&params).into_bytes(),
    ));
    for name in ["version", "registry"] {
        if let Ok(text) = std::fs::read(host.join(name)) {
            content.files.push((name.into(), text));
        }
    }
    let mut binds = Vec::new();
    for g in gpus {
        let rel = format!("gpus/{}", g.bus);
        content.dirs.push(rel.clone());
        binds.push((g.proc_dir.clone(), rel));
    }
    for m in mig {
        let gi = format!("capabilities/gpu{}/mig/gi{}", m.parent_minor, m.gi);
        let ci = format!("{gi}/ci{}", m.ci);
        for (rel, src) in [
            (format!("{gi}/access"), &m.gi_access),
            (format!("{ci}/access"), &m.ci_access),
        ] {
            content.files.push((rel.clone(), Vec::new()));
            binds.push((src.clone(), rel));
        }
    }
    let dir = super::procdir::materialize(gen_dir, &content)?;
    ed.bind(&dir, Path::new(PROC_DRIVER_NVIDIA), PROC_OPTIONS);
    for (src, rel) in binds {
        ed.bind(
            &src,
            &container_dest(PROC_DRIVER_NVIDIA, &rel)?,
            PROC_OPTIONS,
        );
    }
    Ok(())
}

/// When the kernel has no NVIDIA module loaded (a fake driver tree), the container's
/// procfs has no `driver/nvidia`, and procfs refuses to create one, so the mounts at
/// `/proc/driver/nvidia` would have no mount point. This covers `/proc/driver` first with a
/// read-only bind of `shim_dir`, a host directory holding an empty `nvidia`, placed just
/// before the first mount under `/proc/driver/nvidia`. The caller decides when: the fact is
/// the running kernel's, not the driver roots'. Nothing changes when the spec has no mount
/// there, or already mounts `/proc/driver`.
/// [`cover_proc_driver`] where the kernel has no NVIDIA module (a fake driver tree): the
/// container's procfs then has no `driver/nvidia` for the generated files to land on.
pub fn cover_proc_driver_without_module(spec: &mut Spec, shim_dir: &Path) -> Result<(), GpuError> {
    if Path::new(PROC_DRIVER_NVIDIA).is_dir() {
        return Ok(());
    }
    cover_proc_driver(spec, shim_dir)
}

pub fn cover_proc_driver(spec: &mut Spec, shim_dir: &Path) -> Result<(), GpuError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let under = |m: &Mount, p: &str| normalize(m.destination()).starts_with(p);
    let Some(at) = mounts.iter().position(|m| under(m, PROC_DRIVER_NVIDIA)) else {
        return Ok(());
    };
    if mounts
        .iter()
        .any(|m| normalize(m.destination()) == Path::new(PROC_DRIVER))
    {
        return Ok(());
    }
    let nvidia = shim_dir.join("nvidia");
    std::fs::create_dir_all(&nvidia).map_err(|e| GpuError::io("creating", &nvidia, e))?;
    // A file mounted below `/proc/driver/nvidia` with nothing mounted at it (NVIDIA's
    // params alone) lands in the cover: it needs its mount point there.
    for m in mounts.iter().filter(|m| under(m, PROC_DRIVER_NVIDIA)) {
        let dest = normalize(m.destination());
        let (Ok(rel), Some(src)) = (dest.strip_prefix(PROC_DRIVER), m.source().as_ref()) else {
            continue;
        };
        if rel.as_os_str().is_empty() || !src.is_file() {
            continue;
        }
        let point = shim_dir.join(rel);
        point
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&point)
                    .map(drop)
            })
            .map_err(|e| GpuError::io("creating", &point, e))?;
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(PROC_DRIVER));
    m.set_source(Some(shim_dir.to_path_buf()));
    m.set_typ(Some("bind".into()));
    m.set_options(Some(PROC_OPTIONS.iter().map(|s| s.to_string()).collect()));
    mounts.insert(at, m);
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn facts(inv: &Inventory, gpus: &[&Gpu]) -> Facts {
    Facts {
        driver: Some(inv.driver_version.clone()),
        cuda: inv.cuda_version.clone(),
        devices: gpus
            .iter()
            .map(|g| (g.compute_capability.clone(), g.brand.clone()))
            .collect(),
    }
}

/// A grant applied to a copy of the spec: the caller takes `spec` or drops it whole.
#[derive(Debug)]
pub struct Edited {
    pub spec: Spec,
    pub injection: Injection,
}

/// A request refused by policy: the variable is neutralised so nothing downstream (a
/// nested or hook-based NVIDIA runtime) acts on it. The one place that does this.
pub fn refuse(spec: &mut Spec, warning: String, sharing: Sharing) -> Injection {
    Editor::new(spec).set_env("NVIDIA_VISIBLE_DEVICES", "void");
    Injection {
        grant: Grant {
            source: RequestSource::EnvIgnored,
            gpus: Vec::new(),
            mig_devices: Vec::new(),
            cdi_devices: Vec::new(),
            capabilities: Capabilities::NONE,
            sharing,
        },
        warnings: vec![warning],
        log: Vec::new(),
        undecided: false,
    }
}

/// Where a container's edits come from and go: its rootfs (only probed) and the host-wide
/// store of generated `/proc/driver/nvidia` directories.
pub struct Target<'a> {
    pub rootfs: &'a Path,
    pub container_id: &'a str,
    pub gen_dir: &'a Path,
}

/// Applies an honoured request to a copy of `spec`: CDI devices, the REQUIRE check, then
/// the native nodes, driver files and procfs view. `spec` itself is not changed, so a
/// caller may try again with a fresher inventory.
pub fn inject(
    spec: &Spec,
    req: &Request,
    t: &Target<'_>,
    cfg: &Config,
    inv: &Inventory,
) -> Result<Edited, GpuError> {
    let sel = request::resolve(&req.devices, inv)?;
    let mut work = spec.clone();
    let mut ed = Editor::new(&mut work);
    let cdi = apply_cdi(&mut ed, &sel, cfg, inv)?;
    let mut gpus: Vec<&Gpu> = sel.gpus.clone();
    for g in cdi.gpus {
        if !gpus.iter().any(|x| x.minor == g.minor) {
            gpus.push(g);
        }
    }
    let warnings = require::check(&req.requirements, &facts(inv, &gpus))?;
    let native = !sel.gpus.is_empty() || !sel.mig.is_empty() || req.devices.is_empty();
    let imex = super::imex::nodes(&req.devices, &inv.roots)?;
    for n in &imex {
        ed.device(linux_device(n), "rwm");
    }
    ed.add_gids(&node_groups(&imex));
    if native {
        let nodes = device_nodes(inv, &sel, req.capabilities);
        for n in &nodes {
            ed.device(linux_device(n), "rwm");
        }
        ed.add_gids(&node_groups(&nodes));
        driver_file_mounts(&mut ed, inv, req.capabilities, &library_dirs(t.rootfs))?;
    }
    if native || cdi.wants_params {
        proc_driver_mounts(&mut ed, inv, &gpus, &sel.mig, t.gen_dir)?;
    }
    if req.source == RequestSource::DevicePluginMounts {
        expand_device_list_marker(&mut ed, &gpus);
    }
    let mut log = std::mem::take(&mut ed.log);
    log.push(format!(
        "container {}: {} GPU(s), capabilities {}",
        t.container_id,
        gpus.len(),
        req.capabilities
    ));
    let injection = Injection {
        grant: grant(req, &gpus, &sel),
        undecided: !warnings.is_empty(),
        warnings,
        log,
    };
    Ok(Edited {
        spec: work,
        injection,
    })
}

/// What CDI devices added: the GPUs their nodes name, and whether they ask for the
/// driver's params file.
struct CdiOutcome<'i> {
    gpus: Vec<&'i Gpu>,
    wants_params: bool,
}

/// CDI devices first: their edits identify GPUs by `/dev/nvidia<minor>`.
fn apply_cdi<'i>(
    ed: &mut Editor<'_>,
    sel: &Selection<'_>,
    cfg: &Config,
    inv: &'i Inventory,
) -> Result<CdiOutcome<'i>, GpuError> {
    let mut out = CdiOutcome {
        gpus: Vec::new(),
        wants_params: false,
    };
    if sel.cdi.is_empty() {
        return Ok(out);
    }
    let registry = cdi::Registry::load(&cfg.nvidia.cdi_spec_dirs);
    let before = ed.spec().mounts().as_ref().map_or(0, Vec::len);
    let applied = cdi::apply(ed, &registry, &sel.cdi)?;
    let added = ed.spec().mounts().as_deref().unwrap_or_default();
    let origin = cdi_origin(&registry, &sel.cdi);
    super::applied::check_mounts(added.get(before..).unwrap_or_default(), &inv.roots, &origin)?;
    for minor in applied.gpu_minors {
        if let Some(g) = inv.gpu_by_minor(minor) {
            if !out.gpus.iter().any(|x| x.minor == g.minor) {
                out.gpus.push(g);
            }
        }
    }
    out.wants_params = applied.disable_device_node_modification;
    Ok(out)
}

/// How a stale-spec refusal names CDI devices: each with the spec file it comes from.
fn cdi_origin(registry: &cdi::Registry, names: &[String]) -> String {
    let parts: Vec<String> = names
        .iter()
        .map(|n| match registry.lookup(n) {
            Ok((s, _)) => format!("{n} (CDI spec {})", registry.specs[s].0.display()),
            Err(_) => n.clone(),
        })
        .collect();
    parts.join(", ")
}

/// The device plugin's "look at the mounts" marker becomes the list it stands for, so
/// tools in the container that read the variable see what was granted.
fn expand_device_list_marker(ed: &mut Editor<'_>, gpus: &[&Gpu]) {
    let env = request::env_map(ed.spec());
    let marked = env
        .get("NVIDIA_VISIBLE_DEVICES")
        .is_some_and(|v| normalize(Path::new(v.trim())) == Path::new(request::DEVICE_LIST_DIR));
    if !marked {
        return;
    }
    let list: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    let value = if list.is_empty() {
        "void".to_string()
    } else {
        list.join(",")
    };
    ed.set_env("NVIDIA_VISIBLE_DEVICES", &value);
}

/// The engine's nodes stay as it applied them; each gets its allow rule in
/// `linux.resources.devices` (a `linux.devices` entry alone only makes the node) and, when
/// the host node is not world read-write, its group in `additionalGids`.
pub fn keep_applied_nodes(spec: &mut Spec, m: &Mapped<'_>) {
    let mut ed = Editor::new(spec);
    for n in &m.nodes {
        ed.device(linux_device(n), "rwm");
    }
    ed.add_gids(&node_groups(&m.nodes));
}

/// The engine's grant acted on: its nodes and files are already in the spec and are not
/// added again; what it gets from gpurun is the `/proc/driver/nvidia` view of its GPUs.
pub fn applied_view(
    spec: &Spec,
    m: &Mapped<'_>,
    t: &Target<'_>,
    inv: &Inventory,
    sharing: Sharing,
) -> Result<Edited, GpuError> {
    let mut work = spec.clone();
    let mut ed = Editor::new(&mut work);
    proc_driver_mounts(&mut ed, inv, &m.gpus, &m.mig, t.gen_dir)?;
    let mut log = std::mem::take(&mut ed.log);
    log.push(format!(
        "container {}: {} GPU(s) applied by the engine",
        t.container_id,
        m.gpus.len()
    ));
    let injection = Injection {
        grant: Grant {
            source: RequestSource::Applied,
            gpus: m.gpus.iter().map(|g| g.uuid.clone()).collect(),
            mig_devices: m
                .mig
                .iter()
                .map(|d| format!("gpu{}/gi{}/ci{}", d.parent_minor, d.gi, d.ci))
                .collect(),
            cdi_devices: Vec::new(),
            capabilities: Capabilities::NONE,
            sharing,
        },
        warnings: Vec::new(),
        log,
        undecided: false,
    };
    Ok(Edited {
        spec: work,
        injection,
    })
}

/// `NVIDIA_VISIBLE_DEVICES` naming what was granted (as Docker's `--gpus` does), so tools
/// in the container that read it see the grant, not the image's `all`.
pub fn set_visible_devices(spec: &mut Spec, gpus: &[String]) {
    let value = if gpus.is_empty() {
        "void".to_string()
    } else {
        gpus.join(",")
    };
    Editor::new(spec).set_env("NVIDIA_VISIBLE_DEVICES", &value);
}

fn grant(req: &Request, gpus: &[&Gpu], sel: &Selection<'_>) -> Grant {
    Grant {
        source: req.source,
        gpus: gpus.iter().map(|g| g.uuid.clone()).collect(),
        mig_devices: sel
            .mig
            .iter()
            .map(|m| format!("gpu{}/gi{}/ci{}", m.parent_minor, m.gi, m.ci))
            .collect(),
        cdi_devices: sel.cdi.clone(),
        capabilities: req.capabilities,
        sharing: req.sharing,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn destinations(s: &Spec) -> Vec<String> {
        s.mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    #[test]
    fn cover_proc_driver_goes_just_before_the_first_nvidia_procfs_mount_once() {
        let t = tempfile::tempdir().unwrap();
        let shim = t.path().join("shim");
        let mut s = crate::gpu::fake::spec(&[], true, &[]);
        cover_proc_driver(&mut s, &shim).unwrap();
        assert_eq!(destinations(&s), ["/proc"], "nothing to cover");
        assert!(!shim.exists());

        let mut ed = Editor::new(&mut s);
        ed.bind(
            Path::new("/x/lib"),
            Path::new("/usr/lib/libcuda.so.1"),
            FILE_OPTIONS,
        );
        ed.bind(
            Path::new("/x/gen"),
            Path::new(PROC_DRIVER_NVIDIA),
            PROC_OPTIONS,
        );
        ed.bind(
            Path::new("/x/bus"),
            Path::new("/proc/driver/nvidia/gpus/0000:3b:00.0"),
            PROC_OPTIONS,
        );
        cover_proc_driver(&mut s, &shim).unwrap();
        let want = [
            "/proc",
            "/usr/lib/libcuda.so.1",
            "/proc/driver",
            "/proc/driver/nvidia",
            "/proc/driver/nvidia/gpus/0000:3b:00.0",
        ];
        assert_eq!(destinations(&s), want);
        let m = &s.mounts().as_ref().unwrap()[2];
        assert_eq!(m.source().as_deref(), Some(shim.as_path()));
        assert_eq!(m.options().clone().unwrap(), PROC_OPTIONS);
        assert!(
            shim.join("nvidia").is_dir(),
            "the mount point of the nvidia mount"
        );
        cover_proc_driver(&mut s, &shim).unwrap();
        assert_eq!(destinations(&s), want, "covering twice changes nothing");
    }

    #[test]
    fn a_file_mounted_alone_below_proc_driver_nvidia_gets_its_mount_point_in_the_cover() {
        let t = tempfile::tempdir().unwrap();
        let shim = t.path().join("shim");
        let params = t.path().join("params");
        std::fs::write(&params, "ModifyDeviceFiles: 0\n").unwrap();
        let mut s = crate::gpu::fake::spec(&[], true, &[]);
        Editor::new(&mut s).bind(
            &params,
            Path::new("/proc/driver/nvidia/params"),
            PROC_OPTIONS,
        );
        cover_proc_driver(&mut s, &shim).unwrap();
        assert!(shim.join("nvidia/params").is_file(), "the mount point");
        assert_eq!(
            destinations(&s),
            ["/proc", "/proc/driver", "/proc/driver/nvidia/params"]
        );
    }
}
