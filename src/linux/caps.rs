//! The five capability sets, applied in runc's order: bounding, then (around the uid/gid
//! change, with keep-caps) effective/permitted/inheritable in one capset, then ambient.
//!
//! What the kernel cannot grant is left out in the parent, with a warning, as runtime-spec
//! 1.1 asks: a capability this kernel does not have, one outside gpurun's own bounding set
//! (no process it starts can hold it), and an ambient capability that is not both
//! permitted and inheritable. Nothing is ever added to the inheritable set to
//! make an ambient raise succeed (CVE-2022-29162).

use std::str::FromStr;

use caps::{CapSet, Capability};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::linux::error::{Error, Result};

/// The sets as bit masks, resolved in the parent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    /// Every capability this kernel has, read in the parent: init must not open procfs
    /// files after a seccomp filter is loaded.
    pub known: Vec<Capability>,
}

/// What this process can hand on: the kernel's capabilities, and of those the ones in
/// gpurun's own bounding set.
struct Grantable {
    known: Vec<Capability>,
    bounding: u64,
}

fn mask(field: &str, set: &Option<Capabilities>, g: &Grantable, warnings: &mut Vec<String>) -> u64 {
    let mut m = 0u64;
    let mut names: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
    names.sort();
    for name in names {
        match Capability::from_str(&name) {
            Ok(cap) if g.known.contains(&cap) && g.bounding & cap.bitmask() != 0 => {
                m |= cap.bitmask()
            }
            Ok(cap) if g.known.contains(&cap) => warnings.push(format!(
                "process.capabilities.{field}: {name} is not in gpurun's own bounding set, so no process it starts can hold it; ignored"
            )),
            _ => warnings.push(format!(
                "process.capabilities.{field}: {name} is not a capability of this kernel; ignored"
            )),
        }
    }
    m
}

impl CapSets {
    /// The sets, and a warning for each capability left out.
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> (Self, Vec<String>) {
        let known = supported();
        // Unreadable (no procfs yet): every capability of the kernel, as before.
        let bounding = caps::read(None, CapSet::Bounding)
            .map(|s| s.iter().fold(0u64, |m, c| m | c.bitmask()))
            .unwrap_or(u64::MAX);
        Self::from_spec_with(c, Grantable { known, bounding })
    }

    fn from_spec_with(c: Option<&LinuxCapabilities>, g: Grantable) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let Some(c) = c else {
            return (
                CapSets {
                    known: g.known,
                    ..CapSets::default()
                },
                warnings,
            );
        };
        let w = &mut warnings;
        let mut sets = CapSets {
            bounding: mask("bounding", c.bounding(), &g, w),
            effective: mask("effective", c.effective(), &g, w),
            permitted: mask("permitted", c.permitted(), &g, w),
            inheritable: mask("inheritable", c.inheritable(), &g, w),
            ambient: mask("ambient", c.ambient(), &g, w),
            known: g.known,
        };
        sets.drop_unraisable_ambient(w);
        (sets, warnings)
    }

    /// PR_CAP_AMBIENT_RAISE only accepts a capability that is permitted and inheritable.
    /// `runc spec` writes ambient sets with an empty inheritable set.
    fn drop_unraisable_ambient(&mut self, warnings: &mut Vec<String>) {
        let raisable = self.permitted & self.inheritable;
        for cap in &self.known {
            let bit = cap.bitmask();
            if self.ambient & bit != 0 && raisable & bit == 0 {
                warnings.push(format!(
                    "process.capabilities.ambient: {cap} is not both permitted and inheritable, so the kernel cannot raise it; running without it"
                ));
            }
        }
        self.ambient &= raisable;
    }
}

/// The capabilities of this kernel, in index order.
fn supported() -> Vec<Capability> {
    let set = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    let mut v: Vec<Capability> = set.into_iter().collect();
    v.sort_by_key(|c| c.index());
    v
}

/// Drop every capability not in the bounding set. Needs CAP_SETPCAP, so it runs before
/// the uid change.
pub fn drop_bounding(sets: &CapSets) -> Result<()> {
    for cap in &sets.known {
        if sets.bounding & cap.bitmask() == 0 {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|source| Error::Caps {
                what: format!("dropping {cap} from the bounding set"),
                source,
            })?;
        }
    }
    Ok(())
}

