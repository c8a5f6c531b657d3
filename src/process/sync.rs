//! The parent/child channel: a SOCK_SEQPACKET socket pair, one message per packet. The
//! child asks the parent for what only the parent can do (write id maps and time
//! offsets), reports its pid and readiness, or one error naming the failed step.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::process::error::{Error, Result};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChildMsg {
    /// Write uid_map/gid_map for this pid (the child just unshared its user namespace).
    IdMaps(i32),
    /// Write timens_offsets for this pid (the child just unshared its time namespace).
    TimeOffsets(i32),
    /// The container's init, as a host pid (two-stage spawn).
    InitPid(i32),
    /// Run the prestart and createRuntime hooks now (mounts are done, pivot is not).
    RuntimeHooks,
    Ready,
    Failed {
        step: String,
        msg: String,
    },
}

pub const ACK: u8 = 1;

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("creating the init channel", "socketpair", "", e))?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// The child's side. A plain write(2), one packet: without no_new_privs "ready" is
    /// sent under the container's seccomp filter, and write is a call any profile that
    /// runs a runtime's init allows (sendto is not). Should the parent be gone, SIGPIPE
    /// ends init, as the parent-death signal would.
    pub fn send_msg(&self, m: &ChildMsg) -> Result<()> {
        let data =
            serde_json::to_vec(m).map_err(Error::json("encoding a message to the parent"))?;
        nix::unistd::write(self.fd.as_fd(), &data)
            .map_err(|e| Error::sys("reporting to the parent", "write", "", e))?;
        Ok(())
    }

    /// `None` when the other side closed the channel.
    pub fn recv_msg(&self) -> Result<Option<ChildMsg>> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match recv(
                self.fd.as_fd().as_raw_fd_compat(),
                &mut buf,
                MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => {
                    break r.map_err(|e| {
                        Error::sys("reading from the container init", "recv", "", e)
                    })?
                }
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(Error::json("decoding a message from the container init"))
    }

    pub fn send_ack(&self) -> Result<()> {
        send(
            self.fd.as_fd().as_raw_fd_compat(),
            &[ACK],
            MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(|e| Error::sys("answering the container init", "send", "", e))?;
        Ok(())
    }

    pub fn wait_ack(&self) -> Result<()> {
        let mut b = [0u8; 1];
        loop {
            match recv(
                self.fd.as_fd().as_raw_fd_compat(),
                &mut b,
                MsgFlags::empty(),
            ) {
                Ok(1) if b[0] == ACK => return Ok(()),
                Ok(_) => return Err(Error::Protocol("the parent closed the init channel".into())),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("waiting for the parent", "recv", "", e)),
            }
        }
    }
}

trait RawCompat {
    fn as_raw_fd_compat(&self) -> std::os::fd::RawFd;
}

impl RawCompat for std::os::fd::BorrowedFd<'_> {
    fn as_raw_fd_compat(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}
