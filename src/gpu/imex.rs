//! IMEX channels (`NVIDIA_IMEX_CHANNELS`, the device plugin's `imex/<n>` mounts): the
//! channel nodes a request names, on the driver's `nvidia-caps-imex-channels` major.

use std::path::Path;

use super::applied::Majors;
use super::inventory::DeviceNode;
use super::request::DeviceId;
use super::{GpuError, Roots};

/// Where IMEX channel nodes live, under the dev root and in the container.
pub const IMEX_DIR: &str = "/dev/nvidia-caps-imex-channels";

/// The nodes of the IMEX channels a request names, on the driver's
/// `nvidia-caps-imex-channels` major (minor = channel). A channel's host node, when there
/// is one, gives its mode and owner (and must be that channel); `all` is every channel
/// node the host has.
pub fn nodes(ids: &[DeviceId], roots: &Roots) -> Result<Vec<DeviceNode>, GpuError> {
    let wanted: Vec<&DeviceId> = ids
        .iter()
        .filter(|d| matches!(d, DeviceId::ImexChannel(_) | DeviceId::ImexAll))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(major) = Majors::read(&roots.proc)?.imex else {
        return Err(GpuError::Unsupported(
            "an IMEX channel was requested but /proc/devices has no nvidia-caps-imex-channels \
             major: the driver on this host has no IMEX channels"
                .into(),
        ));
    };
    let host_dir = roots.dev.join(&IMEX_DIR[1..]);
    let mut channels: Vec<u32> = Vec::new();
    for id in wanted {
        match id {
            DeviceId::ImexChannel(c) => channels.push(*c),
            _ => channels.extend(host_channels(&host_dir)?),
        }
    }
    channels.sort_unstable();
    channels.dedup();
    channels
        .into_iter()
        .map(|c| {
            super::discover::node(
                roots,
                &format!("{}/channel{c}", IMEX_DIR.trim_start_matches("/dev/")),
                major,
                c,
            )
        })
        .collect()
}

fn host_channels(dir: &Path) -> Result<Vec<u32>, GpuError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GpuError::io("listing", dir, e)),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("channel")?
                .parse()
                .ok()
        })
        .collect())
}
