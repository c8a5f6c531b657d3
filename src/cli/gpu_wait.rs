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

/// `30s`, `5m`, `1h`, `1h30m`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (30s, 5m, 1h, 1h30m, 500ms)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let tail = &rest[digits..];
        let unit = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let part = match &tail[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &tail[unit..];
    }
    Ok(total)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        let d = |s| parse_duration(s).ok();
        assert_eq!(d("30s"), Some(Duration::from_secs(30)));
        assert_eq!(d("5m"), Some(Duration::from_secs(300)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("90"), Some(Duration::from_secs(90)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in ["", "s", "5x", "1.5h", "-1s", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
