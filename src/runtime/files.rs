//! Small files create writes for its caller: the pid file, and the owner it records.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| Error::io("writing pid file", &tmp, e))?;
    f.write_all(pid.to_string().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("writing pid file", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("renaming pid file into place", &path, e)
    })
}
