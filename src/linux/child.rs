//! A short-lived helper process run to completion without threads: its stdin fed, its
//! stdout and stderr collected (bounded), its exit or a timeout awaited with `poll(2)` on
//! the pipes and a pidfd, and — on a timeout, an error, or any early return — its whole
//! process group killed and the process reaped, so nothing is left running or a zombie.
//! Hooks and the driver's nvidia-smi both run through it, on the runtime's single thread.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Poll slice when the kernel offers no pidfd to wait on.
const SLICE: Duration = Duration::from_millis(10);

/// Which part of an output stream is kept, and how much of it.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// The first bytes (a program's answer).
    Head(usize),
    /// The last bytes (a failing program's last words).
    Tail(usize),
}

/// What a stream said, within its [`Keep`].
#[derive(Debug)]
pub struct Capture {
    keep: Keep,
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn new(keep: Keep) -> Self {
        Capture {
            keep,
            bytes: Vec::new(),
            truncated: false,
        }
    }

    pub(crate) fn push(&mut self, b: &[u8]) {
        match self.keep {
            Keep::Head(max) => {
                let room = max.saturating_sub(self.bytes.len());
                self.bytes.extend_from_slice(&b[..b.len().min(room)]);
                self.truncated |= b.len() > room;
            }
            Keep::Tail(max) => {
                self.bytes.extend_from_slice(b);
                if self.bytes.len() > 2 * max {
                    let cut = self.bytes.len() - max;
                    self.bytes.drain(..cut);
                    self.truncated = true;
                }
            }
        }
    }

