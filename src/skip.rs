//! How a test that cannot run on this machine says so.
//!
//! Outside CI such a test prints why and returns, and the test runner reports it `ok`.
//! Under `CI=true` nothing that could not run may count as passed: a missing privilege,
//! tool or enabling variable fails the test, naming what was missing. A test whose premise
//! does not hold on this host's layout (a v1-only case on a cgroup v2 host) is not missing
//! anything and still returns under CI. Every skip is also appended to the file named by
//! `GPURUN_SKIP_LOG`, so a summary can subtract skips from the runner's "passed".

use std::io::Write;

/// True under `CI=true`.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `test` cannot run here because `missing` is absent: prints it and returns (the caller
/// then returns) outside CI; panics under `CI=true`.
pub fn cannot_run(test: &str, missing: &str) {
    if under_ci() {
        panic!("{test} could not run under CI=true: {missing}");
    }
    eprintln!("skipping {test}: {missing}");
    record(test, missing);
}

/// `test` does not apply to this host (`why`): prints it and records the skip, under CI too.
pub fn not_applicable(test: &str, why: &str) {
    eprintln!("skipping {test}: {why}");
    record(test, why);
}

/// One line per skip, `<test binary>\t<test>\t<reason>`, appended with one `write`.
fn record(test: &str, reason: &str) {
    let Some(path) = std::env::var_os("GPURUN_SKIP_LOG") else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let line = format!("{binary}\t{test}\t{}\n", reason.replace(['\t', '\n'], " "));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Ok(mut f) = file {
        let _ = f.write_all(line.as_bytes());
    }
}
