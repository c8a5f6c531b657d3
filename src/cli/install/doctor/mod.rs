//! `gpurun doctor`: check a node (driver, device nodes, cgroups, the device filter, the
//! clients' configuration), one line per check with what to do about a problem.

mod gpu;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The outcome of one doctor check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Problem,
    Skip,
}

#[derive(Clone, Debug)]
pub struct Check {
    pub status: Status,
    pub name: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(status: Status, name: &'static str, detail: String, fix: Option<&str>) -> Check {
    Check {
        status,
        name,
        detail,
        fix: fix.map(str::to_string),
    }
}

/// Where the node's files are: `/` on a real node, a directory in tests.
pub struct Node {
    pub etc_root: PathBuf,
    pub config: Result<crate::gpu::config::Config>,
}

pub fn doctor() -> Result<i32> {
    let node = Node {
        etc_root: PathBuf::from("/"),
        config: crate::gpu::config::Config::load().map_err(|e| Error::Config(e.to_string())),
    };
    let checks = run_checks(&node);
    for c in &checks {
        let s = match c.status {
            Status::Ok => "ok",
            Status::Problem => "problem",
            Status::Skip => "skip",
        };
        println!("{s:<8} {}: {}", c.name, c.detail);
        if let Some(f) = &c.fix {
            println!("{:<8} fix: {f}", "");
        }
    }
    Ok(i32::from(
        checks.iter().any(|c| c.status == Status::Problem),
    ))
}

pub fn run_checks(node: &Node) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = match &node.config {
        Ok(c) => {
            out.push(check(Status::Ok, "configuration", "loaded".into(), None));
            Some(c)
        }
        Err(e) => {
            out.push(check(
                Status::Problem,
                "configuration",
                e.to_string(),
                Some("correct /etc/gpurun/config.toml (or the file GPURUN_CONFIG names)"),
            ));
            None
        }
    };
    if let Some(cfg) = cfg {
        match crate::gpu::discover(&cfg.roots()) {
            Ok(inv) => {
                let gpus: Vec<String> = inv.gpus.iter().map(|g| g.uuid.clone()).collect();
                out.push(check(
                    Status::Ok,
                    "driver",
                    format!(
                        "NVIDIA {} with {} GPU(s): {}",
                        inv.driver_version,
                        gpus.len(),
                        gpus.join(", ")
                    ),
                    None,
                ));
                out.push(check_nodes(&inv));
                out.push(check_enrichment(&inv));
                out.push(gpu::check_imex(cfg));
            }
            Err(e) => out.push(check(
                Status::Problem,
                "driver",
                e.to_string(),
                Some("install and load the NVIDIA driver, or set nvidia.driver-root, dev-root and proc-root in /etc/gpurun/config.toml"),
            )),
        }
    }
    let root = crate::linux::cgroups::CgroupRoot::system();
    match &root {
        Ok(r) => out.push(check(
            Status::Ok,
            "cgroups",
            format!("{:?} layout at {}", r.layout(), r.mount().display()),
            None,
        )),
        Err(e) => out.push(check(
            Status::Problem,
            "cgroups",
            e.to_string(),
            Some("mount cgroup2 at /sys/fs/cgroup (or the v1 controllers below it)"),
        )),
    }
    if let Ok(r) = &root {
        out.push(check_device_filter(r));
    }
    out.extend(check_clients(&node.etc_root));
    if let Some(cfg) = cfg {
        out.extend(gpu::check_engine_cdi(&node.etc_root, cfg));
        out.push(gpu::check_cdi_specs(&node.etc_root, cfg));
    }
    out
}

/// What the driver's nvidia-smi gave discovery: the facts `NVIDIA_REQUIRE_*` and MIG
/// requests need. Without nvidia-smi they are unknown (a note, not a fault); a failing one
/// is a problem.
fn check_enrichment(inv: &crate::gpu::Inventory) -> Check {
    let e = &inv.enrichment;
    match (&e.smi, e.warning()) {
        (None, _) => check(
            Status::Skip,
            "nvml",
            "no nvidia-smi under the driver root: CUDA version, compute capability and MIG UUIDs are unknown".into(),
            None,
        ),
        (Some(smi), None) => check(
            Status::Ok,
            "nvml",
            format!(
                "CUDA {} through {}",
                inv.cuda_version.as_deref().unwrap_or("unknown"),
                smi.display()
            ),
            None,
        ),
        (Some(_), Some(w)) => check(
            if e.failed { Status::Problem } else { Status::Ok },
            "nvml",
            w,
            e.failed.then_some("check that nvidia-smi works on the host, then run gpurun gpus --refresh"),
        ),
    }
}

