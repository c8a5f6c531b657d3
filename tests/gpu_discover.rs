//! Discovery on the fake driver tree (research §7.2): procfs, nodes, ldcache, version
//! filter, capability table, the cache.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gpurun::config::Config;
use gpurun::gpu::fake::{FakeDriver, FakeSmi, Nodes, DECOY_VERSION, LIB_DIR, VERSION};
use gpurun::gpu::{self, Capabilities, Capability, Inventory, Roots};

fn tree(b: gpurun::gpu::fake::FakeBuilder) -> (tempfile::TempDir, FakeDriver, Inventory) {
    let t = tempfile::tempdir().unwrap();
    let f = b.build(t.path()).unwrap();
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    (t, f, inv)
}

fn names(inv: &Inventory, caps: &str) -> Vec<String> {
    let mut v: Vec<String> = inv
        .libraries_for(Capabilities::parse(caps).unwrap())
        .map(|l| match &l.subdir {
            Some(s) => format!("{s}/{}", l.name),
            None => l.name.clone(),
        })
        .collect();
    v.sort();
    v
}

#[test]
fn two_gpu_tree_gpus_nodes_and_version() {
    let (_t, f, inv) = tree(FakeDriver::two_gpus());
    assert_eq!(inv.driver_version, VERSION);
    assert_eq!(inv.gpus.len(), 2);
    let g0 = &inv.gpus[0];
    assert_eq!((g0.index, g0.minor), (0, 0));
    assert_eq!(g0.uuid, "GPU-00000000-0000-0000-0000-000000000000");
    assert_eq!(g0.model, "NVIDIA Fake A100");
    assert_eq!(g0.bus.to_string(), "0000:3b:00.0");
    assert_eq!(g0.node.path, PathBuf::from("/dev/nvidia0"));
    assert_eq!((g0.node.major, g0.node.minor), (195, 0));
    assert_eq!(
        g0.proc_dir,
        f.root.join("proc/driver/nvidia/gpus/0000:3b:00.0")
    );
    // The second GPU's information file uses a 32-bit domain; it is the same address.
    assert_eq!(inv.gpus[1].bus.to_string(), "0000:86:00.0");
    assert_eq!((inv.nvidiactl.major, inv.nvidiactl.minor), (195, 255));
    let uvm = inv.uvm.as_ref().unwrap();
    assert_eq!(
        (uvm.path.as_path(), uvm.major, uvm.minor),
        (Path::new("/dev/nvidia-uvm"), 237, 0)
    );
    let tools = inv.uvm_tools.as_ref().unwrap();
    assert_eq!((tools.major, tools.minor), (237, 1));
    assert_eq!(inv.modeset.as_ref().unwrap().minor, 254);
}

#[test]
fn mig_devices_from_capability_files() {
    let (_t, _f, inv) = tree(FakeDriver::two_gpus());
    assert_eq!(inv.mig_devices.len(), 1);
    let m = &inv.mig_devices[0];
    assert_eq!((m.parent_minor, m.gi, m.ci), (1, 1, 0));
    assert_eq!(
        m.gi_node.path,
        PathBuf::from("/dev/nvidia-caps/nvidia-cap12")
    );
    assert_eq!((m.gi_node.major, m.gi_node.minor), (236, 12));
    assert_eq!(m.ci_node.minor, 13);
    // The UUID and the index come from the driver's nvidia-smi.
    assert_eq!(
        (m.uuid.as_deref(), m.index),
        (Some(gpurun::gpu::fake::smi::MIG_UUID), Some(0))
    );
    // Without it, the device is still found, but has no name to be asked for by.
    let (_t, _f, inv) = tree(FakeDriver::two_gpus().smi(FakeSmi::Echo));
    let m = &inv.mig_devices[0];
    assert_eq!((m.parent_minor, m.gi, m.ci), (1, 1, 0));
    assert_eq!((m.uuid.as_ref(), m.index), (None, None));
}

#[test]
fn old_nvidia_frontend_major_name() {
    let (_t, _f, inv) = tree(FakeDriver::two_gpus().frontend_name());
    assert_eq!(inv.gpus[0].node.major, 195);
    assert_eq!(inv.nvidiactl.major, 195);
}

