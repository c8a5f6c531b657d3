//! Hostile bundles (root): each is refused with a clear error, or confined to the
//! container. Symlinked rootfs components, `..` in mount destinations, device entries with
//! host majors, relative hook paths, numbers out of range, NUL bytes, invalid UTF-8 and
//! nesting deep enough to overflow a recursive parser. The config-only cases are data:
//! `tests/fixtures/hostile/config/*.json`, each a merge patch over `gpurun spec`'s
//! defaults and the substrings the error must contain.

mod common;
mod reliability;

use std::path::{Path, PathBuf};

use common::*;
use reliability::*;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile")
}

/// RFC 7386 merge patch: objects merge, everything else replaces, null removes.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// `run` must fail with every substring of `expect` in its error, no panic, and leave no
/// state directory, cgroup or process.
fn assert_refused(rt: &Runtime, b: &Bundle, id: &str, parent: &str, expect: &[String]) {
    let out = rt.run(b, id);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{id}: {err}\n{}", stdout(&out));
    assert!(!panicked(&err), "{id}: {err}");
    for e in expect {
        assert!(err.contains(e.as_str()), "{id}: {e:?} not in: {err}");
    }
    assert!(!rt.root.path().join(id).exists(), "{id}: state left");
    let cgroups: Vec<PathBuf> = cgroup_children(parent)
        .into_iter()
        .filter(|p| p.ends_with(id))
        .collect();
    assert!(cgroups.is_empty(), "{id}: cgroups left: {cgroups:?}");
    assert!(processes_with(id).is_empty(), "{id}: processes left");
}

#[test]
fn hostile_config_values_are_refused_with_a_clear_error() {
    if skip("hostile_config_values_are_refused_with_a_clear_error") {
        return;
    }
    let parent = CgroupParent::new("hostile-config");
    let rt = Runtime::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join("config"))
        .expect("fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "{cases:?}");
    for case in &cases {
        let name = case
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let fixture: Value =
            serde_json::from_slice(&std::fs::read(case).expect("read fixture")).expect("json");
        let id = id(&name);
        let mut b = Bundle::sh("echo this container must not run");
        b.config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
        merge(&mut b.config, &fixture["patch"]);
        let expect: Vec<String> = fixture["expect"]
            .as_array()
            .expect("expect")
            .iter()
            .map(|e| e.as_str().expect("string").to_string())
            .collect();
        assert_refused(&rt, &b, &id, &parent, &expect);
    }
}

#[test]
fn invalid_utf8_in_config_json_is_refused_by_name() {
    if skip("invalid_utf8_in_config_json_is_refused_by_name") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("echo never");
    b.write();
    let path = b.path().join("config.json");
    let text = std::fs::read(&path).expect("config");
    let needle = b"echo never";
    let at = text
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the script is in config.json");
    let mut bad = text.clone();
    bad[at] = 0xff;
    std::fs::write(&path, &bad).expect("write");
    let id = id("utf8");
    rt.track(&id);
    let out = rt
        .cmd()
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&id)
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("parsing {}", path.display())),
        "{err}"
    );
    assert!(
        !panicked(&err) && !rt.root.path().join(&id).exists(),
        "{err}"
    );
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    if skip("deeply_nested_json_is_refused_without_overflowing_the_stack") {
        return;
    }
    let rt = Runtime::new();
    let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    // (where, what, what the error must say). A typed field refuses the first level; a
    // field gpurun does not know is skipped (serde_json skips without recursing): either
    // way the parser never runs out of stack.
    let cases = [
        ("/annotations", arrays(100_000), Some("invalid type")),
        ("/process/env", arrays(100_000), Some("invalid type")),
        ("/x-unknown", arrays(100_000), None),
        ("/process/x-unknown", objects(1_000_000), None),
        ("/linux/seccomp/x-unknown", arrays(129), None),
    ];
    for (pointer, nested, expect) in cases {
        let mut b = Bundle::sh("echo never");
        b.config["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"});
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        b.config
            .pointer_mut(if parent.is_empty() { "" } else { parent })
            .expect("parent object")[key] = json!("@NESTED@");
        b.write();
        let path = b.path().join("config.json");
        let text = std::fs::read_to_string(&path)
            .expect("config")
            .replace("\"@NESTED@\"", &nested);
        std::fs::write(&path, text).expect("write");
        let id = id(&format!("nested{}", pointer.replace('/', "-")));
        rt.track(&id);
        let out = rt
            .cmd()
            .args(["run", "-b"])
            .arg(b.path())
            .arg(&id)
            .output()
            .expect("run");
        let err = stderr(&out);
        // A stack overflow would be SIGSEGV/SIGABRT, not an exit status.
        match expect {
            Some(expect) => {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{pointer}: {:?} {err}",
                    out.status
                );
                assert!(err.contains(expect), "{pointer}: {err}");
                assert!(
                    err.contains(&path.display().to_string()),
                    "{pointer}: {err}"
                );
            }
            None => {
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{pointer}: {:?} {err}",
                    out.status
                );
                assert_eq!(stdout(&out), "never\n", "{pointer}");
            }
        }
    }
}

