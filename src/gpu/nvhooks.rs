//! NVIDIA's own OCI hooks (`nvidia-cdi-hook <subcommand>`, `nvidia-ctk hook
//! <subcommand>`), done by gpurun instead of executed.
//!
//! Engines that apply CDI specs themselves (containerd 2.x, CRI-O, Podman, Docker, DRA)
//! copy NVIDIA's hooks into `config.json`, and gpurun's own CDI path meets them in specs.
//! Run as given they are host binaries working as root on paths inside an image, the
//! class behind CVE-2024-0132, CVE-2025-23266 and CVE-2025-23267. So every hook whose
//! binary is NVIDIA's (by file name, wherever it lives) leaves the spec, in every phase,
//! and its work becomes plain spec content before the plan is built:
//!
//! - `create-symlinks`: the links, listed in the [`SYMLINKS_ANNOTATION`] annotation that
//!   init makes inside the root after the mounts (step `root-symlinks`), never through a
//!   link out of the root, an existing entry left alone;
//! - `update-ldcache`, `enable-cuda-compat`: a generated `ld.so.cache` ([`cache`]),
//!   bind-mounted read-only over the image's; ldconfig never runs;
//! - `disable-device-node-modification`: a generated `/proc/driver/nvidia/params`;
//! - `update-application-profile`: the generated driver application profile;
//! - anything else: skipped with a warning naming it, as NVIDIA's binary itself skips a
//!   subcommand it does not know.
//!
//! `[nvidia] hooks = "run"` in the node configuration leaves them in the spec to run.

mod cache;
mod compat;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, Hooks, Spec};

use super::config::{Config, NvidiaHooks};
use super::editor::{Editor, FILE_OPTIONS, PROC_OPTIONS};
use super::GpuError;

pub use crate::plan::SYMLINKS_ANNOTATION;
/// Under the GPU state directory: generated files (caches, params, profiles), one
/// directory per distinct content.
pub const STORE: &str = "nvidia-hooks";

/// A hook gpurun took out of the spec and did itself.
pub const CODE_NATIVE: &str = "[nvidia-hook-native]";
/// A subcommand gpurun does not know: skipped, never run.
pub const CODE_UNKNOWN: &str = "[nvidia-hook-unknown]";
/// `[nvidia] hooks = "run"`: the hook stays in the spec and runs.
pub const CODE_RUN: &str = "[nvidia-hook-run]";
/// A hook whose arguments NVIDIA's binary would refuse too: the create fails.
pub const CODE_INVALID: &str = "[nvidia-hook-invalid]";
/// `enable-cuda-compat` decided against the image's compat libraries.
pub const CODE_COMPAT_UNUSED: &str = "[nvidia-cuda-compat-unused]";

const BINARIES: &[&str] = &["nvidia-cdi-hook", "nvidia-ctk"];
const DEFAULT_COMPAT_DIR: &str = "/usr/local/cuda/compat";
const PARAMS: &str = "/proc/driver/nvidia/params";
const PROFILE: &str = "/etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf";

/// One NVIDIA hook, as its binary would read its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subcommand {
    /// (target, link) pairs.
    CreateSymlinks(Vec<(String, String)>),
    UpdateLdcache(Vec<PathBuf>),
    EnableCudaCompat(CompatArgs),
    DisableDeviceNodeModification,
    UpdateApplicationProfile,
    Noop,
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatArgs {
    pub host_driver_version: Option<String>,
    pub host_cuda_version: Option<String>,
    pub dir: PathBuf,
}

