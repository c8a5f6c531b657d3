//! The Kubernetes path: the kubelet's CRI calls to containerd, runtime handler `gpurun`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gpurun_integration::containerd::K8S_NS;
use gpurun_integration::cri::{self, v1};
use gpurun_integration::pods::setup;
use gpurun_integration::{leftovers, serial, wait_for};

fn ns_link(pid: i64, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{ns}: {e}"))
        .display()
        .to_string()
}

const LOOP: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 1; done",
];

#[test]
fn cri_pod_and_container_lifecycle_through_gpurun() {
    let _g = serial();
    let Some(e) = setup("") else { return };
    let v = e.cri.version().unwrap();
    assert_eq!(v.runtime_name, "containerd");

    let pod_cfg = e.pod_config("life");
    let pod = e.run_pod(&pod_cfg);
    let sandbox_pid = e.c.gpurun_state(K8S_NS, &pod).unwrap()["pid"]
        .as_i64()
        .unwrap();

    let cfg = cri::container_config("main", &pod_cfg, LOOP);
    let id = e.start_container(&pod, &pod_cfg, &cfg);
    let st = e.cri.status(&id).unwrap();
    assert_eq!(
        st.state,
        v1::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    let init = e.c.gpurun_state(K8S_NS, &id).unwrap()["pid"]
        .as_i64()
        .unwrap();

    let (code, out, err) = e
        .cri
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"])
        .unwrap();
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));

    // The container joined the sandbox's IPC namespace, the host's network namespace
    // (a host-network pod), and has a PID namespace of its own.
    let inside = |ns: &str| {
        e.sh(&id, &format!("readlink /proc/self/ns/{ns}"))
            .trim()
            .to_string()
    };
    assert_eq!(inside("ipc"), ns_link(sandbox_pid, "ipc"));
    assert_eq!(inside("net"), ns_link(std::process::id() as i64, "net"));
    assert_eq!(inside("pid"), ns_link(init, "pid"));
    assert_ne!(ns_link(init, "pid"), ns_link(sandbox_pid, "pid"));

    // StopContainer sends SIGTERM first: the trap exits 0.
    e.cri.stop(&id, 10).unwrap();
    let st = e.cri.status(&id).unwrap();
    assert_eq!(
        st.state,
        v1::ContainerState::ContainerExited as i32,
        "{st:?}"
    );
    assert_eq!(st.exit_code, 0, "{st:?}");
    e.cri.remove(&id).unwrap();
    e.assert_gone(&id);
    e.remove_pod(&pod);
}