fn check_nodes(inv: &crate::gpu::Inventory) -> Check {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // Control, GPU and MIG capability nodes: a MIG layout change leaves cap nodes behind.
    let nodes: Vec<_> = inv.all_nodes().collect();
    let mut bad = Vec::new();
    for n in &nodes {
        let host = inv
            .roots
            .dev
            .join(n.path.strip_prefix("/").unwrap_or(&n.path));
        match std::fs::metadata(&host) {
            Ok(m) if m.file_type().is_char_device() => {
                let (maj, min) = (
                    nix::sys::stat::major(m.rdev()),
                    nix::sys::stat::minor(m.rdev()),
                );
                if (maj, min) != (u64::from(n.major), u64::from(n.minor)) {
                    bad.push(format!(
                        "{} is {maj}:{min}, not {}:{}",
                        host.display(),
                        n.major,
                        n.minor
                    ));
                }
            }
            Ok(_) => bad.push(format!("{} is not a character device", host.display())),
            Err(e) => bad.push(format!("{}: {e}", host.display())),
        }
    }
    if bad.is_empty() {
        check(
            Status::Ok,
            "device nodes",
            format!("{} present", nodes.len()),
            None,
        )
    } else {
        check(
            Status::Problem,
            "device nodes",
            bad.join("; "),
            Some("create them with nvidia-modprobe (-u -c=0 for nvidia-uvm) or `nvidia-ctk system create-device-nodes`"),
        )
    }
}

/// A throwaway cgroup2 directory with gpurun's device program denying `/dev/zero` and
/// allowing `/dev/null`; a shell moves itself in and opens both.
fn check_device_filter(root: &crate::linux::cgroups::CgroupRoot) -> Check {
    const NAME: &str = "device filter";
    if !nix::unistd::geteuid().is_root() {
        return check(Status::Skip, NAME, "the self-test needs root".into(), None);
    }
    let Some(u) = root.unified() else {
        let v1 = root
            .v1_hierarchies()
            .iter()
            .any(|h| h.controllers.iter().any(|c| c == "devices"));
        return if v1 {
            check(
                Status::Ok,
                NAME,
                "v1 devices controller mounted".into(),
                None,
            )
        } else {
            check(
                Status::Problem,
                NAME,
                "no devices controller and no cgroup2".into(),
                Some("mount the v1 devices controller or cgroup2"),
            )
        };
    };
    let dir = u
        .mountpoint
        .join(format!("gpurun-doctor-{}", std::process::id()));
    let result = device_filter_self_test(&dir);
    let _ = std::fs::remove_dir(&dir);
    match result {
        Ok(()) => check(Status::Ok, NAME, format!("eBPF device program denies and allows on {}", u.mountpoint.display()), None),
        Err(e) => check(Status::Problem, NAME, e,
            Some("gpurun needs bpf(2) with BPF_PROG_TYPE_CGROUP_DEVICE (kernel 4.15+, CONFIG_CGROUP_BPF) and root")),
    }
}

fn device_filter_self_test(dir: &Path) -> std::result::Result<(), String> {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
    std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let rule = |allow: bool, typ, major, minor| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access("rwm");
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let (Some(a), Some(i)) = (major, minor) {
            b = b.major(a).minor(i);
        }
        b.build().map_err(|e| e.to_string())
    };
    let rules = vec![
        rule(false, None, None, None)?,
        rule(true, Some(LinuxDeviceType::C), Some(1), Some(3))?,
    ];
    crate::linux::cgroups::apply_device_filter_v2(dir, &rules).map_err(|e| e.to_string())?;
    let procs = dir.join("cgroup.procs");
    let script = format!(
        "echo $$ > '{}' || exit 9; head -c1 /dev/null || exit 10; head -c1 /dev/zero >/dev/null 2>&1 && exit 11; exit 0",
        procs.display()
    );
    let st = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .map_err(|e| format!("running /bin/sh: {e}"))?;
    match st.code() {
        Some(0) => Ok(()),
        Some(9) => Err(format!("could not join {}", dir.display())),
        Some(10) => Err("the program denied /dev/null, which it allows".into()),
        Some(11) => Err("the program allowed /dev/zero, which it denies".into()),
        _ => Err(format!("the self-test shell ended with {st}")),
    }
}

