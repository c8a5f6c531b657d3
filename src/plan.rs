//! Spec → Plan: everything resolved in the parent, before clone, where an error is easy
//! to report. The plan holds resolved facts (flags, fds, ordered mounts, masks, argv),
//! not a second copy of the spec.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{Linux, LinuxNamespaceType, PosixRlimit};

mod error;
mod exec;

pub use error::Error;
use error::Result;
pub use exec::build_exec;

use crate::linux::caps::CapSets;
use crate::linux::devices::{self, Device};
use crate::linux::namespaces::{self, Join};
use crate::linux::rootfs::{self, MountOp};
use crate::spec::{self, Bundle};

/// Links init makes inside the root after the mounts, before the createContainer hooks:
/// a JSON list of `[target, link]` pairs. GPU injection writes it for NVIDIA's
/// `create-symlinks` hook, which gpurun does instead of running.
pub const SYMLINKS_ANNOTATION: &str = "gpurun.dev/symlinks";

pub struct Plan {
    pub id: String,
    pub rootfs: PathBuf,
    /// Namespaces created by the clone itself (the one-process path).
    pub clone_flags: CloneFlags,
    /// Namespaces created by the child after it joined the others and was placed in
    /// its cgroup (the cgroup namespace must be rooted at the container's cgroup).
    pub unshare_flags: CloneFlags,
    /// A user namespace, joined pid or time namespace, or new time namespace needs a
    /// second fork: those only apply to the children of the process that enters them.
    pub two_stage: bool,
    pub joins: Vec<Join>,
    pub new_user: bool,
    pub uid_map: String,
    pub gid_map: String,
    pub time_offsets: Option<String>,
    pub mounts: Vec<MountOp>,
    pub make_devices: bool,
    pub devices: Vec<Device>,
    pub device_nodes: devices::NodeSource,
    /// The container has a mount namespace of its own (new or joined). Without one it
    /// shares the runtime's mount table, and init makes no mount at all.
    pub mount_ns: bool,
    /// (link, target) pairs from [`SYMLINKS_ANNOTATION`], made inside the root; an
    /// existing entry is left alone.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
    pub root_readonly: bool,
    pub rootfs_propagation: Option<String>,
    pub no_pivot: bool,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctl: Vec<(String, String)>,
    pub caps: CapSets,
    /// What was left out of the config because the kernel cannot do it (runtime-spec 1.1:
    /// warn and go on); the caller logs them.
    pub warnings: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: u32,
    pub rlimits: Vec<PosixRlimit>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub personality: Option<u64>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    /// fds 3.. that pass into the container (LISTEN_FDS plus --preserve-fds).
    pub preserve_fds: u32,
    pub seccomp: Option<crate::linux::seccomp::CompiledSeccomp>,
    /// `_ses.<id>`, unless `--no-new-keyring`.
    pub session_keyring: Option<String>,
    /// What to write to `/proc/self/attr/.../exec` before execve, when the host's LSM
    /// is enabled: (attr file relative to /proc/self, contents).
    pub lsm_exec: Vec<(String, String)>,
    pub terminal: bool,
    /// (rows, cols) of `process.consoleSize`.
    pub console_size: Option<(u16, u16)>,
    /// What hooks see: the spec's hooks and the state fields they get on stdin.
    pub hooks: Option<oci_spec::runtime::Hooks>,
    pub bundle: PathBuf,
    pub oci_version: String,
    pub annotations: std::collections::HashMap<String, String>,
    /// `exec` into a running container: join its namespaces, set up the process, execve
    /// at once (no rootfs work, no start fifo).
    pub exec_mode: bool,
    /// `exec` into a container without a mount namespace of its own: its init's root
    /// (`/proc/<pid>/root`), which the process enters with chroot, as joining the mount
    /// namespace does for the others.
    pub exec_root: Option<std::os::fd::OwnedFd>,
}

impl Plan {
    /// The state a hook gets on stdin.
    pub fn hook_state<'a>(&'a self, status: &'a str, pid: i32) -> crate::hooks::HookState<'a> {
        crate::hooks::HookState {
            oci_version: &self.oci_version,
            id: &self.id,
            status,
            pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        }
    }

    pub fn has_hooks(&self, phase: crate::hooks::Phase) -> bool {
        self.hooks
            .as_ref()
            .is_some_and(|h| !phase.hooks_in(h).is_empty())
    }
}

pub struct Options {
    pub no_pivot: bool,
    pub preserve_fds: u32,
    pub no_new_keyring: bool,
}

