//! `gpurun gpus --wait GPU [--timeout D]`: for scripts that queue jobs by hand. It polls
//! the host-wide lease table until no live container holds the GPU (a holder whose init
//! has gone does not count: the lease table drops it), which is when an exclusive request
//! for it would be granted.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::gpu::config::Config;
use crate::gpu::lease::{Lease, Leases};
use crate::gpu::request::{self, DeviceId};
use crate::gpu::Inventory;

use super::gpu_cells::clock;

/// How often the lease table is read again: a released GPU is seen within this.
const POLL: Duration = Duration::from_millis(200);

/// The GPUs `name` stands for, as (index, UUID): what `NVIDIA_VISIBLE_DEVICES` accepts,
/// a MIG device standing for its GPU.
fn target_gpus(inv: &Inventory, name: &str) -> Result<Vec<(u32, String)>> {
    let ids = request::parse_visible_devices(name)
        .map_err(|e| Error::Usage(format!("--wait {name}: {e}")))?;
    if ids.is_empty() || ids.iter().any(|i| matches!(i, DeviceId::Cdi(_))) {
        return Err(Error::Usage(format!(
            "--wait {name}: name a GPU by index, UUID, PCI address or MIG device"
        )));
    }
    let sel =
        request::resolve(&ids, inv).map_err(|e| Error::Usage(format!("--wait {name}: {e}")))?;
    Ok(sel.gpus.iter().map(|g| (g.index, g.uuid.clone())).collect())
}

/// Blocks until no live lease holds any GPU `name` stands for; after `timeout`, fails
/// naming each holder.
pub fn wait(cfg: &Config, inv: &Inventory, name: &str, timeout: Option<Duration>) -> Result<()> {
    let targets = target_gpus(inv, name)?;
    let table = Leases::for_node(cfg);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let leases = table.list()?;
        let held: Vec<(&(u32, String), &Lease)> = targets
            .iter()
            .flat_map(|t| {
                leases
                    .iter()
                    .filter(move |l| l.gpus.iter().any(|g| g.eq_ignore_ascii_case(&t.1)))
                    .map(move |l| (t, l))
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Other(still_held(&held, timeout.unwrap_or_default())));
        }
        std::thread::sleep(POLL);
    }
}

fn still_held(held: &[(&(u32, String), &Lease)], waited: Duration) -> String {
    let who: Vec<String> = held
        .iter()
        .map(|((index, uuid), l)| {
            let since = l.acquired.map_or_else(
                || "since unknown".to_string(),
                |t| format!("since {}", clock(t)),
            );
            format!(
                "GPU {index} ({uuid}) is held by container {} (root {}, pid {}, {since})",
                l.holder.container_id,
                l.holder.root.display(),
                l.holder.pid
            )
        })
        .collect();
    format!(
        "gpus --wait: timed out after {}: {}",
        super::gpu_cells::age(waited.as_secs()),
        who.join("; ")
    )
}
