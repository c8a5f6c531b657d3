//! A fake NVIDIA driver tree for tests and benchmarks (research §7.2): real tiny ELF
//! shared objects with real SONAMEs, a real ld.so.cache written by the host's ldconfig, a
//! fake `/proc/driver/nvidia`, `/proc/devices` (with an IMEX channel major), and device nodes (mknod as root,
//! placeholder files otherwise), and an `nvidia-smi` script answering like a real driver
//! ([`smi`]). Test support only: it runs `cc` and `ldconfig`.

pub mod engine_cdi;
pub mod nvidia_cdi;
pub mod smi;

pub use smi::FakeSmi;

use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fake driver version; the decoy library carries a lower one.
pub const VERSION: &str = "999.88.77";
pub const DECOY_VERSION: &str = "111.22.33";
pub const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";
/// The `nvidia-caps-imex-channels` major of the fake `/proc/devices`; the tree has the
/// node of channel 0 only.
pub const IMEX_MAJOR: u32 = 238;

/// How device nodes appear under the dev root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nodes {
    /// Real character devices (needs CAP_MKNOD).
    Mknod,
    /// Empty regular files standing in for the nodes.
    Placeholder,
    /// No `/dev` entries at all.
    Absent,
}

#[derive(Clone, Debug)]
pub struct FakeGpu {
    /// Directory name under `gpus/` (16-bit domain, as the driver writes it).
    pub bus: String,
    /// `Bus Location` inside the information file (may use a 32-bit domain).
    pub bus_location: String,
    pub uuid: String,
    pub minor: u32,
    pub model: String,
    /// Gives the GPU one MIG device (GI 1, CI 0, cap minors 12 and 13).
    pub mig: bool,
}

/// A built tree.
#[derive(Clone, Debug)]
pub struct FakeDriver {
    pub root: PathBuf,
    pub version: String,
    pub gpus: Vec<FakeGpu>,
    /// Whether `etc/ld.so.cache` was written.
    pub has_ldcache: bool,
}

impl FakeDriver {
    /// Two GPUs (minors 0 and 1; the second has a MIG device), a handful of libraries.
    pub fn two_gpus() -> FakeBuilder {
        FakeBuilder {
            gpus: vec![
                FakeGpu {
                    bus: "0000:3b:00.0".into(),
                    bus_location: "0000:3b:00.0".into(),
                    uuid: "GPU-00000000-0000-0000-0000-000000000000".into(),
                    minor: 0,
                    model: "NVIDIA Fake A100".into(),
                    mig: false,
                },
                FakeGpu {
                    bus: "0000:86:00.0".into(),
                    bus_location: "00000000:86:00.0".into(),
                    uuid: "GPU-11111111-1111-1111-1111-111111111111".into(),
                    minor: 1,
                    model: "NVIDIA Fake A100".into(),
                    mig: true,
                },
            ],
            libs: vec![
                ("libcuda.so", "libcuda.so.1"),
                ("libnvidia-ml.so", "libnvidia-ml.so.1"),
                (
                    "libnvidia-ptxjitcompiler.so",
                    "libnvidia-ptxjitcompiler.so.1",
                ),
                ("libnvcuvid.so", "libnvcuvid.so.1"),
                ("libGLX_nvidia.so", "libGLX_nvidia.so.0"),
            ],
            binaries: vec!["nvidia-smi", "nvidia-cuda-mps-control"],
            nodes: if nix::unistd::geteuid().is_root() {
                Nodes::Mknod
            } else {
                Nodes::Placeholder
            },
            ldcache: true,
            frontend_name: false,
            proc_version: true,
            sockets: true,
            smi: FakeSmi::Recorded,
        }
    }

