//! Mount flags as the container sees them in `/proc/self/mountinfo` (root): bind mounts
//! with their options (a remount sets exactly what it names), read-only paths, masked
//! directories, and the GPU driver files, which must stay read-only, nosuid, nodev and
//! private however they are mounted. Each case runs twice: with the new mount API
//! (`open_tree`, `move_mount`, `mount_setattr`) and, through a `failpoints` build with
//! `GPURUN_FAILPOINT=classic-mounts`, with the classic `mount(2)` path that kernels
//! without it take.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
mod reliability;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};

use gpurun::gpu::fake::{LIB_DIR, VERSION};

/// `cmd` run by `unshare -m --propagation shared`: in a mount namespace of its own where
/// every mount is shared, so a bind that is not made private shows `master:` (the
/// container's root is made a slave), which this host's private mounts would hide.
fn in_shared_ns(cmd: &Command) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "shared"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// The two ways gpurun mounts.
#[derive(Clone, Copy, Debug)]
enum Way {
    MountApi,
    Classic,
}

const WAYS: [Way; 2] = [Way::MountApi, Way::Classic];

/// `gpurun --root <rt>`, the classic way through the `failpoints` build.
fn gpurun(rt: &Runtime, way: Way) -> Command {
    match way {
        Way::MountApi => rt.cmd(),
        Way::Classic => {
            let mut c = Command::new(reliability::failpoints_binary());
            c.arg("--root").arg(rt.root.path());
            c.env("GPURUN_FAILPOINT", "classic-mounts");
            c
        }
    }
}

fn run_ok(b: &Bundle, name: &str, way: Way) -> String {
    let rt = Runtime::new();
    b.write();
    let id = id(&format!("{name}-{way:?}").to_lowercase());
    rt.track(&id);
    let mut cmd = gpurun(&rt, way);
    cmd.args(["run", "-b"]).arg(b.path()).arg(&id);
    let out = in_shared_ns(&cmd).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{way:?}: stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `mountpoint options optional-fields...` for each mount at one of `points`, as the
/// container's shell prints them.
fn mountinfo_of(points: &[&str]) -> String {
    let cond: Vec<String> = points.iter().map(|p| format!("$5 == \"{p}\"")).collect();
    format!(
        "awk '{} {{ o=\"\"; for (i=7; $i != \"-\"; i++) o=o \" \" $i; \
         print \"M\", $5, $6 o }}' /proc/self/mountinfo; ",
        cond.join(" || ")
    )
}

/// The per-mount options and optional fields of the last mount at `point`.
fn flags_at<'a>(out: &'a str, point: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .rfind(|l| l.starts_with(&format!("M {point} ")))
        .unwrap_or_else(|| panic!("no mount at {point} in:\n{out}"));
    let mut fields = line.split_whitespace().skip(2);
    let mut v: Vec<&str> = fields.next().unwrap_or("").split(',').collect();
    v.extend(fields);
    v
}

#[test]
fn bind_mounts_get_exactly_their_options() {
    if skip("bind_mounts_get_exactly_their_options") {
        return;
    }
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("f"), "from-host").unwrap();
    let script = format!(
        "{}cat /b/f; echo; touch /b/new 2>&1; touch /a/new && echo a-writable",
        mountinfo_of(&["/a", "/b", "/c"])
    );
    let mut b = Bundle::own_rootfs(&script);
    let rootfs = b.rootfs();
    std::fs::create_dir(rootfs.join("a")).unwrap();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    // /a: nosuid, nodev and noexec. /b binds the mount at /a (seen through the rootfs's
    // host path, before pivot_root) with `ro` alone: a remount sets exactly what it names,
    // so /b is read-only and no longer nosuid, nodev or noexec. /c changes the atime mode.
    mounts.push(serde_json::json!({"destination": "/a", "type": "bind",
        "source": vol.path(), "options": ["rbind", "nosuid", "nodev", "noexec"]}));
    mounts.push(serde_json::json!({"destination": "/b", "type": "bind",
        "source": rootfs.join("a"), "options": ["rbind", "ro"]}));
    mounts.push(serde_json::json!({"destination": "/c", "type": "bind",
        "source": vol.path(), "options": ["bind", "ro", "noatime", "rprivate"]}));
    for way in WAYS {
        let out = run_ok(&b, "bindflags", way);
        let a = flags_at(&out, "/a");
        for f in ["rw", "nosuid", "nodev", "noexec"] {
            assert!(a.contains(&f), "/a lacks {f}: {a:?}");
        }
        let bf = flags_at(&out, "/b");
        assert!(bf.contains(&"ro"), "{bf:?}");
        for f in ["nosuid", "nodev", "noexec"] {
            assert!(
                !bf.contains(&f),
                "/b keeps {f} its remount did not name: {bf:?}"
            );
        }
        let c = flags_at(&out, "/c");
        assert!(c.contains(&"ro") && c.contains(&"noatime"), "{c:?}");
        assert!(
            !c.iter()
                .any(|f| f.starts_with("shared:") || f.starts_with("master:")),
            "rprivate: {c:?}"
        );
        assert!(out.contains("from-host\n"), "{out}");
        assert!(
            out.contains("touch: /b/new: Read-only file system"),
            "a read-only bind must refuse writes: {out}"
        );
        assert!(out.contains("a-writable"), "{out}");
    }
}

