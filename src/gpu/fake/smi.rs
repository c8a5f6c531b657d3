//! The fake tree's `nvidia-smi`: a shell script that answers the queries gpurun makes with
//! output in the shapes a real driver prints (an A100 node, the second GPU in MIG mode),
//! and records each call, so tests can see whether and how it ran:
//! `<root>/nvidia-smi.calls` (one line of arguments per run), `<root>/nvidia-smi.env`
//! (the environment of the last run), `<root>/nvidia-smi.pid` (its pid). What
//! `--query-compute-apps` prints is read from `<root>/nvidia-smi.compute-apps`, which a
//! test may write.

use std::fmt::Write as _;
use std::path::Path;

use super::FakeGpu;

pub const CALLS: &str = "nvidia-smi.calls";
pub const ENV: &str = "nvidia-smi.env";
pub const PID: &str = "nvidia-smi.pid";
pub const COMPUTE_APPS: &str = "nvidia-smi.compute-apps";

/// What the recorded answers say.
pub const CUDA_VERSION: &str = "12.8";
pub const COMPUTE_CAP: &str = "8.0";
pub const BRAND: &str = "NVIDIA";
/// The MIG device of a MIG-enabled fake GPU (GI 1, CI 0, NVML index 0).
pub const MIG_UUID: &str = "MIG-5c3f0b1e-7d2a-5e44-9b8c-2a6f1d3e4b5c";

/// How the fake nvidia-smi behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeSmi {
    /// Answers `-q -x`, `-L` and the `--query-*` gpurun uses, like a current driver.
    Recorded,
    /// Like a driver from before R470: `compute_cap` is "not a valid field", MIG UUIDs
    /// have the old `MIG-GPU-<uuid>/<gi>/<ci>` form, brand `Tesla`.
    OldDriver,
    /// Never answers (a hung driver): sleeps in place of the shell.
    Hangs,
    /// Fails as nvidia-smi does when it cannot reach the driver.
    Fails,
    /// Prints `fake-nvidia-smi` whatever it is asked.
    Echo,
    /// The given shell commands, after the call is recorded.
    Script(String),
}

