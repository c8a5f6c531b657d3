//! Faults (root): the runtime killed at every step of `create`, `create` itself killed at
//! any moment, state directories left by a reboot, full and read-only state directories,
//! corrupt state files, and files written by another format version. After each, `delete
//! --force` (or the failed command itself) must leave nothing: no state directory, cgroup,
//! mount, process or GPU lease.

mod common;
mod reliability;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use reliability::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(120);

/// What no test here may leave: the containers' cgroups under `parent`, processes that
/// carry `marker` in their command line, mounts under the test's own directories, and the
/// state directory of `id`.
fn assert_nothing_left(rt: &Runtime, parent: &str, id: &str, dirs: &[&Path]) {
    assert!(
        !rt.root.path().join(id).exists(),
        "{id}: state directory left"
    );
    let cgroups: Vec<PathBuf> = cgroup_children(parent)
        .into_iter()
        .filter(|p| p.ends_with(id))
        .collect();
    assert!(cgroups.is_empty(), "{id}: cgroups left: {cgroups:?}");
    let procs = processes_with(id);
    assert!(procs.is_empty(), "{id}: processes left: {procs:?}");
    let mounts = mounts_under(dirs);
    assert!(mounts.is_empty(), "{id}: mounts left: {mounts:?}");
}

/// A container that exercises every kind of step: mounts (a bind and a tmpfs), devices,
/// sysctls, hostname, rlimits, masks; `userns` adds a user namespace (the two-process
/// path).
fn busy_bundle(parent: &str, id: &str, userns: bool) -> Bundle {
    let mut b = Bundle::sh("sleep 100");
    let data = b.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    b.config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(
        json!({"destination": "/tmp", "type": "bind", "source": data, "options": ["rbind", "rw"]}),
    );
    mounts.push(
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
    );
    b.config["linux"]["sysctl"] = json!({"kernel.shmmax": "100000"});
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
    if userns {
        b.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        b.config["linux"]["uidMappings"] = map.clone();
        b.config["linux"]["gidMappings"] = map;
    }
    b
}

fn failpoint_create(rt: &Runtime, b: &Bundle, id: &str, step: &str) -> std::process::Output {
    b.write();
    rt.track(id);
    let mut cmd = Command::new(failpoints_binary());
    cmd.arg("--root")
        .arg(rt.root.path())
        .args(["create", "-b"])
        .arg(b.path())
        .arg(id)
        .env("GPURUN_FAILPOINT", step)
        .stdin(Stdio::null());
    output_within(
        &mut cmd,
        LIMIT,
        &format!("create with the fail point {step}"),
    )
}

#[test]
fn init_killed_at_each_step_of_create_leaves_nothing_after_delete_force() {
    if skip("init_killed_at_each_step_of_create_leaves_nothing_after_delete_force") {
        return;
    }
    let parent = CgroupParent::new("fault-steps");
    let rt = Runtime::new();
    let steps = gpurun::process::init::failpoint_names();
    assert!(steps.len() > 20, "{steps:?}");
    for userns in [false, true] {
        for step in &steps {
            let id = id(&format!(
                "fp-{}-{step}",
                if userns { "userns" } else { "plain" }
            ));
            let b = busy_bundle(&parent, &id, userns);
            let out = failpoint_create(&rt, &b, &id, step);
            let err = stderr(&out);
            assert!(!out.status.success(), "{step}: create succeeded");
            assert!(!panicked(&err), "{step}: {err}");
            assert!(
                err.contains("exited before it was ready"),
                "{step} (userns {userns}): {err}"
            );
            let del = rt
                .cmd()
                .args(["delete", "--force", &id])
                .output()
                .expect("delete");
            assert!(del.status.success(), "{step}: {}", stderr(&del));
            assert_nothing_left(
                &rt,
                &parent,
                &id,
                &[b.path(), rt.root.path(), shared_rootfs()],
            );
        }
    }
    // Without the fail point the same bundles work: the steps were really reached.
    let id = id("fp-none");
    let b = busy_bundle(&parent, &id, true);
    let out = failpoint_create(&rt, &b, &id, "no-such-step");
    assert!(out.status.success(), "{}", stderr(&out));
    rt.ok(&["delete", "--force", &id]);
    assert_nothing_left(&rt, &parent, &id, &[b.path(), rt.root.path()]);
}

