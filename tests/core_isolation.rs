//! What the container sees: namespaces (new and joined), hostname, pid 1, capabilities,
//! masked and read-only paths, devices, rlimits, sysctls, user namespaces, fds.

mod common;
use common::*;

fn run_ok(b: &Bundle, name: &str) -> String {
    let rt = Runtime::new();
    let out = rt.run(b, &id(name));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn the_container_has_its_hostname_and_is_pid_1() {
    if skip("the_container_has_its_hostname_and_is_pid_1") {
        return;
    }
    let mut b = Bundle::sh("hostname; echo $$; cat /proc/sys/kernel/domainname");
    b.config["hostname"] = "box1".into();
    b.config["domainname"] = "example.test".into();
    assert_eq!(run_ok(&b, "host"), "box1\n1\nexample.test\n");
}

#[test]
fn capability_sets_are_exactly_the_specs() {
    if skip("capability_sets_are_exactly_the_specs") {
        return;
    }
    let mut b = Bundle::sh("grep ^Cap /proc/self/status");
    b.config["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
        "effective": ["CAP_KILL", "CAP_CHOWN"],
        "permitted": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"]
    });
    b.config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    let out = run_ok(&b, "caps");
    // CHOWN=0, KILL=5, NET_RAW=13. A non-root sh exec'd with ambient KILL keeps exactly
    // the ambient set as permitted and effective (no file capabilities apply).
    assert!(out.contains("CapInh:\t0000000000000020"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000002021"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000020"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000020"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000020"), "{out}");
}

#[test]
fn a_non_root_user_with_groups_and_umask() {
    if skip("a_non_root_user_with_groups_and_umask") {
        return;
    }
    let mut b = Bundle::sh("id -u; id -g; id -G; umask; echo $HOME");
    b.config["process"]["user"] =
        serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 63});
    assert_eq!(run_ok(&b, "user"), "1000\n1001\n1001 5 7\n0077\n/\n");
}

#[test]
fn home_comes_from_the_containers_passwd() {
    if skip("home_comes_from_the_containers_passwd") {
        return;
    }
    assert_eq!(run_ok(&Bundle::sh("echo $HOME"), "home"), "/root\n");
}

#[test]
fn masked_paths_read_empty_and_readonly_paths_refuse_writes() {
    if skip("masked_paths_read_empty_and_readonly_paths_refuse_writes") {
        return;
    }
    let b = Bundle::sh(
        "wc -c < /proc/keys; ls /sys/firmware | wc -l; \
         echo 1 > /proc/sys/kernel/panic 2>&1 || echo ro-refused; \
         echo x > /proc/keys 2>/dev/null || echo masked-file-refused",
    );
    let out = run_ok(&b, "mask");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "{out}");
    assert_eq!(lines[1].trim(), "0", "{out}");
    assert!(out.contains("ro-refused"), "{out}");
}

#[test]
fn the_root_filesystem_is_read_only_when_asked() {
    if skip("the_root_filesystem_is_read_only_when_asked") {
        return;
    }
    let out = run_ok(
        &Bundle::sh("touch /x 2>&1 || true; touch /dev/shm/ok && echo tmpfs-ok"),
        "rootro",
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("tmpfs-ok"), "{out}");
}

#[test]
fn default_devices_and_spec_devices_exist_with_their_modes() {
    if skip("default_devices_and_spec_devices_exist_with_their_modes") {
        return;
    }
    let mut b = Bundle::sh("for d in null zero full random urandom tty fuse; do stat -c '%n %t:%T %a %g' /dev/$d; done; readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin");
    b.config["linux"]["devices"] = serde_json::json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 432, "gid": 5}]);
    let out = run_ok(&b, "devs");
    assert!(out.contains("/dev/null 1:3 666 0"), "{out}");
    assert!(out.contains("/dev/tty 5:0 666 0"), "{out}");
    assert!(out.contains("/dev/fuse a:e5 660 5"), "{out}");
    assert!(
        out.contains("pts/ptmx\n/proc/self/fd\n/proc/self/fd/0"),
        "{out}"
    );
}