    /// The bytes kept.
    pub fn bytes(&self) -> &[u8] {
        match self.keep {
            Keep::Head(_) => &self.bytes,
            Keep::Tail(max) => &self.bytes[self.bytes.len().saturating_sub(max)..],
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        let start = match self.keep {
            Keep::Head(_) => 0,
            Keep::Tail(max) => self.bytes.len().saturating_sub(max),
        };
        let mut b = self.bytes;
        b.drain(..start);
        b
    }

    /// As text, marked `[…]` where bytes were dropped.
    pub fn text(&self) -> String {
        let t = String::from_utf8_lossy(self.bytes());
        let cut = self.truncated || self.bytes().len() < self.bytes.len();
        match (self.keep, cut) {
            (Keep::Tail(_), true) => format!("[…] {}", t.trim_start()),
            (Keep::Head(_), true) => format!("{} […]", t.trim_end()),
            (_, false) => t.into_owned(),
        }
    }
}

/// How it ended.
#[derive(Debug)]
pub enum Outcome {
    Exited(ExitStatus),
    /// The timeout passed: the process group was killed and the process reaped.
    TimedOut,
}

/// Everything a run gives back.
#[derive(Debug)]
pub struct Finished {
    pub outcome: Outcome,
    pub stdout: Capture,
    pub stderr: Capture,
}

/// The failing system call and its errno.
pub type SysError = (&'static str, Errno);
type SysResult<T> = Result<T, SysError>;

/// Feeds `input` to `child`'s stdin (when piped), collects its piped stdout and stderr, and
/// waits for it to exit or for `timeout`. `child` must lead its own process group
/// (`process_group(0)`), so a timeout kills what it started as well. Once the child has
/// exited, output still buffered is read but a pipe kept open by something it left behind
/// is not waited for.
pub fn communicate(
    child: Child,
    input: &[u8],
    timeout: Option<Duration>,
    stdout: Keep,
    stderr: Keep,
) -> SysResult<Finished> {
    let mut running = Running::new(child, stdout, stderr);
    let outcome = running.communicate(input, timeout)?;
    Ok(Finished {
        outcome,
        stdout: std::mem::replace(&mut running.stdout, Capture::new(stdout)),
        stderr: std::mem::replace(&mut running.stderr, Capture::new(stderr)),
    })
}

/// A spawned child: killed and reaped if dropped before it was waited for, so no error
/// path leaves a stray process or a zombie.
struct Running {
    child: Child,
    reaped: bool,
    stdin: Option<ChildStdin>,
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    stdout: Capture,
    stderr: Capture,
}

impl Running {
    fn new(mut child: Child, stdout: Keep, stderr: Keep) -> Self {
        Running {
            stdin: child.stdin.take(),
            out: child.stdout.take(),
            err: child.stderr.take(),
            child,
            reaped: false,
            stdout: Capture::new(stdout),
            stderr: Capture::new(stderr),
        }
    }

    fn communicate(&mut self, input: &[u8], timeout: Option<Duration>) -> SysResult<Outcome> {
        for fd in [
            self.stdin.as_ref().map(|f| f.as_fd()),
            self.out.as_ref().map(|f| f.as_fd()),
            self.err.as_ref().map(|f| f.as_fd()),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd).map_err(|e| ("fcntl", e))?;
        }
        if input.is_empty() {
            self.stdin = None;
        }
        let pidfd: Option<OwnedFd> =
            crate::linux::sys::proc::pidfd_open(self.child.id() as i32).ok();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut written = 0;
        loop {
            if let Some(status) = self.try_wait()? {
                self.drain();
                return Ok(Outcome::Exited(status));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                self.kill_group();
                self.drain();
                return Ok(Outcome::TimedOut);
            }
            let mut wait = deadline.map(|d| d - now);
            if pidfd.is_none() {
                wait = Some(wait.map_or(SLICE, |w| w.min(SLICE)));
            }
            let ready = self.poll_once(pidfd.as_ref().map(|f| f.as_fd()), wait)?;
            if ready.stdin {
                self.write_some(input, &mut written);
            }
            if ready.out {
                self.read_out();
            }
            if ready.err {
                self.read_err();
            }
        }
    }

    fn poll_once(&self, pidfd: Option<BorrowedFd<'_>>, wait: Option<Duration>) -> SysResult<Ready> {
        let mut fds = Vec::with_capacity(4);
        let mut slots = [None; 3];
        if let Some(f) = &self.stdin {
            slots[0] = Some(fds.len());
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(f) = &self.out {
            slots[1] = Some(fds.len());
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        if let Some(f) = &self.err {
            slots[2] = Some(fds.len());
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = pidfd {
            fds.push(PollFd::new(p, PollFlags::POLLIN));
        }
        let ms = match wait {
            None => PollTimeout::NONE,
            // Round up: a deadline a fraction of a millisecond away must not spin.
            Some(w) => {
                PollTimeout::try_from(w.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut fds, ms) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(("poll", e)),
        }
        let hit = |slot: Option<usize>| {
            slot.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()))
        };
        Ok(Ready {
            stdin: hit(slots[0]),
            out: hit(slots[1]),
            err: hit(slots[2]),
        })
    }

    /// Errors other than "would block" end the write: a child that does not read its
    /// stdin is not a failure (the same as runc for hooks).
    fn write_some(&mut self, input: &[u8], written: &mut usize) {
        let Some(f) = self.stdin.as_mut() else { return };
        match f.write(&input[*written..]) {
            Ok(n) => {
                *written += n;
                if *written >= input.len() {
                    self.stdin = None;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.stdin = None,
        }
    }

    fn read_out(&mut self) {
        if !read_available(&mut self.out, &mut self.stdout) {
            self.out = None;
        }
    }

    fn read_err(&mut self) {
        if !read_available(&mut self.err, &mut self.stderr) {
            self.err = None;
        }
    }

    fn drain(&mut self) {
        self.stdin = None;
        self.read_out();
        self.read_err();
        self.out = None;
        self.err = None;
    }

    fn try_wait(&mut self) -> SysResult<Option<ExitStatus>> {
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.reaped = true;
                Ok(Some(s))
            }
            Ok(None) => Ok(None),
            Err(e) => Err((
                "waitid",
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )),
        }
    }

    fn kill_group(&mut self) {
        if self.reaped {
            return;
        }
        // The child leads its process group (process_group(0)); its pid is the group id
        // and cannot be reused while it is unreaped.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        if self.child.wait().is_ok() {
            self.reaped = true;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_group();
    }
}

struct Ready {
    stdin: bool,
    out: bool,
    err: bool,
}

/// Read what a non-blocking pipe holds now. Returns false once it reached end of file
/// or failed.
fn read_available<R: Read>(pipe: &mut Option<R>, into: &mut Capture) -> bool {
    let Some(p) = pipe.as_mut() else { return false };
    let mut buf = [0u8; 4096];
    loop {
        match p.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => into.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_capture_keeps_the_last_bytes_and_a_head_capture_the_first() {
        let mut tail = Capture::new(Keep::Tail(4096));
        let mut head = Capture::new(Keep::Head(8));
        for i in 0..5000 {
            tail.push(format!("{i}\n").as_bytes());
            head.push(format!("{i}\n").as_bytes());
        }
        let t = tail.text();
        assert!(t.len() <= 4096 + 8, "{}", t.len());
        assert!(t.starts_with("[…]") && t.ends_with("4999\n"), "{t}");
        assert_eq!(tail.into_bytes().len(), 4096);
        assert_eq!(head.bytes(), b"0\n1\n2\n3\n");
        assert!(head.text().ends_with("[…]"));
        let mut whole = Capture::new(Keep::Head(100));
        whole.push(b"ok\n");
        assert_eq!(whole.text(), "ok\n");
    }
}
