//! Terminals: the container's pty, the `--console-socket` hand-off of its master, the
//! container's `/dev/console`, and the foreground proxy between the caller's terminal
//! and the pty.
//!
//! The pty is allocated from the container's own devpts instance, and both ends are
//! checked to be real devpts ttys before anything is mounted onto `/dev/console`; the
//! peer is opened through the master (`TIOCGPTPEER`), never by its `/dev/pts/N` path, so a
//! symlink planted in the image cannot make `/dev/console` a bind of some other file
//! (CVE-2025-52565).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, FcntlArg, OFlag};
use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{fstat, major, minor, FileStat, Mode, SFlag};
use nix::sys::statfs::{fstatfs, DEVPTS_SUPER_MAGIC};

use crate::linux::sys::tty;

mod proxy;
pub use proxy::{Proxy, RawMode};

/// `/dev/ptmx` and each devpts `ptmx`: character device 5:2.
const PTMX_MAJOR: u64 = 5;
const PTMX_MINOR: u64 = 2;
/// Unix98 pty peers: majors 136 to 143 (`UNIX98_PTY_SLAVE_MAJOR`, 8 majors of 256).
const PTS_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;

/// The most payload bytes callers accept with the master (go-runc and conmon: < 4096).
pub const MAX_PAYLOAD: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{what}: {syscall} {path}: {errno}")]
    Sys {
        what: &'static str,
        syscall: &'static str,
        path: String,
        errno: Errno,
    },
    #[error("{what} {path} is not a devpts {expected}: {found}")]
    NotPty {
        what: &'static str,
        path: String,
        expected: &'static str,
        found: String,
    },
    #[error("cannot mount the pty onto {path}: it is a {found}, not a file or device node")]
    BadConsoleTarget { path: String, found: String },
    #[error("/dev/console is not the container's pty after mounting it: {0}")]
    ConsoleMismatch(String),
    #[error("console socket: {0}")]
    Protocol(String),
}

fn sys(
    what: &'static str,
    syscall: &'static str,
    path: impl std::fmt::Display,
) -> impl FnOnce(Errno) -> ConsoleError {
    let path = path.to_string();
    move |errno| ConsoleError::Sys {
        what,
        syscall,
        path,
        errno,
    }
}

/// A pty pair: the master goes to whoever drives the terminal; the peer ("slave")
/// becomes the container process's controlling terminal and stdio.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// `/dev/pts/N` as seen inside the devpts instance it came from.
    pub slave_path: PathBuf,
}

/// Open a directory without following a final symlink, as a handle for `*at` calls
/// (for init: the container's `/dev/pts` and `/dev` after `pivot_root`).
pub fn open_dir(path: &Path) -> Result<OwnedFd, ConsoleError> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("opening directory", "open", path.display()))
}

/// Open a new pty pair from the `ptmx` in `pts_dir` (a devpts mount, e.g. the
/// container's `/dev/pts`), and verify that the master is that instance's `ptmx` (devpts,
/// char 5:2) and the peer a devpts pty (major 136-143) whose number the master reports.
pub fn open_pty(pts_dir: BorrowedFd<'_>) -> Result<Pty, ConsoleError> {
    let master = openat(
        pts_dir,
        "ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(sys("opening the pty multiplexer", "openat", "ptmx"))?;
    let st = verify_devpts(master.as_fd(), "pty multiplexer", "ptmx", "ptmx")?;
    if (major(st.st_rdev), minor(st.st_rdev)) != (PTMX_MAJOR, PTMX_MINOR) {
        return Err(not_pty("pty multiplexer", "ptmx", "ptmx", &st));
    }
    tty::unlock_pty(master.as_fd()).map_err(sys(
        "unlocking the pty",
        "ioctl(TIOCSPTLCK)",
        "ptmx",
    ))?;
    let n = tty::pty_number(master.as_fd()).map_err(sys(
        "reading the pty number",
        "ioctl(TIOCGPTN)",
        "ptmx",
    ))?;
    let slave_path = PathBuf::from(format!("/dev/pts/{n}"));
    let flags = (OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits();
    let slave = tty::open_pty_peer(master.as_fd(), flags).map_err(sys(
        "opening the pty peer",
        "ioctl(TIOCGPTPEER)",
        slave_path.display(),
    ))?;
    let shown = slave_path.display().to_string();
    let st = verify_devpts(slave.as_fd(), "pty peer", &shown, "pty")?;
    let expect_major = PTS_MAJORS.start() + u64::from(n) / 256;
    let expect_minor = u64::from(n) % 256;
    if !PTS_MAJORS.contains(&major(st.st_rdev))
        || (major(st.st_rdev), minor(st.st_rdev)) != (expect_major, expect_minor)
    {
        return Err(not_pty("pty peer", &shown, "pty", &st));
    }
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

fn verify_devpts(
    fd: BorrowedFd<'_>,
    what: &'static str,
    path: &str,
    expected: &'static str,
) -> Result<FileStat, ConsoleError> {
    let fs = fstatfs(fd).map_err(sys("checking the filesystem of", "fstatfs", path))?;
    let st = fstat(fd).map_err(sys("checking", "fstat", path))?;
    if fs.filesystem_type() != DEVPTS_SUPER_MAGIC {
        return Err(ConsoleError::NotPty {
            what,
            path: path.to_string(),
            expected,
            found: format!("filesystem magic {:#x}", fs.filesystem_type().0),
        });
    }
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFCHR {
        return Err(not_pty(what, path, expected, &st));
    }
    Ok(st)
}

fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        _ => "special file",
    }
}

fn not_pty(what: &'static str, path: &str, expected: &'static str, st: &FileStat) -> ConsoleError {
    ConsoleError::NotPty {
        what,
        path: path.to_string(),
        expected,
        found: format!(
            "{} {}:{}",
            kind_of(st),
            major(st.st_rdev),
            minor(st.st_rdev)
        ),
    }
}

/// `process.consoleSize` or a forwarded window size: rows (height) and columns (width).
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), ConsoleError> {
    tty::set_window_size(fd, rows, cols).map_err(sys(
        "setting the terminal size",
        "ioctl(TIOCSWINSZ)",
        "",
    ))
}

