//! Who asked for which GPUs (research §3), strongest source first: CDI names in
//! `cdi.k8s.io/*` annotations, the device plugin's `/dev/null` mounts under
//! `/var/run/nvidia-container-devices/`, then `NVIDIA_VISIBLE_DEVICES` — the last only
//! from a privileged container unless the node's policy accepts it.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::runtime::{Capability as OciCap, Spec};
use serde::{Deserialize, Serialize};

use super::capabilities::Capabilities;
pub use super::devices::{parse_visible_devices, resolve, DeviceId, Selection};
use super::paths::normalize;
use super::GpuError;
use crate::gpu::config::{Config, Sharing};

pub const DEVICE_LIST_DIR: &str = "/var/run/nvidia-container-devices";
pub const CDI_ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
pub const SHARING_ANNOTATION: &str = "gpurun.dev/gpu-sharing";
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// Where the honoured request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestSource {
    CdiAnnotations,
    DevicePluginMounts,
    Env,
    /// `NVIDIA_VISIBLE_DEVICES` from an unprivileged container: refused, nothing injected.
    EnvIgnored,
    /// NVIDIA nodes the engine put in `linux.devices` (CDI applied before gpurun ran).
    Applied,
    /// `--gpus` on gpurun's command line.
    Cli,
}

impl RequestSource {
    /// The name a lease records.
    pub fn name(self) -> &'static str {
        match self {
            RequestSource::CdiAnnotations => "cdi-annotations",
            RequestSource::DevicePluginMounts => "device-plugin-mounts",
            RequestSource::Env => "env",
            RequestSource::EnvIgnored => "env-ignored",
            RequestSource::Applied => "applied",
            RequestSource::Cli => "cli",
        }
    }
}

/// A parsed, honoured request (not yet resolved against the inventory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub source: RequestSource,
    /// Empty with `none`: driver files but no device nodes.
    pub devices: Vec<DeviceId>,
    pub capabilities: Capabilities,
    /// `(variable, value)` of every `NVIDIA_REQUIRE_*` to check (empty when disabled).
    pub requirements: Vec<(String, String)>,
    pub sharing: Sharing,
}

/// The outcome of reading a spec's requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Nothing,
    /// A request refused by policy; the warning says why.
    Ignored(String),
    Request(Request),
}

/// What was granted to a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub source: RequestSource,
    /// UUIDs of the granted GPUs (MIG devices count as their parent), for the lease.
    pub gpus: Vec<String>,
    /// Granted MIG devices as `gpu<minor>/gi<G>/ci<C>`.
    pub mig_devices: Vec<String>,
    /// CDI devices applied, fully qualified.
    pub cdi_devices: Vec<String>,
    pub capabilities: Capabilities,
    pub sharing: Sharing,
}

/// The container's environment, last definition winning (as execve's consumers read it).
pub fn env_map(spec: &Spec) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(env) = spec.process().as_ref().and_then(|p| p.env().as_ref()) {
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                m.insert(k.to_string(), v.to_string());
            }
        }
    }
    m
}

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations().as_ref()?.get(key).map(String::as_str)
}

/// CAP_SYS_ADMIN in the bounding set: what NVIDIA's runtime calls privileged.
pub fn is_privileged(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&OciCap::SysAdmin))
}

/// True for a Kubernetes pod sandbox (pause) container, which never gets GPUs.
pub fn is_sandbox(spec: &Spec) -> bool {
    annotation(spec, CONTAINER_TYPE_ANNOTATION) == Some("sandbox")
}

