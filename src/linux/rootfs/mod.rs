//! The container's root filesystem: propagation, `mounts` in order, `pivot_root`,
//! read-only root, masked and read-only paths.
//!
//! Every path inside the rootfs is resolved with `pathrs` (openat2 `RESOLVE_IN_ROOT`), so
//! a symlink in the image can never send a mount outside the rootfs, and every mount
//! targets `/proc/self/fd/N` of the resolved handle, not a path that could be swapped
//! between the check and the mount (CVE-2021-30465, CVE-2024-45310, CVE-2026-41579).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{fstatvfs, FsFlags};

use std::os::fd::OwnedFd;

use crate::linux::inroot::Root;

use crate::linux::error::{Error, Result};

mod attach;
mod cgroupfs;
mod masks;
mod options;
mod propagation;

use cgroupfs::mount_cgroup;
pub use cgroupfs::{
    parse_cgroup_mounts, parse_proc_cgroup, self_mountinfo, CgroupHost, CgroupMount,
};
pub use options::{known_options, parse_mount, MountOp};

pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn mount_err(what: String, path: &Path) -> impl FnOnce(nix::errno::Errno) -> Error + '_ {
    move |errno| Error::sys(what, "mount", path, errno)
}

/// Set the namespace's propagation (see `propagation`), then bind the rootfs onto
/// itself so it is a mount point `pivot_root` accepts.
pub fn prepare(rootfs: &Path, propagation: Option<&str>) -> Result<Root> {
    propagation::prepare(rootfs, propagation::requested(propagation)?)?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err("binding the rootfs onto itself".into(), rootfs))?;
    Root::open(rootfs)
}

/// Create (if needed) and resolve the target of a mount inside the root.
fn target(root: &Root, dest: &Path, dir: bool) -> Result<OwnedFd> {
    if dir {
        return root.mkdir_all(dest, 0o755);
    }
    root.file_target(dest, 0o644)
}

/// proc and sysfs must land on a real directory: a symlink there is the CVE-2019-19921
/// class (a volume racing the target into somewhere on the host). Returns the handle of
/// the directory when there is one, for the mount to land on.
fn check_plain_dir(root: &Root, dest: &Path) -> Result<Option<OwnedFd>> {
    if let Ok(h) = root.resolve_nofollow(dest) {
        let st = nix::sys::stat::fstat(h.as_fd())
            .map_err(|e| Error::sys("checking mount point", "fstat", dest, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Error::Refused(format!(
                "mount point {} for {} must be an ordinary directory, not a symlink or file",
                dest.display(),
                if dest.starts_with("/proc") {
                    "proc"
                } else {
                    "sysfs"
                }
            )));
        }
        return Ok(Some(h));
    }
    Ok(None)
}

/// Only a procfs may cover the container's `/proc`: a volume there would give the
/// container (and anything that trusts its `/proc`) fake files (CVE-2019-16884). A bind
/// source must itself be on procfs, as runc requires.
fn check_proc_mount(op: &MountOp) -> Result<()> {
    if crate::spec::lexical_clean(&op.dest) != Path::new("/proc") {
        return Ok(());
    }
    let procfs = if op.bind {
        let src = op.source.as_deref().unwrap_or(Path::new(""));
        let fs = nix::sys::statfs::statfs(src)
            .map_err(|e| Error::sys("checking the source of the /proc mount", "statfs", src, e))?;
        fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC
    } else {
        op.typ == "proc"
    };
    if procfs {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "mount at /proc of {} ({}) refused: only a procfs may be mounted at /proc",
        op.source.as_deref().unwrap_or(Path::new("")).display(),
        op.typ
    )))
}

pub fn mount_one(root: &Root, op: &MountOp) -> Result<()> {
    check_proc_mount(op)?;
    let checked = if op.typ == "proc" || op.typ == "sysfs" {
        check_plain_dir(root, &op.dest)?
    } else {
        None
    };
    if op.typ == "cgroup" && !op.bind {
        return mount_cgroup(root, op);
    }
    if op.bind {
        return bind_one(root, op);
    }
    let h = match checked {
        Some(h) => h,
        None => target(root, &op.dest, true)?,
    };
    let src = op
        .source
        .as_deref()
        .map(|p| p.as_os_str())
        .unwrap_or(op.typ.as_ref());
    let data = (!op.data.is_empty()).then_some(op.data.as_str());
    mount(
        Some(src),
        &fd_path(h.as_fd()),
        Some(op.typ.as_str()),
        op.flags,
        data,
    )
    .map_err(mount_err(
        format!("mounting {} at {}", op.typ, op.dest.display()),
        &op.dest,
    ))?;
    if op.propagation.is_empty() && op.rec_attr_set == 0 && op.rec_attr_clr == 0 {
        return Ok(());
    }
    // One handle to the new mount serves the propagation and attributes.
    let top = root.resolve(&op.dest)?;
    let after = attach::After {
        extra: MsFlags::empty(),
        propagation: &op.propagation,
        rec_attr_set: op.rec_attr_set,
        rec_attr_clr: op.rec_attr_clr,
        single: false,
    };
    attach::apply_or_classic(top.as_fd(), &after, &op.dest)
}

