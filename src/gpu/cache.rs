//! The discovery cache: `<state-dir>/discovery.json`.
//!
//! Discovery's slow parts are library discovery (ld.so.cache, ELF reads, directory scans)
//! and above all NVML enrichment, which runs nvidia-smi; the key — roots, the driver
//! version line, the GPU set and the MIG layout from procfs — is cheap to read. A cache
//! with another format version or another key, or one that fails [`Inventory::validate`],
//! is ignored and rewritten: it is never trusted. A valid cache is the whole answer: a
//! container start that finds one runs nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::discover::{discover, numbered_dirs, read_gpus, scan};
use super::inventory::Inventory;
use super::procfs;
use super::{GpuError, Roots};
use crate::atomic_file::Durability;
use crate::gpu::config::Config;

/// The cache file's name under the state directory.
pub const CACHE_FILE: &str = "discovery.json";
/// Bumped whenever [`Inventory`]'s shape or meaning changes (2: NVML enrichment and the
/// MIG layout in the key).
pub const CACHE_FORMAT: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    roots: Roots,
    /// The first line of `/proc/driver/nvidia/version`.
    version_line: Option<String>,
    /// (bus, uuid, minor) of every GPU, in bus order.
    gpus: Vec<(String, String, u32)>,
    /// (GPU minor, GI, CI) of every MIG device: creating or destroying one changes the
    /// devices and their UUIDs without touching the GPU set.
    mig: Vec<(u32, u32, u32)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: u32,
    key: Key,
    inventory: Inventory,
}

fn current_key(roots: &Roots) -> Result<Key, GpuError> {
    let proc = roots.proc.join("proc");
    let version = proc.join("driver/nvidia/version");
    let version_line = match std::fs::read_to_string(&version) {
        Ok(t) => t.lines().next().map(str::to_string),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(GpuError::io("reading", &version, e)),
    };
    let gpus: Vec<(String, String, u32)> = read_gpus(&proc)?
        .into_iter()
        .map(|(i, _)| (i.bus.to_string(), i.uuid, i.minor))
        .collect();
    let mut mig = Vec::new();
    for (_, _, minor) in &gpus {
        let dir = proc.join(format!("driver/nvidia/capabilities/gpu{minor}/mig"));
        for gi in numbered_dirs(&dir, "gi")? {
            for ci in numbered_dirs(&dir.join(format!("gi{gi}")), "ci")? {
                mig.push((*minor, gi, ci));
            }
        }
    }
    Ok(Key {
        roots: roots.clone(),
        version_line,
        gpus,
        mig,
    })
}

/// Reads `path` and returns its inventory only if it has this format, `roots`' current
/// key, and passes validation.
pub fn load_cache(path: &Path, roots: &Roots) -> Result<Option<Inventory>, GpuError> {
    let Ok(data) = std::fs::read(path) else {
        return Ok(None);
    };
    let Ok(file) = serde_json::from_slice::<CacheFile>(&data) else {
        return Ok(None);
    };
    if file.format != CACHE_FORMAT || file.key != current_key(roots)? {
        return Ok(None);
    }
    if file.inventory.validate(roots).is_err() || !nodes_unchanged(&file.inventory, roots) {
        return Ok(None);
    }
    let procfs_version = file
        .key
        .version_line
        .as_deref()
        .and_then(procfs::parse_version);
    if procfs_version.is_some_and(|v| v != file.inventory.driver_version) {
        return Ok(None);
    }
    Ok(Some(file.inventory))
}

/// Whether every recorded device node still has the host node's mode and owner: they are
/// injected as recorded, so a chmod or chgrp on the host (a udev rule, a driver reload
/// with other `NVreg_DeviceFileMode`/`NVreg_DeviceFileGID`) must not leave containers with
/// the old ones. One `lstat` per node; a node that is absent must still be absent.
fn nodes_unchanged(inv: &Inventory, roots: &Roots) -> bool {
    inv.all_nodes().all(|n| {
        let Ok(rel) = n.path.strip_prefix("/") else {
            return false;
        };
        match std::fs::symlink_metadata(roots.dev.join(rel)) {
            Ok(m) => (m.mode() & 0o7777, m.uid(), m.gid()) == (n.mode, n.uid, n.gid),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (n.mode, n.uid, n.gid) == (0o666, 0, 0)
            }
            Err(_) => false,
        }
    })
}

