//! `exec`: run another process in a running container, as runc does: every namespace of
//! init joined, the container's cgroup, the process's user, capabilities, seccomp profile
//! and labels. It is spawned through `process::spawn` as create's init is, from a plan
//! built the same way.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use super::console::console_fds;
use super::files::write_pid_file;
use super::foreground::{attach_terminal, forward_and_wait, prepare_to_wait};
use super::{status_of, Globals};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::process::spawn::ParentSide;
use crate::process::InitFds;
use crate::state::{State, Status};

pub struct ExecOpts<'a> {
    pub id: String,
    /// The process to run, made from the container's own (its spec's `process`, or the
    /// default when it has none).
    pub process: &'a dyn Fn(Process) -> Result<Process>,
    /// Return once the process has started.
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    /// Exec even if the container is paused.
    pub ignore_paused: bool,
}

/// Run the process; in the foreground, its exit status.
pub fn exec(g: &Globals, o: &ExecOpts) -> Result<i32> {
    let c = g.root.open(&o.id)?;
    let st = c.load()?;
    check_execable(status_of(&c.dir, &st), o.ignore_paused)?;
    let spec = stored_spec(&st)?;
    let process = (o.process)(spec.process().clone().unwrap_or_default())?;
    let terminal = process.terminal().unwrap_or(false);
    let plan = exec_plan(&st, &spec, process, o)?;
    // The namespaces were opened by pid: make sure that pid is still init.
    if !st.init_alive() {
        return Err(Error::NotRunning(o.id.clone()));
    }
    let (console, console_peer) = console_fds(terminal, o.console_socket.as_deref(), !o.detach)?;
    let cgroup = Some(st.require_cgroup()?);
    drop(c);

    let mask = prepare_to_wait(!o.detach, !o.detach)?;
    let pid = spawn_process(&plan, console, cgroup.as_ref())?;
    // Written in both modes, as runc does: conmon and scripts read it while a foreground
    // exec runs.
    if let Some(p) = &o.pid_file {
        write_pid_file_or_kill(p, pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    let mut proxy = attach_terminal(console_peer)?;
    let code = forward_and_wait(pid, &mask, proxy.as_mut())?;
    drop(proxy);
    Ok(code)
}

fn check_execable(status: Status, ignore_paused: bool) -> Result<()> {
    let why = match status {
        Status::Stopped => "cannot exec in a stopped container",
        Status::Creating => "cannot exec in a container that is being created",
        Status::Paused if !ignore_paused => {
            "cannot exec in a paused container (use --ignore-paused to override)"
        }
        _ => return Ok(()),
    };
    Err(Error::State(why.into()))
}

/// The spec the container was created with, as create stored it.
fn stored_spec(st: &State) -> Result<Spec> {
    st.spec
        .clone()
        .ok_or_else(|| Error::State(format!("container {} has no stored spec", st.id)))
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| Error::State(format!("stored spec: {e}")))
        })
}

fn exec_plan(st: &State, spec: &Spec, process: Process, o: &ExecOpts) -> Result<Plan> {
    crate::plan::check_preserved_fds(o.preserve_fds)?;
    let plan = crate::plan::build_exec(
        &o.id,
        spec,
        process,
        st.pid,
        &st.bundle,
        &st.rootfs,
        &crate::plan::Options {
            no_pivot: false,
            preserve_fds: o.preserve_fds,
            no_new_keyring: true,
        },
    )?;
    for w in &plan.warnings {
        crate::log::warn_caller(w);
    }
    Ok(plan)
}

/// Clone the process into the container's namespaces and cgroup; it has called execve
/// when this returns. No hooks run for an exec'd process.
fn spawn_process(
    plan: &Plan,
    console: Option<OwnedFd>,
    cgroup: Option<&crate::linux::cgroups::ContainerCgroup>,
) -> Result<Pid> {
    let mut place = |pid: Pid| -> Result<()> {
        match cgroup {
            Some(h) => Ok(h.add_task(pid.as_raw())?),
            None => Ok(()),
        }
    };
    let mut no_hooks = |_: Pid| -> Result<()> { Ok(()) };
    let fds = InitFds {
        start: None,
        console,
    };
    let parent_side = ParentSide {
        place: &mut place,
        runtime_hooks: &mut no_hooks,
    };
    Ok(crate::process::spawn::spawn(plan, fds, parent_side)?.pid)
}

/// A process whose pid could not be handed over is one the caller cannot find: it is
/// killed rather than left running unseen.
fn write_pid_file_or_kill(path: &Path, pid: Pid) -> Result<()> {
    write_pid_file(path, pid.as_raw()).inspect_err(|_| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    })
}
