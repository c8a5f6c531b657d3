//! The cgroup verbs: pause, resume, update, events.

use super::{status_of, Globals};
use crate::error::{Error, Result};
use crate::state::{Container, State, Status};

fn running_cgroup(g: &Globals, id: &str) -> Result<(Container, State, crate::cgroup::Handle)> {
    let c = g.root.open(id)?;
    let st = c.load()?;
    if status_of(&c.dir, &st) == Status::Stopped {
        return Err(Error::NotRunning(id.to_string()));
    }
    let cg = crate::cgroup::from_state(&st)
        .ok_or_else(|| Error::State(format!("container {id} has no cgroup")))?;
    Ok((c, st, cg))
}

pub fn pause(g: &Globals, id: &str) -> Result<()> {
    let (_c, _st, cg) = running_cgroup(g, id)?;
    cg.freeze()
}

pub fn resume(g: &Globals, id: &str) -> Result<()> {
    let (_c, _st, cg) = running_cgroup(g, id)?;
    cg.thaw()
}

/// `update`: the given resources only; device rules are never touched (runc sets
/// SkipDevices), so rules added for GPUs at create survive.
pub fn update(g: &Globals, id: &str, mut r: oci_spec::runtime::LinuxResources) -> Result<()> {
    let (_c, _st, cg) = running_cgroup(g, id)?;
    r.set_devices(None);
    for w in cg.update(&r)? {
        crate::log::warn(&w);
    }
    Ok(())
}

/// One `events` record in runc's shape.
pub fn stats_event(g: &Globals, id: &str) -> Result<serde_json::Value> {
    let (_c, _st, cg) = running_cgroup(g, id)?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": cg.stats()?}))
}

pub fn oom_count(g: &Globals, id: &str) -> Result<u64> {
    let (_c, _st, cg) = running_cgroup(g, id)?;
    cg.oom_events()
}

/// A descriptor that becomes readable when the container's cgroup reports an OOM.
pub fn oom_watch(g: &Globals, id: &str) -> Result<crate::linux::cgroups::OomWatch> {
    let (_c, _st, cg) = running_cgroup(g, id)?;
    cg.watch_oom()
}