/// The subcommand of `hook` when its binary is NVIDIA's; `None` for any other hook.
pub fn parse(hook: &Hook) -> Result<Option<Subcommand>, GpuError> {
    let base = hook.path().file_name().and_then(|n| n.to_str());
    let Some(binary) = base.filter(|b| BINARIES.contains(b)) else {
        return Ok(None);
    };
    let args = hook.args().as_deref().unwrap_or(&[]);
    // args[0] is argv[0]; global flags (--debug, --quiet) may come before the subcommand.
    let words = |from: usize| args.iter().skip(from).position(|a| !a.starts_with('-'));
    let mut at = words(1).map(|i| i + 1);
    if binary == "nvidia-ctk" {
        match at {
            Some(i) if args[i] == "hook" => at = words(i + 1).map(|j| j + i + 1),
            // Another nvidia-ctk command in a hook is still NVIDIA's binary as host root:
            // skipped with a warning, like a subcommand gpurun does not know.
            Some(i) => return Ok(Some(Subcommand::Unknown(args[i].clone()))),
            None => return Ok(Some(Subcommand::Unknown(String::new()))),
        }
    }
    let mut rest = at.map_or(&[][..], |i| &args[i..]).iter();
    let Some(verb) = rest.next() else {
        return Ok(Some(Subcommand::Unknown(String::new())));
    };
    let flags: Vec<&String> = rest.collect();
    let values = |name: &str| flag_values(&flags, name);
    let sub = match verb.as_str() {
        "create-symlinks" => Subcommand::CreateSymlinks(links(&values("link"))?),
        "update-ldcache" => Subcommand::UpdateLdcache(
            values("folder")
                .iter()
                .map(|f| PathBuf::from(rooted(f)))
                .collect(),
        ),
        "enable-cuda-compat" => Subcommand::EnableCudaCompat(CompatArgs {
            host_driver_version: values("host-driver-version").pop(),
            host_cuda_version: values("host-cuda-version").pop(),
            dir: PathBuf::from(rooted(
                &values("cuda-compat-container-root")
                    .pop()
                    .unwrap_or_else(|| DEFAULT_COMPAT_DIR.to_string()),
            )),
        }),
        "disable-device-node-modification" => Subcommand::DisableDeviceNodeModification,
        "update-application-profile" => Subcommand::UpdateApplicationProfile,
        "noop" => Subcommand::Noop,
        other => Subcommand::Unknown(other.to_string()),
    };
    Ok(Some(sub))
}

/// Every value of `--name V`, `--name=V`, `-name V` or `-name=V`, in order.
fn flag_values(flags: &[&String], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        let Some(bare) = f.strip_prefix("--").or_else(|| f.strip_prefix('-')) else {
            continue;
        };
        match bare.split_once('=') {
            Some((n, v)) if n == name => out.push(v.to_string()),
            None if bare == name => out.extend(it.next().map(|v| v.to_string())),
            _ => {}
        }
    }
    out
}

/// A path inside the container as NVIDIA's hooks take one: relative to its root.
fn rooted(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

fn links(specs: &[String]) -> Result<Vec<(String, String)>, GpuError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in specs {
        let pair = match s.split("::").collect::<Vec<_>>()[..] {
            // NVIDIA's hook joins the link to the container's root: `a/b` is `/a/b`.
            [t, l] if !t.is_empty() && !l.is_empty() => (t.to_string(), rooted(l)),
            _ => {
                return Err(GpuError::Unsupported(format!(
                    "{CODE_INVALID} NVIDIA hook create-symlinks: --link {s:?} is not target::link"
                )))
            }
        };
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    Ok(out)
}

/// Whether any hook of the spec, in any phase, is NVIDIA's.
pub fn present(spec: &Spec) -> bool {
    spec.hooks()
        .as_ref()
        .is_some_and(|h| phases(h).into_iter().flatten().flatten().any(is_nvidia))
}

fn is_nvidia(h: &Hook) -> bool {
    h.path()
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|b| BINARIES.contains(&b))
}

#[allow(deprecated)]
fn phases(h: &Hooks) -> [&Option<Vec<Hook>>; 6] {
    [
        h.prestart(),
        h.create_runtime(),
        h.create_container(),
        h.start_container(),
        h.poststart(),
        h.poststop(),
    ]
}

/// Runs `f` on each phase's list in turn.
#[allow(deprecated)]
fn each_phase_mut<E>(
    h: &mut Hooks,
    mut f: impl FnMut(&mut Option<Vec<Hook>>) -> Result<(), E>,
) -> Result<(), E> {
    f(h.prestart_mut())?;
    f(h.create_runtime_mut())?;
    f(h.create_container_mut())?;
    f(h.start_container_mut())?;
    f(h.poststart_mut())?;
    f(h.poststop_mut())
}

/// What the NVIDIA hooks of one spec ask for, all phases together.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Work {
    pub links: Vec<(String, String)>,
    pub folders: Vec<PathBuf>,
    pub compat: Option<CompatArgs>,
    pub params: bool,
    pub profile: bool,
    /// One line per hook, each with its reason code.
    pub log: Vec<String>,
    pub warnings: Vec<String>,
}

