//! podman on private storage (`--root`, `--runroot`, `--tmpdir` in a temporary directory,
//! vfs driver, file locks and events), cgroupfs, host network, gpurun as `--runtime`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{run, Ran};

pub struct Podman {
    dir: tempfile::TempDir,
    pub gpurun: PathBuf,
    /// The containers.conf in force (`CONTAINERS_CONF`).
    pub conf: PathBuf,
    /// `--cgroup-parent` for this podman's containers (`/<unique>`); removed on drop.
    pub parent: String,
}

fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap_or_default()
}

impl Podman {
    /// A private podman whose containers.conf lists gpurun in `runtime_supports_json`
    /// (so its errors come back as JSON) and defines it as runtime `gpurun`.
    pub fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("gpurun-podman-")
            .tempdir()
            .expect("temporary directory");
        let gpurun = crate::gpurun_bin();
        for d in ["root", "runroot", "tmp", "cni"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let conf = dir.path().join("containers.conf");
        std::fs::write(&conf, Self::conf_text(dir.path(), &gpurun)).expect("containers.conf");
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
                toml_str(&dir.path().join("root")),
                toml_str(&dir.path().join("runroot"))
            ),
        )
        .expect("storage.conf");
        Podman {
            dir,
            gpurun,
            conf,
            parent: format!("/{}", crate::unique("gpurun-it-podman")),
        }
    }

    fn conf_text(dir: &Path, gpurun: &Path) -> String {
        format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_backend = "cni"
network_config_dir = {cni}

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "gpurun"]

[engine.runtimes]
gpurun = [{gpurun}]
"#,
            cni = toml_str(&dir.join("cni")),
            gpurun = toml_str(gpurun),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman` with the private storage and configuration; `runtime` is what
    /// `--runtime` gets (a path, or a name from `[engine.runtimes]`).
    pub fn cmd_with(&self, conf: &Path, runtime: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", conf)
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("cni"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(runtime);
        c
    }

    /// `podman --runtime <gpurun path>`.
    pub fn cmd(&self) -> Command {
        self.cmd_with(&self.conf, &self.gpurun.to_string_lossy())
    }

    /// Runs `podman <args>` (at most `limit`).
    pub fn run(&self, args: &[&str], limit: Duration) -> Ran {
        run(self.cmd().args(args), limit)
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Anything a failed test left: podman removes its own containers and mounts.
        let t = Duration::from_secs(60);
        let _ = run(
            self.cmd().args(["rm", "--all", "--force", "--time", "0"]),
            t,
        );
        crate::leftovers::unmount_under(self.dir.path());
        // conmon's cgroup (`<parent>/conmon`) empties when the last conmon exits.
        let _ = crate::wait_for(Duration::from_secs(15), || {
            crate::leftovers::remove_cgroups(&self.parent);
            crate::leftovers::cgroups_named(&self.parent)
                .is_empty()
                .then_some(())
        });
    }
}
