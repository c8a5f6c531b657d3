//! One measurement, taken in a child process of its own (`bench --probe PLAN`).
//!
//! The probe runs the plan's steps, timing each, and is a child subreaper: a container's
//! init that outlives its runtime (`create`, `run -d`) is handed to the probe, which reaps
//! it. At the end `getrusage(RUSAGE_CHILDREN)` of the probe is the user and system time,
//! and the peak RSS, of exactly the processes it waited for: the runtime invocations and the
//! inits they left behind. That is what `wait4()` reports for one runtime process (its own
//! usage plus that of the children it reaped), summed over the plan, obtained without
//! `unsafe`. The probe's own work (spawning, timing) is not in it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::time::TimeValLike;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// One command: absolute program path first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the command's stderr goes (stdin and stdout are /dev/null: a container that
    /// inherits a pipe would hold it open).
    pub stderr: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Step {
    /// Start every command at once, then wait for all of them.
    Run(Vec<Cmd>),
    /// Wait for the processes whose pids the runtimes wrote to these files (container
    /// inits handed to the probe) to exit. A missing file is skipped.
    Reap(Vec<PathBuf>),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StepResult {
    pub wall_ns: u64,
    /// Exit code per command; 128 + signal when killed; -1 when it could not be started.
    pub codes: Vec<i32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub steps: Vec<StepResult>,
    pub user_us: u64,
    pub sys_us: u64,
    pub maxrss_kb: u64,
}

impl Outcome {
    pub fn cpu_ms(&self) -> f64 {
        (self.user_us + self.sys_us) as f64 / 1e3
    }

    /// Commands of all steps that did not exit 0.
    pub fn failures(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| &s.codes)
            .filter(|&&c| c != 0)
            .count()
    }
}

/// The signals the bench blocks to clean up on them; the probe and what it runs get them
/// back with their default actions.
pub fn stop_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        s.add(sig);
    }
    s
}

/// Entry point of `bench --probe PLAN`: prints the [`Outcome`] as JSON.
pub fn main(plan: &str) -> ExitCode {
    match probe(plan) {
        Ok(out) => match serde_json::to_string(&out) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench probe: encoding the result: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("bench probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(plan: &str) -> Result<Outcome, String> {
    let steps: Vec<Step> = serde_json::from_str(plan).map_err(|e| format!("plan: {e}"))?;
    stop_signals()
        .thread_unblock()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
    let mut out = Outcome::default();
    for step in &steps {
        out.steps.push(match step {
            Step::Run(cmds) => run_all(cmds),
            Step::Reap(pid_files) => reap(pid_files),
        });
    }
    sweep();
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(|e| format!("getrusage: {e}"))?;
    out.user_us = u.user_time().num_microseconds().max(0) as u64;
    out.sys_us = u.system_time().num_microseconds().max(0) as u64;
    // Linux reports ru_maxrss in kilobytes.
    out.maxrss_kb = u.max_rss().max(0) as u64;
    Ok(out)
}

fn run_all(cmds: &[Cmd]) -> StepResult {
    // Open the stderr files before the clock starts.
    let prepared: Vec<(Command, Option<String>)> = cmds.iter().map(prepare).collect();
    let start = Instant::now();
    let children: Vec<Result<Child, String>> = prepared
        .into_iter()
        .map(|(mut c, err)| match err {
            Some(e) => Err(e),
            None => c.spawn().map_err(|e| e.to_string()),
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(
            |c| match c.and_then(|mut c| c.wait().map_err(|e| e.to_string())) {
                Ok(status) => code(status),
                Err(e) => {
                    eprintln!("bench probe: {e}");
                    -1
                }
            },
        )
        .collect();
    StepResult {
        wall_ns: elapsed_ns(start),
        codes,
    }
}

fn prepare(c: &Cmd) -> (Command, Option<String>) {
    let Some((program, args)) = c.argv.split_first() else {
        return (Command::new("/"), Some("an empty command".to_string()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match File::create(&c.stderr) {
        Ok(f) => {
            cmd.stderr(f);
            (cmd, None)
        }
        Err(e) => (cmd, Some(format!("creating {}: {e}", c.stderr.display()))),
    }
}

fn code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Waits for each pid named in `pid_files`; a pid that is not (or no longer) our child
/// was reaped by someone else and counts as gone.
fn reap(pid_files: &[PathBuf]) -> StepResult {
    let pids: Vec<Pid> = pid_files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect();
    let start = Instant::now();
    for pid in pids {
        loop {
            match waitpid(pid, None) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    StepResult {
        wall_ns: elapsed_ns(start),
        codes: Vec::new(),
    }
}

/// Reaps whatever has already exited (for instance intermediate processes of a runtime);
/// anything still alive goes to the bench when the probe exits.
fn sweep() {
    while let Ok(s) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `steps` in a probe (this same program) and returns what it measured. The probe is
/// killed after `timeout`; what it left behind is the caller's to clean up.
pub fn measure(steps: &[Step], timeout: Duration) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let plan = serde_json::to_string(steps).map_err(|e| format!("encoding the plan: {e}"))?;
    // Its own process group: a timeout kills the runtimes it started too, and a Ctrl-C
    // at the terminal reaches only the bench, which stops after this measurement.
    let mut child = Command::new(exe)
        .process_group(0)
        .arg("--probe")
        .arg(plan)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the probe: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > timeout => {
                let group = i32::try_from(child.id()).map(Pid::from_raw);
                if let Ok(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for the probe: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading the probe: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the probe's result: {e}"))
}
