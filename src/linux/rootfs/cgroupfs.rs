//! `type: cgroup` mounts: the host's hierarchies as the container should see them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use super::{attach, fd_path, mount_err, target, MountOp};
use crate::linux::error::{Error, Result};
use crate::linux::inroot::Root;

/// What the parent knows before the clone about the cgroups a `type: cgroup` mount shows:
/// the child's mount namespace starts as a copy of the parent's, so the host's cgroup
/// mounts are the same there, and a new cgroup namespace (made after the child is placed
/// in its cgroup) roots every hierarchy at the container's own cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupHost {
    pub hierarchies: Vec<CgroupMount>,
    /// The container has a new cgroup namespace: its own cgroup is every mount's root,
    /// so nothing is bound over the mounts and `/proc/self/cgroup` need not be read.
    pub own_is_root: bool,
}

impl CgroupHost {
    /// The host's cgroup mounts from this process's mountinfo (read once per process).
    pub fn read(own_is_root: bool) -> Result<CgroupHost> {
        Ok(CgroupHost {
            hierarchies: parse_cgroup_mounts(self_mountinfo()?),
            own_is_root,
        })
    }
}

/// `/proc/self/mountinfo`, read once per process: the start path consults it for the
/// cgroup layout, and nothing gpurun does before the clone changes the host's mounts.
pub fn self_mountinfo() -> Result<&'static str> {
    static TEXT: OnceLock<String> = OnceLock::new();
    if let Some(t) = TEXT.get() {
        return Ok(t);
    }
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading", "/proc/self/mountinfo", e))?;
    Ok(TEXT.get_or_init(|| text))
}

/// `type: cgroup` at /sys/fs/cgroup. On a cgroup2 host one cgroup2 mount; on a v1 or
/// hybrid host a tmpfs with one mount per v1 hierarchy (and `unified`), as runc lays it
/// out. With a cgroup namespace each mount shows the container's own cgroup as its root.
pub(super) fn mount_cgroup(root: &Root, op: &MountOp) -> Result<()> {
    let h = target(root, &op.dest, true)?;
    let tp = fd_path(h.as_fd());
    // The tmpfs is made read-only after the hierarchies are mounted on it; each
    // hierarchy itself gets the spec's flags, `ro` included, so the container cannot
    // write cgroup files unless the spec says rw.
    let tmpfs_flags = op.flags & !MsFlags::MS_RDONLY;
    let read;
    let host = match &op.cgroup {
        Some(h) => h,
        None => {
            read = CgroupHost {
                hierarchies: parse_cgroup_mounts(&read_mountinfo()?),
                own_is_root: false,
            };
            &read
        }
    };
    let hier = &host.hierarchies;
    let own = if host.own_is_root {
        Vec::new()
    } else {
        own_cgroups()
    };
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
    // The tmpfs just made: nothing else can reach it yet, so its entries are made and
    // opened directly beneath it.
    let top = root.resolve(&op.dest)?;
    for m in hier {
        let Some(name) = m.mount_point.file_name() else {
            continue;
        };
        let sub = op.dest.join(name);
        let sh = subdir(top.as_fd(), name, &sub)?;
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
                if part != name {
                    // An existing entry (a hierarchy of that name) is left alone.
                    let _ = nix::unistd::symlinkat(Path::new(name), top.as_fd(), part);
                }
            }
        }
    }
    if op.flags.contains(MsFlags::MS_RDONLY) {
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

/// The directory `name` in the fresh tmpfs `top`, made if needed.
fn subdir(top: BorrowedFd<'_>, name: &std::ffi::OsStr, sub: &Path) -> Result<OwnedFd> {
    match nix::sys::stat::mkdirat(top, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(Error::sys("creating cgroup mount point", "mkdirat", sub, e)),
    }
    nix::fcntl::openat(
        top,
        name,
        nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("opening cgroup mount point", "openat", sub, e))
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
pub(super) fn own_path<'a>(
    own: &'a [(String, String)],
    fstype: &str,
    options: &str,
) -> Option<&'a str> {
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
    let keep = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let what = "binding the container's own cgroup";
    if attach::bind_fd(src.as_fd(), dst.as_fd(), false, what, &sub)?.is_some() {
        // The bind copies the flags of the hierarchy's mount, made with `flags` just
        // before: the classic remount below sets them again, so nothing is left to do.
        return Ok(());
    }
    mount(
        Some(&fd_path(src.as_fd())),
        &fd_path(dst.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err(what.into(), &sub))?;
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

fn read_mountinfo() -> Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading", "/proc/self/mountinfo", e))
}

/// The cgroup and cgroup2 mounts under /sys/fs/cgroup that a mountinfo text shows in
/// view: a later mount on the same point, or on a directory above it, hides them (the
/// bench covers `/sys/fs/cgroup/unified` with a tmpfs to show a pure v1 host).
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out: Vec<CgroupMount> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let mp = PathBuf::from(pre[4]);
        out.retain(|m| !m.mount_point.starts_with(&mp));
        let fstype = post[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
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
