//! Requests and edits on the two-GPU fake tree: what ends up in the spec.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gpurun::config::Sharing;
use gpurun::gpu::fake::{self, FakeSmi, LIB_DIR, VERSION};
use gpurun::gpu::{self, RequestSource};
use oci_spec::runtime::Mount;

mod gpu_support;
use gpu_support::*;

#[test]
fn gpu0_gets_its_node_control_nodes_rules_libraries_and_params() {
    let e = env();
    let (s, inj) = e.ok(&["NVIDIA_VISIBLE_DEVICES=0"]);
    assert_eq!(inj.grant.gpus, vec![GPU0.to_string()]);
    assert_eq!(inj.grant.source, RequestSource::Env);
    assert_eq!(
        device_paths(&s),
        [
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia0",
            "/dev/nvidiactl"
        ]
    );
    let r = rules(&s);
    for rule in ["c 195:0 rwm", "c 195:255 rwm", "c 237:0 rwm", "c 237:1 rwm"] {
        assert!(r.contains(&rule.to_string()), "{rule} missing from {r:?}");
    }
    assert!(!r.iter().any(|x| x.contains("195:1 ")), "{r:?}");

    // libcuda at its real name, SONAME and .so name, all read-only binds of the real file.
    let real = e.root.join(LIB_DIR).join(format!("libcuda.so.{VERSION}"));
    for name in [
        format!("libcuda.so.{VERSION}"),
        "libcuda.so.1".into(),
        "libcuda.so".into(),
    ] {
        let m = mount_at(&s, &format!("/usr/lib/x86_64-linux-gnu/{name}"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(m.source().as_deref(), Some(real.as_path()));
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert_eq!(
            m.options().clone().unwrap(),
            ["ro", "nosuid", "nodev", "rbind", "rprivate"]
        );
    }
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1").is_some());
    assert!(mount_at(&s, "/usr/bin/nvidia-smi").is_some());
    assert!(mount_at(&s, &format!("/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin")).is_some());
    let sock = mount_at(&s, "/run/nvidia-persistenced/socket").unwrap();
    assert!(!sock.options().clone().unwrap().contains(&"ro".to_string()));
    // No graphics or video library without those capabilities.
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.0").is_none());
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libnvcuvid.so.1").is_none());

    // /proc/driver/nvidia: generated params, only GPU 0's directory.
    // It is generated once per distinct content in the store and mounted from there.
    let proc = mount_at(&s, "/proc/driver/nvidia").unwrap();
    let gen = proc.source().clone().unwrap();
    assert_eq!(gen.parent(), Some(e.gen.as_path()));
    let params = std::fs::read_to_string(gen.join("params")).unwrap();
    assert!(params.contains("ModifyDeviceFiles: 0\n"), "{params}");
    assert!(!params.contains("ModifyDeviceFiles: 1"), "{params}");
    assert!(
        params.contains("DeviceFileMode: 438"),
        "other lines kept: {params}"
    );
    assert!(std::fs::read_to_string(gen.join("version"))
        .unwrap()
        .contains(VERSION));
    let g0 = mount_at(&s, "/proc/driver/nvidia/gpus/0000:3b:00.0").unwrap();
    assert_eq!(
        g0.source().as_deref(),
        Some(
            e.root
                .join("proc/driver/nvidia/gpus/0000:3b:00.0")
                .as_path()
        )
    );
    assert!(mount_at(&s, "/proc/driver/nvidia/gpus/0000:86:00.0").is_none());
    assert!(gen.join("gpus/0000:3b:00.0").is_dir());
    assert!(!gen.join("gpus/0000:86:00.0").exists());
    // The parent is mounted before the per-GPU directory.
    let order: Vec<&Path> = s
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().as_path())
        .collect();
    let pos = |p: &str| order.iter().position(|d| *d == Path::new(p)).unwrap();
    assert!(pos("/proc/driver/nvidia") < pos("/proc/driver/nvidia/gpus/0000:3b:00.0"));
}

#[test]
fn rhel_like_rootfs_gets_usr_lib64() {
    let e = env_with(false);
    let (s, _) = e.ok(&["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(mount_at(&s, "/usr/lib64/libcuda.so.1").is_some());
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libcuda.so.1").is_none());
}

#[test]
fn every_visible_devices_form() {
    let e = env();
    let gpus = |v: &str| -> Vec<String> {
        let (_, inj) = e.ok(&[&format!("NVIDIA_VISIBLE_DEVICES={v}")]);
        inj.grant.gpus
    };
    assert_eq!(gpus("all"), [GPU0, GPU1]);
    assert_eq!(gpus("0,1"), [GPU0, GPU1]);
    assert_eq!(gpus("1"), [GPU1]);
    assert_eq!(
        gpus("1,1,GPU-11111111-1111-1111-1111-111111111111"),
        [GPU1],
        "duplicates dropped"
    );
    assert_eq!(
        gpus("gpu-11111111-1111-1111-1111-111111111111"),
        [GPU1],
        "UUIDs are case-insensitive"
    );
    assert_eq!(gpus("0000:86:00.0"), [GPU1]);
    assert_eq!(
        gpus("00000000:3B:00.0"),
        [GPU0],
        "32-bit domain, upper case"
    );
    assert_eq!(gpus("3b:00.0"), [GPU0], "domain optional");

    // none: driver files, no device nodes.
    let (s, inj) = e.ok(&["NVIDIA_VISIBLE_DEVICES=none"]);
    assert!(inj.grant.gpus.is_empty());
    assert!(device_paths(&s).is_empty());
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libcuda.so.1").is_some());

    // void, empty and unset: not a GPU container.
    for v in [
        &["NVIDIA_VISIBLE_DEVICES=void"][..],
        &["NVIDIA_VISIBLE_DEVICES="],
        &[],
    ] {
        let (s, r) = e.run(v, true);
        assert!(r.unwrap().is_none(), "{v:?}");
        assert!(device_paths(&s).is_empty());
    }
    // The device plugin's marker without its mounts: nothing.
    let (_, r) = e.run(
        &["NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices"],
        true,
    );
    assert!(r.unwrap().is_none());

    // Unknown ids are errors naming them.
    for bad in ["7", "GPU-deadbeef", "0000:99:00.0", "banana"] {
        let (_, r) = e.run(&[&format!("NVIDIA_VISIBLE_DEVICES=0,{bad}")], true);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains(bad) && msg.contains("unknown device"),
            "{bad}: {msg}"
        );
    }
    // MIG names the driver's nvidia-smi did not report are unknown, with the reason.
    for mig in ["MIG-8a7c2a46-1b8e-5c6e-9d6d-1f2d3c4b5a69", "1:5", "0:0"] {
        let (_, r) = e.run(&[&format!("NVIDIA_VISIBLE_DEVICES={mig}")], true);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(mig) && msg.contains("nvidia-smi"), "{msg}");
    }
    // Without its answers no MIG device has a name at all.
    let e = env_smi(FakeSmi::Fails);
    for mig in [fake::smi::MIG_UUID, "1:0"] {
        let (_, r) = e.run(&[&format!("NVIDIA_VISIBLE_DEVICES={mig}")], true);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains(mig) && msg.contains("named 0 of this node's 1 MIG devices"),
            "{msg}"
        );
    }
}

