//! Paths inside the container's root filesystem, resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: a symlink in the image (absolute,
//! or full of `..`) resolves inside the rootfs and never reaches a host path. Everything
//! that creates something does it relative to a parent directory fd resolved that way,
//! with a single path component, so no step can be redirected between check and use.
//!
//! One `openat2` per lookup: this is the container start path, and a user-space
//! resolver that re-verifies every component through procfs (pathrs) costs hundreds of
//! system calls per mount.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::Mode;

use crate::linux::error::{Error, Result};
use crate::linux::sys::proc::openat2;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

fn err(what: &str, syscall: &'static str, path: &Path, e: Errno) -> Error {
    Error::sys(format!("{what} in the container root"), syscall, path, e)
}

/// The path's components below `/`, with `.` dropped (`..` is left to the kernel).
fn parts(path: &Path) -> Vec<&OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect()
}

/// `/` followed by `comps`, for messages.
fn in_root(comps: &[&OsStr]) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(comps);
    p
}

/// An `O_PATH` handle to the entry `name` of `dir`, which must not be a symlink.
fn beneath(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<OwnedFd, Errno> {
    openat2(
        dir,
        Path::new(name),
        libc::O_PATH | libc::O_DIRECTORY,
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("opening the rootfs", "open", path, e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn lookup(&self, path: &Path, flags: i32) -> std::result::Result<OwnedFd, Errno> {
        let rel: PathBuf = parts(path).iter().collect();
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        openat2(
            self.fd.as_fd(),
            &rel,
            libc::O_PATH | flags,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
    }

    /// An `O_PATH` handle to `path`, following symlinks inside the root.
    pub fn resolve(&self, path: &Path) -> Result<OwnedFd> {
        self.lookup(path, 0)
            .map_err(|e| err("resolving", "openat2", path, e))
    }

    /// Like `resolve`, but a symlink as the last component is returned itself.
    pub fn resolve_nofollow(&self, path: &Path) -> Result<OwnedFd> {
        self.lookup(path, libc::O_NOFOLLOW)
            .map_err(|e| err("resolving", "openat2", path, e))
    }

    /// `path` opened read-only; with `nofollow`, a symlink as the last component is
    /// refused (ELOOP) instead of followed inside the root.
    pub fn open_read(&self, path: &Path, nofollow: bool) -> Result<std::fs::File> {
        let rel: PathBuf = parts(path).iter().collect();
        let flags = libc::O_RDONLY | if nofollow { libc::O_NOFOLLOW } else { 0 };
        openat2(
            self.fd.as_fd(),
            &rel,
            flags,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
        .map(std::fs::File::from)
        .map_err(|e| err("opening", "openat2", path, e))
    }

    /// [`open_read`](Self::open_read) of a regular file: opened without blocking (a FIFO
    /// planted in the image cannot stall the caller) and refused when it is anything
    /// else (a device, a FIFO, a directory).
    pub fn open_file(&self, path: &Path, nofollow: bool) -> Result<std::fs::File> {
        let rel: PathBuf = parts(path).iter().collect();
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | if nofollow { libc::O_NOFOLLOW } else { 0 };
        let f = openat2(
            self.fd.as_fd(),
            &rel,
            flags,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
        .map(std::fs::File::from)
        .map_err(|e| err("opening", "openat2", path, e))?;
        let regular = f
            .metadata()
            .map_err(|e| Error::io("looking at", path, e))?
            .is_file();
        if !regular {
            return Err(Error::Refused(format!(
                "{} in the container root is not a regular file",
                path.display()
            )));
        }
        Ok(f)
    }

    pub fn exists_nofollow(&self, path: &Path) -> bool {
        self.lookup(path, libc::O_NOFOLLOW).is_ok()
    }

    /// `mkdir -p` inside the root; returns a handle to the directory.
    pub fn mkdir_all(&self, path: &Path, mode: u32) -> Result<OwnedFd> {
        // Most targets exist already: one lookup.
        if let Ok(fd) = self.lookup(path, libc::O_DIRECTORY) {
            return Ok(fd);
        }
        let comps = parts(path);
        // The deepest directory that exists, searched from the bottom: usually only the
        // last component or two are missing.
        let mut have = comps.len();
        let mut dir = loop {
            if have == 0 {
                break self
                    .lookup(Path::new("/"), libc::O_DIRECTORY)
                    .map_err(|e| err("opening", "openat2", Path::new("/"), e))?;
            }
            have -= 1;
            let prefix: PathBuf = comps[..have].iter().collect();
            match self.lookup(&prefix, libc::O_DIRECTORY) {
                Ok(fd) => break fd,
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    return Err(err(
                        &format!("creating {}: resolving", path.display()),
                        "openat2",
                        &in_root(&comps[..have]),
                        e,
                    ))
                }
            }
        };
        for i in have..comps.len() {
            let c = comps[i];
            let prefix = in_root(&comps[..=i]);
            let what = format!("creating {}: directory", path.display());
            if c != ".." {
                match nix::sys::stat::mkdirat(dir.as_fd(), c, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(err(&what, "mkdirat", &prefix, e)),
                }
                // The entry just made, opened beneath its parent and refusing symlinks:
                // one step that no rename or symlink swap can redirect.
                if let Ok(fd) = beneath(dir.as_fd(), c) {
                    dir = fd;
                    continue;
                }
            }
            // `..`, or the name is not (or no longer) a plain directory: opened again
            // through the root, so a symlink put there resolves inside the root. A
            // dangling symlink (its target missing in the rootfs) ends here with ENOENT.
            dir = self
                .lookup(&prefix, libc::O_DIRECTORY)
                .map_err(|e| err(&what, "openat2", &prefix, e))?;
        }
        Ok(dir)
    }

    /// The parent directory (created if needed) and the last component of `path`.
    fn parent_and_name<'p>(&self, path: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::NoFileName(path.to_path_buf()))?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok((self.mkdir_all(parent, 0o755)?, name))
    }

    /// An empty regular file (a bind-mount target); an existing entry is left alone.
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<()> {
        let (dir, name) = self.parent_and_name(path)?;
        match create_new(dir.as_fd(), name, mode) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(err("creating file", "openat", path, e)),
        }
    }

    /// A handle to what a bind mount of a file lands on at `path`: the entry there
    /// (symlinks followed inside the root), or else an empty regular file made for it.
    pub fn file_target(&self, path: &Path, mode: u32) -> Result<OwnedFd> {
        if let Ok(h) = self.lookup(path, 0) {
            return Ok(h);
        }
        let (dir, name) = self.parent_and_name(path)?;
        match create_new(dir.as_fd(), name, mode) {
            // The file this call made: nothing can have replaced it behind the fd.
            Ok(fd) => Ok(fd),
            Err(Errno::EEXIST) => self.resolve(path),
            Err(e) => Err(err("creating file", "openat", path, e)),
        }
    }

    /// A symlink at `path` pointing to `target`; an existing entry is left alone.
    pub fn symlink(&self, path: &Path, target: &Path) -> Result<()> {
        let (dir, name) = self.parent_and_name(path)?;
        match nix::unistd::symlinkat(target, dir.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(err("creating symlink", "symlinkat", path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A new empty regular file `name` in `dir`, never through a symlink; `EEXIST` when
/// anything is there.
fn create_new(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    mode: u32,
) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_WRONLY,
        Mode::from_bits_truncate(mode),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("real")).expect("mkdir");
        std::os::unix::fs::symlink("/real", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../real", root.join("up")).expect("symlink");
        let r = Root::open(&root).expect("open");
        let made = r
            .mkdir_all(Path::new("/abs/x/y"), 0o755)
            .expect("mkdir through an absolute symlink");
        drop(made);
        assert!(root.join("real/x/y").is_dir());
        r.mkdir_all(Path::new("/up/z"), 0o755)
            .expect("mkdir through ..");
        assert!(root.join("real/z").is_dir());
        assert!(
            !tmp.path().join("real").exists(),
            "nothing outside the root"
        );
        r.create_file(Path::new("/abs/f"), 0o644).expect("file");
        assert!(root.join("real/f").is_file());
        r.symlink(Path::new("/l"), Path::new("/nowhere"))
            .expect("symlink");
        assert!(r.exists_nofollow(Path::new("/l")));
        assert!(
            r.resolve(Path::new("/l")).is_err(),
            "a dangling link does not resolve"
        );
    }

    #[test]
    fn a_symlink_to_a_host_path_never_reaches_the_host() {
        let tmp = tempfile::tempdir().expect("tmp");
        let host = tmp.path().join("host");
        std::fs::create_dir_all(&host).expect("host dir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).expect("root");
        std::os::unix::fs::symlink(&host, root.join("dev")).expect("symlink");
        let r = Root::open(&root).expect("open");
        let _ = r.mkdir_all(Path::new("/dev/pts"), 0o755);
        let _ = r.create_file(Path::new("/dev/null"), 0o644);
        assert_eq!(std::fs::read_dir(&host).expect("host").count(), 0);
    }

    #[test]
    fn mkdir_all_creates_below_the_deepest_existing_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink("/nowhere", root.join("dangling")).expect("symlink");
        let r = Root::open(&root).expect("open");
        r.mkdir_all(Path::new("/a/b/c/d"), 0o755).expect("deep");
        assert!(root.join("a/b/c/d").is_dir());
        r.mkdir_all(Path::new("/a/x/../y"), 0o755).expect("with ..");
        assert!(root.join("a/x").is_dir() && root.join("a/y").is_dir());
        let e = r
            .mkdir_all(Path::new("/dangling/z"), 0o755)
            .expect_err("a dangling symlink is not made into a directory");
        assert!(e.to_string().contains("No such file"), "{e}");
        assert!(!tmp.path().join("nowhere").exists());
    }

    #[test]
    fn file_target_makes_an_empty_file_or_follows_what_is_there() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("real")).expect("mkdir");
        std::fs::write(root.join("real/f"), "x").expect("write");
        std::os::unix::fs::symlink("/real/f", root.join("link")).expect("symlink");
        let r = Root::open(&root).expect("open");
        let h = r
            .file_target(Path::new("/new/dir/file"), 0o644)
            .expect("made");
        let st = nix::sys::stat::fstat(h.as_fd()).expect("fstat");
        assert_eq!(st.st_size, 0);
        assert_eq!(st.st_mode & 0o7777 & !0o022, 0o644 & !0o022);
        assert!(root.join("new/dir/file").is_file());
        let h = r.file_target(Path::new("/link"), 0o644).expect("followed");
        let st = nix::sys::stat::fstat(h.as_fd()).expect("fstat");
        assert_eq!(st.st_size, 1, "the link's target inside the root");
    }
}
