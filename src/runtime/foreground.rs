//! `run`: create and start in one process; in the foreground, proxy the terminal, forward
//! signals, reap, and exit with the container's status. `exec` waits on its process the
//! same way.

use std::os::fd::OwnedFd;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{create, delete, start, CreateOpts, Globals};
use crate::error::{Error, Result};
use crate::linux::console::{self, Proxy};

/// How `run` treats the container once it is started.
pub struct RunOpts {
    /// Return after start.
    pub detach: bool,
    /// Keep the container's state after it exits.
    pub keep: bool,
    /// Do not become a subreaper.
    pub no_subreaper: bool,
}

pub fn run(g: &Globals, o: &CreateOpts, r: &RunOpts) -> Result<i32> {
    // Orphans of a container without its own pid namespace are reparented to us and
    // reaped here instead of by the host's init.
    let mask = prepare_to_wait(!r.detach && !r.no_subreaper, !r.detach)?;
    let created = create(g, o)?;
    let pid = created.pid;
    let (gpus, journal) = (created.gpus, created.gpu_journal);
    drop(created.container);
    let mut proxy = match attach_terminal(created.console_peer) {
        Ok(p) => p,
        Err(e) => {
            let _ = delete(g, &o.id, true);
            return Err(e);
        }
    };
    if let Err(e) = start(g, &o.id) {
        let _ = delete(g, &o.id, true);
        return Err(e);
    }
    if r.detach {
        return Ok(0);
    }
    let code = forward_and_wait(pid, &mask, proxy.as_mut())?;
    super::journal::exited(g, &o.id, &gpus, journal.as_ref(), code);
    // Restores the caller's terminal before anything else is printed.
    drop(proxy);
    if !r.keep {
        delete(g, &o.id, true)?;
    }
    Ok(code)
}

/// Become a subreaper (when asked) and block the signals that will be forwarded, before
/// the process exists, so none is lost between its start and the wait loop. Returns the
/// set to read from a signalfd.
pub(super) fn prepare_to_wait(subreaper: bool, block: bool) -> Result<SigSet> {
    if subreaper {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
            Error::sys("becoming a subreaper", "prctl", "PR_SET_CHILD_SUBREAPER", e)
        })?;
    }
    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    if block {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("blocking signals", "sigprocmask", "", e))?;
    }
    Ok(mask)
}

/// With a terminal: receive the pty master init sent and proxy it to the caller's
/// stdin/stdout.
pub(super) fn attach_terminal(peer: Option<OwnedFd>) -> Result<Option<Proxy>> {
    use std::os::fd::AsFd;
    let Some(peer) = peer else {
        return Ok(None);
    };
    let (master, _name) = console::recv_master(peer.as_fd())?;
    let input = nix::unistd::dup(std::io::stdin())
        .map_err(|e| Error::sys("duplicating stdin", "dup", "", e))?;
    let output = nix::unistd::dup(std::io::stdout())
        .map_err(|e| Error::sys("duplicating stdout", "dup", "", e))?;
    Proxy::new(input, output, master)
        .map(Some)
        .map_err(Error::from)
}

/// Forward every signal in `mask` to `init` and relay its terminal until it exits; its
/// exit status (128 + signal when killed).
pub(super) fn forward_and_wait(
    init: Pid,
    mask: &SigSet,
    mut proxy: Option<&mut Proxy>,
) -> Result<i32> {
    use std::os::fd::AsFd;
    let sfd = SignalFd::with_flags(mask, nix::sys::signalfd::SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::sys("watching signals", "signalfd", "", e))?;
    loop {
        if let Some(code) = reap(init)? {
            if let Some(p) = proxy.as_mut() {
                let _ = p.drain();
            }
            return Ok(code);
        }
        if let Some(p) = proxy.as_mut() {
            let ready = p.step(&[sfd.as_fd()], nix::poll::PollTimeout::NONE)?;
            if !ready.first().copied().unwrap_or(false) {
                continue;
            }
        }
        let info = match sfd.read_signal() {
            Ok(Some(i)) => i,
            Ok(None) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("reading signals", "read", "signalfd", e)),
        };
        if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
            forward(sig, init, proxy.as_deref());
        }
    }
}

fn forward(sig: Signal, init: Pid, proxy: Option<&Proxy>) {
    match sig {
        Signal::SIGWINCH => {
            if let Some(p) = proxy {
                let _ = p.on_winch();
            }
        }
        Signal::SIGCHLD | Signal::SIGURG => {}
        s => {
            let _ = nix::sys::signal::kill(init, s);
        }
    }
}

/// Reap every exited child; the container's status once init is among them.
fn reap(init: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                return Err(Error::Other(
                    "container init is not a child of gpurun run".into(),
                ))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("waiting for the container", "waitpid", "", e)),
        }
    }
}
