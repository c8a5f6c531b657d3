//! `gpurun doctor`'s checks of how GPUs reach containers on this node: IMEX channel
//! nodes, and whether the engines apply CDI devices themselves (then gpurun receives the
//! edited config.json and leases the GPUs it finds there) or leave that to gpurun.

use std::path::{Path, PathBuf};

use super::{check, Check, Status};
use crate::gpu::config::Config;
use crate::gpu::procfs;

/// The IMEX channel major in `/proc/devices` and the channel nodes under the dev root,
/// each with that major and its channel number as minor.
pub fn check_imex(cfg: &Config) -> Check {
    const NAME: &str = "imex channels";
    let roots = cfg.roots();
    let devices = roots.proc.join("proc/devices");
    let majors = std::fs::read_to_string(&devices)
        .map(|t| procfs::parse_devices(&t))
        .unwrap_or_default();
    let Some(&major) = majors.get("nvidia-caps-imex-channels") else {
        return check(
            Status::Skip,
            NAME,
            format!(
                "{} lists no nvidia-caps-imex-channels major: this driver offers no IMEX channels",
                devices.display()
            ),
            None,
        );
    };
    let dir = roots.dev.join("dev/nvidia-caps-imex-channels");
    let mut found = Vec::new();
    let mut bad = Vec::new();
    for (path, channel) in channel_nodes(&dir) {
        match live_node(&path) {
            Some((a, i)) if (a, i) == (major, channel) => found.push(channel),
            Some((a, i)) => bad.push(format!(
                "{} is {a}:{i}, not {major}:{channel}",
                path.display()
            )),
            None => bad.push(format!("{} is not a character device", path.display())),
        }
    }
    found.sort_unstable();
    if !bad.is_empty() {
        return check(
            Status::Problem,
            NAME,
            bad.join("; "),
            Some("recreate the channel nodes after the driver reload (nvidia-modprobe -i <n>, or NVIDIA's IMEX daemon setup)"),
        );
    }
    if found.is_empty() {
        return check(
            Status::Problem,
            NAME,
            format!("major {major}, but no channel node under {}", dir.display()),
            Some("create channel 0 with the driver parameter NVreg_CreateImexChannel0=1, or nvidia-modprobe -i 0"),
        );
    }
    let list: Vec<String> = found.iter().map(|c| format!("channel{c}")).collect();
    check(
        Status::Ok,
        NAME,
        format!("major {major}: {}", list.join(", ")),
        None,
    )
}

fn channel_nodes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("channel")?.parse().ok()?;
            Some((e.path(), n))
        })
        .collect()
}

fn live_node(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_char_device().then(|| {
        (
            nix::sys::stat::major(m.rdev()) as u32,
            nix::sys::stat::minor(m.rdev()) as u32,
        )
    })
}

