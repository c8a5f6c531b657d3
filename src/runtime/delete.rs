//! `delete`: a stopped (or, forced, any) container taken down: its processes killed, its
//! cgroup removed, its poststop hooks run, its GPU lease released, its state removed.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::kill::signal_init;
use super::{hook_dispatch, status_of, Globals};
use crate::error::{Error, Result};
use crate::hooks::Phase;
use crate::state::{Container, State, Status};

pub fn delete(g: &Globals, id: &str, force: bool) -> Result<()> {
    let c = match g.root.open(id) {
        Ok(c) => c,
        Err(Error::NotExist(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let st = match c.load() {
        Ok(st) => st,
        Err(e) if force => {
            crate::log::warn(&format!("removing {id} with an unreadable state: {e}"));
            return c.remove();
        }
        Err(e) => return Err(e),
    };
    if !force {
        st.open_cgroup()?;
    }
    let status = status_of(&c.dir, &st);
    match status {
        // A create that died: its init (if it got that far) is in the cgroup, which
        // `destroy` empties, whether or not its directories were made.
        Status::Stopped | Status::Creating => {}
        Status::Created => kill_and_wait(&st)?,
        s if force => {
            let _ = s;
            kill_and_wait(&st)?;
        }
        s => {
            return Err(Error::State(format!(
                "cannot delete container {id} that is not stopped: {}",
                s.as_str()
            )))
        }
    }
    super::journal::releasing(&g.root.path, &st, status, force);
    destroy(c, &st)
}

fn kill_and_wait(st: &State) -> Result<()> {
    let cg = st.cgroup_to_remove();
    match &cg {
        Some(cg) => cg.signal_all(Signal::SIGKILL)?,
        None => match signal_init(st, Signal::SIGKILL) {
            Ok(()) | Err(Error::NotRunning(_)) => {}
            Err(e) => return Err(e),
        },
    }
    for _ in 0..200 {
        if !st.init_alive() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Error::State(format!(
        "container init {} did not die after SIGKILL",
        st.pid
    )))
}

/// Remove everything the container had: leftover processes and the cgroup, then the
/// state directory.
fn destroy(c: Container, st: &State) -> Result<()> {
    if let Some(cg) = st.cgroup_to_remove() {
        cg.destroy()?;
    }
    let cwd = if st.bundle.is_dir() {
        st.bundle.as_path()
    } else {
        Path::new("/")
    };
    hook_dispatch::run(
        Phase::Poststop,
        st.hooks.as_ref(),
        &hook_dispatch::state_of(st, "stopped", 0),
        cwd,
    )?;
    if let Some(dir) = &st.gpu_state_dir {
        let root = c.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        crate::gpu::lease::Leases::new(dir).release(&st.id, &root)?;
    }
    c.remove()
}
