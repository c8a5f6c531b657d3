//! Process, mount and credential system calls that nix does not wrap.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::Pid;

fn cstr(p: &Path) -> Result<std::ffi::CString, Errno> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)
}

/// `clone(2)` without a new stack: fork semantics plus namespace flags. Returns `None`
/// in the child.
pub fn clone_fork(flags: u64) -> Result<Option<Pid>, Errno> {
    // SAFETY: with a NULL stack the child runs on a copy-on-write copy of the parent's
    // stack, exactly like fork(). gpurun is single-threaded until the container is cloned
    // (DESIGN rule 4), so no lock can be held by a thread that does not exist in the child.
    // No CLONE_VM, CLONE_SETTLS or tid pointers are passed, so the trailing arguments are
    // unused.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Exit the current process without running atexit handlers or flushing stdio buffers
/// inherited from the parent (a forked child must not write them a second time).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// `close_range(first, ~0, flags)`: close (or mark close-on-exec) every fd from `first`.
pub fn close_range_from(first: u32, cloexec: bool) -> Result<(), Errno> {
    let flags: libc::c_uint = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range only affects this process's fd table; callers own every fd at
    // or above `first` (nothing else in the process uses them after this point).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `ioctl(FIONREAD)`: the bytes waiting unread in a pipe or FIFO. The count belongs to the
/// pipe, so either end can ask.
pub fn pipe_unread(fd: BorrowedFd) -> Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`, alive and
    // writable for the whole call; `fd` is a valid descriptor borrowed for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `close_range(first, last, 0)`: close every fd in the range.
pub fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range only affects this process's fd table; callers pass ranges that
    // hold no fd anything else in the process still uses.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `fcntl(fd, F_SETFD, FD_CLOEXEC)` on an fd number read from `/proc/self/fd`.
pub fn set_cloexec(fd: std::os::fd::RawFd) -> Result<(), Errno> {
    // SAFETY: F_SETFD only changes the close-on-exec flag of `fd` in this process's fd
    // table; an fd that is not open fails with EBADF and nothing else happens.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// A detached bind mount of `path` (`open_tree(OPEN_TREE_CLONE)`).
pub fn open_tree_clone(path: &Path) -> Result<OwnedFd, Errno> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call; on
    // success the kernel returns a new fd that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `mount_setattr(2)` on the mount an fd (or path relative to it) refers to.
pub fn mount_setattr(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    at_flags: u32,
    attr_set: u64,
    attr_clr: u64,
) -> Result<(), Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` is a properly laid out `struct mount_attr` (MOUNT_ATTR_SIZE_VER0 =
    // 32 bytes) that outlives the call; `path` is NUL-terminated; dirfd is a valid fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            at_flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`. Returns only on failure.
pub fn execveat_fd(fd: BorrowedFd<'_>, argv: &[&CStr], envp: &[&CStr]) -> Errno {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    let empty = c"";
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to NUL-terminated
    // strings that stay alive (borrowed from the caller) until execveat returns, which
    // it only does on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            a.as_ptr(),
            e.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Errno::last()
}

pub fn setdomainname(name: &str) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Set the effective, permitted and inheritable capability sets in one `capset(2)`, so
/// that no ordering between the three can fail half way.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let data = [
        Data {
            effective: lo(effective),
            permitted: lo(permitted),
            inheritable: lo(inheritable),
        },
        Data {
            effective: hi(effective),
            permitted: hi(permitted),
            inheritable: hi(inheritable),
        },
    ];
    // SAFETY: version 3 takes a header and an array of two data structs, both laid out
    // as the kernel's `__user_cap_header_struct` / `__user_cap_data_struct`; both live
    // across the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes plain integers; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: a NULL siginfo is allowed and means "as kill(2)"; pidfd is a valid fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Whether the fd number `fd` is open in this process (an inherited fd such as one passed
/// with `--preserve-fds`). It asks about the number only and hands out no borrow: a
/// number can be closed and reused for another file at any time, so it is no handle.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor table's close-on-exec flag for the number and
    // touches no file and no memory; a number that is not open fails with EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, name)`: a new session keyring for the container,
/// so it does not share the caller's (and its secrets).
pub fn join_session_keyring(name: &CStr) -> Result<(), Errno> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call; the
    // call only changes this process's session keyring.
    let ret =
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if ret == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `execve(NULL, NULL, NULL)`: fails with EFAULT when execve is allowed. Used after a
/// seccomp filter is loaded to find out, before `create` returns, whether the filter
/// would stop the container's own execve.
pub fn probe_execve() -> Errno {
    // SAFETY: a NULL pathname makes the kernel fail the call with EFAULT before it
    // touches the process image; nothing is executed.
    unsafe {
        libc::syscall(
            libc::SYS_execve,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<*const libc::c_char>(),
            std::ptr::null::<*const libc::c_char>(),
        );
    }
    Errno::last()
}

/// `openat2(dirfd, path, how)`: with `RESOLVE_IN_ROOT` the kernel resolves `path` as if
/// `dirfd` were `/`: `..` and absolute symlinks cannot leave it.
pub fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let c = cstr(path)?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `c` is NUL-terminated and `how` is laid out as the kernel's `struct open_how` (version 0, 24 bytes)
    // whose size is passed alongside; both outlive the call. On success the kernel
    // returns a new fd that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fd_is_open_tells_open_numbers_from_free_ones() {
        let f = std::fs::File::open("/proc/self/stat").expect("open /proc/self/stat");
        assert!(fd_is_open(f.as_raw_fd()));
        assert!(!fd_is_open(-1));
        assert!(!fd_is_open(i32::MAX));
    }
}
