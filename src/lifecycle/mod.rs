//! The container lifecycle behind the CLI verbs: create, start, kill, delete, state, and
//! the foreground `run` loop.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::hooks::Phase;
use crate::plan;
use crate::process::spawn::{InitFds, ParentSide};
use crate::spec;
use crate::state::{self, Container, Root, State, Status};

mod cgroup_verbs;
mod files;
mod gpu;

pub use cgroup_verbs::{oom_count, oom_watch, pause, resume, stats_event, update};
use files::owner;
pub use files::write_pid_file;
use gpu::{inject_gpus, lease_holder};

/// What every verb gets from the global flags.
pub struct Globals {
    pub root: Root,
    pub systemd_cgroup: bool,
    pub rootless: bool,
}

pub struct CreateOpts {
    /// `run` in the foreground: a terminal is proxied by gpurun itself, not sent away.
    pub foreground: bool,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
}

/// A container being created: undone entirely if anything fails before `commit`.
struct Creating {
    container: Option<Container>,
    cgroup: Option<crate::cgroup::Handle>,
    init: Option<Pid>,
    lease: Option<(crate::gpu::lease::Leases, String, PathBuf)>,
}

impl Creating {
    fn commit(mut self) -> Container {
        self.cgroup = None;
        self.init = None;
        self.lease = None;
        self.container
            .take()
            .expect("commit is called once, with the container set")
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        if let Some(pid) = self.init.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                crate::log::warn(&format!("removing the cgroup of a failed create: {e}"));
            }
        }
        if let Some((leases, id, root)) = self.lease.take() {
            let _ = leases.release(&id, &root);
        }
        if let Some(c) = self.container.take() {
            let _ = c.remove();
        }
    }
}

/// Create a container and leave its init waiting for `start`. Returns the init pid.
pub fn create(g: &Globals, o: &CreateOpts) -> Result<Created> {
    state::validate_id(&o.id)?;
    let (mut bundle, mut warnings) = spec::load(&o.bundle)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let (console, console_peer) = console_fds(terminal, o)?;
    plan::check_preserved_fds(o.preserve_fds)?;
    let gpu_cfg = crate::config::Config::load().map_err(|e| Error::Config(e.to_string()))?;

    let container = g.root.create(&o.id)?;
    let mut guard = Creating {
        container: Some(container),
        cgroup: None,
        init: None,
        lease: None,
    };
    let dir = guard.container.as_ref().expect("set above").dir.clone();
    let gpus = inject_gpus(g, o, &mut bundle, &gpu_cfg, &mut guard)?;
    let notify_socket = crate::notify::caller_socket();
    if notify_socket.is_some() {
        crate::notify::setup_spec(&mut bundle.spec, &dir)?;
    }
    // GPU edits are spec content like any other: validate the result once more.
    spec::validate(&bundle.spec)?;
    let plan = plan::build(
        &o.id,
        &bundle,
        &plan::Options {
            no_pivot: o.no_pivot,
            preserve_fds: o.preserve_fds,
            no_new_keyring: o.no_new_keyring,
        },
    )?;
    warnings.extend(plan.warnings.iter().cloned());
    for w in &warnings {
        crate::log::warn_caller(w);
    }
    let c = guard.container.as_ref().expect("set above");
    let mut st = State {
        gpurun_state_format: state::FORMAT,
        oci_version: bundle.spec.version().clone(),
        id: o.id.clone(),
        pid: 0,
        init_start_time: 0,
        status: Status::Creating,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: crate::log::rfc3339(SystemTime::now()),
        owner: owner(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        systemd_cgroup: g.systemd_cgroup,
        rootless: g.rootless,
        private_pid_ns: spec::creates_namespace(
            &bundle.spec,
            oci_spec::runtime::LinuxNamespaceType::Pid,
        ),
        cgroup: None,
        hooks: bundle.spec.hooks().clone(),
        gpus: gpus.as_ref().map(|(g, _)| g.clone()).unwrap_or_default(),
        gpu_state_dir: gpus.as_ref().map(|_| gpu_cfg.gpus.state_dir.clone()),
        spec: Some(state::encode_spec(&bundle.spec)?),
        notify_socket,
    };
    // Recorded before the directories exist: a create killed from here on leaves a state
    // from which `delete` finds (and removes) everything.
    st.cgroup = crate::cgroup::planned(&bundle.spec, &o.id, g.systemd_cgroup);
    c.save(&st)?;
    let fifo = c.fifo_path();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .map_err(|e| Error::sys("creating the start fifo", "mkfifo", &fifo, e))?;
    let start_fd: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| Error::io("opening the start fifo", &fifo, e))?
        .into();

    let (cg, warnings) = crate::cgroup::create(&bundle.spec, &o.id, g.systemd_cgroup)?;
    for w in warnings {
        crate::log::warn(&w);
    }
    let made = cg.as_ref().map(|h| h.to_json());
    guard.cgroup = cg;
    // The planned state already names what was made (the usual case): no second write.
    if made != st.cgroup {
        st.cgroup = made;
        c.save(&st)?;
    }
    let cgref = &mut guard.cgroup;
    let mut place = |pid: Pid| match cgref {
        Some(h) => h.add_init(pid.as_raw()),
        None => Ok(()),
    };
    let mut runtime_hooks = |pid: Pid| -> Result<()> {
        let state = plan.hook_state("creating", pid.as_raw());
        for phase in [Phase::Prestart, Phase::CreateRuntime] {
            let hooks = plan
                .hooks
                .as_ref()
                .map(|h| phase.hooks_in(h))
                .unwrap_or(&[]);
            crate::hooks::run_all(phase, hooks, &state, &plan.bundle)
                .map_err(|e| Error::Other(e.to_string()))?;
        }
        Ok(())
    };
    let spawned = crate::process::spawn::spawn(
        &plan,
        InitFds {
            start: Some(start_fd),
            console,
        },
        ParentSide {
            place: &mut place,
            runtime_hooks: &mut runtime_hooks,
        },
    )?;
    guard.init = Some(spawned.pid);
    // The systemd driver made its directories only once init existed.
    st.cgroup = guard.cgroup.as_ref().map(|h| h.to_json());
    st.pid = spawned.pid.as_raw();
    st.init_start_time = state::process_start_time(st.pid)
        .ok_or_else(|| Error::Other("container init died right after it was ready".into()))?;
    if let Some((gpus, sharing)) = &gpus {
        // The lease now follows init: it is live exactly as long as the container is.
        let holder = lease_holder(g, &o.id, st.pid, st.init_start_time);
        crate::gpu::lease::Leases::new(&gpu_cfg.gpus.state_dir)
            .acquire(&holder, gpus, *sharing)
            .map_err(|e| Error::Other(e.to_string()))?;
    }
    st.status = Status::Created;
    let c = guard.container.as_ref().expect("set above");
    c.save(&st)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, st.pid)?;
    }
    Ok(Created {
        pid: spawned.pid,
        container: guard.commit(),
        console_peer,
    })
}

