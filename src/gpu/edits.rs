//! A grant turned into plain OCI spec edits: `linux.devices`, `linux.resources.devices`,
//! bind mounts and env. Nothing here touches the rootfs except a read-only probe of which
//! library directory the image's loader searches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Mount, Spec,
};

use super::capabilities::{Capabilities, Capability};
use super::cdi;
use super::inventory::{DeviceNode, Gpu, Inventory, MigDevice, DEV_LINKED};
use super::paths::{container_dest, normalize, rootfs_has_dir};
use super::procfs;
use super::request::{self, Grant, Parsed, RequestSource, Selection};
use super::require::{self, Facts};
use super::{GpuError, Injection};
use crate::config::Config;

/// Options of every injected file mount (libraries, binaries, firmware, generated files).
pub const FILE_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "rbind", "rprivate"];
/// IPC sockets: connecting needs write access, so no `ro`; nothing there is executable.
pub const IPC_OPTIONS: &[&str] = &["nosuid", "nodev", "noexec", "rbind", "rprivate"];
/// `/proc/driver/nvidia` replacements.
pub const PROC_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "noexec", "rbind", "rprivate"];

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

/// Accumulates edits on a spec, skipping what is already there.
pub struct Editor<'a> {
    spec: &'a mut Spec,
    destinations: BTreeSet<PathBuf>,
    pub log: Vec<String>,
}

impl<'a> Editor<'a> {
    pub fn new(spec: &'a mut Spec) -> Editor<'a> {
        let destinations = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| normalize(m.destination()))
            .collect();
        Editor {
            spec,
            destinations,
            log: Vec::new(),
        }
    }

    pub fn spec(&mut self) -> &mut Spec {
        self.spec
    }

    /// Adds a bind mount unless something is already mounted at `dest`.
    pub fn bind(&mut self, source: &Path, dest: &Path, options: &[&str]) {
        self.mount(
            source,
            dest,
            Some("bind"),
            options.iter().map(|s| s.to_string()).collect(),
        );
    }

    /// Adds a mount unless something is already mounted at `dest`.
    pub fn mount(&mut self, source: &Path, dest: &Path, typ: Option<&str>, options: Vec<String>) {
        let key = normalize(dest);
        if !self.destinations.insert(key) {
            self.log.push(format!(
                "{} already has a mount; not adding another",
                dest.display()
            ));
            return;
        }
        let mut m = Mount::default();
        m.set_destination(dest.to_path_buf());
        m.set_source(Some(source.to_path_buf()));
        m.set_typ(typ.map(str::to_string));
        m.set_options(Some(options));
        self.spec.mounts_mut().get_or_insert_with(Vec::new).push(m);
    }

    /// Adds a device node (unless one is already at its path) and its allow rule.
    pub fn device(&mut self, dev: LinuxDevice, access: &str) {
        if self.spec.linux().is_none() {
            self.spec.set_linux(LinuxBuilder::default().build().ok());
        }
        let Some(linux) = self.spec.linux_mut().as_mut() else {
            return;
        };
        let devices = linux.devices_mut().get_or_insert_with(Vec::new);
        if devices
            .iter()
            .any(|d| normalize(d.path()) == normalize(dev.path()))
        {
            self.log.push(format!(
                "{} is already in linux.devices; not adding another",
                dev.path().display()
            ));
        } else {
            devices.push(dev.clone());
        }
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(dev.typ()));
        rule.set_major(Some(dev.major()));
        rule.set_minor(Some(dev.minor()));
        rule.set_access(Some(access.to_string()));
        let resources = linux
            .resources_mut()
            .get_or_insert_with(LinuxResources::default);
        let rules = resources.devices_mut().get_or_insert_with(Vec::new);
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }

    /// Sets an env variable, replacing every earlier definition.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let Some(process) = self.spec.process_mut().as_mut() else {
            return;
        };
        let mut env = process.env().clone().unwrap_or_default();
        let prefix = format!("{key}=");
        env.retain(|kv| !kv.starts_with(&prefix));
        env.push(format!("{key}={value}"));
        process.set_env(Some(env));
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

