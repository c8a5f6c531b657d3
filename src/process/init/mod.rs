//! The container's init: a flat list of named steps in runc's order. A failing step
//! sends its name and error to the parent, which reports one clear message.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::linux::inroot::Root;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setresgid, setresuid, Gid, Uid};

use crate::hooks::Phase;
use crate::linux::sys::proc::clone_fork;
use crate::linux::{devices, namespaces, rlimits, rootfs};
use crate::plan::Plan;
use crate::process::error::{Error, Result};
use crate::process::sync::{Channel, ChildMsg};
use crate::process::InitFds;

mod executable;
use executable::env_with_defaults;
pub use executable::lookup_executable;

mod fds;
mod filter;
use filter::{step_seccomp_check, step_seccomp_early};

mod extra;
mod identity;
use extra::{
    step_console, step_create_container_hooks, step_keyring, step_lsm, step_runtime_hooks,
    step_sysctl, write_oom_score_adj,
};
use identity::{step_bounding, step_caps, step_cwd, step_ids, step_nnp};

/// State carried between steps.
struct Ctx<'a> {
    plan: &'a Plan,
    ch: &'a Channel,
    fds: &'a InitFds,
    root: Option<Root>,
    exe: Option<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

type Step = fn(&mut Ctx) -> Result<()>;

/// The init sequence. The order is runc's, and most of it is forced: mounts before
/// pivot_root; sysctls and masks while the host's procfs can still reach the container's
/// namespaces by fd; the executable looked up before privileges drop, so a missing
/// binary fails `create`; capabilities after the uid change (keep-caps bridges it).
/// Everything gpurun needs for itself (the cwd check, closing fds, procfs writes) comes
/// before a seccomp filter without no_new_privs, which must be loaded while init is
/// still privileged; with no_new_privs the filter is loaded right before execve
/// (`filter.rs`).
const STEPS: &[(&str, Step)] = &[
    ("session", step_session),
    ("session-keyring", step_keyring),
    ("rootfs-prepare", step_prepare),
    ("mounts", step_mounts),
    ("devices", step_devices),
    ("dev-symlinks", step_dev_symlinks),
    ("runtime-hooks", step_runtime_hooks),
    ("root-symlinks", step_root_symlinks),
    ("create-container-hooks", step_create_container_hooks),
    ("sysctl", step_sysctl),
    ("masked-paths", step_masked),
    ("readonly-paths", step_readonly_paths),
    ("cwd-create", step_cwd_create),
    ("pivot-root", step_pivot),
    ("console", step_console),
    ("readonly-root", step_readonly_root),
    ("hostname", step_hostname),
    ("rlimits", step_rlimits),
    ("personality", step_personality),
    ("lookup-executable", step_lookup),
    ("lsm-exec-label", step_lsm),
    ("no-new-privileges", step_nnp),
    ("cwd", step_cwd),
    ("close-setup-fds", step_close_fds),
    ("seccomp-privileged", step_seccomp_early),
    ("capabilities-bounding", step_bounding),
    ("user-ids", step_ids),
    ("capabilities", step_caps),
    ("seccomp-check", step_seccomp_check),
];

/// `exec`: the process joins a container that is already set up (runc's setns init).
const EXEC_STEPS: &[(&str, Step)] = &[
    ("session", step_session),
    ("console", step_console),
    ("enter-root", step_enter_root),
    ("rlimits", step_rlimits),
    ("umask", step_umask),
    ("lookup-executable", step_lookup),
    ("lsm-exec-label", step_lsm),
    ("no-new-privileges", step_nnp),
    ("cwd", step_cwd),
    ("close-setup-fds", step_close_fds),
    ("seccomp-privileged", step_seccomp_early),
    ("capabilities-bounding", step_bounding),
    ("user-ids", step_ids),
    ("capabilities", step_caps),
    ("seccomp-check", step_seccomp_check),
];

