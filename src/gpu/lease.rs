//! Which container holds which GPU: one JSON file per holder in `<state-dir>/leases/`,
//! serialised by an exclusive `flock` on `<state-dir>/leases/.lock`.
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

use super::GpuError;
use crate::atomic_file::{self, Durability};
use crate::config::Sharing;

/// Format version of a lease file. A lease of another version is reported, never trusted
/// and never removed: it may protect a GPU in a way this gpurun does not understand.
pub const LEASE_FORMAT: u32 = 1;

const LEASES: &str = "leases";
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
}

/// The lease table of one state directory.
#[derive(Clone, Debug)]
pub struct Leases {
    dir: PathBuf,
}

fn io<'p>(what: &'static str, p: &'p Path) -> impl FnOnce(std::io::Error) -> GpuError + 'p {
    move |e| GpuError::io(what, p, e)
}

impl Leases {
    pub fn new(state_dir: &Path) -> Leases {
        Leases {
            dir: state_dir.join(LEASES),
        }
    }

    fn lock(&self) -> Result<Flock<File>, GpuError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.dir.join(LOCK);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, errno)| GpuError::io("flock", &path, errno.into()))
    }

    fn file_for(&self, holder: &Holder) -> Result<PathBuf, GpuError> {
        let id = &holder.container_id;
        let ok = !id.is_empty()
            && !id.starts_with('.')
            && id.len() <= 1024
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        if !ok {
            return Err(GpuError::Lease(format!(
                "container id {id:?} is not a valid file name"
            )));
        }
        Ok(self.dir.join(format!(
            "{id}@{:016x}.json",
            fnv1a(holder.root.as_os_str().as_encoded_bytes())
        )))
    }

    fn is_live(&self, h: &Holder) -> bool {
        crate::linux::procstat::live_start_time(h.pid) == Some(h.start_time)
    }

    /// Reads every lease; stale ones are removed (the caller holds the lock).
    fn read_all(&self) -> Result<Vec<(PathBuf, Lease)>, GpuError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(GpuError::io("listing", &self.dir, e)),
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

    /// Records that `holder` holds `gpus`. Refuses when `holder` asks for exclusive use of
    /// a GPU another live container holds, or when another live container holds one
    /// exclusively. Re-acquiring for the same holder replaces its lease.
    pub fn acquire(
        &self,
        holder: &Holder,
        gpus: &[String],
        sharing: Sharing,
    ) -> Result<(), GpuError> {
        let _lock = self.lock()?;
        let mine = self.file_for(holder)?;
        for (path, other) in self.read_all()? {
            if path == mine {
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
        let lease = Lease {
            format: LEASE_FORMAT,
            holder: holder.clone(),
            gpus: gpus.to_vec(),
            sharing,
        };
        let data = serde_json::to_vec_pretty(&lease).map_err(|e| GpuError::Lease(e.to_string()))?;
        // Volatile: the lease table lives on /run (tmpfs) and does not outlive a reboot;
        // the rename alone keeps readers from seeing half a file.
        atomic_file::write(
            "writing the GPU lease",
            &mine,
            &data,
            0o666,
            Durability::Volatile,
        )
        .map_err(|e| GpuError::io(e.step, &e.path, e.source))
    }

    /// Drops `container_id`'s lease under `root` (on delete). Absent is fine.
    pub fn release(&self, container_id: &str, root: &Path) -> Result<(), GpuError> {
        let _lock = self.lock()?;
        let holder = Holder {
            container_id: container_id.to_string(),
            root: root.to_path_buf(),
            pid: 0,
            start_time: 0,
        };
        let path = self.file_for(&holder)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(GpuError::io("removing", &path, e)),
        }
    }

    /// Every live lease (for `gpurun gpus`). A table never written holds none: listing
    /// creates nothing, so it works where the state directory is not writable.
    pub fn list(&self) -> Result<Vec<Lease>, GpuError> {
        if !self.dir.is_dir() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        Ok(self.read_all()?.into_iter().map(|(_, l)| l).collect())
    }
}

/// FNV-1a, to turn a root path into a fixed-width file-name part.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
