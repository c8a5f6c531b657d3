//! `gpurun features` (the runtime-spec features document) and `gpurun spec` (the default
//! config.json). `features` claims only what works: `null` would mean "unknown".

use serde_json::{json, Value};

pub const OCI_VERSION_MIN: &str = "1.0.0";
pub const OCI_VERSION_MAX: &str = "1.2.1";

pub fn json() -> String {
    serde_json::to_string_pretty(&features()).unwrap_or_else(|_| "{}".into())
}

pub fn features() -> Value {
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": crate::linux::rootfs::known_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            "seccomp": serde_json::to_value(crate::linux::seccomp::features()).unwrap_or(Value::Null),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
            "netDevices": {"enabled": false}
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "dev.gpurun.version": env!("CARGO_PKG_VERSION")
        }
    })
}

fn default_caps() -> Value {
    json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
}

/// runc's example spec, with the same defaults a person expects from `runc spec`.
pub fn default_spec(rootless: bool) -> Value {
    let mut v = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": default_caps(), "effective": default_caps(), "permitted": default_caps()
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "gpurun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if rootless {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        v["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}]);
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        v["linux"].as_object_mut().map(|l| l.remove("resources"));
        if let Some(m) = v["mounts"].as_array_mut() {
            m.retain(|x| x["destination"] != "/sys/fs/cgroup");
            for x in m.iter_mut() {
                if x["destination"] == "/sys" {
                    *x = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_has_the_required_fields_and_no_unknowns() {
        let f = features();
        assert_eq!(f["ociVersionMin"], OCI_VERSION_MIN);
        assert_eq!(f["ociVersionMax"], OCI_VERSION_MAX);
        assert!(f["linux"]["namespaces"]
            .as_array()
            .is_some_and(|a| a.len() == 8));
        assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], false);
    }

    #[test]
    fn default_spec_is_a_valid_spec() {
        for rootless in [false, true] {
            let v = default_spec(rootless);
            let s: oci_spec::runtime::Spec = serde_json::from_value(v).expect("parses");
            crate::spec::validate(&s).expect("validates");
        }
    }
}
