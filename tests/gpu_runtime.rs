//! GPU injection with the real binary (root): containers on the fake two-GPU driver tree.
//! The fake tree's device nodes are real character devices with NVIDIA's numbers but no
//! driver behind them, so opening one shows the device cgroup's verdict exactly: ENXIO
//! when the rule allows it, EPERM when it does not.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::path::Path;
use std::process::Command;

use gpurun::gpu::fake::{LIB_DIR, VERSION};
use serde_json::Value;

#[test]
fn gpu0_granted_by_env_gets_its_nodes_and_the_cgroup_allows_only_them() {
    if skip("gpu0_granted_by_env_gets_its_nodes_and_the_cgroup_allows_only_them") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle(&format!(
        "{} cat /dev/nvidia0; echo open0=$?; \
         mknod /dev/nvidia1 c 195 1; echo mknod1=$?; cat /dev/nvidia1; echo open1=$?",
        probe(&[
            "/dev/nvidia0",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia1"
        ])
    ));
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut b);
    add_cap(&mut b, "CAP_MKNOD", &["bounding", "effective", "permitted"]);
    let out = node.run(&rt, &b, &id("gpu0"));
    assert_ran(&out);
    for l in [
        "/dev/nvidia0=yes",
        "/dev/nvidiactl=yes",
        "/dev/nvidia-uvm=yes",
        "/dev/nvidia1=no",
        "open0=1",
        "mknod1=0",
        "open1=1",
    ] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    let err = stderr(&out);
    assert!(
        err.contains(&format!("can't open '/dev/nvidia0': {ENXIO}")),
        "the granted node is allowed by the device cgroup and has no driver: {err}"
    );
    assert!(
        err.contains(&format!("can't open '/dev/nvidia1': {EPERM}")),
        "the other GPU's node is denied by the device cgroup: {err}"
    );
}

#[test]
fn without_a_grant_the_default_device_rules_deny_a_mknoded_gpu_node() {
    if skip("without_a_grant_the_default_device_rules_deny_a_mknoded_gpu_node") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle(
        "mknod /dev/nvidia1 c 195 1; echo mknod=$?; cat /dev/nvidia1; echo open=$?; \
         mknod /dev/nvidia0 c 195 0; cat /dev/nvidia0; echo open0=$?",
    );
    add_cap(&mut b, "CAP_MKNOD", &["bounding", "effective", "permitted"]);
    let out = node.run(&rt, &b, &id("nogpu"));
    assert_ran(&out);
    for l in ["mknod=0", "open=1", "open0=1"] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    let err = stderr(&out);
    assert!(
        err.contains(&format!("can't open '/dev/nvidia1': {EPERM}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("can't open '/dev/nvidia0': {EPERM}")),
        "{err}"
    );
    assert!(!err.contains(ENXIO), "{err}");
}

#[test]
fn driver_libraries_are_read_only_and_params_forbid_node_creation() {
    if skip("driver_libraries_are_read_only_and_params_forbid_node_creation") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let lib = format!("/{LIB_DIR}");
    let mut b = bundle(&format!(
        "echo x > {lib}/libcuda.so.1; echo write=$?; \
         echo x > {lib}/libcuda.so.{VERSION}; echo write_real=$?; \
         touch {lib}/scratch; echo touch=$?; \
         cat /proc/driver/nvidia/params; ls /proc/driver/nvidia/gpus"
    ));
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut b);
    let out = node.run(&rt, &b, &id("libs"));
    assert_ran(&out);
    for l in [
        "write=1",
        "write_real=1",
        "touch=0",
        "ModifyDeviceFiles: 0",
        "0000:3b:00.0",
    ] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    assert!(
        !stdout(&out).contains("ModifyDeviceFiles: 1"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("0000:86:00.0"),
        "GPU 1's procfs entry is hidden: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{lib}/libcuda.so.1: Read-only file system")),
        "{err}"
    );
    // The host's file is untouched.
    let host_lib = node
        .host()
        .join(LIB_DIR)
        .join(format!("libcuda.so.{VERSION}"));
    assert!(std::fs::read(host_lib).unwrap().starts_with(b"\x7fELF"));
}