/// Writes the inventory atomically (a temporary file renamed into place), making the state
/// directory if needed.
pub fn store_cache(path: &Path, inv: &Inventory) -> Result<(), GpuError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| GpuError::io("creating", dir, e))?;
    write_cache(path, inv)
}

/// [`store_cache`] into a directory that must still exist (a background refresh never
/// makes the state directory again after it was removed).
fn write_cache(path: &Path, inv: &Inventory) -> Result<(), GpuError> {
    let file = CacheFile {
        format: CACHE_FORMAT,
        key: current_key(&inv.roots)?,
        inventory: inv.clone(),
    };
    let data = serde_json::to_vec_pretty(&file).map_err(|e| GpuError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::atomic_file::write(
        "writing the GPU discovery cache",
        path,
        &data,
        0o666,
        Durability::Synced,
    )
    .map_err(|e| GpuError::io(e.step, &e.path, e.source))
}

/// Discovery through the cache in `cfg.gpus.state_dir`. A cache that cannot be written
/// (read-only state dir) is not an error: the fresh inventory is returned all the same.
/// A fresh discovery logs what NVML enrichment could not learn, once: later starts read
/// the cache.
pub fn discover_cached(cfg: &Config) -> Result<Inventory, GpuError> {
    let roots = cfg.roots();
    let path = cfg.gpus.state_dir.join(CACHE_FILE);
    if let Some(inv) = load_cache(&path, &roots)? {
        return Ok(inv);
    }
    rediscover(cfg)
}

/// Discovery ignoring the cache, which is rewritten (`gpurun gpus --refresh`, or when the
/// cached enrichment had failed).
pub fn rediscover(cfg: &Config) -> Result<Inventory, GpuError> {
    let inv = discover(&cfg.roots())?;
    if let Some(w) = inv.enrichment.warning() {
        crate::log::warn(&w);
    }
    let _ = store_cache(&cfg.gpus.state_dir.join(CACHE_FILE), &inv);
    Ok(inv)
}

/// The marker a background refresh holds in the state directory, so that many creates on a
/// cold cache start one nvidia-smi, not one each.
const REFRESHING: &str = "discovery.refreshing";
/// A marker older than this is left from a refresh that died: it no longer blocks one.
const REFRESH_STALE: std::time::Duration = std::time::Duration::from_secs(120);

/// Discovery on a container's start path, which never waits for nvidia-smi: the cache when
/// it is valid; otherwise procfs and the driver root alone, cached with the enrichment
/// marked pending. With a pending enrichment the caller either needs the facts now (a MIG
/// UUID, a REQUIRE term: it calls [`rediscover`]) or starts [`start_refresh`].
pub fn discover_for_start(cfg: &Config) -> Result<Inventory, GpuError> {
    let roots = cfg.roots();
    let path = cfg.gpus.state_dir.join(CACHE_FILE);
    if let Some(inv) = load_cache(&path, &roots)? {
        return Ok(inv);
    }
    let mut inv = scan(&roots)?;
    inv.enrichment.pending = true;
    inv.enrichment
        .notes
        .push("nvidia-smi runs in the background after this container's start".into());
    let _ = store_cache(&path, &inv);
    Ok(inv)
}

/// Calls `spawn` to start a background [`rediscover`] unless one is running (the marker in
/// the state directory, released by [`finish_refresh`]), so that many creates on a cold
/// cache start one nvidia-smi, not one each.
pub fn start_refresh(cfg: &Config, spawn: impl FnOnce() -> std::io::Result<()>) {
    let dir = &cfg.gpus.state_dir;
    if claim_refresh(dir) && spawn().is_err() {
        finish_refresh(dir);
    }
}

/// Takes the refresh marker; `false` when a live refresh holds it.
fn claim_refresh(dir: &Path) -> bool {
    let marker = dir.join(REFRESHING);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let stale = std::fs::metadata(&marker)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > REFRESH_STALE);
                if !stale {
                    return false;
                }
                let _ = std::fs::remove_file(&marker);
            }
            Err(_) => return false,
        }
    }
    false
}

/// The background refresh itself (`gpurun refresh-gpus`): discovery with nvidia-smi, the
/// cache rewritten, the marker released.
pub fn refresh(cfg: &Config) -> Result<(), GpuError> {
    let dir = &cfg.gpus.state_dir;
    let done = discover(&cfg.roots()).and_then(|inv| write_cache(&dir.join(CACHE_FILE), &inv));
    finish_refresh(dir);
    done
}

/// Releases the refresh marker.
fn finish_refresh(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(REFRESHING));
}
