//! Raw seccomp(2) wrappers.

use nix::errno::Errno;

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`: attach a classic-BPF program to the
/// calling thread.
///
/// No `no_new_privs` is set here: the kernel then requires CAP_SYS_ADMIN in the caller's
/// user namespace (EACCES otherwise), which is what `noNewPrivileges: false` needs.
/// Allocates nothing, so it may run in a child after fork.
///
/// Returns the raw non-negative result: 0, or, with `SECCOMP_FILTER_FLAG_TSYNC`, the id of
/// a thread that could not be synchronized.
pub fn seccomp_set_mode_filter(
    flags: libc::c_ulong,
    program: &[libc::sock_filter],
) -> Result<libc::c_long, Errno> {
    let len = u16::try_from(program.len()).map_err(|_| Errno::EINVAL)?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the program; the field is `*mut` in the C declaration.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, `len` instructions long, both borrowed for the
    // whole call; the kernel copies the program before returning and writes nothing
    // through either pointer. The remaining arguments are plain integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(ret)
}
