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
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
