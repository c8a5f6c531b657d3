//! Readers for the nvidia-smi outputs gpurun asks for. nvidia-smi's output is "not
//! guaranteed to be backwards compatible" (its manual), so every reader is defensive: a
//! field that is missing, unparseable, or one of nvidia-smi's ways of saying "no value"
//! (`N/A`, `[N/A]`, `[Not Supported]`, `[Insufficient Permissions]`, …) is `None`, a line
//! it does not recognise is skipped, and nothing here panics on any input.
//!
//! * `nvidia-smi -q -x`: the XML log (`nvsmi_device_v*.dtd`): `<cuda_version>`, and per
//!   `<gpu id="<bus id>">` its `<uuid>`, `<product_name>`, `<product_brand>`,
//!   `<minor_number>`, `<fb_memory_usage>` and `<mig_devices><mig_device>` with `<index>`,
//!   `<gpu_instance_id>`, `<compute_instance_id>`.
//! * `nvidia-smi -L`: `GPU <i>: <name> (UUID: GPU-…)` lines, each followed by its MIG
//!   devices, `  MIG <profile> Device <n>: (UUID: MIG-…)`; drivers before R470 wrote the
//!   MIG UUID as `MIG-GPU-<gpu uuid>/<gi>/<ci>`.
//! * `--query-gpu=…`, `--query-compute-apps=…` with `--format=csv,noheader,nounits`: one
//!   comma-separated row per GPU or process.

use super::xml;
pub use crate::gpu::inventory::{is_device_uuid, is_label, is_version};
use crate::gpu::procfs::PciAddr;

/// What `-q -x` says about the system and each GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub driver_version: Option<String>,
    /// The CUDA driver API version (`12.4`).
    pub cuda_version: Option<String>,
    pub gpus: Vec<QueryGpu>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryGpu {
    pub bus: Option<PciAddr>,
    pub uuid: Option<String>,
    pub name: Option<String>,
    /// As nvidia-smi prints it (`Tesla`, `NVIDIA`, `NVIDIA RTX`, `GeForce RTX`, …).
    pub brand: Option<String>,
    pub minor: Option<u32>,
    pub memory_used_mib: Option<u64>,
    pub memory_total_mib: Option<u64>,
    pub mig: Vec<QueryMig>,
}

/// A MIG device as `-q -x` lists it: the index NVML enumerates it by within its parent,
/// and its GPU and compute instance ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryMig {
    pub index: u32,
    pub gi: u32,
    pub ci: u32,
}

/// One GPU of `-L`, with its MIG devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub index: Option<u32>,
    pub uuid: String,
    pub mig: Vec<ListedMig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedMig {
    /// `Device <n>`: the same index as [`QueryMig::index`].
    pub index: Option<u32>,
    pub uuid: String,
    /// (GI, CI) from a pre-R470 `MIG-GPU-<uuid>/<gi>/<ci>` name.
    pub legacy_ids: Option<(u32, u32)>,
}

/// A process using a GPU (`--query-compute-apps=pid,gpu_uuid,used_memory`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeApp {
    pub pid: i32,
    pub gpu_uuid: String,
    pub used_mib: Option<u64>,
}

/// A value nvidia-smi printed, or `None` for its ways of printing none. `Unknown` is kept:
/// it is a real brand (`NVIDIA_REQUIRE_CUDA` images match `brand=unknown`).
pub fn known(raw: &str) -> Option<&str> {
    let v = raw.trim();
    if v.starts_with('[') && v.ends_with(']') {
        // [N/A], [Not Supported], [Unknown Error], [GPU is lost], …
        return None;
    }
    match v.to_ascii_lowercase().as_str() {
        ""
        | "n/a"
        | "none"
        | "not supported"
        | "not available"
        | "unknown error"
        | "insufficient permissions"
        | "requested functionality has been deprecated" => None,
        _ => Some(v),
    }
}

fn label(raw: Option<&str>) -> Option<String> {
    raw.and_then(known)
        .filter(|s| is_label(s))
        .map(str::to_string)
}

