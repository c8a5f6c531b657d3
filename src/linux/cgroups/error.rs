//! The one error type of the cgroup library: every variant names what was being done, the
//! path, and the errno or the reason.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::linux::sys::bpf::BpfError;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },

    #[error("creating cgroup directory {path}: {source}")]
    Mkdir { path: PathBuf, source: io::Error },

    #[error("removing cgroup directory {path}: {source}")]
    Rmdir { path: PathBuf, source: io::Error },

    #[error("opening cgroup directory {path}: {source}")]
    Open { path: PathBuf, source: io::Error },

    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },

    #[error("cgroup controller {controller} is not available for {path}")]
    MissingController { controller: String, path: PathBuf },

    #[error("invalid linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("invalid linux.resources: {0}")]
    InvalidResources(String),

    #[error("invalid linux.resources.devices rule {rule}: {reason}")]
    InvalidDeviceRule { rule: String, reason: String },

    #[error("cgroup {path} is not empty: {count} process(es) already in it")]
    NotEmpty { path: PathBuf, count: usize },

    #[error("{what} at {path}: {source}")]
    Bpf {
        what: &'static str,
        path: PathBuf,
        source: BpfError,
    },

    #[error("sending {signal} to pid {pid} of cgroup {path}: {errno}")]
    Signal {
        signal: &'static str,
        pid: i32,
        path: PathBuf,
        errno: Errno,
    },

    #[error("{what} at {path}: still not done after {tries} checks")]
    Timeout {
        what: &'static str,
        path: PathBuf,
        tries: u32,
    },

    #[error("systemd cgroup driver: {0}")]
    Systemd(String),

    #[error("systemd cgroup driver: {what}: {source}")]
    SystemdCall {
        what: String,
        source: crate::linux::dbus::DbusError,
    },

    #[error("cgroup {what}: {reason}")]
    Unsupported { what: &'static str, reason: String },

    /// The cgroup record of a container's state file cannot be read: gpurun will not act
    /// on processes it cannot place.
    #[error(
        "the cgroup record in state file {file} cannot be decoded ({reason}); `delete --force` \
         removes the container and its cgroup"
    )]
    Undecodable { file: String, reason: String },
}
