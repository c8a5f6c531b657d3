//! The init steps that talk to something other than the rootfs: hooks, the console,
//! the keyring, and procfs writes (sysctls, oom_score_adj, LSM labels) through a private,
//! verified procfs handle.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::Ctx;
use crate::hooks::Phase;
use crate::process::error::{Error, Result};
use crate::process::sync::ChildMsg;

fn procfs_err(what: String) -> impl FnOnce(pathrs::error::Error) -> Error {
    move |source| Error::Procfs { what, source }
}

pub(super) fn write_oom_score_adj(adj: i32) -> Result<()> {
    let procfs = pathrs::procfs::ProcfsHandle::new()
        .map_err(procfs_err("opening a private procfs handle".into()))?;
    let mut f = procfs
        .open(
            pathrs::procfs::ProcfsBase::ProcSelf,
            "oom_score_adj",
            pathrs::flags::OpenFlags::O_WRONLY,
        )
        .map_err(procfs_err("opening /proc/self/oom_score_adj".into()))?;
    std::io::Write::write_all(&mut f, adj.to_string().as_bytes()).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EACCES) {
            " (lowering oom_score_adj needs CAP_SYS_RESOURCE)"
        } else {
            ""
        };
        Error::ProcWrite {
            what: format!("writing {adj} to /proc/self/oom_score_adj"),
            source: e,
            hint,
        }
    })
}

/// prestart and createRuntime run in the runtime's namespaces, so the parent runs them
/// while init waits: mounts are in place, pivot_root is not done yet.
pub(super) fn step_runtime_hooks(ctx: &mut Ctx) -> Result<()> {
    if !ctx.plan.has_hooks(Phase::Prestart) && !ctx.plan.has_hooks(Phase::CreateRuntime) {
        return Ok(());
    }
    ctx.ch.send_msg(&ChildMsg::RuntimeHooks)?;
    ctx.ch.wait_ack()
}

/// createContainer runs in the container's namespaces, before pivot_root, with the
/// bundle as its working directory — never a directory of the container's, which an
/// image could have prepared (CVE-2025-23266).
pub(super) fn step_create_container_hooks(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.plan;
    if !p.has_hooks(Phase::CreateContainer) {
        return Ok(());
    }
    let pid = nix::unistd::getpid().as_raw();
    crate::hooks::dispatch(
        Phase::CreateContainer,
        p.hooks.as_ref(),
        &p.hook_state("creating", pid),
        &p.bundle,
        &mut super::say_on_stderr,
    )
    .map_err(Error::from)
}

/// A pty from the container's own devpts, verified, sent to the caller's console socket
/// before create returns, mounted on /dev/console, and made init's controlling terminal.
pub(super) fn step_console(ctx: &mut Ctx) -> Result<()> {
    use crate::linux::console;
    let Some(sock) = ctx.fds.console.as_ref() else {
        return Ok(());
    };
    let pts = console::open_dir(Path::new("/dev/pts"))?;
    let pty = console::open_pty(pts.as_fd())?;
    if let Some((rows, cols)) = ctx.plan.console_size {
        console::set_size(pty.master.as_fd(), rows, cols)?;
    }
    if !ctx.plan.exec_mode {
        let dev = console::open_dir(Path::new("/dev"))?;
        console::mount_console(pty.slave.as_fd(), dev.as_fd())?;
    }
    console::send_master(
        sock.as_fd(),
        pty.master.as_fd(),
        &pty.slave_path.to_string_lossy(),
    )?;
    drop(pty.master);
    Ok(console::become_session_leader_on(pty.slave.as_fd())?)
}

pub(super) fn step_keyring(ctx: &mut Ctx) -> Result<()> {
    let Some(name) = &ctx.plan.session_keyring else {
        return Ok(());
    };
    let c = CString::new(name.as_bytes())
        .map_err(|_| Error::Config("the session keyring name has a NUL byte".into()))?;
    match crate::linux::sys::proc::join_session_keyring(&c) {
        // Keyrings may be disabled or blocked (seccomp in a nested runtime): as runc,
        // carry on without a private keyring rather than fail.
        Ok(()) | Err(nix::errno::Errno::ENOSYS) | Err(nix::errno::Errno::EPERM) => Ok(()),
        Err(e) => Err(Error::sys(
            "creating the session keyring",
            "keyctl",
            name.as_str(),
            e,
        )),
    }
}

/// AppArmor/SELinux exec labels, written through a private verified procfs handle
/// (CVE-2019-16884, CVE-2025-52881: a bind mount over /proc cannot absorb the write).
pub(super) fn step_lsm(ctx: &mut Ctx) -> Result<()> {
    if ctx.plan.lsm_exec.is_empty() {
        return Ok(());
    }
    let procfs = pathrs::procfs::ProcfsHandle::new()
        .map_err(procfs_err("opening a private procfs handle".into()))?;
    for (attr, value) in &ctx.plan.lsm_exec {
        let mut f = procfs
            .open(
                pathrs::procfs::ProcfsBase::ProcThreadSelf,
                attr,
                pathrs::flags::OpenFlags::O_WRONLY,
            )
            .map_err(procfs_err(format!("opening /proc/thread-self/{attr}")))?;
        std::io::Write::write_all(&mut f, value.as_bytes()).map_err(|source| Error::ProcWrite {
            what: format!("writing {value:?} to /proc/thread-self/{attr}"),
            source,
            hint: "",
        })?;
    }
    Ok(())
}

/// Sysctls through a private, verified procfs handle: a bind mount over /proc/sys in
/// the container cannot redirect the write (CVE-2025-52881). The host's procfs shows
/// the writer's own network and IPC namespaces, which are the container's now.
pub(super) fn step_sysctl(ctx: &mut Ctx) -> Result<()> {
    if ctx.plan.sysctl.is_empty() {
        return Ok(());
    }
    let procfs = pathrs::procfs::ProcfsHandle::new()
        .map_err(procfs_err("opening a private procfs handle".into()))?;
    for (k, v) in &ctx.plan.sysctl {
        let rel = PathBuf::from("sys").join(k.replace('.', "/"));
        let mut f = procfs
            .open(
                pathrs::procfs::ProcfsBase::ProcRoot,
                &rel,
                pathrs::flags::OpenFlags::O_WRONLY,
            )
            .map_err(procfs_err(format!(
                "sysctl {k}: opening /proc/{}",
                rel.display()
            )))?;
        std::io::Write::write_all(&mut f, v.as_bytes()).map_err(|source| Error::ProcWrite {
            what: format!("sysctl {k}={v}: write"),
            source,
            hint: "",
        })?;
    }
    Ok(())
}