/// (rows, columns) of a terminal.
pub fn get_size(fd: BorrowedFd<'_>) -> Result<(u16, u16), ConsoleError> {
    tty::window_size(fd).map_err(sys("reading the terminal size", "ioctl(TIOCGWINSZ)", ""))
}

/// Connect to the caller's console socket: an `AF_UNIX SOCK_STREAM` listener at a path,
/// resolved in the caller's mount namespace (so: before the container is cloned). A path
/// too long for `sun_path` is reached through its directory's `/proc/self/fd` entry.
pub fn connect_socket(path: &Path) -> Result<OwnedFd, ConsoleError> {
    let shown = path.display();
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("creating the console socket", "socket", &shown))?;
    let direct = UnixAddr::new(path);
    let short;
    let addr = match direct {
        Ok(a) => a,
        Err(Errno::ENAMETOOLONG) => {
            let (dir, name) = match (path.parent(), path.file_name()) {
                (Some(d), Some(n)) => (
                    if d.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        d
                    },
                    n,
                ),
                _ => {
                    return Err(sys("connecting to the console socket", "connect", &shown)(
                        Errno::ENAMETOOLONG,
                    ))
                }
            };
            short = open_dir(dir)?;
            let via = PathBuf::from(format!("/proc/self/fd/{}", short.as_raw_fd())).join(name);
            UnixAddr::new(&via).map_err(sys(
                "connecting to the console socket",
                "connect",
                &shown,
            ))?
        }
        Err(e) => {
            return Err(sys("connecting to the console socket", "connect", &shown)(
                e,
            ))
        }
    };
    loop {
        match connect(sock.as_raw_fd(), &addr) {
            Err(Errno::EINTR) => continue,
            r => break r.map_err(sys("connecting to the console socket", "connect", &shown))?,
        }
    }
    Ok(sock)
}