/// A bind mount: the source attached on the target, then its remount with the extra
/// flags, propagation and recursive attributes, all through the one attached mount.
fn bind_one(root: &Root, op: &MountOp) -> Result<()> {
    let h = if op.source_is_dir {
        root.mkdir_all(&op.dest, 0o755)?
    } else {
        root.file_target(&op.dest, 0o644)?
    };
    let src = op.source.as_deref().unwrap_or(Path::new(""));
    let recursive = op.flags.contains(MsFlags::MS_REC);
    let after = attach::After {
        extra: op.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT),
        propagation: &op.propagation,
        rec_attr_set: op.rec_attr_set,
        rec_attr_clr: op.rec_attr_clr,
        single: !op.source_is_dir || !recursive,
    };
    if let Some(top) = attach::bind_path(src, h.as_fd(), recursive, &op.dest)? {
        return attach::apply_or_classic(top.as_fd(), &after, &op.dest);
    }
    let bind_flags = op.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    mount(
        Some(src),
        &fd_path(h.as_fd()),
        None::<&str>,
        bind_flags,
        None::<&str>,
    )
    .map_err(mount_err(
        format!("bind-mounting {}", src.display()),
        &op.dest,
    ))?;
    let top = root.resolve(&op.dest)?;
    classic_after(top.as_fd(), &after, &op.dest)
}

/// The remount, propagation and attributes of `a` with `mount(2)` on `/proc/self/fd/N`.
fn classic_after(top: BorrowedFd<'_>, a: &attach::After<'_>, dest: &Path) -> Result<()> {
    if !a.extra.is_empty() {
        remount_bind_fd(top, dest, a.extra)?;
    }
    for p in a.propagation {
        mount(None::<&str>, &fd_path(top), None::<&str>, *p, None::<&str>).map_err(mount_err(
            format!("setting propagation of {}", dest.display()),
            dest,
        ))?;
    }
    if a.rec_attr_set != 0 || a.rec_attr_clr != 0 {
        crate::linux::sys::proc::mount_setattr(
            top,
            c"",
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as u32,
            a.rec_attr_set,
            a.rec_attr_clr,
        )
        .map_err(|e| {
            Error::sys(
                "setting recursive mount attributes",
                "mount_setattr",
                dest,
                e,
            )
        })?;
    }
    Ok(())
}

/// Remount a bind mount with more flags. Inside a user namespace the flags the host
/// mount has (nosuid, nodev, noexec) are locked and must be kept; retry with them.
fn remount_bind(root: &Root, dest: &Path, flags: MsFlags) -> Result<()> {
    let top = root.resolve(dest)?;
    remount_bind_fd(top.as_fd(), dest, flags)
}

fn remount_bind_fd(top: BorrowedFd<'_>, dest: &Path, flags: MsFlags) -> Result<()> {
    let tp = fd_path(top);
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    match mount(None::<&str>, &tp, None::<&str>, base | flags, None::<&str>) {
        Err(nix::errno::Errno::EPERM) => {
            let locked = locked_flags(top.as_fd())?;
            mount(
                None::<&str>,
                &tp,
                None::<&str>,
                base | flags | locked,
                None::<&str>,
            )
            .map_err(mount_err("remounting bind mount".into(), dest))
        }
        r => r.map_err(mount_err("remounting bind mount".into(), dest)),
    }
}

fn locked_flags(fd: BorrowedFd<'_>) -> Result<MsFlags> {
    let st =
        fstatvfs(fd).map_err(|e| Error::sys("reading mount flags", "fstatvfs", fd_path(fd), e))?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (s, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            out.insert(m);
        }
    }
    Ok(out)
}

