//! The new mount API (Linux 5.2; `mount_setattr` 5.12): a detached mount made from a path
//! or an fd, changed while it is detached, then attached to a target named by an fd. No
//! path is looked up twice and no `/proc/self/fd/N` magic link is walked, which is most of
//! what a classic `mount(2)` on a resolved handle costs.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

/// `struct mount_attr` (`MOUNT_ATTR_SIZE_VER0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountAttr {
    /// `MOUNT_ATTR_*` bits to set.
    pub set: u64,
    /// `MOUNT_ATTR_*` bits to clear (`MOUNT_ATTR__ATIME` to change the atime mode).
    pub clr: u64,
    /// `MS_PRIVATE`, `MS_SLAVE`, `MS_SHARED`, `MS_UNBINDABLE`, or 0 to leave it.
    pub propagation: u64,
}

fn fd_result(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a non-negative return of these calls is a fresh fd owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

fn unit_result(ret: libc::c_long) -> Result<(), Errno> {
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `open_tree(OPEN_TREE_CLONE)` of `path` (absolute, or relative to the cwd): a detached
/// copy of the mount there, with its submounts when `recursive`.
pub fn clone_path(path: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is NUL-terminated and outlives the call; the flags ask for a new fd.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })
}

/// `open_tree(OPEN_TREE_CLONE | AT_EMPTY_PATH)` of what `fd` refers to: an `O_PATH` handle
/// or another detached mount (cloning a detached mount needs Linux 6.15).
pub fn clone_fd(fd: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd, Errno> {
    let mut flags = (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint;
    flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is an empty NUL-terminated string and `fd` is a valid fd for the
    // duration of the call.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], attr)`.
pub fn setattr(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> Result<(), Errno> {
    #[repr(C)]
    struct Raw {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let raw = Raw {
        attr_set: attr.set,
        attr_clr: attr.clr,
        propagation: attr.propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `raw` is laid out as the kernel's `struct mount_attr` (version 0, 32 bytes)
    // whose size is passed alongside; it and the empty path outlive the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &raw as *const Raw,
            std::mem::size_of::<Raw>(),
        )
    })
}

/// `move_mount(from, "", to, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)`:
/// attach the detached mount `from` on what the handle `to` refers to.
pub fn attach(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<(), Errno> {
    let flags = (libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH) as libc::c_uint;
    // SAFETY: both fds are valid for the duration of the call and both paths are empty
    // NUL-terminated strings.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    })
}

/// A detached mount of a new filesystem: `fsopen(fstype)`, one `fsconfig` per
/// `(key, value)`, `FSCONFIG_CMD_CREATE`, then `fsmount` with `MOUNT_ATTR_*` bits.
pub fn new_fs(
    fstype: &CStr,
    options: &[(&CStr, &CStr)],
    attr_flags: u64,
) -> Result<OwnedFd, Errno> {
    // SAFETY: `fstype` is NUL-terminated and outlives the call.
    let ctx = fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            libc::FSOPEN_CLOEXEC as libc::c_uint,
        )
    })?;
    for (key, value) in options {
        // SAFETY: `ctx` is the fs context fd from fsopen; key and value are NUL-terminated
        // strings that outlive the call; aux is 0 as FSCONFIG_SET_STRING requires.
        unit_result(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                libc::FSCONFIG_SET_STRING as libc::c_uint,
                key.as_ptr(),
                value.as_ptr(),
                0 as libc::c_int,
            )
        })?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value (NULL) and aux 0.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE as libc::c_uint,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_int,
        )
    })?;
    // SAFETY: `ctx` holds a created superblock; the call returns a new mount fd.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC as libc::c_uint,
            attr_flags as libc::c_uint,
        )
    })
}
