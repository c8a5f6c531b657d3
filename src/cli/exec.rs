//! `gpurun exec`: run another process in a running container, as runc does: every
//! namespace of init joined, the container's cgroup, the process's user, capabilities,
//! seccomp profile and labels. Exit status 255 when exec itself fails.

use std::path::PathBuf;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::lifecycle::{self, CreateOpts, Globals};
use crate::state::Status;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// A full `process` JSON (as in config.json) instead of the flags.
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    /// Return once the process has started.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Not supported (gpurun does not hand out pidfds).
    #[arg(long)]
    pub pidfd_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// KEY=VALUE, repeatable.
    #[arg(short = 'e', long)]
    pub env: Vec<String>,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// uid[:gid]
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    #[arg(long)]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability (bounding, effective and permitted; never inheritable).
    #[arg(short = 'c', long)]
    pub cap: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Run in a sub-cgroup of the container (not supported).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Exec even if the container is paused.
    #[arg(long)]
    pub ignore_paused: bool,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `uid[:gid]`, both decimal: nothing else is accepted (crun's CVE-2026-30892 was a
/// loose parse of this).
pub fn parse_user(s: &str) -> Result<(u32, Option<u32>)> {
    let bad = || Error::Config(format!("--user {s:?}: expected uid[:gid] in decimal"));
    let num = |t: &str| -> Result<u32> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((num(u)?, Some(num(g)?))),
        None => Ok((num(s)?, None)),
    }
}

fn process_from_flags(base: &Process, a: &ExecArgs) -> Result<Process> {
    let mut p = base.clone();
    if a.command.is_empty() {
        return Err(Error::Config(
            "exec: a command is required (or --process)".into(),
        ));
    }
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    if let Some(c) = &a.cwd {
        p.set_cwd(c.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    for e in &a.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = parse_user(u)?;
        let mut user = p.user().clone();
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(g);
        }
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(l) = &a.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    if let Some(l) = &a.apparmor {
        p.set_apparmor_profile(Some(l.clone()));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let c: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::Value::String(name.clone()))
                    .map_err(|_| Error::Config(format!("--cap: unknown capability {name:?}")))?;
            // Never the inheritable (or ambient) set: CVE-2022-29162.
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut v = set.1.clone().unwrap_or_default();
                v.insert(c);
                match set.0 {
                    0 => caps.set_bounding(Some(v)),
                    1 => caps.set_effective(Some(v)),
                    _ => caps.set_permitted(Some(v)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

pub fn exec(g: &Globals, a: &ExecArgs) -> Result<i32> {
    if a.pidfd_socket.is_some() {
        return Err(Error::Config(
            "--pidfd-socket is not supported by gpurun".into(),
        ));
    }
    if a.cgroup.is_some() {
        return Err(Error::Config(
            "exec --cgroup is not supported by gpurun".into(),
        ));
    }
    let c = g.root.open(&a.id)?;
    let st = c.load()?;
    match lifecycle::status_of(&c.dir, &st) {
        Status::Stopped => return Err(Error::State("cannot exec in a stopped container".into())),
        Status::Creating => {
            return Err(Error::State(
                "cannot exec in a container that is being created".into(),
            ))
        }
        Status::Paused if !a.ignore_paused => {
            return Err(Error::State(
                "cannot exec in a paused container (use --ignore-paused to override)".into(),
            ))
        }
        _ => {}
    }
    let spec: oci_spec::runtime::Spec = st
        .spec
        .clone()
        .ok_or_else(|| Error::State(format!("container {} has no stored spec", a.id)))
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| Error::State(format!("stored spec: {e}")))
        })?;
    let process = match &a.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io("reading --process", path, e))?;
            let parse_err =
                |e: serde_json::Error| Error::Config(format!("--process {}: {e}", path.display()));
            let mut v: serde_json::Value = serde_json::from_str(&text).map_err(parse_err)?;
            for w in crate::spec::drop_unknown_capabilities(&mut v) {
                crate::log::warn_caller(&format!("--process: {w}"));
            }
            serde_json::from_value::<Process>(v).map_err(parse_err)?
        }
        None => {
            let base = spec.process().clone().unwrap_or_default();
            process_from_flags(&base, a)?
        }
    };
    let terminal = process.terminal().unwrap_or(false);
    crate::plan::check_preserved_fds(a.preserve_fds)?;
    let plan = crate::plan::build_exec(
        &a.id,
        &spec,
        process,
        st.pid,
        &st.bundle,
        &st.rootfs,
        &crate::plan::Options {
            no_pivot: false,
            preserve_fds: a.preserve_fds,
            no_new_keyring: true,
        },
    )?;
    for w in &plan.warnings {
        crate::log::warn_caller(w);
    }
    // The namespaces were opened by pid: make sure that pid is still init.
    if !st.init_alive() {
        return Err(Error::NotRunning(a.id.clone()));
    }
    let copts = CreateOpts {
        foreground: !a.detach,
        id: a.id.clone(),
        bundle: st.bundle.clone(),
        pid_file: None,
        console_socket: a.console_socket.clone(),
        no_pivot: false,
        no_new_keyring: true,
        preserve_fds: a.preserve_fds,
    };
    let (console, console_peer) = lifecycle::console_fds(terminal, &copts)?;
    let cg = Some(st.require_cgroup()?);
    drop(c);

    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    if !a.detach {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
            Error::sys("becoming a subreaper", "prctl", "PR_SET_CHILD_SUBREAPER", e)
        })?;
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("blocking signals", "sigprocmask", "", e))?;
    }
    let mut place = |pid: nix::unistd::Pid| match &cg {
        Some(h) => Ok(h.add_task(pid.as_raw())?),
        None => Ok(()),
    };
    let mut no_hooks = |_| Ok(());
    let spawned = crate::process::spawn::spawn(
        &plan,
        crate::process::spawn::InitFds {
            start: None,
            console,
        },
        crate::process::spawn::ParentSide {
            place: &mut place,
            runtime_hooks: &mut no_hooks,
        },
    )?;
    // Written in both modes, as runc does: conmon and scripts read it while a foreground
    // exec runs.
    if let Some(p) = &a.pid_file {
        write_pid_file_or_kill(p, spawned.pid)?;
    }
    if a.detach {
        return Ok(0);
    }
    let mut proxy = match console_peer {
        Some(peer) => Some(super::run::terminal_proxy(&peer)?),
        None => None,
    };
    let code = super::run::forward_and_wait(spawned.pid, &mask, proxy.as_mut())?;
    drop(proxy);
    Ok(code)
}

/// A process whose pid could not be handed over is one the caller cannot find: it is
/// killed rather than left running unseen.
fn write_pid_file_or_kill(path: &std::path::Path, pid: nix::unistd::Pid) -> Result<()> {
    lifecycle::write_pid_file(path, pid.as_raw()).inspect_err(|_| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_parsed_strictly() {
        assert_eq!(parse_user("1000").ok(), Some((1000, None)));
        assert_eq!(parse_user("1000:1001").ok(), Some((1000, Some(1001))));
        for bad in [
            "",
            "a",
            "1000:",
            ":1",
            "1000:1001:1",
            "-1",
            "1 0",
            "0x10",
            "+1000",
            "1000:+5",
        ] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }
}
