//! OCI hooks: run each hook of a lifecycle phase with the container state on stdin, an
//! explicit environment, a working directory the runtime chooses, and a timeout.
//!
//! Three choices differ from runc 1.1 on purpose:
//! - Each phase's failure rule is the runtime spec's ([`failure_policy`]): a failing
//!   poststart hook is a warning, where runc fails and stops the container; and a failing
//!   startContainer hook fails `start`, which runc has already returned from.
//! - A hook whose `env` is unset gets an empty environment, never the runtime's (nor the
//!   container's). An inherited `LD_PRELOAD` or `LD_LIBRARY_PATH` is how a container
//!   image ran its own code as host root through a createContainer hook
//!   (CVE-2025-23266, "NVIDIAScape").
//! - The working directory is always given by the runtime (the bundle for hooks that run
//!   on the host side), never a directory inside the container, for the same reason:
//!   `LD_PRELOAD=/proc/self/cwd/x.so` must not reach the image's files.
//!
//! Hook output is captured, never passed through: on success the runtime's stdout and
//! stderr belong to the container. A hook starts with no blocked signals even when the
//! runtime blocks them all (`gpurun run` reads its signals from a signalfd), and in its
//! own process group, so a timeout kills what it started as well.

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use oci_spec::runtime::{Hook, Hooks};
use serde::Serialize;

use crate::linux::child::{self, Keep, Outcome};

/// What init leaves in the start fifo when a startContainer hook failed, for `start` to
/// report (longer than the one byte `start` itself writes).
pub const START_CONTAINER_FAILED: &[u8] = b"startContainer hook failed";

/// How much of each of a failed hook's stdout and stderr goes into the error.
pub const OUTPUT_LIMIT: usize = 4096;

/// A point of the container lifecycle that runs hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Phase {
    /// The name the runtime spec uses in `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::CreateContainer => "createContainer",
            Phase::StartContainer => "startContainer",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }

    /// This phase's hooks in a spec's `hooks` object (empty when absent).
    pub fn hooks_in(self, hooks: &Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let list = match self {
            Phase::Prestart => hooks.prestart(),
            Phase::CreateRuntime => hooks.create_runtime(),
            Phase::CreateContainer => hooks.create_container(),
            Phase::StartContainer => hooks.start_container(),
            Phase::Poststart => hooks.poststart(),
            Phase::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime must do when a hook of a phase fails (runtime spec, "Lifecycle").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// prestart, createRuntime, createContainer: stop creating, report the error, and
    /// tear down everything create made (init killed, cgroup and state removed).
    AbortCreate,
    /// startContainer: init must not execve the user process; it reports the error and
    /// exits, and the container is stopped.
    AbortStart,
    /// poststart and poststop: log a warning; the remaining hooks run and the lifecycle
    /// goes on as if the hook had succeeded. For poststart runc 1.1 instead kills the
    /// container and fails `start`; gpurun follows the spec, as crun does.
    Warn,
}

/// The runtime spec's rule for a failing hook of `phase`.
pub fn failure_policy(phase: Phase) -> Policy {
    match phase {
        Phase::Prestart | Phase::CreateRuntime | Phase::CreateContainer => Policy::AbortCreate,
        Phase::StartContainer => Policy::AbortStart,
        Phase::Poststart | Phase::Poststop => Policy::Warn,
    }
}

/// The container state a hook reads on stdin (runtime spec "State").
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub pid: i32,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

fn is_zero(pid: &i32) -> bool {
    *pid == 0
}

impl HookState<'_> {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{phase} hook {path}: the hook path must be absolute")]
    RelativePath { phase: Phase, path: PathBuf },
    #[error("{phase} hook {path}: timeout must be greater than zero, got {timeout}")]
    BadTimeout {
        phase: Phase,
        path: PathBuf,
        timeout: i64,
    },
    #[error("{phase} hook {path}: env entry {entry:?} is not KEY=VALUE")]
    BadEnv {
        phase: Phase,
        path: PathBuf,
        entry: String,
    },
    #[error("{phase} hook {path}: encoding the container state: {source}")]
    State {
        phase: Phase,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{phase} hook {path}: starting it in {}: {source}", cwd.display())]
    Spawn {
        phase: Phase,
        path: PathBuf,
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{phase} hook {path}: {syscall}: {errno}")]
    Sys {
        phase: Phase,
        path: PathBuf,
        syscall: &'static str,
        errno: Errno,
    },
    #[error(
        "{phase} hook {path} failed ({status}){}",
        output_suffix(stdout, stderr)
    )]
    Failed {
        phase: Phase,
        path: PathBuf,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error(
        "{phase} hook {path}: hook ran past specified timeout of {seconds} seconds{}",
        output_suffix(stdout, stderr)
    )]
    Timeout {
        phase: Phase,
        path: PathBuf,
        seconds: u64,
        stdout: String,
        stderr: String,
    },
}

fn output_suffix(stdout: &str, stderr: &str) -> String {
    let mut s = String::new();
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        let t = text.trim();
        if !t.is_empty() {
            s.push_str(&format!(": {name}: {t}"));
        }
    }
    s
}