pub struct Created {
    pub pid: Pid,
    pub container: Container,
    /// For a foreground `run` with a terminal: where init sends the pty master.
    pub console_peer: Option<std::os::fd::OwnedFd>,
}

/// runc's rules: a detached container with a terminal needs a console socket to send
/// the pty to; a console socket without a terminal is a mistake. A foreground `run`
/// receives the pty itself over a socket pair.
pub fn console_fds(
    terminal: bool,
    o: &CreateOpts,
) -> Result<(Option<std::os::fd::OwnedFd>, Option<std::os::fd::OwnedFd>)> {
    use crate::linux::console;
    match (terminal, &o.console_socket) {
        (false, None) => Ok((None, None)),
        (false, Some(_)) => Err(Error::Config(
            "--console-socket given but process.terminal is false: cannot use a console socket without a terminal".into(),
        )),
        (true, Some(path)) => {
            let fd = console::connect_socket(path).map_err(|e| Error::Other(e.to_string()))?;
            Ok((Some(fd), None))
        }
        (true, None) if o.foreground => {
            let (a, b) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| Error::sys("creating the console socket pair", "socketpair", "", e))?;
            Ok((Some(a), Some(b)))
        }
        (true, None) => Err(Error::Config(
            "process.terminal is true but no --console-socket was given: cannot allocate a tty for a detached container".into(),
        )),
    }
}

fn frozen(st: &State) -> bool {
    crate::cgroup::from_state(st).is_some_and(|h| h.is_frozen())
}

pub fn status_of(c_dir: &Path, st: &State) -> Status {
    st.current_status(c_dir, || frozen(st))
}

