//! [`Cgroup`] under the systemd driver: what happens before clone, when init exists, on
//! `update` and on delete. The D-Bus side is in `systemd.rs`, the properties in
//! `systemd_props.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::devices::DevicePolicy;
use super::error::CgroupError;
use super::path::{self, Placement};
use super::resources::{self, Phase};
use super::root::Layout;
use super::systemd::{self, SystemdPath, SYSTEMD_PRIVATE_SOCKET, SYSTEM_BUS_SOCKET};
use super::systemd_props::{device_properties, resource_properties, unit_properties};
use super::{fs, Cgroup, CgroupConfig, CgroupRoot, CgroupState, Driver};
use crate::linux::dbus::{Connection, Value};

/// What the systemd driver holds between create (before clone) and [`Cgroup::add_task`]
/// with init's pid: the open connection and everything already checked.
pub(super) struct Pending {
    conn: Connection,
    path: SystemdPath,
    container_id: String,
    resources: LinuxResources,
    policy: DevicePolicy,
    /// Limits and devices as unit properties.
    props: Vec<Value>,
    placement: Placement,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("unit", &self.path.unit)
            .finish_non_exhaustive()
    }
}

/// The state of a systemd-driven container's cgroup, from the unit's path: recorded before
/// the unit exists, so a create killed at any point leaves what delete needs.
fn state_for(
    root: &CgroupRoot,
    sd: &SystemdPath,
    id: &str,
) -> Result<(CgroupState, Placement), CgroupError> {
    let placement = path::resolve(root, Some(&sd.cgroup_path()), id)?;
    let mut v1 = BTreeMap::new();
    for v in &placement.v1 {
        for c in &v.controllers {
            v1.insert(c.clone(), v.leaf.clone());
        }
    }
    let st = CgroupState {
        driver: Driver::Systemd,
        layout: placement.layout,
        v1,
        unified: placement.unified.as_ref().map(|u| u.leaf.clone()),
        unified_mount: placement.unified.as_ref().map(|u| u.mountpoint.clone()),
        created: Vec::new(),
        unit: Some(sd.unit.clone()),
    };
    Ok((st, placement))
}

/// [`state_for`] for `cgroups_path`, for the state saved before anything is made.
pub fn planned_state(root: &CgroupRoot, cgroups_path: &str, id: &str) -> Option<CgroupState> {
    let sd = systemd::parse_systemd_path(cgroups_path, id).ok()?;
    state_for(root, &sd, id).ok().map(|(st, _)| st)
}

fn connect() -> Result<Connection, CgroupError> {
    systemd::connect(
        Path::new(SYSTEMD_PRIVATE_SOCKET),
        Path::new(SYSTEM_BUS_SOCKET),
    )
}

impl Cgroup {
    /// Before clone: checks the path, the limits and the device rules, and connects to
    /// systemd. Nothing exists yet; [`Cgroup::add_task`] with init's pid creates the unit.
    pub(super) fn create_systemd(
        cfg: &CgroupConfig<'_>,
    ) -> Result<(Cgroup, Vec<String>), CgroupError> {
        let sd = systemd::parse_systemd_path(cfg.cgroups_path.unwrap_or(""), cfg.container_id)?;
        let r = cfg.resources.cloned().unwrap_or_default();
        let policy = DevicePolicy::from_rules(r.devices().as_deref().unwrap_or_default())?;
        let layout = cfg.root.layout();
        super::precheck(layout, &r)?;
        let mut props = resource_properties(layout, &r)?;
        let mut warnings = Vec::new();
        let devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
        let unsaid = match device_properties(&policy, &devices) {
            Ok(p) => {
                props.extend(p);
                // Deny rules under a default of allow: systemd keeps no deny-list.
                (policy.default_allow && !policy.exceptions.is_empty())
                    .then(|| "systemd keeps no deny rules".to_string())
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = unsaid {
            if layout != Layout::Unified {
                // v1 has one device list per cgroup, and systemd rewrites it to "allow
                // everything" on a daemon-reload when its unit has no strict list.
                return Err(CgroupError::InvalidResources(format!(
                    "linux.resources.devices cannot be given to systemd for {} ({reason}), \
                     and on cgroup v1 a systemd daemon-reload would then allow every device; \
                     use allow rules systemd can express or the cgroupfs driver",
                    sd.unit
                )));
            }
            warnings.push(format!(
                "the device rules are not all given to systemd for {} ({reason}); gpurun's \
                 own device filter enforces them",
                sd.unit
            ));
        }
        let (st, placement) = state_for(cfg.root, &sd, cfg.container_id)?;
        let conn = connect()?;
        let pending = Pending {
            conn,
            path: sd,
            container_id: cfg.container_id.to_string(),
            resources: r,
            policy,
            props,
            placement,
        };
        Ok((
            Cgroup {
                st,
                pending: Some(Box::new(pending)),
            },
            warnings,
        ))
    }

    /// With init waiting: creates the unit with init in it, waits for systemd, then makes
    /// the directories systemd does not manage, moves init into them, and writes the limits
    /// and the device filter. The connection is closed when this returns.
    pub(super) fn attach_systemd(
        &mut self,
        p: Pending,
        pid: i32,
    ) -> Result<Vec<String>, CgroupError> {
        let Pending {
            mut conn,
            path,
            container_id,
            resources: r,
            policy,
            props,
            placement,
        } = p;
        let mut all = unit_properties(&path.slice, &path.unit, &container_id, pid);
        all.extend(props);
        systemd::start_unit(&mut conn, &path.unit, all)?;
        drop(conn);
        for v in &placement.v1 {
            let created = fs::mkdir_all(&v.mountpoint, &v.leaf)?;
            self.st.created.extend(created);
            if v.controllers.iter().any(|c| c == "cpuset") {
                super::init_cpuset(&v.mountpoint, &v.leaf)?;
            }
        }
        if let Some(u) = &placement.unified {
            let created = fs::mkdir_all(&u.mountpoint, &u.leaf)?;
            self.st.created.extend(created);
            super::enable_controllers(
                &u.mountpoint,
                &u.leaf,
                &super::wanted_v2(placement.layout, &r),
            )?;
        }
        // systemd put init into the unit's cgroup; the other hierarchies get it here.
        for dir in self.st.dirs() {
            fs::add_proc(dir, pid)?;
        }
        let warnings = resources::apply(&self.target()?, &r, Phase::Create)?;
        self.apply_devices(&policy)?;
        Ok(warnings)
    }

    /// `update` under the systemd driver: the unit's properties first, so a later
    /// `daemon-reload` keeps the new limits.
    pub(super) fn update_unit(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let Some(unit) = self.st.unit.as_deref() else {
            return Ok(());
        };
        let props = resource_properties(self.st.layout, r)?;
        if props.is_empty() {
            return Ok(());
        }
        systemd::set_properties(&mut connect()?, unit, props)
    }

    /// Delete under the systemd driver, after everything in the cgroup was killed: stops
    /// the unit. A systemd that cannot be reached has nothing of the container to stop.
    pub(super) fn stop_unit(&self) -> Result<(), CgroupError> {
        let Some(unit) = self.st.unit.as_deref() else {
            return Ok(());
        };
        match connect() {
            Ok(mut conn) => systemd::stop_unit(&mut conn, unit),
            Err(CgroupError::Systemd(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
