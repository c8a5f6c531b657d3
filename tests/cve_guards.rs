//! Runtime and GPU-injection CVE regressions that reach their guard directly: each case
//! here fails when the check it names is taken out of gpurun (see the README's "Security
//! regressions" table).
//! Root tests skip with a message when not root, and fail instead under `CI=true`.

mod common;
#[allow(clippy::unwrap_used)]
mod gpu_node;
use common::*;

use std::process::{Command, Output, Stdio};

fn gpurun_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gpurun")
}

fn running(rt: &Runtime, b: &Bundle, name: &str) -> String {
    let cid = id(name);
    let out = rt.run_detached(b, &cid);
    assert!(out.status.success(), "{}", stderr(&out));
    cid
}

fn both(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", stdout(o), stderr(o))
}

/// CVE-2024-21626: `exec --cwd /proc/self/fd/3` with fd 3 a preserved host directory.
/// `chdir` succeeds (the magic link leads out of the container's root); only the
/// `getcwd` check after it stops the process from running with a host working directory.
#[test]
fn exec_cwd_through_a_preserved_host_directory_fd_is_refused() {
    if skip("exec_cwd_through_a_preserved_host_directory_fd_is_refused") {
        return;
    }
    let rt = Runtime::new();
    let cid = running(&rt, &Bundle::sh("sleep 60"), "execcwd");
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("host-sentinel"), "x").expect("sentinel");
    // The shell opens the directory as fd 3 for gpurun; nothing else in the test process
    // has to change its own fds.
    let out = Command::new("sh")
        .args([
            "-c",
            r#"exec "$0" --root "$1" exec --preserve-fds 1 --cwd /proc/self/fd/3 "$2" ls -a 3<"$3""#,
            gpurun_bin(),
        ])
        .arg(rt.root.path())
        .arg(&cid)
        .arg(host.path())
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh");
    assert!(
        !stdout(&out).contains("host-sentinel"),
        "the host directory was listed: {}",
        both(&out)
    );
    assert_eq!(out.status.code(), Some(255), "{}", both(&out));
    assert!(stderr(&out).contains("cwd"), "{}", stderr(&out));
}

/// CVE-2025-52881: a sysctl write must reach procfs even when a file is bound over its
/// `/proc/sys` entry in the runtime's mount namespace (which the container's starts as a
/// copy of). gpurun runs in, and the container joins, an IPC namespace held by the test,
/// so the bound entry is the one the sysctl names and its real value can be read back.
#[test]
fn a_sysctl_write_never_lands_in_a_file_bound_over_its_proc_entry() {
    if skip("a_sysctl_write_never_lands_in_a_file_bound_over_its_proc_entry") {
        return;
    }
    let holder = IpcHolder::new();
    let rt = Runtime::new();
    let cid = id("sysctlbind");
    let mut b = Bundle::sh("true");
    for ns in b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
    {
        if ns["type"] == "ipc" {
            ns["path"] = holder.ns_path().into();
        }
    }
    b.config["linux"]["sysctl"] = serde_json::json!({ "kernel.shmmni": "1234" });
    b.write();
    let decoy = b.path().join("decoy");
    std::fs::write(&decoy, "decoy\n").expect("decoy");
    rt.track(&cid);
    // The bind is made from inside the IPC namespace: procfs shows each IPC namespace
    // its own `kernel/shm*` entries, and a mount sits on one namespace's entry. Its
    // private mount namespace ends with gpurun: the bind never reaches the host.
    let out = Command::new("nsenter")
        .arg(format!("--ipc={}", holder.ns_path()))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$3" /proc/sys/kernel/shmmni && exec "$0" --root "$1" run -b "$2" "$4""#)
        .arg(gpurun_bin())
        .arg(rt.root.path())
        .arg(b.path())
        .arg(&decoy)
        .arg(&cid)
        .stdin(Stdio::null())
        .output()
        .expect("spawn unshare");
    assert_eq!(
        std::fs::read_to_string(&decoy).expect("decoy"),
        "decoy\n",
        "the sysctl was written into the bind-mounted file: {}",
        both(&out)
    );
    if out.status.success() {
        assert_eq!(holder.shmmni(), "1234", "the write reached procfs");
    } else {
        assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    }
}

/// A process holding a new IPC namespace for the test's lifetime.
struct IpcHolder {
    child: std::process::Child,
}

