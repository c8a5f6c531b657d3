//! A stand-in host for the tests that watch the host's mount table: a mount namespace of
//! the test's own (`unshare -m --propagation shared`), where every mount is shared as on a
//! systemd host. A script runs the runtime in it beside mounts the test makes there; they
//! all vanish with the namespace, and the host's mountinfo stays untouched by the test and
//! unaffected by the tests running beside it.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

/// Runs `script` with `sh -e` in a new shared mount namespace, with `$G` the runtime's
/// command line (`<binary> --root <state root>`), `$B` the bundle, `$D` a scratch
/// directory, and the extra variables in `env`.
pub fn run_script(rt: &Runtime, b: &Bundle, script: &str, env: &[(&str, &str)]) -> Output {
    b.write();
    let g = rt.cmd();
    let mut line = g.get_program().to_string_lossy().into_owned();
    for a in g.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "shared", "sh", "-ec", script])
        .env("G", line)
        .env("B", b.path())
        .env("D", b.path())
        .stdin(Stdio::null());
    for (k, v) in g.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running unshare")
}

/// Script lines that save the namespace's mountinfo as `$D/<name>`.
pub fn save_mountinfo(name: &str) -> String {
    format!("cat /proc/self/mountinfo > \"$D/{name}\"\n")
}

/// The lines of `after` that `before` lacks, and the other way round: mounts made (or
/// whose propagation changed) and mounts gone.
pub fn mountinfo_diff(dir: &Path, before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let read = |n: &str| -> BTreeSet<String> {
        std::fs::read_to_string(dir.join(n))
            .unwrap_or_else(|e| panic!("reading {n}: {e}"))
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (b, a) = (read(before), read(after));
    (
        a.difference(&b).cloned().collect(),
        b.difference(&a).cloned().collect(),
    )
}

/// The mount point (field 5) of a mountinfo line.
pub fn mount_point(line: &str) -> &str {
    line.split_whitespace().nth(4).unwrap_or("")
}

/// The message for an assertion on the script's result.
pub fn explain(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}
