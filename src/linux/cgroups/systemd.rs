//! The systemd cgroup driver (`--systemd-cgroup`): `cgroupsPath` is `slice:prefix:name`,
//! and the container's cgroup is a transient scope unit that systemd creates over D-Bus.
//!
//! gpurun parses and validates the form, then reports that systemd cannot be reached: the
//! D-Bus transient-scope implementation is not written yet (see runtime-spec/cgroups.md).

use std::path::Path;

use super::error::CgroupError;

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

/// The systemd driver: validates the path, then fails with the reason it cannot go on.
pub(crate) fn create(cgroups_path: &str, container_id: &str) -> Result<SystemdPath, CgroupError> {
    let parsed = parse_systemd_path(cgroups_path, container_id)?;
    let reason = if Path::new(SYSTEMD_PRIVATE_SOCKET).exists() {
        "creating transient scope units over D-Bus is not implemented in this gpurun build"
    } else {
        "the socket does not exist (PID 1 is not systemd, or /run/systemd is not visible)"
    };
    Err(CgroupError::Systemd(format!(
        "cannot reach systemd over D-Bus at {SYSTEMD_PRIVATE_SOCKET} to create {} in {}: \
         {reason}; use the cgroupfs driver (run without --systemd-cgroup)",
        parsed.unit, parsed.slice
    )))
}

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

    #[test]
    fn the_driver_reports_that_systemd_is_unreachable() {
        let err = create("system.slice:gpurun:abc", "abc").expect_err("no systemd driver");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "systemd cgroup driver: cannot reach systemd over D-Bus at /run/systemd/private"
            ),
            "{msg}"
        );
        assert!(msg.contains("gpurun-abc.scope"), "{msg}");
    }
}
