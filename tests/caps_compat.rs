//! Capability sets the kernel cannot grant, from configs gpurun did not write: `runc spec`
//! (ambient set with an empty inheritable set) and unknown names. Runtime-spec 1.1: warn
//! and run without them. Each case also runs under runc on the same bundle.

mod common;
use common::*;

const RUNC_SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/runc-spec/runc-1.1.5-spec.json"
);

const SHOW_CAPS: &str = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status";

/// A bundle from a `runc spec` config, with what a person changes before running it: the
/// rootfs, no terminal, and the command.
fn from_runc_spec(config: serde_json::Value, script: &str) -> Bundle {
    let mut b = Bundle::sh(script);
    let root = b.config["root"]["path"].clone();
    b.config = config;
    b.config["root"]["path"] = root;
    b.config["process"]["terminal"] = false.into();
    b.config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    b
}

fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(RUNC_SPEC).expect("fixture")).expect("json")
}

/// `runc spec` of the runc on this machine, when there is one.
fn real_runc_spec() -> Option<serde_json::Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(dir.path())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = std::fs::read_to_string(dir.path().join("config.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// What `runc spec` asks for, as the kernel can give it: CAP_AUDIT_WRITE, CAP_KILL and
/// CAP_NET_BIND_SERVICE bounding, permitted and effective; nothing inheritable or ambient.
const RUNC_SPEC_CAPS: &str = "CapInh:\t0000000000000000\nCapPrm:\t0000000020000420\n\
CapEff:\t0000000020000420\nCapBnd:\t0000000020000420\nCapAmb:\t0000000000000000\n";

fn runs_with_ambient_dropped(name: &str, config: serde_json::Value) {
    let b = from_runc_spec(config, SHOW_CAPS);
    let out = Runtime::new().run(&b, &id(name));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), RUNC_SPEC_CAPS, "{}", stderr(&out));
    let err = stderr(&out);
    for cap in ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"] {
        assert!(
            err.lines()
                .any(|l| l.contains("level=warning") && l.contains("ambient") && l.contains(cap)),
            "no warning for ambient {cap}: {err}"
        );
    }
}

#[test]
fn a_runc_spec_bundle_runs_without_the_ambient_set_it_cannot_raise() {
    if skip("a_runc_spec_bundle_runs_without_the_ambient_set_it_cannot_raise") {
        return;
    }
    runs_with_ambient_dropped("runcspec", fixture());
}

#[test]
fn the_installed_runcs_own_spec_output_runs() {
    if skip("the_installed_runcs_own_spec_output_runs") {
        return;
    }
    if Runtime::runc("the_installed_runcs_own_spec_output_runs").is_none() {
        return;
    }
    let spec = real_runc_spec().expect("runc spec");
    runs_with_ambient_dropped("realruncspec", spec);
}

#[test]
fn an_unknown_capability_name_is_a_warning_not_a_parse_failure() {
    if skip("an_unknown_capability_name_is_a_warning_not_a_parse_failure") {
        return;
    }
    runs_without_with_three_warnings("CAP_NOT_A_CAPABILITY", "unknowncap");
}

/// `cap` added to the bounding, effective and permitted sets of `runc spec`'s config:
/// the container runs with `runc spec`'s own sets and one warning per set names `cap`.
fn runs_without_with_three_warnings(cap: &str, name: &str) {
    let mut config = fixture();
    for set in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][set]
            .as_array_mut()
            .expect("set")
            .push(cap.into());
    }
    let b = from_runc_spec(config, SHOW_CAPS);
    let out = Runtime::new().run(&b, &id(name));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), RUNC_SPEC_CAPS, "{}", stderr(&out));
    let warned = stderr(&out)
        .lines()
        .filter(|l| l.contains("level=warning") && l.contains(cap))
        .count();
    assert_eq!(warned, 3, "{}", stderr(&out));
}

#[test]
fn an_ambient_capability_that_is_also_inheritable_is_raised() {
    if skip("an_ambient_capability_that_is_also_inheritable_is_raised") {
        return;
    }
    let mut config = fixture();
    config["process"]["capabilities"]["inheritable"] = serde_json::json!(["CAP_KILL"]);
    let b = from_runc_spec(config, "grep -E '^Cap(Inh|Amb)' /proc/self/status");
    let out = Runtime::new().run(&b, &id("ambientkept"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "CapInh:\t0000000000000020\nCapAmb:\t0000000000000020\n",
        "{}",
        stderr(&out)
    );
}

/// The same bundles under runc: it runs them too, with the same sets.
#[test]
fn runc_runs_the_same_bundles_with_the_same_sets() {
    if skip("runc_runs_the_same_bundles_with_the_same_sets") {
        return;
    }
    let Some(runc) = Runtime::runc("runc_runs_the_same_bundles_with_the_same_sets") else {
        return;
    };
    let mut unknown = fixture();
    unknown["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .expect("bounding")
        .push("CAP_NOT_A_CAPABILITY".into());
    for (name, config) in [("runcspec", fixture()), ("unknown", unknown)] {
        let b = from_runc_spec(config, SHOW_CAPS);
        let theirs = runc.run(&b, &id(&format!("runc-{name}")));
        let ours = Runtime::new().run(&b, &id(&format!("ours-{name}")));
        assert_eq!(theirs.status.code(), Some(0), "runc: {}", stderr(&theirs));
        assert_eq!(ours.status.code(), Some(0), "gpurun: {}", stderr(&ours));
        assert_eq!(stdout(&ours), stdout(&theirs), "{name}");
    }
}

/// With `--log`, the warnings go to the log (JSON lines for containerd and podman), and
/// the container's stderr stays its own.
#[test]
fn with_a_log_file_the_warnings_go_there_as_json_lines() {
    if skip("with_a_log_file_the_warnings_go_there_as_json_lines") {
        return;
    }
    let rt = Runtime::new();
    let b = from_runc_spec(fixture(), "true");
    b.write();
    let cid = id("caplog");
    rt.track(&cid);
    let log = b.path().join("log.json");
    let out = rt
        .cmd()
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "run", "-b"])
        .arg(b.path())
        .arg(&cid)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let text = std::fs::read_to_string(&log).expect("log");
    let warnings: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .filter(|v: &serde_json::Value| v["level"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 3, "{text}");
    assert!(warnings
        .iter()
        .all(|w| w["msg"].as_str().unwrap_or("").contains("ambient")));
}

/// A capability outside gpurun's own bounding set (root without CAP_SYS_RESOURCE, as on
/// these test machines) cannot reach the container: a warning, and the container runs
/// with the rest (the OCI validation suite's process_capabilities asks for all of them).
#[test]
fn a_capability_the_runtime_does_not_hold_is_a_warning_not_a_capset_failure() {
    let test = "a_capability_the_runtime_does_not_hold_is_a_warning_not_a_capset_failure";
    if skip(test) {
        return;
    }
    if caps::has_cap(
        None,
        caps::CapSet::Bounding,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(true)
    {
        gpurun::skip::not_applicable(test, "this host's root holds CAP_SYS_RESOURCE");
        return;
    }
    runs_without_with_three_warnings("CAP_SYS_RESOURCE", "notheld");
}
