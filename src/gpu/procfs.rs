//! Parsers for the driver's procfs files and `/proc/devices` (research §1.1, §1.2, §1.4).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A PCI address; the procfs directory uses a 16-bit domain and NVML a 32-bit one, so
/// addresses are compared as numbers, never as strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddr {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl FromStr for PciAddr {
    type Err = String;

    /// `[domain:]bus:device.function`, hex, leading zeros optional, any case.
    fn from_str(s: &str) -> Result<PciAddr, String> {
        let err = || format!("{s:?} is not a PCI address (domain:bus:device.function)");
        let (rest, function) = s.rsplit_once('.').ok_or_else(err)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(err()),
        };
        let hex = |x: &str, max: u32| -> Result<u32, String> {
            if x.is_empty() || x.len() > 8 || !x.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            let v = u32::from_str_radix(x, 16).map_err(|_| err())?;
            if v > max {
                return Err(err());
            }
            Ok(v)
        };
        Ok(PciAddr {
            domain: hex(domain, u32::MAX)?,
            bus: hex(bus, 0xff)? as u8,
            device: hex(device, 0x1f)? as u8,
            function: hex(function, 7)? as u8,
        })
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for PciAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PciAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PciAddr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `key: value` lines, split on the first `:`, both sides trimmed.
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The fields of `<proc>/<pid>/status`; `None` when the process is gone.
pub fn process_status(proc: &std::path::Path, pid: i32) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("status")).ok()?;
    Some(key_values(&text))
}

/// The fields of `/proc/driver/nvidia/gpus/<bus>/information` discovery uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Information {
    pub model: String,
    pub uuid: String,
    pub bus: PciAddr,
    pub minor: u32,
    pub excluded: bool,
}

pub fn parse_information(text: &str) -> Result<Information, String> {
    let kv = key_values(text);
    let field = |k: &str| kv.get(k).ok_or_else(|| format!("no {k:?} line"));
    let uuid = field("GPU UUID")?.clone();
    if !uuid.starts_with("GPU-") {
        return Err(format!("GPU UUID {uuid:?} does not start with GPU-"));
    }
    let minor = field("Device Minor")?;
    Ok(Information {
        model: kv.get("Model").cloned().unwrap_or_default(),
        uuid,
        bus: field("Bus Location")?.parse()?,
        minor: minor
            .parse()
            .map_err(|_| format!("Device Minor {minor:?} is not a number"))?,
        excluded: kv.get("GPU Excluded").is_some_and(|v| v == "Yes"),
    })
}

/// The driver version from the first line of `/proc/driver/nvidia/version`: the first
/// token shaped `\d+\.\d+(\.\d+)?`.
pub fn parse_version(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    first
        .split_whitespace()
        .find(|t| is_version(t))
        .map(str::to_string)
}

/// `580.65.06`, `555.42`: two or three dot-separated decimal numbers.
pub fn is_version(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The character-device majors whose names start with `nvidia`.
pub fn parse_devices(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut in_char = false;
    for line in text.lines() {
        let line = line.trim();
        if line.ends_with(':') {
            in_char = line == "Character devices:";
            continue;
        }
        if !in_char {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(major), Some(name)) = (it.next(), it.next()) {
            if let (Ok(major), true) = (major.parse(), name.starts_with("nvidia")) {
                out.insert(name.to_string(), major);
            }
        }
    }
    out
}

/// The NVIDIA character-device majors of the running driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Majors {
    /// `nvidia` (driver 550.40 and later) or `nvidia-frontend` (before).
    pub gpu: Option<u32>,
    pub uvm: Option<u32>,
    pub caps: Option<u32>,
    pub imex: Option<u32>,
    /// The other live majors whose names start with `nvidia` (GPUDirect Storage's
    /// `nvidia-fs`, `nvidia-nvswitch`, `nvidia-nvlink`, …): their nodes are valid and
    /// not gpurun's to grant.
    pub others: Vec<u32>,
}

/// The names of the majors [`Majors`] tells apart.
const KNOWN_MAJORS: [&str; 5] = [
    "nvidia",
    "nvidia-frontend",
    "nvidia-uvm",
    "nvidia-caps",
    "nvidia-caps-imex-channels",
];

impl Majors {
    /// From the text of `/proc/devices`.
    pub fn from_devices(text: &str) -> Majors {
        let m = parse_devices(text);
        Majors {
            gpu: m
                .get("nvidia")
                .or_else(|| m.get("nvidia-frontend"))
                .copied(),
            uvm: m.get("nvidia-uvm").copied(),
            caps: m.get("nvidia-caps").copied(),
            imex: m.get("nvidia-caps-imex-channels").copied(),
            others: m
                .iter()
                .filter(|(name, _)| !KNOWN_MAJORS.contains(&name.as_str()))
                .map(|(_, major)| *major)
                .collect(),
        }
    }
}

