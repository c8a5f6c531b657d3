//! The container's init: a flat list of named steps in runc's order. A failing step
//! sends its name and error to the parent, which reports one clear message.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::linux::inroot::Root;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setresgid, setresuid, Gid, Uid};

use crate::error::{Error, Result};
use crate::hooks::Phase;
use crate::linux::sys::proc::{clone_fork, close_range, close_range_from};
use crate::linux::{caps, devices, namespaces, rlimits, rootfs};
use crate::plan::Plan;
use crate::process::spawn::InitFds;
use crate::process::sync::{Channel, ChildMsg};

mod executable;
use executable::env_with_defaults;
pub use executable::lookup_executable;

mod extra;
use extra::{
    step_console, step_create_container_hooks, step_keyring, step_lsm, step_runtime_hooks,
    step_sysctl, write_oom_score_adj,
};

/// State carried between steps.
struct Ctx<'a> {
    plan: &'a Plan,
    ch: &'a Channel,
    fds: &'a InitFds,
    root: Option<Root>,
    exe: Option<CString>,
}

type Step = fn(&mut Ctx) -> Result<()>;

/// The init sequence. The order is runc's, and most of it is forced: mounts before
/// pivot_root; sysctls and masks while the host's procfs can still reach the container's
/// namespaces by fd; the executable looked up before privileges drop, so a missing
/// binary fails `create`; no_new_privs before a seccomp filter that needs it; capabilities
/// after the uid change (keep-caps bridges it).
const STEPS: &[(&str, Step)] = &[
    ("session-keyring", step_keyring),
    ("rootfs-prepare", step_prepare),
    ("mounts", step_mounts),
    ("devices", step_devices),
    ("dev-symlinks", step_dev_symlinks),
    ("runtime-hooks", step_runtime_hooks),
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
    ("no-new-privileges", step_nnp),
    ("seccomp-privileged", step_seccomp_early),
    ("capabilities-bounding", step_bounding),
    ("user-ids", step_ids),
    ("capabilities", step_caps),
    ("cwd", step_cwd),
    ("lsm-exec-label", step_lsm),
    ("seccomp", step_seccomp_late),
];

/// `exec`: the process joins a container that is already set up (runc's setns init).
const EXEC_STEPS: &[(&str, Step)] = &[
    ("console", step_console),
    ("enter-root", step_enter_root),
    ("rlimits", step_rlimits),
    ("umask", step_umask),
    ("lookup-executable", step_lookup),
    ("no-new-privileges", step_nnp),
    ("seccomp-privileged", step_seccomp_early),
    ("capabilities-bounding", step_bounding),
    ("user-ids", step_ids),
    ("capabilities", step_caps),
    ("cwd", step_cwd),
    ("lsm-exec-label", step_lsm),
    ("seccomp", step_seccomp_late),
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
    if let Err(e) = close_inherited_fds(plan.preserve_fds, &keep) {
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
        namespaces::setns(j).map_err(|e| ("namespaces", e))?;
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
    };
    let steps = if plan.exec_mode { EXEC_STEPS } else { STEPS };
    for (name, step) in steps {
        failpoint(name);
        if let Err(e) = step(&mut ctx) {
            return report(ch, name, &e);
        }
    }
    if plan.seccomp.is_some() {
        if let Err(e) = probe_post_seccomp_calls(fds.start.as_ref()) {
            return report(ch, "seccomp", &e);
        }
    }
    // Handles opened during setup (pathrs keeps a cached procfs fd) must not stay open
    // while init waits in the container: close everything but the channel and the fifo.
    let mut keep = vec![ch.raw_fd()];
    keep.extend(fds.start.as_ref().map(|f| f.as_raw_fd()));
    if let Err(e) = close_inherited_fds(plan.preserve_fds, &keep) {
        return report(ch, "close-setup-fds", &e);
    }
    failpoint("ready");
    // Past this point the parent (create) exits; init must survive it.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    if let Err(e) = ch.send_msg(&ChildMsg::Ready) {
        return report(ch, "ready", &e);
    }
    let Some(start) = fds.start.as_ref() else {
        // exec: no start to wait for.
        return exec(&ctx, ch);
    };
    if let Err(e) = wait_for_start(start) {
        return report(ch, "wait-for-start", &e);
    }
    // Nothing of the host's may reach the startContainer hooks either.
    if let Err(e) = close_range_from(3 + plan.preserve_fds, true) {
        return report(
            ch,
            "close-fds",
            &Error::sys("closing fds", "close_range", "", e),
        );
    }
    if plan.has_hooks(Phase::StartContainer) {
        // The parent is gone (create returned long ago): the container's stderr is the
        // only place left to say why it will not start.
        let hooks = plan
            .hooks
            .as_ref()
            .map(|h| Phase::StartContainer.hooks_in(h))
            .unwrap_or(&[]);
        if let Err(e) = crate::hooks::run_all(
            Phase::StartContainer,
            hooks,
            &plan.hook_state("created", 1),
            &plan.cwd,
        ) {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("gpurun: {e}\n").as_bytes(),
            );
            return 1;
        }
    }
    exec(&ctx, ch)
}

