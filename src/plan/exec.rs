//! The plan for `exec`: a process joining a running container.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::{build, Options, Plan};
use crate::linux::namespaces;
use crate::spec::Bundle;

/// The plan for `exec`: the container's own spec with the exec'd process, every
/// namespace of init joined by path, and nothing that belongs to the container's setup
/// (mounts, devices, masks, sysctls, hostname, hooks, id maps).
pub fn build_exec(
    id: &str,
    container_spec: &oci_spec::runtime::Spec,
    process: oci_spec::runtime::Process,
    init_pid: i32,
    bundle: &Path,
    rootfs: &Path,
    opts: &Options,
) -> Result<Plan> {
    let mut spec = container_spec.clone();
    spec.set_process(Some(process));
    spec.set_mounts(None);
    spec.set_hooks(None);
    spec.set_hostname(None);
    spec.set_domainname(None);
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut joins = Vec::new();
    for ns in crate::spec::namespaces(container_spec) {
        let name = namespaces::proc_name(ns.typ());
        let theirs = PathBuf::from(format!("/proc/{init_pid}/ns/{name}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        // A namespace the container shares with us is not joined (setns into one's own
        // user namespace is EINVAL).
        if std::fs::read_link(&theirs).ok() == std::fs::read_link(&ours).ok() {
            continue;
        }
        let mut j = ns.clone();
        j.set_path(Some(theirs));
        joins.push(j);
    }
    linux.set_namespaces(Some(joins));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_devices(None);
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    linux.set_sysctl(None);
    linux.set_time_offsets(None);
    linux.set_rootfs_propagation(None);
    spec.set_linux(Some(linux));
    let b = Bundle {
        dir: bundle.to_path_buf(),
        spec,
        rootfs: rootfs.to_path_buf(),
    };
    crate::spec::validate_process(&b.spec)?;
    let mut plan = build(id, &b, opts)?;
    let mnt = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    if mnt(&init_pid.to_string()) == mnt("self") {
        plan.exec_root = Some(open_init_root(init_pid)?);
    }
    plan.exec_mode = true;
    plan.make_devices = false;
    plan.session_keyring = None;
    plan.root_readonly = false;
    Ok(plan)
}

fn open_init_root(pid: i32) -> Result<std::os::fd::OwnedFd> {
    let path = PathBuf::from(format!("/proc/{pid}/root"));
    nix::fcntl::open(
        &path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| crate::linux::Error::sys("opening the container's root", "open", &path, e).into())
}
