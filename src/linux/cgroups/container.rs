//! The face the runtime sees: one container's cgroup, planned and made from its spec,
//! recorded in the state file, and rebuilt from that record by every later call.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Spec};

use super::error::CgroupError;
use super::record::StoredCgroup;
use super::{
    default_device_rules, path, systemd_cgroup, Cgroup, CgroupConfig, CgroupRoot, CgroupState,
    Driver, OomWatch,
};

/// A container's cgroup.
#[derive(Debug)]
pub struct ContainerCgroup {
    cg: Cgroup,
}

/// The device rules the cgroup gets: the spec's rules in order, then the runtime spec's
/// default devices last, so that no rule in a spec can take `/dev/null` away from the
/// container (rules are last-match). A `linux.devices` entry only makes the node: as in
/// runc, opening it takes a rule in `linux.resources.devices` (the GPU edits add both), so
/// a spec that lists `/dev/sda` does not thereby get the host's disk.
pub fn device_rules(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
    let mut rules: Vec<LinuxDeviceCgroup> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    rules.extend(default_device_rules());
    rules
}

fn cgroups_path(spec: &Spec) -> Option<String> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
}

impl ContainerCgroup {
    /// Creates the container's cgroup, limits and device rules before any process joins.
    /// Returns warnings for fields accepted but not applied.
    pub fn create(
        spec: &Spec,
        id: &str,
        systemd: bool,
    ) -> Result<(ContainerCgroup, Vec<String>), CgroupError> {
        let root = CgroupRoot::system()?;
        let mut resources: LinuxResources = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        resources.set_devices(Some(device_rules(spec)));
        let path = cgroups_path(spec);
        let cfg = CgroupConfig {
            cgroups_path: path.as_deref(),
            container_id: id,
            resources: Some(&resources),
            systemd,
            root: &root,
        };
        let (cg, warnings) = Cgroup::create(&cfg)?;
        Ok((ContainerCgroup { cg }, warnings))
    }

    /// The record of the cgroup [`create`](Self::create) is about to make, with every
    /// directory that does not exist yet listed as created. Saved before the directories
    /// are made, so a `gpurun create` killed in between leaves nothing `delete` cannot
    /// find. `None` where the cgroup cannot be resolved (create then fails and records
    /// nothing).
    pub fn plan(spec: &Spec, id: &str, systemd: bool) -> Option<StoredCgroup> {
        planned(cgroups_path(spec).as_deref(), id, systemd).map(StoredCgroup::from)
    }

    /// Rebuilds the container's cgroup from its record; a record that cannot be decoded is
    /// an error naming the state file.
    pub fn open(record: &StoredCgroup) -> Result<ContainerCgroup, CgroupError> {
        record.open().map(|cg| ContainerCgroup { cg })
    }

    /// What `delete` removes. A decodable record is used as it is. For one that cannot be
    /// decoded, the cgroup is found again the way create found it: `cgroups_path` (the
    /// stored spec's `linux.cgroupsPath`), the id and the driver, resolved on this host.
    /// Raw paths in the broken record are never trusted on their own (anything could be
    /// written there), and scanning the hierarchies for the container's name could match
    /// another container's cgroup of the same name. A relative path depends on the
    /// caller's own cgroup, which may differ from the creator's: it is used only when the
    /// record, as far as it can be read, names every directory it resolves to. `None`
    /// where nothing could be found safely (with a warning).
    pub fn for_removal(
        record: Option<&StoredCgroup>,
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Option<ContainerCgroup> {
        let record = record?;
        let broken = match ContainerCgroup::open(record) {
            Ok(cg) => return Some(cg),
            Err(e) => e,
        };
        let found = planned(cgroups_path, id, systemd)
            .filter(|st| confirmed(st, record, cgroups_path, systemd));
        let Some(mut st) = found else {
            crate::log::warn(&format!(
                "{broken}; its cgroup cannot be found safely from linux.cgroupsPath and is left"
            ));
            return None;
        };
        crate::log::warn(&format!(
            "{broken}; removing the cgroup that linux.cgroupsPath resolves to: {}",
            st.shown_path().display()
        ));
        st.created = created_parents(&st, record);
        Some(ContainerCgroup {
            cg: Cgroup::from_state(&st),
        })
    }

    pub fn record(&self) -> StoredCgroup {
        StoredCgroup::from(self.cg.state())
    }

    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        self.cg.add_task(pid)
    }

    /// Puts init in the cgroup; under the systemd driver this creates the unit.
    pub fn add_init(&mut self, pid: i32) -> Result<(), CgroupError> {
        for w in self.cg.add_init(pid)? {
            crate::log::warn(&w);
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.cg.pids()
    }

    pub fn watch_oom(&self) -> Result<OomWatch, CgroupError> {
        self.cg.watch_oom()
    }

    pub fn signal_all(&self, sig: Signal) -> Result<(), CgroupError> {
        self.cg.signal_all(sig)
    }

    /// A cgroup whose freezer cannot be read is shown as not frozen: `state` and `list`
    /// must not fail over it.
    pub fn is_frozen(&self) -> bool {
        self.cg.is_frozen().unwrap_or(false)
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.cg.freeze()
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.cg.thaw()
    }

    /// `update`: the given resources only. Device rules are never touched (runc sets
    /// SkipDevices), so rules added for GPUs at create survive.
    pub fn update(&self, r: &LinuxResources) -> Result<Vec<String>, CgroupError> {
        let mut r = r.clone();
        r.set_devices(None);
        self.cg.update(&r)
    }

    /// One `events` record in runc's shape.
    pub fn stats_event(&self, id: &str) -> Result<serde_json::Value, CgroupError> {
        Ok(serde_json::json!({"type": "stats", "id": id, "data": self.cg.stats()?}))
    }

    pub fn oom_events(&self) -> Result<u64, CgroupError> {
        self.cg.oom_events()
    }

    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.cg.destroy()
    }
}

