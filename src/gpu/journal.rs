//! The GPU journal: an append-only record, kept across reboots, of every GPU grant and
//! release and of what gpurun saw of how each job ended — its exit status where gpurun
//! waited for it, the signals `kill` sent and who asked, the OOM kills its cgroup counted,
//! a `delete --force` that killed it. `gpurun gpus --history` reads it.
//!
//! It is a record, never a gate: a journal that cannot be written (a full disk, a lock
//! held too long) costs a warning, never a container operation. Creating and deleting a
//! container write one record each and run nothing (no nvidia-smi).
//!
//! Files, framing, rotation and crash behaviour: [`store`]; who asked: [`caller`];
//! filtering and the summary of how a job ended: [`query`].

pub mod caller;
pub mod query;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Config, JournalConfig, Sharing};
pub use caller::Caller;
use store::Store;

/// Format version of a record; a record of another version is shown as unreadable.
pub const FORMAT: u32 = 1;
/// The CRI annotations that name a Kubernetes pod.
pub const POD_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const POD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// Annotations that say which image a container runs: CRI's, and OCI's pre-defined
/// image annotations by prefix.
const IMAGE_KEYS: &[&str] = &[
    "io.kubernetes.cri.image-name",
    "io.kubernetes.cri.image-ref",
];
const OCI_IMAGE_PREFIX: &str = "org.opencontainers.image.";
/// Bytes kept of one command line or annotation: enough to recognise it, bounded so a
/// record stays small.
pub const MAX_TEXT: usize = 1024;
/// Image annotations kept of one container (OCI defines fewer than twenty).
const MAX_IMAGE_KEYS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the GPU journal: {0}")]
    Other(String),
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// RFC 3339, UTC.
    pub time: String,
    pub container: String,
    /// The container's `--root`: the same id under two roots is two containers.
    pub root: PathBuf,
    /// UUIDs of the GPUs it held.
    pub gpus: Vec<String>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// `create` granted the GPUs (the lease is in init's name).
    Grant(Grant),
    /// `kill` sent a signal.
    Kill(Kill),
    /// `run` in the foreground reaped the container's init.
    Exit {
        /// What `run` exits with: the exit code, or 128 + the signal that killed init.
        status: i32,
    },
    /// `delete` took the container down and released its GPUs.
    Release(Release),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub bundle: PathBuf,
    pub sharing: Sharing,
    /// Where the request came from, by the name the lease records too (`env`, `cli`,
    /// `applied`, `cdi-annotations`, …).
    pub source: String,
    /// SHA-256 of the bundle's `config.json`, read again once the container exists (a
    /// file changed between the two reads would show here, not what was run).
    pub config_sha256: Option<String>,
    /// The image annotations the engine set (CRI image name, OCI image annotations).
    pub image: BTreeMap<String, String>,
    pub pod: Option<Pod>,
    /// The container's init on the host.
    pub pid: i32,
    pub caller: Caller,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    pub signal: String,
    /// `--all`: every process of the cgroup, not only init.
    pub all: bool,
    pub pod: Option<Pod>,
    pub caller: Caller,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// OOM kills its memory cgroup counted (`memory.events` or `memory.oom_control`
    /// `oom_kill`); `None` when it had no memory cgroup to ask.
    pub oom_kills: Option<u64>,
    /// `delete --force`.
    pub forced: bool,
    /// The status `delete` found (`stopped`, `running`, `paused`, `created`,
    /// `creating`): from running or paused, this delete killed it.
    pub found: String,
    pub pod: Option<Pod>,
    /// Who asked, for `delete --force`.
    pub caller: Option<Caller>,
}

/// A Kubernetes pod, from the CRI annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// What the history reader found.
#[derive(Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
    /// Lines that did not check (torn) or were of another format.
    pub skipped: usize,
}

impl Pod {
    pub fn from_annotations(a: &std::collections::HashMap<String, String>) -> Option<Pod> {
        let pod = Pod {
            namespace: a.get(POD_NAMESPACE).map(|v| cut(v, MAX_TEXT)),
            name: a.get(POD_NAME).map(|v| cut(v, MAX_TEXT)),
        };
        (pod.namespace.is_some() || pod.name.is_some()).then_some(pod)
    }
}