/// With the filter loaded, check the calls init still has to make (the start fifo read,
/// closing fds, execve), so a profile that blocks them fails `create` with a clear
/// error instead of leaving a container that can never start.
fn probe_post_seccomp_calls(start: Option<&OwnedFd>) -> Result<()> {
    let blocked = |call: &str, e: nix::errno::Errno| {
        Error::Other(format!(
            "the seccomp profile blocks {call} ({e}), which gpurun needs after loading it to start the container"
        ))
    };
    if let Some(start) = start {
        nix::unistd::read(start, &mut []).map_err(|e| blocked("read", e))?;
    }
    close_range(u32::MAX - 1, u32::MAX).map_err(|e| blocked("close_range", e))?;
    match crate::linux::sys::proc::probe_execve() {
        nix::errno::Errno::EFAULT => Ok(()),
        e => Err(blocked("execve", e)),
    }
}

/// Block until `start` writes to the exec fifo. Init holds it read-write, so the read
/// blocks until a byte arrives, and `start` can tell a dead init (no reader: ENXIO).
fn wait_for_start(start: &OwnedFd) -> Result<()> {
    let mut f = std::fs::File::from(
        start
            .try_clone()
            .map_err(|e| Error::io("waiting for start", "exec.fifo", e))?,
    );
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::Other("exec fifo closed before start".into())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("waiting for start on", "exec.fifo", e)),
        }
    }
}

fn exec(ctx: &Ctx, ch: &Channel) -> i32 {
    let plan = ctx.plan;
    let Some(exe) = ctx.exe.as_ref() else {
        return report(ch, "exec", &Error::Other("no executable resolved".into()));
    };
    let args = crate::plan::cstrings(&plan.args);
    let env = crate::plan::cstrings(&env_with_defaults(plan));
    // Every fd past stdio and the preserved ones is closed on exec: nothing of the host
    // (state dir, rootfs, cgroup or namespace fds) reaches the container (CVE-2024-21626).
    if let Err(e) = close_range_from(3 + plan.preserve_fds, true) {
        return report(
            ch,
            "close-fds",
            &Error::sys("closing fds", "close_range", "", e),
        );
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let err = match nix::unistd::execve(exe, &args, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    report(
        ch,
        "exec",
        &Error::sys(
            "starting the container process",
            "execve",
            exe.to_string_lossy().as_ref(),
            err,
        ),
    )
}

fn root<'a>(ctx: &'a Ctx) -> Result<&'a Root> {
    ctx.root
        .as_ref()
        .ok_or_else(|| Error::Other("rootfs not prepared".into()))
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
    devices::create_all(root(ctx)?, &ctx.plan.devices, ctx.plan.device_nodes)
}

fn step_dev_symlinks(ctx: &mut Ctx) -> Result<()> {
    if !ctx.plan.make_devices {
        return Ok(());
    }
    devices::symlinks(root(ctx)?)
}

fn step_masked(ctx: &mut Ctx) -> Result<()> {
    rootfs::mask_paths(root(ctx)?, &ctx.plan.masked)
}

fn step_readonly_paths(ctx: &mut Ctx) -> Result<()> {
    rootfs::readonly_paths(root(ctx)?, &ctx.plan.readonly)
}

fn step_cwd_create(ctx: &mut Ctx) -> Result<()> {
    root(ctx)?.mkdir_all(&ctx.plan.cwd, 0o755).map(|_| ())
}

fn step_pivot(ctx: &mut Ctx) -> Result<()> {
    // The rootfs handle refers to the old view; after the switch "/" is the root.
    ctx.root = None;
    if !ctx.plan.mount_ns {
        return rootfs::chroot_only(&ctx.plan.rootfs);
    }
    if ctx.plan.no_pivot {
        rootfs::move_root(&ctx.plan.rootfs)?;
    } else {
        rootfs::pivot(&ctx.plan.rootfs)?;
    }
    rootfs::root_propagation(ctx.plan.rootfs_propagation.as_deref())
}

