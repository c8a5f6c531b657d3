//! OCI seccomp profiles compiled to classic BPF in the parent and loaded in the child.
//!
//! [`compile`] runs before clone, where errors are easy to report, and changes nothing (it
//! reads only what the kernel shows about the architectures it runs); [`install`] only
//! hands the ready programs to seccomp(2) in the container's init.
//!
//! # Semantics
//!
//! For each system call the result is the action of the rule that matches it, else the
//! default action, as the runtime spec and libseccomp define it. Where the spec is silent
//! gpurun follows runc:
//!
//! - Names no filtered architecture's table knows are skipped and listed
//!   ([`CompiledSeccomp::skipped_syscalls`]), for a debug log.
//! - A rule whose action equals the default is dropped (libseccomp refuses it in runc).
//! - Several comparisons on the same argument in one entry become one rule each (any one
//!   matches); comparisons on distinct arguments must all hold.
//! - ERRNO and TRACE carry EPERM unless `errnoRet` says otherwise.
//! - When the default action is not permissive (anything but ALLOW, LOG, TRACE), calls
//!   numbered above the highest one the profile names (per architecture) get ENOSYS, so
//!   libc falls back from a new call (clone3) to an old one (clone) instead of failing.
//!
//! When several rules with different actions match one call, the most restrictive action
//! wins, by the kernel's own order (KILL_PROCESS, KILL_THREAD, TRAP, ERRNO, TRACE, LOG,
//! ALLOW); between two rules of the same kind with different data (ERRNO 1 and ERRNO 38)
//! the one listed first wins.
//!
//! # Architectures
//!
//! A profile is applied to the native convention (always, listed or not) and to every
//! other one it lists (`architectures`) that this kernel runs, each with its own system
//! call numbers, as libseccomp does: on x86_64 that is i386 and x32, on aarch64 32-bit
//! arm (`arch.rs`). Why gpurun extends its own compiler for this instead of using
//! libseccomp is recorded in `runtime-spec/seccomp.md` (Architectures). A name one convention does not have is ignored for that convention
//! only. A listed convention the kernel cannot run (x32 is off in most kernels) is
//! skipped and reported ([`CompiledSeccomp::skipped_architectures`]) for a warning
//! (`host.rs`); a name that is no architecture at all fails when the spec is read.
//!
//! - A call made with a convention the filter does not cover is killed
//!   (`SECCOMP_RET_KILL_PROCESS`): its numbers mean other calls.
//! - On x86_64, x32 calls (number with bit 30 set) follow x32's rules when x32 is
//!   filtered, and otherwise get ENOSYS whatever the default, as a kernel without x32
//!   answers.
//! - i386 programs may reach the socket and System V IPC calls through the multiplexers
//!   `socketcall(call, args)` and `ipc(call, …)` as well as through their own numbers: a
//!   rule without argument comparisons on `socket`, `semop`… also decides
//!   `socketcall`/`ipc` with that call in the first argument. A rule with comparisons
//!   cannot be checked there (the arguments sit behind a pointer) and decides only the
//!   direct call.
//! - On the 32-bit conventions (i386, x32, arm) arguments are compared on their low 32
//!   bits, as libseccomp does.
//!
//! # One program, not one filter per action
//!
//! seccompiler, which DESIGN.md names as the emitter, has a single match action per
//! filter, so an OCI profile would need one filter per distinct rule action plus one for
//! the default, combined by the kernel (most restrictive result wins; among equal actions
//! the filter installed last wins). That layout does give the semantics above, but it
//! breaks on real profiles: once a filter that denies seccomp(2) itself is loaded (a
//! profile that forbids nested sandboxes), every later filter fails to load; it also needs
//! its x32 and ENOSYS guards spliced into seccompiler's output. gpurun therefore emits
//! classic BPF itself (`emit.rs`): one program that evaluates a call's rules most
//! restrictive first and returns the first that matches, which is exactly the result the
//! kernel would give if each rule were its own filter. The unit tests check that
//! equivalence against the stacked-filter layout in a BPF interpreter.

mod arch;
mod asm;
mod emit;
mod host;
mod translate;

#[cfg(test)]
mod interp;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use nix::errno::Errno;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, Seccomp};

