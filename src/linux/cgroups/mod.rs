//! The container's cgroup: v2, or v1 hierarchies plus a unified leaf on hybrid hosts.
//!
//! The runtime enters through [`ContainerCgroup`] (`container.rs`) and stores its
//! [`StoredCgroup`] record (`record.rs`, versioned) in the state file. Below that face:
//! [`Cgroup`] here, the manager both build on; `path`/`root` resolve where it lives;
//! `resources` (with `block_io`, `resources_more`, over `target`), `devices`/`ebpf`,
//! `freezer`, `oom`, `stats` write and read it; `systemd*` drive it through systemd;
//! `fs`, `convert` and `error` serve all. Imports between these files go one way, from
//! the face down to `fs`/`error`, never back.
//!
//! [`Cgroup::create`] makes every directory, writes `linux.resources` and the device rules,
//! all before any process joins; the runtime then calls [`Cgroup::add_task`] with the
//! container's first process. Layouts (see runtime-spec/cgroups.md):
//!
//! - **v2** (`/sys/fs/cgroup` is cgroup2): one directory; controllers enabled in the parents'
//!   `cgroup.subtree_control`; devices by gpurun's eBPF program.
//! - **hybrid** (v1 controllers plus cgroup2 at `/sys/fs/cgroup/unified`), runc's layout: a
//!   directory in every v1 hierarchy for resources, devices and the freezer, plus a unified
//!   leaf for what exists only there (hugetlb on some hosts, `cgroup.kill`).
//! - **v1**: a directory in every v1 hierarchy.

mod block_io;
mod container;
mod convert;
mod devices;
mod ebpf;
mod error;
mod freezer;
mod fs;
mod oom;
mod path;
mod record;
mod resources;
mod resources_more;
mod root;
mod stats;
mod systemd;
mod systemd_cgroup;
mod systemd_props;
mod target;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};
use serde::{Deserialize, Serialize};

// The runtime's face: a container's cgroup, made from its spec and rebuilt from the record
// its state file keeps.
pub use container::{device_rules, ContainerCgroup};
pub use error::CgroupError;
pub use oom::OomWatch;
pub use record::{StoredCgroup, RECORD_VERSION};

// Below the face, for `doctor`'s checks and the integration tests that drive a cgroup
// directly.
pub use devices::{default_device_rules, DevKind, DevicePolicy};
pub use ebpf::{
    apply_device_filter_v2, attach_device_filter, detach_device_programs, device_program_ids,
};
pub use path::resolve;
pub use root::{CgroupRoot, Layout};

use path::Placement;
use resources::Phase;
use target::Target;

/// The cgroup driver.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// gpurun writes cgroupfs itself.
    Cgroupfs,
    /// systemd owns the cgroup: a transient unit created over D-Bus (`--systemd-cgroup`).
    Systemd,
}

/// Everything needed to find a container's cgroup again (kept in the runtime's state file).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CgroupState {
    pub driver: Driver,
    pub layout: Layout,
    /// v1 controller (`memory`, `name=systemd`, ...) → the container's directory in the
    /// hierarchy holding it. Co-mounted controllers share one directory.
    pub v1: BTreeMap<String, PathBuf>,
    /// The container's cgroup2 directory: the cgroup itself on a v2 host, the unified leaf
    /// on a hybrid host.
    pub unified: Option<PathBuf>,
    /// Mount point of the cgroup2 hierarchy holding `unified`.
    pub unified_mount: Option<PathBuf>,
    /// Every directory gpurun created, parents before children. `destroy` removes the
    /// container's directories whoever created them, and of their parents only these.
    pub created: Vec<PathBuf>,
    /// The systemd unit holding the cgroup (systemd driver only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl CgroupState {
    /// Every directory of the container's cgroup, each once.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for dir in self
            .v1
            .values()
            .map(PathBuf::as_path)
            .chain(self.unified.as_deref())
        {
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        out
    }

    /// The path errors name: the cgroup2 directory, else the first v1 directory.
    pub fn shown_path(&self) -> PathBuf {
        self.unified
            .clone()
            .or_else(|| self.v1.values().next().cloned())
            .unwrap_or_default()
    }
}

