//! `update` and `events`: the cgroup verbs with runc's flags and output.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::runtime::{self, Globals};

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// JSON `linux.resources` from a file, or `-` for stdin.
    #[arg(short = 'r', long)]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with a k/m/g suffix).
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

/// `64m` → 67108864; `-1` stays -1.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| Error::Config(format!("invalid size {s:?}")))?;
    n.checked_mul(mult)
        .ok_or_else(|| Error::Config(format!("size {s:?} is too large")))
}

pub fn update(g: &Globals, a: &UpdateArgs) -> Result<()> {
    let mut v: serde_json::Value = match &a.resources {
        Some(p) => {
            let mut text = String::new();
            if p.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Error::io("reading resources from", "stdin", e))?;
            } else {
                text = std::fs::read_to_string(p)
                    .map_err(|e| Error::io("reading resources from", p, e))?;
            }
            serde_json::from_str(&text).map_err(|e| Error::Config(format!("--resources: {e}")))?
        }
        None => serde_json::json!({}),
    };
    let mut set = |section: &str, key: &str, val: serde_json::Value| {
        if !v[section].is_object() {
            v[section] = serde_json::json!({});
        }
        v[section][key] = val;
    };
    if let Some(m) = &a.memory {
        set("memory", "limit", parse_bytes(m)?.into());
    }
    if let Some(m) = &a.memory_reservation {
        set("memory", "reservation", parse_bytes(m)?.into());
    }
    if let Some(m) = &a.memory_swap {
        set("memory", "swap", parse_bytes(m)?.into());
    }
    if let Some(x) = a.cpu_shares {
        set("cpu", "shares", x.into());
    }
    if let Some(x) = a.cpu_quota {
        set("cpu", "quota", x.into());
    }
    if let Some(x) = a.cpu_period {
        set("cpu", "period", x.into());
    }
    if let Some(x) = &a.cpuset_cpus {
        set("cpu", "cpus", x.clone().into());
    }
    if let Some(x) = &a.cpuset_mems {
        set("cpu", "mems", x.clone().into());
    }
    if let Some(x) = a.pids_limit {
        set("pids", "limit", x.into());
    }
    if let Some(x) = a.blkio_weight {
        set("blockIO", "weight", x.into());
    }
    let r: oci_spec::runtime::LinuxResources =
        serde_json::from_value(v).map_err(|e| Error::Config(format!("resources: {e}")))?;
    runtime::update(g, &a.id, r)
}

/// `5s`, `100ms`, `1m` or plain seconds.
pub fn parse_interval(s: &str) -> Result<Duration> {
    let bad = || Error::Config(format!("invalid --interval {s:?}"));
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if secs.is_nan() || secs <= 0.0 || !secs.is_finite() {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `events`: one stats record with `--stats`; otherwise a record every interval and an
/// `oom` record whenever the OOM count grows, until the container stops.
pub fn events(g: &Globals, id: &str, stats: bool, interval: &str) -> Result<()> {
    let print = |v: &serde_json::Value| println!("{v}");
    if stats {
        print(&runtime::stats_event(g, id)?);
        return Ok(());
    }
    let every = parse_interval(interval)?;
    let mut ooms = runtime::oom_count(g, id)?;
    // Without a watch (no memory controller), OOMs are noticed at each interval.
    let watch = runtime::oom_watch(g, id).ok();
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            let ev = match runtime::stats_event(g, id) {
                Ok(ev) => ev,
                Err(Error::NotRunning(_)) | Err(Error::NotExist(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let now = runtime::oom_count(g, id).unwrap_or(ooms);
            if now > ooms {
                print(&serde_json::json!({"type": "oom", "id": id}));
                ooms = now;
            }
            print(&ev);
            next = Instant::now() + every;
        }
        let wait = next.saturating_duration_since(Instant::now());
        let Some(w) = &watch else {
            std::thread::sleep(wait);
            continue;
        };
        let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        if !poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
            continue;
        }
        let notified = w.drain().is_some_and(|n| n > 0);
        let count = runtime::oom_count(g, id);
        let now = *count.as_ref().unwrap_or(&ooms);
        if notified || now > ooms {
            ooms = ooms.max(now);
            print(&serde_json::json!({"type": "oom", "id": id}));
        }
        if matches!(count, Err(Error::NotRunning(_)) | Err(Error::NotExist(_))) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_intervals_parse_like_runcs() {
        assert_eq!(parse_bytes("64m").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("1G").ok(), Some(1 << 30));
        assert_eq!(parse_bytes("-1").ok(), Some(-1));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_interval("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_interval("100ms").ok(),
            Some(Duration::from_millis(100))
        );
        assert!(parse_interval("0s").is_err());
    }
}
