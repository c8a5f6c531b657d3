//! What `gpurun gpus` saw, kept so that a later run can say since when a holder has left a
//! GPU idle. gpurun runs no daemon: "idle since" spans only the runs of `gpurun gpus` that
//! saw it, and a holder no run has seen idle before has no earlier observation.
//!
//! The record is one small file, `<state-dir>/observed.json`, replaced whole by each run
//! that could ask nvidia-smi (a temporary file and a rename: a reader sees one run's record
//! or the next one's). It lists only the holders that held a lease at that run, so it
//! stays as small as the lease table. `create` and `delete` never touch it: they record
//! lease facts only and never run nvidia-smi. Two runs at once both start from the same
//! earlier record; the later rename wins, which loses at most one run's sighting.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::lease::Holder;
use super::GpuError;
use crate::atomic_file::{self, Durability};

pub const OBSERVED_FILE: &str = "observed.json";
/// Format version of the record; a record of another version is ignored (the next run
/// starts afresh and says it has no earlier observation).
pub const OBSERVED_FORMAT: u32 = 1;

/// What one run of `gpurun gpus` saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// When the run observed, in seconds since the Unix epoch.
    pub at: u64,
    pub seen: Vec<Seen>,
}

/// One holder on one GPU, as the runs so far saw it. The holder includes its init's start
/// time: a container created again under the same id starts with no history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub holder: Holder,
    pub gpu: String,
    /// The first of the unbroken series of runs, up to the last one, that saw no GPU
    /// process of the holder on this GPU; `None` when the last run saw one.
    pub idle_since: Option<u64>,
    /// The last run that saw a GPU process of the holder on this GPU.
    pub last_busy: Option<u64>,
}

/// A holder's use of one GPU, as far as the runs of `gpurun gpus` have seen it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Activity {
    /// nvidia-smi lists a process of the holder on the GPU now.
    Busy,
    /// No process of the holder on the GPU now.
    Idle {
        /// The first run of the series of runs, up to this one, that all saw it idle.
        since: u64,
        /// False when this run is the first to see it idle: gpurun has no earlier
        /// observation of how long it has been idle.
        earlier_observation: bool,
        /// The last run that saw a process of the holder on the GPU, if any did.
        last_busy: Option<u64>,
    },
    /// nvidia-smi did not answer: nothing is known about the GPU's processes.
    Unknown,
}

/// One sighting of this run: a holder, a GPU it holds, and whether a process of the
/// holder runs on that GPU now.
pub struct Sighting<'a> {
    pub holder: &'a Holder,
    pub gpu: &'a str,
    pub busy: bool,
}

/// Folds this run's sightings, made at `now`, into the `earlier` record: the new record
/// to keep and each sighting's activity, in the sightings' order.
pub fn observe(earlier: &Record, now: u64, sightings: &[Sighting]) -> (Record, Vec<Activity>) {
    let mut seen = Vec::with_capacity(sightings.len());
    let mut activity = Vec::with_capacity(sightings.len());
    for s in sightings {
        let before = earlier
            .seen
            .iter()
            .find(|e| e.holder == *s.holder && e.gpu == s.gpu);
        let last_busy = before.and_then(|e| e.last_busy);
        let (idle_since, last_busy, act) = if s.busy {
            (None, Some(now), Activity::Busy)
        } else {
            let earlier_since = before.and_then(|e| e.idle_since).filter(|t| *t <= now);
            let since = earlier_since.unwrap_or(now);
            let act = Activity::Idle {
                since,
                earlier_observation: earlier_since.is_some(),
                last_busy,
            };
            (Some(since), last_busy, act)
        };
        seen.push(Seen {
            holder: s.holder.clone(),
            gpu: s.gpu.to_string(),
            idle_since,
            last_busy,
        });
        activity.push(act);
    }
    let record = Record {
        format: OBSERVED_FORMAT,
        at: now,
        seen,
    };
    (record, activity)
}

