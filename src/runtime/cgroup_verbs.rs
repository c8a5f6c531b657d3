//! The cgroup verbs: pause, resume, update, events. What they do to the cgroup is
//! `linux::cgroups::ContainerCgroup`'s; here is only the container they act on.

use super::{status_of, Globals};
use crate::error::{Error, Result};
use crate::linux::cgroups::{ContainerCgroup, OomWatch};
use crate::state::{Container, Status};

/// The cgroup of a container that is not stopped, with the container held locked; a
/// record that cannot be decoded is an error naming its state file.
fn running_cgroup(g: &Globals, id: &str) -> Result<(Container, ContainerCgroup)> {
    let c = g.root.open(id)?;
    let st = c.load()?;
    if status_of(&c.dir, &st) == Status::Stopped {
        return Err(Error::NotRunning(id.to_string()));
    }
    let cg = st.require_cgroup()?;
    Ok((c, cg))
}

pub fn pause(g: &Globals, id: &str) -> Result<()> {
    let (_c, cg) = running_cgroup(g, id)?;
    Ok(cg.freeze()?)
}

pub fn resume(g: &Globals, id: &str) -> Result<()> {
    let (_c, cg) = running_cgroup(g, id)?;
    Ok(cg.thaw()?)
}

pub fn update(g: &Globals, id: &str, r: oci_spec::runtime::LinuxResources) -> Result<()> {
    let (_c, cg) = running_cgroup(g, id)?;
    for w in cg.update(&r)? {
        crate::log::warn(&w);
    }
    Ok(())
}

pub fn stats_event(g: &Globals, id: &str) -> Result<serde_json::Value> {
    let (_c, cg) = running_cgroup(g, id)?;
    Ok(cg.stats_event(id)?)
}

pub fn oom_count(g: &Globals, id: &str) -> Result<u64> {
    let (_c, cg) = running_cgroup(g, id)?;
    Ok(cg.oom_events()?)
}

/// A descriptor that becomes readable when the container's cgroup reports an OOM.
pub fn oom_watch(g: &Globals, id: &str) -> Result<OomWatch> {
    let (_c, cg) = running_cgroup(g, id)?;
    Ok(cg.watch_oom()?)
}