    /// As large as a real driver's compute+utility+graphics+video set: every library of
    /// the capability table, all binaries, firmware.
    pub fn full() -> FakeBuilder {
        let mut b = Self::two_gpus();
        // The VDPAU driver lives only in `vdpau/`, which the builder always writes.
        b.libs = super::inventory::LIBRARIES
            .iter()
            .filter(|(p, _)| *p != "libvdpau_nvidia.so")
            .map(|(p, _)| {
                let soname: &'static str = match *p {
                    "libGLX_nvidia.so" | "libEGL_nvidia.so" => leak(format!("{p}.0")),
                    "libGLESv2_nvidia.so" => leak(format!("{p}.2")),
                    _ => leak(format!("{p}.1")),
                };
                (*p, soname)
            })
            .collect();
        b.binaries = super::inventory::BINARIES.iter().map(|(n, _)| *n).collect();
        b
    }

    /// `/proc/driver/nvidia/gpus/<bus>` of GPU `minor` in this tree.
    pub fn proc_gpu_dir(&self, minor: u32) -> Option<PathBuf> {
        let g = self.gpus.iter().find(|g| g.minor == minor)?;
        Some(self.root.join("proc/driver/nvidia/gpus").join(&g.bus))
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Options for a fake tree.
#[derive(Clone, Debug)]
pub struct FakeBuilder {
    pub gpus: Vec<FakeGpu>,
    /// (table prefix, SONAME); the real file is `<prefix>.<VERSION>`.
    pub libs: Vec<(&'static str, &'static str)>,
    pub binaries: Vec<&'static str>,
    pub nodes: Nodes,
    pub ldcache: bool,
    /// Name the 195 major `nvidia-frontend` (drivers before 550.40).
    pub frontend_name: bool,
    pub proc_version: bool,
    pub sockets: bool,
    /// How `usr/bin/nvidia-smi` (when in `binaries`) behaves.
    pub smi: FakeSmi,
}

impl FakeBuilder {
    pub fn nodes(mut self, n: Nodes) -> Self {
        self.nodes = n;
        self
    }
    pub fn ldcache(mut self, on: bool) -> Self {
        self.ldcache = on;
        self
    }
    pub fn frontend_name(mut self) -> Self {
        self.frontend_name = true;
        self
    }
    pub fn without_proc_version(mut self) -> Self {
        self.proc_version = false;
        self
    }
    pub fn smi(mut self, smi: FakeSmi) -> Self {
        self.smi = smi;
        self
    }

    /// Builds the tree under `root` (which should be an empty directory).
    pub fn build(self, root: &Path) -> io::Result<FakeDriver> {
        let lib = root.join(LIB_DIR);
        mkdirs(&[
            &lib.join("vdpau"),
            &root.join("etc"),
            &root.join("usr/bin"),
            &root.join("lib/firmware/nvidia").join(VERSION),
        ])?;
        let obj = compile_object(root)?;
        for (prefix, soname) in &self.libs {
            let real = format!("{prefix}.{VERSION}");
            link_shared(&obj, soname, &lib.join(&real))?;
            symlink(&real, lib.join(soname))?;
        }
        link_shared(
            &obj,
            "libvdpau_nvidia.so.1",
            &lib.join(format!("vdpau/libvdpau_nvidia.so.{VERSION}")),
        )?;
        symlink(
            format!("libvdpau_nvidia.so.{VERSION}"),
            lib.join("vdpau/libvdpau_nvidia.so.1"),
        )?;
        // A leftover older driver: the version filter must reject it.
        link_shared(
            &obj,
            "libcuda.so.1",
            &lib.join(format!("libcuda.so.{DECOY_VERSION}")),
        )?;
        std::fs::remove_file(&obj)?;
        std::fs::write(root.join("etc/ld.so.conf"), format!("/{LIB_DIR}\n"))?;
        let has_ldcache = self.ldcache && run_ldconfig(root);

        for b in &self.binaries {
            let p = root.join("usr/bin").join(b);
            let text = match *b {
                "nvidia-smi" => smi::script(root, &self.gpus, VERSION, &self.smi),
                _ => format!("#!/bin/sh\necho fake-{b}\n"),
            };
            std::fs::write(&p, text)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        let fw = root.join("lib/firmware/nvidia").join(VERSION);
        std::fs::write(fw.join("gsp_ga10x.bin"), "GSP")?;
        std::fs::write(fw.join("gsp_tu10x.bin"), "GSP")?;
        if self.sockets {
            let dir = root.join("run/nvidia-persistenced");
            std::fs::create_dir_all(&dir)?;
            // Binding leaves the socket file behind when the listener is dropped.
            drop(std::os::unix::net::UnixListener::bind(dir.join("socket"))?);
        }
        self.write_proc(root)?;
        self.write_dev(root)?;
        Ok(FakeDriver {
            root: root.to_path_buf(),
            version: VERSION.to_string(),
            gpus: self.gpus,
            has_ldcache,
        })
    }

    fn write_proc(&self, root: &Path) -> io::Result<()> {
        let p = root.join("proc/driver/nvidia");
        mkdirs(&[&p.join("gpus"), &root.join("proc/driver/nvidia-caps")])?;
        if self.proc_version {
            std::fs::write(
                p.join("version"),
                format!("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {VERSION}  Release Build  (ci@fake)\nGCC version:  gcc version 12.2.0\n"),
            )?;
        }
        std::fs::write(
            p.join("params"),
            "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileGID: 0\nDeviceFileMode: 438\n",
        )?;
        std::fs::write(p.join("registry"), "Binary: \"\"\n")?;
        let mut minors = String::from("config 1\nmonitor 2\n");
        for g in &self.gpus {
            let d = p.join("gpus").join(&g.bus);
            std::fs::create_dir_all(&d)?;
            std::fs::write(
                d.join("information"),
                format!(
                    "Model: \t\t {}\nIRQ:   \t\t 140\nGPU UUID: \t\t {}\nVideo BIOS: \t\t ??.??.??.??.??\nBus Type: \t\t PCIe\nDMA Size: \t\t 47 bits\nDMA Mask: \t\t 0x7fffffffffff\nBus Location: \t\t {}\nDevice Minor: \t\t {}\nGPU Excluded:\t\t No\n",
                    g.model, g.uuid, g.bus_location, g.minor
                ),
            )?;
            if g.mig {
                let gi = p.join(format!("capabilities/gpu{}/mig/gi1", g.minor));
                std::fs::create_dir_all(gi.join("ci0"))?;
                std::fs::write(
                    gi.join("access"),
                    "DeviceFileMinor: 12\nDeviceFileMode: 292\n",
                )?;
                std::fs::write(
                    gi.join("ci0/access"),
                    "DeviceFileMinor: 13\nDeviceFileMode: 292\n",
                )?;
                minors.push_str(&format!(
                    "gpu{m}/gi1/access 12\ngpu{m}/gi1/ci0/access 13\n",
                    m = g.minor
                ));
            }
        }
        std::fs::create_dir_all(p.join("capabilities/mig"))?;
        std::fs::write(root.join("proc/driver/nvidia-caps/mig-minors"), minors)?;
        let ctl = if self.frontend_name {
            "nvidia-frontend"
        } else {
            "nvidia"
        };
        std::fs::write(
            root.join("proc/devices"),
            format!("Character devices:\n  1 mem\n  4 /dev/vc/0\n195 {ctl}\n236 nvidia-caps\n237 nvidia-uvm\n{IMEX_MAJOR} nvidia-caps-imex-channels\n\nBlock devices:\n  7 loop\n"),
        )
    }

    fn write_dev(&self, root: &Path) -> io::Result<()> {
        if self.nodes == Nodes::Absent {
            return Ok(());
        }
        let d = root.join("dev");
        mkdirs(&[&d.join("nvidia-caps"), &d.join("nvidia-caps-imex-channels")])?;
        let mut nodes: Vec<(String, u32, u32)> = vec![
            ("nvidiactl".into(), 195, 255),
            ("nvidia-modeset".into(), 195, 254),
            ("nvidia-uvm".into(), 237, 0),
            ("nvidia-uvm-tools".into(), 237, 1),
        ];
        for g in &self.gpus {
            nodes.push((format!("nvidia{}", g.minor), 195, g.minor));
        }
        nodes.push(("nvidia-caps-imex-channels/channel0".into(), IMEX_MAJOR, 0));
        if self.gpus.iter().any(|g| g.mig) {
            nodes.push(("nvidia-caps/nvidia-cap12".into(), 236, 12));
            nodes.push(("nvidia-caps/nvidia-cap13".into(), 236, 13));
        }
        for (name, major, minor) in nodes {
            let p = d.join(&name);
            match self.nodes {
                Nodes::Mknod => {
                    nix::sys::stat::mknod(
                        &p,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::from_bits_truncate(0o666),
                        nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                    )
                    .map_err(io::Error::from)?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))?;
                }
                Nodes::Placeholder => {
                    std::fs::write(&p, "")?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))?;
                }
                Nodes::Absent => {}
            }
        }
        Ok(())
    }
}

