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

#[test]
fn dispatch_follows_each_phase_policy() {
    let none = HashMap::new();
    let s = HookState {
        oci_version: "1.2.0",
        id: "c1",
        status: "creating",
        pid: 0,
        bundle: Path::new("/"),
        annotations: &none,
    };
    let missing: Hook =
        serde_json::from_value(serde_json::json!({"path": "/nonexistent/gpurun-hook"}))
            .expect("hook");
    let mut hooks = Hooks::default();
    let two = Some(vec![missing.clone(), missing]);
    hooks.set_poststop(two.clone());
    hooks.set_create_runtime(two.clone());
    hooks.set_start_container(two);
    for phase in [
        Phase::Prestart,
        Phase::CreateRuntime,
        Phase::CreateContainer,
        Phase::StartContainer,
        Phase::Poststart,
        Phase::Poststop,
    ] {
        let mut warned = 0;
        let outcome = dispatch(phase, Some(&hooks), &s, Path::new("/"), &mut |_| {
            warned += 1
        });
        let listed = phase.hooks_in(&hooks).len();
        match (failure_policy(phase), listed) {
            (_, 0) => assert!(outcome.is_ok() && warned == 0, "{phase}: nothing to run"),
            (Policy::Warn, _) => assert!(outcome.is_ok() && warned == listed, "{phase}"),
            (Policy::AbortCreate | Policy::AbortStart, _) => {
                assert!(outcome.is_err() && warned == 0, "{phase}")
            }
        }
    }
    assert!(dispatch(Phase::Poststop, None, &s, Path::new("/"), &mut |_| ()).is_ok());
}
