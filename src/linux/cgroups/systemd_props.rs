//! The unit properties gpurun gives systemd for a container's scope: what the unit is
//! (`Delegate`, `PIDs`, the parent `Slice`), the limits, and the device allow-list.
//!
//! gpurun writes every limit to cgroupfs itself as well; the properties are there so that
//! systemd, which re-applies a unit's settings on `systemctl daemon-reload`, re-applies the
//! same values instead of resetting them. That is also why every device the rules allow —
//! the GPUs above all — goes into `DeviceAllow=`: systemd attaches its own device program
//! to the scope, and the kernel lets an access through only if every program allows it.

use std::collections::BTreeMap;

use oci_spec::runtime::LinuxResources;

use super::convert::{blkio_weight_to_io_weight, cpu_shares_to_weight, swap_to_v2};
use super::devices::{access_string, DevKind, DevicePolicy};
use super::error::CgroupError;
use super::root::Layout;
use crate::linux::dbus::Value;

/// Properties an older systemd may not know for a scope: when it refuses one of them,
/// the unit is started without it.
pub const OPTIONAL: &[&str] = &["OOMPolicy"];

/// systemd's "no limit" for `t` properties.
pub const INFINITY: u64 = u64::MAX;

/// One `(name, value)` pair of `StartTransientUnit`'s `a(sv)`.
pub fn prop(name: &str, value: Value) -> Value {
    Value::Struct(vec![Value::str(name), Value::variant(value)])
}

/// The properties that describe the unit itself. A scope gets the container's pid and is
/// delegated (the cgroup below it belongs to the runtime); a slice unit gets neither.
pub fn unit_properties(slice: &str, unit: &str, container_id: &str, pid: i32) -> Vec<Value> {
    let mut p = vec![
        prop(
            "Description",
            Value::str(format!("gpurun container {container_id}")),
        ),
        // No ordering against shutdown targets: the container runtime stops it.
        prop("DefaultDependencies", Value::Bool(false)),
        prop("MemoryAccounting", Value::Bool(true)),
        prop("CPUAccounting", Value::Bool(true)),
        prop("TasksAccounting", Value::Bool(true)),
        prop("IOAccounting", Value::Bool(true)),
    ];
    if unit.ends_with(".scope") {
        p.push(prop("Slice", Value::str(slice)));
        p.push(prop("Delegate", Value::Bool(true)));
        // An OOM kill of one process must not stop the whole container (systemd >= 253
        // would by default; older ones do not know the property, see OPTIONAL).
        p.push(prop("OOMPolicy", Value::str("continue")));
        p.push(prop(
            "PIDs",
            Value::Array("u".into(), vec![Value::U32(pid as u32)]),
        ));
    }
    p
}

/// The limits of `r` as unit properties, for the fields systemd has a property for.
pub fn resource_properties(layout: Layout, r: &LinuxResources) -> Result<Vec<Value>, CgroupError> {
    let mut p = Vec::new();
    let unified = layout == Layout::Unified;
    if let Some(m) = r.memory() {
        let limit = m.limit().unwrap_or(0);
        match limit {
            l if l > 0 => p.push(prop("MemoryMax", Value::U64(l as u64))),
            -1 => p.push(prop("MemoryMax", Value::U64(INFINITY))),
            _ => {}
        }
        if unified {
            if let Some(res) = m.reservation().filter(|v| *v > 0) {
                p.push(prop("MemoryLow", Value::U64(res as u64)));
            }
            if let Some(swap) = m.swap() {
                match swap_to_v2(swap, limit).map_err(CgroupError::InvalidResources)? {
                    Some(v) if v == "max" => p.push(prop("MemorySwapMax", Value::U64(INFINITY))),
                    Some(v) => {
                        if let Ok(n) = v.parse::<u64>() {
                            p.push(prop("MemorySwapMax", Value::U64(n)));
                        }
                    }
                    None => {}
                }
            }
        }
    }
    if let Some(pids) = r.pids() {
        // As for pids.max: 0 is 1, negative is no limit.
        let value = match pids.limit() {
            l if l > 0 => l as u64,
            0 => 1,
            _ => INFINITY,
        };
        p.push(prop("TasksMax", Value::U64(value)));
    }
    if let Some(cpu) = r.cpu() {
        if let Some(weight) = cpu.shares().map(cpu_shares_to_weight).filter(|w| *w > 0) {
            p.push(prop("CPUWeight", Value::U64(weight)));
        }
        let period = cpu.period().filter(|p| *p > 0);
        match cpu.quota() {
            Some(q) if q > 0 => {
                let period = period.unwrap_or(100_000);
                // systemd keeps the quota in whole percent of a CPU: round up to 10 ms per
                // second, so the cgroup gets at least the quota asked for.
                let per_sec = (q as u64 * 1_000_000).div_ceil(period);
                let per_sec = per_sec.div_ceil(10_000) * 10_000;
                p.push(prop("CPUQuotaPerSecUSec", Value::U64(per_sec)));
            }
            Some(q) if q < 0 => p.push(prop("CPUQuotaPerSecUSec", Value::U64(INFINITY))),
            _ => {}
        }
        if let Some(period) = period {
            p.push(prop("CPUQuotaPeriodUSec", Value::U64(period)));
        }
        if unified {
            for (name, list) in [
                ("AllowedCPUs", cpu.cpus()),
                ("AllowedMemoryNodes", cpu.mems()),
            ] {
                if let Some(list) = list.as_deref().filter(|l| !l.trim().is_empty()) {
                    let mask = cpu_list_mask(list).map_err(|reason| {
                        CgroupError::InvalidResources(format!("cpu set {list:?}: {reason}"))
                    })?;
                    p.push(prop(name, Value::Array("y".into(), mask)));
                }
            }
        }
    }
    if unified {
        if let Some(w) = r
            .block_io()
            .as_ref()
            .and_then(|b| b.weight())
            .map(blkio_weight_to_io_weight)
            .filter(|w| *w > 0)
        {
            p.push(prop("IOWeight", Value::U64(w)));
        }
    }
    Ok(p)
}