fn report(ch: &Channel, step: &str, e: &Error) -> i32 {
    let _ = ch.send_msg(&ChildMsg::Failed {
        step: step.to_string(),
        msg: e.to_string(),
    });
    1
}

/// Every name `GPURUN_FAILPOINT` accepts in a `failpoints` build, in the order `create`
/// reaches them: the first child's namespace setup, each init step, then just before init
/// reports ready.
pub fn failpoint_names() -> Vec<&'static str> {
    let mut names = vec!["namespaces"];
    names.extend(STEPS.iter().map(|(name, _)| *name));
    names.push("ready");
    names
}

#[cfg(feature = "failpoints")]
fn failpoint(step: &str) {
    if std::env::var("GPURUN_FAILPOINT").is_ok_and(|f| f == step) {
        // Die the way a killed runtime would: no message, no cleanup. Not raise(3): after
        // a raw clone glibc's cached thread id is the parent's, so raise would miss. The
        // init of a new pid namespace ignores its own SIGKILL: it exits instead.
        let me = nix::unistd::getpid();
        let _ = nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGKILL);
        crate::linux::sys::proc::exit_now(128 + libc::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_step: &str) {}

/// The first child: join and create namespaces, then either become init or fork it.
/// Returns an exit code only on failure.
pub fn stage1(plan: &Plan, ch: &Channel, fds: &InitFds) -> i32 {
    // The child inherited every fd of the gpurun process (the state directory lock among
    // them). Only stdio, the preserved fds, the channel and the start fifo stay: no host
    // directory may be reachable while init works (CVE-2024-21626).
    let mut keep: Vec<i32> = plan.joins.iter().map(|j| j.fd.as_raw_fd()).collect();
    keep.extend(plan.exec_root.as_ref().map(|r| r.as_raw_fd()));
    keep.push(ch.raw_fd());
    keep.extend(fds.start.as_ref().map(|c| c.as_raw_fd()));
    keep.extend(fds.console.as_ref().map(|c| c.as_raw_fd()));
    if let Err(e) = self::fds::close_all_but(3 + plan.preserve_fds, &keep) {
        return report(ch, "close-inherited-fds", &e);
    }
    match stage1_inner(plan, ch) {
        Ok(true) => run_init(plan, ch, fds),
        Ok(false) => 0,
        Err((step, e)) => report(ch, step, &e),
    }
}

/// Ok(true): this process is init. Ok(false): init was forked; exit.
fn stage1_inner(plan: &Plan, ch: &Channel) -> std::result::Result<bool, (&'static str, Error)> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    ch.wait_ack().map_err(|e| ("wait-for-parent", e))?;
    failpoint("namespaces");
    if let Some(adj) = plan.oom_score_adj {
        // Before the process becomes non-dumpable and before any user namespace: both
        // would stop the write.
        write_oom_score_adj(adj).map_err(|e| ("oom-score-adj", e))?;
    }
    for j in &plan.joins {
        namespaces::setns(j).map_err(|e| ("namespaces", e.into()))?;
    }
    if plan.new_user {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
            (
                "namespaces",
                Error::sys("creating user namespace", "unshare", "", e),
            )
        })?;
        let me = nix::unistd::getpid().as_raw();
        ch.send_msg(&ChildMsg::IdMaps(me))
            .map_err(|e| ("namespaces", e))?;
        ch.wait_ack().map_err(|e| ("namespaces", e))?;
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(|e| {
            (
                "namespaces",
                Error::sys("becoming root in the user namespace", "setresgid", "", e),
            )
        })?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(|e| {
            (
                "namespaces",
                Error::sys("becoming root in the user namespace", "setresuid", "", e),
            )
        })?;
    }
    if !plan.unshare_flags.is_empty() {
        unshare(plan.unshare_flags).map_err(|e| {
            (
                "namespaces",
                Error::sys(
                    format!("creating namespaces {:?}", plan.unshare_flags),
                    "unshare",
                    "",
                    e,
                ),
            )
        })?;
    }
    if plan.time_offsets.is_some() {
        let me = nix::unistd::getpid().as_raw();
        ch.send_msg(&ChildMsg::TimeOffsets(me))
            .map_err(|e| ("namespaces", e))?;
        ch.wait_ack().map_err(|e| ("namespaces", e))?;
    }
    if !plan.two_stage {
        return Ok(true);
    }
    // CLONE_PARENT: init becomes a child of the gpurun process that called create, so
    // it can wait for it (run) or hand it to its caller's subreaper (create).
    match clone_fork(libc::CLONE_PARENT as u64)
        .map_err(|e| ("namespaces", Error::sys("forking init", "clone", "", e)))?
    {
        // Init shares the channel with this process: it waits until the parent has read
        // InitPid, or its own messages (Ready, above all in a short exec) could overtake it.
        None => ch.wait_ack().map(|()| true).map_err(|e| ("namespaces", e)),
        Some(pid) => {
            ch.send_msg(&ChildMsg::InitPid(pid.as_raw()))
                .map_err(|e| ("namespaces", e))?;
            Ok(false)
        }
    }
}

