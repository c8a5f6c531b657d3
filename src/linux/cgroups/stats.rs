//! Statistics in the shape of runc's `events --stats` data (`types.Stats`): cpu, cpuset,
//! memory, pids, blkio, hugetlb. Every file is read defensively: a missing or unparsable file
//! leaves its field at zero instead of failing the whole call.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::fs;
use super::root::Layout;
use super::CgroupState;

/// USER_HZ: `cpuacct.stat` counts in these ticks on every Linux architecture.
const CLOCK_TICKS: u64 = 100;

#[derive(Clone, Copy)]
enum Place<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

fn place<'a>(st: &'a CgroupState, v1_name: &str, v2_name: &str) -> Option<Place<'a>> {
    if let Some(dir) = st.v1.get(v1_name) {
        return Some(Place::V1(dir));
    }
    let dir = st.unified.as_deref()?;
    let controllers = fs::read(dir, "cgroup.controllers").ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == v2_name)
        .then_some(Place::V2(dir))
}

fn num(dir: &Path, file: &str) -> u64 {
    let Ok(text) = fs::read(dir, file) else {
        return 0;
    };
    match text.trim() {
        "max" => u64::MAX,
        t => t.parse().unwrap_or(0),
    }
}

fn flat(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    let text = fs::read(dir, file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn list(dir: &Path, file: &str) -> Vec<u64> {
    fs::read(dir, file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// `0-3,7` → `[0, 1, 2, 3, 7]`.
fn cpu_list(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            out.extend(a..=b);
        }
    }
    out
}

pub(crate) fn stats(st: &CgroupState) -> Value {
    json!({
        "cpu": cpu(st),
        "cpuset": cpuset(st),
        "memory": memory(st),
        "pids": pids(st),
        "blkio": blkio(st),
        "hugetlb": hugetlb(st),
    })
}

fn cpu(st: &CgroupState) -> Value {
    let mut usage = Map::new();
    let mut throttling = json!({});
    if st.layout == Layout::Unified {
        if let Some(dir) = st.unified.as_deref() {
            let s = flat(dir, "cpu.stat");
            let get = |k: &str| s.get(k).copied().unwrap_or(0);
            usage.insert("total".into(), json!(get("usage_usec") * 1000));
            usage.insert("kernel".into(), json!(get("system_usec") * 1000));
            usage.insert("user".into(), json!(get("user_usec") * 1000));
            throttling = json!({
                "periods": get("nr_periods"),
                "throttledPeriods": get("nr_throttled"),
                "throttledTime": get("throttled_usec") * 1000,
            });
        }
        return json!({ "usage": usage, "throttling": throttling });
    }
    if let Some(dir) = st.v1.get("cpuacct") {
        let s = flat(dir, "cpuacct.stat");
        let ns = |ticks: u64| ticks * (1_000_000_000 / CLOCK_TICKS);
        usage.insert("total".into(), json!(num(dir, "cpuacct.usage")));
        let percpu = list(dir, "cpuacct.usage_percpu");
        if !percpu.is_empty() {
            usage.insert("percpu".into(), json!(percpu));
        }
        for (key, file) in [
            ("percpu_kernel", "cpuacct.usage_percpu_sys"),
            ("percpu_user", "cpuacct.usage_percpu_user"),
        ] {
            let v = list(dir, file);
            if !v.is_empty() {
                usage.insert(key.into(), json!(v));
            }
        }
        usage.insert(
            "kernel".into(),
            json!(ns(s.get("system").copied().unwrap_or(0))),
        );
        usage.insert(
            "user".into(),
            json!(ns(s.get("user").copied().unwrap_or(0))),
        );
    }
    if let Some(dir) = st.v1.get("cpu") {
        let s = flat(dir, "cpu.stat");
        let get = |k: &str| s.get(k).copied().unwrap_or(0);
        throttling = json!({
            "periods": get("nr_periods"),
            "throttledPeriods": get("nr_throttled"),
            "throttledTime": get("throttled_time"),
        });
    }
    json!({ "usage": usage, "throttling": throttling })
}

fn cpuset(st: &CgroupState) -> Value {
    let (dir, cpus, mems) = match place(st, "cpuset", "cpuset") {
        Some(Place::V1(d)) => (d, "cpuset.cpus", "cpuset.mems"),
        Some(Place::V2(d)) => (d, "cpuset.cpus.effective", "cpuset.mems.effective"),
        None => return json!({}),
    };
    json!({
        "cpus": cpu_list(&fs::read(dir, cpus).unwrap_or_default()),
        "mems": cpu_list(&fs::read(dir, mems).unwrap_or_default()),
    })
}

fn entry(limit: u64, usage: u64, max: u64, failcnt: u64) -> Value {
    json!({ "limit": limit, "usage": usage, "max": max, "failcnt": failcnt })
}

fn memory(st: &CgroupState) -> Value {
    match place(st, "memory", "memory") {
        Some(Place::V1(dir)) => {
            let e = |prefix: &str| {
                entry(
                    num(dir, &format!("{prefix}.limit_in_bytes")),
                    num(dir, &format!("{prefix}.usage_in_bytes")),
                    num(dir, &format!("{prefix}.max_usage_in_bytes")),
                    num(dir, &format!("{prefix}.failcnt")),
                )
            };
            let raw = flat(dir, "memory.stat");
            let oom = flat(dir, "memory.oom_control");
            json!({
                "cache": raw.get("cache").copied().unwrap_or(0),
                "usage": e("memory"),
                "swap": e("memory.memsw"),
                "kernel": e("memory.kmem"),
                "kernelTCP": e("memory.kmem.tcp"),
                "raw": raw,
                "event_count": { "oom_kill": oom.get("oom_kill").copied().unwrap_or(0) },
            })
        }
        Some(Place::V2(dir)) => {
            let events = flat(dir, "memory.events");
            let ev = |k: &str| events.get(k).copied().unwrap_or(0);
            let (limit, usage) = (num(dir, "memory.max"), num(dir, "memory.current"));
            let swap_limit = match num(dir, "memory.swap.max") {
                u64::MAX => u64::MAX,
                s => s.saturating_add(limit),
            };
            let raw = flat(dir, "memory.stat");
            json!({
                "cache": raw.get("file").copied().unwrap_or(0),
                "usage": entry(limit, usage, num(dir, "memory.peak"), ev("max")),
                "swap": entry(swap_limit, num(dir, "memory.swap.current") + usage, 0, 0),
                "raw": raw,
                "event_count": {
                    "low": ev("low"), "high": ev("high"), "max": ev("max"),
                    "oom": ev("oom"), "oom_kill": ev("oom_kill"),
                },
            })
        }
        None => json!({}),
    }
}

fn pids(st: &CgroupState) -> Value {
    let Some(Place::V1(dir) | Place::V2(dir)) = place(st, "pids", "pids") else {
        return json!({});
    };
    let limit = match num(dir, "pids.max") {
        u64::MAX => 0,
        l => l,
    };
    json!({ "current": num(dir, "pids.current"), "limit": limit })
}

fn blkio_entries(dir: &Path, file: &str) -> Vec<Value> {
    let text = fs::read(dir, file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.next()?;
            let (major, minor) = dev.split_once(':')?;
            let op = f.next()?;
            let value: u64 = f.next()?.parse().ok()?;
            Some(json!({
                "major": major.parse::<u64>().ok()?,
                "minor": minor.parse::<u64>().ok()?,
                "op": op,
                "value": value,
            }))
        })
        .collect()
}

fn blkio(st: &CgroupState) -> Value {
    match place(st, "blkio", "io") {
        Some(Place::V1(dir)) => json!({
            "ioServiceBytesRecursive": blkio_entries(dir, "blkio.throttle.io_service_bytes_recursive"),
            "ioServicedRecursive": blkio_entries(dir, "blkio.throttle.io_serviced_recursive"),
        }),
        Some(Place::V2(dir)) => {
            let (mut bytes, mut ios) = (Vec::new(), Vec::new());
            for line in fs::read(dir, "io.stat").unwrap_or_default().lines() {
                let mut f = line.split_whitespace();
                let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
                    continue;
                };
                let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
                    continue;
                };
                for kv in f {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let Ok(value) = v.parse::<u64>() else {
                        continue;
                    };
                    let (list, op) = match k {
                        "rbytes" => (&mut bytes, "Read"),
                        "wbytes" => (&mut bytes, "Write"),
                        "rios" => (&mut ios, "Read"),
                        "wios" => (&mut ios, "Write"),
                        _ => continue,
                    };
                    list.push(json!({ "major": major, "minor": minor, "op": op, "value": value }));
                }
            }
            json!({ "ioServiceBytesRecursive": bytes, "ioServicedRecursive": ios })
        }
        None => json!({}),
    }
}