/// `40960 MiB` (or `40960` with `nounits`) → 40960; other units are converted to MiB.
pub fn mib(raw: &str) -> Option<u64> {
    let v = known(raw)?;
    let (num, unit) = match v.split_once(char::is_whitespace) {
        Some((n, u)) => (n, u.trim()),
        None => (v, "MiB"),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "MiB" | "MB" => Some(n),
        "GiB" | "GB" => n.checked_mul(1024),
        "KiB" | "KB" => Some(n / 1024),
        _ => None,
    }
}

/// Reads `nvidia-smi -q -x`.
pub fn query_xml(doc: &str) -> Result<Query, String> {
    let root = xml::parse(doc)?;
    if root.name != "nvidia_smi_log" {
        return Err(format!(
            "root element <{}>, expected <nvidia_smi_log>",
            root.name
        ));
    }
    let version = |path: &[&str]| {
        root.text_at(path)
            .and_then(known)
            .filter(|v| is_version(v))
            .map(str::to_string)
    };
    Ok(Query {
        driver_version: version(&["driver_version"]),
        cuda_version: version(&["cuda_version"]),
        gpus: root.children_named("gpu").map(query_gpu).collect(),
    })
}

fn query_gpu(g: &xml::Element) -> QueryGpu {
    let bus = g
        .attr("id")
        .or_else(|| g.text_at(&["pci", "pci_bus_id"]))
        .and_then(known)
        .and_then(|b| b.parse().ok());
    let mig = g
        .child("mig_devices")
        .map(|m| {
            m.children_named("mig_device")
                .filter_map(|d| {
                    let num = |name: &str| d.text_at(&[name])?.parse::<u32>().ok();
                    Some(QueryMig {
                        index: num("index")?,
                        gi: num("gpu_instance_id")?,
                        ci: num("compute_instance_id")?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    QueryGpu {
        bus,
        uuid: g
            .text_at(&["uuid"])
            .and_then(known)
            .filter(|u| is_device_uuid(u))
            .map(str::to_string),
        name: label(g.text_at(&["product_name"])),
        brand: label(g.text_at(&["product_brand"])),
        minor: g
            .text_at(&["minor_number"])
            .and_then(known)
            .and_then(|m| m.parse().ok()),
        memory_used_mib: g.text_at(&["fb_memory_usage", "used"]).and_then(mib),
        memory_total_mib: g.text_at(&["fb_memory_usage", "total"]).and_then(mib),
        mig,
    }
}

/// The UUID inside `(UUID: …)`.
fn uuid_in(line: &str) -> Option<String> {
    let start = line.find("(UUID:")? + "(UUID:".len();
    let rest = &line[start..];
    let end = rest.rfind(')')?;
    let u = rest[..end].trim();
    is_device_uuid(u).then(|| u.to_string())
}

/// Reads `nvidia-smi -L`.
pub fn list(text: &str) -> Vec<Listed> {
    let mut out: Vec<Listed> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("GPU ") {
            let Some(uuid) = uuid_in(t).filter(|u| u.starts_with("GPU-")) else {
                continue;
            };
            let index = rest
                .split_once(':')
                .and_then(|(i, _)| i.trim().parse().ok());
            out.push(Listed {
                index,
                uuid,
                mig: Vec::new(),
            });
        } else if t.starts_with("MIG ") {
            let (Some(gpu), Some(uuid)) = (out.last_mut(), uuid_in(t)) else {
                continue;
            };
            if !uuid.starts_with("MIG-") {
                continue;
            }
            let words: Vec<&str> = t.split_whitespace().collect();
            let index = words
                .iter()
                .position(|w| *w == "Device")
                .and_then(|i| words.get(i + 1))
                .and_then(|n| n.trim_end_matches(':').parse().ok());
            gpu.mig.push(ListedMig {
                index,
                legacy_ids: legacy_ids(&uuid),
                uuid,
            });
        }
    }
    out
}

/// `MIG-GPU-<uuid>/<gi>/<ci>` → (gi, ci).
fn legacy_ids(uuid: &str) -> Option<(u32, u32)> {
    let rest = uuid.strip_prefix("MIG-GPU-")?;
    let mut parts = rest.rsplitn(3, '/');
    let ci = parts.next()?.parse().ok()?;
    let gi = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((gi, ci))
}

/// Rows of a `csv,noheader` answer with exactly `n` fields each (others are skipped).
pub fn csv_rows(text: &str, n: usize) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| l.split(',').map(str::trim).collect::<Vec<&str>>())
        .filter(|f| f.len() == n && f.iter().any(|v| !v.is_empty()))
        .collect()
}

/// `--query-gpu=uuid,compute_cap`: (GPU UUID, compute capability).
pub fn compute_caps(text: &str) -> Vec<(String, Option<String>)> {
    csv_rows(text, 2)
        .into_iter()
        .filter(|r| is_device_uuid(r[0]))
        .map(|r| {
            let cc = known(r[1]).filter(|c| is_version(c)).map(str::to_string);
            (r[0].to_string(), cc)
        })
        .collect()
}

/// `--query-gpu=uuid,memory.used,memory.total` (nounits): (UUID, used, total) in MiB.
pub fn memory(text: &str) -> Vec<(String, Option<u64>, Option<u64>)> {
    csv_rows(text, 3)
        .into_iter()
        .filter(|r| is_device_uuid(r[0]))
        .map(|r| (r[0].to_string(), mib(r[1]), mib(r[2])))
        .collect()
}

/// `--query-compute-apps=pid,gpu_uuid,used_memory` (nounits).
pub fn compute_apps(text: &str) -> Vec<ComputeApp> {
    csv_rows(text, 3)
        .into_iter()
        .filter_map(|r| {
            let pid: i32 = r[0].parse().ok().filter(|p| *p > 0)?;
            let gpu_uuid = r[1];
            is_device_uuid(gpu_uuid).then(|| ComputeApp {
                pid,
                gpu_uuid: gpu_uuid.to_string(),
                used_mib: mib(r[2]),
            })
        })
        .collect()
}

/// True when nvidia-smi refused a `--query-*` field it does not know (a driver older than
/// the field: `Field "compute_cap" is not a valid field to query.`).
pub fn is_unknown_field_error(stderr_or_stdout: &str) -> bool {
    stderr_or_stdout
        .to_ascii_lowercase()
        .contains("is not a valid field")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_value_spellings_are_none_and_unknown_is_kept() {
        for v in [
            "",
            "  ",
            "N/A",
            "[N/A]",
            "[Not Supported]",
            "Not Supported",
            "[Insufficient Permissions]",
            "[Unknown Error]",
            "[GPU requires reset]",
            "None",
        ] {
            assert_eq!(known(v), None, "{v:?}");
        }
        assert_eq!(known(" Unknown "), Some("Unknown"));
        assert_eq!(known("\t8.0 "), Some("8.0"));
    }

    #[test]
    fn memory_units() {
        assert_eq!(mib("40960 MiB"), Some(40960));
        assert_eq!(mib("  512 "), Some(512));
        assert_eq!(mib("2 GiB"), Some(2048));
        assert_eq!(mib("[N/A]"), None);
        assert_eq!(mib("12 parsecs"), None);
        assert_eq!(mib("-1"), None);
    }

    #[test]
    fn versions_and_uuids() {
        assert!(is_version("12.4") && is_version("8") && is_version("580.65.06"));
        assert!(!is_version("12.") && !is_version("v12") && !is_version("1.2.3.4.5"));
        assert!(is_device_uuid(
            "MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0"
        ));
        assert!(!is_device_uuid("MIG-a b") && !is_device_uuid("GPU"));
        assert_eq!(
            legacy_ids("MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/13/2"),
            Some((13, 2))
        );
        assert_eq!(legacy_ids("MIG-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"), None);
    }
}
