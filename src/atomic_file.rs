//! Replacing a file so that a reader sees the old content or the new, never part of it:
//! write a temporary file beside it, fsync, rename over it, fsync the directory. Every
//! file gpurun rewrites in place (state, pid file, CDI spec, caches, leases, the config
//! files `install` edits) goes through [`write`].

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether the new content must survive a crash or power loss once [`write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it.
    Synced,
    /// Rename only: for files that describe running processes (container state, pid
    /// files, GPU leases), which a reboot ends anyway, and that usually live on a tmpfs
    /// (`/run`). An fsync there costs time on every create and buys nothing; on a disk
    /// the rename still never shows a reader part of a file.
    Volatile,
}

/// A failed step of [`write`], naming what was written and the file it was working on.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {step} {}: {source}", path.display())]
pub struct WriteError {
    /// The caller's name for the file: "writing state".
    pub what: &'static str,
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn fail<'p>(
    what: &'static str,
    step: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> WriteError + 'p {
    move |source| WriteError {
        what,
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `data`. A new file gets `mode` (less the umask). `what` names
/// the file in errors ("writing state").
pub fn write(
    what: &'static str,
    path: &Path,
    data: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<(), WriteError> {
    let (tmp, mut file) = create_temporary(what, path, mode)?;
    let filled = file
        .write_all(data)
        .map_err(fail(what, "writing", &tmp))
        .and_then(|()| match durability {
            Durability::Synced => file.sync_all().map_err(fail(what, "fsync of", &tmp)),
            Durability::Volatile => Ok(()),
        });
    drop(file);
    let renamed = filled.and_then(|()| {
        std::fs::rename(&tmp, path).map_err(fail(what, "renaming into place", path))
    });
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    match durability {
        Durability::Synced => sync_dir(what, parent(path)),
        Durability::Volatile => Ok(()),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The rename is durable only once the directory entry is on disk.
fn sync_dir(what: &'static str, dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail(what, "fsync of directory", dir))
}

/// A new temporary file in `path`'s directory, under a name no other writer (another
/// thread, another gpurun) uses: pid and a per-process counter, created exclusively.
fn create_temporary(
    what: &'static str,
    path: &Path,
    mode: u32,
) -> Result<(PathBuf, File), WriteError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| WriteError {
            what,
            step: "naming a temporary file for",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        })?
        .to_string_lossy()
        .into_owned();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = parent(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            // Left by a crashed process whose pid this one now has.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(what, "creating", &tmp)(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("list the directory")
            .map(|e| {
                e.expect("directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("state.json");
        for d in [Durability::Synced, Durability::Volatile] {
            write("test", &p, b"first", 0o600, d).expect("first write");
            write("test", &p, b"second", 0o600, d).expect("second write");
            assert_eq!(std::fs::read(&p).expect("read back"), b"second");
            assert_eq!(entries(t.path()), ["state.json"]);
        }
        let mode = std::fs::metadata(&p)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn temporary_names_are_unique_and_beside_the_target() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        let (a, _fa) = create_temporary("test", &p, 0o600).expect("first temporary");
        let (b, _fb) = create_temporary("test", &p, 0o600).expect("second temporary");
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(t.path()));
        assert_eq!(b.parent(), Some(t.path()));
        // Temporaries left under the next names (a crashed writer with this pid) are
        // stepped over, not reused.
        let n: u64 = b
            .to_string_lossy()
            .rsplit('.')
            .nth(1)
            .expect("a counter field in the name")
            .parse()
            .expect("the counter is a number");
        let pid = std::process::id();
        let stale: Vec<PathBuf> = (n + 1..n + 20)
            .map(|k| t.path().join(format!(".f.{pid}.{k}.tmp")))
            .collect();
        for s in &stale {
            std::fs::write(s, b"stale").expect("plant a stale temporary");
        }
        let (c, _fc) =
            create_temporary("test", &p, 0o600).expect("a temporary beside the stale one");
        assert!(!stale.contains(&c), "{c:?}");
        for s in &stale {
            assert_eq!(
                std::fs::read(s).expect("the stale file is untouched"),
                b"stale"
            );
        }
    }

    #[test]
    fn readers_never_see_a_torn_file_while_writers_race() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        let contents: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 256 * 1024]).collect();
        write("test", &p, &contents[0], 0o644, Durability::Volatile).expect("first write");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for c in &contents {
                let p = &p;
                let stop = &stop;
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        write("test", p, c, 0o644, Durability::Volatile).expect("a racing write");
                    }
                });
            }
            for _ in 0..300 {
                let seen = std::fs::read(&p).expect("read while writers race");
                assert!(
                    contents.contains(&seen),
                    "a torn file of {} bytes",
                    seen.len()
                );
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(entries(t.path()), ["f"]);
    }

    #[test]
    fn a_failed_write_names_the_step_and_path() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("missing").join("f");
        let e = write("test", &p, b"x", 0o644, Durability::Synced).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(
            msg.starts_with("test: creating ") && msg.contains("missing/.f."),
            "{msg}"
        );
        // The target is a directory: rename fails and the temporary is removed.
        let d = t.path().join("d");
        std::fs::create_dir_all(d.join("inside")).expect("mkdir inside");
        let e = write("test", &d, b"x", 0o644, Durability::Synced).unwrap_err();
        assert_eq!(e.step, "renaming into place");
        assert_eq!(entries(t.path()), ["d"]);
    }
}