#[test]
fn cri_shared_pid_namespace_and_runtime_default_seccomp() {
    let _g = serial();
    let Some(e) = setup("") else { return };
    let mut pod_cfg = e.pod_config("shared");
    cri::set_pod_pid(&mut pod_cfg, v1::NamespaceMode::Pod);
    let pod = e.run_pod(&pod_cfg);

    let mut cfg = cri::container_config("confined", &pod_cfg, LOOP);
    cri::security(&mut cfg).seccomp = Some(v1::SecurityProfile {
        profile_type: v1::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let id = e.start_container(&pod, &pod_cfg, &cfg);
    // Pid 1 of the shared namespace is the sandbox's pause.
    assert_eq!(e.sh(&id, "cat /proc/1/cmdline"), "/pause\u{0}");
    // The runtime's default profile is in force, and ordinary work runs under it.
    assert!(e.sh(&id, "grep ^Seccomp: /proc/self/status").contains('2'));
    assert_eq!(e.sh(&id, "echo a b c | wc -w").trim(), "3");
    // ...and it denies what it should: unshare(CLONE_NEWUSER) is not allowed.
    let (code, _, err) = e.cri.exec(&id, &["unshare", "-U", "true"]).unwrap();
    assert_ne!(code, 0, "unshare -U succeeded under RuntimeDefault: {err}");

    let plain = cri::container_config("unconfined", &pod_cfg, LOOP);
    let id2 = e.start_container(&pod, &pod_cfg, &plain);
    assert!(e.sh(&id2, "grep ^Seccomp: /proc/self/status").contains('0'));

    e.remove_container(&id);
    e.remove_container(&id2);
    e.remove_pod(&pod);
}

#[test]
fn cri_memory_limit_is_in_the_containers_cgroup() {
    let _g = serial();
    let Some(e) = setup("") else { return };
    let pod_cfg = e.pod_config("mem");
    let pod = e.run_pod(&pod_cfg);
    let mut cfg = cri::container_config("limited", &pod_cfg, LOOP);
    cri::resources(&mut cfg).memory_limit_in_bytes = 64 << 20;
    let id = e.start_container(&pod, &pod_cfg, &cfg);

    let limit = (64u64 << 20).to_string();
    // What the container sees at its cgroup mount...
    let v1_file = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
    let v2_file = "/sys/fs/cgroup/memory.max";
    let seen = e.sh(&id, &format!("cat {v1_file} 2>/dev/null || cat {v2_file}"));
    assert_eq!(seen.trim(), limit);
    // ...is the host's file of its cgroup.
    let host = leftovers::cgroups_named(&format!("{}/{id}", e.parent))
        .into_iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .expect("the container's memory cgroup");
    assert_eq!(host.trim(), limit);
    // containerd reads the same cgroup for ContainerStats.
    let stats = e.cri.stats(&id).unwrap();
    assert!(stats.memory.is_some(), "{stats:?}");

    e.remove_container(&id);
    e.remove_pod(&pod);
}

#[test]
fn cri_runtime_error_reaches_the_caller() {
    let _g = serial();
    let Some(e) = setup("") else { return };
    let pod_cfg = e.pod_config("broken");
    let pod = e.run_pod(&pod_cfg);
    let cfg = cri::container_config("missing", &pod_cfg, &["/no/such/binary"]);
    let id = e.cri.create(&pod, &cfg, &pod_cfg).unwrap();
    let err = e
        .cri
        .start(&id)
        .expect_err("a missing executable must fail");
    let msg = err.message();
    // containerd quotes the last JSON error line of gpurun's --log.
    assert!(msg.contains("OCI runtime create failed"), "{msg}");
    assert!(msg.contains("/no/such/binary"), "{msg}");
    assert!(
        !msg.contains("unable to retrieve OCI runtime error"),
        "{msg}"
    );
    let st = e.cri.status(&id).unwrap();
    assert_ne!(
        st.state,
        v1::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    e.cri.remove(&id).unwrap();
    e.assert_gone(&id);
    let gone = wait_for(Duration::from_secs(10), || {
        leftovers::entries(&e.c.runtime_root(K8S_NS))
            .iter()
            .all(|x| x != &id)
            .then_some(())
    });
    assert!(gone.is_some());
    e.remove_pod(&pod);
}

#[test]
fn cri_handler_from_the_drop_in_gpurun_install_writes() {
    let _g = serial();
    let gpurun = gpurun_integration::gpurun_bin();
    // containerd's default runtime root for the handler; remove it after if we made it.
    let default_root = std::path::Path::new("/run/containerd/runc").join(K8S_NS);
    let made_root = !default_root.exists();
    let install = |c: &gpurun_integration::containerd::Containerd| {
        // What an operator runs: the drop-in carries containerd's effective CRI section.
        let r = gpurun_integration::run(
            std::process::Command::new(&gpurun)
                .args(["install", "containerd", "--containerd-config"])
                .arg(c.config_path())
                .arg("--path")
                .arg(c.conf_d().join("99-gpurun.toml")),
            Duration::from_secs(30),
        );
        assert!(r.ok(), "{r:#?}");
        let text = std::fs::read_to_string(c.conf_d().join("99-gpurun.toml")).unwrap();
        assert!(
            text.contains(&format!("BinaryName = \"{}\"", gpurun.display())),
            "{text}"
        );
        assert!(text.contains("localhost/gpurun-test/pause:1"), "{text}");
    };
    {
        let Some(e) = gpurun_integration::pods::setup_with("", Some(&install)) else {
            return;
        };
        let pod_cfg = e.pod_config("dropin");
        let pod = e.run_pod(&pod_cfg);
        let cfg = cri::container_config("main", &pod_cfg, LOOP);
        let id = e.start_container(&pod, &pod_cfg, &cfg);
        assert_eq!(
            e.sh(&id, "echo through the drop-in"),
            "through the drop-in\n"
        );
        assert_eq!(e.c.gpurun_state(K8S_NS, &id).unwrap()["status"], "running");
        e.remove_container(&id);
        e.cri.stop_pod(&pod).unwrap();
        e.cri.remove_pod(&pod).unwrap();
        e.assert_gone(&pod);
    }
    if made_root {
        let _ = std::fs::remove_dir(&default_root);
        let _ = std::fs::remove_dir("/run/containerd/runc");
    }
}

/// A tmpfs the test mounts on a directory of its own in the host's mount namespace (where
/// containerd runs) and makes shared, as the kubelet's pod volumes are; unmounted with
/// everything below it when dropped.
struct SharedMount(tempfile::TempDir);

impl SharedMount {
    fn new() -> SharedMount {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::Builder::new()
            .prefix("gpurun-it-bidir-")
            .tempdir()
            .unwrap();
        mount(
            Some("gpurun-it-bidir"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            dir.path(),
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        SharedMount(dir)
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Kubernetes' `mountPropagation: Bidirectional` (what CSI node plugins use): a mount the
/// container makes under the volume appears on the host, one the host makes appears in
/// the container, and nothing of the container's own (`/proc`, `/dev`, ...) reaches the
/// host.
#[test]
fn cri_bidirectional_volume_shares_mounts_both_ways() {
    let _g = serial();
    let Some(e) = setup("") else { return };
    let src = SharedMount::new();
    let host = src.0.path();
    std::fs::create_dir(host.join("h")).unwrap();
    let pod_cfg = e.pod_config("bidir");
    let pod = e.run_pod(&pod_cfg);
    let mut cfg = cri::container_config("csi", &pod_cfg, LOOP);
    cfg.mounts = vec![v1::Mount {
        container_path: "/vol".into(),
        host_path: host.display().to_string(),
        propagation: v1::MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    cri::security(&mut cfg).capabilities = Some(v1::Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    let id = e.start_container(&pod, &pod_cfg, &cfg);

    e.sh(
        &id,
        "mkdir /vol/in && mount -t tmpfs ctr /vol/in && echo from-container > /vol/in/f",
    );
    assert_eq!(
        std::fs::read_to_string(host.join("in/f")).unwrap(),
        "from-container\n"
    );
    nix::mount::mount(
        Some("gpurun-it-host"),
        &host.join("h"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(host.join("h/marker"), "from-host").unwrap();
    assert_eq!(e.sh(&id, "cat /vol/h/marker"), "from-host");

    let inside_a_rootfs: Vec<_> = leftovers::mounts_under(e.c.dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/rootfs/"))
        .collect();
    assert!(inside_a_rootfs.is_empty(), "{inside_a_rootfs:?}");

    e.remove_container(&id);
    e.remove_pod(&pod);
}
