//! NVML enrichment through the driver root's nvidia-smi: the readers on outputs shaped like
//! real drivers' (and odd ones), and enrichment on the fake tree — a healthy driver, an old
//! one, a failing one, a hung one, none — and the cache that keeps starts from running it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use gpurun::config::Config;
use gpurun::gpu::fake::{smi, FakeDriver, FakeSmi};
use gpurun::gpu::nvml::{self, parse};
use gpurun::gpu::{self, Inventory, Roots};

const GPU0: &str = "GPU-00000000-0000-0000-0000-000000000000";
const GPU1: &str = "GPU-11111111-1111-1111-1111-111111111111";

/// An H100 node as `nvidia-smi -q -x` prints it (elements gpurun does not read trimmed):
/// GPU 0 in MIG mode with two MIG devices, GPU 1 not, odd spacing and `N/A` values.
const H100_XML: &str = r#"<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
	<timestamp>Wed Jan 15 09:41:07 2025</timestamp>
	<driver_version>550.127.08</driver_version>
	<cuda_version>12.4</cuda_version>
	<attached_gpus>2</attached_gpus>
	<gpu id="00000000:1B:00.0">
		<product_name>NVIDIA H100 80GB HBM3</product_name>
		<product_brand>NVIDIA</product_brand>
		<product_architecture>Hopper</product_architecture>
		<mig_mode>
			<current_mig>Enabled</current_mig>
			<pending_mig>Enabled</pending_mig>
		</mig_mode>
		<mig_devices>
			<mig_device>
				<index>0</index>
				<gpu_instance_id>2</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
				<device_attributes>
					<shared>
						<multiprocessor_count>60</multiprocessor_count>
					</shared>
				</device_attributes>
				<fb_memory_usage>
					<total>40192 MiB</total>
					<used>88 MiB</used>
				</fb_memory_usage>
			</mig_device>
			<mig_device>
				<index>1</index>
				<gpu_instance_id>9</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
			</mig_device>
			<mig_device>
				<index>2</index>
				<gpu_instance_id>9</gpu_instance_id>
			</mig_device>
		</mig_devices>
		<uuid>GPU-6a1e3b92-4f0c-8d27-b315-9e2c7d08f4a1</uuid>
		<minor_number>3</minor_number>
		<pci>
			<pci_bus>1B</pci_bus>
			<pci_bus_id>00000000:1B:00.0</pci_bus_id>
		</pci>
		<fb_memory_usage>
			<total>81559 MiB</total>
			<reserved>N/A</reserved>
			<used>N/A</used>
		</fb_memory_usage>
		<processes>
		</processes>
	</gpu>

	<gpu id="00000000:9A:00.0">
		<product_name>NVIDIA H100 80GB HBM3</product_name>
		<product_brand>   NVIDIA   </product_brand>
		<mig_mode>
			<current_mig>Disabled</current_mig>
			<pending_mig>Disabled</pending_mig>
		</mig_mode>
		<mig_devices>
			None
		</mig_devices>
		<uuid>GPU-0f42c5d8-91b3-6e70-a4c9-2d85e1b73f06</uuid>
		<minor_number>N/A</minor_number>
		<fb_memory_usage>
			<total>81559 MiB</total>
			<used>512 MiB</used>
		</fb_memory_usage>
		<processes>
			<process_info>
				<gpu_instance_id>N/A</gpu_instance_id>
				<compute_instance_id>N/A</compute_instance_id>
				<pid>4242</pid>
				<type>C</type>
				<process_name>/usr/bin/python3 &lt;train&gt;</process_name>
				<used_memory>498 MiB</used_memory>
			</process_info>
		</processes>
	</gpu>
</nvidia_smi_log>
"#;

