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

/// Whether this kernel runs x32 calls: `getpid` made with `__X32_SYSCALL_BIT` set returns
/// the pid where x32 is built in and ENOSYS where it is not. `None` when the answer is
/// anything else. Only for a caller no seccomp filter applies to: a filter that does not
/// list x32 may kill the caller for the attempt.
#[cfg(target_arch = "x86_64")]
pub fn x32_calls_work() -> Option<bool> {
    const X32_GETPID: libc::c_long = 0x4000_0000 | libc::SYS_getpid;
    // SAFETY: getpid takes no arguments and touches no memory; with the x32 bit set the
    // kernel either runs that same call or returns ENOSYS.
    let ret = unsafe { libc::syscall(X32_GETPID) };
    match Errno::result(ret) {
        Ok(_) => Some(true),
        Err(Errno::ENOSYS) => Some(false),
        Err(_) => None,
    }
}

/// x32 exists only beside x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn x32_calls_work() -> Option<bool> {
    None
}
