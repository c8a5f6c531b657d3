//! One run of a driver tool: an explicit environment (nothing inherited, so no
//! `LD_PRELOAD` or `LD_LIBRARY_PATH` of whoever ran gpurun reaches it), stdin from
//! `/dev/null`, working directory `/`, its own process group, and a hard timeout after
//! which the group (whose id is the child's pid) is killed and the child reaped — through
//! the runtime's thread-free runner, `linux::child`, as hooks run.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::linux::child::{self as runner, Keep, Outcome};

/// stderr is only quoted in messages.
const MAX_STDERR: usize = 64 * 1024;

#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("starting {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{program} did not finish within {timeout:?}: killed (process group {pid}) and reaped"
    )]
    TimedOut {
        program: PathBuf,
        pid: u32,
        timeout: Duration,
    },
    #[error("waiting for {program} (pid {pid}): {syscall}: {errno}")]
    Wait {
        program: PathBuf,
        pid: u32,
        syscall: &'static str,
        errno: nix::errno::Errno,
    },
}

/// Runs `program args…` with exactly `env`, and returns its output once it exits, or
/// kills it when `timeout` passes. At most `max_stdout` bytes of stdout are kept (the rest
/// is read and dropped, so the child never blocks on a full pipe).
pub fn run(
    program: &Path,
    args: &[&str],
    env: &[(String, OsString)],
    timeout: Duration,
    max_stdout: usize,
) -> Result<Output, ChildError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = spawn(&mut cmd).map_err(|source| ChildError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    let done = runner::communicate(
        child,
        &[],
        Some(timeout),
        Keep::Head(max_stdout),
        Keep::Head(MAX_STDERR),
    )
    .map_err(|(syscall, errno)| ChildError::Wait {
        program: program.to_path_buf(),
        pid,
        syscall,
        errno,
    })?;
    match done.outcome {
        Outcome::Exited(status) => Ok(Output {
            status,
            stdout: done.stdout.into_bytes(),
            stderr: done.stderr.into_bytes(),
        }),
        Outcome::TimedOut => Err(ChildError::TimedOut {
            program: program.to_path_buf(),
            pid,
            timeout,
        }),
    }
}

/// ETXTBSY means a file descriptor writing the program is still open somewhere (a
/// concurrent fork inherited it for an instant while the file was being written): it
/// passes, so try again briefly.
fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5 * tries));
            }
            r => return r,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Result<Output, ChildError> {
        let env = vec![("PATH".to_string(), OsString::from("/usr/bin:/bin"))];
        run(Path::new("/bin/sh"), &["-c", script], &env, timeout, 16)
    }

    #[test]
    fn output_is_captured_capped_and_the_environment_is_only_what_was_given() {
        let out = sh(
            "echo ${LD_PRELOAD:-none} ${HOME:-nohome}; pwd >&2; exit 3",
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "none nohome\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "/\n");
        let out = sh("head -c 100000 /dev/zero", Duration::from_secs(30)).unwrap();
        assert!(out.status.success(), "the child never blocked on the pipe");
        assert_eq!(out.stdout.len(), 16);
    }

    #[test]
    fn a_child_past_its_timeout_is_killed_with_its_group_and_reaped() {
        let dir = std::env::temp_dir().join(format!("gpurun-child-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let grandchild = dir.join("grandchild");
        // The shell forks `sleep` and waits: only killing the group ends the grandchild.
        let script = format!("sleep 600 & echo $! > {}; wait", grandchild.display());
        let e = sh(&script, Duration::from_millis(300)).unwrap_err();
        let ChildError::TimedOut { pid, .. } = e else {
            panic!("{e}")
        };
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} is reaped, not a zombie"
        );
        let g = std::fs::read_to_string(&grandchild).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        // Reparented once its shell died; whoever reaps it, it must not be running. SIGKILL
        // is delivered asynchronously: give the kernel a moment to finish it.
        let state = || {
            std::fs::read_to_string(format!("/proc/{}/stat", g.trim()))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
        };
        let dead = |s: &Option<Option<char>>| matches!(s, None | Some(Some('Z' | 'X')));
        for _ in 0..200 {
            if dead(&state()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let state = state();
        assert!(
            dead(&state),
            "the grandchild {} still runs: {state:?}",
            g.trim()
        );
        assert!(matches!(
            run(
                Path::new("/nonexistent/nvidia-smi"),
                &[],
                &[],
                Duration::from_secs(1),
                1
            ),
            Err(ChildError::Spawn { .. })
        ));
    }
}
