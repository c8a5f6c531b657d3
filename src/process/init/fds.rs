//! Closing the fds init must not keep and marking the rest close-on-exec, before any
//! seccomp filter is loaded: close_range(2) where the kernel allows it, else a walk of
//! `/proc/self/fd` (an older kernel, or an outer runtime's profile that blocks the call).

use nix::errno::Errno;

use crate::linux::sys::proc::{close_range, close_range_from, set_cloexec};
use crate::process::error::{Error, Result};

/// Close every fd from `first` up, except those in `keep`.
pub(super) fn close_all_but(first: u32, keep: &[i32]) -> Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|k| *k as u32).collect();
    keep.sort_unstable();
    let Err(e) = close_ranges(first, &keep) else {
        return Ok(());
    };
    let open = open_fds(first).map_err(|w| walk_failed("closing inherited fds", e, w))?;
    for fd in open.into_iter().filter(|fd| !keep.contains(&(*fd as u32))) {
        // EBADF: the directory handle of the walk itself, closed already.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Mark every fd from `first` up close-on-exec.
pub(super) fn cloexec_from(first: u32) -> Result<()> {
    let Err(e) = close_range_from(first, true) else {
        return Ok(());
    };
    let open = open_fds(first).map_err(|w| walk_failed("marking fds close-on-exec", e, w))?;
    for fd in open {
        match set_cloexec(fd) {
            Ok(()) | Err(Errno::EBADF) => {}
            Err(err) => {
                return Err(Error::sys(
                    "marking fds close-on-exec",
                    "fcntl",
                    format!("/proc/self/fd/{fd}"),
                    err,
                ))
            }
        }
    }
    Ok(())
}

fn close_ranges(first: u32, keep: &[u32]) -> std::result::Result<(), Errno> {
    let mut from = first;
    for &k in keep {
        if k > from {
            close_range(from, k - 1)?;
        }
        from = from.max(k + 1);
    }
    close_range(from, u32::MAX)
}

/// The open fds from `first` up. The directory's own fd is among them and is closed
/// again when this returns.
fn open_fds(first: u32) -> std::io::Result<Vec<i32>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let name = entry?.file_name();
        if let Some(fd) = name.to_str().and_then(|n| n.parse::<i32>().ok()) {
            if fd >= first as i32 {
                fds.push(fd);
            }
        }
    }
    Ok(fds)
}

fn walk_failed(what: &'static str, e: Errno, walk: std::io::Error) -> Error {
    Error::CloseFds {
        what,
        errno: e,
        walk,
    }
}