fn id_map(maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>) -> String {
    maps.into_iter()
        .flatten()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// `type: cgroup` mounts carry the host's cgroup mounts as this process sees them: the
/// child's new mount namespace starts as a copy of ours, so it need not read mountinfo
/// again (nor `/proc/self/cgroup` under a new cgroup namespace). Not when the child joins
/// another mount namespace, where the table may differ.
fn cgroup_mounts_from_parent(mounts: &mut [MountOp], joins: &[Join], unshare: CloneFlags) {
    let is_cgroup = |m: &MountOp| m.typ == "cgroup" && !m.bind;
    if !mounts.iter().any(is_cgroup) || joins.iter().any(|j| j.typ == LinuxNamespaceType::Mount) {
        return;
    }
    let Ok(host) = rootfs::CgroupHost::read(unshare.contains(CloneFlags::CLONE_NEWCGROUP)) else {
        return;
    };
    for m in mounts.iter_mut().filter(|m| is_cgroup(m)) {
        m.cgroup = Some(host.clone());
    }
}

/// How the container's namespaces are made: which are joined (in join order), which the
/// clone creates, which the child unshares, and whether init needs a second fork.
struct NamespaceLayout {
    joins: Vec<Join>,
    /// The spec joins the runtime's own mount namespace by path.
    own_mount: bool,
    clone_flags: CloneFlags,
    unshare_flags: CloneFlags,
    two_stage: bool,
    new_user: bool,
}

/// What goes into the container's filesystem: its mounts and device nodes.
struct Filesystem {
    mounts: Vec<MountOp>,
    make_devices: bool,
    devices: Vec<Device>,
    device_nodes: devices::NodeSource,
    mount_ns: bool,
}

/// The parts of a plan that take a step of their own to resolve.
struct Resolved<'a> {
    linux: &'a Linux,
    process: &'a oci_spec::runtime::Process,
    ns: NamespaceLayout,
    fs: Filesystem,
    env: Vec<String>,
    listen_fds: u32,
    args: Vec<String>,
    seccomp: Option<crate::linux::seccomp::CompiledSeccomp>,
    caps: CapSets,
    warnings: Vec<String>,
}

pub fn build(id: &str, b: &Bundle, opts: &Options) -> Result<Plan> {
    let spec = &b.spec;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("linux: missing".into()))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("process: missing".into()))?;
    let ns = namespace_layout(spec, linux)?;
    let fs = filesystem(b, linux, &ns)?;
    let (env, listen_fds) = environment(process)?;
    let args = arguments(process)?;
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        crate::log::debug(
            "linux.mountLabel ignored: SELinux mount labels are not applied by gpurun",
        );
    }
    let seccomp = seccomp(linux)?;
    let (caps, warnings) = CapSets::from_spec(process.capabilities().as_ref());
    let parts = Resolved {
        linux,
        process,
        ns,
        fs,
        env,
        listen_fds,
        args,
        seccomp,
        caps,
        warnings,
    };
    assemble(id, b, opts, parts)
}

fn namespace_layout(spec: &oci_spec::runtime::Spec, linux: &Linux) -> Result<NamespaceLayout> {
    let mut joins = Vec::new();
    let mut created = CloneFlags::empty();
    for ns in spec::namespaces(spec) {
        match ns.path() {
            Some(p) => joins.push(namespaces::open_join(ns.typ(), p)?),
            None => created |= namespaces::flag(ns.typ()),
        }
    }
    joins.sort_by_key(|j| namespaces::join_order(j.typ));
    // Joining the runtime's own mount namespace by path is not having one of its own.
    let own_mount = joins
        .iter()
        .position(|j| j.typ == LinuxNamespaceType::Mount && namespaces::is_own(j));
    if let Some(i) = own_mount {
        spec::validate_without_mount_namespace(spec, linux)?;
        joins.remove(i);
    }
    let new_user = created.contains(CloneFlags::CLONE_NEWUSER);
    let new_time = created.contains(namespaces::flag(LinuxNamespaceType::Time));
    let joins_child_only = joins.iter().any(|j| {
        matches!(
            j.typ,
            LinuxNamespaceType::User | LinuxNamespaceType::Pid | LinuxNamespaceType::Time
        )
    });
    let two_stage = new_user || new_time || joins_child_only;
    let mut unshare_flags = created - CloneFlags::CLONE_NEWUSER;
    let mut clone_flags = CloneFlags::empty();
    if !two_stage && created.contains(CloneFlags::CLONE_NEWPID) {
        // One process: the clone makes it pid 1 of its new pid namespace.
        clone_flags |= CloneFlags::CLONE_NEWPID;
        unshare_flags -= CloneFlags::CLONE_NEWPID;
    }
    Ok(NamespaceLayout {
        joins,
        own_mount: own_mount.is_some(),
        clone_flags,
        unshare_flags,
        two_stage,
        new_user,
    })
}

