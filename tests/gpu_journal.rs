//! The GPU journal: every record whole under racing writers, a killed writer and a full
//! disk; rotation at its limit; and, with the real binary on the fake GPU node (root),
//! who killed a job, how it ended (exit status, OOM kill, delete --force), and
//! `gpus --history` filtering by GPU, id and time.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
mod reliability;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use gpu_node::*;
use gpurun::config::JournalConfig;
use gpurun::gpu::journal::{Event, Journal, Record};
use serde_json::Value;

/// Set in the environment of this binary's own child writers.
const RACE_DIR: &str = "GPURUN_TEST_JOURNAL_RACE_DIR";
const RACE_TAG: &str = "GPURUN_TEST_JOURNAL_RACE_TAG";
const THREADS: usize = 4;
const PER_THREAD: i32 = 60;
const PROCESSES: usize = 4;

fn journal_at(dir: &Path, max_size: u64, keep: u32) -> Journal {
    Journal::new(&JournalConfig {
        enabled: true,
        dir: dir.to_path_buf(),
        max_size,
        keep,
    })
}

/// `THREADS` threads, each appending `PER_THREAD` records named `<tag>-<thread>`.
fn write_from_threads(dir: &Path, tag: &str) {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (dir, name) = (dir.to_path_buf(), format!("{tag}-{t}"));
            std::thread::spawn(move || {
                let j = journal_at(&dir, 16 * 1024, 10_000);
                for n in 0..PER_THREAD {
                    let rec = Record::now(
                        &name,
                        Path::new("/r"),
                        &[GPU0.into()],
                        Event::Exit { status: n },
                    );
                    j.append(&rec).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// The writer half of the race below, run only by it (`--ignored --exact`).
#[test]
#[ignore = "the writer half of racing_writers_in_threads_and_processes_keep_every_record_whole"]
fn racing_writer_child() {
    if let (Some(dir), Ok(tag)) = (std::env::var_os(RACE_DIR), std::env::var(RACE_TAG)) {
        write_from_threads(Path::new(&dir), &tag);
    }
}

#[test]
fn racing_writers_in_threads_and_processes_keep_every_record_whole() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("journal");
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "racing_writer_child",
                    "--exact",
                    "--ignored",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(RACE_DIR, &dir)
                .env(RACE_TAG, format!("proc{p}"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    write_from_threads(&dir, "parent");
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child writer failed");
    }
    let h = journal_at(&dir, 16 * 1024, 10_000).read().unwrap();
    assert_eq!(h.skipped, 0, "a torn or interleaved record");
    let mut seen: Vec<(String, i32)> = h
        .records
        .iter()
        .map(|r| match r.event {
            Event::Exit { status } => (r.container.clone(), status),
            _ => panic!("unexpected record {r:?}"),
        })
        .collect();
    let total = (PROCESSES + 1) * THREADS * PER_THREAD as usize;
    assert_eq!(seen.len(), total);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "a record was written twice");
    // Each writer's own records stay in its order across the rotated files.
    for name in ["parent-0", "proc3-2"] {
        let mine: Vec<i32> = h
            .records
            .iter()
            .filter(|r| r.container == name)
            .filter_map(|r| match r.event {
                Event::Exit { status } => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(mine, (0..PER_THREAD).collect::<Vec<_>>(), "{name}");
    }
    assert!(dir.join("journal.1").exists(), "the race also rotated");
}

#[test]
fn rotation_at_the_limit_keeps_the_newest_files_private() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("journal");
    let j = journal_at(&dir, 4096, 2);
    for n in 0..300 {
        let rec = Record::now(
            "job",
            Path::new("/r"),
            &[GPU0.into()],
            Event::Exit { status: n },
        );
        j.append(&rec).unwrap();
    }
    for name in ["journal", "journal.1", "journal.2"] {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        assert!(meta.len() <= 4096, "{name} is {} bytes", meta.len());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    assert!(
        !dir.join("journal.3").exists(),
        "more than keep = 2 old files"
    );
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let statuses: Vec<i32> = j
        .read()
        .unwrap()
        .records
        .iter()
        .filter_map(|r| match r.event {
            Event::Exit { status } => Some(status),
            _ => None,
        })
        .collect();
    let first = *statuses.first().unwrap();
    assert!(first > 0, "the oldest records were rotated away");
    assert_eq!(
        statuses,
        (first..300).collect::<Vec<_>>(),
        "a gap in what is kept"
    );
}

fn gpu_bundle(script: &str) -> Bundle {
    let mut b = bundle(script);
    set_env(&mut b, "NVIDIA_VISIBLE_DEVICES=0");
    privileged(&mut b);
    b
}

/// `gpus --history [args]` as JSON, and its stderr.
fn history(node: &Node, rt: &Runtime, args: &[&str]) -> (Vec<Value>, String) {
    let mut all = vec!["gpus", "--history"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = node.cmd(rt).args(&all).output().unwrap();
    assert!(out.status.success(), "gpus {all:?}: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    (v.as_array().cloned().unwrap(), stderr(&out))
}

fn of_container<'a>(records: &'a [Value], id: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["container"] == id).collect()
}

fn events(records: &[&Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn start(node: &Node, rt: &Runtime, b: &Bundle, id: &str) {
    let out = node.create(rt, b, id);
    assert!(out.status.success(), "create {id}: {}", stderr(&out));
    node.ok(rt, &["start", id]);
    rt.wait_status(id, "running");
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    format!("sha256:{}", stdout(&out).split_whitespace().next().unwrap())
}

#[test]
fn kill_and_delete_force_name_who_asked_and_the_grant_names_the_job() {
    if skip("kill_and_delete_force_name_who_asked_and_the_grant_names_the_job") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let (killed, forced) = (id("journal-killed"), id("journal-forced"));
    // The container's init ignores SIGTERM unless it traps it.
    let mut b = gpu_bundle("trap 'exit 143' TERM; sleep 60 & wait");
    annotate(&mut b, "io.kubernetes.cri.sandbox-name", "trainer-0");
    annotate(&mut b, "io.kubernetes.cri.sandbox-namespace", "team-a");
    annotate(
        &mut b,
        "io.kubernetes.cri.image-name",
        "registry.example/train:v3",
    );
    // A complete discovery cache: no create below has a reason to run nvidia-smi, and the
    // journal's records must not give it one.
    node.ok(&rt, &["gpus", "--refresh"]);
    let smi_before = node.smi_calls().len();
    start(&node, &rt, &b, &killed);

    let marker = format!("journal-killer-{}", std::process::id());
    let script = format!(": {marker}; \"$0\" --root \"$1\" kill \"$2\" TERM; exit 0");
    let out = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_gpurun")])
        .arg(rt.root.path())
        .arg(&killed)
        .env("GPURUN_CONFIG", &node.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    rt.wait_status(&killed, "stopped");
    node.ok(&rt, &["delete", &killed]);

    let (all, _) = history(&node, &rt, &[]);
    let mine = of_container(&all, &killed);
    assert_eq!(events(&mine), ["grant", "kill", "release"], "{mine:?}");
    let grant = mine[0];
    assert_eq!(grant["gpus"][0], GPU0);
    assert_eq!(grant["pod"]["name"], "trainer-0");
    assert_eq!(grant["pod"]["namespace"], "team-a");
    assert_eq!(
        grant["image"]["io.kubernetes.cri.image-name"],
        "registry.example/train:v3"
    );
    assert_eq!(
        grant["config_sha256"],
        sha256sum(&b.path().join("config.json"))
    );
    assert_eq!(grant["source"], "env");
    let kill = mine[1];
    assert_eq!(kill["signal"], "SIGTERM");
    assert_eq!(kill["caller"]["uid"], 0);
    let cmdline = kill["caller"]["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains(&format!("kill {killed} TERM")),
        "{cmdline}"
    );
    assert_eq!(kill["caller"]["client"], "bash");
    let shell = kill["caller"]["parents"][0]["cmdline"].as_str().unwrap();
    assert!(shell.contains(&marker), "the killer's shell: {shell}");
    let ended = mine[2]["ended"].as_str().unwrap();
    assert!(
        ended.starts_with("ended, status not seen by gpurun")
            && ended.contains("SIGTERM sent by uid 0"),
        "{ended}"
    );
    assert!(
        mine[2]["caller"].is_null(),
        "a plain delete names no caller"
    );

    start(&node, &rt, &gpu_bundle("sleep 60"), &forced);
    node.ok(&rt, &["delete", "--force", &forced]);
    let (all, _) = history(&node, &rt, &[&forced]);
    assert_eq!(events(&of_container(&all, &forced)), ["grant", "release"]);
    let release = &all[1];
    assert_eq!(release["found"], "running");
    assert_eq!(release["forced"], true);
    let ended = release["ended"].as_str().unwrap();
    assert!(
        ended.starts_with("killed (SIGKILL) by delete --force"),
        "{ended}"
    );
    assert!(ended.contains("from uid 0"), "{ended}");
    let asked = release["caller"]["cmdline"].as_str().unwrap();
    assert!(
        asked.contains(&format!("delete --force {forced}")),
        "{asked}"
    );
    assert_eq!(
        node.smi_calls().len(),
        smi_before,
        "create, kill or delete ran nvidia-smi: {:?}",
        node.smi_calls()
    );

    let table = node.ok(&rt, &["gpus", "--history", &killed]);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" kill ") && l.contains("SIGTERM sent by uid 0")),
        "{table}"
    );
    let mode = std::fs::metadata(node.journal_dir().join("journal"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the journal holds other users' command lines"
    );
}

#[test]
fn a_foreground_run_records_its_exit_status_and_history_filters() {
    if skip("a_foreground_run_records_its_exit_status_and_history_filters") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let job = id("journal-exit");
    let out = node.run(&rt, &gpu_bundle("exit 3"), &job);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let (mine, _) = history(&node, &rt, &[&job]);
    assert_eq!(
        events(&mine.iter().collect::<Vec<_>>()),
        ["grant", "exit", "release"]
    );
    assert_eq!(mine[1]["status"], 3);
    assert_eq!(mine[2]["ended"], "exited with status 3");

    let ids = |args: &[&str]| -> Vec<String> {
        history(&node, &rt, args)
            .0
            .iter()
            .map(|r| r["container"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["0"]).len(), 3, "GPU 0 by index");
    assert_eq!(ids(&[GPU0]).len(), 3, "GPU 0 by UUID");
    assert_eq!(
        ids(&["0000:3b:00.0"]).len(),
        3,
        "GPU 0 by PCI address, as --wait names it"
    );
    assert!(ids(&["1"]).is_empty(), "nothing on GPU 1");
    assert!(ids(&["no-such-job"]).is_empty());
    assert_eq!(ids(&["--since", "1h"]).len(), 3);
    assert!(ids(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let out = node
        .cmd(&rt)
        .args(["gpus", "--history", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("yesterday"), "{}", stderr(&out));
}

#[test]
fn an_oom_killed_job_is_recorded_as_such_on_cgroup_v1() {
    if skip("an_oom_killed_job_is_recorded_as_such_on_cgroup_v1") {
        return;
    }
    if !Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists() {
        gpurun::skip::not_applicable(
            "an_oom_killed_job_is_recorded_as_such_on_cgroup_v1",
            "no cgroup v1 memory controller on this host",
        );
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let job = id("journal-oom");
    // busybox tail keeps an endless line in memory until the OOM killer stops it.
    let mut b = gpu_bundle("tail /dev/zero; echo tail=$?");
    b.config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 << 20});
    let out = node.run(&rt, &b, &job);
    assert!(
        has_line(&out, "tail=137"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    let (mine, _) = history(&node, &rt, &[&job]);
    assert_eq!(
        events(&mine.iter().collect::<Vec<_>>()),
        ["grant", "exit", "release"]
    );
    let release = &mine[2];
    assert!(release["oom_kills"].as_u64().unwrap() >= 1, "{release}");
    let ended = release["ended"].as_str().unwrap();
    assert!(ended.contains("OOM killer killed"), "{ended}");
}

/// A small tmpfs mounted over a directory by the test, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs on {}", dir.display());
        SmallFs(dir.to_path_buf())
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write(&chunk).is_ok_and(|n| n > 0) {}
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_journal_file_system_costs_a_warning_not_the_container() {
    if skip("a_full_journal_file_system_costs_a_warning_not_the_container") {
        return;
    }
    let node = Node::new(false);
    let fs = SmallFs::mount(&node.journal_dir(), "256k");
    let rt = Runtime::new();
    let (before, full) = (id("journal-before"), id("journal-full"));
    let out = node.run(&rt, &gpu_bundle("true"), &before);
    assert_ran(&out);
    let kept = std::fs::read(node.journal_dir().join("journal")).unwrap();

    fs.fill();
    // The journal's last page may still hold a record or two: run jobs until one is not
    // recorded; every one of them must run.
    let mut warned = None;
    for n in 0..8 {
        let job = format!("{full}-{n}");
        let out = node.run(&rt, &gpu_bundle("echo still-ran"), &job);
        assert_ran(&out);
        assert!(has_line(&out, "still-ran"), "{}", stdout(&out));
        let err = stderr(&out);
        if err.contains("not recorded in the GPU journal") {
            warned = Some(err);
            break;
        }
    }
    let err = warned.expect("a full file system never cost a warning");
    assert!(err.contains("No space left on device"), "{err}");

    let now = std::fs::read(node.journal_dir().join("journal")).unwrap();
    assert!(
        now.starts_with(&kept) && now.ends_with(b"\n"),
        "no earlier record lost, no torn tail"
    );
    std::fs::remove_file(node.journal_dir().join("filler")).unwrap();
    let (all, warn) = history(&node, &rt, &[]);
    assert!(!warn.contains("damaged"), "{warn}");
    assert_eq!(
        events(&of_container(&all, &before)),
        ["grant", "exit", "release"]
    );
}

fn failpoint_create(node: &Node, rt: &Runtime, b: &Bundle, id: &str) -> Output {
    b.write();
    rt.track(id);
    let mut cmd = Command::new(reliability::failpoints_binary());
    cmd.arg("--root")
        .arg(rt.root.path())
        .args(["create", "-b"])
        .arg(b.path())
        .arg(id)
        .env("GPURUN_CONFIG", &node.config)
        .env("GPURUN_FAILPOINT", "journal-mid-record")
        .stdin(Stdio::null());
    reliability::output_within(
        &mut cmd,
        Duration::from_secs(120),
        "create killed mid-record",
    )
}

#[test]
fn a_writer_killed_mid_record_loses_nothing_and_the_next_writer_repairs() {
    if skip("a_writer_killed_mid_record_loses_nothing_and_the_next_writer_repairs") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let (first, torn) = (id("journal-first"), id("journal-torn"));
    assert_ran(&node.run(&rt, &gpu_bundle("true"), &first));
    let path = node.journal_dir().join("journal");
    let kept = std::fs::read(&path).unwrap();

    let out = failpoint_create(&node, &rt, &gpu_bundle("sleep 60"), &torn);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    let now = std::fs::read(&path).unwrap();
    assert!(now.starts_with(&kept), "an earlier record changed");
    assert!(
        now.len() > kept.len() && !now.ends_with(b"\n"),
        "no torn tail to test"
    );

    let (all, warn) = history(&node, &rt, &[]);
    assert!(warn.contains("1 damaged"), "{warn}");
    assert_eq!(
        events(&of_container(&all, &first)),
        ["grant", "exit", "release"]
    );
    assert!(
        of_container(&all, &torn).is_empty(),
        "a torn record was accepted"
    );

    node.ok(&rt, &["delete", "--force", &torn]);
    let now = std::fs::read(&path).unwrap();
    assert!(
        now.starts_with(&kept) && now.ends_with(b"\n"),
        "the next writer cut the tail"
    );
    let (all, warn) = history(&node, &rt, &[]);
    assert!(!warn.contains("damaged"), "{warn}");
    assert_eq!(events(&of_container(&all, &torn)), ["release"]);
    assert_eq!(all.len(), 4);
}

#[test]
fn kill_and_delete_record_in_the_journal_of_the_grant_whatever_config_they_run_with() {
    if skip("kill_and_delete_record_in_the_journal_of_the_grant_whatever_config_they_run_with") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let job = id("journal-same");
    start(&node, &rt, &gpu_bundle("sleep 60"), &job);
    // A later verb under another configuration (or none: the shim's environment may lack
    // GPURUN_CONFIG) still records where the grant was recorded.
    let elsewhere = node.dir.path().join("elsewhere");
    let other = node.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!("[journal]\ndir = {:?}\n", elsewhere.display().to_string()),
    )
    .unwrap();
    for args in [&["kill", &job, "TERM"][..], &["delete", "--force", &job]] {
        let out = rt
            .cmd()
            .env("GPURUN_CONFIG", &other)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let (all, _) = history(&node, &rt, &[&job]);
    assert_eq!(
        events(&of_container(&all, &job)),
        ["grant", "kill", "release"]
    );
    assert!(
        !elsewhere.exists(),
        "nothing went to the other configuration's journal"
    );
}

#[test]
fn a_container_without_gpus_is_not_recorded() {
    if skip("a_container_without_gpus_is_not_recorded") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let job = id("journal-plain");
    let out = node.run(&rt, &bundle("exit 0"), &job);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    start(&node, &rt, &bundle("sleep 60"), &id("journal-plain-d"));
    let killed = id("journal-plain-d");
    node.ok(&rt, &["kill", &killed, "KILL"]);
    node.ok(&rt, &["delete", "--force", &killed]);
    assert!(
        !node.journal_dir().join("journal").exists(),
        "a container without GPUs left a record"
    );
}
