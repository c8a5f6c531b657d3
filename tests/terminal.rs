//! Terminals: the console-socket protocol callers implement, and the foreground proxy.

mod common;
use common::*;

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;

#[test]
fn create_sends_exactly_one_pty_master_with_a_payload_before_it_returns() {
    if skip("create_sends_exactly_one_pty_master_with_a_payload_before_it_returns") {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::sh("ls -l /dev/console; tty");
    b.config["process"]["terminal"] = true.into();
    b.config["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 120});
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let cid = id("console");
    let out = rt.create(
        &b,
        &cid,
        &["--console-socket", sock.to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // create has returned: the connection and its one message must already be there.
    listener.set_nonblocking(true).expect("nonblocking");
    let (conn, _) = listener
        .accept()
        .expect("a connection before create returned");
    conn.set_nonblocking(false).expect("blocking");
    let (master, payload) = gpurun::linux::console::recv_master(conn.as_fd()).expect("one fd");
    assert!(!payload.is_empty(), "non-empty payload");
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCGPTN writes one int through the pointer, which is valid.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&master),
            libc::TIOCGPTN,
            &mut n,
        )
    };
    assert_eq!(r, 0, "the fd is a pty master");
    assert_eq!(
        gpurun::linux::console::get_size(master.as_fd()).expect("size"),
        (40, 120)
    );
    rt.ok(&["start", &cid]);
    let mut text = Vec::new();
    let mut f = std::fs::File::from(master);
    let _ = std::io::Read::read_to_end(&mut f, &mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("/dev/console") && text.contains("136,"),
        "{text}"
    );
    assert!(text.contains("/dev/pts/0"), "{text}");
}

#[test]
fn terminal_and_console_socket_must_go_together() {
    if skip("terminal_and_console_socket_must_go_together") {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::sh("true");
    b.config["process"]["terminal"] = true.into();
    let out = rt.create(&b, &id("noconsole"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("console-socket"), "{}", stderr(&out));
    let b2 = Bundle::sh("true");
    let out = rt.create(
        &b2,
        &id("noterminal"),
        &["--console-socket", "/nonexistent.sock"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("without a terminal"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(rt.root.path()).expect("root").count(), 0);
}

#[test]
fn foreground_run_with_a_terminal_proxies_input_and_the_exit_status() {
    if skip("foreground_run_with_a_terminal_proxies_input_and_the_exit_status") {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::sh("read line; echo got:$line; exit 6");
    b.config["process"]["terminal"] = true.into();
    b.write();
    let cid = id("fgtty");
    rt.track(&cid);
    // `script` gives gpurun a real terminal as its stdin/stdout.
    let cmd = format!(
        "{} --root {} run -b {} {}",
        env!("CARGO_BIN_EXE_gpurun"),
        rt.root.path().display(),
        b.path().display(),
        cid
    );
    let mut child = std::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    std::thread::sleep(std::time::Duration::from_millis(500));
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        std::io::Write::write_all(stdin, b"hello\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("got:hello"), "{text}");
    assert_eq!(out.status.code(), Some(6), "{text}");
}

#[test]
fn exec_with_a_terminal_gets_a_pty_and_its_status() {
    if skip("exec_with_a_terminal_gets_a_pty_and_its_status") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("exectty");
    let out = rt.run_detached(&Bundle::sh("sleep 60"), &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    let cmd = format!(
        "{} --root {} exec -t {} sh -c 'tty; exit 5'",
        env!("CARGO_BIN_EXE_gpurun"),
        rt.root.path().display(),
        cid
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}