/// Send the master over the console socket: exactly one message whose payload is the
/// pty name (a single space if the name is empty: a zero-length message on a stream
/// socket carries no ancillary data) with one `SCM_RIGHTS` fd.
pub fn send_master(
    sock: BorrowedFd<'_>,
    master: BorrowedFd<'_>,
    name: &str,
) -> Result<(), ConsoleError> {
    let payload: &[u8] = if name.is_empty() {
        b" "
    } else {
        name.as_bytes()
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(ConsoleError::Protocol(format!(
            "the pty name is {} bytes; receivers accept at most {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(payload)];
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            r => break r.map_err(sys("sending the pty master", "sendmsg", "console socket"))?,
        }
    };
    // The fd went with the first byte; finish the payload so receivers see all of it.
    let mut off = sent;
    while off < payload.len() {
        match nix::sys::socket::send(sock.as_raw_fd(), &payload[off..], MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => continue,
            r => off += r.map_err(sys("sending the pty name", "send", "console socket"))?,
        }
    }
    Ok(())
}

/// Receive what [`send_master`] sent: the payload and exactly one fd, or an error (any
/// extra fd is closed).
pub fn recv_master(conn: BorrowedFd<'_>) -> Result<(OwnedFd, Vec<u8>), ConsoleError> {
    let mut buf = vec![0u8; MAX_PAYLOAD + 1];
    let mut got = tty::recv_with_fds(conn, &mut buf, 2).map_err(sys(
        "receiving the pty master",
        "recvmsg",
        "console socket",
    ))?;
    let bad = |m: String| Err(ConsoleError::Protocol(m));
    if got.control_truncated || got.fds.len() > 1 {
        return bad("more than one fd arrived with the pty master".into());
    }
    if got.other_control > 0 {
        return bad("unexpected ancillary data arrived with the pty master".into());
    }
    if got.len == 0 {
        return bad("the message carrying the pty master is empty".into());
    }
    if got.len > MAX_PAYLOAD || got.data_truncated {
        return bad(format!(
            "the message carrying the pty master is longer than {MAX_PAYLOAD} bytes"
        ));
    }
    let Some(fd) = got.fds.pop() else {
        return bad("no fd arrived with the message".into());
    };
    buf.truncate(got.len);
    Ok((fd, buf))
}

/// Make `slave` the calling process's controlling terminal and its stdin, stdout and
/// stderr: `setsid`, `TIOCSCTTY`, `dup2` onto 0, 1 and 2.
pub fn become_session_leader_on(slave: BorrowedFd<'_>) -> Result<(), ConsoleError> {
    match nix::unistd::setsid() {
        Ok(_) => {}
        // Already a session leader (the caller ran setsid itself): nothing to do.
        Err(Errno::EPERM) if nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid()) => {}
        Err(e) => return Err(sys("starting a new session", "setsid", "")(e)),
    }
    tty::set_controlling_tty(slave).map_err(sys(
        "taking the pty as controlling terminal",
        "ioctl(TIOCSCTTY)",
        "",
    ))?;
    nix::unistd::dup2_stdin(slave).map_err(sys("making the pty stdin", "dup2", "0"))?;
    nix::unistd::dup2_stdout(slave).map_err(sys("making the pty stdout", "dup2", "1"))?;
    nix::unistd::dup2_stderr(slave).map_err(sys("making the pty stderr", "dup2", "2"))?;
    Ok(())
}

/// Bind the pty peer onto `console` in `dev_dir` (the container's `/dev`), by fd on both
/// sides, and check the result is that pty. A symlink already at `console` is replaced
/// by an empty file, never followed.
pub fn mount_console(slave: BorrowedFd<'_>, dev_dir: BorrowedFd<'_>) -> Result<(), ConsoleError> {
    const NAME: &str = "console";
    let path = "/dev/console";
    let target = open_console_target(dev_dir, NAME, path)?;
    tty::bind_fd_onto_fd(slave, target.as_fd()).map_err(sys(
        "bind-mounting the pty onto",
        "open_tree/move_mount",
        path,
    ))?;
    let want = fstat(slave).map_err(sys("checking the pty", "fstat", "pty"))?;
    let now = openat(
        dev_dir,
        NAME,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("checking", "openat", path))?;
    let got = fstat(&now).map_err(sys("checking", "fstat", path))?;
    let is_chr = SFlag::from_bits_truncate(got.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr
        || got.st_rdev != want.st_rdev
        || got.st_dev != want.st_dev
        || got.st_ino != want.st_ino
    {
        return Err(ConsoleError::ConsoleMismatch(format!(
            "found {}:{} (device {:#x}, inode {}), expected {}:{} (device {:#x}, inode {})",
            major(got.st_rdev),
            minor(got.st_rdev),
            got.st_dev,
            got.st_ino,
            major(want.st_rdev),
            minor(want.st_rdev),
            want.st_dev,
            want.st_ino
        )));
    }
    Ok(())
}

fn open_console_target(
    dev_dir: BorrowedFd<'_>,
    name: &str,
    path: &str,
) -> Result<OwnedFd, ConsoleError> {
    let open_path = || {
        openat(
            dev_dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    match open_path() {
        Ok(fd) => {
            let st = fstat(&fd).map_err(sys("checking", "fstat", path))?;
            match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFREG | SFlag::S_IFCHR => return Ok(fd),
                SFlag::S_IFLNK => {
                    nix::unistd::unlinkat(dev_dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                        .map_err(sys("removing the symlink at", "unlinkat", path))?;
                }
                _ => {
                    return Err(ConsoleError::BadConsoleTarget {
                        path: path.to_string(),
                        found: kind_of(&st).to_string(),
                    })
                }
            }
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys("opening", "openat", path)(e)),
    }
    let created = openat(
        dev_dir,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(sys("creating the mount point", "openat", path))?;
    drop(created);
    open_path().map_err(sys("opening", "openat", path))
}

/// Set or clear `O_NONBLOCK` on an fd (the master, while the proxy owns it).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), ConsoleError> {
    let flags =
        fcntl(fd, FcntlArg::F_GETFL).map_err(sys("reading fd flags", "fcntl(F_GETFL)", ""))?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map(drop).map_err(sys(
        "setting fd flags",
        "fcntl(F_SETFL)",
        "",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The devpts root directory passes the filesystem check: only the file-type check
    /// keeps a devpts entry that is not a character device from being taken for a pty.
    #[test]
    fn a_devpts_entry_that_is_not_a_character_device_is_refused() {
        let dir = open_dir(Path::new("/dev/pts")).expect("open /dev/pts");
        let err = verify_devpts(dir.as_fd(), "pty peer", "/dev/pts", "pty")
            .expect_err("a directory on devpts");
        assert!(
            matches!(err, ConsoleError::NotPty { .. }) && err.to_string().contains("directory"),
            "{err}"
        );
    }
}
