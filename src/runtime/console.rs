//! Where a container's terminal goes: to the caller's console socket, or, for a process
//! gpurun waits on in the foreground, back to gpurun itself over a socket pair.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};

/// The console fd init gets, and (in the foreground) the peer gpurun receives the pty
/// master on.
pub(super) type ConsoleFds = (Option<OwnedFd>, Option<OwnedFd>);

/// runc's rules: a detached container with a terminal needs a console socket to send
/// the pty to; a console socket without a terminal is a mistake. A foreground `run`
/// receives the pty itself over a socket pair.
pub(super) fn console_fds(
    terminal: bool,
    console_socket: Option<&Path>,
    foreground: bool,
) -> Result<ConsoleFds> {
    use crate::linux::console;
    match (terminal, console_socket) {
        (false, None) => Ok((None, None)),
        (false, Some(_)) => Err(Error::Config(
            "--console-socket given but process.terminal is false: cannot use a console socket without a terminal".into(),
        )),
        (true, Some(path)) => {
            let fd = console::connect_socket(path)?;
            Ok((Some(fd), None))
        }
        (true, None) if foreground => {
            let (a, b) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| Error::sys("creating the console socket pair", "socketpair", "", e))?;
            Ok((Some(a), Some(b)))
        }
        (true, None) => Err(Error::Config(
            "process.terminal is true but no --console-socket was given: cannot allocate a tty for a detached container".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_console_socket_keeps_the_console_error() {
        let path = Path::new("/nonexistent/gpurun-console.sock");
        let e = console_fds(true, Some(path), false).expect_err("no such socket");
        let want = crate::linux::console::connect_socket(path)
            .expect_err("no such socket")
            .to_string();
        assert!(matches!(e, Error::Console(_)), "{e:?}");
        assert_eq!(e.to_string(), want);
        assert!(want.contains("/nonexistent/gpurun-console.sock"), "{want}");
    }
}
