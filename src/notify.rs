//! `NOTIFY_SOCKET`: when gpurun runs under systemd (or anything that listens for
//! sd_notify), the container's own `READY=1` reaches the caller's socket. gpurun binds a
//! socket of its own in the container's state directory, mounts that directory at
//! `/run/notify` in the container, and forwards the readiness message (with
//! `MAINPID=<init>`) when `start` sees it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Mount, Spec};

use crate::error::{Error, Result};
use crate::state::State;

pub const IN_CONTAINER_DIR: &str = "/run/notify";
const SOCKET: &str = "notify.sock";

/// The caller's socket, if gpurun was started with one.
pub fn caller_socket() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("NOTIFY_SOCKET")?);
    p.is_absolute().then_some(p)
}

/// At create: the directory the container reaches as /run/notify, and its env.
pub fn setup_spec(spec: &mut Spec, state_dir: &Path) -> Result<()> {
    let dir = state_dir.join("notify");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("setting the mode of", &dir, e))?;
    let mount: Mount = serde_json::from_value(serde_json::json!({
        "destination": IN_CONTAINER_DIR,
        "type": "bind",
        "source": dir,
        "options": ["bind", "nosuid", "noexec", "nodev"],
    }))
    .map_err(Error::json("building the /run/notify mount"))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    if let Some(p) = spec.process().clone() {
        let mut p = p;
        let mut env = p.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
        env.push(format!("NOTIFY_SOCKET={IN_CONTAINER_DIR}/{SOCKET}"));
        p.set_env(Some(env));
        spec.set_process(Some(p));
    }
    Ok(())
}

/// At start, before init is released: bind the socket the container will send to.
pub fn bind(state_dir: &Path) -> Result<UnixDatagram> {
    let path = state_dir.join("notify").join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let sock =
        UnixDatagram::bind(&path).map_err(|e| Error::io("binding the notify socket", &path, e))?;
    // Any user in the container may be the one that notifies.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| Error::io("setting the mode of", &path, e))?;
    Ok(sock)
}

/// Wait for `READY=1` from the container (or for it to stop), then forward it.
pub fn forward_ready(sock: &UnixDatagram, st: &State, caller: &Path) -> Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| Error::io("setting a timeout on", "notify socket", e))?;
    let mut buf = vec![0u8; 4096];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.lines().any(|l| l == "READY=1") {
                    let out = format!("READY=1\nMAINPID={}\n", st.pid);
                    let to = UnixDatagram::unbound()
                        .map_err(|e| Error::io("creating a socket for", caller, e))?;
                    to.send_to(out.as_bytes(), caller)
                        .map_err(|e| Error::io("forwarding READY=1 to", caller, e))?;
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !st.init_alive() {
                    return Err(Error::State(
                        "the container stopped before it sent READY=1".into(),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading", "notify socket", e)),
        }
    }
}
