//! What the bench builds and tears down: the busybox bundle, the fake GPU node, one state
//! root per runtime, the cgroup layout every runtime sees, and the scans for leftovers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::probe::Cmd;

pub const BUSYBOX: &str = "/bin/busybox";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// One runtime under test.
pub struct Runtime {
    /// `gpurun`, `runc` or `crun`.
    pub name: String,
    pub bin: PathBuf,
    /// The version it reports (`1.1.5+ds1`), and Debian's package version when it came
    /// from a package.
    pub version: String,
    pub package: Option<String>,
    /// Its own `--root`.
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Runtime {
    /// `gpurun`, or `runc-1.1.5`: the version stays beside every figure.
    pub fn label(&self) -> String {
        if self.name == "gpurun" {
            return self.name.clone();
        }
        let short = self.version.split(['+', '~', '-']).next().unwrap_or("");
        format!("{}-{short}", self.name)
    }

    pub fn cmd(&self, args: &[&str], stderr: PathBuf) -> Cmd {
        let mut argv = vec![
            self.bin.display().to_string(),
            "--root".to_string(),
            self.root.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        Cmd {
            argv,
            env: self.env.clone(),
            stderr,
        }
    }

    /// Runs a verb outside any measurement (set-up, clean-up).
    pub fn direct(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
    }

    /// Container ids with state under this runtime's root.
    pub fn state_entries(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Finds `name` on the usual sbin and bin directories, then `$PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .into_iter()
    .map(str::to_string)
    .chain(path.split(':').map(str::to_string))
    .map(|d| Path::new(&d).join(name))
    .find(|p| p.is_file())
}

/// The first line of `<bin> --version` without its leading "<name> version ".
pub fn version_of(bin: &Path, name: &str) -> String {
    let out = Command::new(bin).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let first = text.lines().next().unwrap_or("").trim();
    first
        .strip_prefix(&format!("{name} version "))
        .unwrap_or(first)
        .to_string()
}

/// Debian's version of `package`, when it is installed.
pub fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// The host's cgroup layout, as far as the runtimes tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// v1 controllers and a cgroup2 at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// v1 only (what the bench turns a hybrid host into).
    V1,
    /// One cgroup2 at `/sys/fs/cgroup`.
    V2,
    Unknown,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Hybrid => "hybrid",
            Layout::V1 => "v1",
            Layout::V2 => "v2",
            Layout::Unknown => "unknown",
        }
    }
}

pub fn cgroup_layout() -> Layout {
    let fs = |p: &str| statfs(p).ok().map(|s| s.filesystem_type());
    match fs(CGROUP_ROOT) {
        Some(t) if t == CGROUP2_SUPER_MAGIC => Layout::V2,
        Some(t) if t == TMPFS_MAGIC => {
            if fs(UNIFIED) == Some(CGROUP2_SUPER_MAGIC) {
                Layout::Hybrid
            } else {
                Layout::V1
            }
        }
        _ => Layout::Unknown,
    }
}

/// Moves this process into a private mount namespace where an empty tmpfs covers
/// `/sys/fs/cgroup/unified`, so every runtime sees the same pure-v1 layout (crun refuses
/// hybrid hosts). The host's mounts are untouched. Call before any thread is started.
pub fn enter_private_v1_layout() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private in the bench's mount namespace: {e}"))?;
    mount(
        Some("tmpfs"),
        UNIFIED,
        Some("tmpfs"),
        MsFlags::empty(),
        // crun (legacy mode) still writes a cgroup.procs file per container into the
        // cover, one page each: 4k would let only one container through.
        Some("size=16m"),
    )
    .map_err(|e| format!("mounting a tmpfs on {UNIFIED}: {e}"))
}

/// Cgroup directories whose name starts with `prefix`, deepest first. `real` is false for
/// those on the tmpfs that covers `unified` (a runtime's `mkdir` there makes no cgroup).
pub fn cgroup_dirs(prefix: &str) -> Vec<(PathBuf, bool)> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(CGROUP_ROOT) else {
        return found;
    };
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let real = statfs(&p).is_ok_and(|s| {
            let t = s.filesystem_type();
            t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
        });
        walk(&p, prefix, real, 0, &mut found);
    }
    found.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    found
}

fn walk(dir: &Path, prefix: &str, real: bool, depth: usize, found: &mut Vec<(PathBuf, bool)>) {
    if depth > 12 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(prefix) {
            found.push((p.clone(), real));
        }
        walk(&p, prefix, real, depth + 1, found);
    }
}

/// Mount points in the bench's mount namespace under `dir` or naming `prefix`.
pub fn mounts_matching(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir) || m.to_string_lossy().contains(prefix))
        .collect()
}

/// Whether a process with this pid exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Reaps exited children the bench inherited (it is a child subreaper).
pub fn sweep_zombies() {
    while let Ok(s) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Builds a busybox rootfs in `dir`: the static binary, one symlink per applet, the files
/// `id` reads, and the library directory a Debian rootfs has (GPU libraries go there).
pub fn make_rootfs(dir: &Path) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dir.display());
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| io("mkdir bin", e))?;
    std::fs::copy(BUSYBOX, bin.join("busybox")).map_err(|e| io("copying busybox", e))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| format!("{BUSYBOX} --list: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .map_err(|e| io("linking applets", e))?;
        }
    }
    for d in [
        "proc",
        "sys",
        "dev",
        "etc",
        "tmp",
        "root",
        "run",
        "usr/bin",
        gpurun::gpu::fake::LIB_DIR,
    ] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| io("mkdir", e))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| io("writing etc/passwd", e))?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").map_err(|e| io("writing etc/group", e))
}

/// `gpurun spec` in `dir`, then: args `/bin/true`, no terminal, the rootfs by absolute path
/// (one rootfs, several bundles).
pub fn base_config(gpurun: &Path, dir: &Path, rootfs: &Path) -> Result<Value, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let out = Command::new(gpurun)
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .map_err(|e| format!("{} spec: {e}", gpurun.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} spec: {}",
            gpurun.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut config: Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    config["process"]["args"] = json!(["/bin/true"]);
    config["process"]["terminal"] = false.into();
    config["root"]["path"] = rootfs.display().to_string().into();
    Ok(config)
}

/// Writes `config` as `dir/config.json`.
pub fn write_bundle(dir: &Path, config: &Value) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let text = serde_json::to_vec_pretty(config).map_err(|e| format!("encoding config: {e}"))?;
    std::fs::write(dir.join("config.json"), text)
        .map_err(|e| format!("writing {}/config.json: {e}", dir.display()))
}

/// A node with a fake driver as large as a real one (`FakeDriver::full()`), under `dir`:
/// the tree in `host/`, GPU state in `state/`, an empty CDI directory, and the
/// `config.toml` that points gpurun at them. Returns the config file's path.
pub fn gpu_node(dir: &Path) -> Result<PathBuf, String> {
    let host = dir.join("host");
    std::fs::create_dir_all(&host).map_err(|e| format!("mkdir {}: {e}", host.display()))?;
    gpurun::gpu::fake::FakeDriver::full()
        .nodes(gpurun::gpu::fake::Nodes::Mknod)
        .build(&host)
        .map_err(|e| format!("building the fake driver tree: {e}"))?;
    for d in ["state", "cdi"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    let s = |p: &Path| p.display().to_string();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[nvidia]\ndriver-root = {h:?}\ndev-root = {h:?}\nproc-root = {h:?}\n\
             accept-env-when-unprivileged = true\ncdi-spec-dirs = [{cdi:?}]\n\
             [gpus]\nstate-dir = {state:?}\n[journal]\ndir = {journal:?}\n",
            h = s(&host),
            cdi = s(&dir.join("cdi")),
            state = s(&dir.join("state")),
            journal = s(&dir.join("journal")),
        ),
    )
    .map_err(|e| format!("writing {}: {e}", config.display()))?;
    Ok(config)
}

/// Lease files left in the GPU state directory.
pub fn leases(gpu_dir: &Path) -> usize {
    std::fs::read_dir(gpu_dir.join("state/leases"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// Everything the bench made, removed on drop: containers (force-deleted by every
/// runtime), cgroups named with the bench's prefix, mounts under its directory, and the
/// directory itself (kept, and named, if something is still mounted there).
pub struct World {
    pub dir: PathBuf,
    pub prefix: String,
    pub runtimes: Vec<Runtime>,
}

impl World {
    /// Force-deletes every container under every root; returns how many there were.
    pub fn delete_all(&self) -> usize {
        let mut n = 0;
        for rt in &self.runtimes {
            for id in rt.state_entries() {
                n += 1;
                if let Ok(out) = rt.direct(&["delete", "--force", &id]) {
                    if !out.status.success() && rt.state_entries().contains(&id) {
                        eprintln!(
                            "bench: {} delete --force {id}: {}",
                            rt.name,
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
            }
        }
        sweep_zombies();
        n
    }

    /// Removes cgroups named with `prefix` (and runtimes' directories of that name on the
    /// tmpfs cover); returns the real cgroups that were there.
    pub fn remove_cgroups(&self, prefix: &str) -> Vec<PathBuf> {
        let mut real = Vec::new();
        for (p, is_real) in cgroup_dirs(prefix) {
            if is_real {
                if let Err(e) = std::fs::remove_dir(&p) {
                    eprintln!("bench: rmdir {}: {e}", p.display());
                }
                real.push(p);
            } else {
                // A plain directory on the bench's own tmpfs, with plain files in it.
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        real
    }

    fn cleanup(&self) {
        self.delete_all();
        self.remove_cgroups(&self.prefix);
        let mut mounts = mounts_matching(&self.dir, &self.prefix);
        mounts.reverse();
        for m in &mounts {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        if !mounts_matching(&self.dir, &self.prefix).is_empty() {
            eprintln!(
                "bench: something is still mounted under {}: left in place",
                self.dir.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("bench: removing {}: {e}", self.dir.display());
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.cleanup();
    }
}