fn run_init(plan: &Plan, ch: &Channel, fds: &InitFds) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // Other processes in the container must not ptrace or open /proc/<init>/ while
    // init still holds host fds (CVE-2016-9962). execve restores dumpability.
    let _ = nix::sys::prctl::set_dumpable(false);
    let mut ctx = Ctx {
        plan,
        ch,
        fds,
        root: None,
        exe: None,
        argv: Vec::new(),
        envp: Vec::new(),
    };
    let steps = if plan.exec_mode { EXEC_STEPS } else { STEPS };
    for (name, step) in steps {
        failpoint(name);
        if let Err(e) = step(&mut ctx) {
            return report(ch, name, &e);
        }
    }
    failpoint("ready");
    // Past this point the parent (create) exits; init must survive it.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    if let Err(e) = ch.send_msg(&ChildMsg::Ready) {
        return report(ch, "ready", &e);
    }
    let Some(start) = fds.start.as_ref() else {
        // exec: no start to wait for.
        return exec(&ctx);
    };
    if let Err(e) = wait_for_start(start) {
        return report(ch, "wait-for-start", &e);
    }
    // Nothing of the host's reaches the startContainer hooks: every fd was marked
    // close-on-exec at close-setup-fds. Checked first: without no_new_privs the
    // container's seccomp filter is in force, and a container without these hooks must
    // not need getpid allowed.
    if plan.has_hooks(Phase::StartContainer) && !start_container_hooks(plan) {
        // `start` waits on the fifo's other end and reports the failure.
        let _ = nix::unistd::write(start, crate::hooks::START_CONTAINER_FAILED);
        return 1;
    }
    exec(&ctx)
}

/// Whether the startContainer hooks let the container's process run.
fn start_container_hooks(plan: &Plan) -> bool {
    crate::hooks::dispatch(
        Phase::StartContainer,
        plan.hooks.as_ref(),
        // The pid as the container sees it: 1 in a new pid namespace, the host's pid
        // where the container shares the runtime's.
        &plan.hook_state("created", nix::unistd::getpid().as_raw()),
        &plan.cwd,
        &mut say_on_stderr,
    )
    .map_err(say_on_stderr)
    .is_ok()
}

/// The parent is gone (create returned long ago): what a hook run inside the container
/// has to say, a warning or why the container will not start, goes to its stderr.
fn say_on_stderr(e: crate::hooks::HookError) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("gpurun: {e}\n").as_bytes());
}

/// Block until `start` writes to the exec fifo. Init holds it read-write, so the read
/// blocks until a byte arrives, and `start` can tell a dead init (no reader: ENXIO).
/// A plain read(2) on the fd: without no_new_privs this runs under the container's
/// filter, so it makes no other call (no dup).
fn wait_for_start(start: &OwnedFd) -> Result<()> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(start, &mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::Protocol("exec fifo closed before start".into())),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("waiting for start", "read", "exec.fifo", e)),
        }
    }
}

