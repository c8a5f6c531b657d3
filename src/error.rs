//! The runtime's error type. Messages that callers match on (containerd, podman, CRI-O)
//! keep runc's exact wording.

use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container does not exist: {0}")]
    NotExist(String),
    #[error("container with given ID already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid container ID format: {0:?}")]
    InvalidId(String),
    #[error("container not running: {0}")]
    NotRunning(String),
    #[error("{0}")]
    State(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {syscall} {path}: {errno}")]
    Sys {
        what: String,
        syscall: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error("container init failed at step {step}: {msg}")]
    Init { step: String, msg: String },
    #[error(transparent)]
    Write(#[from] crate::atomic_file::WriteError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn sys(
        what: impl Into<String>,
        syscall: &'static str,
        path: impl Into<PathBuf>,
        errno: Errno,
    ) -> Self {
        Error::Sys {
            what: what.into(),
            syscall,
            path: path.into(),
            errno,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
