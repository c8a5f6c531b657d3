//! Waiting for OOM kills: v1 through `cgroup.event_control` and an eventfd on
//! `memory.oom_control`, v2 through inotify on `memory.events`. Either way the watch is a
//! file descriptor that becomes readable when the kernel reports an OOM, so `events` can
//! print it when it happens instead of at its next interval.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::error::CgroupError;
use super::root::Layout;
use super::{fs, Cgroup};

enum Source {
    /// The open `memory.oom_control` must stay open for the registration to live.
    V1 {
        efd: EventFd,
        _control: File,
    },
    V2 {
        inotify: Inotify,
    },
}

/// A registered OOM notification.
pub struct OomWatch {
    source: Source,
}

impl OomWatch {
    /// Readable when an OOM may have happened.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::V1 { efd, .. } => efd.as_fd(),
            Source::V2 { inotify } => inotify.as_fd(),
        }
    }

    /// Consumes what made the descriptor readable. Returns the number of OOM notifications
    /// for v1 (the eventfd's counter); for v2 `None`: compare `memory.events` counts.
    pub fn drain(&self) -> Option<u64> {
        match &self.source {
            Source::V1 { efd, .. } => efd.read().ok(),
            Source::V2 { inotify } => {
                while inotify.read_events().is_ok_and(|e| !e.is_empty()) {}
                None
            }
        }
    }
}

impl Cgroup {
    /// Registers for the cgroup's OOM notifications.
    pub fn watch_oom(&self) -> Result<OomWatch, CgroupError> {
        let errno = |what: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e: nix::errno::Errno| CgroupError::Open {
                path: path.join(what),
                source: std::io::Error::from(e),
            }
        };
        match (self.st.layout, self.st.v1.get("memory")) {
            (Layout::Unified, _) => {
                let dir = self
                    .st
                    .unified
                    .as_deref()
                    .ok_or_else(|| self.missing("memory"))?;
                let file = dir.join("memory.events");
                let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                    .map_err(errno("memory.events", dir))?;
                inotify
                    .add_watch(&file, AddWatchFlags::IN_MODIFY)
                    .map_err(errno("memory.events", dir))?;
                Ok(OomWatch {
                    source: Source::V2 { inotify },
                })
            }
            (_, Some(dir)) => {
                let path = dir.join("memory.oom_control");
                let control = File::open(&path).map_err(|source| CgroupError::Open {
                    path: path.clone(),
                    source,
                })?;
                let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(errno("eventfd", dir))?;
                let line = format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd());
                fs::write(dir, "cgroup.event_control", &line)?;
                Ok(OomWatch {
                    source: Source::V1 {
                        efd,
                        _control: control,
                    },
                })
            }
            (_, None) => Err(self.missing("memory")),
        }
    }
}
