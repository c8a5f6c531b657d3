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

/// The device rules the cgroup gets: the spec's rules in order, then an allow for each
/// `linux.devices` node, then the runtime spec's default devices last, so that no
/// rule in a spec can take `/dev/null` away from the container (rules are last-match).
pub fn device_rules(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
    let linux = spec.linux().as_ref();
    let mut rules: Vec<LinuxDeviceCgroup> = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    for d in linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]) {
        rules.push(d.into());
    }
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
    pub fn pids(&self) -> Result<Vec<i32>> {
        self.cg.pids().map_err(err)
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