impl Work {
    fn add(&mut self, sub: Subcommand, text: &str) {
        let done = format!("{CODE_NATIVE} NVIDIA hook done by gpurun, not run: {text}");
        match sub {
            Subcommand::CreateSymlinks(l) => {
                for pair in l {
                    if !self.links.contains(&pair) {
                        self.links.push(pair);
                    }
                }
            }
            Subcommand::UpdateLdcache(f) => {
                for d in f {
                    if !self.folders.contains(&d) {
                        self.folders.push(d);
                    }
                }
            }
            Subcommand::EnableCudaCompat(c) => {
                self.compat.get_or_insert(c);
            }
            Subcommand::DisableDeviceNodeModification => self.params = true,
            Subcommand::UpdateApplicationProfile => self.profile = true,
            Subcommand::Noop => {}
            Subcommand::Unknown(name) => {
                self.warnings.push(format!(
                    "{CODE_UNKNOWN} NVIDIA hook subcommand {name:?} is unknown to gpurun: \
                     skipped, not run ({text})"
                ));
                return;
            }
        }
        self.log.push(done);
    }
}

fn describe(h: &Hook) -> String {
    let args = h.args().as_deref().unwrap_or(&[]);
    format!("{} {}", h.path().display(), args.join(" "))
        .trim_end()
        .to_string()
}

/// Takes every NVIDIA hook out of `spec` and gathers what they ask for.
pub fn take(spec: &mut Spec) -> Result<Work, GpuError> {
    let mut work = Work::default();
    let Some(mut hooks) = spec.hooks().clone() else {
        return Ok(work);
    };
    each_phase_mut(&mut hooks, |list| {
        let Some(list) = list else {
            return Ok(());
        };
        let mut kept = Vec::with_capacity(list.len());
        for h in list.drain(..) {
            match parse(&h)? {
                Some(sub) => work.add(sub, &describe(&h)),
                None => kept.push(h),
            }
        }
        *list = kept;
        Ok::<(), GpuError>(())
    })?;
    spec.set_hooks(Some(hooks));
    Ok(work)
}

/// The runtime's entry: reads the node configuration only for a spec holding an NVIDIA
/// hook, then [`handle`]s it and logs what was done. `cover` names the directory under
/// the state directory that covers `/proc/driver` when the kernel has no NVIDIA module.
pub fn prepare(spec: &mut Spec, rootfs: &Path, cover: &str, cfg: &Config) -> Result<(), GpuError> {
    if !present(spec) {
        return Ok(());
    }
    let done = handle(spec, &Target { rootfs, cover }, cfg)?;
    // The caller's own input: on stderr without --log, as a config warning is.
    for w in &done.warnings {
        crate::log::warn_caller(w);
    }
    for l in &done.log {
        crate::log::debug(l);
    }
    Ok(())
}

/// The container's root (only read, inside the root) and the name, under the state
/// directory, of the cover of `/proc/driver` for a kernel without the NVIDIA module.
pub struct Target<'a> {
    pub rootfs: &'a Path,
    pub cover: &'a str,
}

/// Does the NVIDIA hooks' work as spec edits, or with `hooks = "run"` leaves them be.
/// Generated files go to the state directory.
pub fn handle(spec: &mut Spec, t: &Target<'_>, cfg: &Config) -> Result<Work, GpuError> {
    if cfg.nvidia.hooks == NvidiaHooks::Run {
        let mut w = Work::default();
        if present(spec) {
            w.log.push(format!(
                "{CODE_RUN} NVIDIA hooks run as given: nvidia.hooks = \"run\""
            ));
        }
        return Ok(w);
    }
    let mut work = take(spec)?;
    let root = crate::linux::inroot::Root::open(t.rootfs).map_err(|e| {
        GpuError::io(
            "reading the rootfs for NVIDIA's hooks",
            t.rootfs,
            std::io::Error::other(e.to_string()),
        )
    })?;
    let store = cfg.gpus.state_dir.join(STORE);
    loader_cache(spec, &root, &mut work, &store)?;
    if work.params {
        params(spec, cfg, &store, &cfg.gpus.state_dir.join(t.cover))?;
    }
    if work.profile {
        profile(spec, &store);
    }
    record_links(spec, &work.links)?;
    Ok(work)
}

