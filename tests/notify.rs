//! NOTIFY_SOCKET: the container's READY=1 reaches the caller's socket.

mod common;
use common::*;

use std::os::unix::net::UnixDatagram;

/// A static program that sends READY=1 to $NOTIFY_SOCKET, built for the test.
fn notifier(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let src = dir.join("notify.c");
    std::fs::write(
        &src,
        r#"#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p) return 2;
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    const char *m = "READY=1";
    if (sendto(s, m, strlen(m), 0, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    pause();
    return 0;
}
"#,
    )
    .expect("source");
    let out = dir.join("notify");
    let ok = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status();
    ok.is_ok_and(|s| s.success()).then_some(out)
}

#[test]
fn ready_reaches_the_callers_notify_socket() {
    if skip("ready_reaches_the_callers_notify_socket") {
        return;
    }
    let mut b = Bundle::own_rootfs("unused");
    let Some(prog) = notifier(b.path()) else {
        gpurun::skip::cannot_run(
            "ready_reaches_the_callers_notify_socket",
            "a static C toolchain (cc -static, from gcc and libc6-dev)",
        );
        return;
    };
    std::fs::copy(&prog, b.rootfs().join("bin/notify")).expect("copy");
    b.config["process"]["args"] = serde_json::json!(["/bin/notify"]);
    let host = b.path().join("host.sock");
    let listener = UnixDatagram::bind(&host).expect("bind");
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let rt = Runtime::new();
    b.write();
    let cid = id("notify");
    rt.track(&cid);
    let status = rt
        .cmd()
        .env("NOTIFY_SOCKET", &host)
        .args(["run", "-d", "-b"])
        .arg(b.path())
        .arg(&cid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run");
    assert!(status.success());
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within the timeout");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let pid = rt.state(&cid)["pid"].as_i64().expect("pid");
    assert_eq!(msg, format!("READY=1\nMAINPID={pid}\n"));
}
