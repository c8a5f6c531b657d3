//! NVML enrichment through the real binary (root), on the fake node whose nvidia-smi
//! answers like a current driver: a CUDA requirement refused by name, a MIG device by
//! UUID, `gpurun gpus` with memory and each container's GPU processes.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use gpurun::gpu::fake::{smi, LIB_DIR, VERSION};
use serde_json::Value;

#[test]
fn a_cuda_requirement_above_the_drivers_refuses_create_naming_it() {
    if skip("a_cuda_requirement_above_the_drivers_refuses_create_naming_it") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("true");
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    set_env(&mut b, "NVIDIA_REQUIRE_CUDA=cuda>=99.0");
    privileged(&mut b);
    let cid = id("cuda99");
    let out = node.create(&rt, &b, &cid);
    assert!(!out.status.success(), "a CUDA 99 image was accepted");
    let err = stderr(&out);
    assert!(
        err.contains("unsatisfied condition") && err.contains("NVIDIA_REQUIRE_CUDA=cuda>=99.0"),
        "{err}"
    );
    assert!(
        !rt.ok(&["list", "-q"]).lines().any(|l| l == cid),
        "a refused create leaves no state"
    );
    // The miss asked the driver's nvidia-smi (CUDA 12.8 on the fake tree) once.
    let asked = node.smi_calls();
    assert!(asked.iter().any(|c| c == "-q -x"), "{asked:?}");

    // What the driver gives is enough for an image needing CUDA 12: it runs, and the
    // cached facts decide it without running nvidia-smi again.
    let mut b = bundle("echo ran");
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    set_env(
        &mut b,
        &format!("NVIDIA_REQUIRE_CUDA=cuda>={}", smi::CUDA_VERSION),
    );
    set_env(&mut b, "NVIDIA_REQUIRE_ARCH=arch>=8.0");
    privileged(&mut b);
    let out = node.run(&rt, &b, &id("cuda12"));
    assert_ran(&out);
    assert!(has_line(&out, "ran"), "{}", stdout(&out));
    assert_eq!(
        node.smi_calls(),
        asked,
        "a start with a valid cache ran nvidia-smi"
    );
}

#[test]
fn a_mig_uuid_request_injects_the_mig_devices_nodes() {
    if skip("a_mig_uuid_request_injects_the_mig_devices_nodes") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let access = "/proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0/access";
    let mut b = bundle(&format!(
        "{} cat /dev/nvidia-caps/nvidia-cap13; echo open13=$?; cat {access}",
        probe(&[
            "/dev/nvidia1",
            "/dev/nvidia-caps/nvidia-cap12",
            "/dev/nvidia-caps/nvidia-cap13",
            "/dev/nvidia0",
        ])
    ));
    set_env(&mut b, &format!("NVIDIA_VISIBLE_DEVICES={}", smi::MIG_UUID));
    // An image's preload never reaches the host-side nvidia-smi (CVE-2025-23266).
    set_env(&mut b, "LD_PRELOAD=/proc/self/cwd/poc.so");
    privileged(&mut b);
    let out = node.run(&rt, &b, &id("mig"));
    assert_ran(&out);
    for l in [
        "/dev/nvidia1=yes",
        "/dev/nvidia-caps/nvidia-cap12=yes",
        "/dev/nvidia-caps/nvidia-cap13=yes",
        "/dev/nvidia0=no",
        "open13=1",
        "DeviceFileMinor: 13",
    ] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "can't open '/dev/nvidia-caps/nvidia-cap13': {ENXIO}"
        )),
        "the CI node is allowed by the device cgroup: {err}"
    );
    let smi_env = std::fs::read_to_string(node.host().join(smi::ENV)).unwrap();
    assert!(!smi_env.contains("poc.so"), "{smi_env}");
    let preload: Vec<&str> = smi_env
        .lines()
        .filter_map(|l| l.strip_prefix("LD_PRELOAD="))
        .collect();
    let nvml = node
        .host()
        .join(LIB_DIR)
        .join(format!("libnvidia-ml.so.{VERSION}"));
    assert_eq!(
        preload,
        [nvml.display().to_string()],
        "only the driver's own NVML"
    );
}

