//! Bind mounts through the new mount API: the source is cloned into a detached mount
//! (`open_tree`), attached on the resolved target handle (`move_mount`), and changed
//! through the fd that now names the attached mount (`mount_setattr`). The classic way,
//! `mount(2)` on `/proc/self/fd/N`, walks procfs magic links for the target on every call
//! and needs the target resolved again for each remount and propagation change; this
//! walks nothing but the source path. The result is the same mount with the same flags:
//! a remount's flag change is reproduced exactly (see [`remount_attr`]), and everything is
//! applied to the attached mount in the classic order. Kernels without the calls
//! (`ENOSYS`), and seccomp profiles that refuse them (`EPERM`, as a container engine's
//! default profile may when gpurun runs nested), get the classic path.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::locked_flags;
use crate::linux::error::{Error, Result};
use crate::linux::sys::mountapi::{self, MountAttr};

/// `MS_NOSYMFOLLOW` (Linux 5.10), not in nix's MsFlags.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// A `failpoints` build takes the classic path everywhere when
/// `GPURUN_FAILPOINT=classic-mounts`, so the fallback for kernels without the new mount
/// API stays tested on kernels that have it.
pub(super) fn classic_forced() -> bool {
    #[cfg(feature = "failpoints")]
    if std::env::var_os("GPURUN_FAILPOINT").is_some_and(|v| v == "classic-mounts") {
        return true;
    }
    false
}