#[test]
fn libraries_through_ldcache_with_version_filter() {
    let (_t, f, inv) = tree(FakeDriver::two_gpus());
    if !f.has_ldcache {
        gpurun::skip::cannot_run(
            "libraries_through_ldcache_with_version_filter",
            "ldconfig -r could not run here",
        );
        return;
    }
    let cuda = inv
        .libraries
        .iter()
        .find(|l| l.prefix == "libcuda.so")
        .unwrap();
    assert_eq!(cuda.name, format!("libcuda.so.{VERSION}"));
    assert_eq!(cuda.soname.as_deref(), Some("libcuda.so.1"));
    assert_eq!(
        cuda.host_path,
        f.root.join(LIB_DIR).join(format!("libcuda.so.{VERSION}"))
    );
    assert!(!inv.libraries.iter().any(|l| l.name.contains(DECOY_VERSION)));
    assert_eq!(
        names(&inv, "utility,compute"),
        vec![
            format!("libcuda.so.{VERSION}"),
            format!("libnvidia-ml.so.{VERSION}"),
            format!("libnvidia-ptxjitcompiler.so.{VERSION}"),
        ]
    );
}

#[test]
fn directory_scan_without_ldcache_finds_the_same_and_rejects_the_decoy() {
    let (_t, _f, inv) = tree(FakeDriver::two_gpus().ldcache(false));
    assert!(!inv.libraries.iter().any(|l| l.name.contains(DECOY_VERSION)));
    assert_eq!(names(&inv, "utility").len(), 1);
    let ml = inv
        .libraries
        .iter()
        .find(|l| l.prefix == "libnvidia-ml.so")
        .unwrap();
    assert_eq!(
        ml.soname.as_deref(),
        Some("libnvidia-ml.so.1"),
        "SONAME read from the ELF file"
    );
}

#[test]
fn version_inferred_from_library_suffix_without_procfs_version() {
    let (_t, _f, inv) = tree(FakeDriver::two_gpus().without_proc_version().ldcache(false));
    assert_eq!(inv.driver_version, VERSION);
}

#[test]
fn capability_table_selects_libraries_and_binaries() {
    let (_t, _f, inv) = tree(FakeDriver::full());
    let video = names(&inv, "video");
    assert!(
        video.contains(&format!("vdpau/libvdpau_nvidia.so.{VERSION}")),
        "{video:?}"
    );
    assert!(video.contains(&format!("libnvcuvid.so.{VERSION}")));
    // video also selects the compute libraries.
    assert!(video.contains(&format!("libcuda.so.{VERSION}")));
    let graphics = names(&inv, "graphics");
    assert!(graphics.contains(&format!("libGLX_nvidia.so.{VERSION}")));
    assert!(!graphics.contains(&format!("libcuda.so.{VERSION}")));
    assert_eq!(
        names(&inv, "ngx"),
        vec![format!("libnvidia-ngx.so.{VERSION}")]
    );
    assert_eq!(names(&inv, "display"), graphics);
    // Every library of the table was found, plus the vdpau driver in its sub-directory.
    assert_eq!(inv.libraries.len(), gpu::inventory::LIBRARIES.len());
    let bins: Vec<&str> = inv
        .binaries_for(Capabilities::of(&[Capability::Utility]))
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        bins,
        [
            "nvidia-smi",
            "nvidia-debugdump",
            "nvidia-persistenced",
            "nv-fabricmanager"
        ]
    );
    let compute: Vec<&str> = inv
        .binaries_for(Capabilities::of(&[Capability::Compute]))
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        compute,
        ["nvidia-cuda-mps-control", "nvidia-cuda-mps-server"]
    );
    let fw: Vec<&str> = inv.firmware.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fw, ["gsp_ga10x.bin", "gsp_tu10x.bin"]);
    assert_eq!(
        inv.firmware[0].path,
        PathBuf::from(format!("/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin"))
    );
    let ipc: Vec<&Path> = inv.ipc.iter().map(|s| s.path.as_path()).collect();
    assert_eq!(ipc, [Path::new("/run/nvidia-persistenced/socket")]);
}