#[test]
fn readonly_paths_are_read_only_nosuid_nodev_noexec() {
    if skip("readonly_paths_are_read_only_nosuid_nodev_noexec") {
        return;
    }
    let script = format!(
        "{}{{ echo 1 > /proc/sys/kernel/domainname; }} 2>&1; true",
        mountinfo_of(&["/proc/sys", "/proc/bus"])
    );
    for way in WAYS {
        let out = run_ok(&Bundle::sh(&script), "rofl", way);
        for p in ["/proc/sys", "/proc/bus"] {
            let f = flags_at(&out, p);
            for want in ["ro", "nosuid", "nodev", "noexec"] {
                assert!(f.contains(&want), "{p} lacks {want}: {f:?}");
            }
        }
        assert!(out.contains("Read-only file system"), "{out}");
    }
}

#[test]
fn masked_directories_are_empty_read_only_and_masked_files_read_empty() {
    if skip("masked_directories_are_empty_read_only_and_masked_files_read_empty") {
        return;
    }
    let script = format!(
        "{}ls -A /m1 /m2 | grep -c secret; touch /m1/x 2>&1; touch /m2/x 2>&1; \
         echo \"file=[$(cat /mf)]\"",
        mountinfo_of(&["/m1", "/m2"])
    );
    let mut b = Bundle::own_rootfs(&script);
    let rootfs = b.rootfs();
    for d in ["m1", "m2"] {
        std::fs::create_dir(rootfs.join(d)).unwrap();
        std::fs::write(rootfs.join(d).join("secret"), "s").unwrap();
    }
    std::fs::write(rootfs.join("mf"), "secret").unwrap();
    b.config["linux"]["maskedPaths"] = serde_json::json!(["/m1", "/mf", "/m2", "/missing"]);
    for way in WAYS {
        let text = run_ok(&b, "masks", way);
        assert!(
            text.lines().any(|l| l == "0"),
            "the masked directories show nothing: {text}"
        );
        for p in ["/m1", "/m2"] {
            let f = flags_at(&text, p);
            for want in ["ro", "nosuid", "nodev", "noexec"] {
                assert!(f.contains(&want), "{p} lacks {want}: {f:?}");
            }
        }
        assert_eq!(text.matches("Read-only file system").count(), 2, "{text}");
        assert!(text.contains("file=[]"), "{text}");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("m1/secret")).unwrap(),
            "s"
        );
    }
}

/// A node with the fake driver and a config pointing at it.
/// The fake GPU node of the GPU tests, driven through either mount path.
trait RunBothWays {
    fn run_way(&self, rt: &Runtime, b: &Bundle, id: &str, way: Way) -> std::process::Output;
}

impl RunBothWays for gpu_node::Node {
    fn run_way(&self, rt: &Runtime, b: &Bundle, id: &str, way: Way) -> std::process::Output {
        b.write();
        rt.track(id);
        let mut cmd = gpurun(rt, way);
        cmd.env("GPURUN_CONFIG", &self.config)
            .args(["run", "-b"])
            .arg(b.path())
            .arg(id);
        in_shared_ns(&cmd).output().unwrap()
    }
}

