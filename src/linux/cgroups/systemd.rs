//! The systemd cgroup driver (`--systemd-cgroup`): `cgroupsPath` is `slice:prefix:name`,
//! and the container's cgroup is a transient unit that systemd creates over D-Bus.
//!
//! The order, as for runc: before the container is cloned, the path and the limits are
//! checked and systemd is connected to (so an unreachable systemd fails create with
//! nothing made). Once init exists and waits, `StartTransientUnit` creates the scope with
//! init's pid in it (`Delegate=yes`, the limits and `DeviceAllow=` as properties), gpurun
//! waits for the job, and then writes the limits and its device filter into the scope's
//! cgroup with the same cgroupfs code as the cgroupfs driver. v1 hierarchies systemd does
//! not manage get a directory of the same path. Delete kills what is left, stops the unit
//! and resets it if it failed (an OOM kill leaves a scope failed), then removes any
//! directory gpurun made.

use std::path::Path;
use std::time::Duration;

use super::error::CgroupError;
use super::systemd_props::OPTIONAL;
use crate::linux::dbus::{Call, Connection, DbusError, Message, Value};

/// The systemd driver's private D-Bus socket.
pub const SYSTEMD_PRIVATE_SOCKET: &str = "/run/systemd/private";

/// A parsed `slice:prefix:name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemdPath {
    /// The parent slice (`system.slice` when left empty).
    pub slice: String,
    /// The unit the container gets: `<prefix>-<name>.scope`, or `<name>` when `name` is
    /// itself a slice.
    pub unit: String,
}

/// Parses `slice:prefix:name`; an empty path is `system.slice:gpurun:<id>`.
pub fn parse_systemd_path(path: &str, container_id: &str) -> Result<SystemdPath, CgroupError> {
    let invalid = |reason: String| CgroupError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    let (slice, prefix, name) = if path.is_empty() {
        ("", "gpurun", container_id)
    } else {
        let parts: Vec<&str> = path.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(invalid(
                "the systemd cgroup driver expects \"slice:prefix:name\"".to_string(),
            ));
        };
        (slice, prefix, name)
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    check_slice(slice).map_err(&invalid)?;
    if name.is_empty() {
        return Err(invalid("the unit name is empty".to_string()));
    }
    if name.contains('/') || prefix.contains('/') {
        return Err(invalid("unit names cannot contain '/'".to_string()));
    }
    let unit = if name.ends_with(".slice") {
        check_slice(name).map_err(&invalid)?;
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(SystemdPath {
        slice: slice.to_string(),
        unit,
    })
}

/// systemd's slice names: `a-b.slice` is `b` inside `a`, so dashes separate non-empty parts.
fn check_slice(slice: &str) -> Result<(), String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice (it must end in .slice)"));
    };
    if slice == "-.slice" {
        return Ok(());
    }
    if slice.contains('/') {
        return Err(format!("slice {slice:?} cannot contain '/'"));
    }
    if stem.is_empty() || stem.split('-').any(str::is_empty) {
        return Err(format!("slice {slice:?} has an empty part"));
    }
    Ok(())
}

/// The system bus, used when gpurun is not root.
pub use crate::linux::dbus::SYSTEM_BUS_SOCKET;

/// How long gpurun waits for systemd's answer or for a job to finish.
pub const TIMEOUT: Duration = Duration::from_secs(30);

const DEST: &str = "org.freedesktop.systemd1";
const OBJECT: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// A slice's cgroup: `a-b.slice` is `/a.slice/a-b.slice`; `-.slice` is the root.
pub fn slice_path(slice: &str) -> String {
    let Some(stem) = slice.strip_suffix(".slice").filter(|s| *s != "-") else {
        return String::new();
    };
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    out
}

impl SystemdPath {
    /// The unit's cgroup, from the hierarchy's root: a scope sits in its slice; a slice unit
    /// is placed by its own name.
    pub fn cgroup_path(&self) -> String {
        if self.unit.ends_with(".slice") {
            let p = slice_path(&self.unit);
            return if p.is_empty() { "/".to_string() } else { p };
        }
        format!("{}/{}", slice_path(&self.slice), self.unit)
    }
}

