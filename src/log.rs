//! `--log` / `--log-format`: one line per message. JSON lines are what containerd and podman
//! parse (`{"level":"error","msg":…,"time":RFC3339}`); the last error line is what they
//! show a user. Nothing is printed on success: stdout and stderr belong to the container,
//! except warnings about the caller's config without `--log` ([`warn_caller`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

struct Logger {
    file: Option<File>,
    json: bool,
    max: Level,
}

static LOGGER: Mutex<Option<Logger>> = Mutex::new(None);

/// Configure the process-wide logger. Without a file, warnings and errors go to stderr.
pub fn init(path: Option<&Path>, json: bool, debug: bool) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_SYNC | libc::O_CLOEXEC)
                .mode(0o644)
                .open(p)?,
        ),
        None => None,
    };
    let max = if debug { Level::Debug } else { Level::Warn };
    if let Ok(mut g) = LOGGER.lock() {
        *g = Some(Logger { file, json, max });
    }
    Ok(())
}

pub fn log(level: Level, msg: &str) {
    let Ok(mut g) = LOGGER.lock() else { return };
    let (json, max) = g
        .as_ref()
        .map(|l| (l.json, l.max))
        .unwrap_or((false, Level::Warn));
    if level > max {
        return;
    }
    let line = format_line(level, msg, json, SystemTime::now());
    match g.as_mut().and_then(|l| l.file.as_mut()) {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        // Without --log only errors reach stderr: on success stdout/stderr are the
        // container's, and a warning there would corrupt its output.
        None if level == Level::Error => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        None => {}
    }
}

/// Errors also go to stderr when a log file is set, as runc does, so a person at a
/// shell sees them; containerd reads the file.
pub fn error(msg: &str) {
    log(Level::Error, msg);
    let has_file = LOGGER
        .lock()
        .map(|g| g.as_ref().is_some_and(|l| l.file.is_some()))
        .unwrap_or(false);
    if has_file {
        let _ = writeln!(std::io::stderr(), "gpurun: {msg}");
    }
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg);
}

/// A warning about the caller's own input (a field left out of a config): to `--log`,
/// or without one to stderr, as runc does, so the person who wrote the config sees it.
/// It is printed before the container starts, ahead of anything the container writes.
pub fn warn_caller(msg: &str) {
    let has_file = LOGGER
        .lock()
        .map(|g| g.as_ref().is_some_and(|l| l.file.is_some()))
        .unwrap_or(false);
    if has_file {
        log(Level::Warn, msg);
        return;
    }
    let json = LOGGER
        .lock()
        .map(|g| g.as_ref().is_some_and(|l| l.json))
        .unwrap_or(false);
    let line = format_line(Level::Warn, msg, json, SystemTime::now());
    let _ = std::io::stderr().write_all(line.as_bytes());
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg);
}

pub fn format_line(level: Level, msg: &str, json: bool, now: SystemTime) -> String {
    let time = rfc3339(now);
    let code = reason_code(msg);
    if json {
        let mut v = serde_json::json!({"level": level.as_str(), "msg": msg, "time": time});
        if let Some(c) = code {
            v["code"] = c.into();
        }
        format!("{v}\n")
    } else {
        let code = code.map(|c| format!(" code={c}")).unwrap_or_default();
        format!(
            "time=\"{time}\" level={} msg={:?}{code}\n",
            level.as_str(),
            msg
        )
    }
}

/// The stable reason code a GPU refusal or a skipped NVIDIA hook carries in its text, as
/// `[gpu-…]` or `[nvidia-…]` (listed in runtime-spec/gpu.md): the first such bracket.
pub fn reason_code(msg: &str) -> Option<&str> {
    msg.match_indices('[').find_map(|(i, _)| {
        let rest = &msg[i + 1..];
        let code = &rest[..rest.find(']')?];
        let shaped = (code.starts_with("gpu-") || code.starts_with("nvidia-"))
            && !code.ends_with('-')
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        shaped.then_some(code)
    })
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-28T12:00:00.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// A duration as a person writes one on the command line: `30s`, `5m`, `1h`, `2d`,
/// `1h30m`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (30s, 5m, 1h, 2d, 1h30m, 500ms)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let tail = &rest[digits..];
        let unit = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let part = match &tail[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &tail[unit..];
    }
    Ok(total)
}

/// Seconds since the Unix epoch (0 for a clock set before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_852_800, 5);
        assert_eq!(rfc3339(t), "2026-11-28T08:00:00.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn json_line_has_the_fields_containerd_decodes() {
        let line = format_line(Level::Error, "boom \"x\"", true, UNIX_EPOCH);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "boom \"x\"");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000000000Z");
        assert!(v.get("code").is_none(), "no code without one in the text");
    }

    #[test]
    fn a_reason_code_in_the_text_is_a_field_of_both_formats() {
        let msg = "create: GPU GPU-1 [x] is held exclusively by c1 [gpu-exclusive-held]";
        let v: serde_json::Value =
            serde_json::from_str(format_line(Level::Error, msg, true, UNIX_EPOCH).trim())
                .expect("json");
        assert_eq!(v["code"], "gpu-exclusive-held");
        assert_eq!(v["msg"], msg);
        let text = format_line(Level::Warn, msg, false, UNIX_EPOCH);
        assert!(text.ends_with(" code=gpu-exclusive-held\n"), "{text}");
        assert_eq!(
            reason_code("[nvidia-hook-unknown] skipped"),
            Some("nvidia-hook-unknown")
        );
        assert_eq!(reason_code("[GPU-x] [gpu-] no"), None);
        assert_eq!(reason_code("nothing [here"), None);
    }

    #[test]
    fn durations_as_people_write_them() {
        use std::time::Duration;
        let d = |s| parse_duration(s).ok();
        assert_eq!(d("30s"), Some(Duration::from_secs(30)));
        assert_eq!(d("5m"), Some(Duration::from_secs(300)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("90"), Some(Duration::from_secs(90)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in ["", "s", "5x", "1.5h", "-1s", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