#[test]
fn gpus_shows_memory_and_each_containers_gpu_processes() {
    if skip("gpus_shows_memory_and_each_containers_gpu_processes") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("sleep 60 & wait");
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut b);
    let cid = id("procs");
    let out = node.create(&rt, &b, &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.ok(&["start", &cid]);
    let init = rt.state(&cid)["pid"].as_i64().unwrap();
    // The container's `sleep`: a child of its init, in its pid namespace and cgroups.
    let children = format!("/proc/{init}/task/{init}/children");
    let mut sleeper = String::new();
    for _ in 0..200 {
        sleeper = std::fs::read_to_string(&children).unwrap_or_default();
        if !sleeper.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let sleeper: i64 = sleeper.split_whitespace().next().unwrap().parse().unwrap();
    let me = std::process::id();
    std::fs::write(
        node.host().join(smi::COMPUTE_APPS),
        format!(
            "{sleeper}, {GPU0}, 300\n{me}, {GPU0}, 5\n{init}, {}, [N/A]\n",
            smi::MIG_UUID
        ),
    )
    .unwrap();

    let gpus = node.gpus_json(&rt);
    assert_eq!(gpus[0]["memory_used_mib"], 1);
    assert_eq!(gpus[0]["memory_total_mib"], 40960);
    assert_eq!(gpus[1]["memory_used_mib"], Value::Null, "[N/A] in MIG mode");
    assert_eq!(gpus[0]["compute_capability"], smi::COMPUTE_CAP);
    assert_eq!(gpus[0]["brand"], smi::BRAND);
    assert_eq!(gpus[1]["mig_devices"][0]["uuid"], smi::MIG_UUID);
    let procs = gpus[0]["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "{procs:?}");
    assert_eq!(procs[0]["pid"], sleeper);
    assert_eq!(procs[0]["used_memory_mib"], 300);
    assert_eq!(procs[0]["container"], cid.as_str());
    assert_eq!(procs[1]["pid"], i64::from(me));
    assert_eq!(procs[1]["container"], Value::Null, "a host process");
    // A process on a MIG device is listed under its parent GPU.
    let procs = gpus[1]["processes"].as_array().unwrap();
    assert_eq!(procs[0]["pid"], init);
    assert_eq!(procs[0]["container"], cid.as_str());

    let table = node.ok(&rt, &["gpus"]);
    let head = table.lines().next().unwrap();
    assert!(
        head.contains("MEMORY") && head.ends_with("PROCESSES"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.contains(GPU0)
            && l.contains("1/40960 MiB")
            && l.contains(&format!("{sleeper} ({cid}, 300 MiB)"))),
        "{table}"
    );
}

#[test]
fn a_cold_cache_is_enriched_in_the_background_after_the_first_start() {
    if skip("a_cold_cache_is_enriched_in_the_background_after_the_first_start") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("echo ran");
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut b);
    let out = node.run(&rt, &b, &id("coldbg"));
    assert_ran(&out);
    assert!(has_line(&out, "ran"), "{}", stdout(&out));
    // `gpurun refresh-gpus`, started by that create, rewrites the cache with nvidia-smi's
    // facts and releases its marker.
    let state = node.dir.path().join("state");
    let cache = state.join("discovery.json");
    let enriched = || {
        std::fs::read_to_string(&cache)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| {
                v["inventory"]["cuda_version"] == smi::CUDA_VERSION
                    && v["inventory"]["enrichment"]["pending"] == false
            })
    };
    let mut tries = 0;
    while !enriched() || state.join("discovery.refreshing").exists() {
        tries += 1;
        assert!(
            tries < 600,
            "the cache was not enriched in 60 s: {:?}",
            std::fs::read_to_string(&cache)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(node.smi_calls().iter().any(|c| c == "-q -x"));
}