/// See [`super::inject`].
pub fn inject(
    spec: &mut Spec,
    rootfs: &Path,
    container_id: &str,
    gen_dir: &Path,
    cfg: &Config,
    inv: &Inventory,
) -> Result<Option<Injection>, GpuError> {
    let req = match request::parse(spec, cfg)? {
        Parsed::Nothing => return Ok(None),
        Parsed::Ignored(warning) => {
            // Neutralise the variable so nothing downstream (a nested or hook-based NVIDIA
            // runtime) acts on a request gpurun refused.
            Editor::new(spec).set_env("NVIDIA_VISIBLE_DEVICES", "void");
            return Ok(Some(Injection {
                grant: Grant {
                    source: RequestSource::EnvIgnored,
                    gpus: Vec::new(),
                    mig_devices: Vec::new(),
                    cdi_devices: Vec::new(),
                    capabilities: Capabilities::NONE,
                    sharing: cfg.gpus.sharing,
                },
                warnings: vec![warning],
                log: Vec::new(),
                undecided: false,
            }));
        }
        Parsed::Request(r) => r,
    };
    let sel = request::resolve(&req.devices, inv)?;
    let mut warnings = Vec::new();
    // Edit a copy: on any error (a failed requirement after CDI edits, say) the caller's
    // spec is left as it was.
    let mut work = spec.clone();
    let mut ed = Editor::new(&mut work);

    // CDI devices first: their edits identify GPUs by /dev/nvidia<minor>.
    let mut cdi_gpus: Vec<&Gpu> = Vec::new();
    let mut cdi_wants_params = false;
    if !sel.cdi.is_empty() {
        let registry = cdi::Registry::load(&cfg.nvidia.cdi_spec_dirs);
        let applied = cdi::apply(&mut ed, &registry, &sel.cdi)?;
        for minor in applied.gpu_minors {
            if let Some(g) = inv.gpu_by_minor(minor) {
                if !cdi_gpus.iter().any(|x| x.minor == g.minor) {
                    cdi_gpus.push(g);
                }
            }
        }
        cdi_wants_params = applied.disable_device_node_modification;
        ed.log.extend(applied.log);
    }
    let mut gpus: Vec<&Gpu> = sel.gpus.clone();
    for g in &cdi_gpus {
        if !gpus.iter().any(|x| x.minor == g.minor) {
            gpus.push(g);
        }
    }

    let undecided = require::check(&req.requirements, &facts(inv, &gpus))?;
    let unknown_facts = !undecided.is_empty();
    warnings.extend(undecided);

    let native = !sel.gpus.is_empty() || !sel.mig.is_empty() || req.devices.is_empty();
    if native {
        for n in device_nodes(inv, &sel, req.capabilities) {
            ed.device(linux_device(&n), "rwm");
        }
        let dirs = library_dirs(rootfs);
        driver_file_mounts(&mut ed, inv, req.capabilities, &dirs)?;
    }
    if native || cdi_wants_params {
        proc_driver_mounts(&mut ed, inv, &gpus, &sel.mig, gen_dir)?;
    }
    // The device plugin's "look at the mounts" marker becomes the list it stands for, so
    // tools in the container that read the variable see what was granted.
    let env = request::env_map(ed.spec());
    if req.source == RequestSource::DevicePluginMounts
        && env
            .get("NVIDIA_VISIBLE_DEVICES")
            .is_some_and(|v| normalize(Path::new(v.trim())) == Path::new(request::DEVICE_LIST_DIR))
    {
        let list: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
        let value = if list.is_empty() {
            "void".to_string()
        } else {
            list.join(",")
        };
        ed.set_env("NVIDIA_VISIBLE_DEVICES", &value);
    }
    let mut log = std::mem::take(&mut ed.log);
    log.push(format!(
        "container {container_id}: {} GPU(s), capabilities {}",
        gpus.len(),
        req.capabilities
    ));
    *spec = work;
    Ok(Some(Injection {
        grant: Grant {
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
        },
        warnings,
        log,
        undecided: unknown_facts,
    }))
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
}
