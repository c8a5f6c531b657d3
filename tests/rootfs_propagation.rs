//! Mount propagation between the host and the container (root): a volume bound `rslave`
//! receives what the host mounts under its source after the container exists (Kubernetes'
//! `HostToContainer`); with `rootfsPropagation: rshared` (or `shared`) a volume bound
//! `rshared` also sends what the container mounts under it back to the host
//! (`Bidirectional`). Nothing else the container has ever reaches the host: its `/proc`,
//! `/dev`, masks, read-only paths, GPU files and `/proc/driver/nvidia` view, whether the
//! rootfs is a plain directory or a mount of its own, with pivot_root or `--no-pivot`.
//! The host is a shared mount namespace of the test's own (`host_ns`).

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
mod host_ns;
use common::*;
use host_ns::*;

use gpurun::gpu::fake::LIB_DIR;

/// How one container is set up.
#[derive(Clone, Copy, Debug)]
struct Case {
    /// `linux.rootfsPropagation`.
    root: &'static str,
    /// The propagation option of the volume.
    volume: &'static str,
    /// The rootfs is a mount of its own (as an image snapshot is), not a directory.
    rootfs_mount: bool,
    no_pivot: bool,
}

/// The container reads what the host mounted under the volume after `create`, then
/// mounts a tmpfs of its own under it.
const CONTAINER: &str = "cat /vol/h/marker 2>&1 || true; \
     mount -t tmpfs ctr /vol/in && echo mounted";

/// The host side: a shared tmpfs as the volume's source, the container created, a mount
/// made under the source, the container started and waited for, the host's own mount
/// removed again; mountinfo saved before and after.
const HOST: &str = r#"
V="$D/vol"
mkdir -p "$V"
mount -t tmpfs vol "$V"
mount --make-shared "$V"
mkdir "$V/in" "$V/h"
if [ -n "$ROOTFS_MOUNT" ]; then mount --bind "$ROOTFS" "$ROOTFS"; fi
cat /proc/self/mountinfo > "$D/before"
$G create $CREATE_FLAGS -b "$B" "$ID" > "$D/ctr.out" 2>&1
mount -t tmpfs fromhost "$V/h"
echo hello > "$V/h/marker"
$G start "$ID"
i=0
until $G state "$ID" | grep -q '"stopped"' || [ $i -ge 400 ]; do sleep 0.05; i=$((i+1)); done
$G delete --force "$ID"
umount "$V/h"
cat /proc/self/mountinfo > "$D/after"
cat "$D/ctr.out"
"#;

fn bundle(case: Case) -> Bundle {
    let mut b = Bundle::own_rootfs(CONTAINER);
    // The container mounts under the volume itself.
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push("CAP_SYS_ADMIN".into());
    }
    b.config["linux"]["rootfsPropagation"] = case.root.into();
    let source = b.path().join("vol");
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/vol", "type": "bind", "source": source,
            "options": ["rbind", case.volume]
        }));
    b
}

/// What the container printed, and the host's mountinfo lines that appeared and went.
struct Seen {
    container: String,
    appeared: Vec<String>,
    gone: Vec<String>,
}

fn run_case(rt: &Runtime, b: &Bundle, case: Case, name: &str, env: &[(&str, &str)]) -> Seen {
    let id = id(name);
    rt.track(&id);
    let rootfs = b.rootfs().display().to_string();
    let mut vars = vec![
        ("ID", id.as_str()),
        ("ROOTFS", rootfs.as_str()),
        ("ROOTFS_MOUNT", if case.rootfs_mount { "1" } else { "" }),
        (
            "CREATE_FLAGS",
            if case.no_pivot { "--no-pivot" } else { "" },
        ),
    ];
    vars.extend_from_slice(env);
    let out = run_script(rt, b, HOST, &vars);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", explain(&out));
    let (appeared, gone) = mountinfo_diff(b.path(), "before", "after");
    Seen {
        container: stdout(&out),
        appeared,
        gone,
    }
}

/// Exactly the container's own tmpfs under the volume's source reached the host, and no
/// host mount changed.
fn assert_only_the_volume_mount_reached_the_host(s: &Seen, b: &Bundle, what: &str) {
    let want = b.path().join("vol/in").display().to_string();
    assert_eq!(s.appeared.len(), 1, "{what}: {:?}", s.appeared);
    assert_eq!(
        mount_point(&s.appeared[0]),
        want,
        "{what}: {:?}",
        s.appeared
    );
    assert!(
        s.appeared[0].contains(" - tmpfs ctr "),
        "{what}: {:?}",
        s.appeared
    );
    assert!(
        s.gone.is_empty(),
        "{what}: host mounts changed: {:?}",
        s.gone
    );
}

