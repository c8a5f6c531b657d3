//! `linux.resources`: hugepages, network, rdma and the `unified` map.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxHugepageLimit, LinuxNetwork, LinuxRdma};

use super::error::CgroupError;
use super::fs;
use super::root::Layout;
use super::target::{Place, Target};

fn invalid(msg: String) -> CgroupError {
    CgroupError::InvalidResources(msg)
}

/// Hugepage limits. Kubernetes sends one per page size the node has, usually with limit 0,
/// so a zero limit where the controller or the page size is missing only warns.
pub(crate) fn hugepages(
    t: &Target<'_>,
    limits: &[LinuxHugepageLimit],
    warnings: &mut Vec<String>,
) -> Result<(), CgroupError> {
    if limits.is_empty() {
        return Ok(());
    }
    let place = t.place("hugetlb", "hugetlb");
    for l in limits {
        let size = l.page_size();
        if size.is_empty() || size.contains('/') || size.contains('.') {
            return Err(invalid(format!(
                "hugepageLimits pageSize {size:?} is not a size like 2MB"
            )));
        }
        let Some(place) = place else {
            if l.limit() == 0 {
                warnings.push(format!(
                    "linux.resources.hugepageLimits {size}=0 not applied: the hugetlb \
                     controller is not available for {}",
                    t.shown_path().display()
                ));
                continue;
            }
            return Err(t.missing("hugetlb"));
        };
        let (dir, file, rsvd) = match place {
            Place::V1(dir) => (dir, format!("hugetlb.{size}.limit_in_bytes"), None),
            Place::V2(dir) => (
                dir,
                format!("hugetlb.{size}.max"),
                Some(format!("hugetlb.{size}.rsvd.max")),
            ),
        };
        if !fs::exists(dir, &file) {
            if l.limit() == 0 {
                warnings.push(format!(
                    "linux.resources.hugepageLimits {size}=0 not applied: this host has no \
                     {size} hugepages ({} does not exist)",
                    dir.join(&file).display()
                ));
                continue;
            }
            return Err(invalid(format!(
                "hugepageLimits pageSize {size} is not supported here: {} does not exist",
                dir.join(&file).display()
            )));
        }
        let value = l.limit().max(0).to_string();
        fs::write(dir, &file, &value)?;
        if let Some(rsvd) = rsvd.filter(|f| fs::exists(dir, f)) {
            fs::write(dir, &rsvd, &value)?;
        }
    }
    Ok(())
}

pub(crate) fn network(t: &Target<'_>, n: &LinuxNetwork) -> Result<(), CgroupError> {
    if let Some(id) = n.class_id() {
        match t.v1.get("net_cls") {
            Some(dir) => fs::write(dir, "net_cls.classid", &id.to_string())?,
            None => return Err(t.missing("net_cls")),
        }
    }
    let prios = n.priorities().as_deref().unwrap_or_default();
    if !prios.is_empty() {
        let Some(dir) = t.v1.get("net_prio") else {
            return Err(t.missing("net_prio"));
        };
        for p in prios {
            fs::write(
                dir,
                "net_prio.ifpriomap",
                &format!("{} {}", p.name(), p.priority()),
            )?;
        }
    }
    Ok(())
}

pub(crate) fn rdma(t: &Target<'_>, rdma: &HashMap<String, LinuxRdma>) -> Result<(), CgroupError> {
    if rdma.is_empty() {
        return Ok(());
    }
    let (Place::V1(dir) | Place::V2(dir)) = t.require("rdma", "rdma")?;
    let mut names: Vec<&String> = rdma.keys().collect();
    names.sort();
    for name in names {
        let limit = &rdma[name];
        let mut line = name.clone();
        if let Some(h) = limit.hca_handles() {
            line.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = limit.hca_objects() {
            line.push_str(&format!(" hca_object={o}"));
        }
        if line.len() > name.len() {
            fs::write(dir, "rdma.max", &line)?;
        }
    }
    Ok(())
}

/// Core files the runtime manages itself: never written from the `unified` map.
const MANAGED: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "cgroup.kill",
    "cgroup.freeze",
    "cgroup.type",
    "cgroup.controllers",
    "cgroup.events",
    "cgroup.stat",
];

/// The controller a `unified` key belongs to (`memory.high` → `memory`), after checking the
/// key names a file of this cgroup and nothing else.
pub(crate) fn unified_key_controller(key: &str) -> Result<&str, CgroupError> {
    let bad = |why: &str| invalid(format!("unified key {key:?} {why}"));
    if key.contains('/') || key.contains('\0') || key.starts_with('.') {
        return Err(bad("is not a cgroup file name"));
    }
    let Some((controller, _)) = key.split_once('.') else {
        return Err(bad("is not of the form <controller>.<file>"));
    };
    if controller.is_empty() {
        return Err(bad("is not of the form <controller>.<file>"));
    }
    if MANAGED.contains(&key) {
        return Err(bad("is managed by the runtime"));
    }
    Ok(controller)
}

/// The `unified` map, written last so it overrides the fields above, as runc does. Each key
/// must be a file of the cgroup2 leaf whose controller is enabled there.
pub(crate) fn unified(t: &Target<'_>, map: &HashMap<String, String>) -> Result<(), CgroupError> {
    if map.is_empty() {
        return Ok(());
    }
    let Some(dir) = t.unified.filter(|_| t.layout != Layout::Legacy) else {
        return Err(invalid(
            "linux.resources.unified needs cgroup v2, and this host has only cgroup v1".to_string(),
        ));
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in &keys {
        let controller = unified_key_controller(key)?;
        if controller != "cgroup" && !t.unified_controllers.iter().any(|c| c == controller) {
            return Err(CgroupError::MissingController {
                controller: controller.to_string(),
                path: dir.to_path_buf(),
            });
        }
        if !fs::exists(dir, key) {
            return Err(invalid(format!(
                "unified key {key:?}: {} does not exist",
                dir.join(key).display()
            )));
        }
    }
    for key in keys {
        fs::write(dir, key, &map[key])?;
    }
    Ok(())
}