use crate::linux::sys;
use arch::TargetArch;

/// Why a profile could not be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp.{field}: SCMP_ACT_NOTIFY is not supported (gpurun has no seccomp user-notification agent)")]
    Notify { field: String },
    #[error("linux.seccomp.listenerPath {}: seccomp user notification (SCMP_ACT_NOTIFY) is not supported", path.display())]
    ListenerPath { path: PathBuf },
    #[error("linux.seccomp.flags: {flag} is not supported")]
    UnsupportedFlag { flag: String },
    #[error("linux.seccomp.{field}: argument index {index} is out of range (0 to 5)")]
    ArgIndex { field: String, index: usize },
    #[error("linux.seccomp.{field}: errnoRet {value} does not fit the 16-bit SECCOMP_RET_DATA")]
    ErrnoRet { field: String, value: u32 },
    #[error("linux.seccomp compiles to {instructions} BPF instructions; the kernel accepts at most 4096")]
    TooLarge { instructions: usize },
    #[error("linux.seccomp: the BPF jump at instruction {at} cannot reach its target")]
    JumpOutOfRange { at: usize },
    #[error("linux.seccomp: gpurun has no system call table for this architecture ({arch})")]
    UnsupportedArch { arch: &'static str },
    #[error("loading seccomp program {index}: seccomp(SECCOMP_SET_MODE_FILTER): {errno} (without no_new_privs this needs CAP_SYS_ADMIN)")]
    Install { index: usize, errno: Errno },
    #[error("loading seccomp program {index}: seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): thread {tid} could not be synchronized")]
    Tsync { index: usize, tid: libc::c_long },
}

/// A profile ready to load: programs in install order, the seccomp(2) flags for each, and
/// the names that were skipped.
#[derive(Clone)]
pub struct CompiledSeccomp {
    programs: Vec<Vec<libc::sock_filter>>,
    flags: libc::c_ulong,
    skipped: Vec<String>,
    skipped_archs: Vec<SkippedArch>,
}

/// A listed architecture left out of the filter because this kernel cannot run its
/// programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedArch {
    /// As the profile spells it: `SCMP_ARCH_X32`.
    pub name: String,
    /// What shows that the kernel cannot run it.
    pub reason: String,
}

impl fmt::Display for SkippedArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} skipped: {}", self.name, self.reason)
    }
}

impl CompiledSeccomp {
    /// BPF instructions over all programs.
    pub fn instruction_count(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }

    /// System call names no filtered convention knows, in profile order, once each.
    pub fn skipped_syscalls(&self) -> &[String] {
        &self.skipped
    }

    /// Listed architectures left out because this kernel cannot run them.
    pub fn skipped_architectures(&self) -> &[SkippedArch] {
        &self.skipped_archs
    }
}

impl fmt::Debug for CompiledSeccomp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSeccomp")
            .field(
                "instructions",
                &self.programs.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .field("flags", &self.flags)
            .field("skipped", &self.skipped)
            .field("skipped_archs", &self.skipped_archs)
            .finish()
    }
}

/// Compile `profile` for the native convention and the others it lists that this kernel
/// runs. Makes no system call that changes anything; reads what the kernel shows about
/// its conventions only when the profile lists one besides the native.
pub fn compile(profile: &LinuxSeccomp) -> Result<CompiledSeccomp, SeccompError> {
    let native = TargetArch::native().ok_or(SeccompError::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })?;
    let mut facts = None;
    compile_for(profile, native, &mut |arch| {
        let facts = facts.get_or_insert_with(host::HostFacts::read);
        host::cannot_run(arch, native, facts)
    })
}

/// Compile for a kernel whose own convention is `native`; `cannot_run` says why the kernel
/// cannot run a convention, if it cannot. Pure but for what `cannot_run` reads.
pub(crate) fn compile_for(
    profile: &LinuxSeccomp,
    native: TargetArch,
    cannot_run: &mut dyn FnMut(TargetArch) -> Option<String>,
) -> Result<CompiledSeccomp, SeccompError> {
    let (archs, skipped_archs) = architectures(profile, native, cannot_run);
    let sets = archs
        .iter()
        .map(|&arch| translate::translate(profile, arch))
        .collect::<Result<Vec<_>, _>>()?;
    let program = emit::emit(&sets)?;
    let first = &sets[0];
    let skipped = first
        .skipped
        .iter()
        .filter(|name| sets.iter().all(|set| set.skipped.contains(name)))
        .cloned()
        .collect();
    Ok(CompiledSeccomp {
        programs: vec![program],
        flags: first.flags,
        skipped,
        skipped_archs,
    })
}

