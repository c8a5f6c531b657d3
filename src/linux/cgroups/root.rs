//! Where the cgroup hierarchies are: which layout the host has (v2, hybrid, v1), the mount
//! point and controllers of each hierarchy, and the caller's own cgroup in each one.
//!
//! Everything is read from two tables, `/proc/self/mountinfo` and `/proc/self/cgroup`, so a
//! test can describe a fake host by pointing [`CgroupRoot::new`] at a temp dir that holds a
//! fake cgroupfs and the two tables.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::CgroupError;

/// The v1 controllers gpurun places a container in (runc's list), plus the named systemd
/// hierarchy. Other named hierarchies are left alone.
pub(crate) const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "name=systemd",
];

/// How the host mounts its cgroups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// cgroup2 at the mount root (`/sys/fs/cgroup`): one hierarchy, one directory.
    Unified,
    /// v1 hierarchies under the mount root plus a cgroup2 mount beside them
    /// (`/sys/fs/cgroup/unified`) that holds only what is not bound to v1.
    Hybrid,
    /// v1 hierarchies only.
    Legacy,
}

/// One mounted v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mountpoint: PathBuf,
    /// Controllers bound to it (`cpu`, `cpuacct`, `name=systemd`, ...).
    pub controllers: Vec<String>,
    /// The cgroup the mount shows at its top (`/` unless a cgroup namespace or bind mount).
    pub mount_root: String,
    /// The caller's cgroup in this hierarchy, from `/proc/self/cgroup`.
    pub own: Option<String>,
}

/// The cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedHierarchy {
    pub mountpoint: PathBuf,
    pub mount_root: String,
    pub own: Option<String>,
}

/// The host's cgroup mounts as seen by the caller. [`CgroupRoot::system`] reads the real
/// ones under `/sys/fs/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot {
    mount: PathBuf,
    layout: Layout,
    v1: Vec<V1Hierarchy>,
    unified: Option<UnifiedHierarchy>,
}

