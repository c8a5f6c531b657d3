//! Where the container's cgroup goes: `linux.cgroupsPath` resolved as runc's cgroupfs
//! driver resolves it.
//!
//! - An absolute path is taken from the top of every hierarchy: `/a/b` is
//!   `/sys/fs/cgroup/memory/a/b`, `/sys/fs/cgroup/unified/a/b`, or `/sys/fs/cgroup/a/b` on
//!   a v2 host.
//! - A relative path is taken from the caller's own cgroup, read from `/proc/self/cgroup`,
//!   in each hierarchy separately (on this kind of host the caller may sit in
//!   `memory:/process_api/x` but `cpu:/`). On a v2 host it is taken from the *parent* of the
//!   caller's cgroup, since the caller's own cgroup holds processes and so cannot enable
//!   controllers for a child (runc's `fs2` does the same).
//! - An empty or absent path is the container id, relative (runc's `c.Name = id`).
//!
//! Paths are cleaned lexically first, as runc's `CleanPath`: `..` never climbs above where the
//! path starts, so `../../etc` is `etc`. A path that cleans to nothing (`/`, `.`, `..`) is an
//! error: a container never takes a hierarchy's root or the caller's own cgroup.

use std::path::{Path, PathBuf};

use super::error::CgroupError;
use super::root::{CgroupRoot, Layout};

/// The cleaned `cgroupsPath`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InnerPath {
    /// From the top of each hierarchy; no leading `/`.
    Absolute(String),
    /// From the caller's cgroup.
    Relative(String),
}

/// The container's directory in one v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Placement {
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    pub leaf: PathBuf,
}

/// The container's directory in the cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnifiedPlacement {
    pub mountpoint: PathBuf,
    pub leaf: PathBuf,
}

/// Every directory the container's cgroup consists of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub layout: Layout,
    pub v1: Vec<V1Placement>,
    pub unified: Option<UnifiedPlacement>,
}

/// Lexically cleans a cgroup path; `..` stops at the start of the path.
pub fn clean_path(path: &str) -> (bool, String) {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    (absolute, parts.join("/"))
}

/// The cleaned form of `cgroups_path`, or of `container_id` when the path is empty.
pub fn inner_path(
    cgroups_path: Option<&str>,
    container_id: &str,
) -> Result<InnerPath, CgroupError> {
    match cgroups_path.filter(|p| !p.is_empty()) {
        Some(path) => {
            let (absolute, cleaned) = clean_path(path);
            let invalid = |reason: &str| CgroupError::InvalidPath {
                path: path.to_string(),
                reason: reason.to_string(),
            };
            if cleaned.is_empty() && absolute {
                return Err(invalid("it names the root of the cgroup hierarchy"));
            }
            if cleaned.is_empty() {
                return Err(invalid("it names the caller's own cgroup"));
            }
            if cleaned.contains('\0') {
                return Err(invalid("it contains a NUL byte"));
            }
            Ok(if absolute {
                InnerPath::Absolute(cleaned)
            } else {
                InnerPath::Relative(cleaned)
            })
        }
        None => {
            let (_, cleaned) = clean_path(container_id);
            if cleaned.is_empty() || cleaned.contains('\0') {
                return Err(CgroupError::InvalidPath {
                    path: String::new(),
                    reason: format!("the container id {container_id:?} gives no cgroup name"),
                });
            }
            Ok(InnerPath::Relative(cleaned))
        }
    }
}

/// Where the container's cgroup goes on the host described by `root`.
pub fn resolve(
    root: &CgroupRoot,
    cgroups_path: Option<&str>,
    container_id: &str,
) -> Result<Placement, CgroupError> {
    let inner = inner_path(cgroups_path, container_id)?;
    let shown = cgroups_path.unwrap_or_default();
    let mut v1 = Vec::new();
    for h in root.v1_hierarchies() {
        let name = h.controllers.join(",");
        let leaf = leaf_in(
            &h.mountpoint,
            &h.mount_root,
            h.own.as_deref(),
            &inner,
            false,
        )
        .map_err(|reason| CgroupError::InvalidPath {
            path: shown.to_string(),
            reason: format!("in the {name} hierarchy: {reason}"),
        })?;
        v1.push(V1Placement {
            controllers: h.controllers.clone(),
            mountpoint: h.mountpoint.clone(),
            leaf,
        });
    }
    let unified = match root.unified() {
        Some(u) => {
            let parent_of_own = root.layout() == Layout::Unified;
            let leaf = leaf_in(
                &u.mountpoint,
                &u.mount_root,
                u.own.as_deref(),
                &inner,
                parent_of_own,
            )
            .map_err(|reason| CgroupError::InvalidPath {
                path: shown.to_string(),
                reason: format!("in the cgroup2 hierarchy: {reason}"),
            })?;
            Some(UnifiedPlacement {
                mountpoint: u.mountpoint.clone(),
                leaf,
            })
        }
        None => None,
    };
    Ok(Placement {
        layout: root.layout(),
        v1,
        unified,
    })
}

