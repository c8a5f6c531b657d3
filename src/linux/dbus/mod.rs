//! A small, synchronous D-Bus client: enough to ask systemd for transient units.
//!
//! One Unix socket, blocking reads with a deadline, no threads and no event loop: the
//! runtime calls it with the container's init already cloned and waiting, and closes it
//! before going on. Authentication is SASL `EXTERNAL` (the kernel vouches for the uid);
//! no file descriptors are passed.
//!
//! As root, gpurun talks to systemd directly on its private socket (`/run/systemd/private`),
//! as `systemctl` does: it works without a bus daemon and without a `Hello`. Otherwise it
//! uses the system bus.

pub mod wire;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use wire::{Call, Message, Value};

#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("{step} on D-Bus socket {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("D-Bus authentication at {path} failed: the server answered {answer:?}")]
    Auth { path: PathBuf, answer: String },
    #[error("D-Bus protocol error: {0}")]
    Protocol(String),
    /// The peer answered with an error message.
    #[error("{name}: {message}")]
    Remote { name: String, message: String },
    #[error("no answer from D-Bus peer at {path} within {after:?} while waiting for {what}")]
    Timeout {
        what: String,
        path: PathBuf,
        after: Duration,
    },
}

impl DbusError {
    /// The D-Bus error name, when the peer answered with an error.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            DbusError::Remote { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// The system bus's socket (`DBUS_SYSTEM_BUS_ADDRESS` is deliberately not read: the
/// runtime's environment comes from its caller).
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// An open, authenticated connection.
pub struct Connection {
    sock: UnixStream,
    path: PathBuf,
    serial: u32,
    /// Signals that arrived while waiting for a method's answer.
    pending: Vec<Message>,
    timeout: Duration,
}

impl Connection {
    /// Connects to `path` and authenticates. With `bus`, the peer is a bus daemon and gets
    /// the `Hello` every bus client must send first.
    pub fn open(path: &Path, bus: bool, timeout: Duration) -> Result<Self, DbusError> {
        let io = |step: &'static str| {
            let path = path.to_path_buf();
            move |source| DbusError::Io { step, path, source }
        };
        let sock = UnixStream::connect(path).map_err(io("connecting"))?;
        let mut c = Connection {
            sock,
            path: path.to_path_buf(),
            serial: 0,
            pending: Vec::new(),
            timeout,
        };
        c.authenticate()?;
        if bus {
            c.call(&Call {
                destination: "org.freedesktop.DBus",
                path: "/org/freedesktop/DBus",
                interface: "org.freedesktop.DBus",
                member: "Hello",
                body: &[],
            })?;
        }
        Ok(c)
    }

    fn io(&self, step: &'static str, source: std::io::Error) -> DbusError {
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => DbusError::Timeout {
                what: step.to_string(),
                path: self.path.clone(),
                after: self.timeout,
            },
            _ => DbusError::Io {
                step,
                path: self.path.clone(),
                source,
            },
        }
    }

    /// SASL EXTERNAL with `BEGIN` sent in the same write, as sd-bus clients do: the peer
    /// then has `BEGIN` before it answers `OK`, and the first message arrives on its own.
    /// (systemd 252 can leave a message that arrives in one read with `BEGIN` unprocessed
    /// until more data comes.)
    fn authenticate(&mut self) -> Result<(), DbusError> {
        self.sock
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| self.io("setting a read timeout", e))?;
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let hello = format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n");
        self.sock
            .write_all(hello.as_bytes())
            .map_err(|e| self.io("sending AUTH", e))?;
        let answer = self.read_line()?;
        if !answer.starts_with("OK ") {
            return Err(DbusError::Auth {
                path: self.path.clone(),
                answer,
            });
        }
        Ok(())
    }

    /// One line of the authentication dialogue, read byte by byte so nothing of the first
    /// message is consumed with it.
    fn read_line(&mut self) -> Result<String, DbusError> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 512 {
                return Err(DbusError::Protocol("authentication line too long".into()));
            }
            let n = self
                .sock
                .read(&mut byte)
                .map_err(|e| self.io("reading the authentication answer", e))?;
            if n == 0 {
                return Err(DbusError::Auth {
                    path: self.path.clone(),
                    answer: format!(
                        "{} (then closed the connection)",
                        String::from_utf8_lossy(&line)
                    ),
                });
            }
            line.push(byte[0]);
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn read_message(&mut self, deadline: Instant, what: &str) -> Result<Message, DbusError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DbusError::Timeout {
                what: what.to_string(),
                path: self.path.clone(),
                after: self.timeout,
            });
        }
        self.sock
            .set_read_timeout(Some(left))
            .map_err(|e| self.io("setting a read timeout", e))?;
        let timeout = |c: &Self, e: std::io::Error| match c.io("reading a message", e) {
            DbusError::Timeout { path, after, .. } => DbusError::Timeout {
                what: what.to_string(),
                path,
                after,
            },
            other => other,
        };
        let mut fixed = [0u8; 16];
        self.sock
            .read_exact(&mut fixed)
            .map_err(|e| timeout(self, e))?;
        let (header, body) = wire::frame_lengths(&fixed)?;
        let mut bytes = fixed.to_vec();
        bytes.resize(header + body, 0);
        self.sock
            .read_exact(&mut bytes[16..])
            .map_err(|e| timeout(self, e))?;
        wire::decode_message(&bytes)
    }

    /// Sends a method call and waits for its answer. An error answer is
    /// [`DbusError::Remote`]; signals that arrive meanwhile are kept for
    /// [`Connection::wait_signal`].
    pub fn call(&mut self, call: &Call<'_>) -> Result<Message, DbusError> {
        self.serial += 1;
        let serial = self.serial;
        let bytes = wire::encode_call(call, serial);
        self.sock
            .write_all(&bytes)
            .map_err(|e| self.io("sending a method call", e))?;
        let deadline = Instant::now() + self.timeout;
        let what = format!("the answer to {}.{}", call.interface, call.member);
        loop {
            let m = self.read_message(deadline, &what)?;
            match m.kind {
                wire::SIGNAL => self.pending.push(m),
                wire::METHOD_RETURN if m.reply_serial == Some(serial) => return Ok(m),
                wire::ERROR if m.reply_serial == Some(serial) => {
                    return Err(DbusError::Remote {
                        name: m.error_name.clone().unwrap_or_default(),
                        message: m.first_str().unwrap_or_default(),
                    })
                }
                // Answers to nothing gpurun is waiting for, and calls from the peer.
                _ => {}
            }
        }
    }

    /// Waits for the first signal `want` accepts, among those already received and those
    /// that arrive before the deadline.
    pub fn wait_signal(
        &mut self,
        what: &str,
        mut want: impl FnMut(&Message) -> bool,
    ) -> Result<Message, DbusError> {
        if let Some(i) = self.pending.iter().position(&mut want) {
            return Ok(self.pending.swap_remove(i));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let m = self.read_message(deadline, what)?;
            if m.kind == wire::SIGNAL && want(&m) {
                return Ok(m);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
