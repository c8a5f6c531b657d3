//! Applies CDI specs to a config.json the way the engines do before they call the
//! runtime: containerd 2.x, CRI-O and Podman all go through the CDI library
//! (`tags.cncf.io/container-device-interface`, `pkg/cdi`, as of its 2026-08 tree), so the
//! config.json gpurun receives on those paths is what this module writes.
//!
//! What the library does, and this module repeats:
//! - the devices are resolved by fully-qualified name; the edits of a device's spec are
//!   appended once, the first time one of its devices is named, then the device's own;
//! - env entries replace an existing variable of the same name in place, else append;
//! - each device node is completed from its host node (`hostPath`, else `path`, lstat'd):
//!   type, major:minor when the major is 0, file mode when unset; a node that names its
//!   type and major needs no host node. A node without uid/gid takes the process's uid/gid
//!   when non-zero. It replaces a device at the same path in `linux.devices`, and a
//!   `b`/`c` node appends an allow rule with its permissions (default `rwm`) to
//!   `linux.resources.devices`;
//! - each mount replaces a mount at the same destination and is appended; then every
//!   mount of the spec is stable-sorted by the number of `/` in its cleaned destination;
//! - hooks are appended to their phase's list; `additionalGids` are appended once each,
//!   gid 0 skipped.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{json, Value};

/// `config` edited as the CDI library edits it for `devices`, looked up in `specs`.
pub fn inject(config: &mut Value, specs: &[Value], devices: &[&str]) -> Result<(), String> {
    let mut edits = Edits::default();
    let mut seen: Vec<usize> = Vec::new();
    for name in devices {
        let (kind, dev) = name
            .split_once('=')
            .ok_or_else(|| format!("{name}: not a qualified CDI device name"))?;
        let (s, d) = specs
            .iter()
            .enumerate()
            .find_map(|(i, s)| {
                (s["kind"] == kind).then_some(())?;
                let d = s["devices"].as_array()?.iter().find(|d| d["name"] == dev)?;
                Some((i, d))
            })
            .ok_or_else(|| format!("unresolvable CDI devices {name}"))?;
        if !seen.contains(&s) {
            seen.push(s);
            edits.append(&specs[s]["containerEdits"]);
        }
        edits.append(&d["containerEdits"]);
    }
    edits.apply(config)
}

#[derive(Default)]
struct Edits {
    env: Vec<Value>,
    device_nodes: Vec<Value>,
    hooks: Vec<Value>,
    mounts: Vec<Value>,
    additional_gids: Vec<Value>,
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

impl Edits {
    fn append(&mut self, e: &Value) {
        self.env.extend(list(e, "env"));
        self.device_nodes.extend(list(e, "deviceNodes"));
        self.hooks.extend(list(e, "hooks"));
        self.mounts.extend(list(e, "mounts"));
        self.additional_gids.extend(list(e, "additionalGids"));
    }