pub fn set_keep_caps(on: bool) -> Result<()> {
    nix::sys::prctl::set_keepcaps(on)
        .map_err(|e| Error::sys("setting keep-caps", "prctl", "PR_SET_KEEPCAPS", e))
}

/// Effective, permitted and inheritable at once, then the ambient set (already limited
/// to capabilities that are both permitted and inheritable).
pub fn apply(sets: &CapSets) -> Result<()> {
    crate::linux::sys::proc::capset(sets.effective, sets.permitted, sets.inheritable).map_err(
        |errno| Error::Call {
            what: format!(
                "setting capabilities (effective {:#x}, permitted {:#x}, inheritable {:#x})",
                sets.effective, sets.permitted, sets.inheritable
            ),
            syscall: "capset",
            errno,
            hint: "",
        },
    )?;
    caps::clear(None, CapSet::Ambient).map_err(|source| Error::Caps {
        what: "clearing ambient capabilities".into(),
        source,
    })?;
    for cap in &sets.known {
        if sets.ambient & cap.bitmask() != 0 {
            caps::raise(None, CapSet::Ambient, *cap).map_err(|source| Error::Caps {
                what: format!("raising ambient {cap}"),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(v: serde_json::Value) -> (CapSets, Vec<String>) {
        let c: LinuxCapabilities = serde_json::from_value(v).expect("caps");
        CapSets::from_spec(Some(&c))
    }

    #[test]
    fn spec_names_become_masks() {
        let (s, w) = sets(serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"]
        }));
        assert_eq!(s.bounding, (1 << 0) | (1 << 5));
        assert_eq!(s.effective, 1 << 5);
        assert_eq!(s.inheritable, 0);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn ambient_without_inheritable_is_dropped_with_a_warning_and_inheritable_stays_empty() {
        // What `runc spec` writes.
        let three = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let (s, w) = sets(serde_json::json!({
            "bounding": three, "effective": three, "permitted": three, "ambient": three
        }));
        assert_eq!(s.ambient, 0);
        assert_eq!(s.inheritable, 0);
        assert_eq!(s.permitted, (1 << 29) | (1 << 5) | (1 << 10));
        assert_eq!(w.len(), 3, "{w:?}");
        for cap in ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"] {
            assert!(
                w.iter().any(|l| l.contains(cap) && l.contains("ambient")),
                "{w:?}"
            );
        }
    }

    #[test]
    fn a_capability_newer_than_the_kernel_is_left_out_with_a_warning() {
        let set: Option<Capabilities> =
            serde_json::from_value(serde_json::json!(["CAP_KILL", "CAP_BPF"])).expect("set");
        let mut w = Vec::new();
        let g = Grantable {
            known: vec![Capability::CAP_KILL],
            bounding: u64::MAX,
        };
        let m = mask("bounding", &set, &g, &mut w);
        assert_eq!(m, 1 << 5);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("CAP_BPF"), "{w:?}");
    }

    #[test]
    fn a_capability_outside_the_runtimes_own_bounding_set_is_left_out_with_a_warning() {
        // Where root lacks CAP_SYS_RESOURCE (these test machines), a config asking for it
        // runs without it (the OCI validation suite's process_capabilities).
        let c: LinuxCapabilities = serde_json::from_value(serde_json::json!({
            "bounding": ["CAP_KILL", "CAP_SYS_RESOURCE"],
            "permitted": ["CAP_KILL", "CAP_SYS_RESOURCE"],
            "effective": ["CAP_SYS_RESOURCE"]
        }))
        .expect("caps");
        let g = Grantable {
            known: vec![Capability::CAP_KILL, Capability::CAP_SYS_RESOURCE],
            bounding: Capability::CAP_KILL.bitmask(),
        };
        let (s, w) = CapSets::from_spec_with(Some(&c), g);
        assert_eq!((s.bounding, s.permitted, s.effective), (1 << 5, 1 << 5, 0));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w.iter()
                .all(|l| l.contains("CAP_SYS_RESOURCE") && l.contains("bounding set")),
            "{w:?}"
        );
    }

    #[test]
    fn ambient_that_is_permitted_and_inheritable_is_kept() {
        let k = serde_json::json!(["CAP_KILL"]);
        let (s, w) = sets(serde_json::json!({
            "permitted": k, "inheritable": k, "ambient": ["CAP_KILL", "CAP_CHOWN"]
        }));
        assert_eq!(s.ambient, 1 << 5);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("CAP_CHOWN"), "{w:?}");
    }
}
