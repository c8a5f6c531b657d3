//! Spawning the container: the parent side (`spawn`), the child's init steps (`init`) and
//! the channel between them (`sync`).

use std::os::fd::OwnedFd;

pub mod error;
pub mod init;
pub mod sealed;
pub mod spawn;
pub mod sync;

/// The fds init inherits: the start fifo, and the console socket when it has a terminal.
pub struct InitFds {
    /// The exec fifo init waits on (none for `exec`, which runs at once).
    pub start: Option<OwnedFd>,
    pub console: Option<OwnedFd>,
}

pub use error::Error;
