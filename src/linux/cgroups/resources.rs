//! `linux.resources` written to cgroupfs: memory, cpu, cpuset and pids here; block I/O in
//! `block_io.rs`; hugepages, network, rdma and the `unified` map in `resources_more.rs`.
//!
//! These are written by gpurun itself rather than through cgroups-rs's `FsManager`: the
//! crate takes one base path for every hierarchy (so runc's per-hierarchy relative paths
//! cannot be expressed), decides v1/v2 from a fixed `/sys/fs/cgroup` (so tests cannot use a
//! fake root), ignores the hybrid unified leaf, and the spike measured that the adapter would
//! have to replace most of the rest (devices, cpu.weight, hugetlb, the unified map, paths,
//! stats). What is left is a list of file names and write orders, kept here.

use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::block_io;
use super::convert::{cpu_shares_to_weight, swap_to_v2, v2_limit};
use super::error::CgroupError;
use super::fs;
use super::resources_more;
use super::target::{Place, Target};

/// Creating a cgroup, or `update` on a running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Create,
    Update,
}

/// Applies every field of `r` except `devices`. Returns the warnings for fields that are
/// accepted but not applied.
pub(crate) fn apply(
    t: &Target<'_>,
    r: &LinuxResources,
    phase: Phase,
) -> Result<Vec<String>, CgroupError> {
    let mut warnings = Vec::new();
    if let Some(m) = r.memory() {
        memory(t, m, phase, &mut warnings)?;
    }
    if let Some(c) = r.cpu() {
        cpu(t, c)?;
    }
    if let Some(p) = r.pids() {
        pids(t, p)?;
    }
    if let Some(b) = r.block_io() {
        block_io::block_io(t, b, &mut warnings)?;
    }
    if let Some(h) = r.hugepage_limits() {
        resources_more::hugepages(t, h, &mut warnings)?;
    }
    if let Some(n) = r.network() {
        resources_more::network(t, n)?;
    }
    if let Some(rdma) = r.rdma() {
        resources_more::rdma(t, rdma)?;
    }
    if let Some(u) = r.unified() {
        resources_more::unified(t, u)?;
    }
    Ok(warnings)
}

fn invalid(msg: String) -> CgroupError {
    CgroupError::InvalidResources(msg)
}

fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let text = fs::read(dir, file)?;
    let text = text.trim();
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse().map_err(|_| CgroupError::Parse {
        path: dir.join(file),
        reason: format!("{text:?} is not a number"),
    })
}

fn memory(
    t: &Target<'_>,
    m: &LinuxMemory,
    phase: Phase,
    warnings: &mut Vec<String>,
) -> Result<(), CgroupError> {
    if m.kernel().is_some() {
        warnings.push(
            "linux.resources.memory.kernel not applied: kernel memory limits are deprecated and \
             ignored (as runc does)"
                .to_string(),
        );
    }
    if m.kernel_tcp().is_some() {
        warnings.push(
            "linux.resources.memory.kernelTCP not applied: kernel memory limits are deprecated \
             and ignored (as runc does)"
                .to_string(),
        );
    }
    if m.use_hierarchy() == Some(false) {
        warnings.push(
            "linux.resources.memory.useHierarchy=false not applied: the kernel always uses the \
             hierarchy"
                .to_string(),
        );
    }
    let wanted = m.limit().is_some()
        || m.reservation().is_some()
        || m.swap().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer() == Some(true);
    if !wanted {
        return Ok(());
    }
    let limit = m.limit().unwrap_or(0);
    let check = phase == Phase::Update && m.check_before_update() == Some(true);
    match t.require("memory", "memory")? {
        Place::V1(dir) => {
            if check {
                check_usage(dir, "memory.usage_in_bytes", limit)?;
            }
            memory_v1(dir, m, warnings)
        }
        Place::V2(dir) => {
            if check {
                check_usage(dir, "memory.current", limit)?;
            }
            memory_v2(dir, m, warnings)
        }
    }
}