fn dbus_err(what: String) -> impl FnOnce(DbusError) -> CgroupError {
    move |source| CgroupError::SystemdCall { what, source }
}

/// Connects to systemd: its private socket as root (no bus daemon needed, as `systemctl`
/// does), else the system bus. systemd sends its signals to every private connection; on
/// the bus gpurun asks for `JobRemoved` with a match rule and `Subscribe`. (`Subscribe` is
/// not sent on the private socket: it is not needed there, and systemd 252 fails it and
/// drops the connection after a `daemon-reload` when no bus daemon runs.)
pub fn connect(private: &Path, bus: &Path) -> Result<Connection, CgroupError> {
    let root = nix::unistd::geteuid().is_root();
    if root && private.exists() {
        return Connection::open(private, false, TIMEOUT)
            .map_err(dbus_err("connecting to systemd".to_string()));
    }
    if !bus.exists() {
        return Err(CgroupError::Systemd(format!(
            "cannot reach systemd over D-Bus: neither {} nor {} exists (PID 1 is not \
             systemd, or /run is not the host's); use the cgroupfs driver (run without \
             --systemd-cgroup)",
            private.display(),
            bus.display()
        )));
    }
    let mut conn = Connection::open(bus, true, TIMEOUT)
        .map_err(dbus_err("connecting to the system bus".to_string()))?;
    conn.call(&Call {
        destination: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
        interface: "org.freedesktop.DBus",
        member: "AddMatch",
        body: &[Value::str(format!(
            "type='signal',sender='{DEST}',path='{OBJECT}',interface='{MANAGER}',member='JobRemoved'"
        ))],
    })
    .map_err(dbus_err("subscribing to systemd's job signals".to_string()))?;
    manager_call(
        &mut conn,
        "Subscribe",
        &[],
        "subscribing to systemd's job signals",
    )?;
    Ok(conn)
}

fn manager_call(
    conn: &mut Connection,
    member: &str,
    body: &[Value],
    what: &str,
) -> Result<Message, CgroupError> {
    conn.call(&Call {
        destination: DEST,
        path: OBJECT,
        interface: MANAGER,
        member,
        body,
    })
    .map_err(dbus_err(what.to_string()))
}

/// Waits for `JobRemoved` of `job`; anything but `done` is an error naming the result.
fn wait_job(conn: &mut Connection, job: &str, what: &str) -> Result<(), CgroupError> {
    let m = conn
        .wait_signal(&format!("systemd to finish {what}"), |m| {
            m.member.as_deref() == Some("JobRemoved")
                && m.values()
                    .ok()
                    .and_then(|v| v.get(1).and_then(|p| p.as_str().map(|p| p == job)))
                    .unwrap_or(false)
        })
        .map_err(dbus_err(what.to_string()))?;
    let result = m
        .values()
        .ok()
        .and_then(|v| v.get(3).and_then(|r| r.as_str().map(str::to_string)))
        .unwrap_or_default();
    if result != "done" {
        return Err(CgroupError::Systemd(format!(
            "{what}: systemd's job {job} ended with {result:?}"
        )));
    }
    Ok(())
}

fn is(e: &CgroupError, name: &str) -> bool {
    matches!(e, CgroupError::SystemdCall { source, .. } if source.remote_name() == Some(name))
}

/// Starts the transient unit with `props` and waits until systemd has started it. A unit of
/// that name left failed by an earlier container is reset and the start tried once more.
pub fn start_unit(conn: &mut Connection, unit: &str, props: Vec<Value>) -> Result<(), CgroupError> {
    let what = format!("starting unit {unit}");
    let mut props = props;
    let mut reset = false;
    let reply = loop {
        let body = [
            Value::str(unit),
            Value::str("replace"),
            Value::Array("(sv)".into(), props.clone()),
            Value::Array("(sa(sv))".into(), vec![]),
        ];
        match manager_call(conn, "StartTransientUnit", &body, &what) {
            Err(e) if !reset && is(&e, "org.freedesktop.systemd1.UnitExists") => {
                reset = true;
                let _ = manager_call(conn, "ResetFailedUnit", &body[..1], &what);
            }
            Err(e) if is(&e, "org.freedesktop.DBus.Error.PropertyReadOnly") => {
                let Some(name) = refused_optional(&e, &props) else {
                    return Err(e);
                };
                props.retain(|p| prop_name(p) != Some(name.as_str()));
            }
            other => break other?,
        }
    };
    let job = reply
        .first_str()
        .ok_or_else(|| CgroupError::Systemd(format!("{what}: systemd answered without a job")))?;
    wait_job(conn, &job, &what)
}