/// Whether `bin` is on `PATH` (or in an sbin directory root's PATH may lack).
fn in_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .any(|d| d.join(bin).is_file())
}

/// Files of `dir` whose name ends with `suffix`, sorted.
fn drop_ins(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(suffix));
    v.sort();
    v
}

/// `(file, gpurun path)` for each file that configures a gpurun binary with `key`.
fn naming_gpurun(files: &[PathBuf], key: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() != key {
                continue;
            }
            let v = v
                .trim()
                .trim_matches(|c| matches!(c, '[' | ']' | '"' | '\'' | ' '));
            if Path::new(v)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gpurun"))
            {
                out.push((f.clone(), v.to_string()));
            }
        }
    }
    out
}

fn client_check(
    name: &'static str,
    found: Vec<(PathBuf, String)>,
    installed: bool,
    fix: &str,
) -> Check {
    if let Some((file, bin)) = found.first() {
        if !Path::new(bin).is_file() {
            return check(
                Status::Problem,
                name,
                format!("{} names {bin}, which does not exist", file.display()),
                Some(fix),
            );
        }
        return check(
            Status::Ok,
            name,
            format!("{} runs {bin}", file.display()),
            None,
        );
    }
    if !installed {
        return check(Status::Skip, name, "not installed".into(), None);
    }
    check(
        Status::Problem,
        name,
        "no configuration names gpurun".into(),
        Some(fix),
    )
}

