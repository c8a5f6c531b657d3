//! A namespace type the config does not list is the runtime's own (root): the spec's
//! "inherit" rule, which the OCI validation suite's `linux_ns_itype` checks. Without a
//! mount namespace the container shares the runtime's mount table, so gpurun makes no
//! mount at all: the mountinfo of the namespace it ran in is the same before and after,
//! propagation included, and every field that would need a mount is refused by name.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
mod host_ns;
use common::*;
use host_ns::*;

/// `/proc/<pid>/ns/<name>` for every type, and the config's name for it.
const TYPES: [(&str, &str); 8] = [
    ("mnt", "mount"),
    ("pid", "pid"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("net", "network"),
    ("cgroup", "cgroup"),
    ("user", "user"),
    ("time", "time"),
];

fn own_ns(name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{name}"))
        .unwrap()
        .display()
        .to_string()
}

/// `name link` lines for every namespace of the container's process.
const PRINT_NS: &str = "for n in mnt pid ipc uts net cgroup user time; do \
     echo \"$n $(readlink /proc/self/ns/$n)\"; done";

#[test]
fn each_unlisted_namespace_type_is_the_runtimes() {
    if skip("each_unlisted_namespace_type_is_the_runtimes") {
        return;
    }
    let rt = Runtime::new();
    // Every type but user is created in turn; user is never listed here, so it is the
    // runtime's in every case.
    let created = ["mount", "pid", "ipc", "uts", "network", "cgroup", "time"];
    for missing in ["pid", "ipc", "uts", "network", "cgroup", "time"] {
        let mut b = Bundle::sh(PRINT_NS);
        let listed: Vec<_> = created
            .iter()
            .filter(|t| **t != missing)
            .map(|t| serde_json::json!({"type": t}))
            .collect();
        b.config["linux"]["namespaces"] = listed.into();
        if missing == "uts" {
            b.config.as_object_mut().unwrap().remove("hostname");
        }
        let out = rt.run(&b, &id(&format!("noinherit-{missing}")));
        assert_eq!(out.status.code(), Some(0), "{missing}: {}", stderr(&out));
        let text = stdout(&out);
        for (proc_name, config_name) in TYPES {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{proc_name} ")))
                .unwrap_or_else(|| panic!("{missing}: no {proc_name} in {text}"));
            let theirs = line.split_once(' ').unwrap().1;
            let inherited = config_name == missing || config_name == "user";
            assert_eq!(
                theirs == own_ns(proc_name),
                inherited,
                "without {missing}: {proc_name} is {theirs}, the runtime's is {}",
                own_ns(proc_name)
            );
        }
    }
}

/// What the validation suite's `linux_ns_itype` asks, less its mounts: no namespace
/// listed at all. The container runs chrooted in its rootfs, with its device nodes, in
/// every namespace of the runtime, and the runtime's mount table does not change.
#[test]
fn without_any_namespace_the_container_shares_the_runtimes_and_no_mount_changes() {
    if skip("without_any_namespace_the_container_shares_the_runtimes_and_no_mount_changes") {
        return;
    }
    let rt = Runtime::new();
    let script = r#"
cat /proc/self/mountinfo > "$D/before"
$G create $CREATE_FLAGS -b "$B" "$ID" > "$D/ctr.out" 2>&1
pid=$($G state "$ID" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
for n in mnt pid ipc uts net cgroup user time; do
  [ "$(readlink /proc/$pid/ns/$n)" = "$(readlink /proc/self/ns/$n)" ] && echo "same $n"
done
echo "root $(readlink /proc/$pid/root)"
$G start "$ID"
i=0
until $G state "$ID" | grep -q '"stopped"' || [ $i -ge 400 ]; do sleep 0.05; i=$((i+1)); done
$G delete "$ID"
cat /proc/self/mountinfo > "$D/after"
cat "$D/ctr.out"
"#;
    for (i, flags) in ["", "--no-pivot"].into_iter().enumerate() {
        let mut b = Bundle::own_rootfs("test -c /dev/null && test -c /dev/urandom && echo devices");
        b.config["linux"]["namespaces"] = serde_json::json!([]);
        b.config["mounts"] = serde_json::json!([]);
        for f in ["maskedPaths", "readonlyPaths"] {
            b.config["linux"].as_object_mut().unwrap().remove(f);
        }
        b.config.as_object_mut().unwrap().remove("hostname");
        let id = id(&format!("nons{i}"));
        rt.track(&id);
        let rootfs = b.rootfs().display().to_string();
        let out = run_script(&rt, &b, script, &[("ID", &id), ("CREATE_FLAGS", flags)]);
        assert_eq!(out.status.code(), Some(0), "{flags}: {}", explain(&out));
        let text = stdout(&out);
        for (n, _) in TYPES {
            assert!(
                text.contains(&format!("same {n}\n")),
                "{flags}: {n}: {text}"
            );
        }
        assert!(
            text.contains(&format!("root {rootfs}\n")),
            "{flags}: {text}"
        );
        assert!(text.ends_with("devices\n"), "{flags}: {text}");
        let (appeared, gone) = mountinfo_diff(b.path(), "before", "after");
        assert!(appeared.is_empty(), "{flags}: mounts made: {appeared:?}");
        assert!(gone.is_empty(), "{flags}: mounts changed: {gone:?}");
    }
}

/// Each field that would need a mount, alone on a config without a mount namespace:
/// `create` fails naming it, before anything runs.
#[test]
fn without_a_mount_namespace_each_field_that_needs_a_mount_is_refused() {
    if skip("without_a_mount_namespace_each_field_that_needs_a_mount_is_refused") {
        return;
    }
    let rt = Runtime::new();
    let node = gpu_node::Node::new(true);
    let bare = || {
        let mut b = Bundle::own_rootfs("true");
        b.config["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
        for f in ["maskedPaths", "readonlyPaths"] {
            b.config["linux"].as_object_mut().unwrap().remove(f);
        }
        b.config["mounts"] = serde_json::json!([]);
        b.config.as_object_mut().unwrap().remove("hostname");
        b
    };
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 7] = [
        (
            "mounts: /proc",
            |c| {
                c["mounts"] =
                    serde_json::json!([{"destination": "/proc", "type": "proc", "source": "proc"}])
            },
        ),
        ("linux.maskedPaths", |c| {
            c["linux"]["maskedPaths"] = serde_json::json!(["/proc/kcore"])
        }),
        ("linux.readonlyPaths", |c| {
            c["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys"])
        }),
        ("linux.rootfsPropagation", |c| {
            c["linux"]["rootfsPropagation"] = "rslave".into()
        }),
        ("root.readonly", |c| c["root"]["readonly"] = true.into()),
        ("process.terminal", |c| {
            c["process"]["terminal"] = true.into()
        }),
        ("a GPU grant", |c| {
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push("NVIDIA_VISIBLE_DEVICES=0".into())
        }),
    ];
    for (i, (named, edit)) in cases.into_iter().enumerate() {
        let mut b = bare();
        edit(&mut b.config);
        b.write();
        let id = id(&format!("refuse{i}"));
        rt.track(&id);
        let out = node
            .cmd(&rt)
            .args(["run", "-b"])
            .arg(b.path())
            .arg(&id)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{named}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(named), "{named}: {err}");
        assert!(err.contains("needs a mount namespace"), "{named}: {err}");
    }
    let b = bare();
    b.write();
    let id = id("refuse-none");
    rt.track(&id);
    let out = node
        .cmd(&rt)
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&id)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the bare config runs: {}",
        stderr(&out)
    );
}