fn prop_name(p: &Value) -> Option<&str> {
    match p {
        Value::Struct(f) => f.first().and_then(Value::as_str),
        _ => None,
    }
}

/// The optional property (one of [`OPTIONAL`] still in `props`) that systemd's
/// "Cannot set property X, or unknown property." names.
fn refused_optional(e: &CgroupError, props: &[Value]) -> Option<String> {
    let CgroupError::SystemdCall {
        source: DbusError::Remote { message, .. },
        ..
    } = e
    else {
        return None;
    };
    OPTIONAL
        .iter()
        .find(|name| {
            message.contains(&format!("property {name},"))
                && props.iter().any(|p| prop_name(p) == Some(**name))
        })
        .map(|n| n.to_string())
}

/// Stops the unit and waits for it; a unit systemd no longer knows is already stopped. A
/// unit left failed is reset, so its name can be used again.
pub fn stop_unit(conn: &mut Connection, unit: &str) -> Result<(), CgroupError> {
    let what = format!("stopping unit {unit}");
    let body = [Value::str(unit), Value::str("replace")];
    let stopped = match manager_call(conn, "StopUnit", &body, &what) {
        Err(e) if is(&e, "org.freedesktop.systemd1.NoSuchUnit") => Ok(()),
        Err(e) => Err(e),
        Ok(reply) => match reply.first_str() {
            Some(job) => wait_job(conn, &job, &what),
            None => Ok(()),
        },
    };
    let _ = manager_call(conn, "ResetFailedUnit", &body[..1], &what);
    stopped
}

/// Changes properties of the running unit (`update`), for this boot only.
pub fn set_properties(
    conn: &mut Connection,
    unit: &str,
    props: Vec<Value>,
) -> Result<(), CgroupError> {
    if props.is_empty() {
        return Ok(());
    }
    let body = [
        Value::str(unit),
        Value::Bool(true),
        Value::Array("(sv)".into(), props),
    ];
    manager_call(
        conn,
        "SetUnitProperties",
        &body,
        &format!("setting properties of unit {unit}"),
    )
    .map(|_| ())
}

#[cfg(test)]
#[path = "systemd_tests.rs"]
mod conversation;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_prefix_name_becomes_a_scope_in_the_slice() {
        let p = parse_systemd_path("kubepods-besteffort.slice:cri-containerd:abc", "id")
            .expect("valid form");
        assert_eq!(p.slice, "kubepods-besteffort.slice");
        assert_eq!(p.unit, "cri-containerd-abc.scope");
    }

    #[test]
    fn empty_slice_is_system_slice_and_empty_path_uses_the_id() {
        let p = parse_systemd_path(":docker:abc", "id").expect("valid form");
        assert_eq!(
            (p.slice.as_str(), p.unit.as_str()),
            ("system.slice", "docker-abc.scope")
        );
        let p = parse_systemd_path("", "ctr").expect("valid form");
        assert_eq!(p.unit, "gpurun-ctr.scope");
    }

    #[test]
    fn a_name_ending_in_slice_is_a_slice_unit() {
        let p = parse_systemd_path("machine.slice::inner.slice", "id").expect("valid form");
        assert_eq!(p.unit, "inner.slice");
    }

    #[test]
    fn malformed_forms_are_rejected() {
        for bad in [
            "/a/b",
            "a.slice:b",
            "a.slice:b:c:d",
            "notaslice:p:n",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            "a.slice:p:",
            "a.slice:p:x/y",
        ] {
            let err = parse_systemd_path(bad, "id").expect_err(bad);
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }
}