#[test]
fn unprivileged_env_request_is_ignored_with_a_warning() {
    let e = env();
    let (s, r) = e.run(&["NVIDIA_VISIBLE_DEVICES=all"], false);
    let inj = r.unwrap().expect("an ignored request is reported");
    assert_eq!(inj.grant.source, RequestSource::EnvIgnored);
    assert!(inj.grant.gpus.is_empty());
    assert!(
        inj.warnings[0].contains("not privileged"),
        "{:?}",
        inj.warnings
    );
    assert!(device_paths(&s).is_empty());
    assert!(mount_at(&s, "/proc/driver/nvidia").is_none());
    assert!(!s
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination().starts_with("/usr/lib")));
    assert_eq!(
        env_value(&s, "NVIDIA_VISIBLE_DEVICES").as_deref(),
        Some("void")
    );
    assert!(matches!(
        gpu::request::parse(
            &fake::spec(&["NVIDIA_VISIBLE_DEVICES=all"], false, &[]),
            &e.cfg
        ),
        Ok(gpu::request::Parsed::Ignored(_))
    ));

    // The node's policy may accept it.
    let mut e = e;
    e.cfg.nvidia.accept_env_when_unprivileged = true;
    let (s, r) = e.run(&["NVIDIA_VISIBLE_DEVICES=1"], false);
    assert_eq!(r.unwrap().unwrap().grant.gpus, [GPU1]);
    assert!(device_paths(&s).contains(&"/dev/nvidia1".to_string()));
}

