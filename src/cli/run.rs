//! `gpurun run`: create and start in one process; in the foreground, forward signals,
//! reap, and exit with the container's status.

use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::lifecycle::{self, CreateOpts, Globals};
use crate::linux::console::{self, Proxy};

/// `gpurun run ./bundle` (an argument with a `/`, and no `-b`): the bundle is that
/// directory and the id is its name plus a short random suffix. Otherwise runc's form:
/// the argument is the id and the bundle comes from `-b` (default: the current dir).
pub fn resolve_target(arg: &str, bundle: Option<PathBuf>) -> Result<(String, PathBuf)> {
    if bundle.is_none() && arg.contains('/') {
        let dir = Path::new(arg);
        let abs = crate::spec::lexical_clean(
            &std::env::current_dir()
                .map_err(|e| Error::io("resolving", arg, e))?
                .join(dir),
        );
        let base: String = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "container".into())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = base.trim_matches('.').to_string();
        let base = if base.is_empty() {
            "container".to_string()
        } else {
            base
        };
        return Ok((format!("{base}-{}", random_suffix()), abs));
    }
    Ok((
        arg.to_string(),
        bundle.unwrap_or_else(|| PathBuf::from(".")),
    ))
}

fn random_suffix() -> String {
    use std::io::Read;
    let mut b = [0u8; 3];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let n = std::process::id() ^ t.subsec_nanos();
        b = [n as u8, (n >> 8) as u8, (n >> 16) as u8];
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn run(
    g: &Globals,
    o: &CreateOpts,
    detach: bool,
    keep: bool,
    no_subreaper: bool,
) -> Result<i32> {
    if !detach && !no_subreaper {
        // Orphans of a container without its own pid namespace are reparented to us and
        // reaped here instead of by the host's init.
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
            Error::sys("becoming a subreaper", "prctl", "PR_SET_CHILD_SUBREAPER", e)
        })?;
    }
    // Signals are queued from before start so none is lost between start and the loop.
    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    if !detach {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("blocking signals", "sigprocmask", "", e))?;
    }
    let created = lifecycle::create(g, o)?;
    let pid = created.pid;
    drop(created.container);
    let mut proxy = match created.console_peer {
        Some(peer) => match terminal_proxy(&peer) {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = lifecycle::delete(g, &o.id, true);
                return Err(e);
            }
        },
        None => None,
    };
    if let Err(e) = lifecycle::start(g, &o.id) {
        let _ = lifecycle::delete(g, &o.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = forward_and_wait(pid, &mask, proxy.as_mut())?;
    // Restores the caller's terminal before anything else is printed.
    drop(proxy);
    if !keep {
        lifecycle::delete(g, &o.id, true)?;
    }
    Ok(code)
}

/// Receive the pty master init sent and proxy it to the caller's stdin/stdout.
pub(super) fn terminal_proxy(peer: &std::os::fd::OwnedFd) -> Result<Proxy> {
    use std::os::fd::AsFd;
    let cerr = |e: console::ConsoleError| Error::Other(e.to_string());
    let (master, _name) = console::recv_master(peer.as_fd()).map_err(cerr)?;
    let input = nix::unistd::dup(std::io::stdin())
        .map_err(|e| Error::sys("duplicating stdin", "dup", "", e))?;
    let output = nix::unistd::dup(std::io::stdout())
        .map_err(|e| Error::sys("duplicating stdout", "dup", "", e))?;
    Proxy::new(input, output, master).map_err(cerr)
}

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
            let ready = p
                .step(&[sfd.as_fd()], nix::poll::PollTimeout::NONE)
                .map_err(|e| Error::Other(e.to_string()))?;
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
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        match sig {
            Signal::SIGWINCH => {
                if let Some(p) = proxy.as_ref() {
                    let _ = p.on_winch();
                }
            }
            Signal::SIGCHLD | Signal::SIGURG => {}
            s => {
                let _ = nix::sys::signal::kill(init, s);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_argument_is_a_bundle_with_a_derived_id() {
        let (id, b) = resolve_target("./my bundle/", None).expect("resolve");
        assert!(
            id.starts_with("my-bundle-") && id.len() == "my-bundle-".len() + 6,
            "{id}"
        );
        assert!(b.is_absolute() && b.ends_with("my bundle"));
        crate::state::validate_id(&id).expect("derived id is valid");
        let (id, b) = resolve_target("c1", Some(PathBuf::from("/x"))).expect("resolve");
        assert_eq!((id.as_str(), b.as_path()), ("c1", Path::new("/x")));
    }
}