/// CDI names from `cdi.k8s.io/*` annotations (comma-separated values), in key order.
pub fn cdi_annotation_names(spec: &Spec) -> Vec<String> {
    let Some(a) = spec.annotations() else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a
        .keys()
        .filter(|k| k.starts_with(CDI_ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        for n in a[k].split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    }
    out
}

/// Device requests from `/dev/null` mounts under `/var/run/nvidia-container-devices/`.
pub fn mount_requests(spec: &Spec) -> Result<Vec<DeviceId>, GpuError> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if m.source().as_deref() != Some(Path::new("/dev/null")) {
            continue;
        }
        let dest = normalize(m.destination());
        let Ok(rest) = dest.strip_prefix(DEVICE_LIST_DIR) else {
            continue;
        };
        let rest = rest.to_string_lossy();
        let id = if let Some(cdi) = rest.strip_prefix("cdi/") {
            let name = match cdi.matches('/').count() {
                2 if !cdi.contains('=') => {
                    let (kind, dev) = cdi.rsplit_once('/').unwrap_or_default();
                    format!("{kind}={dev}")
                }
                _ => cdi.to_string(),
            };
            DeviceId::parse(&name)
        } else if let Some(ch) = rest.strip_prefix("imex/") {
            ch.parse()
                .map(DeviceId::ImexChannel)
                .map_err(|_| format!("{ch}: not an IMEX channel number"))
        } else {
            DeviceId::parse(&rest)
        };
        let id = id.map_err(|e| GpuError::UnknownDevice(format!("{} ({e})", dest.display())))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`, which NVIDIA's runtime uses for `NVIDIA_DISABLE_REQUIRE`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A request as the spec states it, read without the node's configuration: the runtime
/// reads that configuration only for a spec holding one. Every way of asking for GPUs
/// becomes one of these before any policy applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub source: RequestSource,
    /// The names of CDI annotations or device-plugin mounts (an env request's value is
    /// parsed only once policy honours it).
    devices: Vec<DeviceId>,
    /// `NVIDIA_VISIBLE_DEVICES` (`all` for a legacy CUDA image) of an env request.
    env_value: String,
    env: BTreeMap<String, String>,
}

impl Asked {
    /// `NVIDIA_VISIBLE_DEVICES` of an env request (empty for the other sources).
    pub fn env_value(&self) -> &str {
        &self.env_value
    }
}

/// Reads what the spec asks for, strongest source first; `None` when it asks for nothing.
pub fn read(spec: &Spec) -> Result<Option<Asked>, GpuError> {
    if is_sandbox(spec) {
        return Ok(None);
    }
    let env = env_map(spec);
    let cdi = cdi_annotation_names(spec);
    let mounts = mount_requests(spec)?;
    let (source, devices, env_value) = if !cdi.is_empty() {
        (
            RequestSource::CdiAnnotations,
            cdi_names(&cdi)?,
            String::new(),
        )
    } else if !mounts.is_empty() {
        (RequestSource::DevicePluginMounts, mounts, String::new())
    } else {
        let value = match env.get("NVIDIA_VISIBLE_DEVICES") {
            Some(v) => v.trim().to_string(),
            None if legacy_cuda(&env).is_some() => "all".to_string(),
            None => String::new(),
        };
        if value.is_empty()
            || value == "void"
            || normalize(Path::new(&value)) == Path::new(DEVICE_LIST_DIR)
        {
            return Ok(None);
        }
        (RequestSource::Env, Vec::new(), value)
    };
    Ok(Some(Asked {
        source,
        devices,
        env_value,
        env,
    }))
}

fn cdi_names(names: &[String]) -> Result<Vec<DeviceId>, GpuError> {
    names
        .iter()
        .map(|n| match DeviceId::parse(n) {
            Ok(id @ DeviceId::Cdi(_)) => Ok(id),
            _ => Err(GpuError::UnknownDevice(format!(
                "{n} (a cdi.k8s.io/ annotation must name vendor/class=name)"
            ))),
        })
        .collect()
}

/// A legacy CUDA image (CUDA_VERSION without NVIDIA_REQUIRE_CUDA) asks for every GPU and
/// capability unless it says otherwise.
fn legacy_cuda(env: &BTreeMap<String, String>) -> Option<&String> {
    env.get("CUDA_VERSION")
        .filter(|_| !env.contains_key("NVIDIA_REQUIRE_CUDA"))
}

/// Reads every request the spec makes, applying the node's policy.
pub fn parse(spec: &Spec, cfg: &Config) -> Result<Parsed, GpuError> {
    match read(spec)? {
        None => Ok(Parsed::Nothing),
        Some(asked) => decide(asked, spec, cfg),
    }
}

/// Applies the node's policy to what the spec asked for.
pub fn decide(asked: Asked, spec: &Spec, cfg: &Config) -> Result<Parsed, GpuError> {
    let env = &asked.env;
    let privileged = is_privileged(spec);
    let from_env = asked.source == RequestSource::Env;
    let devices = if from_env {
        if !privileged && !cfg.nvidia.accept_env_when_unprivileged {
            return Ok(Parsed::Ignored(format!(
                "[gpu-env-ignored] NVIDIA_VISIBLE_DEVICES={} ignored: the container is not privileged \
                 (no CAP_SYS_ADMIN in its bounding set) and nvidia.accept-env-when-unprivileged \
                 is false; no GPU was injected",
                asked.env_value
            )));
        }
        parse_visible_devices(&asked.env_value)?
    } else {
        asked.devices
    };
    let mut devices = devices;
    if privileged || from_env {
        refuse_unsupported(env)?;
        devices.extend(imex_channels(env)?);
    }
    Ok(Parsed::Request(Request {
        source: asked.source,
        devices,
        capabilities: capabilities(env, cfg)?,
        requirements: requirements(env),
        sharing: sharing(spec, cfg)?,
    }))
}

fn refuse_unsupported(env: &BTreeMap<String, String>) -> Result<(), GpuError> {
    for var in ["NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"] {
        if env.get(var).is_some_and(|v| !v.trim().is_empty()) {
            return Err(GpuError::Unsupported(format!(
                "{var} is not supported by gpurun"
            )));
        }
    }
    Ok(())
}

/// `NVIDIA_IMEX_CHANNELS`: `all`, `none`, or a comma list of channel numbers.
pub fn imex_channels(env: &BTreeMap<String, String>) -> Result<Vec<DeviceId>, GpuError> {
    let Some(value) = env.get("NVIDIA_IMEX_CHANNELS").map(|v| v.trim()) else {
        return Ok(Vec::new());
    };
    match value {
        "" | "none" | "void" => return Ok(Vec::new()),
        "all" => return Ok(vec![DeviceId::ImexAll]),
        _ => {}
    }
    let mut out = Vec::new();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let ch = word.parse().map_err(|_| GpuError::InvalidRequest {
            name: "NVIDIA_IMEX_CHANNELS".into(),
            value: value.into(),
            message: format!("{word}: not a channel number"),
        })?;
        if !out.contains(&DeviceId::ImexChannel(ch)) {
            out.push(DeviceId::ImexChannel(ch));
        }
    }
    Ok(out)
}

/// A request made on gpurun's command line: `--gpus <devices> [--exclusive]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliRequest {
    /// As `NVIDIA_VISIBLE_DEVICES` takes them: indices, UUIDs, PCI addresses, MIG names,
    /// `all`.
    pub devices: String,
    pub exclusive: bool,
}

/// The command line's request, in place of the image's `NVIDIA_VISIBLE_DEVICES` and
/// whatever the container's privileges: the caller of the runtime decides. Capabilities
/// and requirements still come from the image's environment.
pub fn from_cli(cli: &CliRequest, spec: &Spec, cfg: &Config) -> Result<Request, GpuError> {
    let env = env_map(spec);
    let mut devices = parse_visible_devices(&cli.devices)?;
    if devices.is_empty() {
        return Err(GpuError::InvalidRequest {
            name: "--gpus".into(),
            value: cli.devices.clone(),
            message: "names no GPU".into(),
        });
    }
    if is_privileged(spec) {
        devices.extend(imex_channels(&env)?);
    }
    Ok(Request {
        source: RequestSource::Cli,
        devices,
        capabilities: capabilities(&env, cfg)?,
        requirements: requirements(&env),
        sharing: if cli.exclusive {
            Sharing::Exclusive
        } else {
            sharing(spec, cfg)?
        },
    })
}

/// `NVIDIA_DRIVER_CAPABILITIES`, else every capability for a legacy CUDA image, else the
/// node's default.
fn capabilities(env: &BTreeMap<String, String>, cfg: &Config) -> Result<Capabilities, GpuError> {
    let caps_text = env
        .get("NVIDIA_DRIVER_CAPABILITIES")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    match (caps_text, legacy_cuda(env)) {
        (Some(c), _) => Capabilities::parse(c),
        (None, Some(_)) => Ok(Capabilities::all()),
        (None, None) => Capabilities::parse(&cfg.nvidia.default_capabilities),
    }
    .map_err(|message| GpuError::InvalidRequest {
        name: "NVIDIA_DRIVER_CAPABILITIES".into(),
        value: caps_text.unwrap_or_default().to_string(),
        message,
    })
}

/// `(variable, value)` of every `NVIDIA_REQUIRE_*` to check, plus a legacy CUDA image's
/// `cuda>=<major.minor>`; none when `NVIDIA_DISABLE_REQUIRE` is true.
fn requirements(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let disabled = env
        .get("NVIDIA_DISABLE_REQUIRE")
        .and_then(|v| parse_bool(v.trim()))
        .unwrap_or(false);
    if disabled {
        return Vec::new();
    }
    let mut requirements: Vec<(String, String)> = env
        .iter()
        .filter(|(k, v)| {
            k.starts_with("NVIDIA_REQUIRE_")
                && *k != "NVIDIA_REQUIRE_JETPACK"
                && !v.trim().is_empty()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(v) = legacy_cuda(env) {
        let mm: Vec<&str> = v.split('.').take(2).collect();
        if mm
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            requirements.push(("CUDA_VERSION".into(), format!("cuda>={}", mm.join("."))));
        }
    }
    requirements
}

/// The node's sharing policy, made exclusive by the container's annotation: a container
/// may ask for more isolation than the node's default, never less.
pub fn sharing(spec: &Spec, cfg: &Config) -> Result<Sharing, GpuError> {
    let Some(a) = annotation(spec, SHARING_ANNOTATION) else {
        return Ok(cfg.gpus.sharing);
    };
    match Sharing::parse(a) {
        Some(Sharing::Exclusive) => Ok(Sharing::Exclusive),
        Some(Sharing::Shared) => Ok(cfg.gpus.sharing),
        None => Err(GpuError::InvalidRequest {
            name: SHARING_ANNOTATION.into(),
            value: a.into(),
            message: "expected shared or exclusive".into(),
        }),
    }
}