fn hugetlb(st: &CgroupState) -> Value {
    let mut out = Map::new();
    let Some(place) = place(st, "hugetlb", "hugetlb") else {
        return Value::Object(out);
    };
    let (Place::V1(dir) | Place::V2(dir)) = place;
    let suffix = match place {
        Place::V1(_) => ".limit_in_bytes",
        Place::V2(_) => ".max",
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Value::Object(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(size) = name
            .strip_prefix("hugetlb.")
            .and_then(|n| n.strip_suffix(suffix))
            .filter(|s| !s.contains('.'))
        else {
            continue;
        };
        let v = match place {
            Place::V1(_) => json!({
                "usage": num(dir, &format!("hugetlb.{size}.usage_in_bytes")),
                "max": num(dir, &format!("hugetlb.{size}.max_usage_in_bytes")),
                "failcnt": num(dir, &format!("hugetlb.{size}.failcnt")),
            }),
            Place::V2(_) => json!({
                "usage": num(dir, &format!("hugetlb.{size}.current")),
                "failcnt": flat(dir, &format!("hugetlb.{size}.events")).get("max").copied().unwrap_or(0),
            }),
        };
        out.insert(size.to_string(), v);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(cpu_list("0-3,7\n"), [0, 1, 2, 3, 7]);
        assert_eq!(cpu_list(""), Vec::<u16>::new());
    }
}
