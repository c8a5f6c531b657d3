//! The empty read-only tmpfs that masks directories (`maskedPaths`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::{fd_path, mount_err};
use crate::linux::error::{Error, Result};
use crate::linux::sys::mountapi;

const FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);
const DATA: &str = "size=0,mode=555";

/// One `size=0,mode=555` tmpfs, read-only, nosuid, nodev and noexec, made on first use
/// and then bound over each masked directory.
#[derive(Default)]
pub(super) struct EmptyDir {
    /// A mount of it: detached until the first directory is masked, then the mount on it.
    fs: Option<OwnedFd>,
    /// Whether `fs` is attached (a detached mount can be cloned only since Linux 6.15).
    attached: bool,
    /// The new mount API is missing: each directory gets its own classic tmpfs mount.
    classic: bool,
}

impl EmptyDir {
    pub(super) fn mount_on(&mut self, target: BorrowedFd<'_>, path: &Path) -> Result<()> {
        self.classic |= super::attach::classic_forced();
        if !self.classic && self.fs.is_none() {
            let attrs = libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC;
            match mountapi::new_fs(c"tmpfs", &[(c"size", c"0"), (c"mode", c"555")], attrs) {
                Ok(fd) => self.fs = Some(fd),
                Err(Errno::ENOSYS | Errno::EPERM) => self.classic = true,
                Err(e) => return Err(Error::sys("masking directory", "fsmount", path, e)),
            }
        }
        let Some(fs) = self.fs.take() else {
            return mount(
                Some("tmpfs"),
                &fd_path(target),
                Some("tmpfs"),
                FLAGS,
                Some(DATA),
            )
            .map_err(mount_err("masking directory".into(), path));
        };
        let attach = |m: BorrowedFd<'_>| {
            mountapi::attach(m, target)
                .map_err(|e| Error::sys("masking directory", "move_mount", path, e))
        };
        match mountapi::clone_fd(fs.as_fd(), false) {
            Ok(copy) => {
                self.fs = Some(fs);
                attach(copy.as_fd())
            }
            Err(Errno::EINVAL) if !self.attached => {
                // An older kernel cannot clone a detached mount: attach this one, and
                // clone the attached mount for the next directory.
                attach(fs.as_fd())?;
                self.fs = Some(fs);
                self.attached = true;
                Ok(())
            }
            Err(e) => Err(Error::sys("masking directory", "open_tree", path, e)),
        }
    }
}
