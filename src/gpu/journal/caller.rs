//! Who asked: the gpurun process's uid, pid and command line, and its parents up to the
//! first one a person would recognise as the client (a shell, a container engine's shim
//! or monitor, the engine, the kubelet), read from `/proc`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{cut, MAX_TEXT};

/// Programs that stand for "who asked" when found among gpurun's parents. Matched on the
/// executable's file name, or its `comm` (15 bytes at most).
const CLIENTS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "fish",
    "ksh",
    "tcsh",
    "csh",
    "busybox",
    "containerd-shim-runc-v2",
    "containerd-shim",
    "containerd",
    "conmon",
    "podman",
    "crio",
    "cri-o",
    "dockerd",
    "kubelet",
    "sudo",
    "su",
    "sshd",
    "systemd",
];
/// Parents read at most: enough for shell → sudo → shell → script chains.
const MAX_CHAIN: usize = 8;

/// One process: its pid, real uid, `comm` and command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: i32,
    pub uid: Option<u32>,
    pub comm: String,
    pub cmdline: String,
}

/// The process that asked (gpurun itself) and its parents, nearest first, up to and
/// including the recognised client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: Option<u32>,
    pub pid: i32,
    pub cmdline: String,
    pub parents: Vec<Proc>,
    /// The recognised client's name, when one was found.
    pub client: Option<String>,
}

/// The calling gpurun process, as `/proc` shows it.
pub fn current() -> Caller {
    of(Path::new("/proc"), std::process::id() as i32)
}

/// `pid` and its parents, read under `proc` (a fake tree in tests).
pub fn of(proc: &Path, pid: i32) -> Caller {
    let me = read(proc, pid);
    let mut parents = Vec::new();
    let mut client = None;
    let mut next = me.as_ref().and_then(|(_, ppid)| *ppid);
    while let Some(ppid) = next.filter(|&p| p > 0) {
        let Some((p, grand)) = read(proc, ppid) else {
            break;
        };
        let name = client_name(proc, &p);
        parents.push(p);
        if name.is_some() || parents.len() >= MAX_CHAIN {
            client = name;
            break;
        }
        next = grand;
    }
    let (uid, cmdline) = me.map_or((None, String::new()), |(p, _)| (p.uid, p.cmdline));
    Caller {
        uid,
        pid,
        cmdline,
        parents,
        client,
    }
}

/// The process and its parent's pid.
fn read(proc: &Path, pid: i32) -> Option<(Proc, Option<i32>)> {
    let dir = proc.join(pid.to_string());
    let status = crate::gpu::procfs::process_status(proc, pid)?;
    let field = |key: &str| status.get(key).map(String::as_str);
    let comm = field("Name").unwrap_or_default().to_string();
    let uid = field("Uid")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    let ppid = field("PPid").and_then(|v| v.parse().ok());
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    Some((
        Proc {
            pid,
            uid,
            comm,
            cmdline: printable_cmdline(&cmdline),
        },
        ppid,
    ))
}

/// NUL-separated arguments as one space-separated line, cut at [`MAX_TEXT`] bytes.
fn printable_cmdline(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    cut(&String::from_utf8_lossy(raw).replace('\0', " "), MAX_TEXT)
}

/// The client name `p` is recognised as: its executable's file name, else its `comm`.
fn client_name(proc: &Path, p: &Proc) -> Option<String> {
    let exe = std::fs::read_link(proc.join(p.pid.to_string()).join("exe"))
        .ok()
        .and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()));
    let argv0 = p
        .cmdline
        .split(' ')
        .next()
        .and_then(|a| Path::new(a.trim_start_matches('-')).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    [exe, argv0, Some(p.comm.clone())]
        .into_iter()
        .flatten()
        .find(|n| CLIENTS.contains(&n.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(proc: &Path, pid: i32, ppid: i32, name: &str, uid: u32, argv: &[&str]) {
        let d = proc.join(pid.to_string());
        std::fs::create_dir_all(&d).expect("mkdir a fake /proc/<pid>");
        std::fs::write(
            d.join("status"),
            format!("Name:\t{name}\nPPid:\t{ppid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        )
        .expect("write a fake status");
        let mut cmd = argv.join("\0");
        cmd.push('\0');
        std::fs::write(d.join("cmdline"), cmd).expect("write a fake cmdline");
    }

    #[test]
    fn the_chain_stops_at_the_first_recognised_client() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path();
        fake(p, 1, 0, "init", 0, &["/sbin/init"]);
        fake(p, 40, 1, "containerd", 0, &["/usr/bin/containerd"]);
        fake(
            p,
            50,
            40,
            "containerd-shim",
            0,
            &["/usr/bin/containerd-shim-runc-v2", "-id", "x"],
        );
        fake(p, 60, 50, "python3", 1000, &["python3", "reaper.py"]);
        fake(
            p,
            70,
            60,
            "gpurun",
            1000,
            &["gpurun", "kill", "job", "TERM"],
        );
        let c = of(p, 70);
        assert_eq!(c.uid, Some(1000));
        assert_eq!(c.cmdline, "gpurun kill job TERM");
        let pids: Vec<i32> = c.parents.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [60, 50], "stops at the shim");
        assert_eq!(c.parents[0].cmdline, "python3 reaper.py");
        assert_eq!(c.client.as_deref(), Some("containerd-shim-runc-v2"));
    }

    #[test]
    fn without_a_client_the_chain_ends_at_init_or_the_bound() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path();
        fake(p, 1, 0, "init", 0, &["/sbin/init"]);
        fake(p, 2, 1, "cron-ish", 0, &["cron-ish"]);
        fake(p, 3, 2, "gpurun", 0, &["gpurun", "delete", "--force", "x"]);
        let c = of(p, 3);
        assert_eq!(c.parents.len(), 2);
        assert_eq!(c.client, None);
        let long = "x".repeat(5000);
        assert!(printable_cmdline(long.as_bytes()).len() <= MAX_TEXT + 3);
    }
}
