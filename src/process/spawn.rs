//! The parent side of container creation: clone the child, place it in its cgroup, write
//! what only the parent can (id maps, time offsets), and wait until init is ready or
//! reports the step that failed.

use std::path::Path;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::linux::sys::proc::{clone_fork, exit_now};
use crate::plan::Plan;
use crate::process::error::{Error, Result};
use crate::process::init;
use crate::process::sync::{self, ChildMsg};
use crate::process::InitFds;

pub struct Spawned {
    /// Host pid of the container's init.
    pub pid: Pid,
}

/// What only the parent does for init: put a pid in the container's cgroup (before the
/// child runs), and run the runtime-namespace hooks when init asks.
/// Both are the caller's, so they fail with the caller's error type `E`.
pub struct ParentSide<'a, E> {
    pub place: &'a mut dyn FnMut(Pid) -> Result<(), E>,
    pub runtime_hooks: &'a mut dyn FnMut(Pid) -> Result<(), E>,
}

/// Clone the container. `place` puts a pid into the container's cgroup; it runs before
/// the child does anything, so every process of the container is born into it.
/// `start_fd` is the exec fifo init waits on after it is ready.
pub fn spawn<E: From<Error>>(
    plan: &Plan,
    fds: InitFds,
    parent_side: ParentSide<E>,
) -> Result<Spawned, E> {
    let ParentSide {
        place,
        runtime_hooks,
    } = parent_side;
    let (parent, child) = sync::pair()?;
    let first = clone_fork(plan.clone_flags.bits() as u64)
        .map_err(|e| Error::sys("creating the container process", "clone", &plan.rootfs, e))?;
    let Some(first) = first else {
        drop(parent);
        let code = init::stage1(plan, &child, &fds);
        exit_now(code);
    };
    drop(child);
    drop(fds);
    place(first).map_err(|e| cleanup(first, None, e))?;
    parent.send_ack().map_err(|e| cleanup(first, None, e))?;
    let mut init_pid = if plan.two_stage { None } else { Some(first) };
    loop {
        let msg = match parent.recv_msg() {
            Ok(m) => m,
            Err(e) => return Err(cleanup(first, init_pid, e).into()),
        };
        match msg {
            Some(ChildMsg::IdMaps(pid)) => {
                write_proc(pid, "uid_map", &plan.uid_map)
                    .and_then(|()| write_proc(pid, "gid_map", &plan.gid_map))
                    .and_then(|()| parent.send_ack())
                    .map_err(|e| cleanup(first, init_pid, e))?;
            }
            Some(ChildMsg::TimeOffsets(pid)) => {
                let offs = plan.time_offsets.as_deref().unwrap_or("");
                write_proc(pid, "timens_offsets", offs)
                    .and_then(|()| parent.send_ack())
                    .map_err(|e| cleanup(first, init_pid, e))?;
            }
            Some(ChildMsg::RuntimeHooks) => {
                let pid = init_pid.unwrap_or(first);
                runtime_hooks(pid).map_err(|e| cleanup(first, init_pid, e))?;
                parent.send_ack().map_err(|e| cleanup(first, init_pid, e))?;
            }
            Some(ChildMsg::InitPid(pid)) => {
                init_pid = Some(Pid::from_raw(pid));
                // The intermediate process exits once it has forked init.
                let _ = waitpid(first, None);
                // Init waits for this before it goes on (see init::stage1_inner).
                parent.send_ack().map_err(|e| cleanup(first, init_pid, e))?;
            }
            Some(ChildMsg::Ready) => {
                let pid = init_pid.ok_or_else(|| {
                    cleanup(
                        first,
                        None,
                        Error::Protocol("container init never reported its pid".into()),
                    )
                })?;
                if plan.exec_mode {
                    return Ok(wait_for_execve(&parent, first, pid)?);
                }
                return Ok(Spawned { pid });
            }
            Some(ChildMsg::Failed { step, msg }) => {
                return Err(cleanup(first, init_pid, Error::Init { step, msg }).into());
            }
            None => {
                let status = init_pid.and_then(|p| waitpid(p, None).ok());
                let why = match status {
                    Some(WaitStatus::Signaled(_, sig, _)) => format!(" (killed by {sig})"),
                    Some(WaitStatus::Exited(_, code)) => format!(" (exit status {code})"),
                    _ => String::new(),
                };
                return Err(cleanup(
                    first,
                    init_pid,
                    Error::Protocol(format!("container init exited before it was ready{why}")),
                )
                .into());
            }
        }
    }
}

/// An exec'd process calls execve right after it is ready: the channel closes (it is
/// close-on-exec) when execve succeeded, or brings the error when it did not.
fn wait_for_execve(parent: &sync::Channel, first: Pid, pid: Pid) -> Result<Spawned> {
    match parent.recv_msg() {
        Ok(None) => Ok(Spawned { pid }),
        Ok(Some(ChildMsg::Failed { step, msg })) => {
            Err(cleanup(first, Some(pid), Error::Init { step, msg }))
        }
        Ok(Some(other)) => Err(cleanup(
            first,
            Some(pid),
            Error::Protocol(format!(
                "unexpected message from the exec'd process: {other:?}"
            )),
        )),
        Err(e) => Err(cleanup(first, Some(pid), e)),
    }
}

/// Kills and reaps what was started, then hands back the error that stopped it.
fn cleanup<E>(first: Pid, init: Option<Pid>, e: E) -> E {
    for p in [Some(first), init].into_iter().flatten() {
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(p, None);
    }
    e
}

fn write_proc(pid: i32, file: &str, content: &str) -> Result<()> {
    let path = Path::new("/proc").join(pid.to_string()).join(file);
    std::fs::write(&path, content.as_bytes()).map_err(|e| Error::io("writing", &path, e))
}
