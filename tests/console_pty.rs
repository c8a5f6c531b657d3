//! Allocating and verifying ptys, window sizes, and the `--console-socket` hand-off.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use gpurun::linux::console::{
    connect_socket, get_size, open_dir, open_pty, recv_master, send_master, set_size, ConsoleError,
};
use gpurun::linux::sys::tty::pty_number;
use nix::errno::Errno;
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A pty from the host's devpts, through `open_pty` (the host's `ptmx` there is usually
/// mode 000: root only).
fn host_pty() -> Option<gpurun::linux::console::Pty> {
    if !is_root() {
        gpurun::skip::cannot_run("host_pty", "needs root");
        return None;
    }
    let dir = open_dir(Path::new("/dev/pts")).expect("open /dev/pts");
    Some(open_pty(dir.as_fd()).expect("open_pty on the host devpts"))
}

fn read_some(fd: &OwnedFd) -> Vec<u8> {
    let mut p = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(10_000u16)).expect("poll");
    assert_eq!(n, 1, "nothing to read");
    let mut buf = [0u8; 256];
    let n = nix::unistd::read(fd.as_fd(), &mut buf).expect("read");
    buf[..n].to_vec()
}

#[test]
fn open_pty_gives_a_connected_devpts_pair() {
    let Some(pty) = host_pty() else { return };
    let n = pty_number(pty.master.as_fd()).expect("TIOCGPTN");
    assert_eq!(pty.slave_path, Path::new(&format!("/dev/pts/{n}")));
    let link = fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).expect("readlink");
    assert_eq!(link, pty.slave_path);
    let st = nix::sys::stat::fstat(&pty.slave).expect("fstat");
    assert!((136..=143).contains(&nix::sys::stat::major(st.st_rdev)));
    nix::unistd::write(&pty.slave, b"hello\n").expect("write slave");
    let got = read_some(&pty.master);
    assert!(got.starts_with(b"hello"), "{got:?}");
}

/// `/dev/ptmx` is a working 5:2 multiplexer, but on devtmpfs, not devpts: a `/dev`
/// handed in as the pts directory must be refused.
#[test]
fn open_pty_refuses_a_ptmx_not_on_devpts() {
    let dev = open_dir(Path::new("/dev")).expect("open /dev");
    let err = open_pty(dev.as_fd()).expect_err("devtmpfs ptmx");
    assert!(matches!(err, ConsoleError::NotPty { .. }), "{err}");
    assert!(err.to_string().contains("filesystem magic"), "{err}");
}

#[test]
fn open_pty_does_not_follow_a_ptmx_symlink() {
    let d = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/dev/pts/ptmx", d.path().join("ptmx")).expect("symlink");
    let dir = open_dir(d.path()).expect("open dir");
    let err = open_pty(dir.as_fd()).expect_err("symlinked ptmx");
    assert!(
        matches!(
            err,
            ConsoleError::Sys {
                errno: Errno::ELOOP,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn open_pty_refuses_a_regular_file() {
    let d = tempfile::tempdir().expect("tempdir");
    fs::write(d.path().join("ptmx"), b"").expect("file");
    let dir = open_dir(d.path()).expect("open dir");
    let err = open_pty(dir.as_fd()).expect_err("regular ptmx");
    assert!(matches!(err, ConsoleError::NotPty { .. }), "{err}");
}

#[test]
fn set_size_is_read_back() {
    let p = nix::pty::openpty(None, None).expect("openpty");
    set_size(p.master.as_fd(), 42, 137).expect("set_size");
    assert_eq!(get_size(p.slave.as_fd()).expect("get_size"), (42, 137));
}

#[test]
fn master_goes_over_a_socketpair_with_its_name() {
    let p = nix::pty::openpty(None, None).expect("openpty");
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    send_master(a.as_fd(), p.master.as_fd(), "/dev/pts/7").expect("send");
    let (fd, payload) = recv_master(b.as_fd()).expect("recv");
    assert_eq!(payload, b"/dev/pts/7");
    // The received fd is a pty master: TIOCGPTN answers, with the same number.
    assert_eq!(
        pty_number(fd.as_fd()).expect("TIOCGPTN on received fd"),
        pty_number(p.master.as_fd()).expect("TIOCGPTN")
    );
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    assert_ne!(
        flags & libc::FD_CLOEXEC,
        0,
        "received fds are close-on-exec"
    );
}

#[test]
fn an_empty_name_still_sends_a_payload() {
    let p = nix::pty::openpty(None, None).expect("openpty");
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    send_master(a.as_fd(), p.master.as_fd(), "").expect("send");
    let (_fd, payload) = recv_master(b.as_fd()).expect("recv");
    assert!(!payload.is_empty());
}

#[test]
fn recv_master_wants_exactly_one_fd() {
    let p = nix::pty::openpty(None, None).expect("openpty");
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let two = [p.master.as_raw_fd(), p.slave.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&two)];
    let iov = [std::io::IoSlice::new(b"x")];
    sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).expect("sendmsg");
    let err = recv_master(b.as_fd()).expect_err("two fds");
    assert!(err.to_string().contains("more than one fd"), "{err}");

    nix::unistd::write(&a, b"y").expect("plain write");
    let err = recv_master(b.as_fd()).expect_err("no fd");
    assert!(err.to_string().contains("no fd"), "{err}");

    drop(a);
    let err = recv_master(b.as_fd()).expect_err("closed");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn master_goes_through_a_listening_console_socket() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("pty.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let p = nix::pty::openpty(None, None).expect("openpty");
    let sock = connect_socket(&path).expect("connect");
    send_master(sock.as_fd(), p.master.as_fd(), "/dev/pts/0").expect("send");
    drop(sock);
    let (conn, _) = listener.accept().expect("accept");
    let (fd, payload) = recv_master(conn.as_fd()).expect("recv");
    assert_eq!(payload, b"/dev/pts/0");
    pty_number(fd.as_fd()).expect("a pty master arrived");
}

#[test]
fn a_console_socket_path_longer_than_sun_path_still_connects() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut dir = d.path().to_path_buf();
    while dir.as_os_str().len() < 120 {
        dir.push("a-rather-long-directory-name");
    }
    fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("console.sock");
    // Bound through the directory's fd too: `bind` has the same length limit.
    let dfd = open_dir(&dir).expect("open dir");
    let listener = UnixListener::bind(format!("/proc/self/fd/{}/console.sock", dfd.as_raw_fd()))
        .expect("bind");
    assert!(path.exists());
    let p = nix::pty::openpty(None, None).expect("openpty");
    let sock = connect_socket(&path).expect("connect through the directory fd");
    send_master(sock.as_fd(), p.master.as_fd(), "pty").expect("send");
    let (conn, _) = listener.accept().expect("accept");
    recv_master(conn.as_fd()).expect("recv");
}

#[test]
fn connecting_to_a_missing_socket_names_the_path() {
    let err = connect_socket(Path::new("/nonexistent/pty.sock")).expect_err("missing");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/pty.sock") && msg.contains("connect"),
        "{msg}"
    );
}