/// The flags a bind remount sets or clears, with their `MOUNT_ATTR_*` bits.
const PER_MOUNT: [(MsFlags, u64); 5] = [
    (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
    (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
    (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
    (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
    (MS_NOSYMFOLLOW, libc::MOUNT_ATTR_NOSYMFOLLOW),
];

/// The change `mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL)` makes to a
/// mount, as `mount_setattr` bits: read-only, nosuid, nodev, noexec and nosymfollow end up
/// exactly as `flags` says (set or cleared); the atime mode changes only when `flags`
/// names one (`noatime`, `nodiratime`, `relatime`, `strictatime`), else it is kept.
pub(super) fn remount_attr(flags: MsFlags) -> MountAttr {
    let mut attr = MountAttr::default();
    for (ms, bit) in PER_MOUNT {
        if flags.contains(ms) {
            attr.set |= bit;
        } else {
            attr.clr |= bit;
        }
    }
    let atime = MsFlags::MS_NOATIME
        | MsFlags::MS_NODIRATIME
        | MsFlags::MS_RELATIME
        | MsFlags::MS_STRICTATIME;
    if flags.intersects(atime) {
        // The kernel starts from relatime; noatime replaces it; strictatime clears both.
        attr.clr |= libc::MOUNT_ATTR__ATIME | libc::MOUNT_ATTR_NODIRATIME;
        if flags.contains(MsFlags::MS_STRICTATIME) {
            attr.set |= libc::MOUNT_ATTR_STRICTATIME;
        } else if flags.contains(MsFlags::MS_NOATIME) {
            attr.set |= libc::MOUNT_ATTR_NOATIME;
        } else {
            attr.set |= libc::MOUNT_ATTR_RELATIME;
        }
        if flags.contains(MsFlags::MS_NODIRATIME) {
            attr.set |= libc::MOUNT_ATTR_NODIRATIME;
            attr.clr &= !libc::MOUNT_ATTR_NODIRATIME;
        }
    }
    attr
}

/// One `mount_setattr` on the attached mount `top`. A remount's `EPERM` (flags the
/// mount was given outside this user namespace are locked) is retried keeping every flag
/// the mount has now, as the classic remount does.
fn setattr(
    top: BorrowedFd<'_>,
    recursive: bool,
    remount: Option<MsFlags>,
    attr: MountAttr,
) -> std::result::Result<(), Errno> {
    match mountapi::setattr(top, recursive, &attr) {
        Err(Errno::EPERM) if remount.is_some() => {
            let locked = locked_flags(top).map_err(|_| Errno::EPERM)?;
            let mut again = remount_attr(remount.unwrap_or(MsFlags::empty()) | locked);
            again.propagation = attr.propagation;
            mountapi::setattr(top, recursive, &again)
        }
        r => r,
    }
}

/// What follows a bind: the remount with `extra` flags (the top mount only), each
/// propagation change in order, then the recursive attributes, all on the attached mount
/// `top`. `single` says the mount has no submounts (a file, or a non-recursive bind), so
/// the remount and a recursive propagation change can be one call.
pub(super) struct After<'a> {
    pub extra: MsFlags,
    pub propagation: &'a [MsFlags],
    pub rec_attr_set: u64,
    pub rec_attr_clr: u64,
    pub single: bool,
}

impl After<'_> {
    fn nothing(&self) -> bool {
        self.extra.is_empty()
            && self.propagation.is_empty()
            && self.rec_attr_set == 0
            && self.rec_attr_clr == 0
    }
}

fn propagation_attr(p: MsFlags) -> (bool, MountAttr) {
    let recursive = p.contains(MsFlags::MS_REC);
    let kind = p - MsFlags::MS_REC;
    (
        recursive,
        MountAttr {
            propagation: kind.bits(),
            ..MountAttr::default()
        },
    )
}

pub(super) fn apply(top: BorrowedFd<'_>, a: &After<'_>) -> std::result::Result<(), Errno> {
    if a.nothing() {
        return Ok(());
    }
    let mut props = a.propagation.iter().copied();
    if !a.extra.is_empty() {
        let mut attr = remount_attr(a.extra);
        let mut recursive = false;
        // One call for both when recursion makes no difference.
        if let Some(p) = a.propagation.first().copied() {
            let (rec, pa) = propagation_attr(p);
            if a.single || !rec {
                attr.propagation = pa.propagation;
                recursive = rec && a.single;
                props.next();
            }
        }
        setattr(top, recursive, Some(a.extra), attr)?;
    }
    for p in props {
        let (recursive, attr) = propagation_attr(p);
        setattr(top, recursive, None, attr)?;
    }
    if a.rec_attr_set != 0 || a.rec_attr_clr != 0 {
        let attr = MountAttr {
            set: a.rec_attr_set,
            clr: a.rec_attr_clr,
            propagation: 0,
        };
        setattr(top, true, None, attr)?;
    }
    Ok(())
}

/// Binds the host path `source` on the handle `target`; returns the attached mount, or
/// `None` when this kernel lacks the new mount API.
pub(super) fn bind_path(
    source: &Path,
    target: BorrowedFd<'_>,
    recursive: bool,
    what: &Path,
) -> Result<Option<OwnedFd>> {
    if classic_forced() {
        return Ok(None);
    }
    let tree = match mountapi::clone_path(source, recursive) {
        Ok(t) => t,
        Err(Errno::ENOSYS | Errno::EPERM) => return Ok(None),
        Err(e) => {
            return Err(Error::sys(
                format!("bind-mounting {}", source.display()),
                "open_tree",
                what,
                e,
            ))
        }
    };
    mountapi::attach(tree.as_fd(), target).map_err(|e| {
        Error::sys(
            format!("bind-mounting {}", source.display()),
            "move_mount",
            what,
            e,
        )
    })?;
    Ok(Some(tree))
}

/// Binds what the handle `source` refers to on `target` (same contract as [`bind_path`]).
pub(super) fn bind_fd(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    recursive: bool,
    what: &str,
    dest: &Path,
) -> Result<Option<OwnedFd>> {
    if classic_forced() {
        return Ok(None);
    }
    let tree = match mountapi::clone_fd(source, recursive) {
        Ok(t) => t,
        Err(Errno::ENOSYS | Errno::EPERM) => return Ok(None),
        Err(e) => return Err(Error::sys(what, "open_tree", dest, e)),
    };
    mountapi::attach(tree.as_fd(), target).map_err(|e| Error::sys(what, "move_mount", dest, e))?;
    Ok(Some(tree))
}

/// Where `mount_setattr` is missing (Linux 5.2 to 5.11) or refused even keeping the
/// locked flags, the changes are made the classic way on the attached mount, which
/// reports its own error if that fails too.
pub(super) fn apply_or_classic(top: BorrowedFd<'_>, a: &After<'_>, dest: &Path) -> Result<()> {
    if classic_forced() {
        return super::classic_after(top, a, dest);
    }
    match apply(top, a) {
        Ok(()) => Ok(()),
        Err(Errno::ENOSYS | Errno::EPERM) => super::classic_after(top, a, dest),
        Err(e) => Err(Error::sys(
            format!("setting the flags of the mount at {}", dest.display()),
            "mount_setattr",
            dest,
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remount_flags_become_exact_attributes() {
        let a = remount_attr(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(
            a.set,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV
        );
        assert_eq!(
            a.clr,
            libc::MOUNT_ATTR_NOEXEC | libc::MOUNT_ATTR_NOSYMFOLLOW,
            "what a remount leaves out is cleared; the atime mode is kept"
        );
        let a = remount_attr(MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME);
        assert_eq!(
            a.set & (libc::MOUNT_ATTR__ATIME | libc::MOUNT_ATTR_NODIRATIME),
            libc::MOUNT_ATTR_NOATIME | libc::MOUNT_ATTR_NODIRATIME
        );
        assert_eq!(
            a.clr & libc::MOUNT_ATTR__ATIME,
            libc::MOUNT_ATTR__ATIME,
            "an atime change must clear the whole atime field"
        );
        let a = remount_attr(MsFlags::MS_STRICTATIME | MsFlags::MS_NOATIME);
        assert_eq!(
            a.set & libc::MOUNT_ATTR__ATIME,
            libc::MOUNT_ATTR_STRICTATIME
        );
        assert_eq!(
            a.clr & libc::MOUNT_ATTR_NODIRATIME,
            libc::MOUNT_ATTR_NODIRATIME
        );
    }

    #[test]
    fn propagation_changes_map_to_mount_setattr_fields() {
        let a = After {
            extra: MsFlags::MS_RDONLY,
            propagation: &[MsFlags::MS_PRIVATE | MsFlags::MS_REC],
            rec_attr_set: 0,
            rec_attr_clr: 0,
            single: true,
        };
        assert!(!a.nothing());
        let (rec, p) = propagation_attr(a.propagation[0]);
        assert!(rec);
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE.bits());
    }
}
