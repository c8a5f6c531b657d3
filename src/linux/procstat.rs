//! `/proc/<pid>/stat`: the one reader of a process's state and start time. Container
//! liveness (`state`) and GPU lease liveness (`gpu::lease`) both ask it, so they agree on
//! what a zombie is: a process that has exited but is not yet reaped is gone.

use std::io;
use std::path::Path;

/// Field 3 of `stat`, as proc(5) names the letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    Running,
    Sleeping,
    DiskSleep,
    Stopped,
    TracingStop,
    Zombie,
    Dead,
    WakeKill,
    Waking,
    Parked,
    Idle,
    /// A letter this table does not know (a newer kernel).
    Unknown(char),
}

impl ProcState {
    pub fn from_char(c: char) -> ProcState {
        match c {
            'R' => ProcState::Running,
            'S' => ProcState::Sleeping,
            'D' => ProcState::DiskSleep,
            'T' => ProcState::Stopped,
            't' => ProcState::TracingStop,
            'Z' => ProcState::Zombie,
            'X' | 'x' => ProcState::Dead,
            'K' => ProcState::WakeKill,
            'W' => ProcState::Waking,
            'P' => ProcState::Parked,
            'I' => ProcState::Idle,
            other => ProcState::Unknown(other),
        }
    }

    /// Whether the process has exited, reaped or not: it runs nothing and holds nothing.
    pub fn has_exited(self) -> bool {
        matches!(self, ProcState::Zombie | ProcState::Dead)
    }
}

/// The fields of `stat` that gpurun reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The command name (field 2) without its parentheses.
    pub comm: String,
    pub state: ProcState,
    /// Field 22: clock ticks since boot, which with the pid tells a process from a later
    /// one that reuses its number.
    pub start_time: u64,
}

/// Parses one `stat` line. The command name may hold spaces and parentheses, so the
/// fields after it are found from the last `)`.
pub fn parse(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut fields = text.get(close + 1..)?.split_whitespace();
    let state = ProcState::from_char(fields.next()?.chars().next()?);
    // After the state (field 3), starttime (field 22) is 19 fields on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        start_time,
    })
}

/// Reads `<proc>/<pid>/stat`; a missing process is `NotFound`.
pub fn read_in(proc: &Path, pid: i32) -> io::Result<Stat> {
    let path = proc.join(pid.to_string()).join("stat");
    let text = std::fs::read_to_string(&path)?;
    parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable {}: {text:?}", path.display()),
        )
    })
}

/// Reads `/proc/<pid>/stat`.
pub fn read(pid: i32) -> io::Result<Stat> {
    read_in(Path::new("/proc"), pid)
}

/// The start time of `pid` if it is a process that has not exited: none for a pid that is
/// free, a zombie, or not a pid at all.
pub fn live_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = read(pid).ok()?;
    (!stat.state.has_exited()).then_some(stat.start_time)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LINE: &str =
        "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 100";

    #[test]
    fn comm_with_spaces_and_parens_is_skipped_whole() {
        let s = parse(LINE).expect("the sample line parses");
        assert_eq!(s.pid, 1234);
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.state, ProcState::Sleeping);
        assert_eq!(s.start_time, 98765);
        let odd = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        let s = parse(odd).expect("a name with spaces and parentheses parses");
        assert_eq!(
            (s.comm.as_str(), s.state),
            ("a) b (c)", ProcState::Sleeping)
        );
    }

    #[test]
    fn every_state_letter_has_its_name() {
        let names = [
            ('R', ProcState::Running),
            ('S', ProcState::Sleeping),
            ('D', ProcState::DiskSleep),
            ('T', ProcState::Stopped),
            ('t', ProcState::TracingStop),
            ('Z', ProcState::Zombie),
            ('X', ProcState::Dead),
            ('P', ProcState::Parked),
            ('I', ProcState::Idle),
            ('?', ProcState::Unknown('?')),
        ];
        for (c, want) in names {
            let line = LINE.replace(") S ", &format!(") {c} "));
            assert_eq!(
                parse(&line).expect("every state letter parses").state,
                want,
                "letter {c}"
            );
        }
        assert!(ProcState::Zombie.has_exited() && ProcState::Dead.has_exited());
        assert!(!ProcState::Stopped.has_exited() && !ProcState::DiskSleep.has_exited());
    }

    #[test]
    fn truncated_lines_are_refused() {
        assert_eq!(parse("1234 (sh) S 1 2 3"), None);
        assert_eq!(parse("1234 sh S"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn own_process_is_live_and_free_pids_are_not() {
        let me = std::process::id() as i32;
        let own = read(me).expect("our own stat");
        assert_eq!(own.pid, me);
        assert_eq!(live_start_time(me), Some(own.start_time));
        assert_eq!(live_start_time(0), None);
        assert_eq!(live_start_time(-1), None);
        assert_eq!(live_start_time(i32::MAX), None);
    }

    #[test]
    fn an_unreaped_child_is_not_live() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        let exited = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            read(pid)
                .map(|s| s.state == ProcState::Zombie)
                .unwrap_or(false)
        });
        assert!(exited, "child {pid} never became a zombie");
        assert_eq!(live_start_time(pid), None);
        child.wait().expect("reap true");
    }
}
