//! Reading the journal back: which records `--history` shows, and how a job ended as
//! far as gpurun saw it, said from the records alone — never guessed.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Caller, Event, Record};

/// What `--history GPU|ID` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A GPU's UUID (an index is resolved to it by the caller).
    Gpu(String),
    Container(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub target: Option<Target>,
    /// Milliseconds since the epoch; older records are left out.
    pub since_ms: Option<i64>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        let target = match &self.target {
            None => true,
            Some(Target::Gpu(uuid)) => r.gpus.iter().any(|g| g.eq_ignore_ascii_case(uuid)),
            Some(Target::Container(id)) => &r.container == id,
        };
        let recent = match self.since_ms {
            None => true,
            Some(since) => parse_rfc3339_ms(&r.time).is_some_and(|t| t >= since),
        };
        target && recent
    }
}

/// `--since`: an RFC 3339 time, or a duration back from `now` (`90s`, `30m`, `1h`, `2d`).
pub fn parse_since(s: &str, now: SystemTime) -> Result<i64, String> {
    if let Some(t) = parse_rfc3339_ms(s) {
        return Ok(t);
    }
    let ms = crate::log::parse_duration(s)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .map_err(|_| format!("--since {s:?}: neither an RFC 3339 time nor a duration like 1h"))?;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(now_ms - ms)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = s.get(start..i)?;
        let ms3 = format!("{:0<3}", &digits[..digits.len().min(3)]);
        frac_ms = ms3.parse().ok()?;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (num(i + 1, i + 3)? * 60 + num(i + 4, i + 6)?)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + frac_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Who asked, in a few words: `uid 1000, pid 4242 (gpurun kill job TERM), via bash pid 4200`.
pub fn who(c: &Caller) -> String {
    let uid = c.uid.map_or("uid ?".to_string(), |u| format!("uid {u}"));
    let via = match (c.parents.last(), &c.client) {
        (Some(p), Some(name)) => format!(", via {name} pid {} ({})", p.pid, p.cmdline),
        (Some(p), None) => format!(", parent pid {} ({})", p.pid, p.cmdline),
        (None, _) => String::new(),
    };
    format!("{uid}, pid {} ({}){via}", c.pid, c.cmdline)
}

/// Who asked, in fewer words: `uid 1000 via bash pid 4200`.
pub fn who_briefly(c: &Caller) -> String {
    let uid = c.uid.map_or("uid ?".to_string(), |u| format!("uid {u}"));
    match (c.parents.last(), &c.client) {
        (Some(p), Some(name)) => format!("{uid} via {name} pid {}", p.pid),
        _ => format!("{uid}, pid {}", c.pid),
    }
}

/// How the job released by `records[at]` ended, from that record and the ones of the
/// same container since its grant.
pub fn ending(records: &[Record], at: usize) -> String {
    let Some(Event::Release(rel)) = records.get(at).map(|r| &r.event) else {
        return String::new();
    };
    let me = &records[at];
    let since_grant = records[..at]
        .iter()
        .rev()
        .filter(|r| r.container == me.container && r.root == me.root)
        .take_while(|r| !matches!(r.event, Event::Grant(_)));
    let mut exit = None;
    let mut kills = Vec::new();
    for r in since_grant {
        match &r.event {
            Event::Exit { status } => exit = exit.or(Some(*status)),
            Event::Kill(k) => {
                kills.push(format!("{} sent by {}", k.signal, who_briefly(&k.caller)))
            }
            _ => {}
        }
    }
    kills.reverse();
    let mut parts = Vec::new();
    match exit {
        Some(status) => parts.push(format!("exited with status {status}")),
        None if rel.found == "running" || rel.found == "paused" => {
            let by = rel.caller.as_ref().map(who_briefly).unwrap_or_default();
            parts.push(format!("killed (SIGKILL) by delete --force from {by}"));
        }
        None if rel.found == "created" => parts.push("deleted before it started".to_string()),
        None => parts.push("ended, status not seen by gpurun".to_string()),
    }
    if let Some(n) = rel.oom_kills.filter(|&n| n > 0) {
        parts.push(format!("OOM killer killed {n} process(es) in its cgroup"));
    }
    parts.extend(kills);
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_durations_parse() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-12-06T16:00:00.250000000Z"),
            Some(1_796_572_800_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-06T17:00:00+01:00"),
            parse_rfc3339_ms("2026-12-06T16:00:00Z")
        );
        assert_eq!(parse_rfc3339_ms("2026-13-06T16:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        let now = UNIX_EPOCH + std::time::Duration::from_secs(10_000);
        assert_eq!(parse_since("1h", now), Ok(10_000_000 - 3_600_000));
        assert_eq!(parse_since("90s", now), Ok(10_000_000 - 90_000));
        assert!(parse_since("1w", now).is_err());
        assert!(parse_since("h", now).is_err());
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1000));
    }
}
