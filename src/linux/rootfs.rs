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
use oci_spec::runtime::Mount;
use std::os::fd::OwnedFd;

use crate::linux::inroot::Root;

use crate::error::{Error, Result};

/// One `mounts[]` entry, with its options resolved in the parent.
#[derive(Clone, Debug)]
pub struct MountOp {
    pub dest: PathBuf,
    pub typ: String,
    pub source: Option<PathBuf>,
    pub flags: MsFlags,
    /// Propagation changes applied after the mount (private, rslave, …).
    pub propagation: Vec<MsFlags>,
    /// `MOUNT_ATTR_*` bits set/cleared recursively (`rro`, `rnosuid`, …).
    pub rec_attr_set: u64,
    pub rec_attr_clr: u64,
    pub data: String,
    pub bind: bool,
    /// For binds: whether the source is a directory (else a file is made as target).
    pub source_is_dir: bool,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;
/// `MS_NOSYMFOLLOW` (Linux 5.10), not in nix's MsFlags.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// (set, clear) for a classic option.
fn flag_option(o: &str) -> Option<(MsFlags, MsFlags)> {
    let e = MsFlags::empty();
    Some(match o {
        "defaults" => (e, e),
        "ro" => (MsFlags::MS_RDONLY, e),
        "rw" => (e, MsFlags::MS_RDONLY),
        "suid" => (e, MsFlags::MS_NOSUID),
        "nosuid" => (MsFlags::MS_NOSUID, e),
        "dev" => (e, MsFlags::MS_NODEV),
        "nodev" => (MsFlags::MS_NODEV, e),
        "exec" => (e, MsFlags::MS_NOEXEC),
        "noexec" => (MsFlags::MS_NOEXEC, e),
        "sync" => (MsFlags::MS_SYNCHRONOUS, e),
        "async" => (e, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (MsFlags::MS_DIRSYNC, e),
        "remount" => (MsFlags::MS_REMOUNT, e),
        "mand" => (MsFlags::MS_MANDLOCK, e),
        "nomand" => (e, MsFlags::MS_MANDLOCK),
        "atime" => (e, MsFlags::MS_NOATIME),
        "noatime" => (MsFlags::MS_NOATIME, e),
        "diratime" => (e, MsFlags::MS_NODIRATIME),
        "nodiratime" => (MsFlags::MS_NODIRATIME, e),
        "bind" => (MsFlags::MS_BIND, e),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, e),
        "relatime" => (MsFlags::MS_RELATIME, e),
        "norelatime" => (e, MsFlags::MS_RELATIME),
        "strictatime" => (MsFlags::MS_STRICTATIME, e),
        "nostrictatime" => (e, MsFlags::MS_STRICTATIME),
        "silent" => (MsFlags::MS_SILENT, e),
        "nosymfollow" => (MS_NOSYMFOLLOW, e),
        "symfollow" => (e, MS_NOSYMFOLLOW),
        "loud" => (e, MsFlags::MS_SILENT),
        _ => return None,
    })
}

fn propagation_option(o: &str) -> Option<MsFlags> {
    Some(match o {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// (set, clear) of `MOUNT_ATTR_*` for a recursive option.
fn recursive_option(o: &str) -> Option<(u64, u64)> {
    Some(match o {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnoatime" => (MOUNT_ATTR_NOATIME, 0),
        "ratime" => (0, MOUNT_ATTR_NOATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, 0),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Every option name gpurun understands, for `features`.
pub fn known_options() -> Vec<String> {
    let classic = [
        "defaults",
        "ro",
        "rw",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "exec",
        "noexec",
        "sync",
        "async",
        "dirsync",
        "remount",
        "mand",
        "nomand",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "bind",
        "rbind",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "silent",
        "loud",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnodiratime",
        "rdiratime",
    ];
    classic.iter().map(|s| s.to_string()).collect()
}

/// Resolve one `mounts[]` entry. Relative bind sources are relative to the bundle.
pub fn parse_mount(m: &Mount, bundle: &Path) -> Result<MountOp> {
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let (mut rset, mut rclr) = (0u64, 0u64);
    let mut data = Vec::new();
    for o in m.options().as_deref().unwrap_or(&[]) {
        if let Some((set, clr)) = flag_option(o) {
            flags.remove(clr);
            flags.insert(set);
        } else if let Some(p) = propagation_option(o) {
            propagation.push(p);
        } else if let Some((s, c)) = recursive_option(o) {
            rset = (rset & !c) | s;
            rclr = (rclr & !s) | c;
        } else if o == "idmap" || o == "ridmap" {
            return Err(Error::Config(format!(
                "mounts: {}: option {o} (idmapped mounts) is not supported",
                m.destination().display()
            )));
        } else if o == "tmpcopyup" {
            return Err(Error::Config(format!(
                "mounts: {}: option tmpcopyup is not supported",
                m.destination().display()
            )));
        } else {
            data.push(o.clone());
        }
    }
    let typ = m.typ().clone().unwrap_or_default();
    let bind = typ == "bind" || flags.contains(MsFlags::MS_BIND);
    if bind {
        flags.insert(MsFlags::MS_BIND);
    }
    let source = m.source().as_ref().map(|s| {
        if bind && s.is_relative() {
            bundle.join(s)
        } else {
            s.clone()
        }
    });
    let mut source_is_dir = true;
    if bind {
        let src = source.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "mounts: {}: a bind mount needs a source",
                m.destination().display()
            ))
        })?;
        let md = std::fs::metadata(src).map_err(|e| {
            Error::Config(format!(
                "mounts: {}: bind source {}: {e}",
                m.destination().display(),
                src.display()
            ))
        })?;
        source_is_dir = md.is_dir();
    }
    Ok(MountOp {
        dest: m.destination().clone(),
        typ,
        source,
        flags,
        propagation,
        rec_attr_set: rset,
        rec_attr_clr: rclr,
        data: data.join(","),
        bind,
        source_is_dir,
    })
}

pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn mount_err(what: String, path: &Path) -> impl FnOnce(nix::errno::Errno) -> Error + '_ {
    move |errno| Error::sys(what, "mount", path, errno)
}

/// Make our mount namespace's view private to us (slave by default, so host mounts still
/// propagate in but nothing propagates out), then bind the rootfs onto itself so it is
/// a mount point `pivot_root` accepts.
pub fn prepare(rootfs: &Path, propagation: Option<&str>) -> Result<Root> {
    let flags = match propagation.unwrap_or("") {
        "" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        p => propagation_option(p)
            .ok_or_else(|| Error::Config(format!("linux.rootfsPropagation {p:?}")))?,
    };
    // Shared and unbindable are applied to the new root after pivot_root; the host's
    // "/" must never become shared with the container.
    let host = if flags.contains(MsFlags::MS_SHARED) || flags.contains(MsFlags::MS_UNBINDABLE) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        flags
    };
    mount(None::<&str>, "/", None::<&str>, host, None::<&str>).map_err(mount_err(
        "setting root mount propagation".into(),
        Path::new("/"),
    ))?;
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
    if let Ok(h) = root.resolve(dest) {
        return Ok(h);
    }
    root.create_file(dest, 0o644)?;
    root.resolve(dest)
}

/// proc and sysfs must land on a real directory: a symlink there is the CVE-2019-19921
/// class (a volume racing the target into somewhere on the host).
fn check_plain_dir(root: &Root, dest: &Path) -> Result<()> {
    if let Ok(h) = root.resolve_nofollow(dest) {
        let st = nix::sys::stat::fstat(h.as_fd())
            .map_err(|e| Error::sys("checking mount point", "fstat", dest, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Error::Other(format!(
                "mount point {} for {} must be an ordinary directory, not a symlink or file",
                dest.display(),
                if dest.starts_with("/proc") {
                    "proc"
                } else {
                    "sysfs"
                }
            )));
        }
    }
    Ok(())
}

pub fn mount_one(root: &Root, op: &MountOp) -> Result<()> {
    if op.typ == "proc" || op.typ == "sysfs" {
        check_plain_dir(root, &op.dest)?;
    }
    if op.typ == "cgroup" && !op.bind {
        return mount_cgroup(root, op);
    }
    let h = target(root, &op.dest, !op.bind || op.source_is_dir)?;
    let tp = fd_path(h.as_fd());
    let what = || format!("mounting {} at {}", op.typ, op.dest.display());
    if op.bind {
        let src = op.source.as_deref().unwrap_or(Path::new(""));
        let bind_flags = op.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(Some(src), &tp, None::<&str>, bind_flags, None::<&str>).map_err(mount_err(
            format!("bind-mounting {}", src.display()),
            &op.dest,
        ))?;
    } else {
        let src = op
            .source
            .as_deref()
            .map(|p| p.as_os_str())
            .unwrap_or(op.typ.as_ref());
        let data = (!op.data.is_empty()).then_some(op.data.as_str());
        mount(Some(src), &tp, Some(op.typ.as_str()), op.flags, data)
            .map_err(mount_err(what(), &op.dest))?;
    }
    let extra = op.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    let remount = op.bind && !extra.is_empty();
    if !remount && op.propagation.is_empty() && op.rec_attr_set == 0 && op.rec_attr_clr == 0 {
        return Ok(());
    }
    // One handle to the new mount serves the remount, propagation and attributes.
    let top = root.resolve(&op.dest)?;
    if remount {
        remount_bind_fd(top.as_fd(), &op.dest, extra)?;
    }
    for p in &op.propagation {
        mount(
            None::<&str>,
            &fd_path(top.as_fd()),
            None::<&str>,
            *p,
            None::<&str>,
        )
        .map_err(mount_err(
            format!("setting propagation of {}", op.dest.display()),
            &op.dest,
        ))?;
    }
    if op.rec_attr_set != 0 || op.rec_attr_clr != 0 {
        crate::linux::sys::proc::mount_setattr(
            top.as_fd(),
            c"",
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as u32,
            op.rec_attr_set,
            op.rec_attr_clr,
        )
        .map_err(|e| {
            Error::sys(
                "setting recursive mount attributes",
                "mount_setattr",
                &op.dest,
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

/// `type: cgroup` at /sys/fs/cgroup. On a cgroup2 host one cgroup2 mount; on a v1 or
/// hybrid host a tmpfs with one mount per v1 hierarchy (and `unified`), as runc lays it
/// out. With a cgroup namespace each mount shows the container's own cgroup as its root.
fn mount_cgroup(root: &Root, op: &MountOp) -> Result<()> {
    let h = target(root, &op.dest, true)?;
    let tp = fd_path(h.as_fd());
    // The tmpfs is made read-only after the hierarchies are mounted on it; each
    // hierarchy itself gets the spec's flags, `ro` included, so the container cannot
    // write cgroup files unless the spec says rw.
    let tmpfs_flags = op.flags & !MsFlags::MS_RDONLY;
    let hier = host_cgroup_mounts()?;
    let own = own_cgroups();
    if hier
        .iter()
        .any(|m| m.fstype == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup"))
    {
        mount(
            Some("cgroup2"),
            &tp,
            Some("cgroup2"),
            op.flags,
            None::<&str>,
        )
        .map_err(mount_err("mounting cgroup2".into(), &op.dest))?;
        return bind_own_cgroup(root, &op.dest, own_path(&own, "cgroup2", ""), op.flags);
    }
    mount(
        Some("tmpfs"),
        &tp,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )
    .map_err(mount_err(
        "mounting tmpfs for cgroup hierarchies".into(),
        &op.dest,
    ))?;
    for m in &hier {
        let Some(name) = m.mount_point.file_name() else {
            continue;
        };
        let sub = op.dest.join(name);
        let sh = target(root, &sub, true)?;
        let data = if m.fstype == "cgroup" {
            Some(m.options.as_str())
        } else {
            None
        };
        mount(
            Some(m.fstype.as_str()),
            &fd_path(sh.as_fd()),
            Some(m.fstype.as_str()),
            op.flags,
            data,
        )
        .map_err(mount_err(
            format!("mounting cgroup hierarchy {}", m.options),
            &sub,
        ))?;
        bind_own_cgroup(root, &sub, own_path(&own, &m.fstype, &m.options), op.flags)?;
        if m.options.contains(',') && m.fstype == "cgroup" {
            for part in m.options.split(',').filter(|p| !p.starts_with("name=")) {
                let link = op.dest.join(part);
                if !root.exists_nofollow(&link) {
                    let _ = root.symlink(&link, Path::new(name));
                }
            }
        }
    }
    if op.flags.contains(MsFlags::MS_RDONLY) {
        let top = root.resolve(&op.dest)?;
        mount(
            None::<&str>,
            &fd_path(top.as_fd()),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags,
            Some("mode=755"),
        )
        .map_err(mount_err(
            "remounting cgroup tmpfs read-only".into(),
            &op.dest,
        ))?;
    }
    Ok(())
}

/// `(controllers, path)` of each line of `/proc/self/cgroup` (`("", path)` for cgroup2).
/// Init has been placed in the container's cgroup before it mounts anything; inside a
/// cgroup namespace every path reads `/`.
fn own_cgroups() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    parse_proc_cgroup(&text)
}

pub fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// The cgroup path of this process in the hierarchy mounted with `options` (v1: every
/// controller of the line is among the mount's options; v2: the line with none).
fn own_path<'a>(own: &'a [(String, String)], fstype: &str, options: &str) -> Option<&'a str> {
    let opts: Vec<&str> = options.split(',').collect();
    own.iter()
        .find(|(ctrls, _)| {
            if fstype == "cgroup2" {
                ctrls.is_empty()
            } else {
                !ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(&c))
            }
        })
        .map(|(_, p)| p.as_str())
}

/// Without a cgroup namespace a fresh cgroup mount shows the hierarchy's root. Show the
/// container its own cgroup there instead, as runc does (what the JVM and friends read
/// their memory and CPU limits from): bind that directory over the mount point.
fn bind_own_cgroup(root: &Root, dest: &Path, own: Option<&str>, flags: MsFlags) -> Result<()> {
    let Some(rel) = own
        .map(|p| p.trim_start_matches('/'))
        .filter(|p| !p.is_empty())
    else {
        return Ok(());
    };
    let sub = dest.join(rel);
    let src = root.resolve(&sub)?;
    let dst = root.resolve(dest)?;
    mount(
        Some(&fd_path(src.as_fd())),
        &fd_path(dst.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err("binding the container's own cgroup".into(), &sub))?;
    let keep = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let top = root.resolve(dest)?;
    mount(
        None::<&str>,
        &fd_path(top.as_fd()),
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | (flags & keep),
        None::<&str>,
    )
    .map_err(mount_err(
        "remounting the container's own cgroup".into(),
        dest,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The controller list for v1 (e.g. `cpu,cpuacct`, `name=systemd`).
    pub options: String,
}

fn host_cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading", "/proc/self/mountinfo", e))?;
    Ok(parse_cgroup_mounts(&mi))
}

/// cgroup and cgroup2 mounts under /sys/fs/cgroup from a mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let fstype = post[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let mp = PathBuf::from(pre[4]);
        if !mp.starts_with("/sys/fs/cgroup") {
            continue;
        }
        let options = post[2]
            .split(',')
            .filter(|o| {
                !matches!(*o, "rw" | "ro")
                    && !o.starts_with("nsdelegate")
                    && !o.starts_with("memory_recursiveprot")
            })
            .collect::<Vec<_>>()
            .join(",");
        out.push(CgroupMount {
            mount_point: mp,
            fstype: fstype.to_string(),
            options,
        });
    }
    out
}

/// Bind the verified null device over each masked file and an empty read-only tmpfs over
/// each masked directory. Paths that do not exist are skipped, as runc does.
pub fn mask_paths(root: &Root, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let null = verified_dev_null(root)?;
    for p in paths {
        let path = Path::new(p);
        let Ok(h) = root.resolve(path) else { continue };
        let st = nix::sys::stat::fstat(h.as_fd())
            .map_err(|e| Error::sys("masking path", "fstat", path, e))?;
        let tp = fd_path(h.as_fd());
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount(
                Some("tmpfs"),
                &tp,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            )
            .map_err(mount_err("masking directory".into(), path))?;
        } else {
            mount(
                Some(&fd_path(null.as_fd())),
                &tp,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(mount_err("masking file with /dev/null".into(), path))?;
        }
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
        return Err(Error::Other(
            "/dev/null in the container is not the null device (char 1:3): refusing to mask paths with it".into(),
        ));
    }
    Ok(h)
}

pub fn readonly_paths(root: &Root, paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let Ok(h) = root.resolve(path) else { continue };
        let tp = fd_path(h.as_fd());
        mount(
            Some(&tp),
            &tp,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("binding read-only path".into(), path))?;
        remount_bind(
            root,
            path,
            MsFlags::MS_RDONLY
                | MsFlags::MS_REC
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// `pivot_root(".", ".")` in the new root, then detach the old root stacked on top.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let dir = std::fs::File::open(rootfs).map_err(|e| Error::io("opening rootfs", rootfs, e))?;
    nix::unistd::fchdir(&dir).map_err(|e| Error::sys("entering rootfs", "fchdir", rootfs, e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| Error::sys("switching root", "pivot_root", rootfs, e))?;
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
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(mount_err("moving rootfs to /".into(), rootfs))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("entering rootfs", "chroot", rootfs, e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("entering new root", "chdir", "/", e))
}

/// Applied after pivot_root: `rootfsPropagation` shared/unbindable.
pub fn root_propagation(propagation: Option<&str>) -> Result<()> {
    if let Some(f) = propagation.and_then(propagation_option) {
        if f.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
            mount(None::<&str>, "/", None::<&str>, f, None::<&str>).map_err(mount_err(
                "setting rootfs propagation".into(),
                Path::new("/"),
            ))?;
        }
    }
    Ok(())
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
    use super::*;

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
}