impl CgroupRoot {
    /// The real host: `/sys/fs/cgroup`, described by `/proc/self/{mountinfo,cgroup}`.
    ///
    /// Read once per process and then cloned: the runtime's own cgroup and the host's
    /// mounts do not change while one gpurun command runs, and create needs the tables
    /// several times (the planned state, the cgroup, the container's cgroup mount).
    pub fn system() -> Result<Self, CgroupError> {
        static SYSTEM: std::sync::OnceLock<CgroupRoot> = std::sync::OnceLock::new();
        if let Some(r) = SYSTEM.get() {
            return Ok(r.clone());
        }
        let mountinfo = crate::linux::rootfs::self_mountinfo().map_err(|e| CgroupError::Read {
            path: PathBuf::from("/proc/self/mountinfo"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let own = read_table(Path::new("/proc/self/cgroup"))?;
        let root = Self::from_tables("/sys/fs/cgroup", mountinfo, &own)?;
        Ok(SYSTEM.get_or_init(|| root).clone())
    }

    /// The cgroup mounts under `mount`, described by `<proc_self>/mountinfo` and
    /// `<proc_self>/cgroup`.
    pub fn new(
        mount: impl Into<PathBuf>,
        proc_self: impl AsRef<Path>,
    ) -> Result<Self, CgroupError> {
        let proc_self = proc_self.as_ref();
        let mountinfo = read_table(&proc_self.join("mountinfo"))?;
        let own = read_table(&proc_self.join("cgroup"))?;
        Self::from_tables(mount, &mountinfo, &own)
    }

    /// The cgroup mounts under `mount` given the text of a mountinfo table and of a
    /// `/proc/<pid>/cgroup` table.
    pub fn from_tables(
        mount: impl Into<PathBuf>,
        mountinfo: &str,
        proc_cgroup: &str,
    ) -> Result<Self, CgroupError> {
        let mount = mount.into();
        let own = parse_proc_cgroup(proc_cgroup);
        let own_of = |controller: &str| {
            own.iter()
                .find(|(ctrls, _)| ctrls.iter().any(|c| c == controller))
                .map(|(_, path)| path.clone())
        };

        let mut v1: Vec<V1Hierarchy> = Vec::new();
        let mut unified: Option<UnifiedHierarchy> = None;
        let mut root_is_cgroup2 = false;
        for m in parse_mountinfo(mountinfo) {
            if m.mountpoint == mount {
                // A later mount on the same point hides the earlier one.
                root_is_cgroup2 = m.fstype == "cgroup2";
                v1.clear();
                unified = None;
                if root_is_cgroup2 {
                    unified = Some(UnifiedHierarchy {
                        mountpoint: m.mountpoint.clone(),
                        mount_root: m.root.clone(),
                        own: own_of(""),
                    });
                }
                continue;
            }
            if m.mountpoint.parent() != Some(mount.as_path()) {
                continue;
            }
            v1.retain(|h| h.mountpoint != m.mountpoint);
            if unified
                .as_ref()
                .is_some_and(|u| u.mountpoint == m.mountpoint)
            {
                unified = None;
            }
            match m.fstype.as_str() {
                "cgroup2" if !root_is_cgroup2 => {
                    unified = Some(UnifiedHierarchy {
                        mountpoint: m.mountpoint.clone(),
                        mount_root: m.root.clone(),
                        own: own_of(""),
                    });
                }
                "cgroup" => {
                    let controllers: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect();
                    if let Some(first) = controllers.first() {
                        v1.push(V1Hierarchy {
                            own: own_of(first),
                            mountpoint: m.mountpoint.clone(),
                            controllers,
                            mount_root: m.root.clone(),
                        });
                    }
                }
                _ => {}
            }
        }

        let layout = if root_is_cgroup2 {
            v1.clear();
            Layout::Unified
        } else if !v1.is_empty() && unified.is_some() {
            Layout::Hybrid
        } else if !v1.is_empty() {
            Layout::Legacy
        } else {
            return Err(CgroupError::Unsupported {
                what: "discovery",
                reason: format!(
                    "no cgroup filesystem is mounted at or under {}",
                    mount.display()
                ),
            });
        };
        Ok(CgroupRoot {
            mount,
            layout,
            v1,
            unified,
        })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn v1_hierarchies(&self) -> &[V1Hierarchy] {
        &self.v1
    }

    pub fn unified(&self) -> Option<&UnifiedHierarchy> {
        self.unified.as_ref()
    }
}

fn read_table(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

struct MountEntry {
    root: String,
    mountpoint: PathBuf,
    fstype: String,
    super_options: String,
}

/// Parses the lines of a mountinfo table that matter here; malformed lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 4 {
            continue;
        }
        out.push(MountEntry {
            root: unescape(fields[3]),
            mountpoint: PathBuf::from(unescape(fields[4])),
            fstype: fields[sep + 1].to_string(),
            super_options: fields[sep + 3].to_string(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/<pid>/cgroup`: `id:controllers:path` lines; the cgroup2 line has no controllers,
/// which is returned as the single controller `""`.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            let ctrls = if ctrls.is_empty() {
                vec![String::new()]
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some((ctrls, path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/elogind rw,relatime - cgroup cgroup rw,name=elogind
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
5:devices:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_host_lists_v1_hierarchies_and_unified_mount() {
        let root = CgroupRoot::from_tables("/sys/fs/cgroup", HYBRID_MOUNTINFO, HYBRID_CGROUP)
            .expect("hybrid tables parse");
        assert_eq!(root.layout(), Layout::Hybrid);
        let names: Vec<&str> = root
            .v1_hierarchies()
            .iter()
            .flat_map(|h| h.controllers.iter().map(String::as_str))
            .collect();
        assert_eq!(
            names,
            ["cpu", "cpuacct", "memory", "devices", "name=systemd"]
        );
        let memory = &root.v1_hierarchies()[2];
        assert_eq!(memory.own.as_deref(), Some("/process_api/abc"));
        let unified = root.unified().expect("unified mount");
        assert_eq!(unified.mountpoint, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(unified.own.as_deref(), Some("/"));
    }

    #[test]
    fn cgroup2_at_the_mount_root_is_unified_layout() {
        let mi = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let root = CgroupRoot::from_tables("/sys/fs/cgroup", mi, "0::/user.slice/a.scope\n")
            .expect("v2 tables parse");
        assert_eq!(root.layout(), Layout::Unified);
        assert!(root.v1_hierarchies().is_empty());
        assert_eq!(
            root.unified().and_then(|u| u.own.as_deref()),
            Some("/user.slice/a.scope")
        );
    }

    #[test]
    fn v1_without_cgroup2_is_legacy_and_comounted_controllers_share_a_hierarchy() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";
        let root = CgroupRoot::from_tables("/sys/fs/cgroup", mi, "3:cpu,cpuacct:/x\n")
            .expect("v1 tables parse");
        assert_eq!(root.layout(), Layout::Legacy);
        let h = &root.v1_hierarchies()[0];
        assert_eq!(h.controllers, ["cpu", "cpuacct"]);
        assert_eq!(h.own.as_deref(), Some("/x"));
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let err = CgroupRoot::from_tables("/sys/fs/cgroup", "", "").expect_err("nothing mounted");
        assert!(err.to_string().contains("no cgroup filesystem"), "{err}");
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape("plain"), "plain");
    }
}
