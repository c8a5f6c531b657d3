//! Load a bundle's `config.json` and validate it. Everything unsupported is rejected here,
//! by name, before anything is created.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

mod error;
mod validate;

pub use error::Error;
use error::Result;
pub use validate::{validate, validate_process, validate_without_mount_namespace};

pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute root filesystem path.
    pub rootfs: PathBuf,
}

/// The bundle, and a warning for each part of its config that was left out.
pub fn load(bundle: &Path) -> Result<(Bundle, Vec<String>)> {
    let dir = lexical_clean(&if bundle.is_absolute() {
        bundle.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolving bundle against", ".", e))?
            .join(bundle)
    });
    let cfg = dir.join("config.json");
    let data = std::fs::read(&cfg).map_err(|e| Error::io("reading", &cfg, e))?;
    let (spec, warnings) = parse_config(&data).map_err(|source| Error::Parse {
        path: cfg.clone(),
        source,
    })?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::Config("root: missing".into()))?;
    let rootfs = lexical_clean(&dir.join(root.path()));
    let md = std::fs::metadata(&rootfs).map_err(|e| Error::io("root.path", &rootfs, e))?;
    if !md.is_dir() {
        return Err(Error::Config(format!(
            "root.path {} is not a directory",
            rootfs.display()
        )));
    }
    validate(&spec)?;
    Ok((Bundle { dir, spec, rootfs }, warnings))
}

/// The typed parse first: it skips unknown fields without recursing into them, so a
/// deeply nested extension cannot exhaust the stack. Only a config it refuses is read
/// again as a tree, to drop unknown capability names.
fn parse_config(data: &[u8]) -> serde_json::Result<(Spec, Vec<String>)> {
    let first = match serde_json::from_slice::<Spec>(data) {
        Ok(spec) => return Ok((spec, Vec::new())),
        Err(e) => e,
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Err(first);
    };
    let warnings = match value.get_mut("process") {
        Some(p) => drop_unknown_capabilities(p),
        None => Vec::new(),
    };
    if warnings.is_empty() {
        return Err(first);
    }
    Ok((serde_json::from_value(value)?, warnings))
}

/// Runtime-spec 1.1: a capability name the runtime does not know is logged and ignored,
/// not an error. oci-spec refuses such names while parsing, so they are taken out of a
/// `process` object first (config.json's, or `exec --process`'s).
pub fn drop_unknown_capabilities(process: &mut serde_json::Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(sets) = process
        .get_mut("capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return warnings;
    };
    for (set, names) in sets.iter_mut() {
        let Some(names) = names.as_array_mut() else {
            continue;
        };
        names.retain(|n| {
            // Anything but a string is a malformed config, which parsing reports.
            let known = !n.is_string()
                || serde_json::from_value::<oci_spec::runtime::Capability>(n.clone()).is_ok();
            if !known {
                warnings.push(format!(
                    "process.capabilities.{set}: unknown capability {n}; ignored"
                ));
            }
            known
        });
    }
    warnings
}

/// `a/./b/../c` → `a/c` without touching the filesystem.
pub fn lexical_clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("/");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

pub fn has_namespace(spec: &Spec, t: LinuxNamespaceType) -> bool {
    namespaces(spec).iter().any(|n| n.typ() == t)
}

/// A namespace of this type that the container creates (listed, without a path).
pub fn creates_namespace(spec: &Spec, t: LinuxNamespaceType) -> bool {
    namespaces(spec)
        .iter()
        .any(|n| n.typ() == t && n.path().is_none())
}