/// A runtime hook that SIGKILLs the `gpurun create` running it: create dies after its state
/// directory, cgroup and init exist, while init waits for the hook's answer.
fn kill_create_hook(b: &mut Bundle, phase: &str) {
    b.config["hooks"][phase] =
        json!([{"path": "/bin/sh", "args": ["sh", "-c", "kill -KILL $PPID"]}]);
}

#[test]
fn create_killed_from_its_own_runtime_hook_leaves_nothing_after_delete_force() {
    if skip("create_killed_from_its_own_runtime_hook_leaves_nothing_after_delete_force") {
        return;
    }
    let parent = CgroupParent::new("fault-hook");
    let rt = Runtime::new();
    for (phase, userns) in [("prestart", false), ("createRuntime", true)] {
        let id = id(&format!("hookkill-{phase}"));
        let mut b = busy_bundle(&parent, &id, userns);
        kill_create_hook(&mut b, phase);
        let out = rt.create(&b, &id, &[]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{phase}: {}", stderr(&out));
        let st = rt.state(&id);
        assert_eq!(st["status"], "creating", "{phase}: {st}");
        let del = rt
            .cmd()
            .args(["delete", "--force", &id])
            .output()
            .expect("delete");
        assert!(del.status.success(), "{phase}: {}", stderr(&del));
        assert_nothing_left(&rt, &parent, &id, &[b.path(), rt.root.path()]);
    }
}

fn kills() -> usize {
    std::env::var("GPURUN_FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[test]
fn create_killed_at_any_moment_leaves_nothing_after_delete_force() {
    if skip("create_killed_at_any_moment_leaves_nothing_after_delete_force") {
        return;
    }
    let parent = CgroupParent::new("fault-anytime");
    let rt = Runtime::new();
    // How long one create takes here sets where the kills land: spread over all of it,
    // from before the state directory exists to after init is ready.
    let id0 = id("anytime-probe");
    let b = busy_bundle(&parent, &id0, true);
    let t = std::time::Instant::now();
    let out = rt.create(&b, &id0, &[]);
    let span = t.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    rt.ok(&["delete", "--force", &id0]);
    let n = kills();
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..n {
        let id = id(&format!("anytime-{i}"));
        let b = busy_bundle(&parent, &id, i % 2 == 1);
        b.write();
        rt.track(&id);
        let mut child = rt
            .cmd()
            .args(["create", "-b"])
            .arg(b.path())
            .arg(&id)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn create");
        std::thread::sleep(span.mul_f64(1.2 * i as f64 / n as f64));
        let _ = child.kill();
        let status = child.wait().expect("wait create");
        *outcomes
            .entry(if status.success() {
                "finished"
            } else {
                "killed"
            })
            .or_insert(0) += 1;
        let del = output_within(
            rt.cmd().args(["delete", "--force", &id]),
            LIMIT,
            "delete --force",
        );
        assert!(del.status.success(), "kill {i}: {}", stderr(&del));
        assert_nothing_left(&rt, &parent, &id, &[b.path(), rt.root.path()]);
    }
    eprintln!("create killed at {n} moments over {span:?}: {outcomes:?}");
}

/// A state.json written by hand, as a crash or a reboot would leave it.
fn write_state(root: &Path, id: &str, st: &Value) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).expect("mkdir state dir");
    let path = dir.join("state.json");
    std::fs::write(&path, serde_json::to_vec(st).expect("json")).expect("write state");
    path
}

fn state_of(rt: &Runtime, parent: &str, id: &str) -> Value {
    let b = busy_bundle(parent, id, false);
    let out = rt.create(&b, id, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st: Value = serde_json::from_slice(
        &std::fs::read(rt.root.path().join(id).join("state.json")).expect("read state"),
    )
    .expect("state json");
    rt.ok(&["delete", "--force", id]);
    st
}

fn dead_pid() -> i32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id() as i32;
    c.wait().expect("wait true");
    pid
}

#[test]
fn a_state_whose_init_is_gone_reads_stopped_and_deletes_cleanly() {
    if skip("a_state_whose_init_is_gone_reads_stopped_and_deletes_cleanly") {
        return;
    }
    let parent = CgroupParent::new("fault-reboot");
    let rt = Runtime::new();
    // A real state, whose cgroup directories no longer exist (as after a reboot).
    let real = state_of(&rt, &parent, &id("reboot-model"));
    let mut sleeper = Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("spawn sleep");
    let live = sleeper.id() as i32;
    let live_start = gpurun::state::process_start_time(live).expect("sleep start time");
    for (case, pid, start) in [
        ("dead-pid", dead_pid(), 12345),
        ("reused-pid", live, live_start + 1),
    ] {
        let id = id(&format!("reboot-{case}"));
        let mut st = real.clone();
        st["id"] = id.clone().into();
        st["pid"] = pid.into();
        st["initStartTime"] = start.into();
        st["status"] = "running".into();
        write_state(rt.root.path(), &id, &st);
        rt.track(&id);
        let public = rt.state(&id);
        assert_eq!(public["status"], "stopped", "{case}: {public}");
        assert_eq!(public["pid"], 0, "{case}");
        assert!(rt.ok(&["list"]).contains("stopped"), "{case}");
        let kill = rt.cmd().args(["kill", &id, "KILL"]).output().expect("kill");
        assert!(
            !kill.status.success(),
            "{case}: kill of a stopped container"
        );
        assert!(
            stderr(&kill).contains("container not running"),
            "{case}: {}",
            stderr(&kill)
        );
        rt.ok(&["delete", &id]);
        assert_nothing_left(&rt, &parent, &id, &[rt.root.path()]);
    }
    assert!(
        sleeper.try_wait().expect("try_wait").is_none(),
        "the process that reused the pid was signalled"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Every verb that reads a state gets `file`'s error, by name, never a panic.
fn every_verb_reports(rt: &Runtime, id: &str, expect: &str) {
    for verb in [
        vec!["state", id],
        vec!["start", id],
        vec!["kill", id, "KILL"],
        vec!["delete", id],
        vec!["ps", id],
        vec!["pause", id],
        vec!["resume", id],
        vec!["exec", id, "true"],
    ] {
        let out = output_within(rt.cmd().args(&verb), LIMIT, &verb.join(" "));
        let err = stderr(&out);
        // exec fails with 255, as runc's does, so it cannot be mistaken for the process's.
        let code = if verb[0] == "exec" { 255 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{verb:?}: {err}");
        assert!(!panicked(&err), "{verb:?}: {err}");
        assert!(err.contains(expect), "{verb:?}: {err}");
    }
    let list = rt.cmd().args(["list"]).output().expect("list");
    assert!(!panicked(&stderr(&list)), "{}", stderr(&list));
}

#[test]
fn a_corrupt_state_file_is_reported_by_name_and_removed_by_delete_force() {
    if skip("a_corrupt_state_file_is_reported_by_name_and_removed_by_delete_force") {
        return;
    }
    let rt = Runtime::new();
    for (case, content) in [
        ("garbage", b"{not json".to_vec()),
        ("empty", Vec::new()),
        (
            "truncated",
            br#"{"gpurunStateFormat":1,"ociVersion":"1.0.2","id":"x","pid":"#.to_vec(),
        ),
        (
            "nested",
            format!("{{\"x\":{}}}", "[".repeat(100_000)).into_bytes(),
        ),
        (
            "invalid-utf8",
            b"{\"gpurunStateFormat\":1,\"id\":\"\xff\"}".to_vec(),
        ),
    ] {
        let id = id(&format!("corrupt-{case}"));
        let dir = rt.root.path().join(&id);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("state.json");
        std::fs::write(&path, content).expect("write");
        rt.track(&id);
        every_verb_reports(&rt, &id, &format!("corrupt state file {}", path.display()));
        let del = rt
            .cmd()
            .args(["delete", "--force", &id])
            .output()
            .expect("delete");
        assert!(del.status.success(), "{case}: {}", stderr(&del));
        assert!(!dir.exists(), "{case}");
    }
}

#[test]
fn a_state_file_of_another_format_is_reported_and_never_trusted() {
    if skip("a_state_file_of_another_format_is_reported_and_never_trusted") {
        return;
    }
    let parent = CgroupParent::new("fault-format");
    let rt = Runtime::new();
    let real = state_of(&rt, &parent, &id("format-model"));
    // Its pid and start time are a live process's: only the format says not to trust it.
    let mut sleeper = Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id() as i32;
    let id = id("format-2");
    let mut st = real.clone();
    st["id"] = id.clone().into();
    st["gpurunStateFormat"] = 2.into();
    st["pid"] = pid.into();
    st["initStartTime"] = gpurun::state::process_start_time(pid)
        .expect("start")
        .into();
    st["cgroup"] = Value::Null;
    let path = write_state(rt.root.path(), &id, &st);
    rt.track(&id);
    every_verb_reports(
        &rt,
        &id,
        &format!(
            "state file {} has format 2, this gpurun reads format 1",
            path.display()
        ),
    );
    let del = rt
        .cmd()
        .args(["delete", "--force", &id])
        .output()
        .expect("delete");
    assert!(del.status.success(), "{}", stderr(&del));
    assert!(!path.exists());
    assert!(
        sleeper.try_wait().expect("try_wait").is_none(),
        "a process named by a state file of another format was signalled"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// `script` under `sh` in a private mount namespace of its own: the tmpfs it mounts for a
/// state root goes away with it, whatever happens.
fn in_private_mount_ns(script: &str, envs: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script])
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    output_within(&mut cmd, LIMIT, "a script in a private mount namespace")
}

/// Mounts a tmpfs (`$OPTS`) at `$MNT`, makes `$MNT/root`, runs `$PREPARE`, then `gpurun
/// create` with `$MNT/root` as state root, and prints its exit code, its stderr and what is
/// left in the root. The container is force-deleted on the way out.
const STATE_ROOT_SCRIPT: &str = r#"
set -u
mkdir -p "$MNT" && mount -t tmpfs -o "$OPTS" tmpfs "$MNT" && mkdir "$MNT/root" || exit 99
trap '"$GPURUN" --root "$MNT/root" delete --force "$ID" >/dev/null 2>&1' EXIT
eval "$PREPARE"
"$GPURUN" --root "$MNT/root" create -b "$BUNDLE" "$ID" </dev/null >/dev/null 2>"$MNT.err"
echo "rc=$?"
echo "left=$(ls -A "$MNT/root" | tr '\n' ' ')"
echo "err=$(cat "$MNT.err")"
eval "$AFTER"
"#;

struct StateRootCase {
    rc: i32,
    left: String,
    err: String,
    after: String,
}

fn state_root_case(b: &Bundle, id: &str, opts: &str, prepare: &str, after: &str) -> StateRootCase {
    b.write();
    let mnt = b.path().join("mnt");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_gpurun"));
    let out = in_private_mount_ns(
        STATE_ROOT_SCRIPT,
        &[
            ("MNT", mnt.as_os_str()),
            ("OPTS", opts.as_ref()),
            ("PREPARE", prepare.as_ref()),
            ("AFTER", after.as_ref()),
            ("GPURUN", bin.as_os_str()),
            ("BUNDLE", b.path().as_os_str()),
            ("ID", id.as_ref()),
        ],
    );
    let text = stdout(&out);
    assert_ne!(
        out.status.code(),
        Some(99),
        "mounting the tmpfs: {}",
        stderr(&out)
    );
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    StateRootCase {
        rc: field("rc").parse().unwrap_or(-1),
        left: field("left").trim().to_string(),
        err: field("err"),
        after: text
            .lines()
            .skip_while(|l| !l.starts_with("after:"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn a_full_or_read_only_state_root_gives_a_clear_error_and_leaves_nothing() {
    if skip("a_full_or_read_only_state_root_gives_a_clear_error_and_leaves_nothing") {
        return;
    }
    let parent = CgroupParent::new("fault-stateroot");
    // The size of this bundle's state.json, to size a tmpfs that holds exactly one copy.
    let sizing = Runtime::new();
    let probe = id("stateroot-probe");
    let b = busy_bundle(&parent, &probe, false);
    let out = sizing.create(&b, &probe, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let size = std::fs::metadata(sizing.root.path().join(&probe).join("state.json"))
        .expect("state.json")
        .len();
    sizing.ok(&["delete", "--force", &probe]);
    let one_copy = size.div_ceil(4096) * 4096;

    let cases: [(&str, String, &str, &str); 4] = [
        // No room for any byte of state.json.
        (
            "full",
            "size=4k".into(),
            "dd if=/dev/zero of=\"$MNT/fill\" bs=4k count=1 2>/dev/null",
            "writing state",
        ),
        // No inode for the container's directory.
        (
            "no-inodes",
            "nr_inodes=2".into(),
            ":",
            "creating state directory",
        ),
        // Room for one copy of state.json: the save after the cgroup exists fails, with
        // the cgroup and the fifo already made.
        ("one-copy", format!("size={one_copy}"), ":", "writing state"),
        (
            "read-only",
            "size=1m".into(),
            "mount -o remount,ro \"$MNT\"",
            "Read-only file system",
        ),
    ];
    for (case, opts, prepare, expect) in cases {
        let id = id(&format!("stateroot-{case}"));
        let b = busy_bundle(&parent, &id, false);
        let r = state_root_case(&b, &id, &opts, prepare, ":");
        assert_eq!(r.rc, 1, "{case}: {}", r.err);
        assert!(r.err.contains(expect), "{case}: {}", r.err);
        if case != "read-only" {
            assert!(
                r.err.contains("No space left on device"),
                "{case}: {}",
                r.err
            );
        }
        assert!(!panicked(&r.err), "{case}: {}", r.err);
        assert!(
            r.left.is_empty(),
            "{case}: left in the state root: {}",
            r.left
        );
        assert!(cgroup_children(&parent).is_empty(), "{case}: cgroup left");
        assert!(processes_with(&id).is_empty(), "{case}: process left");
    }

    // A root that turns read-only under a created container: delete fails clearly, the
    // container is still killed, and once writable again delete finishes the job.
    let id = id("stateroot-ro-later");
    let b = busy_bundle(&parent, &id, false);
    let after = r#"
echo "after:"
mount -o remount,ro "$MNT"
"$GPURUN" --root "$MNT/root" delete --force "$ID" 2>&1; echo "delete-ro=$?"
"$GPURUN" --root "$MNT/root" state "$ID" 2>&1
mount -o remount,rw "$MNT"
"$GPURUN" --root "$MNT/root" delete "$ID" 2>&1; echo "delete-rw=$?"
echo "left-after=$(ls -A "$MNT/root")"
"#;
    let r = state_root_case(&b, &id, "size=1m", ":", after);
    assert_eq!(r.rc, 0, "{}", r.err);
    assert!(r.after.contains("Read-only file system"), "{}", r.after);
    assert!(r.after.contains("delete-ro=1"), "{}", r.after);
    assert!(
        r.after.contains("\"status\": \"stopped\"") || r.after.contains("\"status\":\"stopped\""),
        "{}",
        r.after
    );
    assert!(r.after.contains("delete-rw=0"), "{}", r.after);
    assert!(
        r.after.contains("left-after=\n") || r.after.ends_with("left-after="),
        "{}",
        r.after
    );
    assert!(cgroup_children(&parent).is_empty(), "cgroup left");
    assert!(processes_with(&id).is_empty(), "process left");
}

/// A fake GPU node (the two-GPU driver tree, its state directory) and the config file that
/// points gpurun at it.
struct GpuNode {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl GpuNode {
    fn new() -> GpuNode {
        let dir = tempfile::Builder::new()
            .prefix("gpurun-faults-gpu-")
            .tempdir()
            .expect("tempdir");
        let host = dir.path().join("host");
        gpurun::gpu::fake::FakeDriver::two_gpus()
            .build(&host)
            .expect("fake driver tree");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir state");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[nvidia]\ndriver-root = {h:?}\ndev-root = {h:?}\nproc-root = {h:?}\n\
                 cdi-spec-dirs = []\n[gpus]\nstate-dir = {s:?}\n[journal]\ndir = {j:?}\n",
                h = host.display().to_string(),
                s = state.display().to_string(),
                j = dir.path().join("journal").display().to_string(),
            ),
        )
        .expect("config.toml");
        GpuNode { dir, config }
    }

    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("state/leases"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A privileged bundle asking for GPU 0 exclusively.
    fn bundle(&self, parent: &str, id: &str) -> Bundle {
        let mut b = Bundle::own_rootfs("sleep 100");
        std::fs::create_dir_all(b.rootfs().join(gpurun::gpu::fake::LIB_DIR)).expect("lib dir");
        b.config["linux"]["cgroupsPath"] = format!("{parent}/{id}").into();
        b.config["process"]["env"]
            .as_array_mut()
            .expect("env")
            .push("NVIDIA_VISIBLE_DEVICES=0".into());
        b.config["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .expect("bounding")
            .push("CAP_SYS_ADMIN".into());
        b.config["annotations"] = json!({"gpurun.dev/gpu-sharing": "exclusive"});
        b
    }

    fn create(&self, rt: &Runtime, b: &Bundle, id: &str) -> std::process::Output {
        b.write();
        rt.track(id);
        let mut cmd = rt.cmd();
        cmd.env("GPURUN_CONFIG", &self.config)
            .args(["create", "-b"])
            .arg(b.path())
            .arg(id);
        output_within(&mut cmd, LIMIT, "create with a GPU")
    }
}

#[test]
fn a_killed_create_never_keeps_its_gpu_lease() {
    if skip("a_killed_create_never_keeps_its_gpu_lease") {
        return;
    }
    let parent = CgroupParent::new("fault-lease");
    let node = GpuNode::new();
    let rt = Runtime::new();
    let first = id("lease-killed");
    let mut b = node.bundle(&parent, &first);
    kill_create_hook(&mut b, "createRuntime");
    let out = node.create(&rt, &b, &first);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    // The lease is written once, in init's name, when init is ready: a create killed
    // before that leaves none on disk, and the GPU is free before the state is deleted.
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    let second = id("lease-next");
    let b2 = node.bundle(&parent, &second);
    let out = node.create(&rt, &b2, &second);
    assert!(out.status.success(), "{}", stderr(&out));
    let del = rt
        .cmd()
        .env("GPURUN_CONFIG", &node.config)
        .args(["delete", "--force", &first])
        .output()
        .expect("delete");
    assert!(del.status.success(), "{}", stderr(&del));
    assert_nothing_left(&rt, &parent, &first, &[rt.root.path()]);
    let leases = node.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert!(leases[0].starts_with(&second), "{leases:?}");
    let del = rt
        .cmd()
        .env("GPURUN_CONFIG", &node.config)
        .args(["delete", "--force", &second])
        .output()
        .expect("delete");
    assert!(del.status.success(), "{}", stderr(&del));
    assert!(node.leases().is_empty(), "{:?}", node.leases());
}

#[test]
fn a_lease_file_of_another_format_is_reported_and_kept() {
    use gpurun::config::Sharing;
    use gpurun::gpu::lease::{Holder, Leases};
    let t = tempfile::tempdir().expect("tempdir");
    let leases = Leases::new(t.path());
    let me = std::process::id() as i32;
    let holder = |id: &str| Holder {
        container_id: id.into(),
        root: "/r".into(),
        pid: me,
        start_time: gpurun::linux::procstat::live_start_time(me).expect("start"),
    };
    leases
        .acquire(&holder("a"), &["GPU-0".into()], Sharing::Shared)
        .expect("first lease");
    let file = std::fs::read_dir(t.path().join("leases"))
        .expect("leases dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a lease file");
    let mut lease: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    assert_eq!(lease["format"], gpurun::gpu::lease::LEASE_FORMAT);
    for (case, format) in [("newer", json!(2)), ("none", Value::Null)] {
        lease["format"] = format;
        lease["fieldFromTheFuture"] = json!(true);
        std::fs::write(&file, serde_json::to_vec(&lease).expect("json")).expect("write");
        let expect = format!(
            "lease file {} has format {}, this gpurun reads format 1",
            file.display(),
            if case == "none" { "none" } else { "2" }
        );
        let err = leases
            .acquire(&holder("b"), &["GPU-1".into()], Sharing::Exclusive)
            .expect_err(case)
            .to_string();
        assert!(err.contains(&expect), "{case}: {err}");
        let err = leases.list().expect_err(case).to_string();
        assert!(err.contains(&expect), "{case}: {err}");
        assert!(
            file.exists(),
            "{case}: a lease of another format was removed"
        );
    }
}

#[test]
fn a_discovery_cache_of_another_format_is_ignored_and_rewritten() {
    use gpurun::gpu::{discover_cached, fake::FakeDriver, CACHE_FILE, CACHE_FORMAT};
    let t = tempfile::tempdir().expect("tempdir");
    let host = t.path().join("host");
    FakeDriver::two_gpus()
        .nodes(gpurun::gpu::fake::Nodes::Placeholder)
        .build(&host)
        .expect("fake tree");
    let mut cfg = gpurun::config::Config::default();
    cfg.nvidia.driver_root = host.clone();
    cfg.nvidia.dev_root = host.clone();
    cfg.nvidia.proc_root = host.clone();
    cfg.gpus.state_dir = t.path().join("state");
    let fresh = discover_cached(&cfg).expect("discovery");
    let path = cfg.gpus.state_dir.join(CACHE_FILE);
    let mut cache: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("cache")).expect("json");
    assert_eq!(cache["format"], CACHE_FORMAT);
    // Another version's file that claims another driver: used, it would inject the
    // wrong libraries.
    cache["format"] = json!(CACHE_FORMAT + 1);
    cache["inventory"]["driver_version"] = json!("1.2.3");
    std::fs::write(&path, serde_json::to_vec(&cache).expect("json")).expect("write");
    assert_eq!(
        gpurun::gpu::load_cache(&path, &cfg.roots()).expect("load"),
        None,
        "a cache of another format was trusted"
    );
    let again = discover_cached(&cfg).expect("discovery");
    assert_eq!(again, fresh);
    let rewritten: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("cache")).expect("json");
    assert_eq!(rewritten["format"], CACHE_FORMAT);
}
