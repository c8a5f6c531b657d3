//! Which container holds which GPU: one JSON file per holder in `<state-dir>/leases/`,
//! serialised by an exclusive `flock` on `<state-dir>/leases/.lock`.
//!
//! Leases taken by a gpurun that kept its state under the old default directory
//! ([`LEGACY_STATE_DIR`]) are read there as well, as long as their containers live: they
//! refuse an exclusive request like any other; nothing new is written there.
//!
//! A holder is a container id, the runtime root it was created under (containerd, podman
//! and a shell each use their own `--root`), and its init pid with that process's start
//! time. A lease whose pid is gone, has exited but is not yet reaped (a zombie), or now
//! belongs to another process (a different start time), is stale: it is ignored and
//! removed.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::config::{Config, Sharing, DEFAULT_STATE_DIR};
use super::GpuError;
use crate::atomic_file::{self, Durability};

/// Format version of a lease file. A lease of another version is reported, never trusted
/// and never removed: it may protect a GPU in a way this gpurun does not understand.
pub const LEASE_FORMAT: u32 = 1;

const LEASES: &str = "leases";
/// Where the host-wide GPU state was kept by default before it had its own directory.
pub const LEGACY_STATE_DIR: &str = "/run/gpurun";
const LOCK: &str = ".lock";

/// The container a lease belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    pub container_id: String,
    pub root: PathBuf,
    pub pid: i32,
    /// `starttime` (field 22) of `/proc/<pid>/stat`, in clock ticks since boot.
    pub start_time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// [`LEASE_FORMAT`] when written by this gpurun.
    #[serde(default)]
    pub format: u32,
    pub holder: Holder,
    pub gpus: Vec<String>,
    pub sharing: Sharing,
    /// When the lease was taken, in seconds since the Unix epoch; `None` in a lease
    /// written before gpurun recorded it.
    #[serde(default)]
    pub acquired: Option<u64>,
    /// How the grant was asked for (`applied`, `cli`, `cdi-annotations`, …); absent in
    /// leases written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The holder shares its GPUs through NVIDIA MPS (its spec sets
    /// `CUDA_MPS_PIPE_DIRECTORY`). Written only when true, so a lease without MPS reads
    /// the same to a gpurun that does not know the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mps: bool,
}

/// What a lease records beside its holder, GPUs and sharing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    pub source: Option<String>,
    pub mps: bool,
}

/// The lease table of one state directory.
#[derive(Clone, Debug)]
pub struct Leases {
    dir: PathBuf,
    /// The table at the old default location, read (and cleaned of stale leases) but
    /// never written.
    legacy: Option<PathBuf>,
}

fn io<'p>(what: &'static str, p: &'p Path) -> impl FnOnce(std::io::Error) -> GpuError + 'p {
    move |e| GpuError::io(what, p, e)
}

impl Leases {
    pub fn new(state_dir: &Path) -> Leases {
        Leases {
            dir: state_dir.join(LEASES),
            legacy: None,
        }
    }

    /// Also reads the table of `old_state_dir` (see [`LEGACY_STATE_DIR`]); the same
    /// directory as this table's is ignored.
    pub fn with_legacy(mut self, old_state_dir: &Path) -> Leases {
        let dir = old_state_dir.join(LEASES);
        self.legacy = (dir != self.dir).then_some(dir);
        self
    }