/// `checkBeforeUpdate`: refuse a limit at or below what the container already uses.
fn check_usage(dir: &Path, usage_file: &str, limit: i64) -> Result<(), CgroupError> {
    if limit <= 0 {
        return Ok(());
    }
    let usage = read_u64(dir, usage_file)?;
    if limit as u64 <= usage {
        return Err(invalid(format!(
            "memory.limit {limit} is not above the current usage {usage} ({}); \
             checkBeforeUpdate refuses it",
            dir.join(usage_file).display()
        )));
    }
    Ok(())
}

fn memory_v1(dir: &Path, m: &LinuxMemory, warnings: &mut Vec<String>) -> Result<(), CgroupError> {
    const LIMIT: &str = "memory.limit_in_bytes";
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    let has_memsw = fs::exists(dir, MEMSW);
    if limit == -1 && swap == 0 && has_memsw {
        swap = -1;
    }
    if swap != 0 && !has_memsw {
        warnings.push(format!(
            "linux.resources.memory.swap not applied: {} does not exist (swap accounting is \
             off in this kernel)",
            dir.join(MEMSW).display()
        ));
        swap = 0;
    }
    // The kernel keeps limit <= memsw at every moment, so which one goes first depends on
    // whether the new memsw is above the current limit.
    if limit != 0 && swap != 0 {
        let current = read_u64(dir, LIMIT)?;
        if swap == -1 || current < swap as u64 {
            fs::write(dir, MEMSW, &swap.to_string())?;
            fs::write(dir, LIMIT, &limit.to_string())?;
        } else {
            fs::write(dir, LIMIT, &limit.to_string())?;
            fs::write(dir, MEMSW, &swap.to_string())?;
        }
    } else {
        if limit != 0 {
            fs::write(dir, LIMIT, &limit.to_string())?;
        }
        if swap != 0 {
            fs::write(dir, MEMSW, &swap.to_string())?;
        }
    }
    if let Some(r) = m.reservation().filter(|&r| r != 0) {
        fs::write(dir, "memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(invalid(format!("memory.swappiness {s} is above 100")));
        }
        fs::write(dir, "memory.swappiness", &s.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        fs::write(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

fn memory_v2(dir: &Path, m: &LinuxMemory, warnings: &mut Vec<String>) -> Result<(), CgroupError> {
    let limit = m.limit().unwrap_or(0);
    let swap = m.swap().unwrap_or(0);
    match swap_to_v2(swap, limit).map_err(invalid)? {
        Some(value) if fs::exists(dir, "memory.swap.max") => {
            fs::write(dir, "memory.swap.max", &value)?;
        }
        Some(_) if m.swap().is_some() => warnings.push(format!(
            "linux.resources.memory.swap not applied: {} does not exist (swap accounting is \
             off in this kernel)",
            dir.join("memory.swap.max").display()
        )),
        _ => {}
    }
    if limit != 0 {
        fs::write(dir, "memory.max", &v2_limit(limit))?;
    }
    if let Some(r) = m.reservation().filter(|&r| r != 0) {
        fs::write(dir, "memory.low", &v2_limit(r))?;
    }
    if m.swappiness().is_some() {
        warnings.push(
            "linux.resources.memory.swappiness not applied: cgroup v2 has no per-cgroup \
             swappiness"
                .to_string(),
        );
    }
    if m.disable_oom_killer() == Some(true) {
        warnings.push(
            "linux.resources.memory.disableOOMKiller not applied: cgroup v2 cannot disable the \
             OOM killer"
                .to_string(),
        );
    }
    Ok(())
}

fn cpu(t: &Target<'_>, c: &LinuxCpu) -> Result<(), CgroupError> {
    let rt =
        c.realtime_runtime().is_some_and(|v| v != 0) || c.realtime_period().is_some_and(|v| v != 0);
    let wanted = c.shares().is_some_and(|s| s != 0)
        || c.quota().is_some_and(|q| q != 0)
        || c.period().is_some_and(|p| p != 0)
        || c.burst().is_some()
        || c.idle().is_some()
        || rt;
    if wanted {
        match t.require("cpu", "cpu")? {
            Place::V1(dir) => cpu_v1(dir, c)?,
            Place::V2(dir) => {
                if rt {
                    return Err(invalid(
                        "cpu.realtimeRuntime and cpu.realtimePeriod are not supported on \
                         cgroup v2"
                            .to_string(),
                    ));
                }
                cpu_v2(dir, c)?;
            }
        }
    }
    let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = c.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_some() || mems.is_some() {
        let (Place::V1(dir) | Place::V2(dir)) = t.require("cpuset", "cpuset")?;
        if let Some(cpus) = cpus {
            fs::write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = mems {
            fs::write(dir, "cpuset.mems", mems)?;
        }
    }
    Ok(())
}

fn cpu_v1(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares().filter(|&s| s != 0) {
        fs::write(dir, "cpu.shares", &s.to_string())?;
    }
    // A smaller period can be refused (EINVAL) while the old quota is in place; then it is
    // written again after the quota.
    let mut period_pending = None;
    if let Some(p) = c.period().filter(|&p| p != 0) {
        match fs::write(dir, "cpu.cfs_period_us", &p.to_string()) {
            Ok(()) => {}
            Err(CgroupError::Write { ref source, .. })
                if source.raw_os_error() == Some(libc::EINVAL)
                    && c.quota().is_some_and(|q| q != 0) =>
            {
                period_pending = Some(p);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(q) = c.quota().filter(|&q| q != 0) {
        fs::write(dir, "cpu.cfs_quota_us", &q.to_string())?;
        if let Some(p) = period_pending {
            fs::write(dir, "cpu.cfs_period_us", &p.to_string())?;
        }
    }
    if let Some(b) = c.burst() {
        fs::write(dir, "cpu.cfs_burst_us", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        fs::write(dir, "cpu.idle", &i.to_string())?;
    }
    if let Some(p) = c.realtime_period().filter(|&p| p != 0) {
        fs::write(dir, "cpu.rt_period_us", &p.to_string())?;
    }
    if let Some(r) = c.realtime_runtime().filter(|&r| r != 0) {
        fs::write(dir, "cpu.rt_runtime_us", &r.to_string())?;
    }
    Ok(())
}

fn cpu_v2(dir: &Path, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(s) = c.shares().filter(|&s| s != 0) {
        fs::write(dir, "cpu.weight", &cpu_shares_to_weight(s).to_string())?;
    }
    let quota = c.quota().filter(|&q| q != 0);
    let period = c.period().filter(|&p| p != 0);
    if quota.is_some() || period.is_some() {
        // cpu.max holds both; a period alone keeps the quota already there.
        let quota = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => fs::read(dir, "cpu.max")?
                .split_whitespace()
                .next()
                .unwrap_or("max")
                .to_string(),
        };
        let value = match period {
            Some(p) => format!("{quota} {p}"),
            None => quota,
        };
        fs::write(dir, "cpu.max", &value)?;
    }
    if let Some(b) = c.burst() {
        fs::write(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        fs::write(dir, "cpu.idle", &i.to_string())?;
    }
    Ok(())
}

fn pids(t: &Target<'_>, p: &LinuxPids) -> Result<(), CgroupError> {
    let (Place::V1(dir) | Place::V2(dir)) = t.require("pids", "pids")?;
    // 0 becomes 1, not "no limit": systemd cannot set 0 either, and runc maps it the same way
    // so both drivers agree.
    let value = match p.limit() {
        l if l > 0 => l.to_string(),
        0 => "1".to_string(),
        _ => "max".to_string(),
    };
    fs::write(dir, "pids.max", &value)
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
