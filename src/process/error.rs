//! The error of the `process` layer: spawning init, its steps, and the channel between
//! them. Lower layers' errors pass through unchanged; the runtime's error wraps this one.

use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A step of init failed; init reported it over the channel.
    #[error("container init failed at step {step}: {msg}")]
    Init { step: String, msg: String },
    /// Init and the runtime disagree about where they are (a message out of turn, a
    /// channel closed early).
    #[error("{0}")]
    Protocol(String),
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Procfs {
        what: String,
        #[source]
        source: pathrs::error::Error,
    },
    #[error("{what}: {source}{hint}")]
    ProcWrite {
        what: String,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{what}: close_range: {errno}, and reading /proc/self/fd instead: {walk}")]
    CloseFds {
        what: &'static str,
        errno: Errno,
        walk: std::io::Error,
    },
    #[error("the seccomp profile blocks {call} ({errno}), which the container needs to start")]
    SeccompBlocks { call: &'static str, errno: Errno },
    #[error(
        "the seccomp profile blocks execve (killed by {signal}), which the container needs to start"
    )]
    SeccompKills { signal: Signal },
    #[error("exec: {arg0:?}: stat {arg0}: no such file or directory, or not an executable file")]
    NotExecutable { arg0: String },
    #[error("exec: {arg0:?}: executable file not found in $PATH")]
    NotInPath { arg0: String },
    #[error("process.cwd {} resolves outside the container root", .0.display())]
    CwdOutsideRoot(PathBuf),
    #[error(transparent)]
    Linux(#[from] crate::linux::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::linux::seccomp::SeccompError),
    #[error(transparent)]
    Console(#[from] crate::linux::console::ConsoleError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
}

/// A failed file operation or system call of this layer is the `linux` layer's kind of
/// error, with the same message.
impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Linux(crate::linux::Error::io(what, path, source))
    }

    pub fn sys(
        what: impl Into<String>,
        syscall: &'static str,
        path: impl Into<PathBuf>,
        errno: Errno,
    ) -> Self {
        Error::Linux(crate::linux::Error::sys(what, syscall, path, errno))
    }

    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Error::Json { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers (containerd, podman) match these words, as they do runc's.
    #[test]
    fn exec_lookup_failures_keep_runc_wording() {
        let e = Error::NotInPath {
            arg0: "nope".into(),
        };
        assert_eq!(
            e.to_string(),
            "exec: \"nope\": executable file not found in $PATH"
        );
        let e = Error::NotExecutable {
            arg0: "/bin/x".into(),
        };
        assert_eq!(
            e.to_string(),
            "exec: \"/bin/x\": stat /bin/x: no such file or directory, or not an executable file"
        );
        let e = Error::SeccompBlocks {
            call: "execve",
            errno: Errno::EPERM,
        };
        assert!(e
            .to_string()
            .starts_with("the seccomp profile blocks execve (EPERM"));
    }
}