const BIDIRECTIONAL: [Case; 5] = [
    Case {
        root: "rshared",
        volume: "rshared",
        rootfs_mount: false,
        no_pivot: false,
    },
    Case {
        root: "shared",
        volume: "rshared",
        rootfs_mount: false,
        no_pivot: false,
    },
    Case {
        root: "rshared",
        volume: "rshared",
        rootfs_mount: true,
        no_pivot: false,
    },
    Case {
        root: "rshared",
        volume: "rshared",
        rootfs_mount: false,
        no_pivot: true,
    },
    Case {
        root: "rshared",
        volume: "rshared",
        rootfs_mount: true,
        no_pivot: true,
    },
];

#[test]
fn bidirectional_volume_sends_container_mounts_to_the_host_and_nothing_else() {
    if skip("bidirectional_volume_sends_container_mounts_to_the_host_and_nothing_else") {
        return;
    }
    let rt = Runtime::new();
    for (i, case) in BIDIRECTIONAL.into_iter().enumerate() {
        let b = bundle(case);
        let seen = run_case(&rt, &b, case, &format!("bidir{i}"), &[]);
        let what = format!("{case:?}");
        assert_eq!(seen.container, "hello\nmounted\n", "{what}");
        assert_only_the_volume_mount_reached_the_host(&seen, &b, &what);
    }
}

/// With the root `rslave` (the default), or `slave` or `private` (not recursive: the
/// volume's source keeps its peer group until the bind).
#[test]
fn host_to_container_volume_receives_host_mounts_and_sends_nothing() {
    if skip("host_to_container_volume_receives_host_mounts_and_sends_nothing") {
        return;
    }
    let rt = Runtime::new();
    for (i, root) in ["rslave", "", "slave", "private"].into_iter().enumerate() {
        let case = Case {
            root,
            volume: "rslave",
            rootfs_mount: false,
            no_pivot: false,
        };
        let b = bundle(case);
        let seen = run_case(&rt, &b, case, &format!("h2c{i}"), &[]);
        assert_eq!(seen.container, "hello\nmounted\n", "{case:?}");
        assert!(seen.appeared.is_empty(), "{case:?}: {:?}", seen.appeared);
        assert!(seen.gone.is_empty(), "{case:?}: {:?}", seen.gone);
    }
}

/// A granted GPU (device nodes, driver files, the generated `/proc/driver/nvidia`) in a
/// container whose root and volume are `rshared`: none of it reaches the host.
#[test]
fn gpu_files_and_proc_driver_view_never_reach_the_host_under_rshared() {
    if skip("gpu_files_and_proc_driver_view_never_reach_the_host_under_rshared") {
        return;
    }
    let node = gpu_node::Node::new(true);
    let rt = Runtime::new();
    for (i, rootfs_mount) in [false, true].into_iter().enumerate() {
        let case = Case {
            root: "rshared",
            volume: "rshared",
            rootfs_mount,
            no_pivot: false,
        };
        let mut b = bundle(case);
        std::fs::create_dir_all(b.rootfs().join(LIB_DIR)).unwrap();
        b.config["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("NVIDIA_VISIBLE_DEVICES=0".into());
        b.config["process"]["args"] = serde_json::json!([
            "sh",
            "-c",
            format!(
                "test -e /{LIB_DIR}/libcuda.so.1 && test -c /dev/nvidia0 && \
             grep -q ModifyDeviceFiles /proc/driver/nvidia/params && echo gpu; {CONTAINER}"
            )
        ]);
        let config = node.config.display().to_string();
        let seen = run_case(
            &rt,
            &b,
            case,
            &format!("gpu{i}"),
            &[("GPURUN_CONFIG", &config)],
        );
        assert_eq!(seen.container, "gpu\nhello\nmounted\n", "{case:?}");
        assert_only_the_volume_mount_reached_the_host(&seen, &b, &format!("{case:?}"));
    }
}

/// runc 1.1 on the same bundles: the same two directions, and nothing else leaves.
#[test]
fn runc_propagates_the_same_way() {
    let name = "runc_propagates_the_same_way";
    if skip(name) {
        return;
    }
    let Some(runc) = Runtime::runc(name) else {
        return;
    };
    let bidir = BIDIRECTIONAL[0];
    let b = bundle(bidir);
    let seen = run_case(&runc, &b, bidir, "runc-bidir", &[]);
    assert_eq!(seen.container, "hello\nmounted\n", "runc {bidir:?}");
    assert_only_the_volume_mount_reached_the_host(&seen, &b, "runc");
    let h2c = Case {
        root: "rslave",
        volume: "rslave",
        rootfs_mount: false,
        no_pivot: false,
    };
    let b = bundle(h2c);
    let seen = run_case(&runc, &b, h2c, "runc-h2c", &[]);
    assert_eq!(seen.container, "hello\nmounted\n", "runc {h2c:?}");
    assert!(seen.appeared.is_empty(), "runc: {:?}", seen.appeared);
}
