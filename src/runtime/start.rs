//! `start`: release a created container's init, then run what follows its execve
//! (startContainer's verdict, the readiness notification, the poststart hooks).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{hook_dispatch, status_of, Globals};
use crate::error::{Error, Result};
use crate::hooks::Phase;
use crate::state::{State, Status};

/// Release init: write one byte to the fifo it is blocked reading.
pub fn start(g: &Globals, id: &str) -> Result<()> {
    let c = g.root.open(id)?;
    let st = c.load()?;
    check_startable(status_of(&c.dir, &st))?;
    let fifo = c.fifo_path();
    let mut f = open_start_fifo(&fifo)?;
    let notify = match &st.notify_socket {
        Some(caller) => Some((crate::notify::bind(&c.dir)?, caller.clone())),
        None => None,
    };
    std::fs::remove_file(&fifo).map_err(|e| Error::io("removing the start fifo", &fifo, e))?;
    f.write_all(b"0")
        .map_err(|e| Error::io("releasing container init through", &fifo, e))?;
    // Waiting can take as long as the container likes: let kill and delete in.
    drop(c);
    if has_hooks(&st, Phase::StartContainer) {
        // The startContainer hooks are part of start: their failure is start's error.
        wait_for_execve(&f, &st);
        check_start_container_hooks(&f)?;
    }
    if let Some((sock, caller)) = notify {
        crate::notify::forward_ready(&sock, &st, &caller)?;
    }
    if has_hooks(&st, Phase::Poststart) {
        // poststart runs once the container's process is executing: after init has run
        // the startContainer hooks and called execve, which closes its end of the fifo.
        wait_for_execve(&f, &st);
        hook_dispatch::run(
            Phase::Poststart,
            st.hooks.as_ref(),
            &hook_dispatch::state_of(&st, "running", st.pid),
            &st.bundle,
        )?;
    }
    Ok(())
}

fn check_startable(status: Status) -> Result<()> {
    let why = match status {
        Status::Created => return Ok(()),
        Status::Stopped => "cannot start a container that has stopped".to_string(),
        Status::Running => "cannot start an already running container".to_string(),
        s => format!("cannot start a container in the {} state", s.as_str()),
    };
    Err(Error::State(why))
}

/// The fifo's write end, opened without blocking: no reader means init is gone.
fn open_start_fifo(fifo: &Path) -> Result<std::fs::File> {
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(fifo)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Err(Error::State(
            "container init died before start: cannot start the container".into(),
        )),
        Err(e) => Err(Error::io("opening the start fifo", fifo, e)),
    }
}

fn has_hooks(st: &State, phase: Phase) -> bool {
    st.hooks
        .as_ref()
        .is_some_and(|h| !phase.hooks_in(h).is_empty())
}

/// Init leaves [`crate::hooks::START_CONTAINER_FAILED`] in the fifo when a startContainer
/// hook failed and the user process never ran; the fifo holds at most start's own byte
/// otherwise (when init died before reading it).
fn check_start_container_hooks(fifo_writer: &std::fs::File) -> Result<()> {
    use std::os::fd::AsFd;
    let unread = crate::linux::sys::proc::pipe_unread(fifo_writer.as_fd()).map_err(|e| {
        Error::sys(
            "checking the startContainer hooks",
            "ioctl(FIONREAD)",
            "exec.fifo",
            e,
        )
    })?;
    if unread >= crate::hooks::START_CONTAINER_FAILED.len() {
        return Err(Error::Other(
            "a startContainer hook failed: the container's process did not run and the container has stopped (the hook's error is on the container's stderr)".into(),
        ));
    }
    Ok(())
}

/// Init holds the start fifo open (close-on-exec) until its execve. Once it is gone,
/// the fifo has no reader left and our write end polls as POLLERR.
fn wait_for_execve(fifo_writer: &std::fs::File, st: &State) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(fifo_writer.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        if !st.init_alive() {
            return;
        }
    }
}
