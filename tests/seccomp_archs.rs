//! Seccomp architectures through the real runtime: a static i386 program in the container,
//! filtered by i386's numbers when the profile lists SCMP_ARCH_X86 and killed when it does
//! not.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seccomp/i386_mkdir.c"
);

/// The fixture built as a static i386 executable in `dir`; `None` (after saying why)
/// where this machine cannot build or run one.
fn i386_program(test: &str, dir: &Path) -> Option<PathBuf> {
    if !Path::new("/proc/sys/abi/vsyscall32").exists() {
        gpurun::skip::not_applicable(test, "this kernel has no IA-32 emulation");
        return None;
    }
    let out = dir.join("i386_mkdir");
    let built = Command::new("gcc")
        .args([
            "-m32",
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-stack-protector",
        ])
        .args(["-fno-pie", "-no-pie", "-O1", "-o"])
        .arg(&out)
        .arg(SOURCE)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(out),
        _ => {
            gpurun::skip::cannot_run(
                test,
                "gcc cannot build i386 programs (Debian: apt-get install gcc-multilib)",
            );
            None
        }
    }
}

/// A bundle running the i386 program with a writable /tmp, under `seccomp`.
fn bundle(program: &Path, seccomp: serde_json::Value) -> Bundle {
    let mut b = Bundle::own_rootfs("unused");
    std::fs::copy(program, b.rootfs().join("bin/i386_mkdir")).expect("copy program");
    b.config["process"]["args"] = serde_json::json!(["/bin/i386_mkdir"]);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    b.config["linux"]["seccomp"] = seccomp;
    b
}

fn exit_code(b: &Bundle, name: &str) -> Option<i32> {
    exit_code_under(&Runtime::new(), b, name)
}

fn exit_code_under(rt: &Runtime, b: &Bundle, name: &str) -> Option<i32> {
    let out = rt.run(b, &id(name));
    eprintln!("{}", stderr(&out));
    out.status.code()
}

const X86_ALL: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// Everything allowed but `mkdir`/`mkdirat`, which fail with EACCES, on `archs`.
fn mkdir_denied(archs: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": archs,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": libc::EACCES}]
    })
}

#[test]
fn an_i386_program_follows_the_rules_when_the_profile_lists_x86() {
    let test = "an_i386_program_follows_the_rules_when_the_profile_lists_x86";
    if skip(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(program) = i386_program(test, dir.path()) else {
        return;
    };
    let no_rule = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": X86_ALL});
    assert_eq!(exit_code(&bundle(&program, no_rule), "i386-free"), Some(0));
    // i386's mkdir (39) is denied by the rule on mkdir, though 39 is getpid on x86_64.
    let listed = bundle(&program, mkdir_denied(&X86_ALL));
    assert_eq!(exit_code(&listed, "i386-listed"), Some(libc::EACCES));
    // Not listed: any i386 call kills the process.
    let unlisted = bundle(&program, mkdir_denied(&["SCMP_ARCH_X86_64"]));
    assert_eq!(
        exit_code(&unlisted, "i386-unlisted"),
        Some(128 + libc::SIGSYS)
    );
}

#[test]
fn runc_gives_the_i386_program_the_same_results() {
    let test = "runc_gives_the_i386_program_the_same_results";
    if skip(test) {
        return;
    }
    let Some(runc) = Runtime::runc(test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(program) = i386_program(test, dir.path()) else {
        return;
    };
    for (archs, want) in [
        (&X86_ALL[..], Some(libc::EACCES)),
        (&["SCMP_ARCH_X86_64"][..], Some(128 + libc::SIGSYS)),
    ] {
        let b = bundle(&program, mkdir_denied(archs));
        assert_eq!(
            exit_code_under(&runc, &b, "runc-i386"),
            want,
            "runc {archs:?}"
        );
        assert_eq!(exit_code(&b, "gpurun-i386"), want, "gpurun {archs:?}");
    }
}

#[test]
fn an_i386_program_gets_the_default_action_under_containerds_allow_list() {
    let test = "an_i386_program_gets_the_default_action_under_containerds_allow_list";
    if skip(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(program) = i386_program(test, dir.path()) else {
        return;
    };
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seccomp/default.json"
    );
    let mut profile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("json");
    assert_eq!(profile["architectures"], serde_json::json!(X86_ALL));
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let allowed = bundle(&program, profile.clone());
    assert_eq!(exit_code(&allowed, "i386-default"), Some(0));
    // The same allow-list without mkdir: i386's mkdir gets the default, EPERM.
    for entry in profile["syscalls"].as_array_mut().expect("syscalls") {
        if let Some(names) = entry["names"].as_array_mut() {
            names.retain(|n| n != "mkdir" && n != "mkdirat");
        }
    }
    let denied = bundle(&program, profile);
    assert_eq!(exit_code(&denied, "i386-no-mkdir"), Some(libc::EPERM));
}

#[test]
fn a_listed_architecture_this_kernel_cannot_run_is_skipped_with_a_warning() {
    let test = "a_listed_architecture_this_kernel_cannot_run_is_skipped_with_a_warning";
    if skip(test) {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        gpurun::skip::not_applicable(test, "the case is an arm64 convention on an x86_64 kernel");
        return;
    }
    let mut b = Bundle::sh("echo ran");
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]
    });
    b.write();
    let rt = Runtime::new();
    let log = b.path().join("gpurun.log");
    let name = id("skip-arch");
    rt.track(&name);
    let out = rt
        .cmd()
        .arg("--log")
        .arg(&log)
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&name)
        .output()
        .expect("spawn gpurun");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran\n");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(
        log.contains(
            "linux.seccomp.architectures: SCMP_ARCH_AARCH64 skipped: this is an x86_64 kernel"
        ),
        "{log}"
    );
}

#[test]
fn an_unknown_architecture_fails_create_naming_it() {
    let test = "an_unknown_architecture_fails_create_naming_it";
    if skip(test) {
        return;
    }
    let mut b = Bundle::sh("echo ran");
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]
    });
    let rt = Runtime::new();
    let out = rt.run(&b, &id("vax"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`SCMP_ARCH_VAX`"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        std::fs::read_dir(rt.root.path()).expect("root").count(),
        0,
        "nothing left"
    );
}