#[test]
fn env_all_from_an_unprivileged_container_is_ignored_unless_the_node_allows_it() {
    if skip("env_all_from_an_unprivileged_container_is_ignored_unless_the_node_allows_it") {
        return;
    }
    let script = format!(
        "{} echo visible=$NVIDIA_VISIBLE_DEVICES",
        probe(&["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl"])
    );
    {
        let node = Node::new(false);
        let rt = Runtime::new();
        let mut b = bundle(&script);
        set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
        b.write();
        let cid = id("unpriv");
        rt.track(&cid);
        let log = b.path().join("gpurun.log");
        let out = node
            .cmd(&rt)
            .arg("--log")
            .arg(&log)
            .args(["run", "-b"])
            .arg(b.path())
            .arg(&cid)
            .output()
            .unwrap();
        assert_ran(&out);
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            log.contains("NVIDIA_VISIBLE_DEVICES=all ignored"),
            "the refusal is logged: {log}"
        );
        for l in [
            "/dev/nvidia0=no",
            "/dev/nvidia1=no",
            "/dev/nvidiactl=no",
            "visible=void",
        ] {
            assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
        }
    }
    let node = Node::new(true);
    let rt = Runtime::new();
    let mut b = bundle(&script);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=all");
    let out = node.run(&rt, &b, &id("accepted"));
    assert_ran(&out);
    for l in [
        "/dev/nvidia0=yes",
        "/dev/nvidia1=yes",
        "/dev/nvidiactl=yes",
        "visible=all",
    ] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
}