/// The record in `state_dir`; an absent, unreadable or other-format record is an empty
/// one (no earlier observation).
pub fn load(state_dir: &Path) -> Record {
    std::fs::read(state_dir.join(OBSERVED_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice::<Record>(&d).ok())
        .filter(|r| r.format == OBSERVED_FORMAT)
        .unwrap_or_default()
}

/// Replaces the record in `state_dir` (made if absent).
pub fn save(state_dir: &Path, record: &Record) -> Result<(), GpuError> {
    std::fs::create_dir_all(state_dir).map_err(|e| GpuError::io("creating", state_dir, e))?;
    let data = serde_json::to_vec(record).map_err(|e| GpuError::Lease(e.to_string()))?;
    // Volatile: losing the record in a crash only loses "idle since" history.
    atomic_file::write(
        "writing the GPU observation record",
        &state_dir.join(OBSERVED_FILE),
        &data,
        0o644,
        Durability::Volatile,
    )
    .map_err(|e| GpuError::io(e.step, &e.path, e.source))
}

/// The pid `pid` has in its innermost pid namespace (the last field of `NSpid:` in
/// `<proc>/<pid>/status`): the pid `ps` shows inside the container.
pub fn innermost_pid(proc: &Path, pid: i32) -> Option<i32> {
    innermost_of(&super::procfs::process_status(proc, pid)?)
}

fn innermost_of(status: &std::collections::BTreeMap<String, String>) -> Option<i32> {
    status
        .get("NSpid")?
        .split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str, start_time: u64) -> Holder {
        Holder {
            container_id: id.into(),
            root: "/r".into(),
            pid: 42,
            start_time,
        }
    }

    fn idle(since: u64, earlier_observation: bool, last_busy: Option<u64>) -> Activity {
        Activity::Idle {
            since,
            earlier_observation,
            last_busy,
        }
    }

    #[test]
    fn idle_since_spans_the_runs_that_saw_it_idle() {
        let a = holder("a", 7);
        let at = |busy| {
            vec![Sighting {
                holder: &a,
                gpu: "GPU-0",
                busy,
            }]
        };
        let (r1, act) = observe(&Record::default(), 100, &at(false));
        assert_eq!(act, [idle(100, false, None)], "the first sighting");
        let (r2, act) = observe(&r1, 160, &at(false));
        assert_eq!(act, [idle(100, true, None)]);
        let (r3, act) = observe(&r2, 200, &at(true));
        assert_eq!(act, [Activity::Busy]);
        let (r4, act) = observe(&r3, 260, &at(false));
        assert_eq!(act, [idle(260, false, Some(200))], "busy at the run before");
        let (_, act) = observe(&r4, 300, &at(false));
        assert_eq!(act, [idle(260, true, Some(200))]);
    }

    #[test]
    fn another_incarnation_or_gpu_has_no_history_and_gone_holders_are_dropped() {
        let (old, new, gone) = (holder("a", 7), holder("a", 8), holder("b", 7));
        let first = [
            Sighting {
                holder: &old,
                gpu: "GPU-0",
                busy: false,
            },
            Sighting {
                holder: &gone,
                gpu: "GPU-0",
                busy: false,
            },
        ];
        let (r1, _) = observe(&Record::default(), 100, &first);
        let second = [
            Sighting {
                holder: &new,
                gpu: "GPU-0",
                busy: false,
            },
            Sighting {
                holder: &old,
                gpu: "GPU-1",
                busy: false,
            },
        ];
        let (r2, act) = observe(&r1, 160, &second);
        assert_eq!(act, [idle(160, false, None), idle(160, false, None)]);
        assert_eq!(r2.seen.len(), 2);
        assert!(r2.seen.iter().all(|s| s.holder != gone));
    }

    #[test]
    fn a_record_from_a_clock_set_back_is_no_earlier_observation() {
        let a = holder("a", 7);
        let s = [Sighting {
            holder: &a,
            gpu: "GPU-0",
            busy: false,
        }];
        let (r1, _) = observe(&Record::default(), 500, &s);
        let (_, act) = observe(&r1, 400, &s);
        assert_eq!(act, [idle(400, false, None)]);
    }

    #[test]
    fn the_record_round_trips_and_a_bad_one_is_empty() {
        let t = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(t.path()), Record::default());
        let a = holder("a", 7);
        let (r, _) = observe(
            &Record::default(),
            100,
            &[Sighting {
                holder: &a,
                gpu: "GPU-0",
                busy: true,
            }],
        );
        save(t.path(), &r).expect("saving the record");
        assert_eq!(load(t.path()), r);
        std::fs::write(
            t.path().join(OBSERVED_FILE),
            r#"{"format":99,"at":1,"seen":[]}"#,
        )
        .expect("writing another format");
        assert_eq!(load(t.path()), Record::default());
    }

    #[test]
    fn nspid_gives_the_innermost_pid() {
        let status = "Name:\tsleep\nPid:\t4242\nNSpid:\t4242\t7\nNSpgid:\t4242\t7\n";
        assert_eq!(
            innermost_of(&crate::gpu::procfs::key_values(status)),
            Some(7)
        );
        assert_eq!(
            innermost_of(&crate::gpu::procfs::key_values("NSpid:\t99\n")),
            Some(99)
        );
        assert_eq!(
            innermost_of(&crate::gpu::procfs::key_values("Pid:\t1\n")),
            None
        );
        let me = std::process::id() as i32;
        assert!(innermost_pid(Path::new("/proc"), me).is_some());
        assert_eq!(innermost_pid(Path::new("/proc"), -1), None);
    }
}