/// The annotations that name the container's image, each value cut at [`MAX_TEXT`] bytes
/// and at most [`MAX_IMAGE_KEYS`] of them, so that no spec can make one record fill the
/// journal.
pub fn image_annotations(
    a: &std::collections::HashMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = a
        .iter()
        .filter(|(k, _)| IMAGE_KEYS.contains(&k.as_str()) || k.starts_with(OCI_IMAGE_PREFIX))
        .map(|(k, v)| (cut(k, MAX_TEXT), cut(v, MAX_TEXT)))
        .collect();
    while out.len() > MAX_IMAGE_KEYS {
        out.pop_last();
    }
    out
}

/// `s` cut at `max` bytes (on a character boundary), with `…` where it was cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `sha256:<hex>` of a file, if it can be read.
pub fn file_digest(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(path).ok()?;
    let hex: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("sha256:{hex}"))
}

/// The node's journal.
#[derive(Clone, Debug)]
pub struct Journal {
    store: Store,
    enabled: bool,
}

impl Journal {
    pub fn new(cfg: &JournalConfig) -> Journal {
        Journal {
            store: Store {
                dir: cfg.dir.clone(),
                max_size: cfg.max_size,
                keep: cfg.keep,
            },
            enabled: cfg.enabled,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn append(&self, rec: &Record) -> Result<(), JournalError> {
        if !self.enabled {
            return Ok(());
        }
        let json = serde_json::to_vec(rec).map_err(|e| JournalError::Other(e.to_string()))?;
        self.store.append(&json)
    }

    /// Every readable record, oldest first.
    pub fn read(&self) -> Result<History, JournalError> {
        let lines = self.store.read()?;
        let mut h = History {
            records: Vec::with_capacity(lines.records.len()),
            skipped: lines.skipped,
        };
        for json in lines.records {
            match serde_json::from_slice::<Record>(&json) {
                Ok(r) if r.format == FORMAT => h.records.push(r),
                _ => h.skipped += 1,
            }
        }
        Ok(h)
    }
}

impl Record {
    /// A record stamped now.
    pub fn now(container: &str, root: &Path, gpus: &[String], event: Event) -> Record {
        Record {
            format: FORMAT,
            time: crate::log::rfc3339(std::time::SystemTime::now()),
            container: container.to_string(),
            root: root.to_path_buf(),
            gpus: gpus.to_vec(),
            event,
        }
    }
}

/// Appends `rec` to the journal `at` (the one the container's grant was recorded in), else
/// to the node configuration's; a failure (the configuration unreadable, the disk full, the
/// lock held too long) is a warning to the caller and nothing more.
pub fn record(at: Option<&JournalConfig>, rec: &Record) {
    let result = match at {
        Some(j) => Journal::new(j).append(rec),
        None => Config::load()
            .map_err(|e| JournalError::Other(e.to_string()))
            .and_then(|cfg| Journal::new(&cfg.journal).append(rec)),
    };
    if let Err(e) = result {
        crate::log::warn_caller(&format!(
            "not recorded in the GPU journal ({} of container {}): {e}",
            event_name(&rec.event),
            rec.container
        ));
    }
}

pub fn event_name(e: &Event) -> &'static str {
    match e {
        Event::Grant(_) => "grant",
        Event::Kill(_) => "kill",
        Event::Exit { .. } => "exit",
        Event::Release(_) => "release",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_image_annotations_are_kept_and_each_is_bounded() {
        let mut a = std::collections::HashMap::new();
        a.insert("io.kubernetes.cri.image-name".to_string(), "x".repeat(5000));
        a.insert(
            "org.opencontainers.image.version".to_string(),
            "3".to_string(),
        );
        a.insert("com.example.secret".to_string(), "s".to_string());
        for n in 0..100 {
            a.insert(format!("{OCI_IMAGE_PREFIX}x{n}"), "v".to_string());
        }
        let kept = image_annotations(&a);
        assert_eq!(kept.len(), MAX_IMAGE_KEYS);
        assert!(!kept.contains_key("com.example.secret"));
        let name = &kept["io.kubernetes.cri.image-name"];
        assert!(
            name.len() <= MAX_TEXT + 3 && name.ends_with('…'),
            "{}",
            name.len()
        );
        assert_eq!(cut("héllo", 2), "h…");
    }
}
