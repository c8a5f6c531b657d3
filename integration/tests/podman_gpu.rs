//! Podman as Debian 12 ships it (4.3.1) applies a CDI device itself
//! (`--device nvidia.com/gpu=0`, from `/etc/cdi` and `/var/run/cdi` only) and hands gpurun
//! the edited config.json: the GPU must still be a grant, with its lease, its holder in
//! `gpurun gpus` and an exclusive conflict refused naming the first holder; NVIDIA's hook
//! in the spec is never executed.
//!
//! The spec is `gpurun cdi generate` on the fake two-GPU tree plus the createContainer
//! hook `nvidia-ctk cdi generate` adds, written for CDI 0.5.0 (`--cdi-version 0.5.0`: Podman
//! 4.3 reads nothing newer, and no `additionalGids`); it goes to `/etc/cdi` under a unique name and is
//! removed afterwards. Podman passes no environment to the runtime, so a wrapper named
//! `gpurun` points it at the fake tree's configuration.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpurun_integration::fakegpu::{FakeGpus, GPU0};
use gpurun_integration::podman::Podman;
use gpurun_integration::{can_run, image, run, serial, unique, Ran};

const T: Duration = Duration::from_secs(180);
const CDI_DIR: &str = "/etc/cdi";

/// A spec file in `/etc/cdi` for as long as the test runs; the directory too, when the
/// test made it.
struct SpecFile {
    path: PathBuf,
    made_dir: bool,
}

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.made_dir {
            let _ = std::fs::remove_dir(CDI_DIR);
        }
    }
}

struct Setup {
    podman: Podman,
    wrapper: PathBuf,
    config: PathBuf,
    state: PathBuf,
    hook_ran: PathBuf,
    _spec: SpecFile,
    _gpus: FakeGpus,
    files: tempfile::TempDir,
}

fn gpurun_with(config: &Path, args: &[&str]) -> Ran {
    let mut c = std::process::Command::new(gpurun_integration::gpurun_bin());
    c.env("GPURUN_CONFIG", config).args(args);
    run(&mut c, T)
}

fn setup() -> Option<Setup> {
    if !can_run(&["podman", "conmon", "cc", "ldconfig"]) {
        return None;
    }
    let gpus = FakeGpus::build();
    let files = tempfile::tempdir().unwrap();
    image::busybox_rootfs(&files.path().join("rootfs")).unwrap();
    let state = files.path().join("gpu-state");
    let config = files.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}[gpus]\nstate-dir = {:?}\n[journal]\ndir = {:?}\n",
            gpus.gpurun_toml(),
            state.display().to_string(),
            files.path().join("journal").display().to_string()
        ),
    )
    .unwrap();

    // NVIDIA's hook, as `nvidia-ctk cdi generate` lists it: it must never run.
    let hook_ran = files.path().join("nvidia-cdi-hook.ran");
    let hook = files.path().join("bin/nvidia-cdi-hook");
    let wrapper = files.path().join("runtime/gpurun");
    for (path, text) in [
        (
            &hook,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", hook_ran.display()),
        ),
        (
            &wrapper,
            format!(
                "#!/bin/sh\nGPURUN_CONFIG={} exec {} \"$@\"\n",
                config.display(),
                gpurun_integration::gpurun_bin().display()
            ),
        ),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let generated = gpurun_with(
        &config,
        &[
            "cdi",
            "generate",
            "--format",
            "json",
            "--cdi-version",
            "0.5.0",
        ],
    )
    .expect_ok("gpurun cdi generate");
    let mut spec: serde_json::Value = serde_json::from_str(&generated.stdout).unwrap();
    spec["containerEdits"]["hooks"] = serde_json::json!([{
        "hookName": "createContainer",
        "path": hook,
        "args": ["nvidia-cdi-hook", "create-symlinks", "--link", "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"],
        "env": ["NVIDIA_CTK_DEBUG=false"],
    }]);
    let made_dir = !Path::new(CDI_DIR).exists();
    std::fs::create_dir_all(CDI_DIR).unwrap();
    let path = Path::new(CDI_DIR).join(format!("{}.json", unique("gpurun-it-podman")));
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    Some(Setup {
        podman: Podman::new(),
        wrapper,
        config,
        state,
        hook_ran,
        _spec: SpecFile { path, made_dir },
        _gpus: gpus,
        files,
    })
}

