//! Namespace flags, joining by path, and the order they are entered in.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;

use crate::linux::error::{Error, Result};

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME (0x80) is not in nix's CloneFlags.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80),
    }
}

pub fn name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

/// A namespace to join, opened in the parent so a bad path fails `create` early.
#[derive(Debug)]
pub struct Join {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

pub fn open_join(typ: LinuxNamespaceType, path: &Path) -> Result<Join> {
    let f = File::open(path).map_err(|source| Error::JoinNamespace {
        kind: name(typ),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Join {
        typ,
        path: path.to_path_buf(),
        fd: f.into(),
    })
}

/// The namespace to join is the one this process is in already.
pub fn is_own(j: &Join) -> bool {
    let own = format!("/proc/self/ns/{}", proc_name(j.typ));
    match (
        nix::sys::stat::fstat(&j.fd),
        nix::sys::stat::stat(own.as_str()),
    ) {
        (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
        _ => false,
    }
}

/// The namespace's name under `/proc/<pid>/ns/`.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Time => "time",
    }
}

/// The order namespaces are joined in: the user namespace first, so that the others
/// (owned by it) can be entered with its capabilities; the mount namespace last among
/// the rest because joining it changes which paths the others' fds were opened from
/// (they are fds already, so this is belt and braces).
pub fn join_order(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 9,
        _ => 5,
    }
}

pub fn setns(j: &Join) -> Result<()> {
    nix::sched::setns(&j.fd, flag(j.typ)).map_err(|errno| {
        Error::sys(
            format!("joining {} namespace", name(j.typ)),
            "setns",
            &j.path,
            errno,
        )
    })
}
