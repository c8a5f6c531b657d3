use std::os::unix::ffi::OsStrExt;

use serde_json::{json, Value};

use super::*;
use crate::linux::cgroups::{Driver, Layout};

/// The cgroup record of a running container's state.json as gpurun wrote it before the
/// record had a version.
fn todays_record() -> Value {
    let text = include_str!("../../../tests/fixtures/state/format-1-cgroupfs-hybrid.json");
    let st: Value = serde_json::from_str(text).expect("fixture is JSON");
    st["cgroup"].clone()
}

fn known(v: &Value) -> CgroupState {
    match serde_json::from_value::<StoredCgroup>(v.clone()).expect("decodes") {
        StoredCgroup::Known(st) => st,
        StoredCgroup::Undecodable(u) => panic!("undecodable: {}", u.reason),
    }
}

#[test]
fn a_record_of_todays_format_decodes_as_version_1() {
    let st = known(&todays_record());
    assert_eq!(st.driver, Driver::Cgroupfs);
    assert_eq!(st.layout, Layout::Hybrid);
    assert_eq!(
        st.v1.get("memory").map(PathBuf::as_path),
        Some(Path::new("/sys/fs/cgroup/memory/gpurun-fuzz-sample/c1"))
    );
    assert_eq!(
        st.unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified/gpurun-fuzz-sample/c1"))
    );
    assert_eq!(st.created.len(), 20);
    assert!(StoredCgroup::Known(st).open().is_ok());
}

#[test]
fn a_systemd_record_of_todays_format_keeps_its_unit() {
    let raw = json!({
        "driver": "systemd", "layout": "unified",
        "v1": {}, "unified": "/sys/fs/cgroup/system.slice/gpurun-x.scope",
        "unified_mount": "/sys/fs/cgroup", "created": [], "unit": "gpurun-x.scope"
    });
    let st = known(&raw);
    assert_eq!(st.driver, Driver::Systemd);
    assert_eq!(st.unit.as_deref(), Some("gpurun-x.scope"));
}

#[test]
fn a_record_is_written_with_its_version_and_todays_fields_unchanged() {
    let old = todays_record();
    let written = serde_json::to_value(StoredCgroup::Known(known(&old))).expect("encodes");
    assert_eq!(written["version"], RECORD_VERSION);
    let mut without = written.clone();
    without.as_object_mut().expect("object").remove("version");
    // An older gpurun reading the new record sees exactly the fields it wrote.
    assert_eq!(without, old);
}

#[test]
fn a_newer_version_is_undecodable_and_named_with_the_state_file() {
    let mut raw = todays_record();
    raw["version"] = json!(RECORD_VERSION + 1);
    let mut rec: StoredCgroup = serde_json::from_value(raw.clone()).expect("reads");
    rec.set_source(Path::new("/run/gpurun/x/state.json"));
    let e = rec
        .open()
        .expect_err("a newer record is refused")
        .to_string();
    assert!(e.contains("/run/gpurun/x/state.json"), "{e}");
    assert!(
        e.contains(&format!("record version {}", RECORD_VERSION + 1)),
        "{e}"
    );
    // Kept as read: saving the state again does not lose what a newer gpurun wrote.
    assert_eq!(serde_json::to_value(&rec).expect("encodes"), raw);
}

#[test]
fn a_record_of_the_wrong_shape_is_undecodable_with_serdes_reason() {
    for raw in [json!("cgroup"), json!(7), json!({"driver": "x"}), json!([])] {
        let rec: StoredCgroup = serde_json::from_value(raw.clone()).expect("reads");
        let e = rec.open().expect_err("refused").to_string();
        assert!(e.contains("cannot be decoded"), "{raw}: {e}");
        assert_eq!(serde_json::to_value(&rec).expect("encodes"), raw);
    }
}

#[test]
fn encoding_fails_rather_than_writing_null() {
    let mut st = known(&todays_record());
    let v = serde_json::to_value(StoredCgroup::Known(st.clone())).expect("encodes");
    assert!(v.is_object(), "{v}");
    st.unified = Some(PathBuf::from(std::ffi::OsStr::from_bytes(
        b"/sys/fs/cgroup/\xff",
    )));
    let r = serde_json::to_vec(&StoredCgroup::Known(st));
    assert!(r.is_err(), "a path serde cannot write was written: {r:?}");
}

#[test]
fn only_strings_that_are_paths_are_read_from_a_broken_record() {
    let raw =
        json!({"version": "x", "created": ["/a/b", 3, "/a/b/c"], "v1": {"m": "/m/c"}, "u": "rel"});
    let rec: StoredCgroup = serde_json::from_value(raw).expect("reads");
    assert_eq!(
        rec.readable_created(),
        vec![PathBuf::from("/a/b"), PathBuf::from("/a/b/c")]
    );
    let mut paths = rec.readable_paths();
    paths.sort();
    assert_eq!(
        paths,
        ["/a/b", "/a/b/c", "/m/c"].map(PathBuf::from).to_vec()
    );
}
