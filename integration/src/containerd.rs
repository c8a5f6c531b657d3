//! A private containerd 1.6: its own socket, root, state, runtime root and gpurun
//! configuration, with a `gpurun` CRI runtime handler whose `BinaryName` is the gpurun
//! under test. Stopped (by the pid this harness started) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{leftovers, run, wait_for, Ran};

/// The CRI runtime handler (and RuntimeClass handler) the config defines.
pub const HANDLER: &str = "gpurun";
/// containerd's CRI namespace.
pub const K8S_NS: &str = "k8s.io";

pub struct Containerd {
    dir: tempfile::TempDir,
    /// The gRPC socket.
    pub sock: PathBuf,
    /// The shim's `options.Root`: gpurun's `--root` is `<runc_root>/<namespace>`.
    pub runc_root: PathBuf,
    /// The gpurun binary named by `BinaryName`.
    pub gpurun: PathBuf,
    /// The file `GPURUN_CONFIG` names in containerd's environment.
    pub gpurun_config: PathBuf,
    child: Option<Child>,
    cgroup_parents: Mutex<Vec<String>>,
}

fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap_or_default()
}

/// containerd's config (version 2, as containerd 1.6/1.7 read it).
fn config(dir: &Path, gpurun: &Path, runc_root: &Path, dropins: bool) -> String {
    let d = |s: &str| toml_str(&dir.join(s));
    let handler = match dropins {
        true => String::new(),
        false => format!(
            r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}]
      runtime_type = "io.containerd.runc.v2"
      container_annotations = ["cdi.k8s.io/*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}.options]
        BinaryName = {gpurun}
        Root = {runc_root}
        SystemdCgroup = false
"#,
            gpurun = toml_str(gpurun),
            runc_root = toml_str(runc_root),
        ),
    };
    let imports = if dropins {
        format!("imports = [{}]\n", toml_str(&dir.join("conf.d/*.toml")))
    } else {
        String::new()
    };
    format!(
        r#"version = 2
{imports}root = {root}
state = {state}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
{handler}"#,
        root = d("root"),
        state = d("state"),
        sock = d("c.sock"),
        ttrpc = d("c.sock.ttrpc"),
        opt = d("opt"),
        pause = toml_str(Path::new(crate::image::PAUSE_TAG)),
        cni_bin = d("cni/bin"),
        cni_conf = d("cni/conf"),
    )
}

impl Containerd {
    /// Starts containerd. `gpurun_toml` is appended to the gpurun configuration its
    /// runtimes read (the GPU state directory is always private to this daemon).
    pub fn start(gpurun_toml: &str) -> Containerd {
        let mut c = Self::prepare(gpurun_toml, false);
        c.launch();
        c
    }

    /// Writes the configuration without starting containerd. With `dropins` the main
    /// config defines no `gpurun` handler and imports `<dir>/conf.d/*.toml` instead (where
    /// `gpurun install containerd` can write one); gpurun then keeps its state under
    /// containerd's default, `/run/containerd/runc/<ns>`.
    pub fn prepare(gpurun_toml: &str, dropins: bool) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("gpurun-ctrd-")
            .tempdir()
            .expect("temporary directory");
        let gpurun = crate::gpurun_bin();
        let runc_root = if dropins {
            PathBuf::from("/run/containerd/runc")
        } else {
            dir.path().join("runc-root")
        };
        for d in ["cni/bin", "cni/conf", "fifo", "conf.d"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let gpurun_config = dir.path().join("gpurun.toml");
        std::fs::write(
            &gpurun_config,
            format!(
                "[gpus]\nstate-dir = {}\n{gpurun_toml}\n[journal]\ndir = {}\n",
                toml_str(&dir.path().join("gpu-state")),
                toml_str(&dir.path().join("gpu-journal"))
            ),
        )
        .expect("gpurun config");
        std::fs::write(
            dir.path().join("config.toml"),
            config(dir.path(), &gpurun, &runc_root, dropins),
        )
        .expect("config");
        Containerd {
            sock: dir.path().join("c.sock"),
            runc_root,
            gpurun,
            gpurun_config,
            dir,
            child: None,
            cgroup_parents: Mutex::new(Vec::new()),
        }
    }

