//! NVIDIA GPU injection as plain spec edits: discover, request, edits, CDI, leases.
//!
//! The runtime enters it once per create, through [`prepare`] (its module describes the
//! grant's lifecycle). Imports between the children go one way, top to bottom:
//!
//! ```text
//! prepare  → cache, edits, lease, request, config, applied, combine, nvhooks
//!            (nothing imports prepare)
//! applied  → inventory, procfs, paths;  imex → applied;  combine → request
//! edits    → cdi → editor → paths;  cdi → applied (doctor's check of spec files);
//!            edits → request, require, procdir, inventory, config,
//!            applied, imex
//! nvhooks  → editor, edits, procdir, procfs, elf, ldcache, ldcache_write, config
//! cache    → discover → nvml, driverfiles → inventory → capabilities, paths, procfs
//! request  → devices, config;  devices → inventory, procfs;  lease → config;  journal → config;  config → capabilities
//! leaves:    paths, procfs, procdir, elf, ldcache, ldcache_write, capabilities
//! ```
//!
//! Below `prepare` (which reads the node configuration), `lease` (the host-wide lease
//! table) and `journal` (the record of grants and releases the verbs append to),
//! everything is a pure function over injected roots (driver, dev, proc) and the spec:
//! nothing is mounted or created in the rootfs. The one thing ever executed is the
//! driver root's own `nvidia-smi`, by discovery on a cache miss ([`nvml`]) and by
//! `gpurun gpus`: never during injection, never on a start whose discovery cache is valid.

pub mod applied;
mod cache;
pub mod capabilities;
pub mod cdi;
pub mod combine;
pub mod config;
pub mod devices;
mod discover;
mod driverfiles;
mod editor;
pub mod edits;
pub mod elf;
#[doc(hidden)]
pub mod fake;
pub mod imex;
pub mod inventory;
pub mod journal;
pub mod ldcache;
pub mod ldcache_write;
pub mod lease;
pub mod nvhooks;
pub mod nvml;
pub mod observe;
pub mod paths;
mod prepare;
pub mod procdir;
pub mod procfs;
pub mod request;
pub mod require;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cache::{
    discover_cached, discover_for_start, load_cache, rediscover, refresh, start_refresh,
    store_cache, CACHE_FILE, CACHE_FORMAT,
};
pub use capabilities::{Capabilities, Capability};
pub use discover::{discover, discover_with};
pub use inventory::Inventory;
pub use prepare::{prepare, Container, GpuGrant, REFRESH_VERB};
pub use request::{Grant, RequestSource};

/// The host roots every discovery read goes through (all `/` on a plain host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roots {
    /// Root of the driver's libraries, binaries, firmware and IPC sockets.
    pub driver: PathBuf,
    /// Parent of the `/dev` holding the NVIDIA nodes.
    pub dev: PathBuf,
    /// Parent of the `/proc` to read `driver/nvidia` and `devices` from.
    pub proc: PathBuf,
}

impl Roots {
    /// All three roots at one directory (a fake tree, or `/`).
    pub fn at(root: &Path) -> Roots {
        Roots {
            driver: root.to_path_buf(),
            dev: root.to_path_buf(),
            proc: root.to_path_buf(),
        }
    }
}