/// The state of the cgroup that `cgroups_path` resolves to on this host, before or after
/// it is made.
fn planned(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Option<CgroupState> {
    let root = CgroupRoot::system().ok()?;
    if systemd {
        // The unit and its cgroup's paths: delete stops the one and removes the others.
        return systemd_cgroup::planned_state(&root, cgroups_path.unwrap_or(""), id);
    }
    let placement = path::resolve(&root, cgroups_path, id).ok()?;
    let mut created = Vec::new();
    let mut v1 = std::collections::BTreeMap::new();
    for v in &placement.v1 {
        missing_dirs(&v.mountpoint, &v.leaf, &mut created);
        for c in &v.controllers {
            v1.insert(c.clone(), v.leaf.clone());
        }
    }
    if let Some(u) = &placement.unified {
        missing_dirs(&u.mountpoint, &u.leaf, &mut created);
    }
    Some(CgroupState {
        driver: Driver::Cgroupfs,
        layout: placement.layout,
        v1,
        unified: placement.unified.as_ref().map(|u| u.leaf.clone()),
        unified_mount: placement.unified.as_ref().map(|u| u.mountpoint.clone()),
        created,
        unit: None,
    })
}

/// The directories from below `top` down to `leaf` that do not exist, parents first.
fn missing_dirs(top: &Path, leaf: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rel) = leaf.strip_prefix(top) else {
        return;
    };
    let mut dir = top.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        if !dir.exists() && !out.contains(&dir) {
            out.push(dir.clone());
        }
    }
}

/// Whether a cgroup found from `cgroups_path` is the container's for certain: an absolute
/// or systemd path names the same directories whoever resolves it; a relative one only
/// when the broken record names each of them.
fn confirmed(
    st: &CgroupState,
    record: &StoredCgroup,
    cgroups_path: Option<&str>,
    systemd: bool,
) -> bool {
    if systemd || cgroups_path.is_some_and(|p| p.starts_with('/')) {
        return true;
    }
    let named = record.readable_paths();
    st.dirs().iter().all(|d| named.iter().any(|n| n == d))
}

/// Of the directories the broken record says gpurun created, those strictly between a
/// cgroup mount and one of the container's own: removed after it, and only if empty.
fn created_parents(st: &CgroupState, record: &StoredCgroup) -> Vec<PathBuf> {
    let Ok(root) = CgroupRoot::system() else {
        return Vec::new();
    };
    let mounts: Vec<&Path> = root
        .v1_hierarchies()
        .iter()
        .map(|h| h.mountpoint.as_path())
        .chain(root.unified().map(|u| u.mountpoint.as_path()))
        .collect();
    let leaves = st.dirs();
    record
        .readable_created()
        .into_iter()
        .filter(|c| leaves.iter().any(|l| *l != c && l.starts_with(c)))
        .filter(|c| mounts.iter().any(|m| *m != c && c.starts_with(m)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::linux::cgroups::Layout;

    fn state(dirs: &[&Path]) -> CgroupState {
        CgroupState {
            driver: Driver::Cgroupfs,
            layout: Layout::Hybrid,
            v1: dirs
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("c{i}"), d.to_path_buf()))
                .collect::<BTreeMap<_, _>>(),
            unified: None,
            unified_mount: None,
            created: Vec::new(),
            unit: None,
        }
    }

    fn broken(raw: serde_json::Value) -> StoredCgroup {
        let rec: StoredCgroup = serde_json::from_value(raw).expect("reads");
        assert!(rec.open().is_err(), "the record is meant to be undecodable");
        rec
    }

    #[test]
    fn a_relative_path_is_trusted_only_where_the_record_names_every_directory() {
        let st = state(&[Path::new("/cg/memory/me/c1"), Path::new("/cg/pids/me/c1")]);
        let both = broken(json!({"layout": 42, "v1": {
            "memory": "/cg/memory/me/c1", "pids": "/cg/pids/me/c1"}}));
        let one = broken(json!({"layout": 42, "v1": {"memory": "/cg/memory/me/c1"}}));
        let none = broken(json!("broken"));
        assert!(confirmed(&st, &both, Some("me/c1"), false));
        assert!(!confirmed(&st, &one, Some("me/c1"), false));
        assert!(!confirmed(&st, &none, None, false));
        // Absolute and systemd paths resolve the same for every caller.
        assert!(confirmed(&st, &none, Some("/me/c1"), false));
        assert!(confirmed(&st, &none, Some("system.slice:x:c1"), true));
    }

    #[test]
    fn only_created_parents_below_a_cgroup_mount_are_removed() {
        let Ok(root) = CgroupRoot::system() else {
            crate::skip::cannot_run("only_created_parents_below_a_cgroup_mount", "no cgroups");
            return;
        };
        let Some(m) = root
            .v1_hierarchies()
            .first()
            .map(|h| h.mountpoint.clone())
            .or_else(|| root.unified().map(|u| u.mountpoint.clone()))
        else {
            return;
        };
        let leaf = m.join("p/c1");
        let st = state(&[&leaf]);
        let rec = broken(json!({"layout": 42, "created": [
            m, m.join("p"), leaf, "/etc", "/p", m.join("other")]}));
        assert_eq!(created_parents(&st, &rec), vec![m.join("p")]);
    }
}