/// The script for `root`'s tree.
pub fn script(root: &Path, gpus: &[FakeGpu], version: &str, kind: &FakeSmi) -> String {
    let at = |name: &str| shell_quote(&root.join(name).to_string_lossy());
    let mut s = format!(
        "#!/bin/sh\n\
         # Inside a container the host paths below do not exist: ignore that.\n\
         echo \"$*\" >> {calls} 2>/dev/null\n\
         env > {env} 2>/dev/null\n\
         echo $$ > {pid} 2>/dev/null\n",
        calls = at(CALLS),
        env = at(ENV),
        pid = at(PID),
    );
    let old = *kind == FakeSmi::OldDriver;
    match kind {
        FakeSmi::Recorded | FakeSmi::OldDriver => {
            let caps = if old {
                "  echo 'Field \"compute_cap\" is not a valid field to query.' >&2; exit 2 ;;\n"
                    .to_string()
            } else {
                heredoc(&compute_caps(gpus))
            };
            let _ = write!(
                s,
                "case \"$*\" in\n\
                 \"-q -x\")\n{q}\
                 \"-L\")\n{l}\
                 \"--query-gpu=uuid,compute_cap --format=csv,noheader\")\n{caps}\
                 \"--query-gpu=uuid,memory.used,memory.total --format=csv,noheader,nounits\")\n{m}\
                 \"--query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits\")\n\
                 \x20 cat {apps} 2>/dev/null; exit 0 ;;\n\
                 *) echo 'Invalid combination of input arguments. Please run '\\''nvidia-smi -h'\\'' for help.' >&2; exit 2 ;;\n\
                 esac\n",
                q = heredoc(&query_xml(gpus, version, old)),
                l = heredoc(&list(gpus, old)),
                m = heredoc(&memory(gpus)),
                apps = at(COMPUTE_APPS),
            );
        }
        FakeSmi::Hangs => s.push_str("exec sleep 600\n"),
        FakeSmi::Fails => s.push_str(
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. \
             Make sure that the latest NVIDIA driver is installed and running.\"\nexit 9\n",
        ),
        FakeSmi::Echo => s.push_str("echo fake-nvidia-smi\n"),
        FakeSmi::Script(body) => {
            s.push_str(body);
            s.push('\n');
        }
    }
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn heredoc(text: &str) -> String {
    format!("  cat <<'FAKE_SMI_END'\n{text}FAKE_SMI_END\n  exit 0 ;;\n")
}

/// `00000000:3B:00.0`, as NVML writes bus ids.
fn nvml_bus(g: &FakeGpu) -> String {
    let b = g.bus.rsplit(':').collect::<Vec<_>>();
    match b.as_slice() {
        [devfn, bus, ..] => format!("00000000:{}:{}", bus.to_uppercase(), devfn.to_uppercase()),
        _ => g.bus.clone(),
    }
}

/// `nvidia-smi -q -x`, trimmed to the elements around the ones gpurun reads but keeping the
/// shape: DOCTYPE, nesting, `N/A` values, a process list.
pub fn query_xml(gpus: &[FakeGpu], version: &str, old: bool) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" ?>\n\
         <!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v12.dtd\">\n\
         <nvidia_smi_log>\n\
         \t<timestamp>Tue Mar  4 10:12:31 2025</timestamp>\n\
         \t<driver_version>{version}</driver_version>\n\
         \t<cuda_version>{CUDA_VERSION}</cuda_version>\n\
         \t<attached_gpus>{}</attached_gpus>\n",
        gpus.len()
    );
    let brand = if old { "Tesla" } else { BRAND };
    for g in gpus {
        let (mode, devices) = if g.mig {
            (
                "Enabled",
                "\t\t\t<mig_device>\n\
                 \t\t\t\t<index>0</index>\n\
                 \t\t\t\t<gpu_instance_id>1</gpu_instance_id>\n\
                 \t\t\t\t<compute_instance_id>0</compute_instance_id>\n\
                 \t\t\t\t<device_attributes>\n\
                 \t\t\t\t\t<shared>\n\
                 \t\t\t\t\t\t<multiprocessor_count>14</multiprocessor_count>\n\
                 \t\t\t\t\t\t<copy_engine_count>1</copy_engine_count>\n\
                 \t\t\t\t\t</shared>\n\
                 \t\t\t\t</device_attributes>\n\
                 \t\t\t\t<fb_memory_usage>\n\
                 \t\t\t\t\t<total>4864 MiB</total>\n\
                 \t\t\t\t\t<used>13 MiB</used>\n\
                 \t\t\t\t\t<free>4851 MiB</free>\n\
                 \t\t\t\t</fb_memory_usage>\n\
                 \t\t\t</mig_device>\n"
                    .to_string(),
            )
        } else {
            ("Disabled", "\t\t\tNone\n".to_string())
        };
        let _ = write!(
            x,
            "\t<gpu id=\"{bus}\">\n\
             \t\t<product_name>{model}</product_name>\n\
             \t\t<product_brand>{brand}</product_brand>\n\
             \t\t<product_architecture>Ampere</product_architecture>\n\
             \t\t<display_mode>Disabled</display_mode>\n\
             \t\t<persistence_mode>Enabled</persistence_mode>\n\
             \t\t<mig_mode>\n\
             \t\t\t<current_mig>{mode}</current_mig>\n\
             \t\t\t<pending_mig>{mode}</pending_mig>\n\
             \t\t</mig_mode>\n\
             \t\t<mig_devices>\n{devices}\t\t</mig_devices>\n\
             \t\t<accounting_mode>Disabled</accounting_mode>\n\
             \t\t<serial>1562720000000</serial>\n\
             \t\t<uuid>{uuid}</uuid>\n\
             \t\t<minor_number>{minor}</minor_number>\n\
             \t\t<vbios_version>92.00.45.00.03</vbios_version>\n\
             \t\t<pci>\n\
             \t\t\t<pci_bus>{busnum}</pci_bus>\n\
             \t\t\t<pci_bus_id>{bus}</pci_bus_id>\n\
             \t\t\t<pci_sub_system_id>145F10DE</pci_sub_system_id>\n\
             \t\t</pci>\n\
             \t\t<fb_memory_usage>\n\
             \t\t\t<total>40960 MiB</total>\n\
             \t\t\t<reserved>571 MiB</reserved>\n\
             \t\t\t<used>{used}</used>\n\
             \t\t\t<free>40388 MiB</free>\n\
             \t\t</fb_memory_usage>\n\
             \t\t<compute_mode>Default</compute_mode>\n\
             \t\t<temperature>\n\
             \t\t\t<gpu_temp>31 C</gpu_temp>\n\
             \t\t\t<memory_temp>N/A</memory_temp>\n\
             \t\t</temperature>\n\
             \t\t<processes>\n\
             \t\t</processes>\n\
             \t\t<accounted_processes>\n\
             \t\t</accounted_processes>\n\
             \t</gpu>\n\n",
            bus = nvml_bus(g),
            busnum = nvml_bus(g).split(':').nth(1).unwrap_or("00"),
            model = g.model,
            uuid = g.uuid,
            minor = g.minor,
            used = if g.mig { "N/A" } else { "1 MiB" },
        );
    }
    x.push_str("</nvidia_smi_log>\n");
    x
}

/// `nvidia-smi -L`.
pub fn list(gpus: &[FakeGpu], old: bool) -> String {
    let mut out = String::new();
    for (i, g) in gpus.iter().enumerate() {
        let _ = writeln!(out, "GPU {i}: {} (UUID: {})", g.model, g.uuid);
        if g.mig {
            let uuid = if old {
                format!("MIG-{}/1/0", g.uuid)
            } else {
                MIG_UUID.to_string()
            };
            let _ = writeln!(out, "  MIG 1g.5gb      Device  0: (UUID: {uuid})");
        }
    }
    out
}

fn compute_caps(gpus: &[FakeGpu]) -> String {
    gpus.iter()
        .map(|g| format!("{}, {COMPUTE_CAP}\n", g.uuid))
        .collect()
}

fn memory(gpus: &[FakeGpu]) -> String {
    gpus.iter()
        .map(|g| {
            let used = if g.mig { "[N/A]" } else { "1" };
            format!("{}, {used}, 40960\n", g.uuid)
        })
        .collect()
}