/// The NVIDIA CDI specs in every directory an engine or gpurun reads: each device
/// checked as `create` would check it once applied. A stale spec is found here, before a
/// job fails with "nvidia-smi works, cuInit fails".
pub fn check_cdi_specs(etc: &Path, cfg: &Config) -> Check {
    const NAME: &str = "CDI specs";
    let mut dirs = cfg.nvidia.cdi_spec_dirs.clone();
    for d in ["etc/cdi", "var/run/cdi"] {
        let d = etc.join(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let registry = crate::gpu::cdi::Registry::load(&dirs);
    let nvidia = registry
        .specs
        .iter()
        .filter(|(_, s)| {
            s.kind
                .split('/')
                .next()
                .is_some_and(|v| v.ends_with("nvidia.com"))
        })
        .count();
    let mut problems: Vec<String> = registry.errors.clone();
    for s in crate::gpu::cdi::check_specs(&registry, &cfg.roots()) {
        problems.push(format!("{}: {}: {}", s.file.display(), s.device, s.error));
    }
    if !problems.is_empty() {
        return check(
            Status::Problem,
            NAME,
            problems.join("; "),
            Some("regenerate each named spec (gpurun cdi generate -o FILE, or nvidia-ctk cdi generate), or restart the DRA driver or device plugin that wrote it"),
        );
    }
    if nvidia == 0 {
        return check(
            Status::Skip,
            NAME,
            format!("no NVIDIA spec in {}", join(&dirs)),
            None,
        );
    }
    check(
        Status::Ok,
        NAME,
        format!(
            "{nvidia} NVIDIA spec(s) in {} match the driver",
            join(&dirs)
        ),
        None,
    )
}

/// What containerd's CRI plugin does with CDI: `enable_cdi` where set, else its default
/// (on from containerd 2.0, whose configs are `version = 3`; off before), and where it
/// reads specs (`cdi_spec_dirs`, default `/etc/cdi` and `/var/run/cdi`).
#[derive(Debug, PartialEq, Eq)]
struct ContainerdCdi {
    enabled: bool,
    /// `enable_cdi` was written in the file (not the version's default).
    explicit: bool,
    dirs: Vec<PathBuf>,
}

fn containerd_cdi(text: &str) -> Option<ContainerdCdi> {
    let doc: toml::Table = text.parse().ok()?;
    let version = doc
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(1);
    let mut found: (Option<bool>, Option<Vec<PathBuf>>) = (None, None);
    find_cdi_keys(&toml::Value::Table(doc), &mut found);
    let default_dirs = || vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")];
    Some(ContainerdCdi {
        enabled: found.0.unwrap_or(version >= 3),
        explicit: found.0.is_some(),
        dirs: found.1.unwrap_or_else(default_dirs),
    })
}

/// `enable_cdi` and `cdi_spec_dirs` wherever the CRI plugin's table puts them (its name
/// changed between config versions).
fn find_cdi_keys(v: &toml::Value, found: &mut (Option<bool>, Option<Vec<PathBuf>>)) {
    let Some(t) = v.as_table() else { return };
    if let Some(b) = t.get("enable_cdi").and_then(toml::Value::as_bool) {
        found.0 = Some(b);
    }
    if let Some(dirs) = t.get("cdi_spec_dirs").and_then(toml::Value::as_array) {
        found.1 = Some(
            dirs.iter()
                .filter_map(toml::Value::as_str)
                .map(PathBuf::from)
                .collect(),
        );
    }
    for child in t.values() {
        find_cdi_keys(child, found);
    }
}

/// containerd's CDI setting against gpurun's: with CDI on, containerd applies the specs
/// and gpurun leases the GPUs it finds in config.json; with it off, gpurun applies
/// `cdi.k8s.io/*` annotations itself and must read the directories the specs are in.
pub fn check_engine_cdi(etc: &Path, cfg: &Config) -> Vec<Check> {
    const NAME: &str = "engine CDI";
    let mut out = Vec::new();
    let file = etc.join("etc/containerd/config.toml");
    if let Ok(text) = std::fs::read_to_string(&file) {
        out.push(match containerd_cdi(&text) {
            None => check(
                Status::Problem,
                NAME,
                format!("{} is not valid TOML", file.display()),
                Some("correct the file; containerd will not start with it either"),
            ),
            Some(c) if c.enabled => check(
                Status::Ok,
                NAME,
                format!(
                    "containerd applies CDI devices itself ({}, specs from {}); gpurun leases the NVIDIA devices it finds in config.json",
                    if c.explicit { "enable_cdi = true" } else { "on by default in config version 3" },
                    join(&c.dirs)
                ),
                None,
            ),
            Some(c) => {
                let missing: Vec<&PathBuf> = c
                    .dirs
                    .iter()
                    .filter(|d| !cfg.nvidia.cdi_spec_dirs.contains(d))
                    .collect();
                if missing.is_empty() {
                    check(
                        Status::Ok,
                        NAME,
                        format!(
                            "containerd does not apply CDI (enable_cdi off); gpurun applies cdi.k8s.io annotations from {}",
                            join(&cfg.nvidia.cdi_spec_dirs)
                        ),
                        None,
                    )
                } else {
                    check(
                        Status::Problem,
                        NAME,
                        format!(
                            "containerd does not apply CDI and gpurun does not read {}, where containerd is told specs live",
                            missing.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                        ),
                        Some("add those directories to nvidia.cdi-spec-dirs in /etc/gpurun/config.toml, or set enable_cdi = true in containerd's CRI plugin"),
                    )
                }
            }
        });
    }
    if super::in_path("podman") {
        out.push(check(
            Status::Ok,
            "podman CDI",
            "podman applies --device vendor/class=name from /etc/cdi and /var/run/cdi itself (4.3 reads CDI specs up to version 0.5.0); gpurun leases the NVIDIA devices it finds in config.json".into(),
            None,
        ));
    }
    out
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdi_spec_made_for_another_driver_is_a_problem_naming_file_and_device() {
        let Some((t, fake, mut cfg)) = super::super::tests::fake_node(
            "a_cdi_spec_made_for_another_driver_is_a_problem_naming_file_and_device",
        ) else {
            return;
        };
        let dir = t.path().join("cdi");
        std::fs::create_dir_all(&dir).expect("mkdir");
        cfg.nvidia.cdi_spec_dirs = vec![dir.clone()];
        let etc = t.path().join("etc-root");
        assert_eq!(check_cdi_specs(&etc, &cfg).status, Status::Skip);
        let inv = crate::gpu::discover(&cfg.roots()).expect("discovery");
        let caps = crate::gpu::Capabilities::parse("utility,compute").expect("caps");
        let spec = crate::gpu::cdi::generate(&inv, caps);
        let file = dir.join("nvidia.json");
        std::fs::write(&file, spec.to_json().expect("json")).expect("write");
        let c = check_cdi_specs(&etc, &cfg);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // A DRA claim written before a MIG change: its capability minor is gone.
        let mut claim = crate::gpu::fake::nvidia_cdi::dra_claim(
            &fake.root,
            Path::new("/usr/bin/nvidia-cdi-hook"),
            None,
            Some(1),
        );
        claim["devices"][0]["containerEdits"]["deviceNodes"][1]["minor"] = 99.into();
        let dra = etc.join("var/run/cdi/k8s.gpu.nvidia.com-claim_x.json");
        std::fs::create_dir_all(dra.parent().expect("parent")).expect("mkdir");
        std::fs::write(&dra, claim.to_string()).expect("write");
        let c = check_cdi_specs(&etc, &cfg);
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(
            c.detail.contains("[gpu-stale-node]") && c.detail.contains("236:99"),
            "{c:?}"
        );
        std::fs::remove_file(&dra).expect("rm");
        // A driver upgrade: the spec still names the old version's library.
        let lib = fake
            .root
            .join(crate::gpu::fake::LIB_DIR)
            .join(format!("libcuda.so.{}", crate::gpu::fake::VERSION));
        std::fs::remove_file(&lib).expect("rm");
        let c = check_cdi_specs(&etc, &cfg);
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.detail.contains(&file.display().to_string()), "{c:?}");
        assert!(c.detail.contains("[gpu-stale-file]"), "{c:?}");
        assert!(
            c.fix.as_deref().is_some_and(|f| f.contains("cdi generate")),
            "{c:?}"
        );
    }

    #[test]
    fn containerd_cdi_follows_the_setting_then_the_config_version() {
        let v3 = containerd_cdi("version = 3\n").expect("valid");
        assert!(v3.enabled && !v3.explicit, "{v3:?}");
        assert_eq!(
            v3.dirs,
            [PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
        );
        let v2 = containerd_cdi("version = 2\n").expect("valid");
        assert!(!v2.enabled, "{v2:?}");
        let on = containerd_cdi(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nenable_cdi = true\ncdi_spec_dirs = [\"/opt/cdi\"]\n",
        )
        .expect("valid");
        assert!(on.enabled && on.explicit, "{on:?}");
        assert_eq!(on.dirs, [PathBuf::from("/opt/cdi")]);
        let off = containerd_cdi(
            "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\nenable_cdi = false\n",
        )
        .expect("valid");
        assert!(!off.enabled, "{off:?}");
        assert!(containerd_cdi("version = [").is_none());
    }

    #[test]
    fn engine_cdi_off_with_dirs_gpurun_does_not_read_is_a_problem() {
        let t = tempfile::tempdir().expect("tempdir");
        let file = t.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &file,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncdi_spec_dirs = [\"/opt/cdi\"]\n",
        )
        .expect("write");
        let cfg = Config::default();
        let c = &check_engine_cdi(t.path(), &cfg)[0];
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.detail.contains("/opt/cdi"), "{c:?}");
        std::fs::write(&file, "version = 3\n").expect("write");
        let c = &check_engine_cdi(t.path(), &cfg)[0];
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("applies CDI devices itself"), "{c:?}");
    }

    #[test]
    fn imex_channels_are_checked_against_their_major() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::default();
        cfg.nvidia.proc_root = t.path().to_path_buf();
        cfg.nvidia.dev_root = t.path().to_path_buf();
        std::fs::create_dir_all(t.path().join("proc")).expect("mkdir");
        let devices = t.path().join("proc/devices");
        std::fs::write(&devices, "Character devices:\n195 nvidia\n").expect("write");
        assert_eq!(check_imex(&cfg).status, Status::Skip);
        std::fs::write(
            &devices,
            "Character devices:\n195 nvidia\n234 nvidia-caps-imex-channels\n",
        )
        .expect("write");
        let c = check_imex(&cfg);
        assert_eq!(c.status, Status::Problem, "no channel node: {c:?}");
        if !nix::unistd::geteuid().is_root() {
            crate::skip::cannot_run(
                "imex_channels_are_checked_against_their_major",
                "needs root (mknod for the channel nodes)",
            );
            return;
        }
        let dir = t.path().join("dev/nvidia-caps-imex-channels");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mk = |name: &str, major: u64, minor: u64| {
            nix::sys::stat::mknod(
                &dir.join(name),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(major, minor),
            )
            .expect("mknod");
        };
        mk("channel0", 234, 0);
        let c = check_imex(&cfg);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("channel0"), "{c:?}");
        mk("channel1", 234, 7);
        let c = check_imex(&cfg);
        assert_eq!(c.status, Status::Problem, "a stale channel node: {c:?}");
        assert!(c.detail.contains("not 234:1"), "{c:?}");
    }
}