fn device_mount(id: &str) -> Mount {
    serde_json::from_value(serde_json::json!({
        "destination": format!("/var/run/nvidia-container-devices/{id}"),
        "source": "/dev/null", "type": "bind", "options": ["bind", "ro"]
    }))
    .unwrap()
}

#[test]
fn device_plugin_mounts_beat_env_and_need_no_privilege() {
    let e = env();
    let mut s = fake::spec(
        &["NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices"],
        false,
        &[],
    );
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(device_mount(GPU1));
    s.set_mounts(Some(mounts));
    let inj = e.inject(&mut s).unwrap().unwrap();
    assert_eq!(inj.grant.source, RequestSource::DevicePluginMounts);
    assert_eq!(inj.grant.gpus, [GPU1]);
    assert!(device_paths(&s).contains(&"/dev/nvidia1".to_string()));
    assert!(!device_paths(&s).contains(&"/dev/nvidia0".to_string()));
    // The marker became the list it stands for.
    assert_eq!(
        env_value(&s, "NVIDIA_VISIBLE_DEVICES").as_deref(),
        Some(GPU1)
    );

    // Mounts beat a privileged container's env.
    let mut s = fake::spec(&["NVIDIA_VISIBLE_DEVICES=all"], true, &[]);
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(device_mount("0"));
    s.set_mounts(Some(mounts));
    assert_eq!(e.inject(&mut s).unwrap().unwrap().grant.gpus, [GPU0]);

    // A mount with another source is not a request; an IMEX mount grants its channel.
    let mut s = fake::spec(&[], false, &[]);
    let mut m = device_mount("0");
    m.set_source(Some(PathBuf::from("/etc/hostname")));
    s.set_mounts(Some(vec![m]));
    assert!(e.inject(&mut s).unwrap().is_none());
    let mut s = fake::spec(&[], false, &[]);
    s.set_mounts(Some(vec![device_mount("imex/3")]));
    e.inject(&mut s).unwrap().unwrap();
    assert_eq!(
        device_paths(&s),
        ["/dev/nvidia-caps-imex-channels/channel3"]
    );
    assert_eq!(
        rules(&s),
        [format!("c {}:3 rwm", fake::IMEX_MAJOR)],
        "an IMEX channel alone brings no GPU node"
    );
}

#[test]
fn pod_sandbox_gets_nothing() {
    let e = env();
    let mut s = fake::spec(
        &["NVIDIA_VISIBLE_DEVICES=all"],
        true,
        &[("io.kubernetes.cri.container-type", "sandbox")],
    );
    assert!(e.inject(&mut s).unwrap().is_none());
    assert!(device_paths(&s).is_empty());
}

#[test]
fn capabilities_pick_files_and_nodes() {
    let e = env();
    let (s, inj) = e.ok(&[
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_DRIVER_CAPABILITIES=utility",
    ]);
    assert_eq!(inj.grant.capabilities.to_string(), "utility");
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1").is_some());
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libcuda.so.1").is_none());
    assert!(mount_at(&s, "/usr/bin/nvidia-cuda-mps-control").is_none());
    assert_eq!(
        device_paths(&s),
        ["/dev/nvidia0", "/dev/nvidiactl"],
        "no uvm without compute"
    );

    let (s, _) = e.ok(&[
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_DRIVER_CAPABILITIES=display",
    ]);
    assert!(device_paths(&s).contains(&"/dev/nvidia-modeset".to_string()));
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.0").is_some());

    let (s, _) = e.ok(&[
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_DRIVER_CAPABILITIES=video",
    ]);
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.1").is_some());
    assert!(
        mount_at(&s, "/usr/lib/x86_64-linux-gnu/libcuda.so.1").is_some(),
        "video implies compute libs"
    );

    let (s, inj) = e.ok(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"]);
    assert_eq!(inj.grant.capabilities, gpu::Capabilities::all());
    assert!(mount_at(&s, "/usr/lib/x86_64-linux-gnu/libnvcuvid.so.1").is_some());

    let (_, r) = e.run(
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_DRIVER_CAPABILITIES=compute,gaming",
        ],
        true,
    );
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("NVIDIA_DRIVER_CAPABILITIES") && msg.contains("gaming"),
        "{msg}"
    );
}