/// `0-3,8` as systemd's CPU bitmask: byte i holds CPUs 8i..8i+7, lowest bit first.
pub fn cpu_list_mask(list: &str) -> Result<Vec<Value>, String> {
    const MAX_CPU: u32 = 8191;
    let mut bytes: Vec<u8> = Vec::new();
    for part in list.trim().split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{part:?} is not a number or a range"))
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi || hi > MAX_CPU {
            return Err(format!("{part:?} is not a valid range"));
        }
        for cpu in lo..=hi {
            let i = (cpu / 8) as usize;
            if bytes.len() <= i {
                bytes.resize(i + 1, 0);
            }
            bytes[i] |= 1 << (cpu % 8);
        }
    }
    Ok(bytes.into_iter().map(Value::Byte).collect())
}

/// `DevicePolicy` and `DeviceAllow` for the rules, or `None` with the reason when systemd's
/// allow-list cannot say what the rules say. Character majors are named as `/proc/devices`
/// (`devices`, its text) names them: systemd takes `char-<name>`, not a number.
pub fn device_properties(policy: &DevicePolicy, devices: &str) -> Result<Vec<Value>, String> {
    if policy.default_allow {
        // Everything except some devices: systemd has no deny-list, so it gets no program
        // at all, and gpurun's own filter does the denying.
        return Ok(vec![
            prop("DevicePolicy", Value::str("auto")),
            prop("DeviceAllow", Value::Array("(ss)".into(), vec![])),
        ]);
    }
    let names = major_names(devices);
    let mut allow = Vec::new();
    for e in &policy.exceptions {
        let kind = match e.key.kind {
            DevKind::Char => "char",
            DevKind::Block => "block",
        };
        let path = match (e.key.major, e.key.minor) {
            (Some(major), Some(minor)) => format!("/dev/{kind}/{major}:{minor}"),
            (Some(major), None) => {
                let name = names.get(&(e.key.kind, major)).ok_or_else(|| {
                    format!("{kind} major {major} has no name in /proc/devices, and systemd allows whole majors only by name")
                })?;
                format!("{kind}-{name}")
            }
            (None, None) => format!("{kind}-*"),
            (None, Some(minor)) => {
                return Err(format!(
                    "systemd cannot allow minor {minor} of every {kind} major"
                ))
            }
        };
        allow.push(Value::Struct(vec![
            Value::str(path),
            Value::str(access_string(e.access)),
        ]));
    }
    Ok(vec![
        prop("DevicePolicy", Value::str("strict")),
        prop("DeviceAllow", Value::Array("(ss)".into(), allow)),
    ])
}

/// `/proc/devices`: (kind, major) → name.
fn major_names(text: &str) -> BTreeMap<(DevKind, u32), String> {
    let mut out = BTreeMap::new();
    let mut kind = None;
    for line in text.lines() {
        match line.trim() {
            "Character devices:" => kind = Some(DevKind::Char),
            "Block devices:" => kind = Some(DevKind::Block),
            l => {
                let mut it = l.split_whitespace();
                if let (Some(k), Some(n), Some(name)) = (kind, it.next(), it.next()) {
                    if let Ok(n) = n.parse() {
                        out.entry((k, n)).or_insert_with(|| name.to_string());
                    }
                }
            }
        }
    }
    out
}