    /// containerd's main config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The directory the main config imports `*.toml` from (with `prepare(_, true)`).
    pub fn conf_d(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    /// Starts containerd on the prepared configuration and waits until it answers.
    pub fn launch(&mut self) {
        let log = File::create(self.dir.path().join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.config_path())
            .env(gpurun::config::PATH_ENV, &self.gpurun_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    panic!("containerd exited with {st}:\n{}", self.log_tail());
                }
            }
            let r = run(self.ctr("default").arg("version"), Duration::from_secs(20));
            r.ok().then_some(())
        });
        assert!(
            up.is_some(),
            "containerd did not come up:\n{}",
            self.log_tail()
        );
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        assert!(
            !log.contains("failed to load plugin io.containerd.grpc.v1.cri"),
            "containerd's CRI plugin did not load:\n{}",
            self.log_tail()
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where `ctr` puts its stdio FIFOs (`--fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// `ctr -a <sock> -n <ns>`.
    pub fn ctr(&self, ns: &str) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.sock).arg("-n").arg(ns);
        c
    }

    /// Imports a docker-archive or OCI tarball into `ns`.
    pub fn import(&self, ns: &str, tar: &Path) {
        run(
            self.ctr(ns).args(["images", "import"]).arg(tar),
            Duration::from_secs(120),
        )
        .expect_ok("ctr images import");
    }

    /// gpurun's `--root` for containers of namespace `ns`.
    pub fn runtime_root(&self, ns: &str) -> PathBuf {
        self.runc_root.join(ns)
    }

    /// `gpurun state <id>` under namespace `ns`.
    pub fn gpurun_state(&self, ns: &str, id: &str) -> Option<serde_json::Value> {
        let r = run(
            Command::new(&self.gpurun)
                .arg("--root")
                .arg(self.runtime_root(ns))
                .args(["state", id]),
            Duration::from_secs(20),
        );
        if !r.ok() {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// Registers a cgroup parent (`/name`) that this daemon's containers create, removed
    /// (when empty) after the daemon stops.
    pub fn own_cgroup(&self, rel: &str) {
        if let Ok(mut v) = self.cgroup_parents.lock() {
            v.push(rel.to_string());
        }
    }

    /// The last lines of containerd's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Kills and deletes every task and container this daemon still has (after a failed
    /// test): through containerd itself, so only its own processes are touched.
    fn remove_everything(&self) {
        let t = Duration::from_secs(30);
        let nss = run(self.ctr("default").args(["namespaces", "ls", "-q"]), t);
        for ns in nss.stdout.lines().map(str::trim).filter(|s| !s.is_empty()) {
            let tasks = run(self.ctr(ns).args(["tasks", "ls", "-q"]), t);
            for id in tasks
                .stdout
                .lines()
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let _ = run(
                    self.ctr(ns)
                        .args(["tasks", "kill", "-a", "-s", "SIGKILL", id]),
                    t,
                );
                let _ = wait_for(Duration::from_secs(10), || {
                    let r = run(self.ctr(ns).args(["tasks", "delete", "-f", id]), t);
                    r.ok().then_some(())
                });
            }
            let cs = run(self.ctr(ns).args(["containers", "ls", "-q"]), t);
            for id in cs.stdout.lines().map(str::trim).filter(|s| !s.is_empty()) {
                let _ = run(self.ctr(ns).args(["containers", "delete", id]), t);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd log (tail):\n{}", self.log_tail());
        }
        if self.child.is_some() {
            self.remove_everything();
        }
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let exited = wait_for(Duration::from_secs(15), || {
                child.try_wait().ok().flatten().map(|_| ())
            });
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        leftovers::unmount_under(self.dir.path());
        if let Ok(v) = self.cgroup_parents.lock() {
            for rel in v.iter() {
                leftovers::remove_cgroups(rel);
            }
        }
    }
}

/// The result of `ctr` with its output, for asserts.
pub fn ctr_output(c: &Containerd, ns: &str, args: &[&str], limit: Duration) -> Ran {
    run(c.ctr(ns).args(args), limit)
}