#[test]
fn query_xml_of_an_h100_node_with_mig() {
    let q = parse::query_xml(H100_XML).unwrap();
    assert_eq!(q.driver_version.as_deref(), Some("550.127.08"));
    assert_eq!(q.cuda_version.as_deref(), Some("12.4"));
    assert_eq!(q.gpus.len(), 2);
    let g = &q.gpus[0];
    assert_eq!(g.bus.unwrap().to_string(), "0000:1b:00.0");
    assert_eq!(
        g.uuid.as_deref(),
        Some("GPU-6a1e3b92-4f0c-8d27-b315-9e2c7d08f4a1")
    );
    assert_eq!(g.name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(g.brand.as_deref(), Some("NVIDIA"));
    assert_eq!(g.minor, Some(3));
    assert_eq!((g.memory_used_mib, g.memory_total_mib), (None, Some(81559)));
    // The third MIG device lacks its compute instance id: skipped, not guessed.
    let mig: Vec<(u32, u32, u32)> = g.mig.iter().map(|m| (m.index, m.gi, m.ci)).collect();
    assert_eq!(mig, [(0, 2, 0), (1, 9, 0)]);
    let g = &q.gpus[1];
    assert_eq!(g.brand.as_deref(), Some("NVIDIA"), "whitespace trimmed");
    assert_eq!(g.minor, None, "N/A");
    assert!(g.mig.is_empty(), "`None`");
    assert_eq!(g.memory_used_mib, Some(512));
}

#[test]
fn query_xml_odd_and_broken_outputs() {
    // An old driver: no cuda_version, brand Tesla; a GPU whose UUID is unreadable; values
    // nvidia-smi could not get.
    let old = r#"<?xml version="1.0" ?>
<nvidia_smi_log>
  <driver_version>418.226.00</driver_version>
  <gpu id="00000000:00:1E.0">
    <product_name>Tesla V100-SXM2-16GB</product_name>
    <product_brand>Tesla</product_brand>
    <uuid>[Unknown Error]</uuid>
    <minor_number>0</minor_number>
  </gpu>
  <gpu id="0000:3B:00.0">
    <product_brand>[Not Supported]</product_brand>
    <uuid>GPU-2c1f0e9a-77d4-43b1-8e5a-0b6f9d3c2a11</uuid>
    <some_future_element><nested>1</nested></some_future_element>
  </gpu>
</nvidia_smi_log>"#;
    let q = parse::query_xml(old).unwrap();
    assert_eq!(q.cuda_version, None);
    assert_eq!(q.gpus[0].uuid, None);
    assert_eq!(q.gpus[0].brand.as_deref(), Some("Tesla"));
    assert_eq!(q.gpus[1].brand, None);
    assert_eq!(q.gpus[1].bus.unwrap().to_string(), "0000:3b:00.0");
    // A version that is not one is dropped.
    let q = parse::query_xml("<nvidia_smi_log><cuda_version>12.x</cuda_version></nvidia_smi_log>")
        .unwrap();
    assert_eq!(q.cuda_version, None);
    for bad in [
        "",
        "fake-nvidia-smi\n",
        "<html><body>not it</body></html>",
        "<nvidia_smi_log><gpu>",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    ] {
        assert!(parse::query_xml(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn list_of_an_a100_node_with_mig_current_and_legacy_names() {
    let text = "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365)\n\
  MIG 3g.40gb     Device  0: (UUID: MIG-a1f2c3d4-5e6f-5a7b-8c9d-0e1f2a3b4c5d)\n\
  MIG 1g.10gb     Device  1: (UUID: MIG-b2e3d4c5-6f70-5b8c-9dae-1f203b4c5d6e)\n\
  MIG 1g.10gb     Device 12: (UUID: MIG-c3f4e5d6-7081-5c9d-aebf-20314c5d6e7f)   \n\
Unable to determine the device handle for GPU 0000:47:00.0: Unknown Error\n\
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-7e05a2d1-c384-9b6f-10da-e2f7c5b83049)\r\n\
GPU 2: A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)\n\
  MIG 3g.20gb Device 0: (UUID: MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0)\n";
    let l = parse::list(text);
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].index, Some(0));
    assert_eq!(l[0].uuid, "GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365");
    let idx: Vec<Option<u32>> = l[0].mig.iter().map(|m| m.index).collect();
    assert_eq!(idx, [Some(0), Some(1), Some(12)]);
    assert_eq!(l[0].mig[2].uuid, "MIG-c3f4e5d6-7081-5c9d-aebf-20314c5d6e7f");
    assert!(l[0].mig.iter().all(|m| m.legacy_ids.is_none()));
    assert_eq!(l[1].uuid, "GPU-7e05a2d1-c384-9b6f-10da-e2f7c5b83049");
    assert!(l[1].mig.is_empty());
    assert_eq!(l[2].mig[0].legacy_ids, Some((1, 0)));
    // MIG lines before any GPU, and lines without a UUID, are skipped.
    assert!(parse::list("  MIG 1g.5gb Device 0: (UUID: MIG-x)\nGPU 0: no uuid\n").is_empty());
    assert!(parse::list("").is_empty());
}

#[test]
fn csv_queries_with_odd_values() {
    let caps = parse::compute_caps(
        "GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365, 8.0\n\
         GPU-7e05a2d1-c384-9b6f-10da-e2f7c5b83049,   9.0   \n\
         GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77, [N/A]\n\
         \n\
         not a row\n\
         GPU-0f42c5d8-91b3-6e70-a4c9-2d85e1b73f06, 12.0, extra\n",
    );
    assert_eq!(
        caps,
        [
            (
                "GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365".into(),
                Some("8.0".into())
            ),
            (
                "GPU-7e05a2d1-c384-9b6f-10da-e2f7c5b83049".into(),
                Some("9.0".into())
            ),
            ("GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77".into(), None),
        ]
    );
    assert!(parse::is_unknown_field_error(
        "Field \"compute_cap\" is not a valid field to query."
    ));
    let apps = parse::compute_apps(
        "4242, GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365, 498\n\
         17, GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365, [N/A]\n\
         [Insufficient Permissions], GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365, 3\n\
         -1, GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365, 3\n",
    );
    let got: Vec<(i32, Option<u64>)> = apps.iter().map(|a| (a.pid, a.used_mib)).collect();
    assert_eq!(got, [(4242, Some(498)), (17, None)]);
    let mem = parse::memory("GPU-3d9b1c47-52ea-0f86-b7c2-41e0d8a9f365, [N/A], 81559\n");
    assert_eq!(mem[0].1, None);
    assert_eq!(mem[0].2, Some(81559));
}

fn tree(smi: FakeSmi) -> (tempfile::TempDir, FakeDriver) {
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .smi(smi)
        .build(&t.path().join("root"))
        .unwrap();
    (t, f)
}

fn calls(f: &FakeDriver) -> Vec<String> {
    std::fs::read_to_string(f.root.join(smi::CALLS))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// (compute capability, brand) of one GPU.
type DeviceFacts<'a> = (Option<&'a str>, Option<&'a str>);

/// The CUDA version and each GPU's facts.
fn facts(inv: &Inventory) -> (Option<&str>, Vec<DeviceFacts<'_>>) {
    (
        inv.cuda_version.as_deref(),
        inv.gpus
            .iter()
            .map(|g| (g.compute_capability.as_deref(), g.brand.as_deref()))
            .collect(),
    )
}

#[test]
fn a_current_driver_gives_every_fact() {
    let (_t, f) = tree(FakeSmi::Recorded);
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert_eq!(
        facts(&inv),
        (
            Some(smi::CUDA_VERSION),
            vec![(Some(smi::COMPUTE_CAP), Some(smi::BRAND)); 2]
        )
    );
    let m = &inv.mig_devices[0];
    assert_eq!((m.uuid.as_deref(), m.index), (Some(smi::MIG_UUID), Some(0)));
    assert_eq!(
        inv.enrichment.smi.as_deref(),
        Some(f.root.join("usr/bin/nvidia-smi").as_path())
    );
    assert!(!inv.enrichment.failed);
    assert!(
        inv.enrichment.notes.is_empty(),
        "{:?}",
        inv.enrichment.notes
    );
    assert_eq!(inv.enrichment.warning(), None);
    assert_eq!(
        calls(&f),
        [
            "-q -x",
            "-L",
            "--query-gpu=uuid,compute_cap --format=csv,noheader"
        ]
    );
}

#[test]
fn an_old_driver_without_compute_cap_and_with_legacy_mig_names() {
    let (_t, f) = tree(FakeSmi::OldDriver);
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert_eq!(
        facts(&inv),
        (Some(smi::CUDA_VERSION), vec![(None, Some("Tesla")); 2])
    );
    assert!(!inv.enrichment.failed, "a missing field is not a failure");
    let w = inv.enrichment.warning().unwrap();
    assert!(w.contains("no compute_cap field"), "{w}");
    assert!(
        w.contains(&format!("compute capability unknown for {GPU0}, {GPU1}")),
        "{w}"
    );
    // The legacy name carries GI and CI, so the device is named without an index.
    let legacy = format!("MIG-{GPU1}/1/0");
    assert_eq!(inv.mig_devices[0].uuid.as_deref(), Some(legacy.as_str()));
    let sel = gpu::request::resolve(&gpu::request::parse_visible_devices(&legacy).unwrap(), &inv)
        .unwrap();
    assert_eq!(sel.mig.len(), 1);
    assert_eq!(sel.gpus[0].uuid, GPU1);
}

#[test]
fn a_failing_driver_leaves_facts_unknown_and_says_why() {
    let (_t, f) = tree(FakeSmi::Fails);
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert_eq!(facts(&inv), (None, vec![(None, None); 2]));
    assert!(inv.enrichment.failed);
    let w = inv.enrichment.warning().unwrap();
    assert!(
        w.contains("exited with exit status: 9") && w.contains("couldn't communicate"),
        "{w}"
    );
    // Garbage is no better than a failure.
    let (_t, f) = tree(FakeSmi::Echo);
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert_eq!(facts(&inv), (None, vec![(None, None); 2]));
    assert!(inv.enrichment.failed);
    assert!(
        inv.enrichment
            .warning()
            .unwrap()
            .contains("unreadable output"),
        "{:?}",
        inv.enrichment
    );
}

#[test]
fn no_nvidia_smi_in_the_driver_root_is_a_note_not_an_error() {
    let t = tempfile::tempdir().unwrap();
    let mut b = FakeDriver::two_gpus();
    b.binaries = vec!["nvidia-cuda-mps-control"];
    let f = b.build(&t.path().join("root")).unwrap();
    // Another nvidia-smi on $PATH (the host's) is never used.
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    assert_eq!(facts(&inv), (None, vec![(None, None); 2]));
    assert_eq!(inv.enrichment.smi, None);
    assert!(!inv.enrichment.failed);
    let w = inv.enrichment.warning().unwrap();
    assert!(w.contains("no nvidia-smi under the driver root"), "{w}");
}

#[test]
fn a_hung_driver_is_killed_and_reaped_and_discovery_completes() {
    let (_t, f) = tree(FakeSmi::Hangs);
    let inv = gpu::discover_with(&Roots::at(&f.root), Duration::from_millis(300)).unwrap();
    assert_eq!(inv.gpus.len(), 2, "discovery itself completed");
    assert_eq!(facts(&inv), (None, vec![(None, None); 2]));
    assert!(inv.enrichment.failed);
    let w = inv.enrichment.warning().unwrap();
    assert!(w.contains("did not finish within"), "{w}");
    // One hang ends enrichment: nothing else was asked of the driver.
    assert_eq!(calls(&f), ["-q -x"]);
    let pid = std::fs::read_to_string(f.root.join(smi::PID)).unwrap();
    let pid = pid.trim();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "nvidia-smi (pid {pid}) was reaped, not left running or a zombie"
    );
}

fn cfg_for(root: &Path, state: &Path) -> Config {
    gpurun::gpu::fake::config(root, state)
}

#[test]
fn a_valid_cache_never_runs_nvidia_smi() {
    let (t, f) = tree(FakeSmi::Recorded);
    let cfg = cfg_for(&f.root, &t.path().join("state"));
    let first = gpu::discover_cached(&cfg).unwrap();
    let ran = calls(&f).len();
    assert_eq!(ran, 3, "the miss enriched: {:?}", calls(&f));
    for _ in 0..3 {
        assert_eq!(gpu::discover_cached(&cfg).unwrap(), first);
    }
    assert_eq!(calls(&f).len(), ran, "cache hits ran nothing");
    // The cached facts are the enriched ones.
    assert_eq!(first.cuda_version.as_deref(), Some(smi::CUDA_VERSION));
    // An explicit rediscovery asks again.
    gpu::rediscover(&cfg).unwrap();
    assert_eq!(calls(&f).len(), 2 * ran);
}

#[test]
fn a_cache_with_implausible_facts_is_not_trusted() {
    let (t, f) = tree(FakeSmi::Recorded);
    let cfg = cfg_for(&f.root, &t.path().join("state"));
    gpu::discover_cached(&cfg).unwrap();
    let cache = t.path().join("state").join(gpu::CACHE_FILE);
    let text = std::fs::read_to_string(&cache).unwrap();
    for (from, to) in [
        (smi::MIG_UUID.to_string(), "MIG-x y".to_string()),
        (
            format!("\"cuda_version\": \"{}\"", smi::CUDA_VERSION),
            "\"cuda_version\": \"12; rm -rf\"".to_string(),
        ),
        (
            format!("{}", f.root.join("usr/bin/nvidia-smi").display()),
            "/usr/bin/nvidia-smi".to_string(),
        ),
    ] {
        let evil = text.replace(&from, &to);
        assert_ne!(evil, text, "{from}");
        std::fs::write(&cache, &evil).unwrap();
        assert_eq!(gpu::load_cache(&cache, &cfg.roots()).unwrap(), None, "{to}");
    }
}

#[test]
fn live_memory_and_processes() {
    let (_t, f) = tree(FakeSmi::Recorded);
    let inv = gpu::discover(&Roots::at(&f.root)).unwrap();
    std::fs::write(
        f.root.join(smi::COMPUTE_APPS),
        format!("4242, {GPU0}, 498\n77, {GPU1}, [N/A]\n"),
    )
    .unwrap();
    let live = nvml::live(&inv, Duration::from_secs(30)).unwrap();
    assert_eq!(
        live.memory,
        [
            (GPU0.to_string(), Some(1), Some(40960)),
            (GPU1.to_string(), None, Some(40960))
        ]
    );
    let apps: Vec<(i32, &str, Option<u64>)> = live
        .apps
        .iter()
        .map(|a| (a.pid, a.gpu_uuid.as_str(), a.used_mib))
        .collect();
    assert_eq!(apps, [(4242, GPU0, Some(498)), (77, GPU1, None)]);
    // A hung driver is an error, not a hang.
    let (_t, f) = tree(FakeSmi::Hangs);
    let mut inv2 = inv.clone();
    inv2.binaries[0].host_path = f.root.join("usr/bin/nvidia-smi");
    assert!(nvml::live(&inv2, Duration::from_millis(200)).is_err());
}

#[test]
fn a_start_on_a_cold_cache_runs_no_nvidia_smi_and_one_refresh_at_a_time() {
    let (t, f) = tree(FakeSmi::Recorded);
    let cfg = cfg_for(&f.root, &t.path().join("state"));
    let inv = gpu::discover_for_start(&cfg).unwrap();
    assert!(inv.enrichment.pending, "{:?}", inv.enrichment);
    assert_eq!(facts(&inv).0, None, "no CUDA version before the refresh");
    assert!(calls(&f).is_empty(), "the start path ran nvidia-smi");
    // The pending inventory is cached: the next start reads it, still without nvidia-smi.
    assert!(gpu::discover_for_start(&cfg).unwrap().enrichment.pending);
    assert!(calls(&f).is_empty());

    // One refresh at a time: a second start while one runs spawns nothing.
    let spawned = std::cell::Cell::new(0);
    let spawn = || {
        spawned.set(spawned.get() + 1);
        Ok(())
    };
    gpu::start_refresh(&cfg, spawn);
    gpu::start_refresh(&cfg, spawn);
    assert_eq!(spawned.get(), 1);
    // A marker left by a refresh that died long ago does not block the next one.
    let marker = cfg.gpus.state_dir.join("discovery.refreshing");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&marker)
        .unwrap()
        .set_modified(old)
        .unwrap();
    gpu::start_refresh(&cfg, spawn);
    assert_eq!(spawned.get(), 2);
    // A spawn that fails releases the marker.
    gpu::refresh(&cfg).unwrap();
    gpu::start_refresh(&cfg, || Err(std::io::Error::other("no fork")));
    assert!(!marker.exists());

    // The refresh itself enriched the cache and released its marker.
    let inv = gpu::discover_for_start(&cfg).unwrap();
    assert!(!inv.enrichment.pending);
    assert_eq!(facts(&inv).0, Some(smi::CUDA_VERSION));
    assert!(calls(&f).iter().any(|c| c == "-q -x"));
}

#[test]
fn a_refresh_never_makes_a_removed_state_directory_again() {
    let (t, f) = tree(FakeSmi::Recorded);
    let state = t.path().join("state");
    let cfg = cfg_for(&f.root, &state);
    gpu::discover_for_start(&cfg).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
    assert!(gpu::refresh(&cfg).is_err());
    assert!(!state.exists());
}
