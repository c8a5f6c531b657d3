//! Samples per case and runtime, the printed tables and the JSON file.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::probe::Outcome;

/// What a runtime left behind after its containers were deleted.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Leftovers {
    /// Container state directories under its `--root`.
    pub state: usize,
    /// cgroup directories (on real cgroup file systems) named after the containers.
    pub cgroups: usize,
    /// Mounts in the bench's mount namespace under its directory.
    pub mounts: usize,
    /// Container processes still alive.
    pub procs: usize,
    /// GPU lease files left in gpurun's state directory.
    pub leases: usize,
}

/// The samples of one case for one runtime.
#[derive(Debug, Serialize)]
pub struct Series {
    pub case: String,
    /// `gpurun`, `runc` or `crun`.
    pub runtime: String,
    /// The runtime with its version (`runc-1.1.5`).
    pub label: String,
    pub wall_ms: Vec<f64>,
    pub cpu_ms: Vec<f64>,
    pub maxrss_kb: Vec<u64>,
    /// Wall time per named step, in order (for the create/start/wait/delete case).
    pub steps_ms: Vec<(String, Vec<f64>)>,
    /// Measured iterations attempted (warm-up excluded).
    pub runs: usize,
    /// Runtime invocations that failed (or measurements that could not be taken).
    pub failures: usize,
    pub first_error: Option<String>,
    pub leftovers: Leftovers,
}

impl Series {
    pub fn new(case: &str, runtime: &str, label: &str) -> Series {
        Series {
            case: case.to_string(),
            runtime: runtime.to_string(),
            label: label.to_string(),
            wall_ms: Vec::new(),
            cpu_ms: Vec::new(),
            maxrss_kb: Vec::new(),
            steps_ms: Vec::new(),
            runs: 0,
            failures: 0,
            first_error: None,
            leftovers: Leftovers::default(),
        }
    }

    /// Records one measurement. `timed` picks the steps whose wall time counts; `names`
    /// names them for the per-step breakdown (empty: none). Failed iterations count as
    /// failures and give no sample; warm-up ones (`keep` false) give neither.
    pub fn record(
        &mut self,
        m: Result<Outcome, String>,
        keep: bool,
        timed: std::ops::Range<usize>,
        names: &[&str],
        stderr_of_failure: impl Fn() -> String,
    ) {
        if keep {
            self.runs += 1;
        }
        let out = match m {
            Ok(out) if out.failures() == 0 => out,
            Ok(out) => {
                if keep {
                    self.failures += out.failures();
                }
                self.first_error.get_or_insert_with(&stderr_of_failure);
                return;
            }
            Err(e) => {
                if keep {
                    self.failures += 1;
                }
                self.first_error.get_or_insert(e);
                return;
            }
        };
        if !keep {
            return;
        }
        let steps = out.steps.get(timed).unwrap_or(&[]);
        let wall: f64 = steps.iter().map(|s| s.wall_ns as f64 / 1e6).sum();
        self.wall_ms.push(wall);
        self.cpu_ms.push(out.cpu_ms());
        self.maxrss_kb.push(out.maxrss_kb);
        for (name, s) in names.iter().zip(steps) {
            let ms = s.wall_ns as f64 / 1e6;
            match self.steps_ms.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(ms),
                None => self.steps_ms.push((name.to_string(), vec![ms])),
            }
        }
    }

    pub fn median_ms(&self) -> Option<f64> {
        median(&self.wall_ms)
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().min_by(f64::total_cmp)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().max_by(f64::total_cmp)
}

fn median_u(v: &[u64]) -> Option<f64> {
    median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

/// This series' median wall time over the median of `peer` in the same case.
fn ratio(all: &[Series], s: &Series, peer: &str) -> Option<f64> {
    let p = peer_of(all, s, peer)?;
    Some(s.median_ms()? / p.median_ms()?)
}

/// The same for the median CPU time.
fn cpu_ratio(all: &[Series], s: &Series, peer: &str) -> Option<f64> {
    let p = peer_of(all, s, peer)?;
    Some(median(&s.cpu_ms)? / median(&p.cpu_ms)?)
}

fn peer_of<'a>(all: &'a [Series], s: &Series, peer: &str) -> Option<&'a Series> {
    if s.case.starts_with("c:") {
        return None;
    }
    all.iter().find(|p| p.case == s.case && p.runtime == peer)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

fn signed(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:+.decimals$}"))
}

