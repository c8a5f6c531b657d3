//! containerd's own client: `ctr run --runc-binary <gpurun>` through the runc shim.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use gpurun_integration::containerd::Containerd;
use gpurun_integration::{
    can_run, image, leftovers, run, run_open_stdin, serial, unique, wait_for,
};

const T: Duration = Duration::from_secs(120);

struct Env {
    c: Containerd,
    ns: String,
    _images: tempfile::TempDir,
}

fn setup() -> Option<Env> {
    if !can_run(&["containerd", "ctr", "containerd-shim-runc-v2", "cc"]) {
        return None;
    }
    let images = tempfile::tempdir().unwrap();
    let (_, busybox) = image::build_all(images.path()).unwrap();
    let c = Containerd::start("");
    let ns = unique("gpurun-it");
    c.own_cgroup(&format!("/{ns}"));
    c.import(&ns, &busybox);
    Some(Env {
        c,
        ns,
        _images: images,
    })
}

impl Env {
    /// `ctr run` with gpurun as the shim's runc binary, private fifo and runtime roots.
    fn run_args(&self, extra: &[&str], id: &str, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("--fifo-dir".into());
        v.push(self.c.fifo_dir().display().to_string());
        v.push("--runc-binary".into());
        v.push(self.c.gpurun.display().to_string());
        v.push("--runc-root".into());
        v.push(self.c.runc_root.display().to_string());
        v.push(image::BUSYBOX_TAG.into());
        v.push(id.into());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn ctr(&self, args: &[String]) -> gpurun_integration::Ran {
        run(self.c.ctr(&self.ns).args(args), T)
    }

    fn ctr_str(&self, args: &[&str]) -> gpurun_integration::Ran {
        run(self.c.ctr(&self.ns).args(args), T)
    }

    fn root(&self) -> PathBuf {
        self.c.runtime_root(&self.ns)
    }

    fn assert_gone(&self, id: &str) {
        leftovers::assert_gone(
            "ctr",
            &self.root(),
            id,
            &format!("/{}/{id}", self.ns),
            self.c.dir(),
        );
    }
}

#[test]
fn ctr_run_passes_the_exit_status_and_removes_everything() {
    let _g = serial();
    let Some(e) = setup() else { return };
    let id = unique("run");
    let r = e.ctr(&e.run_args(
        &["--rm"],
        &id,
        &[
            "sh",
            "-c",
            "echo hello from gpurun; cat /proc/self/cgroup >&2; exit 3",
        ],
    ));
    assert_eq!(r.code, Some(3), "{r:#?}");
    assert!(r.stdout.contains("hello from gpurun"), "{r:#?}");
    // The shim created it under gpurun's root and its cgroup `/<ns>/<id>`.
    assert!(r.stderr.contains(&format!("/{}/{id}", e.ns)), "{r:#?}");
    e.assert_gone(&id);
    assert!(
        leftovers::entries(&e.root()).is_empty(),
        "{:?}",
        leftovers::entries(&e.root())
    );
}

#[test]
fn ctr_task_exec_kill_and_delete() {
    let _g = serial();
    let Some(e) = setup() else { return };
    let id = unique("svc");
    e.ctr(&e.run_args(&["-d"], &id, &["sleep", "1000"]))
        .expect_ok("ctr run -d");

    let st = e.c.gpurun_state(&e.ns, &id).expect("gpurun state");
    assert_eq!(st["status"], "running", "{st}");
    let init = st["pid"].as_i64().unwrap();
    assert!(init > 0, "{st}");

    let fifo = e.c.fifo_dir().display().to_string();
    let x = e.ctr_str(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in the container; exit 5",
    ]);
    assert_eq!(x.code, Some(5), "{x:#?}");
    assert!(x.stdout.contains("in the container"), "{x:#?}");
    // The exec'd process shares init's PID namespace: pid 1 is `sleep 1000`.
    let x = e.ctr_str(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "e2",
        &id,
        "cat",
        "/proc/1/cmdline",
    ]);
    assert_eq!(x.code, Some(0), "{x:#?}");
    assert_eq!(x.stdout, "sleep\u{0}1000\u{0}", "{x:#?}");
    // And its host pid is in the container's cgroup, as `ctr task ps` (gpurun ps) shows.
    let ps = e.ctr_str(&["task", "ps", &id]).expect_ok("ctr task ps");
    assert!(ps.stdout.contains(&init.to_string()), "{ps:#?}");

    e.ctr_str(&["task", "kill", "-s", "SIGKILL", &id])
        .expect_ok("ctr task kill");
    let stopped = wait_for(Duration::from_secs(30), || {
        let ls = e.ctr_str(&["task", "ls"]);
        ls.stdout
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("STOPPED"))
            .then_some(())
    });
    assert!(stopped.is_some(), "{:#?}", e.ctr_str(&["task", "ls"]));
    e.ctr_str(&["task", "delete", &id])
        .expect_ok("ctr task delete");
    e.ctr_str(&["container", "delete", &id])
        .expect_ok("ctr container delete");
    e.assert_gone(&id);
    assert!(
        !PathBuf::from(format!("/proc/{init}")).exists() || {
            // The pid may have been reused by an unrelated process: then it is not ours.
            let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap_or_default();
            comm.trim() != "sleep"
        }
    );
}

#[test]
fn ctr_run_with_a_terminal() {
    let _g = serial();
    let Some(e) = setup() else { return };
    if !can_run(&["script"]) {
        return;
    }
    let id = unique("tty");
    let mut cmd = vec![
        "ctr".to_string(),
        "-a".into(),
        e.c.sock.display().to_string(),
        "-n".into(),
        e.ns.clone(),
    ];
    cmd.extend(e.run_args(
        &["--rm", "-t"],
        &id,
        &["sh", "-c", "tty; stty size; exit 4"],
    ));
    let line = cmd
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    // ctr needs a terminal of its own for -t: script gives it one.
    let r = run_open_stdin(
        std::process::Command::new("script").args(["-q", "-e", "-c", &line, "/dev/null"]),
        T,
    );
    assert_eq!(r.code, Some(4), "{r:#?}");
    assert!(r.stdout.contains("/dev/pts/0"), "{r:#?}");
    e.assert_gone(&id);
}
