//! The driver's D-Bus conversation with a scripted systemd, and the unit properties.

use std::sync::{Arc, Mutex};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};

use super::super::devices::{default_device_rules, DevicePolicy};
use super::super::root::Layout;
use super::super::systemd_props::{
    cpu_list_mask, device_properties, resource_properties, unit_properties, INFINITY,
};
use super::super::test_support::rule;
use super::*;
use crate::linux::dbus::tests::{error, reply, signal, FakePeer};
use crate::linux::dbus::Message;

const OK: &str = "OK 0123456789abcdef0123456789abcdef\r\n";
const JOB: &str = "/org/freedesktop/systemd1/job/7";

fn job_removed(job: &str, unit: &str, result: &str) -> Vec<u8> {
    signal(
        "JobRemoved",
        &[
            Value::U32(7),
            Value::ObjectPath(job.into()),
            Value::str(unit),
            Value::str(result),
        ],
    )
}

/// A systemd that answers every call; `StartTransientUnit`/`StopUnit` get a job whose
/// `JobRemoved` carries `result`, sent before or after the answer.
fn systemd(result: &'static str, signal_first: bool) -> FakePeer {
    FakePeer::start(OK, move |m| match m.member.as_deref() {
        Some("StartTransientUnit" | "StopUnit") => {
            let unit = m.first_str().unwrap_or_default();
            let answer = reply(m, &[Value::ObjectPath(JOB.into())]);
            let done = job_removed(JOB, &unit, result);
            if signal_first {
                vec![done, answer]
            } else {
                // Another job's signal first: it must not be taken for ours.
                vec![
                    answer,
                    job_removed("/org/freedesktop/systemd1/job/6", &unit, "failed"),
                    done,
                ]
            }
        }
        _ => vec![reply(m, &[])],
    })
}

fn open(peer: &FakePeer) -> Connection {
    Connection::open(&peer.path, false, Duration::from_secs(10)).expect("open")
}

fn members(calls: &[Message]) -> Vec<String> {
    calls.iter().filter_map(|m| m.member.clone()).collect()
}

