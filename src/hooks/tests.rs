use super::*;

fn state(ann: &HashMap<String, String>, pid: i32) -> serde_json::Value {
    let s = HookState {
        oci_version: "1.2.0",
        id: "c1",
        status: "creating",
        pid,
        bundle: Path::new("/b"),
        annotations: ann,
    };
    serde_json::from_slice(&s.to_json().expect("json")).expect("parse")
}

#[test]
fn state_omits_zero_pid_and_empty_annotations() {
    let none = HashMap::new();
    let v = state(&none, 0);
    assert_eq!(
        v,
        serde_json::json!({"ociVersion":"1.2.0","id":"c1","status":"creating","bundle":"/b"})
    );
    let ann = HashMap::from([("k".to_string(), "v".to_string())]);
    let v = state(&ann, 42);
    assert_eq!(v["pid"], 42);
    assert_eq!(v["annotations"]["k"], "v");
}

#[test]
fn policies_follow_the_spec() {
    assert_eq!(failure_policy(Phase::Prestart), Policy::AbortCreate);
    assert_eq!(failure_policy(Phase::CreateRuntime), Policy::AbortCreate);
    assert_eq!(failure_policy(Phase::CreateContainer), Policy::AbortCreate);
    assert_eq!(failure_policy(Phase::StartContainer), Policy::AbortStart);
    assert_eq!(failure_policy(Phase::Poststart), Policy::Warn);
    assert_eq!(failure_policy(Phase::Poststop), Policy::Warn);
}

#[test]
fn output_suffix_names_the_non_empty_streams() {
    assert_eq!(output_suffix(" \n", ""), "");
    assert_eq!(output_suffix("a\n", " b "), ": stdout: a: stderr: b");
}
