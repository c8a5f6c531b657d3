//! Mount options: flags, propagation and recursive attributes, resolved in the parent.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use crate::linux::error::{Error, Result};

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
    /// For `type: cgroup`: what the parent already knows of the host's cgroups (the
    /// plan fills it); without it the child reads `/proc/self/{mountinfo,cgroup}`.
    pub cgroup: Option<super::CgroupHost>,
}

pub(super) const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
/// The atime modes are one field, not bits: `mount_setattr` takes a new mode only with the
/// whole field in `attr_clr` (EINVAL otherwise).
const MOUNT_ATTR__ATIME: u64 = 0x70;
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
        "iversion" => (MsFlags::MS_I_VERSION, e),
        "noiversion" => (e, MsFlags::MS_I_VERSION),
        "lazytime" => (MsFlags::MS_LAZYTIME, e),
        "nolazytime" => (e, MsFlags::MS_LAZYTIME),
        _ => return None,
    })
}

pub(super) fn propagation_option(o: &str) -> Option<MsFlags> {
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
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        // Leaving noatime, strict atime or relatime goes back to the kernel's default mode.
        "ratime" | "rrelatime" | "rnorelatime" | "rnostrictatime" => {
            (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME)
        }
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
        "iversion",
        "noiversion",
        "lazytime",
        "nolazytime",
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
        "rrelatime",
        "rnorelatime",
        "rnostrictatime",
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
        let md = std::fs::metadata(src).map_err(|source| Error::BindSource {
            dest: m.destination().clone(),
            src: src.clone(),
            source,
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
        cgroup: None,
    })
}