#[test]
fn existing_mounts_and_devices_are_not_duplicated() {
    let e = env();
    let mut s = fake::spec(&["NVIDIA_VISIBLE_DEVICES=0"], true, &[]);
    let pre: Mount = serde_json::from_value(serde_json::json!({
        "destination": "/usr/lib/x86_64-linux-gnu//libcuda.so.1",
        "source": "/somewhere/libcuda.so.1", "type": "bind", "options": ["ro", "rbind"]
    }))
    .unwrap();
    let mut mounts = s.mounts().clone().unwrap();
    mounts.push(pre);
    s.set_mounts(Some(mounts));
    let dev: oci_spec::runtime::LinuxDevice = serde_json::from_value(
        serde_json::json!({"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255}),
    )
    .unwrap();
    s.linux_mut().as_mut().unwrap().set_devices(Some(vec![dev]));
    let inj = e.inject(&mut s).unwrap().unwrap();
    let n = s
        .mounts()
        .iter()
        .flatten()
        .filter(|m| {
            gpurun::gpu::paths::normalize(m.destination())
                == Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        })
        .count();
    assert_eq!(n, 1);
    assert_eq!(
        device_paths(&s)
            .iter()
            .filter(|p| *p == "/dev/nvidiactl")
            .count(),
        1
    );
    assert!(
        inj.log.iter().any(|l| l.contains("already")),
        "{:?}",
        inj.log
    );
    // Injecting twice changes nothing the second time.
    let before = s.clone();
    e.inject(&mut s).unwrap().unwrap();
    assert_eq!(s.mounts(), before.mounts());
    assert_eq!(device_paths(&s), device_paths(&before));
    assert_eq!(rules(&s), rules(&before));
}

#[test]
fn sharing_from_config_or_annotation() {
    let e = env();
    let (_, inj) = e.ok(&["NVIDIA_VISIBLE_DEVICES=0"]);
    assert_eq!(inj.grant.sharing, Sharing::Shared);
    let mut s = fake::spec(
        &["NVIDIA_VISIBLE_DEVICES=0"],
        true,
        &[("gpurun.dev/gpu-sharing", "exclusive")],
    );
    assert_eq!(
        e.inject(&mut s).unwrap().unwrap().grant.sharing,
        Sharing::Exclusive
    );
    // An annotation cannot weaken the node's policy.
    let mut e = e;
    e.cfg.gpus.sharing = Sharing::Exclusive;
    let mut s = fake::spec(
        &["NVIDIA_VISIBLE_DEVICES=0"],
        true,
        &[("gpurun.dev/gpu-sharing", "shared")],
    );
    assert_eq!(
        e.inject(&mut s).unwrap().unwrap().grant.sharing,
        Sharing::Exclusive
    );
    let mut s = fake::spec(
        &["NVIDIA_VISIBLE_DEVICES=0"],
        true,
        &[("gpurun.dev/gpu-sharing", "mine")],
    );
    assert!(e
        .inject(&mut s)
        .unwrap_err()
        .to_string()
        .contains("gpurun.dev/gpu-sharing"));
}

#[test]
fn mig_config_env_is_refused_by_name_and_imex_channels_are_granted() {
    let e = env();
    let (s, _) = e.ok(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_IMEX_CHANNELS=0"]);
    assert!(
        device_paths(&s).contains(&"/dev/nvidia-caps-imex-channels/channel0".to_string()),
        "{:?}",
        device_paths(&s)
    );
    assert!(rules(&s).contains(&format!("c {}:0 rwm", fake::IMEX_MAJOR)));
    for var in [
        "NVIDIA_MIG_CONFIG_DEVICES=all",
        "NVIDIA_MIG_MONITOR_DEVICES=all",
    ] {
        let (_, r) = e.run(&["NVIDIA_VISIBLE_DEVICES=0", var], true);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains(var.split('=').next().unwrap()) && msg.contains("not supported"),
            "{msg}"
        );
    }
}
