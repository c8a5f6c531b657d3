//! The foreground terminal proxy of `gpurun run` and `gpurun exec -t`: the caller's
//! terminal in raw mode, bytes copied both ways between it and the container's pty
//! master, window-size changes forwarded.
//!
//! The proxy does not own a loop: the runtime's own loop (which already polls a signalfd
//! and reaps children) calls [`Proxy::step`] with its fds, [`Proxy::on_winch`] on
//! SIGWINCH, and [`Proxy::drain`] once the container process has exited.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use super::{get_size, set_nonblocking, set_size, sys, ConsoleError};

const CHUNK: usize = 16 * 1024;

/// A terminal in raw mode, restored to its saved settings when dropped.
pub struct RawMode {
    tty: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Put `fd` in raw mode if it is a terminal (`Ok(None)` if it is not).
    pub fn enter(fd: BorrowedFd<'_>) -> Result<Option<RawMode>, ConsoleError> {
        if !nix::unistd::isatty(fd).unwrap_or(false) {
            return Ok(None);
        }
        let saved =
            tcgetattr(fd).map_err(sys("reading terminal settings", "tcgetattr", "stdin"))?;
        let tty = fd.try_clone_to_owned().map_err(|e| ConsoleError::Sys {
            what: "keeping the terminal to restore",
            syscall: "fcntl(F_DUPFD_CLOEXEC)",
            path: "stdin".into(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
        })?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(sys(
            "putting the terminal in raw mode",
            "tcsetattr",
            "stdin",
        ))?;
        Ok(Some(RawMode { tty, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(self.tty.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the caller's input to the pty master and the master's output to the caller.
pub struct Proxy {
    input: Option<OwnedFd>,
    output: OwnedFd,
    output_ok: bool,
    master: OwnedFd,
    master_open: bool,
    /// Input read but not yet accepted by the master; no more input is read until it is.
    pending: Vec<u8>,
    sent: usize,
    /// Declared last: the terminal is restored after everything else is dropped.
    raw: Option<RawMode>,
}

impl Proxy {
    /// `input` and `output` are the caller's stdin and stdout (dups of fds 0 and 1);
    /// `master` the container's pty master. A terminal `input` is put in raw mode until
    /// the proxy is dropped, and its size is copied to the pty.
    pub fn new(input: OwnedFd, output: OwnedFd, master: OwnedFd) -> Result<Proxy, ConsoleError> {
        set_nonblocking(master.as_fd(), true)?;
        let raw = RawMode::enter(input.as_fd())?;
        let p = Proxy {
            input: Some(input),
            output,
            output_ok: true,
            master,
            master_open: true,
            pending: Vec::new(),
            sent: 0,
            raw,
        };
        p.on_winch()?;
        Ok(p)
    }

    /// Whether the caller's terminal was put in raw mode.
    pub fn is_raw(&self) -> bool {
        self.raw.is_some()
    }

    /// The container side closed the pty: nothing more will come from it.
    pub fn hung_up(&self) -> bool {
        !self.master_open
    }

    /// Copy the caller's window size to the pty (call on SIGWINCH). Nothing to do when
    /// neither the caller's input nor output is a terminal.
    pub fn on_winch(&self) -> Result<(), ConsoleError> {
        let src = [
            self.input.as_ref().map(|f| f.as_fd()),
            Some(self.output.as_fd()),
        ]
        .into_iter()
        .flatten()
        .find(|fd| nix::unistd::isatty(*fd).unwrap_or(false));
        let Some(src) = src else { return Ok(()) };
        let (rows, cols) = get_size(src)?;
        set_size(self.master.as_fd(), rows, cols)
    }

    /// Wait up to `timeout` for the proxy's fds or the caller's `extra` fds, move the
    /// bytes that are ready, and return which `extra` fds are readable (in order).
    pub fn step(
        &mut self,
        extra: &[BorrowedFd<'_>],
        timeout: PollTimeout,
    ) -> Result<Vec<bool>, ConsoleError> {
        let want_input = self.master_open && self.pending.is_empty();
        let mut fds = Vec::with_capacity(2 + extra.len());
        let mut at_input = None;
        let mut at_master = None;
        if let (true, Some(i)) = (want_input, self.input.as_ref()) {
            at_input = Some(fds.len());
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        if self.master_open {
            let mut ev = PollFlags::POLLIN;
            if !self.pending.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            at_master = Some(fds.len());
            fds.push(PollFd::new(self.master.as_fd(), ev));
        }
        let first_extra = fds.len();
        fds.extend(extra.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(vec![false; extra.len()]),
            Err(e) => return Err(sys("waiting for terminal input", "poll", "")(e)),
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let input_ev = at_input.map_or(PollFlags::empty(), |i| revents[i]);
        let master_ev = at_master.map_or(PollFlags::empty(), |i| revents[i]);
        if !master_ev.is_empty() {
            if master_ev.contains(PollFlags::POLLOUT) {
                self.flush_pending();
            }
            self.pump_master(master_ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))?;
        }
        if !input_ev.is_empty() {
            self.read_input()?;
        }
        Ok(revents[first_extra..]
            .iter()
            .map(|r| !r.is_empty())
            .collect())
    }

    /// Copy what the master still holds to the caller (after the container process
    /// exited, its last output may still be in the pty).
    pub fn drain(&mut self) -> Result<(), ConsoleError> {
        if self.master_open {
            self.pump_master(false)?;
        }
        Ok(())
    }

    /// A loop of its own, for callers without one: copy until the container side hangs
    /// up or `done()` is true, polling every `slice`, then drain.
    pub fn copy_until(
        &mut self,
        mut done: impl FnMut() -> bool,
        slice: PollTimeout,
    ) -> Result<(), ConsoleError> {
        while self.master_open && !done() {
            self.step(&[], slice)?;
        }
        self.drain()
    }

    fn read_input(&mut self) -> Result<(), ConsoleError> {
        let Some(input) = self.input.as_ref() else {
            return Ok(());
        };
        let mut buf = vec![0u8; CHUNK];
        match nix::unistd::read(input.as_fd(), &mut buf) {
            // End of input (or the caller's terminal went away): stop reading it, but
            // keep copying the container's output.
            Ok(0) | Err(Errno::EIO) => self.input = None,
            Ok(n) => {
                buf.truncate(n);
                self.pending = buf;
                self.sent = 0;
                self.flush_pending();
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(sys("reading terminal input", "read", "stdin")(e)),
        }
        Ok(())
    }

    fn flush_pending(&mut self) {
        while self.sent < self.pending.len() {
            match nix::unistd::write(self.master.as_fd(), &self.pending[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.master_open = false;
                    break;
                }
            }
        }
        self.pending.clear();
        self.sent = 0;
    }

    /// Read the master until it would block. `hup`: the poll said the other side is
    /// gone, so "would block" means nothing is left.
    fn pump_master(&mut self, hup: bool) -> Result<(), ConsoleError> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match nix::unistd::read(self.master.as_fd(), &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    self.master_open = false;
                    return Ok(());
                }
                Ok(n) => self.write_output(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    if hup {
                        self.master_open = false;
                    }
                    return Ok(());
                }
                Err(e) => {
                    return Err(sys(
                        "reading the container's terminal",
                        "read",
                        "pty master",
                    )(e))
                }
            }
        }
    }

    /// Blocking write of container output to the caller. The caller's stdout may be
    /// non-blocking (it is a shared file description we do not change): wait for it. If
    /// it fails for good, later output is discarded rather than stopping the container.
    fn write_output(&mut self, mut data: &[u8]) {
        while self.output_ok && !data.is_empty() {
            match nix::unistd::write(self.output.as_fd(), data) {
                Ok(n) => data = &data[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut p = [PollFd::new(self.output.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut p, PollTimeout::NONE);
                }
                Err(_) => self.output_ok = false,
            }
        }
    }
}