fn mkdirs(dirs: &[&Path]) -> io::Result<()> {
    dirs.iter().try_for_each(std::fs::create_dir_all)
}

/// A tool run with a fixed, minimal environment.
fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C");
    c
}

fn run(mut c: Command, what: &str) -> io::Result<()> {
    let out = c.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn compile_object(root: &Path) -> io::Result<PathBuf> {
    let src = root.join("fake-driver.c");
    let obj = root.join("fake-driver.o");
    std::fs::write(&src, "int gpurun_fake_driver_symbol(void) { return 0; }\n")?;
    let mut c = tool("cc");
    c.args(["-c", "-fPIC", "-o"]).arg(&obj).arg(&src);
    run(c, "cc -c")?;
    std::fs::remove_file(&src)?;
    Ok(obj)
}

fn link_shared(obj: &Path, soname: &str, out: &Path) -> io::Result<()> {
    let mut c = tool("cc");
    c.args([
        "-shared",
        "-nostdlib",
        &format!("-Wl,-soname,{soname}"),
        "-o",
    ])
    .arg(out)
    .arg(obj);
    run(c, "cc -shared")
}

/// `ldconfig -r <root>` chroots, so it needs root; without root it runs in a user
/// namespace where the caller is root. Returns whether a cache was written.
fn run_ldconfig(root: &Path) -> bool {
    let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ldconfig");
    let mut c = if nix::unistd::geteuid().is_root() {
        tool(ldconfig)
    } else {
        let mut u = tool("unshare");
        u.args(["-r", ldconfig]);
        u
    };
    c.arg("-r").arg(root);
    run(c, "ldconfig").is_ok() && root.join("etc/ld.so.cache").exists()
}

/// A minimal container spec with `env`, privileged (CAP_SYS_ADMIN in the bounding set) or
/// not, and `annotations`.
pub fn spec(
    env: &[&str],
    privileged: bool,
    annotations: &[(&str, &str)],
) -> oci_spec::runtime::Spec {
    let caps: Vec<&str> = if privileged {
        vec!["CAP_CHOWN", "CAP_SYS_ADMIN"]
    } else {
        vec!["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
    };
    let env: Vec<String> = std::iter::once("PATH=/usr/bin:/bin")
        .chain(env.iter().copied())
        .map(str::to_string)
        .collect();
    let annotations: std::collections::HashMap<&str, &str> = annotations.iter().copied().collect();
    let json = serde_json::json!({
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "cwd": "/",
            "env": env,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
        },
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "annotations": annotations,
        "linux": {"namespaces": [{"type": "mount"}]}
    });
    serde_json::from_value(json).expect("the literal above is a valid spec")
}

/// A rootfs that looks Debian-like (`/usr/lib/x86_64-linux-gnu` exists) or RHEL-like.
pub fn rootfs(dir: &Path, debian_like: bool) -> io::Result<PathBuf> {
    let r = dir.join("rootfs");
    std::fs::create_dir_all(r.join("usr/bin"))?;
    if debian_like {
        std::fs::create_dir_all(r.join(LIB_DIR))?;
    } else {
        std::fs::create_dir_all(r.join("usr/lib64"))?;
    }
    Ok(r)
}

/// The configuration that points gpurun at a fake tree under `root` (driver, `/dev` and
/// `/proc` all there) with its host-wide state in `state`.
pub fn config(root: &Path, state: &Path) -> crate::gpu::config::Config {
    let mut cfg = crate::gpu::config::Config::default();
    cfg.nvidia.driver_root = root.to_path_buf();
    cfg.nvidia.dev_root = root.to_path_buf();
    cfg.nvidia.proc_root = root.to_path_buf();
    cfg.gpus.state_dir = state.to_path_buf();
    cfg
}