/// Run one phase's hooks under its [`failure_policy`]: where a failure aborts, the first
/// one is the error and the later hooks do not run; where it only warns, every hook runs
/// and the failures come back as the warnings the caller logs.
pub fn run_phase(
    phase: Phase,
    hooks: &[Hook],
    state: &HookState,
    cwd: &Path,
) -> Result<Vec<HookError>, HookError> {
    match failure_policy(phase) {
        Policy::Warn => Ok(run_all_continue(phase, hooks, state, cwd)),
        Policy::AbortCreate | Policy::AbortStart => {
            run_all(phase, hooks, state, cwd).map(|()| Vec::new())
        }
    }
}

/// Run the hooks a spec's `hooks` object lists for `phase`, under the phase's
/// [`failure_policy`]: each failure that only warns is handed to `warn`, and one that
/// aborts is the error. Every lifecycle call site runs its hooks through here, so the
/// policy table is the one place that decides what a failing hook does.
pub fn dispatch(
    phase: Phase,
    hooks: Option<&Hooks>,
    state: &HookState,
    cwd: &Path,
    warn: &mut dyn FnMut(HookError),
) -> Result<(), HookError> {
    let list = hooks.map(|h| phase.hooks_in(h)).unwrap_or_default();
    if list.is_empty() {
        return Ok(());
    }
    run_phase(phase, list, state, cwd)?
        .into_iter()
        .for_each(warn);
    Ok(())
}

/// Run every hook of one phase in order; stops at the first failure and returns its
/// error.
pub fn run_all(
    phase: Phase,
    hooks: &[Hook],
    state: &HookState,
    cwd: &Path,
) -> Result<(), HookError> {
    hooks.iter().try_for_each(|h| run_one(phase, h, state, cwd))
}

/// Run every hook of one phase, even after a failure, and return the failures (the
/// runtime spec's rule for poststart and poststop: "the remaining hooks ... continue").
pub fn run_all_continue(
    phase: Phase,
    hooks: &[Hook],
    state: &HookState,
    cwd: &Path,
) -> Vec<HookError> {
    hooks
        .iter()
        .filter_map(|h| run_one(phase, h, state, cwd).err())
        .collect()
}

/// Run one hook: `path` absolute, `args` the full argv (argv[0] = `path` when empty),
/// `env` exactly as given (empty when unset), the state JSON on stdin, `cwd` as working
/// directory, and `timeout` seconds before the hook and its process group are killed.
pub fn run_one(phase: Phase, hook: &Hook, state: &HookState, cwd: &Path) -> Result<(), HookError> {
    let path = hook.path();
    let err_path = || path.to_path_buf();
    if !path.is_absolute() {
        return Err(HookError::RelativePath {
            phase,
            path: err_path(),
        });
    }
    let timeout = match hook.timeout() {
        None => None,
        Some(t) if t > 0 => Some(t as u64),
        Some(t) => {
            return Err(HookError::BadTimeout {
                phase,
                path: err_path(),
                timeout: t,
            })
        }
    };
    let input = state.to_json().map_err(|source| HookError::State {
        phase,
        path: err_path(),
        source,
    })?;

    let mut cmd = Command::new(path);
    cmd.env_clear()
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever the hook started too.
        .process_group(0);
    crate::linux::sys::tty::unblock_signals_in_child(&mut cmd);
    if let Some((argv0, rest)) = hook.args().as_deref().and_then(|a| a.split_first()) {
        cmd.arg0(argv0).args(rest);
    }
    for entry in hook.env().iter().flatten() {
        let (k, v) = entry
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| HookError::BadEnv {
                phase,
                path: err_path(),
                entry: entry.clone(),
            })?;
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|source| HookError::Spawn {
        phase,
        path: err_path(),
        cwd: cwd.to_path_buf(),
        source,
    })?;
    let keep = Keep::Tail(OUTPUT_LIMIT);
    let done = child::communicate(child, &input, timeout.map(Duration::from_secs), keep, keep)
        .map_err(|(syscall, errno)| HookError::Sys {
            phase,
            path: err_path(),
            syscall,
            errno,
        })?;
    let stdout = done.stdout.text();
    let stderr = done.stderr.text();
    match done.outcome {
        Outcome::Exited(status) if status.success() => Ok(()),
        Outcome::Exited(status) => Err(HookError::Failed {
            phase,
            path: err_path(),
            status: describe(status),
            stdout,
            stderr,
        }),
        Outcome::TimedOut => Err(HookError::Timeout {
            phase,
            path: err_path(),
            seconds: timeout.unwrap_or_default(),
            stdout,
            stderr,
        }),
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal().map(Signal::try_from) {
        Some(Ok(sig)) => format!("killed by signal {sig}"),
        Some(Err(_)) => format!("killed by signal {}", status.signal().unwrap_or_default()),
        None => format!("{status}"),
    }
}

#[cfg(test)]
mod tests;
