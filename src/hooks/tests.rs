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
    let missing = |name: &str| -> Hook {
        serde_json::from_value(serde_json::json!({ "path": format!("/nonexistent/{name}") }))
            .expect("hook")
    };
    let two = Some(vec![missing("first"), missing("second")]);
    let mut hooks = Hooks::default();
    hooks.set_poststop(two.clone());
    hooks.set_create_runtime(two.clone());
    hooks.set_start_container(two);
    let cwd = Path::new("/");
    for phase in [
        Phase::Prestart,
        Phase::CreateRuntime,
        Phase::CreateContainer,
        Phase::StartContainer,
        Phase::Poststart,
        Phase::Poststop,
    ] {
        let mut warned = Vec::new();
        let outcome = dispatch(phase, Some(&hooks), &s, cwd, &mut |w| warned.push(w));
        match (failure_policy(phase), phase.hooks_in(&hooks).len()) {
            (_, 0) => assert!(outcome.is_ok() && warned.is_empty(), "{phase}"),
            (Policy::Warn, n) => {
                assert!(outcome.is_ok(), "{phase}: a warning phase goes on");
                assert_eq!(warned.len(), n, "{phase}: every hook ran and warned");
            }
            (Policy::AbortCreate | Policy::AbortStart, _) => {
                let e = outcome.expect_err("an aborting phase fails").to_string();
                assert!(e.contains("/nonexistent/first"), "{phase}: {e}");
                assert!(warned.is_empty(), "{phase}");
            }
        }
    }
    assert!(dispatch(Phase::Poststop, None, &s, cwd, &mut |_| ()).is_ok());
}
