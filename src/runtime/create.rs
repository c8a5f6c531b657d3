//! `create`: a container made up to the point where its init waits for `start`, in named
//! steps. The [`Creating`] guard undoes every step taken if a later one fails.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use nix::unistd::Pid;

use super::console::console_fds;
use super::files::{owner, write_pid_file};
use super::{hook_dispatch, CreateOpts, Creating, Globals};
use crate::error::{Error, Result};
use crate::hooks::Phase;
use crate::plan::{self, Plan};
use crate::process::spawn::ParentSide;
use crate::process::InitFds;
use crate::spec::{self, Bundle};
use crate::state::{self, Container, State, Status};

pub struct Created {
    pub pid: Pid,
    pub container: Container,
    /// For a foreground `run` with a terminal: where init sends the pty master.
    pub console_peer: Option<OwnedFd>,
    /// The GPUs granted and the journal that recorded the grant (for the exit record).
    pub gpus: Vec<String>,
    pub gpu_journal: Option<crate::gpu::config::JournalConfig>,
}

/// Create a container and leave its init waiting for `start`.
pub fn create(g: &Globals, o: &CreateOpts) -> Result<Created> {
    state::validate_id(&o.id)?;
    let (mut bundle, warnings) = spec::load(&o.bundle)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let (console, console_peer) = console_fds(terminal, o.console_socket.as_deref(), o.foreground)?;
    plan::check_preserved_fds(o.preserve_fds)?;

    let mut guard = Creating::new(g.root.create(&o.id)?);
    guard.gpu = crate::gpu::prepare(
        &mut bundle.spec,
        &crate::gpu::Container {
            id: &o.id,
            root: &g.root.path,
            rootfs: &bundle.rootfs,
            cli: o.gpus.as_ref(),
        },
    )
    .map_err(gpu_error)?;
    if guard.gpu.is_some() {
        require_mount_namespace(&bundle)?;
    }
    let notify_socket = crate::notify::caller_socket();
    if notify_socket.is_some() {
        crate::notify::setup_spec(&mut bundle.spec, &guard.container().dir)?;
    }
    let plan = build_plan(o, &bundle, warnings)?;
    let mut st = initial_state(g, o, &bundle, guard.gpu.as_ref(), notify_socket)?;
    // Recorded before the directories exist: a create killed from here on leaves a state
    // from which `delete` finds (and removes) everything.
    st.cgroup = crate::linux::cgroups::ContainerCgroup::plan(&bundle.spec, &o.id, g.systemd_cgroup);
    guard.container().save(&st)?;
    let start = make_start_fifo(guard.container())?;
    make_cgroup(g, o, &bundle, &mut guard, &mut st)?;
    let fds = InitFds {
        start: Some(start),
        console,
    };
    let pid = spawn_init(&plan, fds, &mut guard)?;
    record_init(o, pid, &mut st, &mut guard)?;
    super::journal::granted(g, &st, guard.gpu.as_ref());
    Ok(Created {
        pid,
        container: guard.commit(),
        console_peer,
        gpus: st.gpus,
        gpu_journal: st.gpu_journal,
    })
}

/// The spec as edited (GPUs, notify socket) validated once more, then resolved into the
/// plan; every warning so far goes to the caller.
fn build_plan(o: &CreateOpts, bundle: &Bundle, mut warnings: Vec<String>) -> Result<Plan> {
    // GPU edits are spec content like any other: validate the result once more.
    spec::validate(&bundle.spec)?;
    let plan = plan::build(
        &o.id,
        bundle,
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
    Ok(plan)
}

/// The state as it is recorded before anything is made: status creating, no pid yet.
fn initial_state(
    g: &Globals,
    o: &CreateOpts,
    bundle: &Bundle,
    gpu: Option<&crate::gpu::GpuGrant>,
    notify_socket: Option<PathBuf>,
) -> Result<State> {
    Ok(State {
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
        gpus: gpu.map(|g| g.gpus.clone()).unwrap_or_default(),
        gpu_state_dir: gpu.map(|g| g.state_dir.clone()),
        gpu_journal: gpu.map(|g| g.journal.clone()),
        spec: Some(state::encode_spec(&bundle.spec)?),
        notify_socket,
    })
}

/// The fifo init blocks on until `start` writes to it. Opened read-write here so that
/// opening it never blocks; init inherits the fd.
fn make_start_fifo(c: &Container) -> Result<OwnedFd> {
    let fifo = c.fifo_path();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .map_err(|e| Error::sys("creating the start fifo", "mkfifo", &fifo, e))?;
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| Error::io("opening the start fifo", &fifo, e))?
        .into())
}