/// `exec` into a container that shares the host's mount table: its root is not a
/// namespace to join, so enter it the way its init did. After the console, which such a
/// container takes from the host's devpts.
fn step_enter_root(ctx: &mut Ctx) -> Result<()> {
    match &ctx.plan.exec_root {
        Some(root) => rootfs::chroot_fd(root.as_fd()),
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
    rlimits::apply(&ctx.plan.rlimits)
}

fn step_personality(ctx: &mut Ctx) -> Result<()> {
    if let Some(p) = ctx.plan.personality {
        nix::sys::personality::set(nix::sys::personality::Persona::from_bits_retain(p as i32))
            .map_err(|e| Error::sys("setting personality", "personality", "", e))?;
    }
    Ok(())
}

fn step_lookup(ctx: &mut Ctx) -> Result<()> {
    let path = lookup_executable(&ctx.plan.args[0], &ctx.plan.env, &ctx.plan.cwd)?;
    ctx.exe = Some(
        CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Config("process.args[0] contains a NUL byte".into()))?,
    );
    Ok(())
}

fn step_nnp(ctx: &mut Ctx) -> Result<()> {
    if ctx.plan.no_new_privileges {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| Error::sys("setting no_new_privs", "prctl", "PR_SET_NO_NEW_PRIVS", e))?;
    }
    Ok(())
}

/// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while init still
/// has it.
fn step_seccomp_early(ctx: &mut Ctx) -> Result<()> {
    match &ctx.plan.seccomp {
        Some(s) if !ctx.plan.no_new_privileges => crate::linux::seccomp::install(s)
            .map_err(|e| Error::Other(format!("loading seccomp filter: {e}"))),
        _ => Ok(()),
    }
}

/// With no_new_privs, load as late as possible so the filter restricts the least of
/// gpurun's own work.
fn step_seccomp_late(ctx: &mut Ctx) -> Result<()> {
    match &ctx.plan.seccomp {
        Some(s) if ctx.plan.no_new_privileges => crate::linux::seccomp::install(s)
            .map_err(|e| Error::Other(format!("loading seccomp filter: {e}"))),
        _ => Ok(()),
    }
}

fn step_bounding(ctx: &mut Ctx) -> Result<()> {
    caps::drop_bounding(&ctx.plan.caps)
}

fn step_ids(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.plan;
    caps::set_keep_caps(true)?;
    let gids: Vec<Gid> = p
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids)
        .map_err(|e| Error::sys("setting additional gids", "setgroups", "", e))?;
    let g = Gid::from_raw(p.gid);
    setresgid(g, g, g)
        .map_err(|e| Error::sys(format!("setting gid {}", p.gid), "setresgid", "", e))?;
    let u = Uid::from_raw(p.uid);
    setresuid(u, u, u)
        .map_err(|e| Error::sys(format!("setting uid {}", p.uid), "setresuid", "", e))?;
    caps::set_keep_caps(false)
}

fn step_caps(ctx: &mut Ctx) -> Result<()> {
    caps::apply(&ctx.plan.caps)
}

/// chdir, then make sure the result is inside the container: a cwd such as
/// `/proc/self/fd/N` pointing at a leaked host directory reads "(unreachable)"
/// (CVE-2024-21626).
fn step_cwd(ctx: &mut Ctx) -> Result<()> {
    let cwd = &ctx.plan.cwd;
    nix::unistd::chdir(cwd).map_err(|e| Error::sys("entering process.cwd", "chdir", cwd, e))?;
    let now =
        nix::unistd::getcwd().map_err(|e| Error::sys("checking process.cwd", "getcwd", cwd, e))?;
    if !now.is_absolute() || now.to_string_lossy().starts_with("(unreachable)") {
        return Err(Error::Other(format!(
            "process.cwd {} resolves outside the container root",
            cwd.display()
        )));
    }
    Ok(())
}

fn close_inherited_fds(preserve: u32, keep: &[i32]) -> Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|k| *k as u32).collect();
    keep.sort_unstable();
    let mut first = 3 + preserve;
    for k in keep {
        if k > first {
            close_range(first, k - 1)
                .map_err(|e| Error::sys("closing inherited fds", "close_range", "", e))?;
        }
        first = first.max(k + 1);
    }
    close_range(first, u32::MAX)
        .map_err(|e| Error::sys("closing inherited fds", "close_range", "", e))
}