/// `linux.timeOffsets` as `/proc/self/timens_offsets` takes it, one clock a line.
fn time_offsets(linux: &Linux) -> Option<String> {
    linux.time_offsets().as_ref().map(|offs| {
        let mut lines: Vec<String> = offs
            .iter()
            .map(|(clock, o)| {
                format!(
                    "{clock} {} {}\n",
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0)
                )
            })
            .collect();
        lines.sort();
        lines.concat()
    })
}

fn filesystem(b: &Bundle, linux: &Linux, ns: &NamespaceLayout) -> Result<Filesystem> {
    let spec = &b.spec;
    let mut mounts = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        mounts.push(rootfs::parse_mount(m, &b.dir)?);
    }
    cgroup_mounts_from_parent(&mut mounts, &ns.joins, ns.unshare_flags);
    let dev_is_bind = mounts
        .iter()
        .any(|m| m.bind && spec::lexical_clean(&m.dest) == Path::new("/dev"));
    let mut devs = devices::defaults();
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        let d = devices::from_spec(d)?;
        devs.retain(|x| x.path != d.path);
        devs.push(d);
    }
    let mount_ns = !ns.own_mount && spec::has_namespace(spec, LinuxNamespaceType::Mount);
    let device_nodes = if !mount_ns {
        devices::NodeSource::MknodOnly
    } else if spec::has_namespace(spec, LinuxNamespaceType::User) {
        devices::NodeSource::BindFromHost
    } else {
        devices::NodeSource::MknodOrBind
    };
    Ok(Filesystem {
        mounts,
        make_devices: !dev_is_bind,
        devices: devs,
        device_nodes,
        mount_ns,
    })
}

/// `process.env`, with the socket-activation variables set for the fds passed in.
fn environment(process: &oci_spec::runtime::Process) -> Result<(Vec<String>, u32)> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let listen_fds = inherited_listen_fds();
    if listen_fds > 0 {
        env.retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
        env.push(format!("LISTEN_FDS={listen_fds}"));
        env.push("LISTEN_PID=1".into());
    }
    for e in &env {
        if e.contains('\0') {
            return Err(Error::Config(format!(
                "process.env: {e:?} contains a NUL byte"
            )));
        }
    }
    Ok((env, listen_fds))
}

fn arguments(process: &oci_spec::runtime::Process) -> Result<Vec<String>> {
    let args = process.args().clone().unwrap_or_default();
    if args.iter().any(|a| a.contains('\0')) {
        return Err(Error::Config(
            "process.args: an argument contains a NUL byte".into(),
        ));
    }
    Ok(args)
}

fn seccomp(linux: &Linux) -> Result<Option<crate::linux::seccomp::CompiledSeccomp>> {
    let Some(s) = linux.seccomp() else {
        return Ok(None);
    };
    let c = crate::linux::seccomp::compile(s).map_err(Error::SeccompProfile)?;
    for skipped in c.skipped_architectures() {
        crate::log::warn_caller(&format!("linux.seccomp.architectures: {skipped}"));
    }
    if !c.skipped_syscalls().is_empty() {
        crate::log::debug(&format!(
            "linux.seccomp: syscalls unknown on this architecture skipped: {}",
            c.skipped_syscalls().join(", ")
        ));
    }
    Ok(Some(c))
}

fn personality(linux: &Linux) -> Option<u64> {
    linux.personality().as_ref().map(|p| match p.domain() {
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
        _ => 0,
    })
}

fn sorted_sysctl(linux: &Linux) -> Vec<(String, String)> {
    let mut v: Vec<_> = linux
        .sysctl()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort();
    v
}

/// (rows, cols) of `process.consoleSize`, clamped to what a winsize holds.
fn console_size(process: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    process.console_size().as_ref().map(|b| {
        (
            b.height().min(u16::MAX as u64) as u16,
            b.width().min(u16::MAX as u64) as u16,
        )
    })
}