/// Release init: write one byte to the fifo it is blocked reading.
pub fn start(g: &Globals, id: &str) -> Result<()> {
    let c = g.root.open(id)?;
    let st = c.load()?;
    match status_of(&c.dir, &st) {
        Status::Created => {}
        Status::Stopped => {
            return Err(Error::State(
                "cannot start a container that has stopped".into(),
            ))
        }
        Status::Running => {
            return Err(Error::State(
                "cannot start an already running container".into(),
            ))
        }
        s => {
            return Err(Error::State(format!(
                "cannot start a container in the {} state",
                s.as_str()
            )))
        }
    }
    let fifo = c.fifo_path();
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(Error::State(
                "container init died before start: cannot start the container".into(),
            ))
        }
        Err(e) => return Err(Error::io("opening the start fifo", &fifo, e)),
    };
    let notify = match &st.notify_socket {
        Some(caller) => Some((crate::notify::bind(&c.dir)?, caller.clone())),
        None => None,
    };
    std::fs::remove_file(&fifo).map_err(|e| Error::io("removing the start fifo", &fifo, e))?;
    f.write_all(b"0")
        .map_err(|e| Error::io("releasing container init through", &fifo, e))?;
    // Waiting can take as long as the container likes: let kill and delete in.
    drop(c);
    if st
        .hooks
        .as_ref()
        .is_some_and(|h| !Phase::StartContainer.hooks_in(h).is_empty())
    {
        // The startContainer hooks are part of start: their failure is start's error.
        wait_for_execve(&f, &st);
        check_start_container_hooks(&f)?;
    }
    if let Some((sock, caller)) = notify {
        crate::notify::forward_ready(&sock, &st, &caller)?;
    }
    if let Some(hooks) = st
        .hooks
        .as_ref()
        .map(|h| Phase::Poststart.hooks_in(h))
        .filter(|h| !h.is_empty())
    {
        // poststart runs once the container's process is executing: after init has run
        // the startContainer hooks and called execve, which closes its end of the fifo.
        wait_for_execve(&f, &st);
        warn_failed_hooks(crate::hooks::run_phase(
            Phase::Poststart,
            hooks,
            &hook_state(&st, "running", st.pid),
            &st.bundle,
        ))?;
    }
    Ok(())
}

/// Init leaves [`crate::hooks::START_CONTAINER_FAILED`] in the fifo when a startContainer
/// hook failed and the user process never ran; the fifo holds at most start's own byte
/// otherwise (when init died before reading it).
fn check_start_container_hooks(fifo_writer: &std::fs::File) -> Result<()> {
    use std::os::fd::AsFd;
    let unread = crate::linux::sys::proc::pipe_unread(fifo_writer.as_fd()).map_err(|e| {
        Error::sys(
            "checking the startContainer hooks",
            "ioctl(FIONREAD)",
            "exec.fifo",
            e,
        )
    })?;
    if unread >= crate::hooks::START_CONTAINER_FAILED.len() {
        return Err(Error::Other(
            "a startContainer hook failed: the container's process did not run and the container has stopped (the hook's error is on the container's stderr)".into(),
        ));
    }
    Ok(())
}

/// Init holds the start fifo open (close-on-exec) until its execve. Once it is gone,
/// the fifo has no reader left and our write end polls as POLLERR.
fn wait_for_execve(fifo_writer: &std::fs::File, st: &State) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(fifo_writer.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        if !st.init_alive() {
            return;
        }
    }
}

/// A phase whose failures are warnings reports each one (to `--log`, else stderr) and
/// goes on; one that aborts fails.
fn warn_failed_hooks(
    outcome: std::result::Result<Vec<crate::hooks::HookError>, crate::hooks::HookError>,
) -> Result<()> {
    for w in outcome.map_err(|e| Error::Other(e.to_string()))? {
        crate::log::warn_caller(&w.to_string());
    }
    Ok(())
}

fn hook_state<'a>(st: &'a State, status: &'a str, pid: i32) -> crate::hooks::HookState<'a> {
    crate::hooks::HookState {
        oci_version: &st.oci_version,
        id: &st.id,
        status,
        pid,
        bundle: &st.bundle,
        annotations: &st.annotations,
    }
}

pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Other(format!("invalid signal {s:?}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::Other(format!("invalid signal {s:?}")))
}

pub fn kill(g: &Globals, id: &str, sig: Signal, all: bool) -> Result<()> {
    let c = g.root.open(id)?;
    let st = c.load()?;
    let status = status_of(&c.dir, &st);
    if matches!(status, Status::Stopped | Status::Creating) {
        if all {
            // containerd sends `kill --all` after init exited; the rest of the cgroup
            // may still need it.
            if let Some(cg) = crate::cgroup::from_state(&st) {
                cg.signal_all(sig)?;
            }
            return Ok(());
        }
        return Err(Error::NotRunning(id.to_string()));
    }
    if all {
        if let Some(cg) = crate::cgroup::from_state(&st) {
            return cg.signal_all(sig);
        }
    }
    signal_init(&st, sig)
}

/// Signal init through a pidfd opened and then checked against the recorded start time,
/// so a pid reused after init died is never signalled.
fn signal_init(st: &State, sig: Signal) -> Result<()> {
    if st.pid <= 0 {
        return Err(Error::NotRunning(st.id.clone()));
    }
    let pidfd = match crate::linux::sys::proc::pidfd_open(st.pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ESRCH) => return Err(Error::NotRunning(st.id.clone())),
        Err(e) => {
            return Err(Error::sys(
                "signalling container init",
                "pidfd_open",
                st.pid.to_string(),
                e,
            ))
        }
    };
    if !st.init_alive() {
        return Err(Error::NotRunning(st.id.clone()));
    }
    crate::linux::sys::proc::pidfd_send_signal(std::os::fd::AsFd::as_fd(&pidfd), sig as i32)
        .map_err(|e| match e {
            nix::errno::Errno::ESRCH => Error::NotRunning(st.id.clone()),
            e => Error::sys(
                format!("sending {sig} to container init"),
                "pidfd_send_signal",
                st.pid.to_string(),
                e,
            ),
        })
}

