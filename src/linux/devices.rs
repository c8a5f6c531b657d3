//! Device nodes in the container's `/dev`: the runtime spec's default devices, then
//! `linux.devices`, then the standard symlinks. Inside a user namespace (where mknod is
//! not allowed) the host's node is bind-mounted instead, as runc does; never without a
//! mount namespace of the container's own, where that bind would land in the host's
//! mount table.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::linux::inroot::Root;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::linux::error::{Error, Result};
use crate::linux::rootfs::fd_path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub path: PathBuf,
    /// 'c', 'b' or 'p'.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The runtime spec's mandatory devices.
pub fn defaults() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .iter()
    .map(|(n, ma, mi)| Device {
        path: PathBuf::from(format!("/dev/{n}")),
        kind: 'c',
        major: *ma,
        minor: *mi,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Result<Device> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::P => 'p',
        LinuxDeviceType::A => {
            return Err(Error::Config(format!(
                "linux.devices: {}: type \"a\" is only valid in device cgroup rules",
                d.path().display()
            )))
        }
    };
    if d.major() < 0 || d.minor() < 0 {
        return Err(Error::Config(format!(
            "linux.devices: {}: major and minor must not be negative",
            d.path().display()
        )));
    }
    Ok(Device {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// How a device node comes into the container's `/dev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeSource {
    /// mknod, and where that is refused (EPERM) a bind of the host's node.
    MknodOrBind,
    /// A bind of the host's node (a user namespace cannot mknod).
    BindFromHost,
    /// mknod only: the container shares the host's mount table.
    MknodOnly,
}

pub fn create_all(root: &Root, devices: &[Device], how: NodeSource) -> Result<()> {
    for d in devices {
        create(root, d, how)?;
    }
    Ok(())
}

fn create(root: &Root, d: &Device, how: NodeSource) -> Result<()> {
    let name = d
        .path
        .file_name()
        .ok_or_else(|| Error::Config(format!("linux.devices: bad path {}", d.path.display())))?;
    let parent = d.path.parent().unwrap_or(Path::new("/dev"));
    let dir = root.mkdir_all(parent, 0o755)?;
    if how == NodeSource::BindFromHost {
        return bind_host_node(root, d);
    }
    let kind = match d.kind {
        'b' => SFlag::S_IFBLK,
        'p' => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    match mknodat(
        dir.as_fd(),
        name,
        kind,
        Mode::from_bits_truncate(d.mode),
        makedev(d.major, d.minor),
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) => return Ok(()),
        Err(nix::errno::Errno::EPERM) if how == NodeSource::MknodOrBind => {
            return bind_host_node(root, d)
        }
        Err(e) => return Err(Error::sys("creating device node", "mknodat", &d.path, e)),
    }
    // mknod applies the umask; set the exact mode and owner the spec asked for.
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(d.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| Error::sys("setting device mode", "fchmodat", &d.path, e))?;
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::sys("setting device owner", "fchownat", &d.path, e))
}

fn bind_host_node(root: &Root, d: &Device) -> Result<()> {
    root.create_file(&d.path, 0o644)?;
    let h = root.resolve_nofollow(&d.path)?;
    mount(
        Some(&d.path),
        &fd_path(h.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys("bind-mounting host device", "mount", &d.path, e))
}

/// `/dev/ptmx`, `/dev/fd`, stdin/stdout/stderr (and `/dev/core` where the host has
/// `/proc/kcore`), created relative to the container's `/dev` directory fd.
pub fn symlinks(root: &Root) -> Result<()> {
    let mut links = vec![
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/dev/core", "/proc/kcore"));
    }
    for (link, target) in links {
        let link = Path::new(link);
        // What the image or a bind mount already put there stays as it is.
        if root.exists_nofollow(link) {
            continue;
        }
        root.symlink(link, Path::new(target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_devices_are_the_spec_list() {
        let d = defaults();
        let names: Vec<_> = d.iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        assert_eq!((d[0].major, d[0].minor), (1, 3));
    }

    #[test]
    fn spec_devices_keep_mode_and_owner() {
        let ld: LinuxDevice = serde_json::from_value(serde_json::json!({
            "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 8630, "uid": 0, "gid": 5
        }))
        .expect("device");
        let d = from_spec(&ld).expect("from_spec");
        assert_eq!(
            (d.kind, d.major, d.minor, d.mode, d.gid),
            ('c', 10, 229, 0o666, 5)
        );
    }
}