/// The timing table and the failures/leftovers table.
pub fn tables(all: &[Series]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<12} {:<11} {:>9} {:>8} {:>8} {:>8} {:>9} {:>13} {:>13} {:>11}",
        "case",
        "runtime",
        "median_ms",
        "min",
        "max",
        "cpu_ms",
        "maxrss_kb",
        "ratio_vs_crun",
        "ratio_vs_runc",
        "cpu_vs_crun"
    );
    for s in all {
        let _ = writeln!(
            t,
            "{:<12} {:<11} {:>9} {:>8} {:>8} {:>8} {:>9} {:>13} {:>13} {:>11}",
            s.case,
            s.label,
            cell(s.median_ms(), 2),
            cell(min(&s.wall_ms), 2),
            cell(max(&s.wall_ms), 2),
            cell(median(&s.cpu_ms), 2),
            cell(median_u(&s.maxrss_kb), 0),
            cell(ratio(all, s, "crun"), 2),
            cell(ratio(all, s, "runc"), 2),
            cell(cpu_ratio(all, s, "crun"), 2),
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "{:<12} {:<11} {:>5} {:>8} {:>10} {:>12} {:>11} {:>10} {:>11}",
        "case",
        "runtime",
        "runs",
        "failures",
        "left_state",
        "left_cgroups",
        "left_mounts",
        "left_procs",
        "left_leases"
    );
    for s in all {
        let l = &s.leftovers;
        let _ = writeln!(
            t,
            "{:<12} {:<11} {:>5} {:>8} {:>10} {:>12} {:>11} {:>10} {:>11}",
            s.case, s.label, s.runs, s.failures, l.state, l.cgroups, l.mounts, l.procs, l.leases
        );
    }
    t
}

/// One line per case with a per-step breakdown, and the cost of injection.
pub fn notes(all: &[Series]) -> String {
    let mut t = String::new();
    for s in all.iter().filter(|s| !s.steps_ms.is_empty()) {
        let parts: Vec<String> = s
            .steps_ms
            .iter()
            .map(|(k, v)| format!("{k} {}", cell(median(v), 2)))
            .collect();
        let _ = writeln!(
            t,
            "{} {}: median ms per step: {}",
            s.case,
            s.label,
            parts.join(", ")
        );
    }
    let find = |c: &str| all.iter().find(|s| s.case == c);
    for (what, case) in [("injection", "c:gpu"), ("engine-applied", "c:applied")] {
        let (Some(g), Some(n)) = (find(case), find("c:none")) else {
            continue;
        };
        if let (Some(gm), Some(nm)) = (g.median_ms(), n.median_ms()) {
            let cpu = median(&g.cpu_ms).zip(median(&n.cpu_ms));
            let rss = median_u(&g.maxrss_kb).zip(median_u(&n.maxrss_kb));
            let _ = writeln!(
                t,
                "{what} (gpurun, {case} vs c:none, interleaved): {:.2}x wall, {:+.2} ms median, \
                 {} ms cpu, {} kB peak RSS",
                gm / nm,
                gm - nm,
                signed(cpu.map(|(a, b)| a - b), 2),
                signed(rss.map(|(a, b)| a - b), 0),
            );
        }
    }
    for s in all {
        if let Some(e) = &s.first_error {
            let _ = writeln!(t, "{} {}: first failure: {}", s.case, s.label, e);
        }
    }
    t
}

/// The JSON document: settings and machine as given, then one object per series.
pub fn json(header: Value, all: &[Series]) -> Value {
    let series: Vec<Value> = all
        .iter()
        .map(|s| {
            json!({
                "case": s.case,
                "runtime": s.runtime,
                "label": s.label,
                "samples": s.wall_ms.len(),
                "runs": s.runs,
                "failures": s.failures,
                "first_error": s.first_error,
                "median_ms": s.median_ms(),
                "min_ms": min(&s.wall_ms),
                "max_ms": max(&s.wall_ms),
                "cpu_ms_median": median(&s.cpu_ms),
                "maxrss_kb_median": median_u(&s.maxrss_kb),
                "maxrss_kb_max": s.maxrss_kb.iter().max(),
                "ratio_vs_crun": ratio(all, s, "crun"),
                "ratio_vs_runc": ratio(all, s, "runc"),
                "cpu_ratio_vs_crun": cpu_ratio(all, s, "crun"),
                "cpu_ratio_vs_runc": cpu_ratio(all, s, "runc"),
                "steps_median_ms": s.steps_ms.iter()
                    .map(|(k, v)| (k.clone(), json!(median(v))))
                    .collect::<serde_json::Map<String, Value>>(),
                "leftovers": s.leftovers,
                "wall_ms": s.wall_ms,
                "cpu_ms": s.cpu_ms,
                "maxrss_kb": s.maxrss_kb,
            })
        })
        .collect();
    let mut doc = header;
    doc["results"] = Value::Array(series);
    doc
}

pub fn write_json(path: &Path, doc: &Value) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_vec_pretty(doc).map_err(|e| format!("encoding results: {e}"))?;
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