/// Lines of `/proc/driver/nvidia-caps/mig-minors`: `<name> <minor>`.
pub fn parse_mig_minors(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// `DeviceFileMinor` of a capability `access` file.
pub fn parse_access_minor(text: &str) -> Option<u32> {
    key_values(text).get("DeviceFileMinor")?.parse().ok()
}

/// `params` with `ModifyDeviceFiles` forced to 0 (added when absent), every other line kept.
pub fn params_without_device_modification(text: &str) -> String {
    let mut out = String::new();
    let mut seen = false;
    for line in text.lines() {
        if line.split(':').next().map(str::trim) == Some("ModifyDeviceFiles") {
            out.push_str("ModifyDeviceFiles: 0\n");
            seen = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !seen {
        out.push_str("ModifyDeviceFiles: 0\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const INFO: &str = "Model: \t\t NVIDIA H200\nIRQ:   \t\t 140\nGPU UUID: \t\t GPU-edfee158-11c1-52b8-0517-92f30e7fac88\nVideo BIOS: \t\t 96.00.99.00.01\nBus Type: \t\t PCIe\nDMA Size: \t\t 52 bits\nDMA Mask: \t\t 0xfffffffffffff\nBus Location: \t\t 0000:06:00.0\nDevice Minor: \t\t 3\nGPU Excluded:\t\t No\n";

    #[test]
    fn information_file() {
        let i = parse_information(INFO).unwrap();
        assert_eq!(i.model, "NVIDIA H200");
        assert_eq!(i.uuid, "GPU-edfee158-11c1-52b8-0517-92f30e7fac88");
        assert_eq!(i.bus.to_string(), "0000:06:00.0");
        assert_eq!(i.minor, 3);
        assert!(!i.excluded);
        assert!(parse_information("Model: x\n").is_err());
    }

    #[test]
    fn pci_addresses_16_and_32_bit_domains_compare_equal() {
        let a: PciAddr = "0000:3b:00.0".parse().unwrap();
        let b: PciAddr = "00000000:3B:00.0".parse().unwrap();
        let c: PciAddr = "3b:0.0".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let big: PciAddr = "10000:01:00.0".parse().unwrap();
        assert_eq!(big.to_string(), "10000:01:00.0");
        assert!("0:1".parse::<PciAddr>().is_err());
        assert!("zz:00.0".parse::<PciAddr>().is_err());
        assert!("00:20.0".parse::<PciAddr>().is_err());
    }

    #[test]
    fn version_both_formats() {
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  515.65.01  Wed Mar 16 11:24:05 UTC 2022\nGCC version: gcc 12\n").as_deref(),
            Some("515.65.01")
        );
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  555.42.06  Release Build  (dvs-builder@U16-T02-35-3)  Tue Jun  4 2024\n").as_deref(),
            Some("555.42.06")
        );
        assert_eq!(parse_version("nothing here"), None);
    }

    #[test]
    fn devices_new_and_old_names() {
        let d = parse_devices(
            "Character devices:\n  1 mem\n195 nvidia-frontend\n236 nvidia-caps\n237 nvidia-uvm\n\nBlock devices:\n195 nvidia-bogus\n",
        );
        assert_eq!(d.get("nvidia-frontend"), Some(&195));
        assert_eq!(d.get("nvidia-uvm"), Some(&237));
        assert_eq!(d.get("nvidia-caps"), Some(&236));
        assert!(!d.contains_key("mem"));
        assert!(!d.contains_key("nvidia-bogus"));
    }

    #[test]
    fn mig_minors_and_access() {
        let m =
            parse_mig_minors("config 1\nmonitor 2\ngpu1/gi1/access 12\ngpu1/gi1/ci0/access 13\n");
        assert_eq!(m.get("config"), Some(&1));
        assert_eq!(m.get("gpu1/gi1/ci0/access"), Some(&13));
        assert_eq!(
            parse_access_minor("DeviceFileMinor: 12\nDeviceFileMode: 292\n"),
            Some(12)
        );
    }

    #[test]
    fn params_rewrite() {
        assert_eq!(
            params_without_device_modification(
                "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileMode: 438\n"
            ),
            "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 0\nDeviceFileMode: 438\n"
        );
        assert_eq!(
            params_without_device_modification(""),
            "ModifyDeviceFiles: 0\n"
        );
    }
}