impl Setup {
    fn podman(&self, args: &[&str]) -> Ran {
        let mut c = self
            .podman
            .cmd_with(&self.podman.conf, &self.wrapper.to_string_lossy());
        run(c.args(args), T)
    }

    fn gpu_run<'a>(&'a self, rootfs: &'a str, extra: &[&'a str], script: &'a str) -> Vec<&'a str> {
        let mut a = vec![
            "run",
            "--network",
            "host",
            "--cgroup-parent",
            &self.podman.parent,
            "--device",
            "nvidia.com/gpu=0",
        ];
        a.extend_from_slice(extra);
        a.extend(["--rootfs", rootfs, "sh", "-c", script]);
        a
    }

    fn holders(&self) -> Vec<String> {
        let out = gpurun_with(&self.config, &["gpus", "--format", "json"]).expect_ok("gpurun gpus");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v[0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["id"].as_str().map(str::to_string))
            .collect()
    }
}

#[test]
fn podman_applied_cdi_gpu_is_a_lease_and_an_exclusive_second_is_refused() {
    let _g = serial();
    let Some(s) = setup() else { return };
    let rootfs = s.files.path().join("rootfs");
    let rootfs = rootfs.to_str().unwrap();

    // What the container sees: GPU 0's node, not GPU 1's, and only GPU 0 in procfs.
    let script = "ls /dev; ls /proc/driver/nvidia/gpus";
    let r = s.podman(&s.gpu_run(rootfs, &["--rm"], script));
    assert_eq!(r.code, Some(0), "{r:#?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.contains(&"nvidia0"), "{r:#?}");
    assert!(!lines.contains(&"nvidia1"), "{r:#?}");
    assert!(lines.contains(&"0000:3b:00.0"), "{r:#?}");
    assert!(!lines.contains(&"0000:86:00.0"), "{r:#?}");
    assert!(s.holders().is_empty(), "the lease went with the container");

    // An exclusive holder, then a second exclusive request for the same GPU.
    let first = unique("gpu-a");
    let excl = ["--annotation", "gpurun.dev/gpu-sharing=exclusive"];
    let mut extra = vec!["-d", "--name", first.as_str()];
    extra.extend(excl);
    let r = s.podman(&s.gpu_run(rootfs, &extra, "sleep 120"));
    assert_eq!(r.code, Some(0), "{r:#?}");
    let first_id = r.stdout.trim().to_string();
    assert_eq!(
        s.holders(),
        std::slice::from_ref(&first_id),
        "its lease, held by podman's id"
    );
    let table = gpurun_with(&s.config, &["gpus"]).expect_ok("gpurun gpus");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(GPU0) && l.contains(&first_id[..12])),
        "{table:#?}"
    );

    let mut extra = vec!["--rm"];
    extra.extend(excl);
    let r = s.podman(&s.gpu_run(rootfs, &extra, "true"));
    assert_ne!(
        r.code,
        Some(0),
        "a second exclusive holder was admitted: {r:#?}"
    );
    assert!(
        r.stderr.contains(&first_id),
        "the refusal names the first holder: {r:#?}"
    );
    s.podman(&["rm", "--force", "--time", "0", &first])
        .expect_ok("podman rm");
    assert!(
        s.holders().is_empty(),
        "removing the container released its lease"
    );
    assert!(
        !s.hook_ran.exists(),
        "NVIDIA's hook was executed: {:?}",
        std::fs::read_to_string(&s.hook_ran)
    );
    assert!(
        s.state.is_dir(),
        "the GPU state went where the node config says"
    );
}