pub fn namespaces(spec: &Spec) -> &[oci_spec::runtime::LinuxNamespace] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_from(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("spec")
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "uts"}]}
        })
    }

    fn err_of(v: serde_json::Value) -> String {
        validate(&spec_from(v))
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn unknown_capability_names_are_dropped_with_a_warning_and_the_rest_parses() {
        let mut v = base();
        v["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_KILL", "CAP_NOT_A_CAPABILITY"],
            "ambient": ["CAP_NOT_A_CAPABILITY"]
        });
        let w = drop_unknown_capabilities(&mut v["process"]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("CAP_NOT_A_CAPABILITY"), "{w:?}");
        let spec = spec_from(v);
        let caps = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("caps");
        assert_eq!(caps.bounding().as_ref().map(|b| b.len()), Some(1));
        assert_eq!(caps.ambient().as_ref().map(|b| b.len()), Some(0));
    }

    #[test]
    fn base_spec_is_valid() {
        validate(&spec_from(base())).expect("valid");
    }

    #[test]
    fn empty_args_and_relative_cwd_are_rejected() {
        let mut v = base();
        v["process"]["args"] = serde_json::json!([]);
        assert!(err_of(v).contains("process.args"));
        let mut v = base();
        v["process"]["cwd"] = "rel".into();
        assert!(err_of(v).contains("process.cwd"));
    }

    #[test]
    fn hostname_needs_uts() {
        let mut v = base();
        v["hostname"] = "h".into();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
        assert!(err_of(v).contains("private UTS namespace"));
    }

    #[test]
    fn sysctls_are_checked_against_namespaces() {
        let mut v = base();
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        assert!(err_of(v).contains("private network namespace"));
        let mut v = base();
        v["linux"]["sysctl"] = serde_json::json!({"kernel.panic": "1"});
        assert!(err_of(v).contains("not namespaced"));
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "ipc"}]);
        v["linux"]["sysctl"] = serde_json::json!({"kernel.shmmax": "1000"});
        validate(&spec_from(v)).expect("ipc sysctl with ipc ns");
    }

    #[test]
    fn mounts_under_proc_are_refused_except_the_allow_list() {
        let mut v = base();
        v["mounts"] = serde_json::json!([{"destination": "/proc/sys/kernel", "type": "bind", "source": "/tmp"}]);
        assert!(err_of(v).contains("under /proc are refused"));
        let mut v = base();
        v["mounts"] = serde_json::json!([{"destination": "/proc/driver/nvidia/params", "type": "bind", "source": "/tmp/p"}]);
        validate(&spec_from(v)).expect("nvidia procfs is allowed");
        let mut v = base();
        v["mounts"] = serde_json::json!([{"destination": "/proc/driver", "type": "bind", "source": "/tmp/p"}]);
        validate(&spec_from(v)).expect("/proc/driver itself is allowed");
        let mut v = base();
        v["mounts"] = serde_json::json!([{"destination": "/proc/driver/rtc", "type": "bind", "source": "/tmp/p"}]);
        assert!(err_of(v).contains("under /proc are refused"));
        let mut v = base();
        v["mounts"] = serde_json::json!([{"destination": "/proc/../proc/kcore", "type": "bind", "source": "/tmp/p"}]);
        assert!(err_of(v).contains("refused"));
    }

    #[test]
    fn without_a_mount_namespace_what_needs_a_mount_is_refused_by_name() {
        let bare = || {
            let mut v = base();
            v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
            v
        };
        validate(&spec_from(bare())).expect("nothing to mount: runs");
        let cases: [(&str, serde_json::Value, &str); 7] = [
            (
                "/mounts",
                serde_json::json!([{"destination": "/proc", "type": "proc"}]),
                "mounts: /proc",
            ),
            (
                "/linux/maskedPaths",
                serde_json::json!(["/proc/kcore"]),
                "linux.maskedPaths",
            ),
            (
                "/linux/readonlyPaths",
                serde_json::json!(["/proc/sys"]),
                "linux.readonlyPaths",
            ),
            (
                "/linux/rootfsPropagation",
                "rshared".into(),
                "linux.rootfsPropagation \"rshared\"",
            ),
            ("/root/readonly", true.into(), "root.readonly"),
            ("/process/terminal", true.into(), "process.terminal"),
            (
                "/linux/namespaces",
                serde_json::json!([{"type": "user"}]),
                "a user namespace",
            ),
        ];
        for (field, value, named) in cases {
            let mut v = bare();
            let (parent, key) = field.rsplit_once('/').expect("a JSON pointer");
            v.pointer_mut(parent)
                .and_then(|o| o.as_object_mut())
                .expect("an object")
                .insert(key.into(), value);
            if field == "/linux/namespaces" {
                v["linux"]["uidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
                v["linux"]["gidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
            }
            let err = err_of(v);
            assert!(err.contains(named), "{field}: {err}");
            assert!(err.contains("needs a mount namespace"), "{field}: {err}");
        }
        let mut v = bare();
        v["linux"]["rootfsPropagation"] = "".into();
        v["mounts"] = serde_json::json!([]);
        validate(&spec_from(v)).expect("an empty propagation and no mounts need nothing");
    }

    #[test]
    fn user_namespace_needs_maps() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "user"}]);
        assert!(err_of(v).contains("needs both mappings"));
    }

    #[test]
    fn duplicate_rlimits_and_namespaces_are_rejected() {
        let mut v = base();
        v["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
            {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}]);
        assert!(err_of(v).contains("duplicate"));
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "mount"}]);
        assert!(err_of(v).contains("listed twice"));
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut v = base();
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
        assert!(err_of(v).contains("linux.intelRdt"));
    }

    #[test]
    fn lexical_clean_never_climbs_above_root() {
        assert_eq!(lexical_clean(Path::new("/a/../../b")), PathBuf::from("/b"));
        assert_eq!(
            lexical_clean(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