#[test]
fn mounts_apply_in_order_with_their_options() {
    if skip("mounts_apply_in_order_with_their_options") {
        return;
    }
    let vol = tempfile::tempdir().expect("vol");
    std::fs::write(vol.path().join("f"), "from-host").expect("write");
    let mut b = Bundle::sh(
        "cat /data/f; touch /data/g 2>&1 | grep -c Read-only; grep ' /scratch ' /proc/self/mounts",
    );
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(serde_json::json!({"destination": "/data", "type": "bind", "source": vol.path(), "options": ["rbind", "ro", "nosuid"]}));
    mounts.push(serde_json::json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "noexec"]}));
    let out = run_ok(&b, "mounts");
    assert!(out.starts_with("from-host1\n"), "{out}");
    assert!(
        out.contains("tmpfs /scratch tmpfs rw,noexec") && out.contains("size=1024k"),
        "{out}"
    );
}

/// The runtime spec's mount options that are flags rather than filesystem data
/// (`iversion`, `lazytime`) and the recursive atime modes, which `mount_setattr` takes only
/// with the whole atime field cleared.
#[test]
fn atime_iversion_and_lazytime_options_apply() {
    if skip("atime_iversion_and_lazytime_options_apply") {
        return;
    }
    let vol = tempfile::tempdir().expect("vol");
    let mut b = Bundle::sh(
        "for m in /t /noatime /strict /relatime; do grep \" $m \" /proc/self/mountinfo | cut -d' ' -f5,6,9-; done",
    );
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(serde_json::json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["iversion", "lazytime"]}));
    for (dest, opts) in [
        ("/noatime", vec!["rbind", "rnoatime"]),
        ("/strict", vec!["rbind", "rstrictatime"]),
        ("/relatime", vec!["rbind", "rnoatime", "rrelatime"]),
    ] {
        mounts.push(serde_json::json!({"destination": dest, "type": "bind", "source": vol.path(), "options": opts}));
    }
    let out = run_ok(&b, "mountopts");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].ends_with("lazytime"), "{out}");
    assert!(lines[1].starts_with("/noatime rw,noatime "), "{out}");
    assert!(lines[2].starts_with("/strict rw "), "{out}");
    assert!(lines[3].starts_with("/relatime rw,relatime "), "{out}");
}

#[test]
fn a_bind_mount_over_a_file_creates_the_target_file() {
    if skip("a_bind_mount_over_a_file_creates_the_target_file") {
        return;
    }
    let src = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(src.path(), "one-file").expect("write");
    let mut b = Bundle::own_rootfs("cat /etc/extra.conf");
    b.config["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/etc/extra.conf", "type": "bind", "source": src.path(), "options": ["bind", "ro"]}));
    assert_eq!(run_ok(&b, "filebind"), "one-file");
}

