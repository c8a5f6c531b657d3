//! `--gpus` on `create` and `run` (root, real binary, fake two-GPU tree): a grant without
//! editing config.json, in place of the image's `NVIDIA_VISIBLE_DEVICES`, under the same
//! policy, leases and combining rule as every other request.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::process::Output;

fn run_with(node: &Node, rt: &Runtime, b: &Bundle, cid: &str, flags: &[&str]) -> Output {
    b.write();
    rt.track(cid);
    node.cmd(rt)
        .arg("run")
        .args(flags)
        .arg("-b")
        .arg(b.path())
        .arg(cid)
        .output()
        .unwrap()
}

fn cuda_image(script: &str) -> Bundle {
    let mut b = bundle(script);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    b
}

#[test]
fn gpus_flag_replaces_a_cuda_images_all_with_the_named_gpu() {
    if skip("gpus_flag_replaces_a_cuda_images_all_with_the_named_gpu") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let script = format!(
        "{} cat /dev/nvidia1; echo open1=$?; echo visible=$NVIDIA_VISIBLE_DEVICES",
        probe(&["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl"])
    );
    for (name, value, is_privileged) in [
        ("index", "1", false),
        ("index-privileged", "1", true),
        ("uuid", GPU1, false),
        ("pci", "0000:86:00.0", false),
        ("mig", "1:0", false),
    ] {
        let mut b = cuda_image(&script);
        if is_privileged {
            privileged(&mut b);
        }
        let out = run_with(
            &node,
            &rt,
            &b,
            &id(&format!("cli-{name}")),
            &["--gpus", value],
        );
        assert_ran(&out);
        for l in [
            "/dev/nvidia0=no",
            "/dev/nvidia1=yes",
            "/dev/nvidiactl=yes",
            "open1=1",
            &format!("visible={GPU1}"),
        ] {
            assert!(
                has_line(&out, l),
                "{name}: {l} missing from:\n{}",
                stdout(&out)
            );
        }
        assert!(
            stderr(&out).contains(&format!("can't open '/dev/nvidia1': {ENXIO}")),
            "{name}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn gpus_flag_against_a_cdi_annotation_for_another_gpu_is_refused_naming_both() {
    if skip("gpus_flag_against_a_cdi_annotation_for_another_gpu_is_refused_naming_both") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let spec = node.cdi_dir().join("nvidia.yaml");
    node.ok(
        &rt,
        &["cdi", "generate", "--output", spec.to_str().unwrap()],
    );
    let mut b = bundle("true");
    annotate(&mut b, "cdi.k8s.io/gpu", "nvidia.com/gpu=1");
    let cid = id("cli-conflict");
    let out = node.create_with(&rt, &b, &cid, &["--gpus", "0"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    for want in [
        "[gpu-request-conflict]",
        "--gpus 0",
        "nvidia.com/gpu=1",
        GPU0,
        GPU1,
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert!(!rt.root.path().join(&cid).exists());

    // Naming the same GPU is one grant: one holder, no conflict.
    let cid = id("cli-same");
    let out = node.create_with(&rt, &b, &cid, &["--gpus", "1"]);
    assert_ran(&out);
    assert!(
        !stderr(&out).contains("gpu-request-conflict"),
        "{}",
        stderr(&out)
    );
    let gpus = node.gpus_json(&rt);
    let on = |i: usize| -> Vec<String> {
        gpus[i]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(on(1), std::slice::from_ref(&cid), "one grant on GPU 1");
    assert!(on(0).is_empty());
    node.ok(&rt, &["delete", "--force", &cid]);
}

#[test]
fn gpus_flag_with_exclusive_holds_the_gpu_and_refuses_a_second_holder_by_name() {
    if skip("gpus_flag_with_exclusive_holds_the_gpu_and_refuses_a_second_holder_by_name") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let b = cuda_image("true");
    let first = id("cli-excl");
    assert_ran(&node.create_with(&rt, &b, &first, &["--gpus", "0", "--exclusive"]));
    let gpus = node.gpus_json(&rt);
    let g0 = gpus.iter().find(|g| g["uuid"] == GPU0).unwrap();
    assert_eq!(g0["holders"][0]["id"], first.as_str());
    assert_eq!(g0["holders"][0]["sharing"], "exclusive");

    let second = id("cli-second");
    let out = node.create_with(&rt, &b, &second, &["--gpus", "0"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("[gpu-exclusive-held]") && err.contains(&first),
        "{err}"
    );
    // GPU 1 is free.
    let third = id("cli-third");
    assert_ran(&node.create_with(&rt, &b, &third, &["--gpus", "1"]));
    for c in [&first, &third] {
        node.ok(&rt, &["delete", "--force", c]);
    }
}

#[test]
fn exclusive_without_gpus_is_a_usage_error() {
    let out = Runtime::new()
        .cmd()
        .args(["create", "--exclusive", "x"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--gpus"), "{}", stderr(&out));
}
