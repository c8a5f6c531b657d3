//! The checks a config passes before anything is made: each refusal names the field.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{Linux, LinuxNamespaceType, Spec};

use super::error::Result;
use super::{cfg_err, creates_namespace, has_namespace, lexical_clean, namespaces};

/// Mounts under `/proc` are refused, as runc does, except these: lxcfs-style overrides of
/// single files, and the GPU edits' `/proc/driver/nvidia` (and `/proc/driver` itself, which
/// they cover when the kernel has no NVIDIA module).
const PROC_MOUNT_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/driver/nvidia",
    // Covered only when the kernel has no NVIDIA module (gpu::edits::cover_proc_driver).
    "/proc/driver",
];

pub fn validate(spec: &Spec) -> Result<()> {
    if !spec.version().starts_with("1.") {
        return Err(cfg_err(format!(
            "ociVersion {:?} is not supported (1.x only)",
            spec.version()
        )));
    }
    validate_process(spec)?;
    validate_hooks(spec)?;
    validate_linux(spec)
}

/// Every hook, whatever its phase, is checked now: a relative path or a zero timeout in a
/// poststop hook would otherwise surface only at delete, long after the container ran.
fn validate_hooks(spec: &Spec) -> Result<()> {
    let Some(h) = spec.hooks() else {
        return Ok(());
    };
    #[allow(deprecated)]
    let phases = [
        ("prestart", h.prestart()),
        ("createRuntime", h.create_runtime()),
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
        ("poststart", h.poststart()),
        ("poststop", h.poststop()),
    ];
    for (phase, hooks) in phases {
        for (i, hook) in hooks.as_deref().unwrap_or_default().iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(cfg_err(format!(
                    "hooks.{phase}[{i}].path {} must be absolute",
                    hook.path().display()
                )));
            }
            if let Some(t) = hook.timeout().filter(|t| *t <= 0) {
                return Err(cfg_err(format!(
                    "hooks.{phase}[{i}].timeout {t} must be greater than zero"
                )));
            }
        }
    }
    Ok(())
}