fn leaf_in(
    mountpoint: &Path,
    mount_root: &str,
    own: Option<&str>,
    inner: &InnerPath,
    parent_of_own: bool,
) -> Result<PathBuf, String> {
    match inner {
        InnerPath::Absolute(p) => Ok(mountpoint.join(p)),
        InnerPath::Relative(p) => {
            let own = own.ok_or("the caller's cgroup is not listed in /proc/self/cgroup")?;
            let own = own.trim_end_matches(" (deleted)");
            let (_, own) = clean_path(own);
            let (_, mount_root) = clean_path(mount_root);
            let below = if mount_root.is_empty() {
                own.clone()
            } else if own == mount_root {
                String::new()
            } else {
                own.strip_prefix(&format!("{mount_root}/"))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        format!(
                            "the caller's cgroup /{own} is outside the mount's root /{mount_root}"
                        )
                    })?
            };
            let base = if parent_of_own {
                below
                    .rsplit_once('/')
                    .map(|(parent, _)| parent)
                    .unwrap_or("")
            } else {
                below.as_str()
            };
            let mut leaf = mountpoint.to_path_buf();
            if !base.is_empty() {
                leaf.push(base);
            }
            leaf.push(p);
            Ok(leaf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    fn hybrid() -> CgroupRoot {
        CgroupRoot::from_tables("/sys/fs/cgroup", HYBRID_MOUNTINFO, HYBRID_CGROUP)
            .expect("hybrid tables parse")
    }

    fn leaves(p: &Placement) -> Vec<String> {
        let mut out: Vec<String> = p.v1.iter().map(|v| v.leaf.display().to_string()).collect();
        if let Some(u) = &p.unified {
            out.push(u.leaf.display().to_string());
        }
        out
    }

    #[test]
    fn clean_path_never_climbs_above_its_start() {
        assert_eq!(clean_path("/a/../../b"), (true, "b".to_string()));
        assert_eq!(clean_path("../../etc"), (false, "etc".to_string()));
        assert_eq!(clean_path("a/./b//c/"), (false, "a/b/c".to_string()));
        assert_eq!(clean_path(".."), (false, String::new()));
    }

    #[test]
    fn absolute_path_starts_at_the_top_of_every_hierarchy() {
        let p = resolve(&hybrid(), Some("/gpurun/ctr1"), "id").expect("resolves");
        assert_eq!(
            leaves(&p),
            [
                "/sys/fs/cgroup/cpu/gpurun/ctr1",
                "/sys/fs/cgroup/memory/gpurun/ctr1",
                "/sys/fs/cgroup/systemd/gpurun/ctr1",
                "/sys/fs/cgroup/unified/gpurun/ctr1",
            ]
        );
    }

    #[test]
    fn relative_path_starts_at_the_callers_cgroup_in_each_hierarchy() {
        let p = resolve(&hybrid(), Some("pod/ctr1"), "id").expect("resolves");
        assert_eq!(
            leaves(&p),
            [
                "/sys/fs/cgroup/cpu/pod/ctr1",
                "/sys/fs/cgroup/memory/process_api/abc/pod/ctr1",
                "/sys/fs/cgroup/systemd/pod/ctr1",
                "/sys/fs/cgroup/unified/pod/ctr1",
            ]
        );
    }

    #[test]
    fn empty_path_is_the_container_id_relative_to_the_caller() {
        for path in [None, Some("")] {
            let p = resolve(&hybrid(), path, "ctr-9").expect("resolves");
            assert_eq!(
                p.v1[1].leaf,
                Path::new("/sys/fs/cgroup/memory/process_api/abc/ctr-9")
            );
        }
    }

    #[test]
    fn v2_relative_path_starts_at_the_parent_of_the_callers_cgroup() {
        let mi = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let root = CgroupRoot::from_tables("/sys/fs/cgroup", mi, "0::/user.slice/s-1.scope\n")
            .expect("v2 tables parse");
        let p = resolve(&root, Some("gpurun/c"), "id").expect("resolves");
        assert!(p.v1.is_empty());
        assert_eq!(leaves(&p), ["/sys/fs/cgroup/user.slice/gpurun/c"]);
        let abs = resolve(&root, Some("/gpurun/c"), "id").expect("resolves");
        assert_eq!(leaves(&abs), ["/sys/fs/cgroup/gpurun/c"]);
    }

    #[test]
    fn mount_root_below_slash_is_subtracted_from_the_callers_cgroup() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let root = CgroupRoot::from_tables("/sys/fs/cgroup", mi, "4:memory:/docker/abc/inner\n")
            .expect("tables parse");
        let p = resolve(&root, Some("c"), "id").expect("resolves");
        assert_eq!(leaves(&p), ["/sys/fs/cgroup/memory/inner/c"]);
    }

    #[test]
    fn paths_naming_a_root_or_the_callers_cgroup_are_rejected() {
        for bad in ["/", "/..", ".", "..", "a/.."] {
            let err = resolve(&hybrid(), Some(bad), "id").expect_err(bad);
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn relative_path_without_an_own_cgroup_entry_is_an_error() {
        let root = CgroupRoot::from_tables("/sys/fs/cgroup", HYBRID_MOUNTINFO, "0::/\n")
            .expect("tables parse");
        let err = resolve(&root, Some("c"), "id").expect_err("no own cgroup for cpu");
        assert!(err.to_string().contains("cpu hierarchy"), "{err}");
        assert!(resolve(&root, Some("/c"), "id").is_ok());
    }
}
