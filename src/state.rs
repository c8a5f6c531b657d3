//! `<root>/<id>/`: state.json (written atomically), a lock per container, the status
//! derived from the real process, and `list`.
//!
//! The status is never trusted from the file alone: a container is `created`/`running` only
//! while its init pid is alive *and* has the start time recorded at create, so a reused pid
//! after the container died (or after a reboot) reads as `stopped`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, Durability};
use crate::error::{Error, Result};
use crate::linux::cgroups::{CgroupError, ContainerCgroup, StoredCgroup};

/// Format version of state.json; a file of another version is reported, never trusted.
pub const FORMAT: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What gpurun keeps about a container between calls. Everything a later call needs is
/// here, because later calls may come without the flags create had (`--systemd-cgroup`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub gpurun_state_format: u32,
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// `/proc/<pid>/stat` field 22 of init, to tell init from a reused pid.
    pub init_start_time: u64,
    /// Recorded status: `creating` until create finishes; otherwise derived at read time.
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub systemd_cgroup: bool,
    #[serde(default)]
    pub rootless: bool,
    /// The container has its own pid namespace: when init dies every process dies with it.
    #[serde(default)]
    pub private_pid_ns: bool,
    /// The cgroup's record; never written as `null` (absent means none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<StoredCgroup>,
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// The host-wide GPU state dir holding this container's lease, if it has one.
    #[serde(default)]
    pub gpu_state_dir: Option<PathBuf>,
    /// The GPU journal its grant was recorded in: its kills and release go to the same one,
    /// whatever configuration a later verb runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_journal: Option<crate::gpu::config::JournalConfig>,
    /// The caller's NOTIFY_SOCKET at create: where `start` forwards READY=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_socket: Option<PathBuf>,
    /// The spec the container was created from (after GPU edits): `exec` builds on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

/// The runc-compatible view printed by `state` and `list --format json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// The one id rule of every verb ([`crate::id`]).
pub fn validate_id(id: &str) -> Result<()> {
    match crate::id::check(id) {
        Ok(()) => Ok(()),
        Err(crate::id::Refusal::Format) => Err(Error::InvalidId(id.to_string())),
        Err(crate::id::Refusal::Reserved) => Err(Error::ReservedId(id.to_string())),
    }
}

/// The directory holding every container's state for one `--root`.
#[derive(Clone, Debug)]
pub struct Root {
    pub path: PathBuf,
}

/// A container's state directory, locked for the lifetime of this value.
pub struct Container {
    pub dir: PathBuf,
    _lock: Flock<File>,
}

impl Root {
    pub fn new(path: &Path) -> Result<Self> {
        if path == Path::new("/") {
            return Err(Error::Config("--root must not be /".into()));
        }
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("resolving --root against", ".", e))?
                .join(path)
        };
        Ok(Root { path })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Make the directory for a new container. Exactly one of several concurrent creates
    /// of one id wins the `mkdir`; the others get runc's "already exists" error.
    pub fn create(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        fs::create_dir_all(&self.path)
            .map_err(|e| Error::io("creating state root", &self.path, e))?;
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode_0711().create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(Error::io("creating state directory", &dir, e)),
        }
        lock_dir(&dir).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })
    }

    /// Lock an existing container's directory.
    pub fn open(&self, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(Error::NotExist(id.to_string()));
        }
        let c = match lock_dir(&dir) {
            Err(e) if e.is_not_found() => return Err(Error::NotExist(id.to_string())),
            other => other?,
        };
        // A delete that held the lock while this call waited for it may have removed the
        // directory (and a create made a new one): the lock must be on the directory the
        // path names now, or the container this call was asked about is gone.
        if !c.is_current() {
            return Err(Error::NotExist(id.to_string()));
        }
        Ok(c)
    }

    pub fn ids(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing state root", &self.path, e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

trait DirBuilderExt {
    fn mode_0711(&mut self) -> &mut Self;
}

impl DirBuilderExt for fs::DirBuilder {
    fn mode_0711(&mut self) -> &mut Self {
        std::os::unix::fs::DirBuilderExt::mode(self, 0o711)
    }
}

fn lock_dir(dir: &Path) -> Result<Container> {
    let f = File::open(dir).map_err(|e| Error::io("opening state directory", dir, e))?;
    let lock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::sys("locking state directory", "flock", dir, errno))?;
    Ok(Container {
        dir: dir.to_path_buf(),
        _lock: lock,
    })
}

