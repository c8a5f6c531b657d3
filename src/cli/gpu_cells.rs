//! The text of `gpurun gpus`'s table cells: holders with since when they hold a GPU and
//! whether they use it, processes with the pid the container sees, times in UTC.

use std::path::Path;

use crate::gpu::observe::Activity;

/// Printed under the table when a holder is shown idle.
pub const IDLE_NOTE: &str = "idle: no process of the holder on the GPU at this run of \
     `gpurun gpus` and at each earlier run since the time shown; gpurun runs no daemon, so \
     it knows nothing of the time between runs";

/// What a holder cell shows.
pub struct Holder<'a> {
    pub id: &'a str,
    pub root: &'a Path,
    pub pid: i32,
    pub exclusive: bool,
    pub mps: bool,
    pub acquired: Option<u64>,
    pub activity: &'a Activity,
}

/// `job (MPS) (pid 4242, root /run/gpurun, exclusive, since 2026-12-06T15:40:02Z (14m),
/// idle since at least …)`.
pub fn holder(h: &Holder, now: u64) -> String {
    let mps = if h.mps { " (MPS)" } else { "" };
    let excl = if h.exclusive { ", exclusive" } else { "" };
    let since = match h.acquired {
        Some(t) => format!("since {} ({})", clock(t), age(now.saturating_sub(t))),
        None => "since unknown".to_string(),
    };
    let activity = match h.activity {
        Activity::Busy => ", busy".to_string(),
        Activity::Idle {
            since,
            earlier_observation,
            last_busy,
        } => {
            let busy = last_busy
                .map(|b| format!("; busy at {}", clock(b)))
                .unwrap_or_default();
            let how_long = if *earlier_observation {
                age(now.saturating_sub(*since))
            } else if last_busy.is_some() {
                "this run".to_string()
            } else {
                "this run; no earlier observation".to_string()
            };
            format!(", idle since at least {} ({how_long}{busy})", clock(*since))
        }
        Activity::Unknown => String::new(),
    };
    format!(
        "{}{mps} (pid {}, root {}{excl}, {since}{activity})",
        h.id,
        h.pid,
        h.root.display()
    )
}

/// `4242 (job, 300 MiB) pid 7 inside`: the host's pid, then the container's view of it.
pub fn process(pid: i32, container: Option<&str>, inside: Option<i32>, mib: Option<u64>) -> String {
    let mem = mib.map(|m| format!(", {m} MiB")).unwrap_or_default();
    let inside = match (container, inside) {
        (Some(_), Some(p)) => format!(" pid {p} inside"),
        _ => String::new(),
    };
    format!("{pid} ({}{mem}){inside}", container.unwrap_or("host"))
}

pub fn memory(used: Option<u64>, total: Option<u64>) -> String {
    let n = |x: Option<u64>| x.map_or("-".to_string(), |x| x.to_string());
    format!("{}/{} MiB", n(used), n(total))
}

pub fn joined(cells: Vec<String>) -> String {
    if cells.is_empty() {
        "-".into()
    } else {
        cells.join("; ")
    }
}

/// `2026-12-06T15:40:02Z`.
pub fn clock(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    to_the_second(&crate::log::rfc3339(t))
}

/// `2026-12-06T16:03:45.127811821Z` as `2026-12-06T16:03:45Z`: a table's width is better
/// spent on what happened than on nanoseconds.
pub fn to_the_second(t: &str) -> String {
    match (t.get(..19), t.ends_with('Z')) {
        (Some(head), true) => format!("{head}Z"),
        _ => t.to_string(),
    }
}

/// `45s`, `14m`, `3h12m`, `2d4h`.
pub fn age(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 60 {
        format!("{secs}s")
    } else if m < 60 {
        format!("{m}m")
    } else if h < 24 {
        format!("{h}h{:02}m", m % 60)
    } else {
        format!("{d}d{}h", h % 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages_read_as_a_person_writes_them() {
        assert_eq!(clock(0), "1970-01-01T00:00:00Z");
        assert_eq!(clock(1_796_572_802), "2026-12-06T16:00:02Z");
        assert_eq!(age(45), "45s");
        assert_eq!(age(14 * 60 + 5), "14m");
        assert_eq!(age(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2d4h");
    }

    #[test]
    fn a_holder_says_since_when_and_how_idle() {
        let root = Path::new("/run/gpurun");
        let idle = Activity::Idle {
            since: 1000,
            earlier_observation: false,
            last_busy: None,
        };
        let h = Holder {
            id: "job",
            root,
            pid: 42,
            exclusive: true,
            mps: false,
            acquired: Some(400),
            activity: &idle,
        };
        assert_eq!(
            holder(&h, 1000),
            "job (pid 42, root /run/gpurun, exclusive, since 1970-01-01T00:06:40Z (10m), \
             idle since at least 1970-01-01T00:16:40Z (this run; no earlier observation))"
        );
        let later = Activity::Idle {
            since: 1000,
            earlier_observation: true,
            last_busy: Some(900),
        };
        let h = Holder {
            mps: true,
            acquired: None,
            exclusive: false,
            activity: &later,
            ..h
        };
        assert_eq!(
            holder(&h, 1300),
            "job (MPS) (pid 42, root /run/gpurun, since unknown, idle since at least \
             1970-01-01T00:16:40Z (5m; busy at 1970-01-01T00:15:00Z))"
        );
        assert_eq!(
            process(4242, Some("job"), Some(7), Some(300)),
            "4242 (job, 300 MiB) pid 7 inside"
        );
        assert_eq!(process(99, None, Some(99), None), "99 (host)");
    }
}