/// The `process` object alone (also what `exec --process` is checked against).
pub fn validate_process(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| cfg_err("process: missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(cfg_err("process.args: must not be empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(cfg_err(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    check_user(process.user())?;
    if let Some(adj) = process
        .oom_score_adj()
        .filter(|a| !(-1000..=1000).contains(a))
    {
        return Err(cfg_err(format!(
            "process.oomScoreAdj {adj} is out of range (-1000 to 1000)"
        )));
    }
    check_unsupported_process_fields(process)?;
    check_rlimits(process)
}

/// (uid_t)-1 means "unchanged" to setresuid and setresgid: the process would stay root.
fn check_user(user: &oci_spec::runtime::User) -> Result<()> {
    for (field, id) in [("uid", user.uid()), ("gid", user.gid())] {
        if id == u32::MAX {
            return Err(cfg_err(format!(
                "process.user.{field} {id} is not a valid id (it means \"unchanged\" to the kernel)"
            )));
        }
    }
    if let Some(g) = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|g| **g == u32::MAX)
    {
        return Err(cfg_err(format!(
            "process.user.additionalGids: {g} is not a valid group id"
        )));
    }
    Ok(())
}

fn check_unsupported_process_fields(process: &oci_spec::runtime::Process) -> Result<()> {
    if process.command_line().is_some() {
        return Err(cfg_err("process.commandLine is Windows-only"));
    }
    if process.io_priority().is_some() {
        return Err(cfg_err("process.ioPriority is not supported by gpurun"));
    }
    if process.scheduler().is_some() {
        return Err(cfg_err("process.scheduler is not supported by gpurun"));
    }
    if process.exec_cpu_affinity().is_some() {
        return Err(cfg_err(
            "process.execCPUAffinity is not supported by gpurun",
        ));
    }
    Ok(())
}

fn check_rlimits(process: &oci_spec::runtime::Process) -> Result<()> {
    if let Some(rl) = process.rlimits() {
        let mut seen = HashSet::new();
        for r in rl {
            if !seen.insert(format!("{:?}", r.typ())) {
                return Err(cfg_err(format!("process.rlimits: duplicate {:?}", r.typ())));
            }
            if r.soft() > r.hard() {
                return Err(cfg_err(format!(
                    "process.rlimits: {:?} soft limit {} is above its hard limit {}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                )));
            }
        }
    }
    Ok(())
}

/// The checks of the `linux` object, in the order they run: the first that fails names
/// the field.
const LINUX_CHECKS: &[fn(&Spec, &Linux) -> Result<()>] = &[
    check_namespace_list,
    check_id_mappings,
    check_uts_names,
    check_without_mount_namespace,
    check_time_offsets,
    check_sysctls,
    check_unsupported_fields,
    check_rootfs_propagation,
    check_personality,
    check_mounts,
    check_devices,
];

fn validate_linux(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Err(cfg_err("linux: missing (gpurun runs Linux containers)"));
    };
    LINUX_CHECKS.iter().try_for_each(|check| check(spec, linux))
}

fn check_namespace_list(spec: &Spec, _: &Linux) -> Result<()> {
    let mut seen = HashSet::new();
    for ns in namespaces(spec) {
        if !seen.insert(ns.typ()) {
            return Err(cfg_err(format!(
                "linux.namespaces: {:?} listed twice",
                ns.typ()
            )));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(cfg_err(format!(
                    "linux.namespaces: {:?} path {} must be absolute",
                    ns.typ(),
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

fn check_id_mappings(spec: &Spec, linux: &Linux) -> Result<()> {
    let uid_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let gid_maps = linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let maps = uid_maps || gid_maps;
    if creates_namespace(spec, LinuxNamespaceType::User) && !(uid_maps && gid_maps) {
        return Err(cfg_err(
            "linux.uidMappings/gidMappings: a new user namespace needs both mappings",
        ));
    }
    if maps && !creates_namespace(spec, LinuxNamespaceType::User) {
        return Err(cfg_err(
            "linux.uidMappings/gidMappings: mappings need a new user namespace",
        ));
    }
    Ok(())
}

fn check_uts_names(spec: &Spec, _: &Linux) -> Result<()> {
    let uts = has_namespace(spec, LinuxNamespaceType::Uts);
    if spec.hostname().is_some() && !uts {
        return Err(cfg_err(
            "hostname: unable to set hostname without a private UTS namespace",
        ));
    }
    if spec.domainname().is_some() && !uts {
        return Err(cfg_err(
            "domainname: unable to set domainname without a private UTS namespace",
        ));
    }
    Ok(())
}

fn check_without_mount_namespace(spec: &Spec, linux: &Linux) -> Result<()> {
    if has_namespace(spec, LinuxNamespaceType::Mount) {
        return Ok(());
    }
    validate_without_mount_namespace(spec, linux)
}

fn check_time_offsets(spec: &Spec, linux: &Linux) -> Result<()> {
    if linux.time_offsets().is_some() && !creates_namespace(spec, LinuxNamespaceType::Time) {
        return Err(cfg_err("linux.timeOffsets: needs a new time namespace"));
    }
    Ok(())
}

fn check_sysctls(spec: &Spec, linux: &Linux) -> Result<()> {
    let user = has_namespace(spec, LinuxNamespaceType::User);
    for key in linux.sysctl().iter().flat_map(|s| s.keys()) {
        validate_sysctl(key, spec, user)?;
    }
    Ok(())
}

fn check_unsupported_fields(_: &Spec, linux: &Linux) -> Result<()> {
    if linux.intel_rdt().is_some() {
        return Err(cfg_err("linux.intelRdt is not supported by gpurun"));
    }
    if linux.memory_policy().is_some() {
        return Err(cfg_err("linux.memoryPolicy is not supported by gpurun"));
    }
    if linux.net_devices().is_some() {
        return Err(cfg_err("linux.netDevices is not supported by gpurun"));
    }
    Ok(())
}

fn check_rootfs_propagation(_: &Spec, linux: &Linux) -> Result<()> {
    let Some(prop) = linux.rootfs_propagation() else {
        return Ok(());
    };
    if !matches!(
        prop.as_str(),
        "" | "private"
            | "rprivate"
            | "slave"
            | "rslave"
            | "shared"
            | "rshared"
            | "unbindable"
            | "runbindable"
    ) {
        return Err(cfg_err(format!(
            "linux.rootfsPropagation {prop:?} is not valid"
        )));
    }
    Ok(())
}

fn check_personality(_: &Spec, linux: &Linux) -> Result<()> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    match linux.personality() {
        Some(p) if !matches!(p.domain(), D::PerLinux | D::PerLinux32) => {
            Err(cfg_err("linux.personality: only LINUX and LINUX32 domains"))
        }
        _ => Ok(()),
    }
}

fn check_mounts(spec: &Spec, _: &Linux) -> Result<()> {
    spec.mounts()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .try_for_each(validate_mount)
}

fn check_devices(_: &Spec, linux: &Linux) -> Result<()> {
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        let p = d.path();
        if !p.is_absolute() || !lexical_clean(p).starts_with("/dev") {
            return Err(cfg_err(format!(
                "linux.devices: path {} must be absolute and under /dev",
                p.display()
            )));
        }
    }
    Ok(())
}

fn validate_mount(m: &oci_spec::runtime::Mount) -> Result<()> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(cfg_err(format!(
            "mounts: destination {} must be an absolute path",
            dest.display()
        )));
    }
    let clean = lexical_clean(dest);
    if clean.starts_with("/proc") && clean != Path::new("/proc") {
        let allowed = PROC_MOUNT_ALLOWED
            .iter()
            .any(|a| clean == Path::new(a) || clean.starts_with(a) && a.ends_with("nvidia"));
        if !allowed {
            return Err(cfg_err(format!(
                "mounts: destination {} is not allowed: mounts under /proc are refused",
                dest.display()
            )));
        }
    }
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(cfg_err(format!(
            "mounts: {} uses idmapped mounts, which gpurun does not support",
            dest.display()
        )));
    }
    Ok(())
}

/// A container without a mount namespace inherits the runtime's, as the spec says, and
/// so shares the host's mount table, which gpurun never changes: what would need a mount
/// is refused by name. What is left runs as runc runs it: device nodes made with mknod
/// in the rootfs, then chroot into it.
pub fn validate_without_mount_namespace(spec: &Spec, linux: &Linux) -> Result<()> {
    let refuse = |what: String| {
        Err(cfg_err(format!(
            "{what} needs a mount namespace: without \"mount\" in linux.namespaces the \
             container shares the host's mount table, which gpurun never changes"
        )))
    };
    if let Some(m) = spec.mounts().as_deref().and_then(|m| m.first()) {
        return refuse(format!("mounts: {}", m.destination().display()));
    }
    if linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty()) {
        return refuse("linux.maskedPaths".into());
    }
    if linux
        .readonly_paths()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return refuse("linux.readonlyPaths".into());
    }
    if let Some(p) = linux
        .rootfs_propagation()
        .as_ref()
        .filter(|p| !p.is_empty())
    {
        return refuse(format!("linux.rootfsPropagation {p:?}"));
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        return refuse("root.readonly".into());
    }
    if spec.process().as_ref().and_then(|p| p.terminal()) == Some(true) {
        return refuse("process.terminal (the console is mounted on /dev/console)".into());
    }
    if has_namespace(spec, LinuxNamespaceType::User) {
        return refuse("a user namespace (its device nodes are bind-mounted from the host)".into());
    }
    Ok(())
}

/// runc's validation: a sysctl may only be set in a namespace the container owns.
fn validate_sysctl(key: &str, spec: &Spec, user: bool) -> Result<()> {
    let created = |t| creates_namespace(spec, t);
    let has = |t| has_namespace(spec, t);
    let ipc = key.starts_with("kernel.msg")
        || key.starts_with("kernel.sem")
        || key.starts_with("kernel.shm")
        || key.starts_with("fs.mqueue.");
    if ipc {
        return if has(LinuxNamespaceType::Ipc) {
            Ok(())
        } else {
            Err(cfg_err(format!(
                "linux.sysctl: {key} needs a private IPC namespace"
            )))
        };
    }
    if key.starts_with("net.") {
        return if has(LinuxNamespaceType::Network) {
            Ok(())
        } else {
            Err(cfg_err(format!(
                "linux.sysctl: {key} needs a private network namespace"
            )))
        };
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Err(cfg_err(format!(
            "linux.sysctl: {key} is not allowed: use the hostname/domainname fields"
        )));
    }
    if key.starts_with("user.") {
        return if user {
            Ok(())
        } else {
            Err(cfg_err(format!(
                "linux.sysctl: {key} needs a user namespace"
            )))
        };
    }
    let _ = created;
    Err(cfg_err(format!(
        "linux.sysctl: {key} is not namespaced and cannot be set from a container"
    )))
}
