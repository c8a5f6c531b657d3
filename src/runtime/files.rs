//! Small files create writes for its caller: the pid file, and the owner it records.

use std::path::Path;

use crate::atomic_file::Durability;
use crate::error::{Error, Result};

/// The user name of the caller, read from /etc/passwd (no NSS: no daemon is asked on the
/// container start path), or the uid.
pub(super) fn owner() -> String {
    let uid = nix::unistd::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|pw| {
            pw.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// Decimal, no newline, written to a temp file and renamed: callers parse it with
/// `atoi`/`strconv.Atoi` and must never see it half written.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolving", path, e))?
            .join(path)
    };
    let data = pid.to_string();
    crate::atomic_file::write(
        "writing pid file",
        &path,
        data.as_bytes(),
        0o644,
        Durability::Volatile,
    )?;
    Ok(())
}