/// With a filter loaded early only execve follows here; otherwise init marks the fds
/// once more (the startContainer hooks' pipes), unblocks signals and, with
/// no_new_privs, loads the filter as its last act.
fn exec(ctx: &Ctx) -> i32 {
    let plan = ctx.plan;
    let Some(exe) = ctx.exe.as_ref() else {
        return failed_late(
            ctx,
            "exec",
            &Error::Protocol("no executable resolved".into()),
        );
    };
    if !filter::loads_early(ctx) {
        filter::unblock_signals();
        if let Err(e) = fds::cloexec_from(3 + plan.preserve_fds) {
            return failed_late(ctx, "close-fds", &e);
        }
        if let Err(e) = filter::load_late(ctx) {
            return failed_late(ctx, "seccomp", &e);
        }
    }
    let err = match nix::unistd::execve(exe, &ctx.argv, &ctx.envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    failed_late(
        ctx,
        "exec",
        &Error::sys(
            "starting the container process",
            "execve",
            exe.to_string_lossy().as_ref(),
            err,
        ),
    )
}

/// After `start` the caller of `create` is gone: the container's stderr is the only
/// place left to say why it did not start. `exec` still has its caller on the channel.
fn failed_late(ctx: &Ctx, step: &str, e: &Error) -> i32 {
    if ctx.fds.start.is_none() {
        return report(ctx.ch, step, e);
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("gpurun: container init failed at step {step}: {e}\n").as_bytes(),
    );
    1
}

fn root<'a>(ctx: &'a Ctx) -> Result<&'a Root> {
    ctx.root
        .as_ref()
        .ok_or_else(|| Error::Protocol("rootfs not prepared".into()))
}

fn step_prepare(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.plan;
    ctx.root = Some(if p.mount_ns {
        rootfs::prepare(&p.rootfs, p.rootfs_propagation.as_deref())?
    } else {
        Root::open(&p.rootfs)?
    });
    Ok(())
}

fn step_mounts(ctx: &mut Ctx) -> Result<()> {
    let r = root(ctx)?;
    for m in &ctx.plan.mounts {
        rootfs::mount_one(r, m)?;
    }
    Ok(())
}

fn step_devices(ctx: &mut Ctx) -> Result<()> {
    if !ctx.plan.make_devices {
        return Ok(());
    }
    Ok(devices::create_all(
        root(ctx)?,
        &ctx.plan.devices,
        ctx.plan.device_nodes,
    )?)
}

fn step_dev_symlinks(ctx: &mut Ctx) -> Result<()> {
    if !ctx.plan.make_devices {
        return Ok(());
    }
    Ok(devices::symlinks(root(ctx)?)?)
}

/// Where NVIDIA's create-symlinks hook would have run: after every mount, before the
/// createContainer hooks and pivot_root. Resolved inside the root, so a link or a parent
/// directory in the image that points at a host path never reaches it.
fn step_root_symlinks(ctx: &mut Ctx) -> Result<()> {
    if ctx.plan.symlinks.is_empty() {
        return Ok(());
    }
    let r = root(ctx)?;
    for (link, target) in &ctx.plan.symlinks {
        r.symlink(link, target)?;
    }
    Ok(())
}

fn step_masked(ctx: &mut Ctx) -> Result<()> {
    Ok(rootfs::mask_paths(root(ctx)?, &ctx.plan.masked)?)
}

fn step_readonly_paths(ctx: &mut Ctx) -> Result<()> {
    Ok(rootfs::readonly_paths(root(ctx)?, &ctx.plan.readonly)?)
}

fn step_cwd_create(ctx: &mut Ctx) -> Result<()> {
    root(ctx)?.mkdir_all(&ctx.plan.cwd, 0o755)?;
    Ok(())
}

