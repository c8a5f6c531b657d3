//! Mount propagation in the container's new mount namespace, in runc's order: the
//! requested propagation (`rootfsPropagation`, default `rslave`) on `/` of the new
//! namespace, so a volume bound from a shared host mount stays in the host's peer group
//! (Kubernetes' `Bidirectional`); only the mount holding the rootfs kept from sharing, so
//! the rootfs bind and everything gpurun mounts under it never reach the host; `shared`
//! and `unbindable` on the new root once `pivot_root` is done.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{open, openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use super::options::propagation_option;
use super::{fd_path, mount_err};
use crate::linux::error::{Error, Result};

/// `rootfsPropagation` as mount flags; `None` when unset.
pub(super) fn requested(propagation: Option<&str>) -> Result<Option<MsFlags>> {
    match propagation.unwrap_or("") {
        "" => Ok(None),
        p => propagation_option(p)
            .map(Some)
            .ok_or_else(|| Error::Config(format!("linux.rootfsPropagation {p:?}"))),
    }
}

/// What `/` of the new namespace gets before anything is mounted. Unbindable waits for
/// the new root: an unbindable `/` would refuse the rootfs bind.
fn for_namespace_root(requested: Option<MsFlags>) -> MsFlags {
    match requested {
        Some(f) if !f.contains(MsFlags::MS_UNBINDABLE) => f,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    }
}

/// Apply the requested propagation to `/` of the new namespace, then take the mount the
/// rootfs lives on out of any peer group: pivot_root refuses a shared parent, and the
/// rootfs bind made next would otherwise propagate to the host's copy of that mount.
pub(super) fn prepare(rootfs: &Path, requested: Option<MsFlags>) -> Result<()> {
    let root = for_namespace_root(requested);
    mount(None::<&str>, "/", None::<&str>, root, None::<&str>).map_err(mount_err(
        "setting root mount propagation".into(),
        Path::new("/"),
    ))?;
    // After a recursive slave or private change no mount is shared any more (the
    // default path): nothing to walk.
    if root.contains(MsFlags::MS_REC) && root.intersects(MsFlags::MS_SLAVE | MsFlags::MS_PRIVATE) {
        return Ok(());
    }
    // A slave keeps receiving the host's mounts, as the rest of `/` does.
    let parent = if root.contains(MsFlags::MS_SLAVE) {
        MsFlags::MS_SLAVE
    } else {
        MsFlags::MS_PRIVATE
    };
    unshare_rootfs_mount(rootfs, parent)
}

/// Walk up from the rootfs by fd (never by path, which a symlink could redirect) to the
/// first mount root, and set `flag` on that one mount only.
fn unshare_rootfs_mount(rootfs: &Path, flag: MsFlags) -> Result<()> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = open(rootfs, flags, Mode::empty())
        .map_err(|e| Error::sys("opening the rootfs", "open", rootfs, e))?;
    for _ in 0..4096 {
        match mount(
            None::<&str>,
            &fd_path(dir.as_fd()),
            None::<&str>,
            flag,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount root; its mount is further up.
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                return Err(Error::sys(
                    "making the rootfs' mount private",
                    "mount",
                    rootfs,
                    e,
                ))
            }
        }
        let up = openat(dir.as_fd(), "..", flags, Mode::empty())
            .map_err(|e| Error::sys("finding the rootfs' mount", "openat ..", rootfs, e))?;
        dir = up;
    }
    Err(Error::Refused(format!(
        "finding the mount that holds {}: no mount root above it",
        rootfs.display()
    )))
}

/// After pivot_root (or the move with `--no-pivot`): `shared` and `unbindable` apply to
/// the new root. It is a bind of a mount kept out of any peer group, so sharing it makes
/// a new group that reaches nothing outside the container.
pub(super) fn on_new_root(requested: Option<MsFlags>) -> Result<()> {
    if let Some(f) = requested {
        if f.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
            mount(None::<&str>, "/", None::<&str>, f, None::<&str>).map_err(mount_err(
                "setting rootfs propagation".into(),
                Path::new("/"),
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_root_gets_what_was_asked_except_unbindable() {
        let rec = |f: MsFlags| f | MsFlags::MS_REC;
        let cases = [
            (None, rec(MsFlags::MS_SLAVE)),
            (Some("rshared"), rec(MsFlags::MS_SHARED)),
            (Some("shared"), MsFlags::MS_SHARED),
            (Some("rprivate"), rec(MsFlags::MS_PRIVATE)),
            (Some("slave"), MsFlags::MS_SLAVE),
            (Some("runbindable"), rec(MsFlags::MS_SLAVE)),
            (Some("unbindable"), rec(MsFlags::MS_SLAVE)),
        ];
        for (asked, want) in cases {
            let got = for_namespace_root(requested(asked).expect("valid"));
            assert_eq!(got, want, "{asked:?}");
        }
        assert!(requested(Some("sideways")).is_err());
    }
}
