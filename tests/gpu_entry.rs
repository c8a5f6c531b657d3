//! The one GPU entry point of `create`, with the real binary (root) on the fake two-GPU
//! tree: the node configuration read only for containers asking for GPUs, the lease
//! written once in init's name and released by a failed create, and the one container-id
//! rule beside the host-wide GPU state.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

/// A bundle asking for GPU `visible` exclusively, as a privileged container.
fn gpu_bundle(script: &str, visible: &str) -> Bundle {
    let mut b = bundle(script);
    set_env(&mut b, &format!("NVIDIA_VISIBLE_DEVICES={visible}"));
    privileged(&mut b);
    annotate(&mut b, "gpurun.dev/gpu-sharing", "exclusive");
    b
}

fn lease_files(node: &Node) -> Vec<PathBuf> {
    let dir = node.dir.path().join("state/leases");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "json"));
    v.sort();
    v
}

fn holders(node: &Node, rt: &Runtime, gpu: usize) -> Vec<String> {
    node.gpus_json(rt)[gpu]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_broken_node_config_fails_only_containers_that_ask_for_gpus() {
    if skip("a_broken_node_config_fails_only_containers_that_ask_for_gpus") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let good = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, format!("{good}sharing = sometimes\n")).unwrap();
    let line = good.lines().count() + 1;
    let names_file_and_line = |err: &str| {
        err.contains(&node.config.display().to_string()) && err.contains(&format!("line {line}"))
    };

    let plain = id("cfg-plain");
    let out = node.run(&rt, &bundle("echo plain-ran"), &plain);
    assert_ran(&out);
    assert!(has_line(&out, "plain-ran"));
    let err = stderr(&out);
    assert!(names_file_and_line(&err), "the warning: {err}");

    let gpu = id("cfg-gpu");
    let out = node.create(&rt, &gpu_bundle("true", "0"), &gpu);
    assert!(
        !out.status.success(),
        "a GPU container ran on a broken config"
    );
    let err = stderr(&out);
    assert!(names_file_and_line(&err), "{err}");
    assert!(!rt.ok(&["list", "-q"]).lines().any(|l| l == gpu));

    let out = node.cmd(&rt).args(["gpus"]).output().unwrap();
    assert!(!out.status.success());
    assert!(names_file_and_line(&stderr(&out)), "{}", stderr(&out));
}

#[test]
fn the_lease_is_written_once_in_inits_name_and_released_when_create_fails() {
    if skip("the_lease_is_written_once_in_inits_name_and_released_when_create_fails") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let seen = node.dir.path().join("leases-during-hooks");
    let leases = node.dir.path().join("state/leases");
    let mut b = gpu_bundle("sleep 60", "0");
    // What the lease table holds while the container is being made: nothing of this
    // container yet (no lease in gpurun's own name that a second write then replaces).
    b.config["hooks"]["createRuntime"] = serde_json::json!([{
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("ls -a {} > {}", leases.display(), seen.display())],
    }]);
    let first = id("lease-once");
    let out = node.create(&rt, &b, &first);
    assert!(out.status.success(), "{}", stderr(&out));
    let during = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !during.lines().any(|l| l.ends_with(".json")),
        "a lease existed before init did: {during}"
    );
    let files = lease_files(&node);
    assert_eq!(files.len(), 1, "{files:?}");
    let lease: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let pid = rt.state(&first)["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(lease["holder"]["pid"].as_i64(), Some(pid), "{lease}");
    assert_eq!(lease["holder"]["container_id"], first.as_str());
    assert_ne!(lease["holder"]["start_time"].as_u64(), Some(0), "{lease}");

    // A create that fails after its lease was written (the pid file cannot be made)
    // leaves no lease and no container.
    let second = id("lease-fails");
    let b2 = gpu_bundle("sleep 60", "1");
    b2.write();
    rt.track(&second);
    let out = node
        .cmd(&rt)
        .args(["create", "--pid-file"])
        .arg(node.dir.path().join("no/such/dir/pid"))
        .arg("-b")
        .arg(b2.path())
        .arg(&second)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the pid file could not be written");
    assert!(stderr(&out).contains("no/such/dir"), "{}", stderr(&out));
    assert_eq!(
        lease_files(&node),
        files,
        "the failed create's lease stayed"
    );
    assert!(holders(&node, &rt, 1).is_empty());
    assert!(!rt.ok(&["list", "-q"]).lines().any(|l| l == second));
    let third = id("lease-after");
    let out = node.create(&rt, &gpu_bundle("sleep 60", "1"), &third);
    assert!(
        out.status.success(),
        "GPU 1 is free again: {}",
        stderr(&out)
    );
    assert_eq!(holders(&node, &rt, 1), [third]);
}

#[test]
fn ids_named_like_gpu_state_are_refused_and_a_dot_id_is_one_rule_for_all_verbs() {
    if skip("ids_named_like_gpu_state_are_refused_and_a_dot_id_is_one_rule_for_all_verbs") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    // The lease table where an older gpurun kept it by default: beside the containers.
    let table = rt.root.path().join("leases");
    std::fs::create_dir_all(&table).unwrap();
    std::fs::write(table.join(".lock"), "").unwrap();
    for name in ["leases", "proc-driver-nvidia", "discovery.json"] {
        let out = rt.create(&Bundle::sh("true"), name, &[]);
        assert!(!out.status.success(), "{name} was created");
        assert!(stderr(&out).contains("GPU state"), "{}", stderr(&out));
        let out = rt.cmd().args(["delete", "--force", name]).output().unwrap();
        assert!(!out.status.success(), "delete -f {name} succeeded");
        let out = rt.cmd().args(["state", name]).output().unwrap();
        assert!(stderr(&out).contains("GPU state"), "{}", stderr(&out));
    }
    assert!(
        table.join(".lock").exists(),
        "delete removed the lease table"
    );

    // `.x` is a valid id (runc's rule) for every verb, a GPU container's lease included.
    let dot = ".x";
    let out = node.create(&rt, &gpu_bundle("sleep 60", "0"), dot);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rt.status(dot), "created");
    assert_eq!(holders(&node, &rt, 0), [dot]);
    rt.ok(&["delete", "--force", dot]);
    assert!(holders(&node, &rt, 0).is_empty());
    assert!(lease_files(&node).is_empty());
    assert!(Path::new(&rt.root.path().join(dot))
        .symlink_metadata()
        .is_err());
}