/// Run detached, read `/marker` through `exec`, delete; mountinfo saved around it.
const EXEC_MARKER: &str = r#"
cat /proc/self/mountinfo > "$D/before"
$G run -d -b "$B" "$ID" > /dev/null 2>&1
$G exec "$ID" cat /marker
$G delete --force "$ID"
cat /proc/self/mountinfo > "$D/after"
"#;

/// A long-running container with `namespaces`, a `/marker` in its own rootfs, and
/// nothing that needs a mount.
fn nothing_to_mount(namespaces: serde_json::Value) -> Bundle {
    let mut b = Bundle::own_rootfs("sleep 60");
    std::fs::write(b.rootfs().join("marker"), "in the container's root\n").unwrap();
    b.config["linux"]["namespaces"] = namespaces;
    b.config["mounts"] = serde_json::json!([]);
    for f in ["maskedPaths", "readonlyPaths"] {
        b.config["linux"].as_object_mut().unwrap().remove(f);
    }
    b.config.as_object_mut().unwrap().remove("hostname");
    b
}

/// `exec` reads the container's `/marker`, and the mountinfo of the namespace it all
/// ran in did not change.
fn assert_exec_reads_the_marker(rt: &Runtime, b: &Bundle, name: &str) {
    let id = id(name);
    rt.track(&id);
    let out = run_script(rt, b, EXEC_MARKER, &[("ID", &id)]);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", explain(&out));
    assert_eq!(stdout(&out), "in the container's root\n", "{name}");
    let (appeared, gone) = mountinfo_diff(b.path(), "before", "after");
    assert!(appeared.is_empty(), "{name}: mounts made: {appeared:?}");
    assert!(gone.is_empty(), "{name}: mounts changed: {gone:?}");
}

/// `exec` into a container without a mount namespace enters the container's root, as
/// its init did, not the runtime's.
#[test]
fn exec_into_a_container_without_a_mount_namespace_runs_in_its_root() {
    if skip("exec_into_a_container_without_a_mount_namespace_runs_in_its_root") {
        return;
    }
    let rt = Runtime::new();
    let b = nothing_to_mount(serde_json::json!([{"type": "pid"}]));
    assert_exec_reads_the_marker(&rt, &b, "nons-exec");
}

/// `{"type": "mount", "path": <the runtime's own>}` is the same as no mount namespace:
/// nothing is mounted, and a config with mounts is refused.
#[test]
fn joining_the_runtimes_own_mount_namespace_is_having_none() {
    if skip("joining_the_runtimes_own_mount_namespace_is_having_none") {
        return;
    }
    let rt = Runtime::new();
    let own = serde_json::json!([{"type": "mount", "path": "/proc/self/ns/mnt"}, {"type": "pid"}]);
    assert_exec_reads_the_marker(&rt, &nothing_to_mount(own.clone()), "ownmnt");

    let mut b = Bundle::own_rootfs("true");
    b.config["linux"]["namespaces"] = own;
    b.config.as_object_mut().unwrap().remove("hostname");
    let out = rt.run(&b, &id("ownmnt-mounts"));
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("mounts: /proc needs a mount namespace"),
        "{err}"
    );
}
