//! When init loads the container's seccomp filter, and what it checks first.
//!
//! gpurun adds nothing of its own to what a profile must allow. With no_new_privs the
//! filter is loaded last, right before execve. Without it, loading needs CAP_SYS_ADMIN,
//! so it comes before the uid and capability steps (runc's order); what follows it is
//! listed in `runtime-spec/seccomp.md` and is what runc needs there too. gpurun's own
//! extra calls (close_range, getcwd, reading /proc) are all made before loading.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};

use super::Ctx;
use crate::linux::seccomp::{install, CompiledSeccomp, SeccompError};
use crate::linux::sys::proc::{clone_fork, exit_now, probe_execve};
use crate::process::error::{Error, Result};

/// The container starts with no signal blocked (`run` blocks them all in the parent,
/// and init inherits that mask).
pub(super) fn unblock_signals() {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Whether the filter is loaded before the user and capability steps.
pub(super) fn loads_early(ctx: &Ctx) -> bool {
    ctx.plan.seccomp.is_some() && !ctx.plan.no_new_privileges
}

fn load(s: &CompiledSeccomp) -> Result<()> {
    Ok(install(s)?)
}

/// Without no_new_privs: load while init still has CAP_SYS_ADMIN.
pub(super) fn step_seccomp_early(ctx: &mut Ctx) -> Result<()> {
    match &ctx.plan.seccomp {
        Some(s) if loads_early(ctx) => {
            unblock_signals();
            load(s)
        }
        _ => Ok(()),
    }
}

/// With no_new_privs: the last step before execve.
pub(super) fn load_late(ctx: &Ctx) -> Result<()> {
    match &ctx.plan.seccomp {
        Some(s) if ctx.plan.no_new_privileges => load(s),
        _ => Ok(()),
    }
}

/// Before `create` returns, find out whether the profile lets init start the container
/// at all, so a profile that blocks execve fails `create` with a clear error instead of
/// leaving a container that can never start.
pub(super) fn step_seccomp_check(ctx: &mut Ctx) -> Result<()> {
    let Some(s) = &ctx.plan.seccomp else {
        return Ok(());
    };
    if loads_early(ctx) {
        // Loaded: what is left is waiting for start and execve.
        if let Some(start) = ctx.fds.start.as_ref() {
            nix::unistd::read(start, &mut []).map_err(|e| blocked("read", e))?;
        }
        return match probe_execve() {
            Errno::EFAULT => Ok(()),
            e => Err(blocked("execve", e)),
        };
    }
    check_in_child(s)
}

fn blocked(call: &'static str, errno: Errno) -> Error {
    Error::SeccompBlocks { call, errno }
}

/// Exit codes of the checking child: 0, the errno of a failed load, or 128 plus the errno
/// execve gave.
const EXECVE_FAILED: i32 = 128;

/// Load the filter in a throwaway child and try execve there: init itself must not load
/// it before its last step.
fn check_in_child(s: &CompiledSeccomp) -> Result<()> {
    let child = match clone_fork(0) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            let code = match install(s) {
                Err(SeccompError::Install { errno, .. }) => errno as i32,
                Err(_) => libc::EINVAL,
                Ok(()) => match probe_execve() {
                    Errno::EFAULT => 0,
                    e => (EXECVE_FAILED + e as i32).min(255),
                },
            };
            exit_now(code)
        }
        // A pids limit of one: the real execve will tell.
        Err(_) => return Ok(()),
    };
    match waitpid(child, None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(WaitStatus::Exited(_, code)) if code >= EXECVE_FAILED => {
            Err(blocked("execve", Errno::from_raw(code - EXECVE_FAILED)))
        }
        Ok(WaitStatus::Exited(_, code)) => Err(SeccompError::Install {
            index: 0,
            errno: Errno::from_raw(code),
        }
        .into()),
        Ok(WaitStatus::Signaled(_, signal, _)) => Err(Error::SeccompKills { signal }),
        Ok(other) => Err(Error::Protocol(format!(
            "checking the seccomp filter: unexpected child status {other:?}"
        ))),
        Err(e) => Err(Error::sys("checking the seccomp filter", "waitpid", "", e)),
    }
}