/// GPU 0 granted to a busybox rootfs shaped by `shape` (it creates the library
/// directories), running `script`.
fn gpu_bundle(script: &str, shape: fn(&Path)) -> Bundle {
    let mut b = Bundle::own_rootfs(script);
    shape(&b.rootfs());
    b.config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("NVIDIA_VISIBLE_DEVICES=0".into());
    b
}

#[test]
fn injected_driver_files_are_read_only_nosuid_nodev_private_and_readable() {
    if skip("injected_driver_files_are_read_only_nosuid_nodev_private_and_readable") {
        return;
    }
    let node = gpu_node::Node::new(true);
    let rt = Runtime::new();
    // Debian-like, RHEL-like and musl images: the library lands where each one's loader
    // looks, as a readable ELF file that cannot be written.
    fn deb(r: &Path) {
        std::fs::create_dir_all(r.join(LIB_DIR)).unwrap();
    }
    fn rhel(r: &Path) {
        std::fs::create_dir_all(r.join("usr/lib64")).unwrap();
    }
    fn musl(r: &Path) {
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("lib")).unwrap();
        std::fs::write(r.join("lib/ld-musl-x86_64.so.1"), "").unwrap();
    }
    type Shape = (&'static str, &'static str, fn(&Path));
    let shapes: [Shape; 3] = [
        ("deb", LIB_DIR, deb),
        ("rhel", "usr/lib64", rhel),
        ("musl", "usr/lib", musl),
    ];
    let cases = WAYS
        .into_iter()
        .flat_map(|w| shapes.into_iter().map(move |(n, d, f)| (n, d, f, w)));
    for (name, dir, shape, way) in cases {
        let name = format!("{name}-{way:?}").to_lowercase();
        let lib = format!("/{dir}/libcuda.so.1");
        let real = format!("/{dir}/libcuda.so.{VERSION}");
        let script = format!(
            "{}head -c 4 {lib} | od -An -c | tr -d ' '; {{ echo x > {lib}; }} 2>&1; \
             {{ echo x > {real}; }} 2>&1; true",
            mountinfo_of(&[&lib, &real, "/usr/bin/nvidia-smi"])
        );
        let b = gpu_bundle(&script, shape);
        let out = node.run_way(&rt, &b, &id(&format!("gpumnt-{name}")), way);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {text}\n{}",
            stderr(&out)
        );
        assert!(
            text.contains("177ELF"),
            "{name}: {lib} is not readable: {text}"
        );
        for p in [lib.as_str(), real.as_str(), "/usr/bin/nvidia-smi"] {
            let f = flags_at(&text, p);
            for want in ["ro", "nosuid", "nodev"] {
                assert!(f.contains(&want), "{name}: {p} lacks {want}: {f:?}");
            }
            assert!(
                !f.iter()
                    .any(|x| x.starts_with("shared:") || x.starts_with("master:")),
                "{name}: {p} must be private: {f:?}"
            );
        }
        assert_eq!(
            text.matches("Read-only file system").count(),
            2,
            "{name}: {text}"
        );
        let target = b.rootfs().join(dir).join("libcuda.so.1");
        assert_eq!(
            std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0),
            0,
            "{name}: nothing is written into the image's file"
        );
    }
}

#[test]
fn the_cgroup_mount_shows_the_containers_own_cgroup_with_and_without_a_namespace() {
    if skip("the_cgroup_mount_shows_the_containers_own_cgroup_with_and_without_a_namespace") {
        return;
    }
    for (way, (name, cgroupns)) in WAYS
        .into_iter()
        .flat_map(|w| [(w, ("cgns", true)), (w, ("nocgns", false))])
    {
        let mut b = Bundle::sh(
            "cat /sys/fs/cgroup/pids/pids.max; ls /sys/fs/cgroup | grep -c .; \
             { touch /sys/fs/cgroup/x; } 2>&1; true",
        );
        b.config["linux"]["resources"]["pids"] = serde_json::json!({"limit": 42});
        b.config["linux"]["cgroupsPath"] =
            format!("/gpurun-test-{}/{name}", std::process::id()).into();
        if !cgroupns {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "cgroup");
        }
        let out = run_ok(&b, name, way);
        assert!(out.starts_with("42\n"), "{name}: {out}");
        assert!(out.contains("Read-only file system"), "{name}: {out}");
        let hierarchies = out.lines().nth(1).unwrap().parse::<usize>().unwrap();
        assert!(hierarchies >= 2, "{name}: {out}");
    }
}