/// What [`Cgroup::create`] needs.
pub struct CgroupConfig<'a> {
    /// `linux.cgroupsPath`; `None` or empty means the container id, relative.
    pub cgroups_path: Option<&'a str>,
    pub container_id: &'a str,
    pub resources: Option<&'a LinuxResources>,
    /// `--systemd-cgroup`: `cgroups_path` is `slice:prefix:name`.
    pub systemd: bool,
    pub root: &'a CgroupRoot,
}

/// A container's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    st: CgroupState,
    /// systemd driver: the unit still to be created once init's pid is known.
    pending: Option<Box<systemd_cgroup::Pending>>,
}

/// v2 controllers gpurun enables for a container on a v2 host, where present (runc enables
/// every available one, so `update` can set any of them later).
const V2_CONTROLLERS: &[&str] = &[
    "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
];

impl Cgroup {
    /// Creates the container's cgroup with its resources and device rules; no process is in
    /// it yet. Returns warnings for fields accepted but not applied. On error, every
    /// directory it created is removed again.
    pub fn create(cfg: &CgroupConfig<'_>) -> Result<(Cgroup, Vec<String>), CgroupError> {
        if cfg.systemd {
            return Cgroup::create_systemd(cfg);
        }
        let placement = path::resolve(cfg.root, cfg.cgroups_path, cfg.container_id)?;
        let none = LinuxResources::default();
        let r = cfg.resources.unwrap_or(&none);
        // Everything that can be checked without directories is checked first, so a bad
        // config leaves nothing behind.
        let policy = DevicePolicy::from_rules(r.devices().as_deref().unwrap_or_default())?;
        precheck(placement.layout, r)?;

        let mut cg = Cgroup {
            st: CgroupState {
                driver: Driver::Cgroupfs,
                layout: placement.layout,
                v1: BTreeMap::new(),
                unified: None,
                unified_mount: None,
                created: Vec::new(),
                unit: None,
            },
            pending: None,
        };
        match cg.build(&placement, r, &policy) {
            Ok(warnings) => Ok((cg, warnings)),
            Err(e) => {
                fs::remove_created(&cg.st.created);
                Err(e)
            }
        }
    }

    fn build(
        &mut self,
        placement: &Placement,
        r: &LinuxResources,
        policy: &DevicePolicy,
    ) -> Result<Vec<String>, CgroupError> {
        for v in &placement.v1 {
            let created = fs::mkdir_all(&v.mountpoint, &v.leaf)?;
            self.st.created.extend(created);
            for c in &v.controllers {
                self.st.v1.insert(c.clone(), v.leaf.clone());
            }
            if v.controllers.iter().any(|c| c == "cpuset") {
                init_cpuset(&v.mountpoint, &v.leaf)?;
            }
        }
        if let Some(u) = &placement.unified {
            let created = fs::mkdir_all(&u.mountpoint, &u.leaf)?;
            self.st.created.extend(created);
            self.st.unified = Some(u.leaf.clone());
            self.st.unified_mount = Some(u.mountpoint.clone());
            enable_controllers(&u.mountpoint, &u.leaf, &wanted_v2(placement.layout, r))?;
        }
        for dir in self.st.dirs() {
            let count = fs::procs(dir)?.len();
            if count > 0 {
                return Err(CgroupError::NotEmpty {
                    path: dir.to_path_buf(),
                    count,
                });
            }
        }
        let target = self.target()?;
        let warnings = resources::apply(&target, r, Phase::Create)?;
        self.apply_devices(policy)?;
        Ok(warnings)
    }

