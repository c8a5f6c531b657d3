//! `linux.resources.blockIO`: weights and throttles, in the v1 `blkio` files or the v2 `io`
//! files, whichever hierarchy holds the controller.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice, LinuxWeightDevice};

use super::convert::blkio_weight_to_io_weight;
use super::error::CgroupError;
use super::fs;
use super::target::{Place, Target};

/// One throttle list: its key in v2's `io.max`, its v1 file, and the devices.
struct Throttle<'a> {
    key: &'static str,
    v1_file: &'static str,
    devices: &'a [LinuxThrottleDevice],
}

/// The parts of a `blockIO` that ask for something: zero weights mean "unset", as in runc.
struct Wanted<'a> {
    weight: Option<u16>,
    leaf_weight: Option<u16>,
    devices: &'a [LinuxWeightDevice],
    throttles: [Throttle<'a>; 4],
    /// Some leaf weight is asked for, on the cgroup or on a device.
    leaf: bool,
}

impl<'a> Wanted<'a> {
    fn of(b: &'a LinuxBlockIo) -> Self {
        let devices = b.weight_device().as_deref().unwrap_or_default();
        let leaf_weight = b.leaf_weight().filter(|&w| w != 0);
        let throttle = |key, v1_file, list: &'a Option<Vec<LinuxThrottleDevice>>| Throttle {
            key,
            v1_file,
            devices: list.as_deref().unwrap_or_default(),
        };
        Wanted {
            weight: b.weight().filter(|&w| w != 0),
            leaf_weight,
            devices,
            throttles: [
                throttle(
                    "rbps",
                    "blkio.throttle.read_bps_device",
                    b.throttle_read_bps_device(),
                ),
                throttle(
                    "wbps",
                    "blkio.throttle.write_bps_device",
                    b.throttle_write_bps_device(),
                ),
                throttle(
                    "riops",
                    "blkio.throttle.read_iops_device",
                    b.throttle_read_iops_device(),
                ),
                throttle(
                    "wiops",
                    "blkio.throttle.write_iops_device",
                    b.throttle_write_iops_device(),
                ),
            ],
            leaf: leaf_weight.is_some() || devices.iter().any(|d| d.leaf_weight().is_some()),
        }
    }

    fn is_empty(&self) -> bool {
        self.weight.is_none()
            && self.devices.is_empty()
            && self.throttles.iter().all(|t| t.devices.is_empty())
            && !self.leaf
    }
}

pub(crate) fn block_io(
    t: &Target<'_>,
    b: &LinuxBlockIo,
    warnings: &mut Vec<String>,
) -> Result<(), CgroupError> {
    let w = Wanted::of(b);
    if w.is_empty() {
        return Ok(());
    }
    match t.require("blkio", "io")? {
        Place::V1(dir) => {
            weights_v1(dir, &w)?;
            leaf_weights_v1(dir, &w, warnings)?;
            throttles_v1(dir, &w)
        }
        Place::V2(dir) => {
            weights_v2(dir, &w)?;
            if w.leaf {
                warnings.push(
                    "linux.resources.blockIO leafWeight not applied: cgroup v2 has no leaf weight"
                        .to_string(),
                );
            }
            throttles_v2(dir, &w)
        }
    }
}

fn weights_v1(dir: &Path, w: &Wanted<'_>) -> Result<(), CgroupError> {
    // BFQ's knobs replaced CFQ's (removed in Linux 5.0); use whichever exists.
    let (w_file, wd_file) = if fs::exists(dir, "blkio.weight") {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(weight) = w.weight {
        fs::write(dir, w_file, &weight.to_string())?;
    }
    for d in w.devices {
        if let Some(weight) = d.weight() {
            fs::write(
                dir,
                wd_file,
                &format!("{}:{} {weight}", d.major(), d.minor()),
            )?;
        }
    }
    Ok(())
}

fn leaf_weights_v1(
    dir: &Path,
    w: &Wanted<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), CgroupError> {
    if !w.leaf {
        return Ok(());
    }
    if !fs::exists(dir, "blkio.leaf_weight") {
        warnings.push(format!(
            "linux.resources.blockIO leafWeight not applied: {} does not exist \
             (the CFQ scheduler is gone since Linux 5.0)",
            dir.join("blkio.leaf_weight").display()
        ));
        return Ok(());
    }
    if let Some(weight) = w.leaf_weight {
        fs::write(dir, "blkio.leaf_weight", &weight.to_string())?;
    }
    for d in w.devices {
        if let Some(weight) = d.leaf_weight() {
            let line = format!("{}:{} {weight}", d.major(), d.minor());
            fs::write(dir, "blkio.leaf_weight_device", &line)?;
        }
    }
    Ok(())
}

fn throttles_v1(dir: &Path, w: &Wanted<'_>) -> Result<(), CgroupError> {
    for t in &w.throttles {
        for d in t.devices {
            let line = format!("{}:{} {}", d.major(), d.minor(), d.rate());
            fs::write(dir, t.v1_file, &line)?;
        }
    }
    Ok(())
}

/// v2 weights: BFQ's `io.bfq.weight` takes the v1 scale as it is; `io.weight` needs it
/// converted.
fn weights_v2(dir: &Path, w: &Wanted<'_>) -> Result<(), CgroupError> {
    let bfq = fs::exists(dir, "io.bfq.weight");
    if let Some(weight) = w.weight {
        if bfq {
            fs::write(dir, "io.bfq.weight", &weight.to_string())?;
        } else {
            let v2 = blkio_weight_to_io_weight(weight);
            fs::write(dir, "io.weight", &v2.to_string())?;
        }
    }
    for d in w.devices {
        if let Some(weight) = d.weight() {
            let (file, v) = if bfq {
                ("io.bfq.weight", u64::from(weight))
            } else {
                ("io.weight", blkio_weight_to_io_weight(weight))
            };
            fs::write(dir, file, &format!("{}:{} {v}", d.major(), d.minor()))?;
        }
    }
    Ok(())
}

fn throttles_v2(dir: &Path, w: &Wanted<'_>) -> Result<(), CgroupError> {
    for t in &w.throttles {
        for d in t.devices {
            let line = format!("{}:{} {}={}", d.major(), d.minor(), t.key, d.rate());
            fs::write(dir, "io.max", &line)?;
        }
    }
    Ok(())
}