fn check_clients(etc: &Path) -> Vec<Check> {
    let has = |bin: &str| in_path(bin);
    let e = |p: &str| etc.join(p);
    let mut ctr = vec![e("etc/containerd/config.toml")];
    ctr.extend(drop_ins(&e("etc/containerd/conf.d"), ".toml"));
    let mut found = naming_gpurun(&ctr, "BinaryName");
    let mut checks = Vec::new();
    let main = std::fs::read_to_string(e("etc/containerd/config.toml")).unwrap_or_default();
    if let Some((f, _)) = found.first() {
        if f.starts_with(e("etc/containerd/conf.d")) && !main.contains("conf.d") {
            checks.push(check(Status::Problem, "containerd",
                format!("{} names gpurun but /etc/containerd/config.toml does not import it", f.display()),
                Some("add imports = [\"/etc/containerd/conf.d/*.toml\"] to /etc/containerd/config.toml and restart containerd")));
            found.clear();
        }
    }
    if checks.is_empty() {
        checks.push(client_check(
            "containerd",
            found,
            has("containerd"),
            "gpurun install containerd, then restart containerd",
        ));
    }
    let mut pod = vec![
        e("usr/share/containers/containers.conf"),
        e("etc/containers/containers.conf"),
    ];
    pod.extend(drop_ins(&e("etc/containers/containers.conf.d"), ".conf"));
    checks.push(client_check(
        "podman",
        naming_gpurun(&pod, "gpurun"),
        has("podman"),
        "gpurun install podman",
    ));
    let mut crio = vec![e("etc/crio/crio.conf")];
    crio.extend(drop_ins(&e("etc/crio/crio.conf.d"), ".conf"));
    checks.push(client_check(
        "cri-o",
        naming_gpurun(&crio, "runtime_path"),
        has("crio"),
        "copy configs/crio/99-gpurun.conf to /etc/crio/crio.conf.d/ and restart crio",
    ));
    checks
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::install::{containerd_dropin, write_owned};

    /// The fake two-GPU tree, its nodes made with mknod, and a configuration reading it;
    /// `None` (a skip, a failure under CI) without root.
    pub(super) fn fake_node(
        test: &str,
    ) -> Option<(
        tempfile::TempDir,
        crate::gpu::fake::FakeDriver,
        crate::gpu::config::Config,
    )> {
        if !nix::unistd::geteuid().is_root() {
            crate::skip::cannot_run(test, "needs root (mknod for the fake device nodes)");
            return None;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let fake = crate::gpu::fake::FakeDriver::two_gpus()
            .build(&t.path().join("host"))
            .expect("fake tree");
        let cfg = crate::gpu::fake::config(&fake.root, &t.path().join("state"));
        Some((t, fake, cfg))
    }

    #[test]
    fn doctor_reports_a_failing_nvidia_smi_as_a_problem() {
        let t = tempfile::tempdir().unwrap();
        let fake = crate::gpu::fake::FakeDriver::two_gpus()
            .smi(crate::gpu::fake::FakeSmi::Fails)
            .build(&t.path().join("host"))
            .unwrap();
        let cfg = crate::gpu::fake::config(&fake.root, &t.path().join("state"));
        let checks = run_checks(&Node {
            etc_root: t.path().join("etc-root"),
            config: Ok(cfg),
        });
        let e = checks.iter().find(|c| c.name == "nvml").unwrap();
        assert_eq!(e.status, Status::Problem, "{e:?}");
        assert!(
            e.fix.as_ref().is_some_and(|f| f.contains("--refresh")),
            "{e:?}"
        );
    }

    #[test]
    fn doctor_reports_driver_nodes_and_clients() {
        let t = tempfile::tempdir().unwrap();
        let fake = crate::gpu::fake::FakeDriver::two_gpus()
            .nodes(crate::gpu::fake::Nodes::Placeholder)
            .build(&t.path().join("host"))
            .unwrap();
        let mut cfg = crate::gpu::config::Config::default();
        cfg.nvidia.driver_root = fake.root.clone();
        cfg.nvidia.dev_root = fake.root.clone();
        cfg.nvidia.proc_root = fake.root.clone();
        let etc = t.path().join("etc-root");
        let dropin = etc.join("etc/containerd/conf.d/99-gpurun.toml");
        write_owned(&dropin, &containerd_dropin(Path::new("/no/such/gpurun"), 2)).unwrap();
        let checks = run_checks(&Node {
            etc_root: etc.clone(),
            config: Ok(cfg),
        });
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
        let d = by("driver");
        assert_eq!(d.status, Status::Ok, "{d:?}");
        assert!(
            d.detail
                .contains("GPU-00000000-0000-0000-0000-000000000000"),
            "{d:?}"
        );
        let e = by("nvml");
        assert_eq!(e.status, Status::Ok, "{e:?}");
        assert!(e.detail.starts_with("CUDA 12.8 through "), "{e:?}");
        // Placeholder files are not device nodes: a problem with a fix.
        let n = by("device nodes");
        assert_eq!(n.status, Status::Problem, "{n:?}");
        assert!(n.detail.contains("nvidiactl") && n.fix.is_some(), "{n:?}");
        // The drop-in is not imported by a (missing) main config.
        let c = by("containerd");
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.fix.unwrap().contains("imports"));
        std::fs::write(
            etc.join("etc/containerd/config.toml"),
            "imports = [\"/etc/containerd/conf.d/*.toml\"]\n",
        )
        .unwrap();
        let checks = run_checks(&Node {
            etc_root: etc,
            config: Ok(crate::gpu::config::Config::default()),
        });
        let c = checks.iter().find(|c| c.name == "containerd").unwrap();
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.detail.contains("/no/such/gpurun"), "{c:?}");
        let d = checks.iter().find(|c| c.name == "driver").unwrap();
        assert!(
            d.status == Status::Problem || std::path::Path::new("/proc/driver/nvidia").exists()
        );
    }

    #[test]
    fn a_missing_mig_capability_node_is_a_problem() {
        let Some((_t, fake, cfg)) = fake_node("a_missing_mig_capability_node_is_a_problem") else {
            return;
        };
        let inv = crate::gpu::discover(&cfg.roots()).expect("discovery");
        assert_eq!(check_nodes(&inv).status, Status::Ok);
        std::fs::remove_file(fake.root.join("dev/nvidia-caps/nvidia-cap12")).expect("rm");
        let c = check_nodes(&inv);
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.detail.contains("nvidia-cap12"), "{c:?}");
    }
}