    fn target(&self) -> Result<Target<'_>, CgroupError> {
        Target::new(self.st.layout, &self.st.v1, self.st.unified.as_deref())
    }

    fn apply_devices(&self, policy: &DevicePolicy) -> Result<(), CgroupError> {
        match self.st.layout {
            Layout::Unified => {
                let dir = self
                    .st
                    .unified
                    .as_deref()
                    .ok_or_else(|| self.missing("devices"))?;
                ebpf::apply_policy_v2(dir, policy)
            }
            Layout::Hybrid | Layout::Legacy => {
                // Without the devices controller the container could open any device node.
                let dir = self
                    .st
                    .v1
                    .get("devices")
                    .ok_or_else(|| self.missing("devices"))?;
                for (file, line) in policy.v1_writes() {
                    fs::write(dir, file, &line)?;
                }
                Ok(())
            }
        }
    }

    fn missing(&self, controller: &str) -> CgroupError {
        CgroupError::MissingController {
            controller: controller.to_string(),
            path: self.st.shown_path(),
        }
    }

    pub fn from_state(st: &CgroupState) -> Cgroup {
        Cgroup {
            st: st.clone(),
            pending: None,
        }
    }

    pub fn state(&self) -> CgroupState {
        self.st.clone()
    }

    /// Moves `pid` into every directory of the cgroup, the unified leaf included.
    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.st.dirs() {
            fs::add_proc(dir, pid)?;
        }
        Ok(())
    }

    /// Puts the container's first process in the cgroup. Under the systemd driver this
    /// creates the unit and writes the limits; it returns warnings for fields accepted but
    /// not applied.
    pub fn add_init(&mut self, pid: i32) -> Result<Vec<String>, CgroupError> {
        match self.pending.take() {
            Some(p) => self.attach_systemd(*p, pid),
            None => self.add_task(pid).map(|()| Vec::new()),
        }
    }

    /// Every process in the cgroup and the cgroups below it.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        pids_of(&self.st)
    }

    /// Sends `sig` to every process. SIGKILL goes through `cgroup.kill` where the kernel has
    /// it; otherwise the cgroup is frozen, each process signalled, and the cgroup thawed.
    pub fn signal_all(&self, sig: Signal) -> Result<(), CgroupError> {
        freezer::signal_all(&self.st, sig)
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        freezer::freeze(&self.st)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        freezer::thaw(&self.st)
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        freezer::is_frozen(&self.st)
    }

    /// Applies new resources to the running container. Device rules are left untouched, as
    /// `runc update` leaves them (a device plugin may have added some). Only the fields given
    /// are written; the caller merges with the container's current resources.
    pub fn update(&self, r: &LinuxResources) -> Result<Vec<String>, CgroupError> {
        precheck(self.st.layout, r)?;
        if self.st.driver == Driver::Systemd {
            self.update_unit(r)?;
        }
        if let (Some(mount), Some(leaf)) = (&self.st.unified_mount, &self.st.unified) {
            enable_controllers(mount, leaf, &wanted_v2(self.st.layout, r))?;
        }
        resources::apply(&self.target()?, r, Phase::Update)
    }

    /// runc's `events --stats` data: `{cpu, cpuset, memory, pids, blkio, hugetlb}`.
    pub fn stats(&self) -> Result<serde_json::Value, CgroupError> {
        let main = self.st.shown_path();
        if !main.is_dir() {
            return Err(CgroupError::Read {
                path: main,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(stats::stats(&self.st))
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_events(&self) -> Result<u64, CgroupError> {
        let (dir, file) = match (self.st.layout, self.st.v1.get("memory")) {
            (Layout::Unified, _) => (
                self.st
                    .unified
                    .as_deref()
                    .ok_or_else(|| self.missing("memory"))?,
                "memory.events",
            ),
            (_, Some(dir)) => (dir.as_path(), "memory.oom_control"),
            (_, None) => return Err(self.missing("memory")),
        };
        Ok(fs::keyed(&fs::read(dir, file)?, "oom_kill").unwrap_or(0))
    }

    /// Puts `rules` in force with gpurun's eBPF program on the cgroup2 directory: on a v2
    /// host that is what `create` already does; on a hybrid host it adds the filter to the
    /// unified leaf, beside the v1 devices controller.
    pub fn apply_unified_device_filter(
        &self,
        rules: &[LinuxDeviceCgroup],
    ) -> Result<(), CgroupError> {
        let dir = self
            .st
            .unified
            .as_deref()
            .ok_or_else(|| self.missing("cgroup2"))?;
        apply_device_filter_v2(dir, rules)
    }

    /// Kills what is left (freeze, SIGKILL, thaw, wait until empty), removes the container's
    /// directories with any cgroups below them, then the parents gpurun created that are now
    /// empty. Removing what is already gone is not an error.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        freezer::kill_all_and_wait(&self.st)?;
        // systemd removes the unit's own cgroup when the unit stops.
        if self.st.driver == Driver::Systemd {
            // Everything in it is dead, so the directories can go even if systemd cannot be
            // asked to stop the unit now (it collects an empty scope by itself): a delete
            // must not be refused because systemd is unwell.
            if let Err(e) = self.stop_unit() {
                crate::log::warn(&format!("{e}; removing the cgroup directories anyway"));
            }
        }
        for dir in self.st.dirs() {
            fs::rmdir_tree(dir)?;
        }
        let leaves = self.st.dirs();
        for dir in self.st.created.iter().rev() {
            if leaves.contains(&dir.as_path()) {
                continue;
            }
            // Another container may have made a sibling under the same parent since.
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::EBUSY | libc::ENOTEMPTY)
                    ) => {}
                Err(source) => {
                    return Err(CgroupError::Rmdir {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn pids_of(st: &CgroupState) -> Result<Vec<i32>, CgroupError> {
    let dir = match st.layout {
        Layout::Unified => st.unified.as_deref(),
        Layout::Hybrid | Layout::Legacy => [
            "freezer",
            "devices",
            "pids",
            "memory",
            "cpu",
            "name=systemd",
        ]
        .iter()
        .find_map(|c| st.v1.get(*c))
        .or_else(|| st.v1.values().next())
        .map(PathBuf::as_path)
        .or(st.unified.as_deref()),
    };
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let mut pids = fs::procs_recursive(dir)?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Checks that need no directory.
fn precheck(layout: Layout, r: &LinuxResources) -> Result<(), CgroupError> {
    let invalid = CgroupError::InvalidResources;
    if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
        if layout == Layout::Legacy {
            return Err(invalid(
                "linux.resources.unified needs cgroup v2, and this host has only cgroup v1".into(),
            ));
        }
        for key in u.keys() {
            resources_more::unified_key_controller(key)?;
        }
    }
    if layout == Layout::Unified {
        if let Some(c) = r.cpu() {
            if c.realtime_runtime().is_some_and(|v| v != 0)
                || c.realtime_period().is_some_and(|v| v != 0)
            {
                return Err(invalid(
                    "cpu.realtimeRuntime and cpu.realtimePeriod are not supported on cgroup v2"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// The v2 controllers to enable for the leaf: on a v2 host every one present; on a hybrid
/// host only what the resources need from the unified hierarchy.
fn wanted_v2(layout: Layout, r: &LinuxResources) -> Vec<String> {
    match layout {
        Layout::Unified => V2_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
        Layout::Hybrid | Layout::Legacy => {
            let mut out = Vec::new();
            if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
                out.push("hugetlb".to_string());
            }
            for key in r.unified().iter().flat_map(|u| u.keys()) {
                if let Some((c, _)) = key.split_once('.') {
                    if c != "cgroup" && !out.iter().any(|o| o == c) {
                        out.push(c.to_string());
                    }
                }
            }
            out
        }
    }
}

/// Enables `wanted` controllers, where the kernel offers them, in `cgroup.subtree_control`
/// of every directory from the mount point down to the leaf's parent. A controller that
/// cannot be enabled is reported later, by the resource that needs it.
fn enable_controllers(
    mountpoint: &Path,
    leaf: &Path,
    wanted: &[String],
) -> Result<(), CgroupError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(parent) = leaf.parent() else {
        return Ok(());
    };
    let Ok(rel) = parent.strip_prefix(mountpoint) else {
        return Ok(());
    };
    let mut dir = mountpoint.to_path_buf();
    let mut chain = vec![dir.clone()];
    for part in rel.components() {
        dir.push(part);
        chain.push(dir.clone());
    }
    for dir in chain {
        let available = fs::read(&dir, "cgroup.controllers")?;
        let enabled = fs::read(&dir, "cgroup.subtree_control")?;
        for c in wanted {
            let offered = available.split_whitespace().any(|a| a == c);
            let on = enabled.split_whitespace().any(|e| e == c);
            if offered && !on {
                let _ = fs::write(&dir, "cgroup.subtree_control", &format!("+{c}"));
            }
        }
    }
    Ok(())
}

/// A new v1 cpuset starts with no CPUs and no memory nodes, and a task cannot join it until
/// it has both: copy them down from the parent, top to bottom.
fn init_cpuset(mountpoint: &Path, leaf: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = leaf.strip_prefix(mountpoint) else {
        return Ok(());
    };
    let mut parent = mountpoint.to_path_buf();
    for part in rel.components() {
        let dir = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if fs::read(&dir, file)?.trim().is_empty() {
                let value = fs::read(&parent, file)?;
                fs::write(&dir, file, value.trim())?;
            }
        }
        parent = dir;
    }
    Ok(())
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