#[test]
fn host_node_with_wrong_numbers_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        gpurun::skip::cannot_run("host_node_with_wrong_numbers_is_refused", "needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .nodes(Nodes::Mknod)
        .build(t.path())
        .unwrap();
    let p = f.root.join("dev/nvidia0");
    std::fs::remove_file(&p).unwrap();
    nix::sys::stat::mknod(
        &p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let e = gpu::discover(&Roots::at(&f.root)).unwrap_err().to_string();
    assert!(
        e.contains("dev/nvidia0") && e.contains("c 1:3") && e.contains("195:0"),
        "{e}"
    );
}

#[test]
fn no_driver_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("proc")).unwrap();
    std::fs::write(
        t.path().join("proc/devices"),
        "Character devices:\n  1 mem\n",
    )
    .unwrap();
    let e = gpu::discover(&Roots::at(t.path())).unwrap_err().to_string();
    assert!(e.contains("no NVIDIA driver"), "{e}");
}

fn cfg_for(root: &Path, state: &Path) -> Config {
    gpurun::gpu::fake::config(root, state)
}

#[test]
fn cache_is_written_reused_and_keyed_on_the_gpu_set() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("root"))
        .unwrap();
    let state = t.path().join("state");
    let cfg = cfg_for(&f.root, &state);
    let first = gpu::discover_cached(&cfg).unwrap();
    let cache = state.join(gpu::CACHE_FILE);
    assert!(cache.exists());
    // A reused cache does not touch the libraries: remove one and the cached copy still has it.
    std::fs::remove_file(
        f.root
            .join(LIB_DIR)
            .join(format!("libnvidia-ml.so.{VERSION}")),
    )
    .unwrap();
    assert_eq!(gpu::discover_cached(&cfg).unwrap(), first);
    // Another GPU set is another key: the cache is ignored and rewritten.
    std::fs::remove_dir_all(f.root.join("proc/driver/nvidia/gpus/0000:86:00.0")).unwrap();
    let second = gpu::discover_cached(&cfg).unwrap();
    assert_eq!(second.gpus.len(), 1);
    assert!(!second
        .libraries
        .iter()
        .any(|l| l.prefix == "libnvidia-ml.so"));
}

#[test]
fn cache_is_keyed_on_the_mig_layout() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("root"))
        .unwrap();
    let cfg = cfg_for(&f.root, &t.path().join("state"));
    assert_eq!(gpu::discover_cached(&cfg).unwrap().mig_devices.len(), 1);
    // The MIG device is destroyed: same driver, same GPUs, another layout.
    std::fs::remove_dir_all(
        f.root
            .join("proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0"),
    )
    .unwrap();
    assert!(gpu::discover_cached(&cfg).unwrap().mig_devices.is_empty());
}

#[test]
fn tampered_or_foreign_cache_is_never_trusted() {
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("root"))
        .unwrap();
    let state = t.path().join("state");
    let cfg = cfg_for(&f.root, &state);
    let good = gpu::discover_cached(&cfg).unwrap();
    let cache = state.join(gpu::CACHE_FILE);
    let text = std::fs::read_to_string(&cache).unwrap();

    // A library path outside the driver root.
    let evil = text.replace(
        &f.root
            .join(LIB_DIR)
            .join(format!("libcuda.so.{VERSION}"))
            .display()
            .to_string(),
        &format!("/etc/libcuda.so.{VERSION}"),
    );
    assert_ne!(evil, text);
    std::fs::write(&cache, &evil).unwrap();
    assert_eq!(gpu::load_cache(&cache, &cfg.roots()).unwrap(), None);
    assert_eq!(gpu::discover_cached(&cfg).unwrap(), good);

    // Another format version.
    let other = text.replace(
        &format!("\"format\": {}", gpu::CACHE_FORMAT),
        "\"format\": 999",
    );
    assert_ne!(other, text);
    std::fs::write(&cache, &other).unwrap();
    assert_eq!(gpu::load_cache(&cache, &cfg.roots()).unwrap(), None);

    // Garbage.
    std::fs::write(&cache, "{not json").unwrap();
    assert_eq!(gpu::load_cache(&cache, &cfg.roots()).unwrap(), None);
    assert_eq!(gpu::discover_cached(&cfg).unwrap(), good);
}