/// A directory outside the rootfs, with one file in it, and a check that nothing was
/// created in it.
struct HostDir(PathBuf);

impl HostDir {
    fn new(name: &str) -> HostDir {
        let p = std::env::temp_dir().join(format!("gpurun-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir host dir");
        std::fs::write(p.join("keep"), "host").expect("write");
        HostDir(p)
    }

    fn assert_untouched(&self, what: &str) {
        let mut entries: Vec<String> = std::fs::read_dir(&self.0)
            .expect("host dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            ["keep"],
            "{what}: the container wrote to {}",
            self.0.display()
        );
        assert_eq!(
            std::fs::read_to_string(self.0.join("keep")).expect("keep"),
            "host"
        );
        assert!(
            mounts_under(&[&self.0]).is_empty(),
            "{what}: a mount on the host dir"
        );
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn symlinked_rootfs_components_resolve_inside_the_rootfs() {
    if skip("symlinked_rootfs_components_resolve_inside_the_rootfs") {
        return;
    }
    let rt = Runtime::new();
    let host = HostDir::new("symlink");
    let script = "echo inside > /abs/written; echo inside > /rel/written; \
                  cat /abs/written /rel/written; \
                  grep -c ' {host}/mnt ' /proc/self/mountinfo";
    // Absolute and relative symlinks in the rootfs naming the host directory, whose path
    // also exists inside the rootfs: mount targets and writes through them land there.
    let mut b = Bundle::own_rootfs(&script.replace("{host}", &host.0.display().to_string()));
    let rootfs = b.rootfs();
    let inside = rootfs.join(host.0.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(&inside).expect("mkdir in rootfs");
    std::os::unix::fs::symlink(&host.0, rootfs.join("abs")).expect("symlink");
    let up = "../".repeat(20);
    std::os::unix::fs::symlink(format!("{up}{}", host.0.display()), rootfs.join("rel"))
        .expect("symlink");
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/abs/mnt", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(json!({"destination": "/rel/mnt", "type": "tmpfs", "source": "tmpfs"}));
    let out = rt.run(&b, &id("symlinks"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "inside\ninside\n2\n",
        "both tmpfs at the in-root path"
    );
    host.assert_untouched("mounts and writes through symlinks");
    assert!(inside.join("written").exists(), "{}", inside.display());
    assert!(inside.join("mnt").is_dir(), "{}", inside.display());

    // The same symlink when its target does not exist in the rootfs: refused, by name,
    // and nothing is made on the host.
    let mut b = Bundle::own_rootfs("echo never");
    std::os::unix::fs::symlink(&host.0, b.rootfs().join("abs")).expect("symlink");
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": "/abs/mnt", "type": "tmpfs", "source": "tmpfs"}));
    let id_dangling = id("symlink-dangling");
    let out = rt.run(&b, &id_dangling);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/abs/mnt") && !panicked(&err), "{err}");
    assert!(!rt.root.path().join(&id_dangling).exists());
    host.assert_untouched("a dangling symlink as a mount target");

    // /dev itself a symlink to the host directory: the device nodes never reach the host.
    let host_dev = HostDir::new("dev");
    let mut b = Bundle::own_rootfs("ls /dev/null /dev/zero >/dev/null && echo devices");
    let rootfs = b.rootfs();
    std::fs::remove_dir(rootfs.join("dev")).expect("rmdir dev");
    std::os::unix::fs::symlink(&host_dev.0, rootfs.join("dev")).expect("symlink");
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
    let out = rt.run(&b, &id("dev-symlink"));
    assert!(!panicked(&stderr(&out)), "{}", stderr(&out));
    if out.status.success() {
        assert_eq!(stdout(&out), "devices\n");
    }
    host_dev.assert_untouched("/dev through a symlink");

    // A symlink loop as a mount target: a clear error naming it.
    let mut b = Bundle::own_rootfs("echo never");
    std::os::unix::fs::symlink("loop", b.rootfs().join("loop")).expect("symlink");
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": "/loop/x", "type": "tmpfs", "source": "tmpfs"}));
    let id = id("loop");
    let out = rt.run(&b, &id);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/loop/x") && !panicked(&err), "{err}");
    assert!(!rt.root.path().join(&id).exists());
}

#[test]
fn dotdot_in_mount_destinations_stays_inside_the_container() {
    if skip("dotdot_in_mount_destinations_stays_inside_the_container") {
        return;
    }
    let rt = Runtime::new();
    let host = HostDir::new("dotdot");
    let h = host.0.display().to_string();
    // `..` that climbs above the root stops at the container's root: both land at the
    // host directory's path inside the rootfs.
    for (case, dest) in [
        ("above-root", format!("/../../..{h}/./mnt")),
        ("through-tmp", format!("/tmp/../../../..{h}/mnt")),
    ] {
        let mut b = Bundle::own_rootfs(&format!(
            "echo inside > {h}/mnt/file && cat {h}/mnt/file && grep -c ' {h}/mnt ' /proc/self/mountinfo"
        ));
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        let out = rt.run(&b, &id(&format!("dotdot-{case}")));
        assert_eq!(out.status.code(), Some(0), "{case}: {}", stderr(&out));
        assert_eq!(stdout(&out), "inside\n1\n", "{case}");
        assert!(
            b.rootfs().join(&h[1..]).join("mnt").is_dir(),
            "{case}: the mount point is in the rootfs"
        );
        host.assert_untouched(&format!("{case}: {dest}"));
    }
    // `..` inside the part of the path still to be created: resolved by the kernel inside
    // the root like any other component, so it lands at the cleaned path in the rootfs.
    let dest = format!("{h}/new/../new/mnt");
    let b = Bundle::own_rootfs(&format!("grep -c ' {h}/new/mnt ' /proc/self/mountinfo"));
    let mut b = b;
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
    let out = rt.run(&b, &id("dotdot-new"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n");
    assert!(b.rootfs().join(&h[1..]).join("new/mnt").is_dir());
    host.assert_untouched("a destination with `..` in its new part");
}

#[test]
fn a_device_with_a_host_major_is_made_only_in_the_container_and_denied_unless_allowed() {
    if skip("a_device_with_a_host_major_is_made_only_in_the_container_and_denied_unless_allowed") {
        return;
    }
    let rt = Runtime::new();
    let host_sda = Path::new("/dev/sda");
    let host_had = host_sda.exists();
    let script = "ls -l /dev/sda | cut -c1; head -c1 /dev/sda >/dev/null 2>/tmp/e; cat /tmp/e";
    let sda = json!([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 0o660}]);

    // Listed, not allowed: the node exists, opening it is EPERM.
    let mut b = Bundle::sh(script);
    b.config["linux"]["devices"] = sda.clone();
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    let out = rt.run(&b, &id("sda-denied"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("b\n"), "{text}");
    assert!(
        text.contains("Operation not permitted"),
        "the cgroup let it open: {text}"
    );

    // Listed and allowed read-only by a rule: the cgroup no longer stands in the way
    // (no such disk here: ENXIO; a real one reads).
    b.config["linux"]["resources"]["devices"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"}));
    let out = rt.run(&b, &id("sda-allowed"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("b\n"), "{text}");
    assert!(!text.contains("Operation not permitted"), "{text}");
    assert_eq!(host_sda.exists(), host_had, "a node was made on the host");
}