/// Errors of GPU discovery, request parsing, edits, CDI and leases.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("[gpu-io] {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[gpu-no-driver] no NVIDIA driver found: {0}")]
    NoDriver(String),
    #[error("[gpu-parse] parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("[gpu-host-node] host device node {path}: {message}")]
    HostNode { path: PathBuf, message: String },
    #[error("[gpu-unknown-device] {0}: unknown device")]
    UnknownDevice(String),
    #[error("[gpu-invalid-request] {name}: invalid value {value:?}: {message}")]
    InvalidRequest {
        name: String,
        value: String,
        message: String,
    },
    #[error("[gpu-unsupported] {0}")]
    Unsupported(String),
    #[error("[gpu-requirement-unmet] unsatisfied condition: {0}")]
    Requirement(String),
    #[error("[gpu-cdi] CDI: {0}")]
    Cdi(String),
    #[error("[gpu-unsafe-path] unsafe path {path}: {message}")]
    UnsafePath { path: PathBuf, message: String },
    #[error("[gpu-exclusive-held] GPU {gpu} is held exclusively by container {holder} (root {root}, pid {pid})")]
    Exclusive {
        gpu: String,
        holder: String,
        root: PathBuf,
        pid: i32,
    },
    #[error("[gpu-lease] lease: {0}")]
    Lease(String),
    #[error("[gpu-config] {0}")]
    Config(#[from] config::ConfigError),
    /// Two explicit grants in one create name different GPUs.
    #[error("[gpu-request-conflict] {first} and {second} name different GPUs ({first_gpus} vs {second_gpus}); keep one of them")]
    RequestConflict {
        first: String,
        first_gpus: String,
        second: String,
        second_gpus: String,
    },
    /// An applied device node no longer matches the host's driver.
    #[error("[gpu-stale-node] {origin}: {entry}: {message}; {fix}")]
    StaleNode {
        origin: String,
        entry: String,
        message: String,
        fix: &'static str,
    },
    /// A driver file an applied spec mounts is gone from the host.
    #[error("[gpu-stale-file] {origin}: mount of {path}: {message}; {fix}")]
    StaleFile {
        origin: String,
        path: PathBuf,
        message: String,
        fix: &'static str,
    },
}

/// The reason codes of GPU refusals, as they appear in brackets at the start of the
/// message (and in runtime-spec/gpu.md).
pub mod reason {
    pub const IO: &str = "gpu-io";
    pub const NO_DRIVER: &str = "gpu-no-driver";
    pub const PARSE: &str = "gpu-parse";
    pub const HOST_NODE: &str = "gpu-host-node";
    pub const UNKNOWN_DEVICE: &str = "gpu-unknown-device";
    pub const INVALID_REQUEST: &str = "gpu-invalid-request";
    pub const UNSUPPORTED: &str = "gpu-unsupported";
    pub const REQUIREMENT_UNMET: &str = "gpu-requirement-unmet";
    pub const CDI: &str = "gpu-cdi";
    pub const UNSAFE_PATH: &str = "gpu-unsafe-path";
    pub const EXCLUSIVE_HELD: &str = "gpu-exclusive-held";
    pub const LEASE: &str = "gpu-lease";
    pub const CONFIG: &str = "gpu-config";
    pub const REQUEST_CONFLICT: &str = "gpu-request-conflict";
    pub const STALE_NODE: &str = "gpu-stale-node";
    pub const STALE_FILE: &str = "gpu-stale-file";
    /// Warnings: a request that was read and not acted on.
    pub const ENV_IGNORED: &str = "gpu-env-ignored";
    pub const CONFIG_IGNORED: &str = "gpu-config-ignored";
}

/// What to do about a spec whose nodes or files no longer match the host.
pub const STALE_FIX: &str = "the spec was made for another driver or MIG layout: \
     regenerate it (`gpurun cdi generate`, or restart the DRA driver / device plugin that \
     wrote it) and create the container again";

impl GpuError {
    /// The stable reason code every GPU refusal carries at the front of its message.
    pub fn code(&self) -> &'static str {
        match self {
            GpuError::Io { .. } => reason::IO,
            GpuError::NoDriver(_) => reason::NO_DRIVER,
            GpuError::Parse { .. } => reason::PARSE,
            GpuError::HostNode { .. } => reason::HOST_NODE,
            GpuError::UnknownDevice(_) => reason::UNKNOWN_DEVICE,
            GpuError::InvalidRequest { .. } => reason::INVALID_REQUEST,
            GpuError::Unsupported(_) => reason::UNSUPPORTED,
            GpuError::Requirement(_) => reason::REQUIREMENT_UNMET,
            GpuError::Cdi(_) => reason::CDI,
            GpuError::UnsafePath { .. } => reason::UNSAFE_PATH,
            GpuError::Exclusive { .. } => reason::EXCLUSIVE_HELD,
            GpuError::Lease(_) => reason::LEASE,
            GpuError::Config(_) => reason::CONFIG,
            GpuError::RequestConflict { .. } => reason::REQUEST_CONFLICT,
            GpuError::StaleNode { .. } => reason::STALE_NODE,
            GpuError::StaleFile { .. } => reason::STALE_FILE,
        }
    }

    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> GpuError {
        GpuError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What [`inject`] did for one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// What was granted (the lease is taken on `grant.gpus`).
    pub grant: Grant,
    /// Things the operator should see (an ignored request, an unknown REQUIRE property).
    pub warnings: Vec<String>,
    /// Things worth a debug line (a skipped NVIDIA CDI hook, a mount already present).
    pub log: Vec<String>,
    /// An `NVIDIA_REQUIRE_*` term could not be decided: a fact it needs is unknown.
    pub undecided: bool,
}