fn props(body: &[Value]) -> Vec<(String, Value)> {
    let Some(Value::Array(_, items)) = body.get(2) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|p| match p {
            Value::Struct(f) => match &f[..] {
                [Value::Str(k), Value::Variant(v)] => Some((k.clone(), (**v).clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn start_unit_sends_the_unit_and_waits_for_its_job() {
    for signal_first in [false, true] {
        let peer = systemd("done", signal_first);
        let mut c = open(&peer);
        let p = unit_properties("system.slice", "gpurun-a.scope", "a", 4242);
        start_unit(&mut c, "gpurun-a.scope", p).expect("started");
        drop(c);
        let calls = peer.calls();
        assert_eq!(members(&calls), ["StartTransientUnit"]);
        let m = &calls[0];
        assert_eq!(
            m.interface.as_deref(),
            Some("org.freedesktop.systemd1.Manager")
        );
        assert_eq!(m.path.as_deref(), Some("/org/freedesktop/systemd1"));
        assert_eq!(m.signature, "ssa(sv)a(sa(sv))");
        let body = m.values().expect("body");
        assert_eq!(body[0], Value::str("gpurun-a.scope"));
        assert_eq!(body[1], Value::str("replace"));
        let p = props(&body);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("Delegate"), Some(Value::Bool(true)));
        assert_eq!(get("Slice"), Some(Value::str("system.slice")));
        assert_eq!(
            get("PIDs"),
            Some(Value::Array("u".into(), vec![Value::U32(4242)]))
        );
        assert_eq!(get("DefaultDependencies"), Some(Value::Bool(false)));
    }
}

#[test]
fn a_failed_job_is_an_error_naming_the_unit_and_result() {
    let peer = systemd("failed", false);
    let mut c = open(&peer);
    let e = start_unit(&mut c, "gpurun-b.scope", vec![]).expect_err("job failed");
    let msg = e.to_string();
    assert!(
        msg.contains("gpurun-b.scope") && msg.contains("\"failed\""),
        "{msg}"
    );
}

#[test]
fn a_unit_left_failed_is_reset_and_started_again() {
    let tries = Arc::new(Mutex::new(0));
    let t = Arc::clone(&tries);
    let peer = FakePeer::start(OK, move |m| match m.member.as_deref() {
        Some("StartTransientUnit") => {
            let mut n = t.lock().expect("lock");
            *n += 1;
            if *n == 1 {
                vec![error(
                    m,
                    "org.freedesktop.systemd1.UnitExists",
                    "Unit gpurun-c.scope was already loaded",
                )]
            } else {
                vec![
                    reply(m, &[Value::ObjectPath(JOB.into())]),
                    job_removed(JOB, "gpurun-c.scope", "done"),
                ]
            }
        }
        _ => vec![reply(m, &[])],
    });
    let mut c = open(&peer);
    start_unit(&mut c, "gpurun-c.scope", vec![]).expect("second start");
    drop(c);
    assert_eq!(
        members(&peer.calls()),
        [
            "StartTransientUnit",
            "ResetFailedUnit",
            "StartTransientUnit"
        ]
    );
}

#[test]
fn systemd_refusing_the_unit_is_an_error_with_its_text() {
    let peer = FakePeer::start(OK, |m| {
        vec![error(
            m,
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Unknown assignment: Bogus",
        )]
    });
    let mut c = open(&peer);
    let e = start_unit(&mut c, "gpurun-d.scope", vec![]).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "systemd cgroup driver: starting unit gpurun-d.scope: \
         org.freedesktop.DBus.Error.InvalidArgs: Unknown assignment: Bogus"
    );
}

#[test]
fn stopping_an_unknown_unit_is_not_an_error_and_a_failed_one_is_reset() {
    let peer = FakePeer::start(OK, |m| match m.member.as_deref() {
        Some("StopUnit") => vec![error(
            m,
            "org.freedesktop.systemd1.NoSuchUnit",
            "Unit gpurun-e.scope not loaded.",
        )],
        _ => vec![reply(m, &[])],
    });
    let mut c = open(&peer);
    stop_unit(&mut c, "gpurun-e.scope").expect("nothing to stop");
    drop(c);
    assert_eq!(members(&peer.calls()), ["StopUnit", "ResetFailedUnit"]);

    let peer = systemd("done", false);
    let mut c = open(&peer);
    stop_unit(&mut c, "gpurun-e.scope").expect("stopped");
    drop(c);
    let calls = peer.calls();
    assert_eq!(members(&calls), ["StopUnit", "ResetFailedUnit"]);
    assert_eq!(calls[0].values().expect("body")[1], Value::str("replace"));
}

#[test]
fn set_properties_is_for_this_boot_only() {
    let peer = systemd("done", false);
    let mut c = open(&peer);
    set_properties(
        &mut c,
        "gpurun-f.scope",
        vec![super::super::systemd_props::prop("TasksMax", Value::U64(9))],
    )
    .expect("set");
    drop(c);
    let calls = peer.calls();
    assert_eq!(calls[0].member.as_deref(), Some("SetUnitProperties"));
    assert_eq!(calls[0].signature, "sba(sv)");
    assert_eq!(calls[0].values().expect("body")[1], Value::Bool(true));
}

#[test]
fn connect_uses_the_private_socket_as_is_and_the_bus_with_a_subscription() {
    // As root, the private socket: no Hello, no Subscribe.
    if nix::unistd::geteuid().is_root() {
        let peer = systemd("done", false);
        let c = connect(&peer.path, Path::new("/nonexistent/gpurun-test/bus")).expect("connect");
        drop(c);
        assert!(members(&peer.calls()).is_empty());
    }
    // The bus: Hello, the match rule for JobRemoved, Subscribe.
    let peer = systemd("done", false);
    let c = connect(Path::new("/nonexistent/gpurun-test/private"), &peer.path).expect("connect");
    drop(c);
    let calls = peer.calls();
    assert_eq!(members(&calls), ["Hello", "AddMatch", "Subscribe"]);
    let rule = calls[1].first_str().unwrap_or_default();
    assert!(rule.contains("member='JobRemoved'"), "{rule}");
}

#[test]
fn an_absent_systemd_is_a_clear_error() {
    let e = connect(
        Path::new("/nonexistent/gpurun-test/private"),
        Path::new("/nonexistent/gpurun-test/bus"),
    )
    .err()
    .expect("no systemd");
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/gpurun-test/private")
            && msg.contains("/nonexistent/gpurun-test/bus")
            && msg.contains("without --systemd-cgroup"),
        "{msg}"
    );
}

#[test]
fn slices_nest_by_their_dashes() {
    assert_eq!(slice_path("system.slice"), "/system.slice");
    assert_eq!(
        slice_path("kubepods-besteffort-pod1.slice"),
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
    );
    assert_eq!(slice_path("-.slice"), "");
    let p = parse_systemd_path("kubepods-burstable.slice:cri-containerd:abc", "x").expect("path");
    assert_eq!(
        p.cgroup_path(),
        "/kubepods.slice/kubepods-burstable.slice/cri-containerd-abc.scope"
    );
    let p = parse_systemd_path("machine.slice::machine-inner.slice", "x").expect("path");
    assert_eq!(p.cgroup_path(), "/machine.slice/machine-inner.slice");
    let p = parse_systemd_path("-.slice:p:n", "x").expect("path");
    assert_eq!(p.cgroup_path(), "/p-n.scope");
}

#[test]
fn a_slice_unit_gets_no_pid_and_no_delegation() {
    let p = unit_properties("machine.slice", "machine-inner.slice", "x", 1);
    let names: Vec<String> = p
        .iter()
        .filter_map(|v| match v {
            Value::Struct(f) => f[0].as_str().map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "PIDs" || n == "Delegate" || n == "Slice"),
        "{names:?}"
    );
}

fn named(p: &[Value]) -> Vec<(String, Value)> {
    props(&[
        Value::Byte(0),
        Value::Byte(0),
        Value::Array("(sv)".into(), p.to_vec()),
    ])
}

#[test]
fn limits_become_the_matching_properties() {
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .reservation(32 << 20)
                .swap(96 << 20)
                .build()
                .expect("memory"),
        )
        .pids(LinuxPidsBuilder::default().limit(16).build().expect("pids"))
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(20_001)
                .period(100_000u64)
                .cpus("0-2,9")
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    let p = named(&resource_properties(Layout::Unified, &r).expect("props"));
    let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("MemoryMax"), Some(Value::U64(64 << 20)));
    assert_eq!(get("MemoryLow"), Some(Value::U64(32 << 20)));
    assert_eq!(get("MemorySwapMax"), Some(Value::U64(32 << 20)));
    assert_eq!(get("TasksMax"), Some(Value::U64(16)));
    assert_eq!(get("CPUWeight"), Some(Value::U64(100)));
    // 20.001 % rounds up to whole percent: 210 ms per second.
    assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::U64(210_000)));
    assert_eq!(get("CPUQuotaPeriodUSec"), Some(Value::U64(100_000)));
    assert_eq!(
        get("AllowedCPUs"),
        Some(Value::Array(
            "y".into(),
            vec![Value::Byte(0b111), Value::Byte(0b10)]
        ))
    );
    // v1-only hosts get no v2-only properties.
    let p = named(&resource_properties(Layout::Hybrid, &r).expect("props"));
    assert!(p
        .iter()
        .all(|(n, _)| n != "AllowedCPUs" && n != "MemoryLow"));

    let unlimited = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(-1)
                .build()
                .expect("memory"),
        )
        .pids(LinuxPidsBuilder::default().limit(-1).build().expect("pids"))
        .build()
        .expect("resources");
    let p = named(&resource_properties(Layout::Unified, &unlimited).expect("props"));
    assert!(p.contains(&("MemoryMax".into(), Value::U64(INFINITY))));
    assert!(p.contains(&("TasksMax".into(), Value::U64(INFINITY))));
}