/// `enable-cuda-compat` and `update-ldcache` together: one generated cache.
fn loader_cache(
    spec: &mut Spec,
    root: &crate::linux::inroot::Root,
    work: &mut Work,
    store: &Path,
) -> Result<(), GpuError> {
    let compat_dir = match &work.compat {
        Some(c) => compat::decide(root, c, &mut work.log),
        None => None,
    };
    if compat_dir.is_none() && work.folders.is_empty() {
        return Ok(());
    }
    let made = cache::generate(spec, root, &work.folders, compat_dir.as_deref(), store)?;
    for l in made.links {
        if !work.links.contains(&l) {
            work.links.push(l);
        }
    }
    work.log.extend(made.log);
    Ok(())
}

/// The links go to init through the spec, as every GPU edit does.
fn record_links(spec: &mut Spec, links: &[(String, String)]) -> Result<(), GpuError> {
    if links.is_empty() {
        return Ok(());
    }
    let mut all = read_links(spec);
    for l in links {
        if !all.contains(l) {
            all.push(l.clone());
        }
    }
    let text = serde_json::to_string(&all).map_err(|e| GpuError::Parse {
        path: PathBuf::from(SYMLINKS_ANNOTATION),
        message: e.to_string(),
    })?;
    let mut a = spec.annotations().clone().unwrap_or_default();
    a.insert(SYMLINKS_ANNOTATION.to_string(), text);
    spec.set_annotations(Some(a));
    Ok(())
}

/// The (target, link) pairs of the [`SYMLINKS_ANNOTATION`]; none when it is absent or
/// not a list of pairs.
pub fn read_links(spec: &Spec) -> Vec<(String, String)> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(SYMLINKS_ANNOTATION))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The host's params with `ModifyDeviceFiles: 0`, mounted over the container's, unless
/// the spec already mounts a generated `/proc/driver/nvidia` (whose params says so).
fn params(spec: &mut Spec, cfg: &Config, store: &Path, cover: &Path) -> Result<(), GpuError> {
    let covered = spec.mounts().iter().flatten().any(|m| {
        let d = super::paths::normalize(m.destination());
        d == Path::new("/proc/driver/nvidia") || d == Path::new(PARAMS)
    });
    if covered {
        return Ok(());
    }
    let host = cfg.nvidia.proc_root.join("proc/driver/nvidia/params");
    let Ok(text) = std::fs::read_to_string(&host) else {
        return Ok(());
    };
    let content = super::procfs::params_without_device_modification(&text);
    let file = generated(store, "params", content.into_bytes())?;
    Editor::new(spec).bind(&file, Path::new(PARAMS), PROC_OPTIONS);
    super::edits::cover_proc_driver_without_module(spec, cover)
}

/// The driver's application profile limiting EGL and Vulkan to the container's GPUs,
/// written as NVIDIA's hook writes it: a mask of the `/dev/nvidia<minor>` minors.
fn profile(spec: &mut Spec, store: &Path) {
    let mask = gpu_minor_mask(spec);
    if mask == 0 {
        return;
    }
    let text = format!(
        "{{\"profiles\":[{{\"name\":\"_container_\",\"settings\":[\"EGLVisibleDGPUDevices\",0x{mask:x}]}}],\
         \"rules\":[{{\"pattern\":[],\"profile\":\"_container_\"}}]}}"
    );
    match generated(store, "10-container.conf", text.into_bytes()) {
        Ok(file) => Editor::new(spec).bind(&file, Path::new(PROFILE), FILE_OPTIONS),
        Err(e) => crate::log::warn(&format!(
            "{CODE_NATIVE} NVIDIA hook update-application-profile: {e}"
        )),
    }
}

fn gpu_minor_mask(spec: &Spec) -> u64 {
    let devices = spec.linux().as_ref().and_then(|l| l.devices().clone());
    devices
        .iter()
        .flatten()
        .filter(|d| d.typ() == oci_spec::runtime::LinuxDeviceType::C)
        .filter_map(|d| {
            d.path()
                .to_str()?
                .strip_prefix("/dev/nvidia")?
                .parse::<u32>()
                .ok()
        })
        .filter(|m| *m < 64)
        .fold(0, |mask, m| mask | 1 << m)
}

/// `name` holding `data` in the content-addressed store: made once per content.
fn generated(store: &Path, name: &str, data: Vec<u8>) -> Result<PathBuf, GpuError> {
    let content = super::procdir::Content {
        files: vec![(name.to_string(), data)],
        dirs: Vec::new(),
    };
    Ok(super::procdir::materialize(store, &content)?.join(name))
}

#[cfg(test)]
mod tests;