/// The plan from the resolved parts and the fields the spec gives as they are.
fn assemble(id: &str, b: &Bundle, opts: &Options, r: Resolved) -> Result<Plan> {
    let (linux, process) = (r.linux, r.process);
    let spec = &b.spec;
    let user = process.user();
    Ok(Plan {
        id: id.to_string(),
        rootfs: b.rootfs.clone(),
        clone_flags: r.ns.clone_flags,
        unshare_flags: r.ns.unshare_flags,
        two_stage: r.ns.two_stage,
        joins: r.ns.joins,
        new_user: r.ns.new_user,
        uid_map: id_map(linux.uid_mappings().as_ref()),
        gid_map: id_map(linux.gid_mappings().as_ref()),
        time_offsets: time_offsets(linux),
        mounts: r.fs.mounts,
        make_devices: r.fs.make_devices,
        devices: r.fs.devices,
        device_nodes: r.fs.device_nodes,
        mount_ns: r.fs.mount_ns,
        symlinks: symlinks(spec)?,
        masked: linux.masked_paths().clone().unwrap_or_default(),
        readonly: linux.readonly_paths().clone().unwrap_or_default(),
        root_readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        rootfs_propagation: linux.rootfs_propagation().clone(),
        no_pivot: opts.no_pivot,
        hostname: spec.hostname().clone(),
        domainname: spec.domainname().clone(),
        sysctl: sorted_sysctl(linux),
        caps: r.caps,
        warnings: r.warnings,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask().unwrap_or(0o022),
        rlimits: process.rlimits().clone().unwrap_or_default(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
        personality: personality(linux),
        args: r.args,
        env: r.env,
        cwd: process.cwd().clone(),
        preserve_fds: r.listen_fds + opts.preserve_fds,
        seccomp: r.seccomp,
        session_keyring: (!opts.no_new_keyring).then(|| format!("_ses.{id}")),
        lsm_exec: lsm_exec(process),
        terminal: process.terminal().unwrap_or(false),
        console_size: console_size(process),
        hooks: spec.hooks().clone(),
        bundle: b.dir.clone(),
        oci_version: spec.version().clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        exec_mode: false,
        exec_root: None,
    })
}

/// The links of [`SYMLINKS_ANNOTATION`]: absolute link paths, targets as given.
fn symlinks(spec: &oci_spec::runtime::Spec) -> Result<Vec<(PathBuf, PathBuf)>> {
    let Some(text) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(SYMLINKS_ANNOTATION))
    else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(String, String)> = serde_json::from_str(text).map_err(|e| {
        Error::Config(format!(
            "annotation {SYMLINKS_ANNOTATION}: not a list of [target, link] pairs: {e}"
        ))
    })?;
    pairs
        .into_iter()
        .map(|(target, link)| {
            let link = PathBuf::from(link);
            if !link.is_absolute() || target.is_empty() || target.contains('\0') {
                return Err(Error::Config(format!(
                    "annotation {SYMLINKS_ANNOTATION}: link {} -> {target:?} needs an absolute \
                     link path and a target",
                    link.display()
                )));
            }
            Ok((link, PathBuf::from(target)))
        })
        .collect()
}

/// AppArmor and SELinux labels apply at execve through `/proc/self/attr`. On a host
/// without that LSM they are ignored with a debug line, as runc does.
fn lsm_exec(process: &oci_spec::runtime::Process) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(p) = process
        .apparmor_profile()
        .as_ref()
        .filter(|p| !p.is_empty())
    {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        if enabled {
            out.push(("attr/apparmor/exec".to_string(), format!("exec {p}")));
        } else {
            crate::log::debug(&format!(
                "process.apparmorProfile {p:?} ignored: AppArmor is not enabled on this host"
            ));
        }
    }
    if let Some(l) = process.selinux_label().as_ref().filter(|l| !l.is_empty()) {
        if Path::new("/sys/fs/selinux/enforce").exists() {
            out.push(("attr/exec".to_string(), l.clone()));
        } else {
            crate::log::debug(&format!(
                "process.selinuxLabel {l:?} ignored: SELinux is not enabled on this host"
            ));
        }
    }
    out
}

/// systemd socket activation: `LISTEN_FDS=n` for this process means fds 3..3+n are
/// sockets to pass on.
fn inherited_listen_fds() -> u32 {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    if !pid_ok {
        return 0;
    }
    std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Check that fds 3..3+n exist, so a bad `--preserve-fds` fails before anything starts.
pub fn check_preserved_fds(n: u32) -> Result<()> {
    for fd in 3..3 + n {
        if !crate::linux::sys::proc::fd_is_open(fd as i32) {
            return Err(Error::Config(format!(
                "--preserve-fds: fd {fd} is not open"
            )));
        }
    }
    Ok(())
}

pub fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .filter_map(|s| CString::new(s.as_bytes()).ok())
        .collect()
}