/// Bind the verified null device over each masked file and an empty read-only tmpfs over
/// each masked directory. Paths that do not exist are skipped, as runc does. The masked
/// directories share one such tmpfs (made once, then bound), which is cheaper than a new
/// superblock per directory and shows the container the same thing.
pub fn mask_paths(root: &Root, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let null = verified_dev_null(root)?;
    let mut empty = masks::EmptyDir::default();
    for p in paths {
        let path = Path::new(p);
        let Ok(h) = root.resolve(path) else { continue };
        let st = nix::sys::stat::fstat(h.as_fd())
            .map_err(|e| Error::sys("masking path", "fstat", path, e))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            empty.mount_on(h.as_fd(), path)?;
            continue;
        }
        if attach::bind_fd(
            null.as_fd(),
            h.as_fd(),
            false,
            "masking file with /dev/null",
            path,
        )?
        .is_some()
        {
            continue;
        }
        mount(
            Some(&fd_path(null.as_fd())),
            &fd_path(h.as_fd()),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(mount_err("masking file with /dev/null".into(), path))?;
    }
    Ok(())
}

/// The container's `/dev/null`, checked to be the real null device (char 1:3) and held
/// by an fd: a symlink or regular file planted there must not become what masked paths
/// are bound to (CVE-2025-31133).
pub fn verified_dev_null(root: &Root) -> Result<OwnedFd> {
    let p = Path::new("/dev/null");
    let h = root.resolve_nofollow(p)?;
    let st = nix::sys::stat::fstat(h.as_fd()).map_err(|e| Error::sys("checking", "fstat", p, e))?;
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_char || st.st_rdev != nix::sys::stat::makedev(1, 3) {
        return Err(Error::Refused(
            "/dev/null in the container is not the null device (char 1:3): refusing to mask paths with it".into(),
        ));
    }
    Ok(h)
}

/// Each path bound onto itself (with what is mounted below it) and made read-only,
/// nosuid, nodev and noexec at its top, as runc does.
pub fn readonly_paths(root: &Root, paths: &[String]) -> Result<()> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for p in paths {
        let path = Path::new(p);
        let Ok(h) = root.resolve(path) else { continue };
        let after = attach::After {
            extra: flags,
            propagation: &[],
            rec_attr_set: 0,
            rec_attr_clr: 0,
            single: false,
        };
        if let Some(top) =
            attach::bind_fd(h.as_fd(), h.as_fd(), true, "binding read-only path", path)?
        {
            attach::apply_or_classic(top.as_fd(), &after, path)?;
            continue;
        }
        let tp = fd_path(h.as_fd());
        mount(
            Some(&tp),
            &tp,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("binding read-only path".into(), path))?;
        remount_bind(root, path, flags | MsFlags::MS_REC)?;
    }
    Ok(())
}

/// `pivot_root(".", ".")` in the new root, then detach the old root stacked on top.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let old = nix::fcntl::open(
        "/",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("opening the old root", "open", "/", e))?;
    let dir = std::fs::File::open(rootfs).map_err(|e| Error::io("opening rootfs", rootfs, e))?;
    nix::unistd::fchdir(&dir).map_err(|e| Error::sys("entering rootfs", "fchdir", rootfs, e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| Error::sys("switching root", "pivot_root", rootfs, e))?;
    // The old root is stacked on the new one here. Enter it by fd, so the recursive
    // change below names it and never the new root, where it would reach every mount of
    // the container and undo the propagation they asked for.
    nix::unistd::fchdir(&old).map_err(|e| Error::sys("entering the old root", "fchdir", "/", e))?;
    // The old root must not propagate its unmount back to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err(
        "making the old root a slave".into(),
        Path::new("/"),
    ))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys("detaching the old root", "umount2", "/", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("entering new root", "chdir", "/", e))
}

/// `--no-pivot`: move the rootfs over `/` and chroot into it.
pub fn move_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("entering rootfs", "chdir", rootfs, e))?;
    // Attaching onto a shared `/` (rootfsPropagation shared) would put the rootfs over
    // the host's `/` too; a slave `/` sends nothing back.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(mount_err(
        "making / a slave before the move".into(),
        Path::new("/"),
    ))?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(mount_err("moving rootfs to /".into(), rootfs))?;
    chroot_here(rootfs)
}

/// Without a mount namespace of its own the container shares the host's mount table:
/// pivot_root would swap the host's root, so only the process' root changes (chroot),
/// as runc does, and no mount is made.
pub fn chroot_only(rootfs: &Path) -> Result<()> {
    let dir = std::fs::File::open(rootfs).map_err(|e| Error::io("opening rootfs", rootfs, e))?;
    nix::unistd::fchdir(&dir).map_err(|e| Error::sys("entering rootfs", "fchdir", rootfs, e))?;
    chroot_here(rootfs)
}