#[test]
fn a_bad_cpu_list_is_refused_by_name() {
    for bad in ["x", "3-1", "1-", "99999"] {
        assert!(cpu_list_mask(bad).is_err(), "{bad}");
    }
    assert_eq!(
        cpu_list_mask("8").expect("ok"),
        [Value::Byte(0), Value::Byte(1)]
    );
}

const PROC_DEVICES: &str = "Character devices:\n  1 mem\n  5 /dev/tty\n136 pts\n195 nvidia\n509 nvidia-uvm\n\nBlock devices:\n  8 sd\n";

#[test]
fn device_rules_become_a_strict_allow_list() {
    let mut rules = vec![
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'c', Some(195), Some(0), "rw"),
        rule(true, 'c', Some(509), None, "rw"),
    ];
    rules.extend(default_device_rules());
    let policy = DevicePolicy::from_rules(&rules).expect("policy");
    let p = named(&device_properties(&policy, PROC_DEVICES).expect("expressible"));
    assert_eq!(p[0], ("DevicePolicy".into(), Value::str("strict")));
    let Value::Array(_, allow) = &p[1].1 else {
        panic!("DeviceAllow is an array: {p:?}");
    };
    let entries: Vec<(String, String)> = allow
        .iter()
        .map(|v| match v {
            Value::Struct(f) => (
                f[0].as_str().unwrap_or_default().to_string(),
                f[1].as_str().unwrap_or_default().to_string(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    // Each rule keeps the access it was given: mknod of 195:0 comes from `char-*`, as
    // systemd checks every requested bit against one entry and asks for mknod alone.
    assert!(
        entries.contains(&("/dev/char/195:0".into(), "rw".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("char-nvidia-uvm".into(), "rw".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("/dev/char/1:3".into(), "rwm".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("char-pts".into(), "rwm".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("char-*".into(), "m".into())),
        "{entries:?}"
    );
}

#[test]
fn rules_systemd_cannot_say_are_reported_and_default_allow_installs_nothing() {
    let policy =
        DevicePolicy::from_rules(&[rule(true, 'c', Some(240), None, "rw")]).expect("policy");
    let e = device_properties(&policy, PROC_DEVICES).expect_err("unnamed major");
    assert!(e.contains("240"), "{e}");

    let policy = DevicePolicy::from_rules(&[
        rule(true, 'a', None, None, "rwm"),
        rule(false, 'c', Some(195), None, "rwm"),
    ])
    .expect("policy");
    let p = named(&device_properties(&policy, PROC_DEVICES).expect("auto"));
    assert_eq!(p[0], ("DevicePolicy".into(), Value::str("auto")));
    assert_eq!(
        p[1],
        ("DeviceAllow".into(), Value::Array("(ss)".into(), vec![]))
    );
}

#[test]
fn a_property_an_older_systemd_does_not_know_is_dropped_and_the_start_retried() {
    let peer = FakePeer::start(OK, |m| match m.member.as_deref() {
        Some("StartTransientUnit") => {
            let body = m.values().expect("body");
            if props(&body).iter().any(|(n, _)| n == "OOMPolicy") {
                vec![error(
                    m,
                    "org.freedesktop.DBus.Error.PropertyReadOnly",
                    "Cannot set property OOMPolicy, or unknown property.",
                )]
            } else {
                vec![
                    reply(m, &[Value::ObjectPath(JOB.into())]),
                    job_removed(JOB, "gpurun-g.scope", "done"),
                ]
            }
        }
        _ => vec![reply(m, &[])],
    });
    let mut c = open(&peer);
    let p = unit_properties("system.slice", "gpurun-g.scope", "g", 5);
    start_unit(&mut c, "gpurun-g.scope", p).expect("started without OOMPolicy");
    drop(c);
    let calls = peer.calls();
    assert_eq!(
        members(&calls),
        ["StartTransientUnit", "StartTransientUnit"]
    );
    let second = props(&calls[1].values().expect("body"));
    assert!(second.iter().any(|(n, _)| n == "Delegate"));

    // Any other refused property is an error.
    let peer = FakePeer::start(OK, |m| {
        vec![error(
            m,
            "org.freedesktop.DBus.Error.PropertyReadOnly",
            "Cannot set property Delegate, or unknown property.",
        )]
    });
    let mut c = open(&peer);
    let p = unit_properties("system.slice", "gpurun-g.scope", "g", 5);
    let e = start_unit(&mut c, "gpurun-g.scope", p).expect_err("refused");
    assert!(e.to_string().contains("Delegate"), "{e}");
}
