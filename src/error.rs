//! The runtime's error type. Messages that callers match on (containerd, podman, CRI-O)
//! keep runc's exact wording.
//!
//! Each layer below the runtime has its own error (`spec::Error`, `plan::Error`,
//! `process::Error`, `linux::Error`, `hooks::HookError`, ...) and never names this one;
//! this type wraps them with `#[from]`, unchanged, so a message reads the same whichever
//! layer reports it and a caller can still match the variant underneath.

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
    #[error("invalid container ID {0:?}: gpurun keeps host-wide GPU state under that name")]
    ReservedId(String),
    #[error("container not running: {0}")]
    NotRunning(String),
    #[error("{0}")]
    State(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A command-line argument gpurun cannot act on (a bad signal, an output path that
    /// names no file, flags that contradict each other).
    #[error("{0}")]
    Usage(String),
    #[error("container init failed at step {step}: {msg}")]
    Init { step: String, msg: String },
    #[error(transparent)]
    Cgroup(#[from] crate::linux::cgroups::CgroupError),
    #[error(transparent)]
    Spec(#[from] crate::spec::Error),
    #[error(transparent)]
    Plan(#[from] crate::plan::Error),
    #[error("corrupt state file {}: {source}", path.display())]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Linux(#[from] crate::linux::Error),
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    #[error(transparent)]
    Write(#[from] crate::atomic_file::WriteError),
    #[error(transparent)]
    Console(#[from] crate::linux::console::ConsoleError),
    #[error(transparent)]
    Seccomp(#[from] crate::linux::seccomp::SeccompError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A failed file operation: the linux layer's error, so it reads and matches the same
    /// whichever layer reports it.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Linux(crate::linux::Error::io(what, path, source))
    }

    /// Whether this is a file operation that found nothing at its path.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Linux(crate::linux::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// A JSON encoding or decoding step that failed; `what` names the step and object.
    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Error::Json { what, source }
    }

    pub fn sys(
        what: impl Into<String>,
        syscall: &'static str,
        path: impl Into<PathBuf>,
        errno: Errno,
    ) -> Self {
        Error::Linux(crate::linux::Error::sys(what, syscall, path, errno))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_error_keeps_its_message_when_wrapped() {
        let inner = crate::linux::Error::sys("mounting proc", "mount", "/proc", Errno::EPERM);
        let want = inner.to_string();
        let outer = Error::from(inner);
        assert!(matches!(
            outer,
            Error::Linux(crate::linux::Error::Sys { .. })
        ));
        assert_eq!(outer.to_string(), want);
        let json = serde_json::from_str::<u8>("x").map_err(Error::json("decoding a message"));
        let e = json.expect_err("not JSON");
        assert!(e.to_string().starts_with("decoding a message: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_gpu_error_is_wrapped_typed_with_its_own_message() {
        let inner = crate::gpu::GpuError::Lease("the lease table is locked".into());
        let want = inner.to_string();
        let outer = Error::from(inner);
        assert!(matches!(outer, Error::Gpu(crate::gpu::GpuError::Lease(_))));
        assert_eq!(outer.to_string(), want);
    }
}