impl IpcHolder {
    fn new() -> IpcHolder {
        let child = Command::new("unshare")
            .args(["--ipc", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare --ipc");
        let h = IpcHolder { child };
        let mine = std::fs::read_link("/proc/self/ns/ipc").expect("own ipc ns");
        // unshare execs sleep in place once the namespace exists: wait for that.
        for _ in 0..1000 {
            if std::fs::read_link(h.ns_path()).is_ok_and(|ns| ns != mine) {
                return h;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("unshare --ipc never made its namespace");
    }

    fn ns_path(&self) -> String {
        format!("/proc/{}/ns/ipc", self.child.id())
    }

    fn shmmni(&self) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--ipc={}", self.ns_path()))
            .args(["cat", "/proc/sys/kernel/shmmni"])
            .output()
            .expect("nsenter");
        assert!(out.status.success(), "{}", both(&out));
        stdout(&out).trim().to_string()
    }
}

impl Drop for IpcHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CVE-2016-9962: until its `execve`, init is gpurun's code and must not be open to
/// the container's processes. A root process in the container with the same
/// capabilities as init (so only dumpability decides) cannot read init's environment while the
/// container is `created`.
#[test]
fn init_waiting_for_start_is_closed_to_the_containers_processes() {
    if skip("init_waiting_for_start_is_closed_to_the_containers_processes") {
        return;
    }
    let rt = Runtime::new();
    let cid = id("nodump");
    let out = rt.create(&Bundle::sh("true"), &cid, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = rt
        .cmd()
        .args(["exec", &cid, "sh", "-c", "cat /proc/1/environ >/dev/null"])
        .output()
        .expect("exec");
    assert_ne!(out.status.code(), Some(0), "{}", both(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", both(&out));
    rt.ok(&["delete", "--force", &cid]);
}

/// CVE-2023-27561 / CVE-2023-28642 (the CVE-2019-19921 class regressed): sysfs, like
/// proc, must land on an ordinary directory, never through a symlink.
#[test]
fn a_sys_symlink_in_the_image_fails_create() {
    if skip("a_sys_symlink_in_the_image_fails_create") {
        return;
    }
    let victim = tempfile::tempdir().expect("victim");
    let b = Bundle::own_rootfs("true");
    std::fs::remove_dir(b.rootfs().join("sys")).expect("rmdir");
    std::os::unix::fs::symlink(victim.path(), b.rootfs().join("sys")).expect("symlink");
    let rt = Runtime::new();
    let out = rt.run(&b, &id("syssym"));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stderr(&out).contains("ordinary directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(victim.path()).expect("victim").count(), 0);
}

/// CVE-2019-16884: a volume over `/proc` would give the container a fake procfs (and
/// fake LSM attribute files). Only a procfs may be mounted there, as runc requires.
#[test]
fn only_a_procfs_may_be_mounted_at_proc() {
    if skip("only_a_procfs_may_be_mounted_at_proc") {
        return;
    }
    let fake = tempfile::tempdir().expect("fake proc");
    std::fs::create_dir_all(fake.path().join("self/attr")).expect("fake attr");
    let rt = Runtime::new();
    let cases = [
        (
            serde_json::json!({"destination": "/proc", "type": "bind",
            "source": fake.path(), "options": ["rbind"]}),
            false,
        ),
        (
            serde_json::json!({"destination": "/proc/", "type": "tmpfs",
            "source": "tmpfs", "options": ["size=1m"]}),
            false,
        ),
        (
            serde_json::json!({"destination": "/proc", "type": "bind",
            "source": "/proc", "options": ["rbind"]}),
            true,
        ),
    ];
    for (n, (mount, allowed)) in cases.into_iter().enumerate() {
        let mut b = Bundle::sh("test -e /proc/self/status && echo procfs");
        let mounts = b.config["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| m["destination"] != "/proc");
        mounts.insert(0, mount.clone());
        let out = rt.run(&b, &id(&format!("fakeproc{n}")));
        if allowed {
            assert_eq!(stdout(&out), "procfs\n", "{mount}: {}", both(&out));
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{mount}: {}", both(&out));
        assert!(
            stderr(&out).contains("only a procfs may be mounted at /proc"),
            "{}",
            stderr(&out)
        );
    }
}

/// A directory on the host, outside every rootfs, with one file; `untouched` says
/// whether it still holds only that file.
struct HostDir(tempfile::TempDir);

impl HostDir {
    fn new() -> HostDir {
        let d = tempfile::Builder::new()
            .prefix("gpurun-cve-host-")
            .tempdir()
            .expect("host dir");
        std::fs::write(d.path().join("keep"), "host").expect("keep");
        HostDir(d)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path())
            .expect("host dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// CVE-2024-0132 / CVE-2024-0133 / CVE-2024-0134 (NVIDIA Container Toolkit): an image
/// whose GPU injection targets (the library directory, `/usr/bin`, `/lib/firmware`) are
/// symlinks to host directories, absolute or climbing with `..`. The libraries still
/// arrive, inside the rootfs, and nothing is created on the host.
#[test]
fn gpu_injection_targets_symlinked_to_host_directories_stay_in_the_rootfs() {
    if skip("gpu_injection_targets_symlinked_to_host_directories_stay_in_the_rootfs") {
        return;
    }
    let node = gpu_node::Node::new(false);
    let rt = Runtime::new();
    let lib = format!("/{}", gpurun::gpu::fake::LIB_DIR);
    let mut b = gpu_node::bundle(&format!(
        "test -e {lib}/libcuda.so.1 && echo injected; test -e /usr/bin/nvidia-smi && echo smi"
    ));
    let rootfs = b.rootfs();
    let hosts: Vec<HostDir> = (0..3).map(|_| HostDir::new()).collect();
    let links = [
        (lib.as_str(), hosts[0].path().display().to_string()),
        (
            "/usr/bin",
            format!("{}{}", "../".repeat(12), hosts[1].path().display()),
        ),
        ("/lib/firmware", hosts[2].path().display().to_string()),
    ];
    for ((link, target), host) in links.iter().zip(&hosts) {
        let at = rootfs.join(&link[1..]);
        let _ = std::fs::remove_dir(&at);
        std::fs::create_dir_all(at.parent().expect("parent")).expect("parent");
        std::os::unix::fs::symlink(target, &at).expect("symlink");
        // The same path inside the rootfs, where an in-root resolution leads.
        std::fs::create_dir_all(rootfs.join(host.path().strip_prefix("/").expect("abs")))
            .expect("in-root twin");
    }
    gpu_node::set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    gpu_node::privileged(&mut b);
    let out = node.run(&rt, &b, &id("gpusym"));
    for h in &hosts {
        assert_eq!(
            h.entries(),
            ["keep"],
            "{} was written through the image's symlinks: {}",
            h.path().display(),
            both(&out)
        );
    }
    assert_eq!(stdout(&out), "injected\nsmi\n", "{}", both(&out));
}

/// CVE-2023-25809: without a cgroup namespace the container's `/sys/fs/cgroup` shows the
/// host's hierarchies; the spec's `ro` must hold on every one of them, so even a process
/// that may write any file (CAP_DAC_OVERRIDE) gets EROFS there.
#[test]
fn cgroup_hierarchies_without_a_cgroup_namespace_are_read_only() {
    if skip("cgroup_hierarchies_without_a_cgroup_namespace_are_read_only") {
        return;
    }
    let mut b = Bundle::sh(
        r#"for d in /sys/fs/cgroup/*/; do
             if mkdir "${d}gpurun-cve-probe" 2>/dev/null; then
               rmdir "${d}gpurun-cve-probe"; echo "writable $d"
             else
               mkdir "${d}gpurun-cve-probe" 2>&1 | grep -q 'Read-only' && echo ro || echo "other $d"
             fi
           done"#,
    );
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "cgroup");
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set]
            .as_array_mut()
            .expect("caps")
            .push("CAP_DAC_OVERRIDE".into());
    }
    let rt = Runtime::new();
    let out = rt.run(&b, &id("cgro"));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "no cgroup hierarchy: {}", both(&out));
    assert!(lines.iter().all(|l| *l == "ro"), "{}", both(&out));
}

/// CVE-2021-43784 (runc's netlink bootstrap parser) has no counterpart: the plan reaches
/// init in the memory `clone` copies, and what crosses a process boundary is init's
/// messages to the parent (one JSON value per `SOCK_SEQPACKET` packet, read into a fixed
/// buffer) and the parent's one-byte acks. Hostile, truncated and oversized packets are
/// errors, never a panic or a message read past its packet.
#[test]
fn the_init_channel_refuses_malformed_and_oversized_packets() {
    use gpurun::process::sync::{pair, ChildMsg};
    let (init, parent) = pair().expect("pair");
    let send = |bytes: &[u8]| {
        nix::sys::socket::send(init.raw_fd(), bytes, nix::sys::socket::MsgFlags::empty())
            .expect("send");
    };
    let long = serde_json::to_vec(&ChildMsg::Failed {
        step: "x".into(),
        msg: "y".repeat(70 * 1024),
    })
    .expect("json");
    let cases: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00garbage".to_vec(),
        br#"{"InitPid": 4294967296}"#.to_vec(),
        br#"{"InitPid": -1"#.to_vec(),
        br#"{"Failed": {"step": "x"}}"#.to_vec(),
        br#""Ready" "Ready""#.to_vec(),
        long,
    ];
    for c in &cases {
        send(c);
        assert!(
            parent.recv_msg().is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(&c[..c.len().min(40)])
        );
    }
    // Deterministic noise (xorshift): every packet is an error or a whole message.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let len = (x % 96) as usize + 1;
        let mut p = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.push(b"{}[]\":,0123456789-eRadyInitPdFl \x00\xff"[(x % 34) as usize]);
        }
        send(&p);
        let _ = parent.recv_msg();
    }
    // The channel still carries a real message after all of that.
    send(&serde_json::to_vec(&ChildMsg::InitPid(42)).expect("json"));
    assert_eq!(
        parent.recv_msg().expect("recv"),
        Some(ChildMsg::InitPid(42))
    );
}

/// CVE-2026-41579 (runc) / CVE-2026-47766 (crun): an image whose `/dev` is a symlink to a
/// host directory, with no `/dev` mount in the bundle to cover it (the devices, their
/// symlinks and `/dev/pts` are then made in the image's own `/dev`). Everything lands in
/// the rootfs; nothing is created or removed on the host.
#[test]
fn a_dev_symlink_without_a_dev_mount_creates_nothing_on_the_host() {
    if skip("a_dev_symlink_without_a_dev_mount_creates_nothing_on_the_host") {
        return;
    }
    let host = HostDir::new();
    let mut b = Bundle::own_rootfs("test -c /dev/null && echo devices");
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
    let rootfs = b.rootfs();
    std::fs::remove_dir(rootfs.join("dev")).expect("rmdir dev");
    std::os::unix::fs::symlink(host.path(), rootfs.join("dev")).expect("symlink");
    let twin = rootfs.join(host.path().strip_prefix("/").expect("abs"));
    std::fs::create_dir_all(&twin).expect("in-root twin");
    let rt = Runtime::new();
    let out = rt.run(&b, &id("devsym-nomount"));
    assert_eq!(host.entries(), ["keep"], "{}", both(&out));
    assert_eq!(stdout(&out), "devices\n", "{}", both(&out));
    assert!(
        twin.join("null").exists(),
        "the devices were made in the rootfs"
    );
}

/// CVE-2024-21626, the fds: a host directory the caller left open (not preserved) must be
/// closed before init does anything, not only before it waits or execs. A createRuntime
/// hook runs while init is half set up, and lists init's fds.
#[test]
fn init_holds_no_inherited_host_fd_while_it_is_set_up() {
    if skip("init_holds_no_inherited_host_fd_while_it_is_set_up") {
        return;
    }
    let host = HostDir::new();
    let mut b = Bundle::sh("true");
    let seen = b.path().join("init-fds");
    let script = format!(
        r#"pid=$(grep -o '"pid": *[0-9]*' | grep -o '[0-9]*$'); ls -l /proc/$pid/fd > {}"#,
        seen.display()
    );
    b.config["hooks"] = serde_json::json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]
    });
    b.write();
    let rt = Runtime::new();
    let cid = id("setupfds");
    rt.track(&cid);
    // fd 7 of gpurun: a host directory, inherited without --preserve-fds.
    let out = Command::new("sh")
        .args([
            "-c",
            r#"exec "$0" --root "$1" run -b "$2" "$3" 7<"$4""#,
            gpurun_bin(),
        ])
        .arg(rt.root.path())
        .arg(b.path())
        .arg(&cid)
        .arg(host.path())
        .stdin(Stdio::null())
        .output()
        .expect("spawn sh");
    assert!(out.status.success(), "{}", both(&out));
    let fds = std::fs::read_to_string(&seen).expect("the hook listed init's fds");
    assert!(fds.contains(" -> "), "{fds}");
    let state_dir = rt.root.path().display().to_string();
    for line in fds.lines() {
        assert!(
            !line.contains(&host.path().display().to_string()),
            "init holds the caller's host directory: {fds}"
        );
        assert!(
            !line.contains(&state_dir) || line.ends_with("/exec.fifo"),
            "init holds a file of the state directory: {fds}"
        );
    }
}

/// The setup handles (the rootfs, procfs for the sysctls, the devices) are closed before
/// init waits for `start`, as runc's final close before the exec fifo.
#[test]
fn init_holds_no_setup_handle_while_it_waits_for_start() {
    if skip("init_holds_no_setup_handle_while_it_waits_for_start") {
        return;
    }
    let mut b = Bundle::own_rootfs("true");
    b.config["linux"]["sysctl"] = serde_json::json!({ "kernel.shmmni": "2048" });
    let rt = Runtime::new();
    let cid = id("setupheld");
    let out = rt.create(&b, &cid, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = rt.state(&cid)["pid"].as_i64().expect("pid");
    let mut held = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds") {
        let entry = entry.expect("entry");
        let n: u32 = entry
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("fd number");
        let target = std::fs::read_link(entry.path()).expect("link");
        let target = target.display().to_string();
        let ok = n <= 2
            || target.starts_with("socket:")
            || target.starts_with("pipe:")
            || target.ends_with("/exec.fifo");
        if !ok {
            held.push(format!("{n} -> {target}"));
        }
    }
    assert!(held.is_empty(), "init holds {held:?}");
    rt.ok(&["delete", "--force", &cid]);
}
