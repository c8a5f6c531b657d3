//! podman with `--runtime <gpurun>` (conmon drives gpurun): a `--rootfs` directory and an
//! imported image, exit statuses, `exec`, terminals, and a failure that comes back as
//! one clean message because gpurun is in `runtime_supports_json`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use gpurun_integration::podman::Podman;
use gpurun_integration::{can_run, image, leftovers, run, serial, unique, Ran};

const T: Duration = Duration::from_secs(180);

fn setup() -> Option<(Podman, tempfile::TempDir)> {
    if !can_run(&["podman", "conmon"]) {
        return None;
    }
    let files = tempfile::tempdir().unwrap();
    image::busybox_rootfs(&files.path().join("rootfs")).unwrap();
    Some((Podman::new(), files))
}

/// podman's default `--root` for gpurun is gpurun's own default.
const GPURUN_ROOT: &str = "/run/gpurun";

fn assert_gone(what: &str, full_id: &str, parent: &str, p: &Podman) {
    leftovers::assert_gone(
        what,
        Path::new(GPURUN_ROOT),
        full_id,
        &format!("{parent}/libpod-{full_id}"),
        p.dir(),
    );
}

fn find_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(find_named(&p, name));
            } else if e.file_name() == name {
                out.push(p);
            }
        }
    }
    out
}

fn id_of(p: &Podman, name: &str) -> String {
    p.run(&["inspect", "--format", "{{.Id}}", name], T)
        .expect_ok("podman inspect")
        .stdout
        .trim()
        .to_string()
}

fn base_run(parent: &str) -> Vec<&str> {
    vec!["run", "--network", "host", "--cgroup-parent", parent]
}

#[test]
fn podman_rootfs_exit_status_and_terminal() {
    let _g = serial();
    let Some((p, files)) = setup() else { return };
    let parent = p.parent.clone();
    let rootfs = files.path().join("rootfs");
    let rootfs = rootfs.to_str().unwrap();

    let name = unique("exit");
    let mut a = base_run(&parent);
    a.extend([
        "--name",
        &name,
        "--rootfs",
        rootfs,
        "sh",
        "-c",
        "echo hello; exit 3",
    ]);
    let r = p.run(&a, T);
    assert_eq!(r.code, Some(3), "{r:#?}");
    assert_eq!(r.stdout, "hello\n", "{r:#?}");
    let id = id_of(&p, &name);
    let rt = p.run(&["inspect", "--format", "{{.OCIRuntime}}", &name], T);
    assert_eq!(Path::new(rt.stdout.trim()), p.gpurun, "{rt:#?}");
    p.run(&["rm", &name], T).expect_ok("podman rm");
    assert_gone("podman --rootfs", &id, &parent, &p);

    // -t: conmon hands gpurun a console socket; the container's stdio is a pty.
    let mut a = base_run(&parent);
    a.extend(["--rm", "-t", "--rootfs", rootfs, "sh", "-c", "tty; exit 2"]);
    let r = p.run(&a, T);
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stdout.contains("/dev/pts/0"), "{r:#?}");
}

#[test]
fn podman_image_exec_and_removal() {
    let _g = serial();
    let Some((p, files)) = setup() else { return };
    let parent = p.parent.clone();
    let (_, busybox) = image::build_all(files.path()).unwrap();
    p.run(&["load", "-i", busybox.to_str().unwrap()], T)
        .expect_ok("podman load");

    let name = unique("svc");
    let mut a = base_run(&parent);
    a.extend(["-d", "--name", &name, image::BUSYBOX_TAG, "sleep", "1000"]);
    p.run(&a, T).expect_ok("podman run -d");
    let id = id_of(&p, &name);
    assert!(Path::new(GPURUN_ROOT).join(&id).is_dir());
    // gpurun is in runtime_supports_json, so conmon passed `--log <userdata>/oci-log
    // --log-format=json` to create.
    let logs = find_named(&p.dir().join("runroot"), "oci-log");
    assert!(
        logs.iter().any(|l| l.to_string_lossy().contains(&id)),
        "no oci-log for {id}: {logs:?}"
    );

    let x = p.run(&["exec", &name, "sh", "-c", "echo in; exit 6"], T);
    assert_eq!(x.code, Some(6), "{x:#?}");
    assert_eq!(x.stdout, "in\n", "{x:#?}");
    // Back-to-back execs into a container with its own PID namespace (init is forked by
    // an intermediate process): every one must start.
    for i in 0..20 {
        let x = p.run(&["exec", &name, "sh", "-c", &format!("exit {i}")], T);
        assert_eq!(x.code, Some(i), "exec {i}: {x:#?}");
    }
    let x = p.run(&["exec", &name, "cat", "/proc/1/cmdline"], T);
    assert_eq!(x.stdout, "sleep\u{0}1000\u{0}", "{x:#?}");
    let x = p.run(&["exec", "-t", &name, "tty"], T);
    assert_eq!(x.code, Some(0), "{x:#?}");
    assert!(x.stdout.contains("/dev/pts/"), "{x:#?}");
    // An exec that gpurun cannot start: conmon sees no pid file, podman says why.
    let x = p.run(&["exec", &name, "/no/such/binary"], T);
    assert_eq!(x.code, Some(127), "{x:#?}");

    p.run(&["rm", "--force", "--time", "0", &name], T)
        .expect_ok("podman rm --force");
    assert_gone("podman image", &id, &parent, &p);
}

#[test]
fn podman_runtime_errors_come_back_clean() {
    let _g = serial();
    let Some((p, files)) = setup() else { return };
    let parent = p.parent.clone();
    let rootfs = files.path().join("rootfs");
    let mut a = base_run(&parent);
    a.extend([
        "--rm",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "/no/such/binary",
    ]);
    let r: Ran = p.run(&a, T);
    // podman classifies the message it read from gpurun's JSON log: 127, not found.
    assert_eq!(r.code, Some(127), "{r:#?}");
    assert!(r.stderr.contains("/no/such/binary"), "{r:#?}");
    assert!(
        !r.stderr.contains("{\"level\""),
        "raw log line leaked: {r:#?}"
    );
    let ps = p.run(&["ps", "-a", "-q"], T).expect_ok("podman ps");
    assert!(ps.stdout.trim().is_empty(), "{ps:#?}");
}

#[test]
fn podman_uses_the_drop_in_gpurun_install_writes() {
    let _g = serial();
    let Some((p, files)) = setup() else { return };
    let conf = files.path().join("containers.conf");
    let r = run(
        std::process::Command::new(&p.gpurun)
            .args(["install", "podman", "--path"])
            .arg(&conf),
        T,
    );
    assert!(r.ok(), "{r:#?}");
    let parent = p.parent.clone();
    let rootfs = files.path().join("rootfs");
    // `--runtime gpurun` by name: the drop-in's [engine.runtimes] table resolves it.
    let mut c = p.cmd_with(&conf, "gpurun");
    c.args(base_run(&parent))
        .args([
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--rootfs",
        ])
        .arg(&rootfs)
        .args(["sh", "-c", "echo via the drop-in; exit 9"]);
    let r = run(&mut c, T);
    assert_eq!(r.code, Some(9), "{r:#?}");
    assert_eq!(r.stdout, "via the drop-in\n", "{r:#?}");
}
