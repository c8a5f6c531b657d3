//! Regression tests for the runtime CVEs gpurun must not repeat.

mod common;
use common::*;

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

fn created(rt: &Runtime, b: &Bundle, name: &str) -> (String, i32) {
    let cid = id(name);
    let out = rt.create(b, &cid, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = rt.state(&cid)["pid"].as_i64().expect("pid") as i32;
    (cid, pid)
}

/// CVE-2019-5736: a process in the container that reaches gpurun's binary through
/// `/proc/<pid>/exe` must not be able to write it, not even after gpurun exited.
#[test]
fn the_runtime_binary_cannot_be_reopened_for_writing_through_proc_exe() {
    if skip("the_runtime_binary_cannot_be_reopened_for_writing_through_proc_exe") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_gpurun");
    let before = std::fs::read(bin).expect("binary");
    let rt = Runtime::new();
    let (cid, pid) = created(&rt, &Bundle::sh("true"), "exe");
    // Init, before its execve, is gpurun's code: hold its exe the way an attacker would.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .expect("O_PATH open of init's exe");
    rt.ok(&["delete", "--force", &cid]);
    let reopen = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", held.as_raw_fd()));
    let err = reopen.expect_err("the binary must not be writable through the held handle");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(
        std::fs::read(bin).expect("binary"),
        before,
        "host binary unchanged"
    );
}

/// CVE-2024-21626: `process.cwd` through `/proc/self/fd/N` fails `create`. Inside the
/// rootfs these paths cannot be made as directories, so the `cwd-create` step refuses
/// them before `chdir`; the check after `chdir` is reached by `exec --cwd` with a
/// preserved host directory (tests/cve_guards.rs).
#[test]
fn a_cwd_through_proc_self_fd_is_refused() {
    if skip("a_cwd_through_proc_self_fd_is_refused") {
        return;
    }
    let rt = Runtime::new();
    for n in 3..12 {
        let mut b = Bundle::sh("pwd; ls");
        b.config["process"]["cwd"] = format!("/proc/self/fd/{n}").into();
        let out = rt.run(&b, &id(&format!("cwd{n}")));
        assert_ne!(
            out.status.code(),
            Some(0),
            "cwd /proc/self/fd/{n} must fail: {}",
            stdout(&out)
        );
    }
}

#[test]
fn init_holds_no_host_files_while_it_waits_for_start() {
    if skip("init_holds_no_host_files_while_it_waits_for_start") {
        return;
    }
    let rt = Runtime::new();
    let (cid, pid) = created(&rt, &Bundle::sh("true"), "fdscan");
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds") {
        let entry = entry.expect("entry");
        let n: i32 = entry
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("fd number");
        let target = std::fs::read_link(entry.path())
            .expect("link")
            .display()
            .to_string();
        let ok = n <= 2
            || target.starts_with("socket:")
            || target.ends_with("/exec.fifo")
            || target.starts_with("pipe:");
        assert!(ok, "init fd {n} -> {target} must not reach the container");
    }
    rt.ok(&["delete", "--force", &cid]);
}

/// CVE-2025-31133: masked paths must never be bound to a `/dev/null` the image replaced
/// with a symlink (to core_pattern, say).
#[test]
fn a_dev_null_symlink_in_the_image_is_refused_for_masking() {
    if skip("a_dev_null_symlink_in_the_image_is_refused_for_masking") {
        return;
    }
    let mut b = Bundle::own_rootfs("true");
    // No /dev tmpfs: the image's own /dev is used.
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
    let victim = b.path().join("victim");
    std::fs::write(&victim, "untouched").expect("victim");
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", b.rootfs().join("dev/null"))
        .expect("symlink");
    let core_before =
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("core_pattern");
    let rt = Runtime::new();
    let out = rt.run(&b, &id("devnull"));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not the null device"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("core_pattern"),
        core_before
    );
}

/// CVE-2019-19921 class: proc must land on a real directory.
#[test]
fn a_proc_symlink_in_the_image_fails_create() {
    if skip("a_proc_symlink_in_the_image_fails_create") {
        return;
    }
    let b = Bundle::own_rootfs("true");
    std::fs::remove_dir(b.rootfs().join("proc")).expect("rmdir");
    std::os::unix::fs::symlink("/tmp", b.rootfs().join("proc")).expect("symlink");
    let rt = Runtime::new();
    let out = rt.run(&b, &id("procsym"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ordinary directory"),
        "{}",
        stderr(&out)
    );
}

/// CVE-2026-41579 class: a rootfs whose /dev is a symlink to a host path must not make
/// gpurun create or delete anything there.
#[test]
fn a_dev_symlink_to_a_host_path_touches_nothing_on_the_host() {
    if skip("a_dev_symlink_to_a_host_path_touches_nothing_on_the_host") {
        return;
    }
    let victim = tempfile::tempdir().expect("victim");
    std::fs::write(victim.path().join("keep"), "x").expect("keep");
    let b = Bundle::own_rootfs("ls /dev/null >/dev/null && echo ran");
    std::fs::remove_dir(b.rootfs().join("dev")).expect("rmdir");
    std::os::unix::fs::symlink(victim.path(), b.rootfs().join("dev")).expect("symlink");
    let rt = Runtime::new();
    let _ = rt.run(&b, &id("devsym"));
    let left: Vec<String> = std::fs::read_dir(victim.path())
        .expect("victim")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["keep"],
        "nothing was created or removed in the host directory"
    );
}

/// CVE-2021-30465 / CVE-2024-45310 class: a mount destination through a symlink that
/// points out of the rootfs lands inside the rootfs.
#[test]
fn a_mount_through_an_escaping_symlink_stays_in_the_rootfs() {
    if skip("a_mount_through_an_escaping_symlink_stays_in_the_rootfs") {
        return;
    }
    let victim = tempfile::tempdir().expect("victim");
    let mut b = Bundle::own_rootfs("echo hi > /data/escape/written && echo ok");
    std::os::unix::fs::symlink(victim.path(), b.rootfs().join("data")).expect("symlink");
    // The same path exists inside the rootfs: resolved in-root, the symlink leads there.
    std::fs::create_dir_all(
        b.rootfs()
            .join(victim.path().strip_prefix("/").expect("abs")),
    )
    .expect("mkdir");
    b.config["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/data/escape", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}));
    let rt = Runtime::new();
    let out = rt.run(&b, &id("escape"));
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(victim.path()).expect("victim").count(),
        0,
        "no mount point made on the host"
    );
    let inside = b
        .rootfs()
        .join(victim.path().strip_prefix("/").expect("abs"))
        .join("escape");
    assert!(
        inside.is_dir(),
        "the mount point was made inside the rootfs at {}",
        inside.display()
    );
}

/// Mounts under /proc are refused (except the GPU allow-list), as runc does.
#[test]
fn mounts_over_proc_files_are_refused() {
    if skip("mounts_over_proc_files_are_refused") {
        return;
    }
    let mut b = Bundle::sh("true");
    b.config["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/proc/sysrq-trigger", "type": "bind", "source": "/dev/null", "options": ["bind"]}));
    let rt = Runtime::new();
    let out = rt.run(&b, &id("procmount"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mounts under /proc are refused"),
        "{}",
        stderr(&out)
    );
}
