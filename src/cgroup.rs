//! The runtime's view of a container's cgroup: a thin adapter over `linux::cgroups` that
//! the lifecycle calls, stored in the state file as JSON.

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Spec};

use crate::error::{Error, Result};
use crate::linux::cgroups::{self, Cgroup, CgroupConfig, CgroupRoot, CgroupState};
use crate::state::State;

pub struct Handle {
    cg: Cgroup,
}

fn err(e: cgroups::CgroupError) -> Error {
    Error::Other(e.to_string())
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
    rules.extend(cgroups::default_device_rules());
    rules
}

/// Create the container's cgroup, limits and device rules before any process joins.
pub fn create(spec: &Spec, id: &str, systemd: bool) -> Result<(Option<Handle>, Vec<String>)> {
    let root = CgroupRoot::system().map_err(err)?;
    let linux = spec.linux().as_ref();
    let mut resources: LinuxResources = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    resources.set_devices(Some(device_rules(spec)));
    let path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let cfg = CgroupConfig {
        cgroups_path: path.as_deref(),
        container_id: id,
        resources: Some(&resources),
        systemd,
        root: &root,
    };
    let (cg, warnings) = Cgroup::create(&cfg).map_err(err)?;
    Ok((Some(Handle { cg }), warnings))
}

/// The cgroup [`create`] is about to make, as the state records it, with every directory
/// that does not exist yet listed as created. Saved before the directories are made, so a
/// `gpurun create` killed in between leaves nothing `delete` cannot find. `None` where the
/// cgroup cannot be resolved (create then fails and records nothing).
pub fn planned(spec: &Spec, id: &str, systemd: bool) -> Option<serde_json::Value> {
    let root = CgroupRoot::system().ok()?;
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    if systemd {
        // The unit and its cgroup's paths: delete stops the one and removes the others.
        let st = cgroups::planned_systemd_state(&root, path.as_deref().unwrap_or(""), id)?;
        return serde_json::to_value(st).ok();
    }
    let placement = cgroups::resolve(&root, path.as_deref(), id).ok()?;
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
    serde_json::to_value(CgroupState {
        driver: cgroups::Driver::Cgroupfs,
        layout: placement.layout,
        v1,
        unified: placement.unified.as_ref().map(|u| u.leaf.clone()),
        unified_mount: placement.unified.as_ref().map(|u| u.mountpoint.clone()),
        created,
        unit: None,
    })
    .ok()
}

/// The directories from below `top` down to `leaf` that do not exist, parents first.
fn missing_dirs(top: &std::path::Path, leaf: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
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

pub fn from_state(st: &State) -> Option<Handle> {
    let j = st.cgroup.as_ref()?;
    let cs: CgroupState = serde_json::from_value(j.clone()).ok()?;
    Some(Handle {
        cg: Cgroup::from_state(&cs),
    })
}

impl Handle {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.cg.state()).unwrap_or(serde_json::Value::Null)
    }
    pub fn add_task(&self, pid: i32) -> Result<()> {
        self.cg.add_task(pid).map_err(err)
    }
    /// Puts init in the cgroup; under the systemd driver this creates the unit.
    pub fn add_init(&mut self, pid: i32) -> Result<()> {
        for w in self.cg.add_init(pid).map_err(err)? {
            crate::log::warn(&w);
        }
        Ok(())
    }
    pub fn pids(&self) -> Result<Vec<i32>> {
        self.cg.pids().map_err(err)
    }
    pub fn watch_oom(&self) -> Result<cgroups::OomWatch> {
        self.cg.watch_oom().map_err(err)
    }
    pub fn signal_all(&self, sig: Signal) -> Result<()> {
        self.cg.signal_all(sig).map_err(err)
    }
    pub fn is_frozen(&self) -> bool {
        self.cg.is_frozen().unwrap_or(false)
    }
    pub fn freeze(&self) -> Result<()> {
        self.cg.freeze().map_err(err)
    }
    pub fn thaw(&self) -> Result<()> {
        self.cg.thaw().map_err(err)
    }
    pub fn update(&self, r: &LinuxResources) -> Result<Vec<String>> {
        self.cg.update(r).map_err(err)
    }
    pub fn stats(&self) -> Result<serde_json::Value> {
        self.cg.stats().map_err(err)
    }
    pub fn oom_events(&self) -> Result<u64> {
        self.cg.oom_events().map_err(err)
    }
    pub fn destroy(&self) -> Result<()> {
        self.cg.destroy().map_err(err)
    }
}