fn step_pivot(ctx: &mut Ctx) -> Result<()> {
    // The rootfs handle refers to the old view; after the switch "/" is the root.
    ctx.root = None;
    if !ctx.plan.mount_ns {
        return Ok(rootfs::chroot_only(&ctx.plan.rootfs)?);
    }
    if ctx.plan.no_pivot {
        rootfs::move_root(&ctx.plan.rootfs)?;
    } else {
        rootfs::pivot(&ctx.plan.rootfs)?;
    }
    Ok(rootfs::root_propagation(
        ctx.plan.rootfs_propagation.as_deref(),
    )?)
}

/// `exec` into a container that shares the host's mount table: its root is not a
/// namespace to join, so enter it the way its init did. After the console, which such a
/// container takes from the host's devpts.
fn step_enter_root(ctx: &mut Ctx) -> Result<()> {
    match &ctx.plan.exec_root {
        Some(root) => Ok(rootfs::chroot_fd(root.as_fd())?),
        None => Ok(()),
    }
}

fn step_readonly_root(ctx: &mut Ctx) -> Result<()> {
    if ctx.plan.root_readonly {
        rootfs::readonly_root()?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(ctx.plan.umask));
    Ok(())
}

fn step_umask(ctx: &mut Ctx) -> Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(ctx.plan.umask));
    Ok(())
}

fn step_hostname(ctx: &mut Ctx) -> Result<()> {
    if let Some(h) = &ctx.plan.hostname {
        nix::unistd::sethostname(h)
            .map_err(|e| Error::sys("setting hostname", "sethostname", h.as_str(), e))?;
    }
    if let Some(d) = &ctx.plan.domainname {
        crate::linux::sys::proc::setdomainname(d)
            .map_err(|e| Error::sys("setting domainname", "setdomainname", d.as_str(), e))?;
    }
    Ok(())
}

fn step_rlimits(ctx: &mut Ctx) -> Result<()> {
    Ok(rlimits::apply(&ctx.plan.rlimits)?)
}

fn step_personality(ctx: &mut Ctx) -> Result<()> {
    if let Some(p) = ctx.plan.personality {
        nix::sys::personality::set(nix::sys::personality::Persona::from_bits_retain(p as i32))
            .map_err(|e| Error::sys("setting personality", "personality", "", e))?;
    }
    Ok(())
}

/// The executable, argv and env (HOME from the container's /etc/passwd) are all read
/// here, before a seccomp filter could stop init from opening files.
fn step_lookup(ctx: &mut Ctx) -> Result<()> {
    let path = lookup_executable(&ctx.plan.args[0], &ctx.plan.env, &ctx.plan.cwd)?;
    ctx.exe = Some(
        CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Config("process.args[0] contains a NUL byte".into()))?,
    );
    ctx.argv = crate::plan::cstrings(&ctx.plan.args);
    ctx.envp = crate::plan::cstrings(&env_with_defaults(ctx.plan));
    Ok(())
}

/// Before any filter: close what setup opened (pathrs keeps a cached procfs handle) and
/// mark what is left close-on-exec, so nothing of the host reaches the container and no
/// profile has to allow close_range.
fn step_close_fds(ctx: &mut Ctx) -> Result<()> {
    let first = 3 + ctx.plan.preserve_fds;
    let mut keep = vec![ctx.ch.raw_fd()];
    keep.extend(ctx.fds.start.as_ref().map(|f| f.as_raw_fd()));
    fds::close_all_but(first, &keep)?;
    fds::cloexec_from(first)
}

/// Without a terminal, init leaves the caller's session and process group, so a signal
/// to that group (Ctrl-C in the shell, timeout(1), `kill 0` in a script) does not reach
/// the container. With one, the console step makes the pty's session instead.
fn step_session(ctx: &mut Ctx) -> Result<()> {
    if ctx.fds.console.is_some() {
        return Ok(());
    }
    nix::unistd::setsid()
        .map(drop)
        .map_err(|e| Error::sys("leaving the caller's session", "setsid", "", e))
}
