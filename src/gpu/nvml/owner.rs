//! Which container a GPU process belongs to, for `gpurun gpus`: nvidia-smi reports host
//! pids; the lease table knows each holder's init pid. A process belongs to a holder when
//! it is that init, when it shares the init's pid namespace (and that namespace is not the
//! one gpurun itself runs in), or when it sits in every one of the init's cgroups (or
//! below them) — `exec` joins all of them, a host process in the same login session does not.

use std::path::{Path, PathBuf};

/// The index in `holders` (container init pids) of the container `pid` runs in.
pub fn container_of(proc: &Path, pid: i32, holders: &[i32]) -> Option<usize> {
    if let Some(i) = holders.iter().position(|h| *h == pid) {
        return Some(i);
    }
    if let Some(ns) = pid_ns(proc, &pid.to_string()) {
        if pid_ns(proc, "self").as_ref() != Some(&ns) {
            let same = holders
                .iter()
                .position(|h| pid_ns(proc, &h.to_string()).as_ref() == Some(&ns));
            if same.is_some() {
                return same;
            }
        }
    }
    let mine = cgroups(proc, pid)?;
    holders
        .iter()
        .position(|h| cgroups(proc, *h).is_some_and(|theirs| inside(&mine, &theirs)))
}

fn pid_ns(proc: &Path, who: &str) -> Option<PathBuf> {
    std::fs::read_link(proc.join(who).join("ns/pid")).ok()
}

/// `/proc/<pid>/cgroup` as (hierarchy id and controllers, path) pairs.
fn cgroups(proc: &Path, pid: i32) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup")).ok()?;
    Some(parse_cgroups(&text))
}

pub fn parse_cgroups(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (hier, path) = l.rsplit_once(':')?;
            Some((hier.to_string(), path.to_string()))
        })
        .collect()
}

/// True when, for every hierarchy where the holder is not at the root, `mine` is in the
/// holder's cgroup or below it; false when the holder is at the root everywhere.
pub fn inside(mine: &[(String, String)], holder: &[(String, String)]) -> bool {
    let placed: Vec<&(String, String)> = holder.iter().filter(|(_, p)| p != "/").collect();
    !placed.is_empty()
        && placed.iter().all(|(hier, hp)| {
            mine.iter().any(|(h, p)| {
                h == hier
                    && (p == hp
                        || p.strip_prefix(hp.as_str())
                            .is_some_and(|rest| rest.starts_with('/')))
            })
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_inside_when_every_placed_hierarchy_contains_it() {
        let holder = parse_cgroups(
            "12:memory:/gpurun/job\n1:name=systemd:/user.slice/session-1.scope\n0::/\n",
        );
        let exec = parse_cgroups(
            "12:memory:/gpurun/job/sub\n1:name=systemd:/user.slice/session-1.scope\n0::/\n",
        );
        let neighbour = parse_cgroups(
            "12:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/\n",
        );
        let prefix_only =
            parse_cgroups("12:memory:/gpurun/jobs\n1:name=systemd:/user.slice/session-1.scope\n");
        assert!(inside(&exec, &holder));
        assert!(
            !inside(&neighbour, &holder),
            "same session, other memory cgroup"
        );
        assert!(
            !inside(&prefix_only, &holder),
            "a name prefix is not a parent"
        );
        let root = parse_cgroups("0::/\n");
        assert!(!inside(&root, &root), "a holder at the root owns nothing");
    }

    #[test]
    fn the_init_itself_and_unrelated_processes() {
        let me = std::process::id() as i32;
        assert_eq!(container_of(Path::new("/proc"), me, &[1, me]), Some(1));
        assert_eq!(container_of(Path::new("/proc"), -5, &[me]), None);
    }
}