impl Container {
    /// Whether the locked directory is still the one at `dir`.
    fn is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self._lock.metadata(), fs::metadata(&self.dir)) {
            (Ok(locked), Ok(now)) => locked.dev() == now.dev() && locked.ino() == now.ino(),
            _ => false,
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    pub fn load(&self) -> Result<State> {
        load_file(&self.state_path())
    }

    /// Writes state.json so a concurrent `state` or `list` reads the old or the new.
    pub fn save(&self, st: &State) -> Result<()> {
        let data = serde_json::to_vec(st).map_err(Error::json("encoding state.json"))?;
        atomic_file::write(
            "writing state",
            &self.state_path(),
            &data,
            0o666,
            Durability::Volatile,
        )?;
        Ok(())
    }

    /// Remove the directory; the lock goes with it.
    pub fn remove(self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing state directory", &self.dir, e)),
        }
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self._lock.as_fd()
    }
}

pub fn load_file(path: &Path) -> Result<State> {
    let data = fs::read(path).map_err(|e| Error::io("reading state", path, e))?;
    let mut st: State = serde_json::from_slice(&data).map_err(|source| Error::CorruptState {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(cg) = &mut st.cgroup {
        cg.set_source(path);
    }
    if st.gpurun_state_format != FORMAT {
        return Err(Error::State(format!(
            "state file {} has format {}, this gpurun reads format {FORMAT}",
            path.display(),
            st.gpurun_state_format
        )));
    }
    Ok(st)
}

/// The spec as `exec` reads it back from state.json. One that cannot be encoded fails
/// create: a container whose state lacks its spec could never be entered with `exec`.
pub fn encode_spec(spec: &impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(spec).map_err(Error::json("encoding the container's spec for state.json"))
}

/// The start time of a live process: none for a free pid or a zombie.
pub use crate::linux::procstat::live_start_time as process_start_time;

impl State {
    /// The container's cgroup, rebuilt from its record; an error where the record cannot
    /// be decoded, so no verb acts on the container's processes without it.
    pub fn open_cgroup(&self) -> Result<Option<ContainerCgroup>, CgroupError> {
        self.cgroup.as_ref().map(ContainerCgroup::open).transpose()
    }

    /// [`open_cgroup`](Self::open_cgroup) for a verb that must not act outside the
    /// container's cgroup: a state without a record is an error too.
    pub fn require_cgroup(&self) -> Result<ContainerCgroup> {
        self.open_cgroup()?
            .ok_or_else(|| Error::State(format!("container {} has no cgroup", self.id)))
    }

    /// The cgroup `delete` removes: the recorded one, or for a record that cannot be
    /// decoded the one the stored spec's `linux.cgroupsPath` resolves to (see
    /// [`ContainerCgroup::for_removal`]).
    pub fn cgroup_to_remove(&self) -> Option<ContainerCgroup> {
        let path = self
            .spec
            .as_ref()
            .and_then(|s| s.pointer("/linux/cgroupsPath"))
            .and_then(serde_json::Value::as_str);
        ContainerCgroup::for_removal(self.cgroup.as_ref(), path, &self.id, self.systemd_cgroup)
    }

    pub fn init_alive(&self) -> bool {
        self.pid > 0 && process_start_time(self.pid) == Some(self.init_start_time)
    }

    /// The live status. `frozen` says whether the container's cgroup is frozen.
    pub fn current_status(&self, dir: &Path, frozen: impl FnOnce() -> bool) -> Status {
        if self.status == Status::Creating {
            return Status::Creating;
        }
        if !self.init_alive() {
            return Status::Stopped;
        }
        if frozen() {
            return Status::Paused;
        }
        if dir.join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    pub fn public(&self, status: Status) -> PublicState {
        PublicState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status: status.as_str().to_string(),
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        for ok in ["a", "A-b_c+d.e", "123", "x.."] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "é"] {
            let err = validate_id(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid container ID format"), "{err}");
        }
    }

    #[test]
    fn a_spec_that_cannot_be_encoded_is_an_error_naming_it() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no JSON form"))
            }
        }
        let e = encode_spec(&Unencodable).expect_err("no JSON form");
        assert_eq!(
            e.to_string(),
            "encoding the container's spec for state.json: no JSON form"
        );
        let spec = oci_spec::runtime::Spec::default();
        let v = encode_spec(&spec).expect("a default spec encodes");
        assert_eq!(v["ociVersion"], serde_json::json!(spec.version()));
    }

    #[test]
    fn second_create_of_an_id_fails_and_leaves_the_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = Root::new(tmp.path()).expect("root");
        let c = root.create("one").expect("first create");
        std::fs::write(c.dir.join("marker"), "x").expect("marker");
        drop(c);
        let err = root.create("one").err().expect("second create must fail");
        assert!(err
            .to_string()
            .contains("container with given ID already exists"));
        assert!(tmp.path().join("one/marker").exists());
    }

    #[test]
    fn corrupt_and_foreign_state_files_are_reported_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("state.json");
        std::fs::write(&p, "{not json").expect("write");
        let err = load_file(&p).expect_err("corrupt");
        assert!(
            matches!(&err, Error::CorruptState { path, .. } if path == &p),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("corrupt state file") && err.contains("state.json"),
            "{err}"
        );
    }
}