#[test]
fn joining_a_network_namespace_by_path() {
    if skip("joining_a_network_namespace_by_path") {
        return;
    }
    let mut holder = std::process::Command::new("unshare")
        .args(["--net", "sleep", "30"])
        .spawn()
        .expect("unshare");
    let ns = format!("/proc/{}/ns/net", holder.id());
    let mut want = String::new();
    for _ in 0..100 {
        want = std::fs::read_link(&ns)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mine = std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !want.is_empty() && want != mine {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut b = Bundle::sh("readlink /proc/self/ns/net");
    for n in b.config["linux"]["namespaces"].as_array_mut().expect("ns") {
        if n["type"] == "network" {
            n["path"] = ns.clone().into();
        }
    }
    let out = run_ok(&b, "joinnet");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.trim(), want);
}

#[test]
fn a_missing_namespace_path_is_named_in_the_error() {
    if skip("a_missing_namespace_path_is_named_in_the_error") {
        return;
    }
    let mut b = Bundle::sh("true");
    for n in b.config["linux"]["namespaces"].as_array_mut().expect("ns") {
        if n["type"] == "ipc" {
            n["path"] = "/proc/999999999/ns/ipc".into();
        }
    }
    let rt = Runtime::new();
    let out = rt.run(&b, &id("badns"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ipc namespace") && stderr(&out).contains("/proc/999999999/ns/ipc"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_user_namespace_with_mappings() {
    if skip("a_user_namespace_with_mappings") {
        return;
    }
    let mut b =
        Bundle::sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user");
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(serde_json::json!({"type": "user"}));
    b.config["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let out = run_ok(&b, "userns");
    let fields: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(fields[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(fields[1], ["0", "100000", "65536"], "{out}");
    assert_eq!(fields[2], ["0"], "{out}");
    let host = std::fs::read_link("/proc/self/ns/user")
        .expect("ns")
        .display()
        .to_string();
    assert_ne!(fields[3][0], host);
}

#[test]
fn rlimits_apply_and_raising_a_hard_limit_fails_clearly() {
    if skip("rlimits_apply_and_raising_a_hard_limit_fails_clearly") {
        return;
    }
    let mut b = Bundle::sh("ulimit -n; ulimit -Hn");
    b.config["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 800}]);
    assert_eq!(run_ok(&b, "rlim"), "512\n800\n");
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let has_sys_resource = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if has_sys_resource || hard == u64::MAX {
        eprintln!("skipping the hard-limit half: this host can raise hard limits");
        return;
    }
    let mut b = Bundle::sh("true");
    b.config["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]);
    let rt = Runtime::new();
    let out = rt.run(&b, &id("rlimhard"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("RlimitNofile") && stderr(&out).contains("setrlimit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sysctls_land_in_the_containers_namespaces() {
    if skip("sysctls_land_in_the_containers_namespaces") {
        return;
    }
    let mut b = Bundle::sh("cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_forward");
    b.config["linux"]["sysctl"] =
        serde_json::json!({"kernel.shmmni": "1234", "net.ipv4.ip_forward": "1"});
    assert_eq!(run_ok(&b, "sysctl"), "1234\n1\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/shmmni").expect("host");
    assert_ne!(host.trim(), "1234");
}

#[test]
fn oom_score_adj_and_no_new_privileges() {
    if skip("oom_score_adj_and_no_new_privileges") {
        return;
    }
    let mut b = Bundle::sh("cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status");
    b.config["process"]["oomScoreAdj"] = 500.into();
    b.config["process"]["noNewPrivileges"] = true.into();
    assert_eq!(run_ok(&b, "oom"), "500\nNoNewPrivs:\t1\n");
}

#[test]
fn a_time_namespace_shifts_the_boot_clock() {
    if skip("a_time_namespace_shifts_the_boot_clock") {
        return;
    }
    let mut b = Bundle::sh("cut -d. -f1 /proc/uptime");
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(serde_json::json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] =
        serde_json::json!({"boottime": {"secs": 864000, "nanosecs": 0}});
    let up: u64 = run_ok(&b, "timens").trim().parse().expect("uptime");
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("uptime")
        .split_whitespace()
        .next()
        .expect("f")
        .parse()
        .expect("num");
    assert!(
        up >= 864000 + host as u64 - 1,
        "container uptime {up}, host {host}"
    );
}

#[test]
fn only_stdio_and_preserved_fds_reach_the_container() {
    if skip("only_stdio_and_preserved_fds_reach_the_container") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("ls /proc/self/fd | sort -n | tr '\\n' ' '");
    assert_eq!(stdout(&rt.run(&b, &id("fds"))), "0 1 2 3 ");
    // With --preserve-fds 1 the test's fd 3 passes through (ls itself opens one more).
    let b2 = Bundle::sh("ls /proc/self/fd | sort -n | tr '\\n' ' '; cat <&3");
    b2.write();
    let extra = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(extra.path(), "passed").expect("write");
    let f = std::fs::File::open(extra.path()).expect("open");
    let cid = id("preserve");
    rt.track(&cid);
    let mut cmd = rt.cmd();
    cmd.args(["run", "--preserve-fds", "1", "-b"])
        .arg(b2.path())
        .arg(&cid);
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = f.as_raw_fd();
    // SAFETY: dup2 in the child between fork and exec only touches the child's fd table.
    unsafe {
        cmd.pre_exec(move || pass_as_fd3(raw));
    }
    let out = cmd.output().expect("run");
    assert_eq!(stdout(&out), "0 1 2 3 4 passed", "{}", stderr(&out));
}

#[test]
fn no_pivot_also_works() {
    if skip("no_pivot_also_works") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("cat /etc/passwd | head -1");
    b.write();
    let cid = id("nopivot");
    rt.track(&cid);
    let out = rt
        .cmd()
        .args(["run", "--no-pivot", "-b"])
        .arg(b.path())
        .arg(&cid)
        .output()
        .expect("run");
    assert_eq!(
        stdout(&out),
        "root:x:0:0:root:/root:/bin/sh\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_container_is_in_its_own_cgroup() {
    if skip("the_container_is_in_its_own_cgroup") {
        return;
    }
    let mut b = Bundle::sh("grep -c . /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max");
    b.config["linux"]["resources"]["pids"] = serde_json::json!({"limit": 42});
    b.config["linux"]["cgroupsPath"] = format!("/gpurun-test-{}/c", std::process::id()).into();
    let out = run_ok(&b, "cg");
    assert!(out.ends_with("42\n"), "{out}");
    assert!(
        !std::path::Path::new(&format!(
            "/sys/fs/cgroup/pids/gpurun-test-{}",
            std::process::id()
        ))
        .exists(),
        "removed on delete"
    );
}

/// A device rule's access is applied as the config gives it: `b 8:20 rw` is listed as
/// `rw` in the v1 devices controller (mknod comes from the default `b *:* m` line), as
/// under runc, and not widened to `rwm`.
#[test]
fn a_device_rule_keeps_the_access_the_config_gives() {
    if skip("a_device_rule_keeps_the_access_the_config_gives") {
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/devices/devices.list").exists() {
        gpurun::skip::cannot_run(
            "a_device_rule_keeps_the_access_the_config_gives",
            "the cgroup v1 devices controller at /sys/fs/cgroup/devices",
        );
        return;
    }
    let mut b = Bundle::sh("grep '^b ' /sys/fs/cgroup/devices/devices.list | sort");
    b.config["linux"]["resources"]["devices"] = serde_json::json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "b", "major": 8, "minor": 20, "access": "rw"},
    ]);
    let want = "b *:* m\nb 8:20 rw\n";
    assert_eq!(run_ok(&b, "devaccess"), want);
    if let Some(runc) = Runtime::runc("a_device_rule_keeps_the_access_the_config_gives") {
        let out = runc.run(&b, &id("devaccess-runc"));
        assert_eq!(stdout(&out), want, "runc: {}", stderr(&out));
    }
}

#[test]
fn personality_linux32_changes_the_machine() {
    if skip("personality_linux32_changes_the_machine") {
        return;
    }
    let mut b = Bundle::sh("uname -m");
    b.config["linux"]["personality"] = serde_json::json!({"domain": "LINUX32"});
    assert_eq!(run_ok(&b, "pers"), "i686\n");
}

#[test]
fn listen_fds_pass_socket_activation_on() {
    if skip("listen_fds_pass_socket_activation_on") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("echo $LISTEN_FDS $LISTEN_PID; cat <&3");
    b.write();
    let cid = id("listenfds");
    rt.track(&cid);
    let extra = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(extra.path(), "activated").expect("write");
    let f = std::fs::File::open(extra.path()).expect("open");
    let mut cmd = rt.cmd();
    cmd.args(["run", "-b"]).arg(b.path()).arg(&cid);
    cmd.env("LISTEN_FDS", "1");
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = f.as_raw_fd();
    // SAFETY: between fork and exec, dup2 and setenv-free code only touch the child;
    // LISTEN_PID must name the gpurun process itself, which is the child's own pid.
    unsafe {
        cmd.pre_exec(move || pass_as_fd3(raw));
    }
    // LISTEN_PID is checked against gpurun's pid, which is unknown before the spawn:
    // without it, LISTEN_FDS alone is honoured (systemd always sets both; runc checks
    // LISTEN_PID only when present).
    let out = cmd.output().expect("run");
    assert_eq!(stdout(&out), "1 1\nactivated", "{}", stderr(&out));
}

/// In a forked child: make `raw` the child's fd 3, inheritable across exec. When `raw`
/// already is 3, dup2 does nothing and close-on-exec must be cleared by hand.
fn pass_as_fd3(raw: i32) -> std::io::Result<()> {
    // SAFETY: plain fd-table calls on the forked child's own fds.
    let r = unsafe {
        if raw == 3 {
            libc::fcntl(3, libc::F_SETFD, 0)
        } else {
            libc::dup2(raw, 3)
        }
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
