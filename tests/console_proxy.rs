//! The foreground terminal proxy: one pty pair stands in for the caller's terminal (the
//! test types on its master, the proxy reads its slave), another for the container (the
//! proxy holds its master, the "container" uses its slave).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gpurun::linux::console::{get_size, set_size, Proxy};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{tcgetattr, LocalFlags};

struct Pair {
    master: OwnedFd,
    slave: OwnedFd,
}

fn pair() -> Pair {
    let p = nix::pty::openpty(None, None).expect("openpty");
    Pair {
        master: p.master,
        slave: p.slave,
    }
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}

/// Read from `fd` until `want` has been seen (bounded: fails rather than hangs).
fn read_until(fd: &OwnedFd, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.windows(want.len()).any(|w| w == want) {
            return got;
        }
        let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut p, PollTimeout::from(100u8)).expect("poll") == 0 {
            continue;
        }
        let mut buf = [0u8; 1024];
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    panic!(
        "never saw {:?}; got {:?}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn bytes_flow_both_ways_and_the_terminal_is_restored() {
    let caller = pair();
    let container = pair();
    let before = tcgetattr(&caller.slave).expect("tcgetattr");
    assert!(before
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));

    let proxy =
        Proxy::new(dup(&caller.slave), dup(&caller.slave), container.master).expect("proxy");
    assert!(proxy.is_raw());
    let during = tcgetattr(&caller.slave).expect("tcgetattr");
    assert!(!during
        .local_flags
        .intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));

    let stop = Arc::new(AtomicBool::new(false));
    let hung_up = Arc::new(AtomicBool::new(false));
    let worker = {
        let (stop, hung_up) = (stop.clone(), hung_up.clone());
        let mut proxy = proxy;
        std::thread::spawn(move || {
            proxy
                .copy_until(|| stop.load(Ordering::SeqCst), PollTimeout::from(50u8))
                .expect("proxy loop");
            hung_up.store(proxy.hung_up(), Ordering::SeqCst);
            drop(proxy);
        })
    };

    // The user types; the container reads a line.
    nix::unistd::write(&caller.master, b"ping\n").expect("type");
    read_until(&container.slave, b"ping\n");
    // The container writes; the user sees it (through the container pty's ONLCR).
    nix::unistd::write(&container.slave, b"pong\n").expect("container writes");
    read_until(&caller.master, b"pong\r\n");

    // The container's side closes: the proxy sees the hangup and ends by itself.
    drop(container.slave);
    for _ in 0..100 {
        if worker.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ended_alone = worker.is_finished();
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("proxy thread");
    assert!(
        ended_alone && hung_up.load(Ordering::SeqCst),
        "the proxy did not notice the hangup"
    );

    let after = tcgetattr(&caller.slave).expect("tcgetattr");
    assert_eq!(after, before, "terminal settings restored");
}

#[test]
fn output_left_in_the_pty_is_drained_after_the_container_exits() {
    let caller = pair();
    let container = pair();
    let mut proxy =
        Proxy::new(dup(&caller.slave), dup(&caller.slave), container.master).expect("proxy");
    nix::unistd::write(&container.slave, b"last words\n").expect("write");
    drop(container.slave);
    proxy.drain().expect("drain");
    assert!(proxy.hung_up());
    drop(proxy);
    read_until(&caller.master, b"last words");
}

#[test]
fn window_size_follows_the_caller() {
    let caller = pair();
    let container = pair();
    set_size(caller.master.as_fd(), 24, 80).expect("size");
    let container_master = dup(&container.master);
    let proxy =
        Proxy::new(dup(&caller.slave), dup(&caller.slave), container.master).expect("proxy");
    assert_eq!(
        get_size(container.slave.as_fd()).expect("size"),
        (24, 80),
        "copied at start"
    );
    set_size(caller.master.as_fd(), 51, 203).expect("resize");
    proxy.on_winch().expect("on_winch");
    assert_eq!(get_size(container_master.as_fd()).expect("size"), (51, 203));
}

#[test]
fn a_non_terminal_input_is_left_as_it_is() {
    let caller = pair();
    let container = pair();
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let mut proxy = Proxy::new(r, dup(&caller.slave), dup(&container.master)).expect("proxy");
    assert!(!proxy.is_raw());
    nix::unistd::write(&w, b"piped\n").expect("write");
    drop(w);
    for _ in 0..4 {
        proxy.step(&[], PollTimeout::from(100u8)).expect("step");
    }
    read_until(&container.slave, b"piped");
}

#[test]
fn step_reports_the_callers_fds() {
    let caller = pair();
    let container = pair();
    let mut proxy =
        Proxy::new(dup(&caller.slave), dup(&caller.slave), container.master).expect("proxy");
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let (idle_r, _idle_w) = nix::unistd::pipe().expect("pipe");
    nix::unistd::write(&w, b"x").expect("write");
    let ready = proxy
        .step(&[idle_r.as_fd(), r.as_fd()], PollTimeout::from(1000u16))
        .expect("step");
    assert_eq!(ready, [false, true]);
    drop(container.slave);
}