    /// Locks this table (made if absent) and then the legacy one if it exists, always in
    /// that order; a gpurun of the old layout locks the legacy table alone, so both agree.
    fn lock(&self) -> Result<Vec<Flock<File>>, GpuError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let mut locks = vec![lock_table(&self.dir)?];
        if let Some(old) = self.legacy.as_deref().filter(|d| d.is_dir()) {
            locks.push(lock_table(old)?);
        }
        Ok(locks)
    }

    fn tables(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.dir.as_path()).chain(self.legacy.as_deref())
    }

    fn file_for(&self, holder: &Holder) -> Result<PathBuf, GpuError> {
        Ok(self
            .dir
            .join(file_name(&holder.container_id, &holder.root)?))
    }

    fn is_live(&self, h: &Holder) -> bool {
        crate::linux::procstat::live_start_time(h.pid) == Some(h.start_time)
    }

    /// Reads every lease of both tables; stale ones are removed (the caller holds the
    /// locks).
    fn read_all(&self) -> Result<Vec<(PathBuf, Lease)>, GpuError> {
        let mut out = Vec::new();
        for dir in self.tables() {
            out.extend(self.read_table(dir)?);
        }
        Ok(out)
    }

    fn read_table(&self, dir: &Path) -> Result<Vec<(PathBuf, Lease)>, GpuError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(GpuError::io("listing", dir, e)),
        };
        let mut out = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let value = std::fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
            if let Some(v) = &value {
                let format = v.get("format").and_then(serde_json::Value::as_u64);
                if format != Some(u64::from(LEASE_FORMAT)) {
                    return Err(GpuError::Lease(format!(
                        "lease file {} has format {}, this gpurun reads format {LEASE_FORMAT}",
                        path.display(),
                        format.map_or_else(|| "none".to_string(), |f| f.to_string())
                    )));
                }
            }
            let lease = value.and_then(|v| serde_json::from_value::<Lease>(v).ok());
            match lease {
                Some(l) if self.is_live(&l.holder) => out.push((path, l)),
                // Unreadable or stale: it protects nothing.
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The lease table of the node: its state directory's, plus the old default
    /// location's while the state directory is the default one (containers created before
    /// the move still hold leases there).
    pub fn for_node(cfg: &Config) -> Leases {
        let dir = &cfg.gpus.state_dir;
        let leases = Leases::new(dir);
        if dir == Path::new(DEFAULT_STATE_DIR) {
            leases.with_legacy(Path::new(LEGACY_STATE_DIR))
        } else {
            leases
        }
    }

    /// Refuses as [`Leases::acquire`] would, writing nothing.
    pub fn check(
        &self,
        container_id: &str,
        root: &Path,
        gpus: &[String],
        sharing: Sharing,
    ) -> Result<(), GpuError> {
        let _lock = self.lock()?;
        self.refuse_conflicts(container_id, root, gpus, sharing)
    }

    /// Records that `holder` holds `gpus`. Refuses when `holder` asks for exclusive use of
    /// a GPU another live container holds, or when another live container holds one
    /// exclusively. Re-acquiring for the same holder replaces its lease.
    pub fn acquire(
        &self,
        holder: &Holder,
        gpus: &[String],
        sharing: Sharing,
    ) -> Result<(), GpuError> {
        self.acquire_with(holder, gpus, sharing, &Notes::default())
    }

    /// [`Leases::acquire`], recording `notes` in the lease.
    pub fn acquire_with(
        &self,
        holder: &Holder,
        gpus: &[String],
        sharing: Sharing,
        notes: &Notes,
    ) -> Result<(), GpuError> {
        let _lock = self.lock()?;
        let mine = self.file_for(holder)?;
        self.refuse_conflicts(&holder.container_id, &holder.root, gpus, sharing)?;
        self.write(&mine, holder, gpus, sharing, notes)
    }

    fn refuse_conflicts(
        &self,
        container_id: &str,
        root: &Path,
        gpus: &[String],
        sharing: Sharing,
    ) -> Result<(), GpuError> {
        file_name(container_id, root)?;
        for (_, other) in self.read_all()? {
            if other.holder.container_id == container_id && other.holder.root == root {
                continue;
            }
            for gpu in gpus {
                if !other.gpus.contains(gpu) {
                    continue;
                }
                if sharing == Sharing::Exclusive || other.sharing == Sharing::Exclusive {
                    return Err(GpuError::Exclusive {
                        gpu: gpu.clone(),
                        holder: other.holder.container_id.clone(),
                        root: other.holder.root.clone(),
                        pid: other.holder.pid,
                    });
                }
            }
        }
        Ok(())
    }

    fn write(
        &self,
        mine: &Path,
        holder: &Holder,
        gpus: &[String],
        sharing: Sharing,
        notes: &Notes,
    ) -> Result<(), GpuError> {
        let lease = Lease {
            format: LEASE_FORMAT,
            holder: holder.clone(),
            gpus: gpus.to_vec(),
            sharing,
            acquired: Some(crate::log::unix_secs(std::time::SystemTime::now())),
            source: notes.source.clone(),
            mps: notes.mps,
        };
        let data = serde_json::to_vec_pretty(&lease).map_err(|e| GpuError::Lease(e.to_string()))?;
        // Volatile: the lease table lives on /run (tmpfs) and does not outlive a reboot;
        // the rename alone keeps readers from seeing half a file.
        atomic_file::write(
            "writing the GPU lease",
            mine,
            &data,
            0o666,
            Durability::Volatile,
        )
        .map_err(|e| GpuError::io(e.step, &e.path, e.source))
    }

    /// Drops `container_id`'s lease under `root` (on delete). Absent is fine.
    pub fn release(&self, container_id: &str, root: &Path) -> Result<(), GpuError> {
        let _lock = self.lock()?;
        let name = file_name(container_id, root)?;
        for dir in self.tables() {
            let path = dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(GpuError::io("removing", &path, e)),
            }
        }
        Ok(())
    }

    /// Every live lease (for `gpurun gpus`). A table never written holds none: listing
    /// creates nothing, so it works where the state directory is not writable.
    pub fn list(&self) -> Result<Vec<Lease>, GpuError> {
        if !self.tables().any(Path::is_dir) {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        Ok(self.read_all()?.into_iter().map(|(_, l)| l).collect())
    }
}

fn lock_table(dir: &Path) -> Result<Flock<File>, GpuError> {
    let path = dir.join(LOCK);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening", &path))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, errno)| GpuError::io("flock", &path, errno.into()))
}

/// `<id>@<hash of root>.json`: one file per holder, for the one id rule of every verb.
fn file_name(id: &str, root: &Path) -> Result<String, GpuError> {
    crate::id::check(id)
        .map_err(|_| GpuError::Lease(format!("container id {id:?} is not a valid file name")))?;
    Ok(format!(
        "{id}@{:016x}.json",
        fnv1a(root.as_os_str().as_encoded_bytes())
    ))
}

/// FNV-1a, to turn a root path into a fixed-width file-name part.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