/// chroot into the directory `dir` refers to (`exec` into a container without a mount
/// namespace of its own: its init's root).
pub fn chroot_fd(dir: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::fchdir(dir)
        .map_err(|e| Error::sys("entering the container's root", "fchdir", fd_path(dir), e))?;
    chroot_here(&fd_path(dir))
}

fn chroot_here(rootfs: &Path) -> Result<()> {
    nix::unistd::chroot(".").map_err(|e| Error::sys("entering rootfs", "chroot", rootfs, e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("entering new root", "chdir", "/", e))
}

/// Applied after pivot_root: `rootfsPropagation` shared/unbindable.
pub fn root_propagation(propagation: Option<&str>) -> Result<()> {
    propagation::on_new_root(propagation::requested(propagation)?)
}

pub fn readonly_root() -> Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    match mount(None::<&str>, "/", None::<&str>, base, None::<&str>) {
        Err(nix::errno::Errno::EPERM) => {
            let root = std::fs::File::open("/").map_err(|e| Error::io("opening", "/", e))?;
            let locked = locked_flags(root.as_fd())?;
            mount(None::<&str>, "/", None::<&str>, base | locked, None::<&str>).map_err(mount_err(
                "remounting root read-only".into(),
                Path::new("/"),
            ))
        }
        r => r.map_err(mount_err(
            "remounting root read-only".into(),
            Path::new("/"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::cgroupfs::own_path;
    use super::options::MOUNT_ATTR_RDONLY;
    use super::*;
    use oci_spec::runtime::Mount;

    fn m(json: serde_json::Value) -> Mount {
        serde_json::from_value(json).expect("mount")
    }

    #[test]
    fn options_become_flags_propagation_and_data() {
        let op = parse_mount(
            &m(serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k", "rprivate", "rro"]})),
            Path::new("/b"),
        )
        .expect("parse");
        assert!(op
            .flags
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME));
        assert_eq!(op.data, "mode=755,size=65536k");
        assert_eq!(op.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(op.rec_attr_set, MOUNT_ATTR_RDONLY);
        assert!(!op.bind);
    }

    #[test]
    fn relative_bind_sources_are_relative_to_the_bundle() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("vol")).expect("mkdir");
        let op = parse_mount(
            &m(serde_json::json!({"destination": "/data", "type": "none", "source": "vol", "options": ["rbind", "ro"]})),
            dir.path(),
        )
        .expect("parse");
        assert!(op.bind && op.source_is_dir);
        assert_eq!(op.source.as_deref(), Some(dir.path().join("vol").as_path()));
        assert!(op.flags.contains(MsFlags::MS_REC | MsFlags::MS_RDONLY));
    }

    #[test]
    fn idmapped_mounts_are_rejected_by_name() {
        let err = parse_mount(
            &m(serde_json::json!({"destination": "/x", "type": "bind", "source": "/tmp", "options": ["idmap"]})),
            Path::new("/"),
        )
        .expect_err("idmap");
        assert!(err.to_string().contains("idmap"));
    }

    #[test]
    fn own_cgroup_path_is_found_per_hierarchy() {
        let own = parse_proc_cgroup(
            "12:memory:/pods/c1\n4:cpu,cpuacct:/pods/c1\n1:name=systemd:/init.scope\n0::/\n",
        );
        assert_eq!(own_path(&own, "cgroup", "memory"), Some("/pods/c1"));
        assert_eq!(own_path(&own, "cgroup", "cpu,cpuacct"), Some("/pods/c1"));
        assert_eq!(
            own_path(&own, "cgroup", "xattr,name=systemd"),
            Some("/init.scope")
        );
        assert_eq!(own_path(&own, "cgroup2", ""), Some("/"));
        assert_eq!(own_path(&own, "cgroup", "pids"), None);
    }

    #[test]
    fn cgroup_mounts_are_read_from_mountinfo() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755\n\
                  31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
                  33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let got = parse_cgroup_mounts(mi);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].fstype, "cgroup2");
        assert_eq!(got[1].options, "cpu,cpuacct");
        assert_eq!(got[2].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn cgroup_mounts_hidden_by_a_later_mount_are_left_out() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                  33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  40 31 0:50 / /sys/fs/cgroup/unified rw - tmpfs tmpfs rw,size=16m\n";
        let got = parse_cgroup_mounts(mi);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].options, "memory");
        let covered = format!("{mi}41 25 0:51 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let got = parse_cgroup_mounts(&covered);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].fstype, "cgroup2");
    }
}