#[test]
fn a_cdi_annotation_with_a_generated_spec_selects_the_same_devices() {
    if skip("a_cdi_annotation_with_a_generated_spec_selects_the_same_devices") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let spec_path = node.cdi_dir().join("nvidia.yaml");
    let printed = node.ok(
        &rt,
        &["cdi", "generate", "--output", spec_path.to_str().unwrap()],
    );
    assert!(printed.is_empty(), "{printed}");
    let yaml = std::fs::read_to_string(&spec_path).unwrap();
    assert!(yaml.contains("kind: nvidia.com/gpu"), "{yaml}");
    let json: Value =
        serde_json::from_str(&node.ok(&rt, &["cdi", "generate", "--format", "json"])).unwrap();
    let names: Vec<&str> = json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["0", GPU0, "1", GPU1, "all"]);

    let mut b = bundle(&format!(
        "{} cat /dev/nvidia0; echo open0=$?",
        probe(&[
            "/dev/nvidia0",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia1",
            &format!("/{LIB_DIR}/libcuda.so.1"),
        ])
    ));
    annotate(&mut b, "cdi.k8s.io/gpu", "nvidia.com/gpu=0");
    let cid = id("cdi");
    let out = node.run(&rt, &b, &cid);
    assert_ran(&out);
    for l in [
        "/dev/nvidia0=yes",
        "/dev/nvidiactl=yes",
        "/dev/nvidia-uvm=yes",
        "/dev/nvidia1=no",
        &format!("/{LIB_DIR}/libcuda.so.1=yes"),
        "open0=1",
    ] {
        assert!(has_line(&out, l), "{l} missing from:\n{}", stdout(&out));
    }
    assert!(
        stderr(&out).contains(&format!("can't open '/dev/nvidia0': {ENXIO}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_exclusive_gpu_refuses_a_second_holder_until_the_first_is_deleted() {
    if skip("an_exclusive_gpu_refuses_a_second_holder_until_the_first_is_deleted") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let gpu_bundle = |visible: &str| {
        let mut b = bundle("sleep 60");
        set_env(&mut b, &format!("NVIDIA_VISIBLE_DEVICES={visible}"));
        privileged(&mut b);
        annotate(&mut b, "gpurun.dev/gpu-sharing", "exclusive");
        b
    };
    let (first, second, other) = (id("excl-a"), id("excl-b"), id("excl-c"));
    let b1 = gpu_bundle("0");
    let out = node.create(&rt, &b1, &first);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = rt.state(&first)["pid"].as_i64().unwrap();

    let gpus = node.gpus_json(&rt);
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0]["index"], 0);
    assert_eq!(gpus[0]["uuid"], GPU0);
    assert_eq!(gpus[0]["bus_id"], "0000:3b:00.0");
    assert_eq!(gpus[0]["minor"], 0);
    assert_eq!(gpus[0]["model"], "NVIDIA Fake A100");
    let holders = gpus[0]["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["id"], first.as_str());
    assert_eq!(holders[0]["root"], rt.root.path().display().to_string());
    assert_eq!(holders[0]["pid"], pid);
    assert_eq!(holders[0]["sharing"], "exclusive");
    assert_eq!(holders[0]["source"], "env", "how the grant was asked for");
    assert_eq!(gpus[1]["holders"].as_array().unwrap().len(), 0);
    let table = node.ok(&rt, &["gpus"]);
    assert!(table.starts_with("INDEX"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(GPU0) && l.contains(&first)),
        "{table}"
    );

    let list = node.ok(&rt, &["list"]);
    assert!(list.lines().next().unwrap().ends_with("GPUS"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&first) && l.trim_end().ends_with(GPU0)),
        "{list}"
    );
    let listed: Value = serde_json::from_str(&node.ok(&rt, &["list", "--format", "json"])).unwrap();
    assert!(
        listed[0].get("gpus").is_none(),
        "runc's list JSON: {listed}"
    );

    let b2 = gpu_bundle("0");
    let out = node.create(&rt, &b2, &second);
    assert!(
        !out.status.success(),
        "a second holder of GPU 0 was accepted"
    );
    let err = stderr(&out);
    assert!(err.contains(GPU0) && err.contains(&first), "{err}");
    assert!(
        !rt.ok(&["list", "-q"]).lines().any(|l| l == second),
        "a refused create leaves no state"
    );

    let b3 = gpu_bundle("1");
    let out = node.create(&rt, &b3, &other);
    assert!(out.status.success(), "GPU 1 is free: {}", stderr(&out));

    rt.ok(&["delete", "--force", &first]);
    let out = node.create(&rt, &b2, &second);
    assert!(out.status.success(), "{}", stderr(&out));
    let gpus = node.gpus_json(&rt);
    let holders: Vec<&str> = gpus[0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert_eq!(holders, [second.as_str()]);
}

/// A glibc rootfs: the test program, the dynamic loader and libc copied from the host,
/// Debian's library directory, and busybox.
fn glibc_bundle(script: &str) -> Bundle {
    let b = bundle(script);
    let root = b.rootfs();
    let src = b.path().join("dltest.c");
    std::fs::write(
        &src,
        "#include <dlfcn.h>\n#include <stdio.h>\n\
         int main(void) {\n\
           void *h = dlopen(\"libcuda.so.1\", RTLD_NOW);\n\
           if (!h) { printf(\"dlopen: %s\\n\", dlerror()); return 1; }\n\
           printf(\"OK\\n\");\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let status = Command::new("gcc")
        .arg("-o")
        .arg(root.join("dltest"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "gcc failed");
    let copy = |host: &str, inside: &str| {
        let dest = root.join(inside);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // `copy` follows the host's links (ld-linux-x86-64.so.2 is one on Debian).
        std::fs::copy(host, &dest).unwrap_or_else(|e| panic!("copying {host}: {e}"));
    };
    copy("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2");
    for (name, host) in needed_libs(&root.join("dltest")) {
        copy(&host, &format!("lib/x86_64-linux-gnu/{name}"));
    }
    b
}

/// The shared libraries the loader maps for `program` (name, host path), from `ldd`.
fn needed_libs(program: &Path) -> Vec<(String, String)> {
    let out = Command::new("ldd").arg(program).output().unwrap();
    assert!(out.status.success(), "ldd: {}", stderr(&out));
    let text = stdout(&out);
    let libs: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some(name), Some("=>"), Some(path)) => Some((name.into(), path.into())),
                _ => None,
            }
        })
        .collect();
    assert!(
        libs.iter().any(|(n, _)| n == "libc.so.6"),
        "the test program must be dynamically linked: {text}"
    );
    libs
}

#[test]
fn a_glibc_program_dlopens_the_injected_libcuda() {
    if skip("a_glibc_program_dlopens_the_injected_libcuda") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();

    let without = glibc_bundle("/dltest");
    let out = node.run(&rt, &without, &id("dl-none"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("dlopen: libcuda.so.1: cannot open shared object file"),
        "without a GPU the image has no libcuda: {}",
        stdout(&out)
    );

    let mut with = glibc_bundle("/dltest");
    set_env(&mut with, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut with);
    let out = node.run(&rt, &with, &id("dl-gpu0"));
    assert_ran(&out);
    assert_eq!(stdout(&out), "OK\n", "{}", stderr(&out));
}