fn make_cgroup(
    g: &Globals,
    o: &CreateOpts,
    bundle: &Bundle,
    guard: &mut Creating,
    st: &mut State,
) -> Result<()> {
    let (cg, warnings) =
        crate::linux::cgroups::ContainerCgroup::create(&bundle.spec, &o.id, g.systemd_cgroup)?;
    for w in warnings {
        crate::log::warn(&w);
    }
    let made = Some(cg.record());
    guard.cgroup = Some(cg);
    // The planned state already names what was made (the usual case): no second write.
    if made != st.cgroup {
        st.cgroup = made;
        guard.container().save(st)?;
    }
    Ok(())
}

/// Clone init into the container's cgroup, and run the hooks of the runtime's namespaces
/// when init asks for them.
fn spawn_init(plan: &Plan, fds: InitFds, guard: &mut Creating) -> Result<Pid> {
    let cgroup = &mut guard.cgroup;
    let mut place = |pid: Pid| match cgroup {
        Some(h) => Ok(h.add_init(pid.as_raw())?),
        None => Ok(()),
    };
    let mut runtime_hooks = |pid: Pid| -> Result<()> {
        let state = plan.hook_state("creating", pid.as_raw());
        for phase in [Phase::Prestart, Phase::CreateRuntime] {
            hook_dispatch::run(phase, plan.hooks.as_ref(), &state, &plan.bundle)?;
        }
        Ok(())
    };
    let parent_side = ParentSide {
        place: &mut place,
        runtime_hooks: &mut runtime_hooks,
    };
    let spawned = crate::process::spawn::spawn(plan, fds, parent_side)?;
    guard.init = Some(spawned.pid);
    Ok(spawned.pid)
}

/// Init is ready: its pid and start time, the GPU lease in its name, status created.
fn record_init(o: &CreateOpts, pid: Pid, st: &mut State, guard: &mut Creating) -> Result<()> {
    // The systemd driver made its directories only once init existed.
    st.cgroup = guard.cgroup.as_ref().map(|h| h.record());
    st.pid = pid.as_raw();
    st.init_start_time = state::process_start_time(st.pid)
        .ok_or_else(|| Error::State("container init died right after it was ready".into()))?;
    if let Some(gpu) = guard.gpu.as_mut() {
        // The lease follows init: it is live exactly as long as the container is.
        gpu.bind(st.pid, st.init_start_time).map_err(gpu_error)?;
    }
    st.status = Status::Created;
    guard.container().save(st)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, st.pid)?;
    }
    Ok(())
}

/// A broken node configuration keeps its own wording (it names the file and line).
fn gpu_error(e: crate::gpu::GpuError) -> Error {
    match e {
        e @ crate::gpu::GpuError::Config(_) => Error::Config(e.to_string()),
        e => Error::Gpu(e),
    }
}

/// GPU files, nodes and the `/proc/driver/nvidia` view are mounted into the container:
/// without a mount namespace of its own that would change the host's mount table.
fn require_mount_namespace(bundle: &Bundle) -> Result<()> {
    if spec::has_namespace(&bundle.spec, oci_spec::runtime::LinuxNamespaceType::Mount) {
        return Ok(());
    }
    Err(Error::Config(
        "a GPU grant needs a mount namespace: the driver files, device nodes and \
         /proc/driver/nvidia are mounted into the container, and without \"mount\" in \
         linux.namespaces it shares the host's mount table, which gpurun never changes"
            .into(),
    ))
}
