//! The error of the `linux` layer. Each variant names the step, and the system call and
//! path where there is one; the runtime's error wraps it unchanged, so the messages are
//! the same whichever layer reports them.

use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec value the kernel mechanism cannot take.
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
    /// A system call on no path (a process attribute); `hint` says what usually causes it.
    #[error("{what}: {syscall}: {errno}{hint}")]
    Call {
        what: String,
        syscall: &'static str,
        errno: Errno,
        hint: &'static str,
    },
    #[error("{what}: prctl: {source}")]
    Caps {
        what: String,
        #[source]
        source: caps::errors::CapsError,
    },
    /// Something in the container's root that gpurun will not mount over or through: a
    /// guard against a known attack, not a failed call.
    #[error("{0}")]
    Refused(String),
    #[error("{} names no file in the container root", .0.display())]
    NoFileName(PathBuf),
    /// `linux.namespaces[].path` cannot be opened.
    #[error("invalid configuration: joining {kind} namespace: opening {}: {source}", path.display())]
    JoinNamespace {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bind mount's source cannot be looked at.
    #[error("invalid configuration: mounts: {}: bind source {}: {source}", dest.display(), src.display())]
    BindSource {
        dest: PathBuf,
        src: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_step_call_and_path() {
        let cases = [
            (
                Error::sys("mounting proc", "mount", "/proc", Errno::EPERM),
                "mounting proc: mount /proc: EPERM: Operation not permitted",
            ),
            (
                Error::Call {
                    what: "setting rlimit RLIMIT_NOFILE to soft 1 hard 2".into(),
                    syscall: "setrlimit",
                    errno: Errno::EPERM,
                    hint: " (why)",
                },
                "setting rlimit RLIMIT_NOFILE to soft 1 hard 2: setrlimit: EPERM: Operation not permitted (why)",
            ),
            (
                Error::NoFileName(PathBuf::from("/")),
                "/ names no file in the container root",
            ),
            (
                Error::Config("linux.devices: bad path x".into()),
                "invalid configuration: linux.devices: bad path x",
            ),
            (
                Error::JoinNamespace {
                    kind: "network",
                    path: PathBuf::from("/run/netns/x"),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                "invalid configuration: joining network namespace: opening /run/netns/x: No such file or directory (os error 2)",
            ),
            (
                Error::BindSource {
                    dest: PathBuf::from("/data"),
                    src: PathBuf::from("/srv/x"),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                "invalid configuration: mounts: /data: bind source /srv/x: No such file or directory (os error 2)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
