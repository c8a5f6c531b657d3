//! Requests that depend on what NVML enrichment learnt: `NVIDIA_REQUIRE_*` over the CUDA
//! version, compute capability and brand, and MIG devices by UUID or index.

#![allow(clippy::unwrap_used)]

mod gpu_support;
use gpu_support::*;

use gpurun::gpu;
use gpurun::gpu::fake::{self, FakeSmi};

#[test]
fn requirements_are_checked_before_anything_is_edited() {
    let e = env();
    let (s, r) = e.run(
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_REQUIRE_DRIVER=driver>=1000",
        ],
        true,
    );
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("unsatisfied condition") && msg.contains("driver>=1000"),
        "{msg}"
    );
    assert!(
        device_paths(&s).is_empty(),
        "no edit on a refused requirement"
    );

    let (_, inj) = e.ok(&[
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_REQUIRE_DRIVER=driver>=1000",
        "NVIDIA_DISABLE_REQUIRE=true",
    ]);
    assert!(inj.warnings.is_empty());

    // The driver's nvidia-smi says CUDA 12.8, compute capability 8.0, brand NVIDIA: every
    // term is decided, and an image needing more is refused by name.
    let (_, inj) = e.ok(&[
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla,driver>=418",
    ]);
    assert!(inj.warnings.is_empty(), "{:?}", inj.warnings);
    for (var, refused) in [
        ("NVIDIA_REQUIRE_CUDA=cuda>=12.8", false),
        ("NVIDIA_REQUIRE_CUDA=cuda>=13.0", true),
        (
            "NVIDIA_REQUIRE_CUDA=cuda>=13.0 brand=nvidia,driver>=999",
            false,
        ),
        ("NVIDIA_REQUIRE_ARCH=arch>=8.0", false),
        ("NVIDIA_REQUIRE_ARCH=arch>=9.0", true),
        ("NVIDIA_REQUIRE_BRAND=brand=nvidia", false),
        ("NVIDIA_REQUIRE_BRAND=brand=tesla", true),
        ("NVIDIA_REQUIRE_BRAND=brand=tesla brand=nvidia", false),
    ] {
        let (s, r) = e.run(&["NVIDIA_VISIBLE_DEVICES=0", var], true);
        match r {
            Ok(inj) => {
                assert!(!refused, "{var} passed");
                assert!(inj.unwrap().warnings.is_empty(), "{var}");
            }
            Err(err) => {
                let msg = err.to_string();
                assert!(refused, "{var}: {msg}");
                assert!(msg.contains(var), "{msg}");
                assert!(device_paths(&s).is_empty());
            }
        }
    }

    // When nvidia-smi could not answer, the same facts are unknown: a warning, not a
    // refusal. Unknown OR (false AND true) is unknown: it passes, with a warning naming it.
    let e = env_smi(FakeSmi::Fails);
    let (_, inj) = e.ok(&[
        "NVIDIA_VISIBLE_DEVICES=0",
        "NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla,driver>=418",
    ]);
    assert_eq!(inj.warnings.len(), 1);
    assert!(
        inj.warnings[0].contains("brand (brand=tesla)"),
        "{:?}",
        inj.warnings
    );
    // Unknown AND false is false.
    let (_, r) = e.run(
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0,driver>=1000",
        ],
        true,
    );
    assert!(r.is_err());
    let (_, inj) = e.ok(&["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.0"]);
    assert_eq!(inj.warnings.len(), 1);
    assert!(
        inj.warnings[0].contains("unknown cuda") && inj.warnings[0].contains("nvidia-smi"),
        "{:?}",
        inj.warnings
    );
}

#[test]
fn legacy_cuda_image_asks_for_everything_and_its_cuda_version() {
    let e = env();
    let (_, inj) = e.ok(&["CUDA_VERSION=11.8.0"]);
    assert_eq!(inj.grant.gpus, [GPU0, GPU1]);
    assert_eq!(inj.grant.capabilities, gpu::Capabilities::all());
    assert!(inj.warnings.is_empty(), "{:?}", inj.warnings);
    // The driver's CUDA 12.8 is too old for a CUDA 13.0 image.
    let (_, r) = e.run(&["CUDA_VERSION=13.0.1"], true);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("CUDA_VERSION=cuda>=13.0"), "{msg}");
    // Unknown to a driver that did not answer: a warning.
    let (_, inj) = env_smi(FakeSmi::Fails).ok(&["CUDA_VERSION=11.8.0"]);
    assert!(
        inj.warnings.iter().any(|w| w.contains("cuda>=11.8")),
        "{:?}",
        inj.warnings
    );
    // A modern image sets NVIDIA_REQUIRE_CUDA and is not legacy.
    let (_, r) = e.run(
        &["CUDA_VERSION=12.4.0", "NVIDIA_REQUIRE_CUDA=cuda>=12.4"],
        true,
    );
    assert!(r.unwrap().is_none());
}

#[test]
fn mig_device_by_uuid_or_index_gets_cap_nodes_and_access_files() {
    let e = env();
    let upper = format!("MIG-{}", fake::smi::MIG_UUID[4..].to_uppercase());
    for id in [fake::smi::MIG_UUID, upper.as_str(), "1:0"] {
        let (s, inj) = e.ok(&[&format!("NVIDIA_VISIBLE_DEVICES={id}")]);
        assert_eq!(inj.grant.gpus, [GPU1], "the parent GPU");
        assert_eq!(inj.grant.mig_devices, ["gpu1/gi1/ci0"]);
        let d = device_paths(&s);
        for p in [
            "/dev/nvidia1",
            "/dev/nvidia-caps/nvidia-cap12",
            "/dev/nvidia-caps/nvidia-cap13",
        ] {
            assert!(d.contains(&p.to_string()), "{p} in {d:?}");
        }
        assert!(rules(&s).contains(&"c 236:13 rwm".to_string()));
        let a = mount_at(
            &s,
            "/proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0/access",
        )
        .unwrap();
        assert_eq!(
            a.source().as_deref(),
            Some(
                e.root
                    .join("proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0/access")
                    .as_path()
            )
        );
    }
}
