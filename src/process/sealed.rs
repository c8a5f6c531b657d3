//! Protection of the host's gpurun binary (CVE-2019-5736).
//!
//! A process that enters a container runs gpurun's code until its final execve; if the
//! container can reach it as `/proc/<pid>/exe` (for instance by making its entry point
//! `#!/proc/self/exe`), it can open the binary and write to it once gpurun has exited.
//! Before doing any work for create, run or exec, gpurun re-executes itself from a
//! detached, read-only bind mount of its own binary (`open_tree(OPEN_TREE_CLONE)` +
//! `MOUNT_ATTR_RDONLY`): `/proc/<pid>/exe` then names a file on a read-only mount that
//! exists in no mount namespace, so every open for writing fails with EROFS. Nothing is
//! copied (runc's memfd copy costs milliseconds per call), and nothing is left behind:
//! the mount lives only as long as the process. Where the new mount API is unavailable
//! the fallback is a sealed memfd copy.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::AsFd;

use nix::fcntl::{FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::linux::sys::proc::{execveat_fd, mount_setattr, open_tree_clone};
use crate::process::error::{Error, Result};

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// True when the running binary cannot be written through `/proc/self/exe`. The answer
/// cannot change while the process runs, so it is found once.
pub fn is_protected() -> bool {
    static PROTECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROTECTED.get_or_init(|| {
        statvfs("/proc/self/exe").is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY))
            || is_sealed_memfd()
    })
}

fn is_sealed_memfd() -> bool {
    std::fs::read_link("/proc/self/exe")
        .is_ok_and(|p| p.to_string_lossy().starts_with("/memfd:gpurun"))
}

/// Re-execute from a protected copy unless already running from one. Returns only on
/// failure (or when already protected).
pub fn ensure() -> Result<()> {
    if is_protected() {
        return Ok(());
    }
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.into_encoded_bytes()).ok())
        .collect();
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let a: Vec<&CStr> = argv.iter().map(|c| c.as_c_str()).collect();
    let e: Vec<&CStr> = envp.iter().map(|c| c.as_c_str()).collect();
    if let Ok(fd) = open_tree_clone(std::path::Path::new("/proc/self/exe")) {
        if mount_setattr(
            fd.as_fd(),
            c"",
            libc::AT_EMPTY_PATH as u32,
            MOUNT_ATTR_RDONLY,
            0,
        )
        .is_ok()
        {
            let errno = execveat_fd(fd.as_fd(), &a, &e);
            crate::log::debug(&format!("re-exec from read-only mount failed: {errno}"));
        }
    }
    let memfd = sealed_copy()?;
    let errno = execveat_fd(memfd.as_fd(), &a, &e);
    Err(Error::sys(
        "re-executing from a sealed copy",
        "execveat",
        "/proc/self/exe",
        errno,
    ))
}

fn sealed_copy() -> Result<std::os::fd::OwnedFd> {
    let fd = memfd_create(
        c"gpurun",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| Error::sys("copying the binary", "memfd_create", "", e))?;
    let data =
        std::fs::read("/proc/self/exe").map_err(|e| Error::io("reading", "/proc/self/exe", e))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&data)
        .map_err(|e| Error::io("copying the binary to", "memfd", e))?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    nix::fcntl::fcntl(&f, FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| Error::sys("sealing the binary copy", "fcntl", "memfd", e))?;
    Ok(f.into())
}
