//! The five capability sets, applied in runc's order: bounding, then (around the uid/gid
//! change, with keep-caps) effective/permitted/inheritable in one capset, then ambient.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// The sets as bit masks, resolved in the parent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

fn mask(set: &Option<Capabilities>) -> Result<u64> {
    let mut m = 0u64;
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap = Capability::from_str(&name)
            .map_err(|_| Error::Config(format!("process.capabilities: unknown {name}")))?;
        m |= cap.bitmask();
    }
    Ok(m)
}

impl CapSets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<Self> {
        let Some(c) = c else {
            return Ok(CapSets::default());
        };
        Ok(CapSets {
            bounding: mask(c.bounding())?,
            effective: mask(c.effective())?,
            permitted: mask(c.permitted())?,
            inheritable: mask(c.inheritable())?,
            ambient: mask(c.ambient())?,
        })
    }
}

fn supported() -> HashSet<Capability> {
    caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all())
}

/// Drop every capability not in the bounding set. Needs CAP_SETPCAP, so it runs before
/// the uid change.
pub fn drop_bounding(sets: &CapSets) -> Result<()> {
    for cap in supported() {
        if sets.bounding & cap.bitmask() == 0 {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                Error::Other(format!("dropping {cap} from the bounding set: prctl: {e}"))
            })?;
        }
    }
    Ok(())
}

pub fn set_keep_caps(on: bool) -> Result<()> {
    nix::sys::prctl::set_keepcaps(on)
        .map_err(|e| Error::sys("setting keep-caps", "prctl", "PR_SET_KEEPCAPS", e))
}

/// Effective, permitted and inheritable at once, then the ambient set (which the kernel
/// only accepts for capabilities that are both permitted and inheritable).
pub fn apply(sets: &CapSets) -> Result<()> {
    crate::linux::sys::proc::capset(sets.effective, sets.permitted, sets.inheritable).map_err(
        |e| {
            Error::Other(format!(
                "setting capabilities (effective {:#x}, permitted {:#x}, inheritable {:#x}): capset: {e}",
                sets.effective, sets.permitted, sets.inheritable
            ))
        },
    )?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| Error::Other(format!("clearing ambient capabilities: prctl: {e}")))?;
    for cap in supported() {
        if sets.ambient & cap.bitmask() != 0 {
            caps::raise(None, CapSet::Ambient, cap)
                .map_err(|e| Error::Other(format!("raising ambient {cap}: prctl: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_become_masks() {
        let c: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"]
        }))
        .expect("caps");
        let s = CapSets::from_spec(Some(&c)).expect("sets");
        assert_eq!(s.bounding, (1 << 0) | (1 << 5));
        assert_eq!(s.effective, 1 << 5);
        assert_eq!(s.inheritable, 0);
    }
}
