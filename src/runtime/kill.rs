//! `kill`: a signal to a container's init, or with `--all` to every process in its
//! cgroup; never to a pid that init's death freed for reuse.

use nix::sys::signal::Signal;

use super::{status_of, Globals};
use crate::error::{Error, Result};
use crate::state::{State, Status};

pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Usage(format!("invalid signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::Usage(format!("invalid signal {s:?}")))
}

pub fn kill(g: &Globals, id: &str, sig: Signal, all: bool) -> Result<()> {
    let c = g.root.open(id)?;
    let st = c.load()?;
    send(&c, &st, sig, all)?;
    super::journal::killed(g, &st, sig, all);
    Ok(())
}

fn send(c: &crate::state::Container, st: &State, sig: Signal, all: bool) -> Result<()> {
    let id = &st.id;
    let status = status_of(&c.dir, st);
    if matches!(status, Status::Stopped | Status::Creating) {
        if all {
            // containerd sends `kill --all` after init exited; the rest of the cgroup
            // may still need it.
            if let Some(cg) = st.open_cgroup()? {
                cg.signal_all(sig)?;
            }
            return Ok(());
        }
        return Err(Error::NotRunning(id.to_string()));
    }
    if all {
        if let Some(cg) = st.open_cgroup()? {
            return Ok(cg.signal_all(sig)?);
        }
    }
    signal_init(st, sig)
}

/// Signal init through a pidfd opened and then checked against the recorded start time,
/// so a pid reused after init died is never signalled.
pub(super) fn signal_init(st: &State, sig: Signal) -> Result<()> {
    if st.pid <= 0 {
        return Err(Error::NotRunning(st.id.clone()));
    }
    let pidfd = match crate::linux::sys::proc::pidfd_open(st.pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ESRCH) => return Err(Error::NotRunning(st.id.clone())),
        Err(e) => {
            return Err(Error::sys(
                "signalling container init",
                "pidfd_open",
                st.pid.to_string(),
                e,
            ))
        }
    };
    if !st.init_alive() {
        return Err(Error::NotRunning(st.id.clone()));
    }
    crate::linux::sys::proc::pidfd_send_signal(std::os::fd::AsFd::as_fd(&pidfd), sig as i32)
        .map_err(|e| match e {
            nix::errno::Errno::ESRCH => Error::NotRunning(st.id.clone()),
            e => Error::sys(
                format!("sending {sig} to container init"),
                "pidfd_send_signal",
                st.pid.to_string(),
                e,
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("9").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("term").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGHUP").ok(), Some(Signal::SIGHUP));
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn a_bad_signal_is_a_usage_error_that_quotes_it() {
        for bad in ["NOPE", "99999"] {
            let e = parse_signal(bad).expect_err("not a signal");
            assert!(matches!(e, Error::Usage(_)), "{e:?}");
            assert_eq!(e.to_string(), format!("invalid signal {bad:?}"));
        }
    }
}