    fn apply(self, config: &mut Value) -> Result<(), String> {
        for kv in &self.env {
            set_env(config, kv.as_str().ok_or("env entry is not a string")?);
        }
        for n in &self.device_nodes {
            add_device(config, n)?;
        }
        if !self.mounts.is_empty() {
            for m in &self.mounts {
                add_mount(config, m);
            }
            sort_mounts(config);
        }
        for h in &self.hooks {
            let phase = h["hookName"].as_str().ok_or("hook without hookName")?;
            let mut hook = json!({"path": h["path"]});
            for k in ["args", "env", "timeout"] {
                if !h[k].is_null() {
                    hook[k] = h[k].clone();
                }
            }
            push(&mut config["hooks"][phase], hook);
        }
        for g in &self.additional_gids {
            if g.as_u64() == Some(0) {
                continue;
            }
            let gids = &mut config["process"]["user"]["additionalGids"];
            if !gids.as_array().is_some_and(|a| a.contains(g)) {
                push(gids, g.clone());
            }
        }
        Ok(())
    }
}

fn push(list: &mut Value, v: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut() {
        a.push(v);
    }
}

fn set_env(config: &mut Value, kv: &str) {
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    let env = &mut config["process"]["env"];
    if let Some(slot) = env.as_array_mut().and_then(|a| {
        a.iter_mut()
            .find(|e| e.as_str().and_then(|s| s.split_once('=')).map(|(k, _)| k) == Some(key))
    }) {
        *slot = kv.into();
        return;
    }
    push(env, kv.into());
}

/// `fillMissingInfo`, then the device and its cgroup rule.
fn add_device(config: &mut Value, n: &Value) -> Result<(), String> {
    let path = n["path"].as_str().ok_or("device node without path")?;
    let host = n["hostPath"].as_str().unwrap_or(path);
    let mut typ = n["type"].as_str().unwrap_or("").to_string();
    let mut major = n["major"].as_i64().unwrap_or(0);
    let mut minor = n["minor"].as_i64().unwrap_or(0);
    let mut mode = n["fileMode"].as_u64();
    let minimal = !typ.is_empty() && (major != 0 || typ == "p");
    match std::fs::symlink_metadata(host) {
        Ok(md) => {
            let ft = md.file_type();
            let host_type = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else if ft.is_fifo() {
                "p"
            } else if minimal {
                ""
            } else {
                return Err(format!(
                    "failed to stat CDI host device {host:?}: not a device node"
                ));
            };
            if !host_type.is_empty() {
                mode = mode.or(Some(u64::from(md.permissions().mode() & 0o7777)));
                if !minimal {
                    if typ.is_empty() {
                        typ = host_type.into();
                    }
                    if typ != host_type {
                        return Err(format!(
                            "CDI device ({path:?}, {host:?}), host type mismatch"
                        ));
                    }
                    if major == 0 && typ != "p" {
                        let rdev = md.rdev();
                        major = i64::from(nix::sys::stat::major(rdev) as u32);
                        minor = i64::from(nix::sys::stat::minor(rdev) as u32);
                    }
                }
            }
        }
        Err(e) if !minimal => return Err(format!("failed to stat CDI host device {host:?}: {e}")),
        Err(_) => {}
    }
    let mut dev = json!({"path": path, "type": typ, "major": major, "minor": minor});
    if let Some(m) = mode {
        dev["fileMode"] = m.into();
    }
    for (k, proc_key) in [("uid", "uid"), ("gid", "gid")] {
        let own = &n[k];
        let from_process = config["process"]["user"][proc_key]
            .as_u64()
            .filter(|v| *v > 0);
        if !own.is_null() {
            dev[k] = own.clone();
        } else if let Some(v) = from_process {
            dev[k] = v.into();
        }
    }
    let devices = &mut config["linux"]["devices"];
    if let Some(a) = devices.as_array_mut() {
        a.retain(|d| d["path"] != path);
    }
    push(devices, dev);
    if typ == "b" || typ == "c" {
        let access = match n["permissions"].as_str().unwrap_or("") {
            "" => "rwm",
            "none" => "",
            p => p,
        };
        push(
            &mut config["linux"]["resources"]["devices"],
            json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": access}),
        );
    }
    Ok(())
}

fn add_mount(config: &mut Value, m: &Value) {
    let dest = m["containerPath"].clone();
    let mounts = &mut config["mounts"];
    if let Some(a) = mounts.as_array_mut() {
        a.retain(|x| x["destination"] != dest);
    }
    let mut om = json!({"source": m["hostPath"], "destination": dest});
    for (from, to) in [("options", "options"), ("type", "type")] {
        if !m[from].is_null() {
            om[to] = m[from].clone();
        }
    }
    push(mounts, om);
}

/// Go's `filepath.Clean` is enough here: the destinations are absolute and plain.
fn parts(m: &Value) -> usize {
    let d = m["destination"].as_str().unwrap_or("");
    let clean: Vec<&str> = Path::new(d)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    // `strings.Count(filepath.Clean(dest), "/")`: `/` and `/proc` both count 1.
    clean.len().max(1)
}

fn sort_mounts(config: &mut Value) {
    if let Some(a) = config["mounts"].as_array_mut() {
        a.sort_by_key(parts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdi_applier_edits_as_the_cdi_library_does() {
        // Device nodes fully given (no host node needed), env replaced in place, mounts
        // sorted by depth, gid 0 skipped, a gid once.
        let mut config = json!({
            "process": {"env": ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"], "user": {"uid": 1000, "gid": 1000}},
            "mounts": [{"destination": "/proc"}, {"destination": "/dev/pts"}, {"destination": "/dev"}],
            "linux": {"devices": [{"path": "/dev/x", "type": "c", "major": 1, "minor": 1}]},
        });
        let spec = json!({
            "cdiVersion": "0.7.0",
            "kind": "example.com/dev",
            "containerEdits": {"env": ["NVIDIA_VISIBLE_DEVICES=void", "A=1"], "additionalGids": [0, 44]},
            "devices": [{"name": "d", "containerEdits": {
                "deviceNodes": [{"path": "/dev/x", "type": "c", "major": 195, "minor": 3, "permissions": "rw"}],
                "mounts": [{"hostPath": "/h/lib", "containerPath": "/usr/lib/x/lib.so", "options": ["ro", "bind"]}],
                "additionalGids": [44],
                "hooks": [{"hookName": "createContainer", "path": "/bin/h", "args": ["h", "a"]}],
            }}],
        });
        inject(&mut config, &[spec], &["example.com/dev=d"]).expect("applied");
        assert_eq!(
            config["process"]["env"],
            json!(["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=void", "A=1"])
        );
        assert_eq!(config["process"]["user"]["additionalGids"], json!([44]));
        assert_eq!(
            config["linux"]["devices"],
            json!([{"path": "/dev/x", "type": "c", "major": 195, "minor": 3, "uid": 1000, "gid": 1000}])
        );
        assert_eq!(
            config["linux"]["resources"]["devices"],
            json!([{"allow": true, "type": "c", "major": 195, "minor": 3, "access": "rw"}])
        );
        let dests: Vec<&str> = config["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| m["destination"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(dests, ["/proc", "/dev", "/dev/pts", "/usr/lib/x/lib.so"]);
        assert_eq!(config["hooks"]["createContainer"][0]["path"], "/bin/h");
        let e = inject(&mut config, &[], &["example.com/dev=nope"]).expect_err("unknown device");
        assert!(e.contains("unresolvable"), "{e}");
    }
}
