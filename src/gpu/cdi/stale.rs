//! Every device of the NVIDIA CDI specs on this node, checked against the live driver as
//! a `create` would check it once an engine applied the device: for `gpurun doctor`, which
//! finds a stale spec before a job does.

use std::path::PathBuf;

use oci_spec::runtime::Spec;

use super::Registry;
use crate::gpu::editor::Editor;
use crate::gpu::{applied, GpuError, Roots};

/// One device of one spec that would fail.
#[derive(Debug)]
pub struct StaleDevice {
    pub file: PathBuf,
    /// `vendor/class=name`.
    pub device: String,
    pub error: GpuError,
}

/// Applies each device of every spec whose kind is NVIDIA's (vendor ending in
/// `nvidia.com`) to an empty spec, then runs the checks of an applied grant on it: host
/// nodes and their live numbers, capability minors, driver files.
pub fn check(registry: &Registry, roots: &Roots) -> Vec<StaleDevice> {
    let mut out = Vec::new();
    for (file, spec) in &registry.specs {
        let vendor = spec.kind.split('/').next().unwrap_or_default();
        if !vendor.ends_with("nvidia.com") {
            continue;
        }
        for d in &spec.devices {
            let device = format!("{}={}", spec.kind, d.name);
            if let Err(error) = check_device(registry, &device, roots, &file.display().to_string())
            {
                out.push(StaleDevice {
                    file: file.clone(),
                    device,
                    error,
                });
            }
        }
    }
    out
}

fn check_device(
    registry: &Registry,
    device: &str,
    roots: &Roots,
    origin: &str,
) -> Result<(), GpuError> {
    let mut spec = Spec::default();
    let mut ed = Editor::new(&mut spec);
    super::apply(&mut ed, registry, &[device.to_string()])?;
    applied::scan(&spec, roots)?;
    applied::check_mounts(spec.mounts().as_deref().unwrap_or_default(), roots, origin)
}
