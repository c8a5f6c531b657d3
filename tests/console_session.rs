//! What init does with the pty: take it as controlling terminal and stdio, and bind it
//! onto the container's `/dev/console` without following what the image put there.
//!
//! Each check changes process-wide state (session, stdio, mount namespace), so it runs
//! in a child process: the test binary itself, re-run with one test selected and an
//! environment variable telling that test it is the child.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use gpurun::linux::console::{
    become_session_leader_on, mount_console, open_dir, open_pty, ConsoleError,
};
use nix::sys::stat::{fstat, lstat, major, minor, SFlag};

const CHILD: &str = "GPURUN_CONSOLE_TEST_CHILD";
const RESULT: &str = "GPURUN_CONSOLE_TEST_RESULT";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Re-run this binary for one test (optionally under a wrapper command) and return what
/// it wrote to its result file.
fn in_child(test: &str, wrapper: &[&str], dir: &Path) -> String {
    let result = dir.join("result");
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out = cmd
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(CHILD, test)
        .env(RESULT, &result)
        .output()
        .expect("run the child");
    fs::read_to_string(&result).unwrap_or_else(|_| {
        format!(
            "no result ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// In the child: `Some(result file)` when this test is the one selected.
fn child_of(test: &str) -> Option<PathBuf> {
    (std::env::var(CHILD).ok()? == test)
        .then(|| PathBuf::from(std::env::var_os(RESULT).unwrap_or_default()))
}

fn finish(result: &Path, outcome: Result<(), String>) -> ! {
    let text = match outcome {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    let _ = fs::write(result, text);
    // Not back to the test harness: its output would go to the pty now on stdout.
    std::process::exit(0)
}

/// `tty_nr` of /proc/self/stat decoded as (major, minor).
fn controlling_tty() -> Result<(u64, u64), String> {
    let stat = fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let rest = stat.rsplit(')').next().ok_or("bad stat")?;
    let nr: u64 = rest
        .split_whitespace()
        .nth(4)
        .ok_or("no tty_nr")?
        .parse()
        .map_err(|_| "bad tty_nr")?;
    Ok(((nr >> 8) & 0xfff, (nr & 0xff) | ((nr >> 12) & 0xfff00)))
}

#[test]
fn child_session_leader() {
    let Some(result) = child_of("child_session_leader") else {
        return;
    };
    // Kept open until the process exits: closing the master would hang up the
    // terminal and SIGHUP this process, its session leader.
    let p = nix::pty::openpty(None, None).expect("openpty");
    let check = || -> Result<(), String> {
        become_session_leader_on(p.slave.as_fd()).map_err(|e| e.to_string())?;
        let me = nix::unistd::getpid();
        if nix::unistd::getsid(None).map_err(|e| e.to_string())? != me {
            return Err("not a session leader".into());
        }
        let want = fstat(&p.slave).map_err(|e| e.to_string())?.st_rdev;
        if controlling_tty()? != (major(want), minor(want)) {
            return Err(format!(
                "controlling tty {:?}, want {}:{}",
                controlling_tty()?,
                major(want),
                minor(want)
            ));
        }
        let (input, output, errors) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        let stdio = [input.as_fd(), output.as_fd(), errors.as_fd()];
        for (fd, stream) in stdio.into_iter().enumerate() {
            let st = fstat(stream).map_err(|e| e.to_string())?;
            if st.st_rdev != want {
                return Err(format!("fd {fd} is not the pty"));
            }
        }
        if nix::unistd::tcgetpgrp(std::io::stdin()).map_err(|e| e.to_string())?
            != nix::unistd::getpgrp()
        {
            return Err("not the foreground process group".into());
        }
        Ok(())
    };
    finish(&result, check());
}

#[test]
fn the_pty_becomes_controlling_terminal_and_stdio() {
    let d = tempfile::tempdir().expect("tempdir");
    assert_eq!(in_child("child_session_leader", &[], d.path()), "ok");
}

/// The container's `/dev` as the test lays it out: `console` is a symlink to a host file
/// the mount must not land on.
fn layout(d: &Path) {
    fs::create_dir(d.join("dev")).expect("mkdir dev");
    fs::write(d.join("victim"), "untouched").expect("victim");
    std::os::unix::fs::symlink(d.join("victim"), d.join("dev/console")).expect("symlink");
    fs::create_dir_all(d.join("dev2/console")).expect("console dir");
    fs::create_dir(d.join("dev3")).expect("mkdir dev3");
}

#[test]
fn child_mount_console() {
    let Some(result) = child_of("child_mount_console") else {
        return;
    };
    let d = result.parent().map(Path::to_path_buf).unwrap_or_default();
    let check = || -> Result<(), String> {
        let pts = open_dir(Path::new("/dev/pts")).map_err(|e| e.to_string())?;
        let pty = open_pty(pts.as_fd()).map_err(|e| e.to_string())?;
        let want = fstat(&pty.slave).map_err(|e| e.to_string())?;
        for dev in ["dev", "dev3"] {
            let dir = open_dir(&d.join(dev)).map_err(|e| e.to_string())?;
            mount_console(pty.slave.as_fd(), dir.as_fd()).map_err(|e| format!("{dev}: {e}"))?;
            let st = lstat(&d.join(dev).join("console")).map_err(|e| e.to_string())?;
            let chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
            if !chr || st.st_rdev != want.st_rdev {
                return Err(format!("{dev}/console is not the pty after mount_console"));
            }
        }
        // Checked before reading it: a pty mounted there would block the read.
        let vst = lstat(&d.join("victim")).map_err(|e| e.to_string())?;
        if SFlag::from_bits_truncate(vst.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
            || fs::read_to_string(d.join("victim")).map_err(|e| e.to_string())? != "untouched"
        {
            return Err("the symlink target was mounted over".into());
        }
        let dir2 = open_dir(&d.join("dev2")).map_err(|e| e.to_string())?;
        match mount_console(pty.slave.as_fd(), dir2.as_fd()) {
            Err(ConsoleError::BadConsoleTarget { .. }) => {}
            other => return Err(format!("a directory at /dev/console: {other:?}")),
        }
        Ok(())
    };
    finish(&result, check());
}

#[test]
fn console_is_bound_by_fd_and_never_through_a_symlink() {
    if !is_root() {
        gpurun::skip::cannot_run(
            "console_is_bound_by_fd_and_never_through_a_symlink",
            "needs root",
        );
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    layout(d.path());
    // A private mount namespace that ends with the child: nothing reaches the host.
    let got = in_child(
        "child_mount_console",
        &["unshare", "--mount", "--propagation", "private"],
        d.path(),
    );
    assert_eq!(got, "ok");
    assert_eq!(
        fs::read_to_string(d.path().join("victim")).expect("victim"),
        "untouched"
    );
}

/// Names the race swaps: `console` and a second regular file in the same directory.
const RACE_TRIES: usize = 20_000;

/// Detach every mount on `d/console` and `d/other`, in whichever order the racer left
/// them (a few passes: it keeps swapping the two names meanwhile).
fn unmount_both(d: &Path) {
    for _ in 0..4 {
        for name in ["console", "other"] {
            while nix::mount::umount2(&d.join(name), nix::mount::MntFlags::MNT_DETACH).is_ok() {}
        }
    }
}

#[test]
fn child_console_swap_race() {
    let Some(result) = child_of("child_console_swap_race") else {
        return;
    };
    let d = result.parent().map(|p| p.join("race")).unwrap_or_default();
    let check = || -> Result<(), String> {
        let pts = open_dir(Path::new("/dev/pts")).map_err(|e| e.to_string())?;
        let pty = open_pty(pts.as_fd()).map_err(|e| e.to_string())?;
        let dir = open_dir(&d).map_err(|e| e.to_string())?;
        for n in 0..RACE_TRIES {
            match mount_console(pty.slave.as_fd(), dir.as_fd()) {
                Ok(()) => unmount_both(&d),
                Err(ConsoleError::ConsoleMismatch(_)) => return Ok(()),
                Err(e) => return Err(format!("try {n}: {e}")),
            }
        }
        Err(format!(
            "{RACE_TRIES} mounts while /dev/console was being swapped, and none reported that \
             /dev/console was not the pty afterwards"
        ))
    };
    finish(&result, check());
}

/// CVE-2025-52565: another process (in the real attack, a container sharing the volume)
/// swaps `/dev/console` with another file while init binds the pty onto it. Whatever
/// happens between the open and the mount, `mount_console` must not report success
/// unless `/dev/console` is the pty afterwards: the race is reported, never ignored.
#[test]
fn a_console_swapped_while_it_is_mounted_is_reported() {
    if !is_root() {
        gpurun::skip::cannot_run(
            "a_console_swapped_while_it_is_mounted_is_reported",
            "needs root",
        );
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let race = d.path().join("race");
    fs::create_dir(&race).expect("mkdir race");
    fs::write(race.join("console"), "").expect("console");
    fs::write(race.join("other"), "").expect("other");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The racer stays in the test's mount namespace, where the child's mounts do not
    // exist, so the kernel lets it rename their mount points.
    let racer = {
        let stop = stop.clone();
        let dir = fs::File::open(&race).expect("open race dir");
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    &dir,
                    "console",
                    &dir,
                    "other",
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .expect("renameat2");
            }
        })
    };
    let got = in_child(
        "child_console_swap_race",
        &["unshare", "--mount", "--propagation", "private"],
        d.path(),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().expect("racer");
    assert_eq!(got, "ok");
}
