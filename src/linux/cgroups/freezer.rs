//! Freezing, thawing and signalling every process of a container's cgroup.
//!
//! On v2 the freezer is `cgroup.freeze` / `cgroup.events`; on hybrid and v1 hosts it is the
//! v1 freezer (`freezer.state`), as runc uses it there. Waits are bounded polls.

use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::CgroupError;
use super::fs;
use super::root::Layout;
use super::CgroupState;

/// How often a freeze, thaw or emptying is checked before giving up, and the pause between
/// checks (about 10 s in all).
const POLLS: u32 = 2000;
const POLL_PAUSE: Duration = Duration::from_millis(5);

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

fn freezer(st: &CgroupState) -> Result<Freezer<'_>, CgroupError> {
    match st.layout {
        Layout::Unified => st
            .unified
            .as_deref()
            .map(Freezer::V2)
            .ok_or_else(|| missing(st, "freezer")),
        Layout::Hybrid | Layout::Legacy => st
            .v1
            .get("freezer")
            .map(|d| Freezer::V1(d))
            .ok_or_else(|| missing(st, "freezer")),
    }
}

fn missing(st: &CgroupState, controller: &str) -> CgroupError {
    CgroupError::MissingController {
        controller: controller.to_string(),
        path: st.shown_path(),
    }
}

fn poll(
    what: &'static str,
    path: &Path,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<(), CgroupError> {
    for _ in 0..POLLS {
        if done()? {
            return Ok(());
        }
        sleep(POLL_PAUSE);
    }
    Err(CgroupError::Timeout {
        what,
        path: path.to_path_buf(),
        tries: POLLS,
    })
}

fn v1_state(dir: &Path) -> Result<String, CgroupError> {
    Ok(fs::read(dir, "freezer.state")?.trim().to_string())
}

fn v2_frozen(dir: &Path) -> Result<bool, CgroupError> {
    Ok(fs::keyed(&fs::read(dir, "cgroup.events")?, "frozen") == Some(1))
}

pub(crate) fn freeze(st: &CgroupState) -> Result<(), CgroupError> {
    match freezer(st)? {
        Freezer::V1(dir) => {
            fs::write(dir, "freezer.state", "FROZEN")?;
            let result = poll("freezing", dir, || Ok(v1_state(dir)? == "FROZEN"));
            if result.is_err() {
                // Leave it running rather than stuck half-frozen.
                let _ = fs::write(dir, "freezer.state", "THAWED");
            }
            result
        }
        Freezer::V2(dir) => {
            fs::write(dir, "cgroup.freeze", "1")?;
            let result = poll("freezing", dir, || v2_frozen(dir));
            if result.is_err() {
                let _ = fs::write(dir, "cgroup.freeze", "0");
            }
            result
        }
    }
}

pub(crate) fn thaw(st: &CgroupState) -> Result<(), CgroupError> {
    match freezer(st)? {
        Freezer::V1(dir) => {
            fs::write(dir, "freezer.state", "THAWED")?;
            poll("thawing", dir, || Ok(v1_state(dir)? == "THAWED"))
        }
        Freezer::V2(dir) => {
            fs::write(dir, "cgroup.freeze", "0")?;
            poll("thawing", dir, || Ok(!v2_frozen(dir)?))
        }
    }
}

pub(crate) fn is_frozen(st: &CgroupState) -> Result<bool, CgroupError> {
    match freezer(st)? {
        Freezer::V1(dir) => Ok(v1_state(dir)? == "FROZEN"),
        Freezer::V2(dir) => v2_frozen(dir),
    }
}

/// `cgroup.kill` of the container's cgroup2 directory, where the kernel has it (5.14+): on a
/// v2 host the cgroup itself, on a hybrid host the unified leaf every task also joins.
fn kill_file(st: &CgroupState) -> Option<&Path> {
    match st.layout {
        Layout::Unified | Layout::Hybrid => st
            .unified
            .as_deref()
            .filter(|dir| fs::exists(dir, "cgroup.kill")),
        Layout::Legacy => None,
    }
}

pub(crate) fn signal_all(st: &CgroupState, sig: Signal) -> Result<(), CgroupError> {
    if sig == Signal::SIGKILL {
        if let Some(dir) = kill_file(st) {
            fs::write(dir, "cgroup.kill", "1")?;
            // A paused (or pausing) container's tasks cannot die until thawed.
            if freezer(st).is_ok() {
                thaw(st)?;
            }
            return Ok(());
        }
    }
    // Freezing first means no process can fork a child that misses the signal.
    let has_freezer = freezer(st).is_ok();
    let was_frozen = has_freezer && is_frozen(st)?;
    if has_freezer && !was_frozen {
        freeze(st)?;
    }
    let result = signal_each(st, sig);
    // A frozen task cannot die, so after SIGKILL the cgroup is thawed even if it was paused.
    if has_freezer && (!was_frozen || sig == Signal::SIGKILL) {
        thaw(st)?;
    }
    result
}

fn signal_each(st: &CgroupState, sig: Signal) -> Result<(), CgroupError> {
    for pid in super::pids_of(st)? {
        match kill(Pid::from_raw(pid), sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => {
                return Err(CgroupError::Signal {
                    signal: sig.as_str(),
                    pid,
                    path: st.shown_path(),
                    errno,
                })
            }
        }
    }
    Ok(())
}

/// SIGKILL everything in the cgroup and wait (bounded) until it is empty.
pub(crate) fn kill_all_and_wait(st: &CgroupState) -> Result<(), CgroupError> {
    if super::pids_of(st)?.is_empty() {
        return Ok(());
    }
    signal_all(st, Signal::SIGKILL)?;
    let shown = st.shown_path();
    let mut resent = false;
    poll("waiting for the cgroup to empty", &shown, || {
        let pids = super::pids_of(st)?;
        if !pids.is_empty() && !resent {
            // A process that was forking while cgroup.kill ran can leave a child behind once.
            resent = true;
            signal_each(st, Signal::SIGKILL)?;
        }
        Ok(pids.is_empty())
    })
}
