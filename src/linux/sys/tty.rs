//! Terminal ioctls, fd-to-fd bind mounts and `SCM_RIGHTS` reception: the calls the
//! console needs that nix does not wrap safely. Also the one pre-exec step of the helpers
//! gpurun spawns (hooks): an empty signal mask.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

fn check(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `unlockpt(3)`: `TIOCSPTLCK` with 0, so the peer can be opened.
pub fn unlock_pty(master: BorrowedFd<'_>) -> Result<(), Errno> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which points at a live local;
    // the fd is valid for the duration of the borrow.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) }).map(drop)
}

/// `TIOCGPTN`: the index N of the peer `/dev/pts/N` of a pty master.
pub fn pty_number(master: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int through the pointer, which points at a
    // live local; the fd is valid for the duration of the borrow.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    Ok(n)
}

/// `TIOCGPTPEER`: open the peer of a pty master through the master itself, not through
/// a path in `/dev/pts` that the container could have replaced.
pub fn open_pty_peer(master: BorrowedFd<'_>, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: TIOCGPTPEER takes its flags as the integer argument and returns a new fd;
    // the master fd is valid for the duration of the borrow.
    let fd = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: fd was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `TIOCSCTTY`: make a terminal the controlling terminal of the calling session leader
/// (without stealing it from another session: argument 0).
pub fn set_controlling_tty(tty: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument; the fd is valid for the borrow.
    check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) }).map(drop)
}

/// `TIOCGWINSZ`: (rows, columns).
pub fn window_size(tty: BorrowedFd<'_>) -> Result<(u16, u16), Errno> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points at
    // a live local of that type; the fd is valid for the borrow.
    check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok((ws.ws_row, ws.ws_col))
}

/// `TIOCSWINSZ`: set (rows, columns); the foreground process group gets SIGWINCH.
pub fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points at
    // a live local of that type; the fd is valid for the borrow.
    check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// Bind-mount the file `source` refers to onto the file `target` refers to, both by
/// fd (`open_tree(OPEN_TREE_CLONE)` + `move_mount`): no path is resolved, so neither a
/// symlink nor a rename between a check and the mount can redirect it.
pub fn bind_fd_onto_fd(source: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    let empty = c"";
    // SAFETY: `empty` is a NUL-terminated string that outlives the call; the fd is valid
    // for the borrow; on success the kernel returns a new fd owned by nothing else.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH
                | libc::OPEN_TREE_CLONE as libc::c_int
                | libc::OPEN_TREE_CLOEXEC as libc::c_int) as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(Errno::last());
    }
    // SAFETY: tree is a fresh descriptor returned by the kernel and owned by no one else.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both paths are the NUL-terminated empty string, both fds are valid for the
    // call; move_mount reads nothing else from user memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// One message received from a unix socket: the payload length, every fd that came
/// with it (each now owned, close-on-exec), and whether anything was cut off.
pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// The payload did not fit the buffer (`MSG_TRUNC`).
    pub data_truncated: bool,
    /// Ancillary data did not fit (`MSG_CTRUNC`): more fds were sent than were room for,
    /// and the kernel closed them.
    pub control_truncated: bool,
    /// Ancillary messages other than `SCM_RIGHTS` (credentials and the like).
    pub other_control: usize,
}

/// `recvmsg` with room for `max_fds` descriptors, `MSG_CMSG_CLOEXEC`. Every fd the
/// kernel installed is returned owned, even when the control data was truncated, so none
/// leaks.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<Received, Errno> {
    let int = std::mem::size_of::<libc::c_int>();
    let want = u32::try_from(max_fds.max(1) * int).map_err(|_| Errno::EINVAL)?;
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(want) } as usize;
    // u64 elements: the control buffer must be aligned for `struct cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    let len = loop {
        // SAFETY: hdr points at one iovec describing `buf` and at `control`, whose
        // lengths are given in the header; all three outlive the call.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    };
    let mut out = Received {
        len,
        fds: Vec::new(),
        data_truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: hdr.msg_flags & libc::MSG_CTRUNC != 0,
        other_control: 0,
    };
    // SAFETY: hdr was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR only return headers
    // that lie entirely within msg_controllen bytes of `control`, or NULL.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !c.is_null() {
        // SAFETY: c is non-NULL and points at a complete, aligned cmsghdr in `control`.
        let (level, kind, clen) =
            unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN and CMSG_DATA are arithmetic on a valid header pointer.
            let (data, head) = unsafe { (libc::CMSG_DATA(c), libc::CMSG_LEN(0) as usize) };
            for i in 0..clen.saturating_sub(head) / int {
                // SAFETY: the kernel wrote `clen - head` bytes of fds after the header,
                // inside `control`; the data may be unaligned for c_int.
                let fd = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel installed this fd in our table while receiving the
                // message; nothing else in the process knows its number, so this is its
                // only owner.
                out.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        } else {
            out.other_control += 1;
        }
        // SAFETY: as for CMSG_FIRSTHDR; c is a header of this message.
        c = unsafe { libc::CMSG_NXTHDR(&hdr, c) };
    }
    Ok(out)
}

/// Make the child of `cmd` start with no blocked signals. `std::process::Command` passes
/// the spawning thread's signal mask on, and `gpurun run` blocks every signal (it reads
/// them from a signalfd): a hook must not start with SIGTERM and SIGINT blocked.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe functions may be called. It calls sigemptyset and pthread_sigmask
    // (both async-signal-safe) on a stack-local set, allocates nothing, takes no lock,
    // and builds its error with from_raw_os_error, which does not allocate.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) {
                0 => Ok(()),
                e => Err(std::io::Error::from_raw_os_error(e)),
            }
        });
    }
}