/// Applies everything for one container: parse requests, check REQUIRE, edit the spec
/// (all or nothing). Returns `None` when nothing was requested. A request refused by
/// policy (the env var from an unprivileged container) returns `Some` with source
/// [`RequestSource::EnvIgnored`], the warning, and no edit but
/// `NVIDIA_VISIBLE_DEVICES=void`.
///
/// `rootfs` is only probed (never written); `gen_dir` is the host-wide store (the runtime
/// uses `<gpus.state-dir>/proc-driver-nvidia`) in which the generated `/proc/driver/nvidia`
/// is kept once per distinct content ([`procdir`]) and bind-mounted from there.
pub fn inject(
    spec: &mut oci_spec::runtime::Spec,
    rootfs: &Path,
    container_id: &str,
    gen_dir: &Path,
    cfg: &config::Config,
    inv: &Inventory,
) -> Result<Option<Injection>, GpuError> {
    let req = match request::parse(spec, cfg)? {
        request::Parsed::Nothing => return Ok(None),
        request::Parsed::Ignored(w) => return Ok(Some(edits::refuse(spec, w, cfg.gpus.sharing))),
        request::Parsed::Request(r) => r,
    };
    let target = edits::Target {
        rootfs,
        container_id,
        gen_dir,
    };
    let edited = edits::inject(spec, &req, &target, cfg, inv)?;
    *spec = edited.spec;
    Ok(Some(edited.injection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_starts_with_its_reason_code() {
        let p = || PathBuf::from("/x");
        let s = || "s".to_string();
        let all = [
            GpuError::io("reading", &p(), std::io::Error::from_raw_os_error(2)),
            GpuError::NoDriver(s()),
            GpuError::Parse {
                path: p(),
                message: s(),
            },
            GpuError::HostNode {
                path: p(),
                message: s(),
            },
            GpuError::UnknownDevice(s()),
            GpuError::InvalidRequest {
                name: s(),
                value: s(),
                message: s(),
            },
            GpuError::Unsupported(s()),
            GpuError::Requirement(s()),
            GpuError::Cdi(s()),
            GpuError::UnsafePath {
                path: p(),
                message: s(),
            },
            GpuError::Exclusive {
                gpu: s(),
                holder: s(),
                root: p(),
                pid: 1,
            },
            GpuError::Lease(s()),
            GpuError::Config(config::ConfigError::Parse {
                path: p(),
                message: s(),
            }),
            GpuError::RequestConflict {
                first: s(),
                first_gpus: s(),
                second: s(),
                second_gpus: s(),
            },
            GpuError::StaleNode {
                origin: s(),
                entry: s(),
                message: s(),
                fix: STALE_FIX,
            },
            GpuError::StaleFile {
                origin: s(),
                path: p(),
                message: s(),
                fix: STALE_FIX,
            },
        ];
        let mut codes = std::collections::BTreeSet::new();
        for e in &all {
            let text = e.to_string();
            assert!(text.starts_with(&format!("[{}] ", e.code())), "{text}");
            assert_eq!(crate::log::reason_code(&text), Some(e.code()), "{text}");
            assert!(codes.insert(e.code()), "{} twice", e.code());
        }
    }
}