pub fn delete(g: &Globals, id: &str, force: bool) -> Result<()> {
    let c = match g.root.open(id) {
        Ok(c) => c,
        Err(Error::NotExist(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let st = match c.load() {
        Ok(st) => st,
        Err(e) if force => {
            crate::log::warn(&format!("removing {id} with an unreadable state: {e}"));
            return c.remove();
        }
        Err(e) => return Err(e),
    };
    match status_of(&c.dir, &st) {
        // A create that died: its init (if it got that far) is in the cgroup, which
        // `destroy` empties, whether or not its directories were made.
        Status::Stopped | Status::Creating => {}
        Status::Created => kill_and_wait(&st)?,
        s if force => {
            let _ = s;
            kill_and_wait(&st)?;
        }
        s => {
            return Err(Error::State(format!(
                "cannot delete container {id} that is not stopped: {}",
                s.as_str()
            )))
        }
    }
    destroy(c, &st)
}

fn kill_and_wait(st: &State) -> Result<()> {
    let cg = crate::cgroup::from_state(st);
    match &cg {
        Some(cg) => cg.signal_all(Signal::SIGKILL)?,
        None => match signal_init(st, Signal::SIGKILL) {
            Ok(()) | Err(Error::NotRunning(_)) => {}
            Err(e) => return Err(e),
        },
    }
    for _ in 0..200 {
        if !st.init_alive() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Error::Other(format!(
        "container init {} did not die after SIGKILL",
        st.pid
    )))
}

/// Remove everything the container had: leftover processes and the cgroup, then the
/// state directory.
pub fn destroy(c: Container, st: &State) -> Result<()> {
    if let Some(cg) = crate::cgroup::from_state(st) {
        cg.destroy()?;
    }
    if let Some(hooks) = st
        .hooks
        .as_ref()
        .map(|h| Phase::Poststop.hooks_in(h))
        .filter(|h| !h.is_empty())
    {
        let cwd = if st.bundle.is_dir() {
            st.bundle.as_path()
        } else {
            Path::new("/")
        };
        warn_failed_hooks(crate::hooks::run_phase(
            Phase::Poststop,
            hooks,
            &hook_state(st, "stopped", 0),
            cwd,
        ))?;
    }
    if let Some(dir) = &st.gpu_state_dir {
        let root = c.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        crate::gpu::lease::Leases::new(dir)
            .release(&st.id, &root)
            .map_err(|e| Error::Other(e.to_string()))?;
    }
    c.remove()
}

/// Read a container's state without taking its lock (`state`, `ps`, `list`). A directory
/// without state.json is a create that has made the directory and not yet written the
/// file (a window of microseconds), or a delete half done: either way, no container yet.
fn read_unlocked(g: &Globals, id: &str) -> Result<(PathBuf, State)> {
    state::validate_id(id)?;
    let dir = g.root.dir(id);
    let file = dir.join(state::STATE_FILE);
    if !file.exists() {
        return Err(Error::NotExist(id.to_string()));
    }
    match state::load_file(&file) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NotExist(id.to_string()))
        }
        r => r.map(|st| (dir, st)),
    }
}

pub fn load_public(g: &Globals, id: &str) -> Result<state::PublicState> {
    let (dir, st) = read_unlocked(g, id)?;
    Ok(st.public(status_of(&dir, &st)))
}

pub fn pids(g: &Globals, id: &str) -> Result<Vec<i32>> {
    let (_, st) = read_unlocked(g, id)?;
    match crate::cgroup::from_state(&st) {
        Some(cg) => cg.pids(),
        None => Ok(if st.init_alive() {
            vec![st.pid]
        } else {
            vec![]
        }),
    }
}