/// The conventions to filter, native first, each once; and the listed ones left out, with
/// why.
fn architectures(
    profile: &LinuxSeccomp,
    native: TargetArch,
    cannot_run: &mut dyn FnMut(TargetArch) -> Option<String>,
) -> (Vec<TargetArch>, Vec<SkippedArch>) {
    let mut archs = vec![native];
    let mut skipped = Vec::new();
    for &listed in profile.architectures().iter().flatten() {
        let name = arch_name(listed);
        if skipped.iter().any(|s: &SkippedArch| s.name == name) {
            continue;
        }
        let Some(arch) = TargetArch::from_oci(listed, native) else {
            skipped.push(SkippedArch {
                name,
                reason: host::foreign(native),
            });
            continue;
        };
        if archs.contains(&arch) {
            continue;
        }
        match cannot_run(arch) {
            Some(reason) => skipped.push(SkippedArch { name, reason }),
            None => archs.push(arch),
        }
    }
    (archs, skipped)
}

/// `SCMP_ARCH_X86_64`, as the spec spells it.
fn arch_name(arch: oci_spec::runtime::Arch) -> String {
    match serde_json::to_value(arch) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{arch:?}"),
    }
}

/// Load the compiled programs into the calling thread, in order.
///
/// Sets no `no_new_privs`: without it the kernel requires CAP_SYS_ADMIN, and the caller
/// decides the order against `noNewPrivileges` (before the capability drop when it is off,
/// as late as possible when it is on). Allocates nothing, so it is safe in a child after
/// fork; after it returns, only calls the profile allows will work.
pub fn install(compiled: &CompiledSeccomp) -> Result<(), SeccompError> {
    for (index, program) in compiled.programs.iter().enumerate() {
        match sys::seccomp::seccomp_set_mode_filter(compiled.flags, program) {
            Ok(0) => {}
            Ok(tid) => return Err(SeccompError::Tsync { index, tid }),
            Err(errno) => return Err(SeccompError::Install { index, errno }),
        }
    }
    Ok(())
}

/// The `linux.seccomp` block of the `features` command: exactly what [`compile`] accepts.
/// Static, not host-dependent: the flags need Linux 4.17, below gpurun's oldest kernel.
pub fn features() -> Seccomp {
    const OPERATORS: [&str; 7] = [
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ];
    const SUPPORTED_FLAGS: [&str; 3] = [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_LOG",
    ];
    // Recognized but refused: the kernel takes it only with a notification listener.
    const REFUSED_FLAGS: [&str; 1] = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"];
    let strings = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let native = TargetArch::native();
    let mut seccomp = Seccomp::default();
    seccomp
        .set_enabled(Some(native.is_some()))
        .set_actions(Some(vec![
            LinuxSeccompAction::ScmpActAllow,
            LinuxSeccompAction::ScmpActErrno,
            LinuxSeccompAction::ScmpActKill,
            LinuxSeccompAction::ScmpActKillThread,
            LinuxSeccompAction::ScmpActKillProcess,
            LinuxSeccompAction::ScmpActTrap,
            LinuxSeccompAction::ScmpActTrace,
            LinuxSeccompAction::ScmpActLog,
        ]))
        .set_operators(Some(strings(&OPERATORS)))
        .set_archs(Some(
            native
                .map(|n| TargetArch::family(n).iter().map(|a| a.oci()).collect())
                .unwrap_or_default(),
        ))
        .set_known_flags(Some(strings(
            &[SUPPORTED_FLAGS.as_slice(), &REFUSED_FLAGS].concat(),
        )))
        .set_supported_flags(Some(strings(&SUPPORTED_FLAGS)));
    seccomp
}
