//! Device names as a request writes them (`NVIDIA_VISIBLE_DEVICES`, `--gpus`, mount ids,
//! CDI names), and resolving them against the node's inventory.

use super::inventory::{Gpu, Inventory, MigDevice};
use super::procfs::PciAddr;
use super::GpuError;

/// One device name as written in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceId {
    All,
    Index(u32),
    GpuUuid(String),
    MigUuid(String),
    /// `<gpu index>:<mig index>`.
    MigIndex(u32, u32),
    Bus(PciAddr),
    /// A fully-qualified CDI name `vendor/class=name`.
    Cdi(String),
    /// An IMEX channel (`NVIDIA_IMEX_CHANNELS`, the device plugin's `imex/<n>` mounts).
    ImexChannel(u32),
    /// `NVIDIA_IMEX_CHANNELS=all`: every channel node the host has.
    ImexAll,
}

impl DeviceId {
    pub fn parse(s: &str) -> Result<DeviceId, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(DeviceId::All);
        }
        if let Some((kind, name)) = s.split_once('=') {
            return match kind.split_once('/') {
                Some((v, c)) if !v.is_empty() && !c.is_empty() && !name.is_empty() => {
                    Ok(DeviceId::Cdi(s.to_string()))
                }
                _ => Err(format!(
                    "{s}: not a fully-qualified CDI name (vendor/class=name)"
                )),
            };
        }
        // `get`, not indexing: byte 4 may fall inside a multi-byte character.
        let prefix = |p: &str| {
            s.get(..4)
                .filter(|head| head.eq_ignore_ascii_case(p))
                .and_then(|_| s.get(4..))
                .filter(|rest| !rest.is_empty())
        };
        if let Some(rest) = prefix("GPU-") {
            return Ok(DeviceId::GpuUuid(format!(
                "GPU-{}",
                rest.to_ascii_lowercase()
            )));
        }
        if let Some(rest) = prefix("MIG-") {
            return Ok(DeviceId::MigUuid(format!(
                "MIG-{}",
                rest.to_ascii_lowercase()
            )));
        }
        if let Ok(i) = s.parse::<u32>() {
            return Ok(DeviceId::Index(i));
        }
        if let Some((g, m)) = s.split_once(':') {
            if let (Ok(g), Ok(m)) = (g.parse(), m.parse()) {
                return Ok(DeviceId::MigIndex(g, m));
            }
        }
        if s.contains(':') && s.contains('.') {
            return s.parse().map(DeviceId::Bus);
        }
        Err(format!("{s}: unknown device"))
    }
}

/// `NVIDIA_VISIBLE_DEVICES`: `none` → no devices, otherwise a comma list of names.
pub fn parse_visible_devices(value: &str) -> Result<Vec<DeviceId>, GpuError> {
    if value.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let id = DeviceId::parse(word).map_err(GpuError::UnknownDevice)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// GPUs and MIG devices named by a request (CDI names are resolved elsewhere).
#[derive(Debug, Default)]
pub struct Selection<'a> {
    pub gpus: Vec<&'a Gpu>,
    pub mig: Vec<&'a MigDevice>,
    pub cdi: Vec<String>,
}

/// Resolves device names against the inventory; an unknown name is an error naming it.
pub fn resolve<'a>(ids: &[DeviceId], inv: &'a Inventory) -> Result<Selection<'a>, GpuError> {
    let mut sel = Selection::default();
    let add_gpu = |sel: &mut Selection<'a>, g: &'a Gpu| {
        if !sel.gpus.iter().any(|x| x.minor == g.minor) {
            sel.gpus.push(g);
        }
    };
    for id in ids {
        match id {
            DeviceId::All => {
                inv.gpus.iter().for_each(|g| add_gpu(&mut sel, g));
                for m in &inv.mig_devices {
                    if !sel.mig.iter().any(|x| std::ptr::eq(*x, m)) {
                        sel.mig.push(m);
                    }
                }
            }
            DeviceId::Index(i) => {
                let g = inv.gpus.iter().find(|g| g.index == *i);
                add_gpu(
                    &mut sel,
                    g.ok_or_else(|| GpuError::UnknownDevice(i.to_string()))?,
                );
            }
            DeviceId::GpuUuid(u) => {
                let g = inv.gpus.iter().find(|g| g.uuid.eq_ignore_ascii_case(u));
                add_gpu(
                    &mut sel,
                    g.ok_or_else(|| GpuError::UnknownDevice(u.clone()))?,
                );
            }
            DeviceId::Bus(b) => {
                let g = inv.gpus.iter().find(|g| g.bus == *b);
                add_gpu(
                    &mut sel,
                    g.ok_or_else(|| GpuError::UnknownDevice(b.to_string()))?,
                );
            }
            DeviceId::MigUuid(_) | DeviceId::MigIndex(..) => {
                let name = match id {
                    DeviceId::MigUuid(u) => u.clone(),
                    DeviceId::MigIndex(g, m) => format!("{g}:{m}"),
                    _ => unreachable!("matched above"),
                };
                let found = inv.mig_devices.iter().find(|m| match id {
                    DeviceId::MigUuid(u) => {
                        m.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u))
                    }
                    DeviceId::MigIndex(gi, mi) => {
                        m.index == Some(*mi)
                            && inv
                                .gpu_by_minor(m.parent_minor)
                                .is_some_and(|p| p.index == *gi)
                    }
                    _ => false,
                });
                // MIG UUIDs and indices come from NVML enrichment at discovery.
                let m = found.ok_or_else(|| {
                    GpuError::UnknownDevice(format!(
                        "{name} (MIG UUIDs and indices come from the driver's nvidia-smi at \
                         discovery; it named {} of this node's {} MIG devices)",
                        inv.mig_devices.iter().filter(|m| m.uuid.is_some()).count(),
                        inv.mig_devices.len()
                    ))
                })?;
                if let Some(p) = inv.gpu_by_minor(m.parent_minor) {
                    add_gpu(&mut sel, p);
                }
                if !sel.mig.iter().any(|x| std::ptr::eq(*x, m)) {
                    sel.mig.push(m);
                }
            }
            DeviceId::Cdi(n) => {
                if !sel.cdi.contains(n) {
                    sel.cdi.push(n.clone());
                }
            }
            DeviceId::ImexChannel(_) | DeviceId::ImexAll => {}
        }
    }
    Ok(sel)
}
