//! The cgroup record in a container's state file: a record gpurun cannot decode never lets a
//! verb act as if the container had no cgroup (`exec` would run its process outside the
//! container's limits and device rules), and `delete --force` still removes the cgroup;
//! records written before the record had a version still decode.

mod common;
mod reliability;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use reliability::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);

fn state_path(rt: &Runtime, id: &str) -> PathBuf {
    rt.root.path().join(id).join("state.json")
}

fn read_state(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read state")).expect("state json")
}

/// Every directory of the container's cgroup, in every hierarchy, as the record names it.
fn cgroup_dirs_of(st: &Value) -> Vec<PathBuf> {
    let cg = &st["cgroup"];
    let mut dirs: Vec<PathBuf> = cg["v1"]
        .as_object()
        .expect("v1 map")
        .values()
        .chain(std::iter::once(&cg["unified"]))
        .filter_map(Value::as_str)
        .map(PathBuf::from)
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The ways a record can be unreadable: a field of the wrong type (its paths still
/// readable), not an object at all, and a version newer than this gpurun.
fn corrupt(case: &str, st: &mut Value) {
    match case {
        "wrong-type" => st["cgroup"]["layout"] = json!(42),
        "not-an-object" => st["cgroup"] = json!("broken"),
        "newer-version" => st["cgroup"]["version"] = json!(99),
        _ => unreachable!("{case}"),
    }
}

fn refused(rt: &Runtime, args: &[&str], file: &Path, code: i32) {
    let out = output_within(rt.cmd().args(args), LIMIT, &args.join(" "));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(!panicked(&err), "{args:?}: {err}");
    assert!(
        err.contains(&format!("state file {}", file.display()))
            && err.contains("cannot be decoded"),
        "{args:?}: the error does not name the record and its file: {err}"
    );
}

#[test]
fn an_undecodable_cgroup_record_is_refused_and_delete_force_removes_the_cgroup() {
    if skip("an_undecodable_cgroup_record_is_refused_and_delete_force_removes_the_cgroup") {
        return;
    }
    let parent = CgroupParent::new("cg-record");
    let rt = Runtime::new();
    for case in ["wrong-type", "not-an-object", "newer-version"] {
        let id = id(&format!("cgrec-{case}"));
        let mut b = Bundle::sh("sleep 100");
        b.config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
        let out = rt.run_detached(&b, &id);
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        let path = state_path(&rt, &id);
        let mut st = read_state(&path);
        let dirs = cgroup_dirs_of(&st);
        assert!(
            dirs.len() > 1 && dirs.iter().all(|d| d.is_dir()),
            "{case}: {dirs:?}"
        );
        corrupt(case, &mut st);
        std::fs::write(&path, serde_json::to_vec(&st).expect("json")).expect("write state");

        // exec fails with 255, as runc's does, so it cannot be mistaken for the process's.
        refused(&rt, &["exec", &id, "true"], &path, 255);
        refused(&rt, &["update", "--pids-limit", "50", &id], &path, 1);
        refused(&rt, &["kill", "--all", &id, "KILL"], &path, 1);
        refused(&rt, &["pause", &id], &path, 1);
        refused(&rt, &["ps", &id], &path, 1);
        refused(&rt, &["delete", &id], &path, 1);
        assert_eq!(
            rt.status(&id),
            "running",
            "{case}: a refused verb touched init"
        );

        let del = output_within(rt.cmd().args(["delete", "--force", &id]), LIMIT, "delete");
        assert!(del.status.success(), "{case}: {}", stderr(&del));
        let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
        assert!(left.is_empty(), "{case}: cgroup directories left: {left:?}");
        let under_parent: Vec<PathBuf> = cgroup_children(&parent)
            .into_iter()
            .filter(|p| p.ends_with(&id))
            .collect();
        assert!(under_parent.is_empty(), "{case}: {under_parent:?}");
        assert!(!path.exists(), "{case}: state left");
        let procs = processes_with(&id);
        assert!(procs.is_empty(), "{case}: processes left: {procs:?}");
    }
}

/// A state without a cgroup record (the key removed by hand) does not let `exec` run its
/// process outside the container's cgroup either.
#[test]
fn exec_is_refused_where_the_state_has_no_cgroup_record() {
    if skip("exec_is_refused_where_the_state_has_no_cgroup_record") {
        return;
    }
    let parent = CgroupParent::new("cg-norecord");
    let rt = Runtime::new();
    let id = id("cgrec-none");
    let mut b = Bundle::sh("sleep 100");
    b.config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
    let out = rt.run_detached(&b, &id);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = state_path(&rt, &id);
    let mut st = read_state(&path);
    let record = st["cgroup"].take();
    st.as_object_mut().expect("object").remove("cgroup");
    std::fs::write(&path, serde_json::to_vec(&st).expect("json")).expect("write state");
    let out = output_within(rt.cmd().args(["exec", &id, "true"]), LIMIT, "exec");
    // The record back first, so that clean-up finds the cgroup whatever is asserted.
    st["cgroup"] = record;
    std::fs::write(&path, serde_json::to_vec(&st).expect("json")).expect("write state");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("container {id} has no cgroup")),
        "{}",
        stderr(&out)
    );
    rt.ok(&["delete", "--force", &id]);
}

/// A running container's state.json written by the gpurun before the record had a
/// version: every verb still finds its cgroup.
#[test]
fn a_state_file_of_todays_format_still_decodes_its_cgroup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::copy("tests/fixtures/state/format-1-cgroupfs-hybrid.json", &path).expect("copy");
    let st = gpurun::state::load_file(&path).expect("loads");
    let cg = st.open_cgroup().expect("decodes").expect("has a cgroup");
    let again = serde_json::to_value(cg.record()).expect("encodes");
    assert_eq!(again["version"], gpurun::linux::cgroups::RECORD_VERSION);
    assert_eq!(
        again["unified"],
        "/sys/fs/cgroup/unified/gpurun-fuzz-sample/c1"
    );
}

/// A state without a cgroup record writes no `"cgroup": null`, and one with a record
/// writes it as an object.
#[test]
fn a_saved_state_never_holds_a_null_cgroup() {
    let text = std::fs::read_to_string("tests/fixtures/state/format-1-cgroupfs-hybrid.json")
        .expect("fixture");
    let mut st: gpurun::state::State = serde_json::from_str(&text).expect("state");
    let with = serde_json::to_value(&st).expect("encodes");
    assert!(with["cgroup"].is_object(), "{}", with["cgroup"]);
    st.cgroup = None;
    let without = serde_json::to_value(&st).expect("encodes");
    assert!(without.get("cgroup").is_none(), "{}", without["cgroup"]);
}
