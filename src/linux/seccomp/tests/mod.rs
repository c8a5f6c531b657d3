//! Compiled programs run through the BPF interpreter: the action for each call, argument
//! and architecture.

mod archs;
mod default_profile;
mod equivalence;
mod host;
mod profile;
mod rules;

use oci_spec::runtime::LinuxSeccomp;
use serde_json::Value;

use super::arch::TargetArch;
use super::host::{cannot_run, HostFacts};
use super::interp::{self, Data};
use super::{compile_for, CompiledSeccomp, SeccompError};

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const LOG: u32 = libc::SECCOMP_RET_LOG;
const X32_BIT: u32 = 0x4000_0000;

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

fn trace(data: u32) -> u32 {
    libc::SECCOMP_RET_TRACE | data
}

fn profile(json: Value) -> LinuxSeccomp {
    serde_json::from_value(json).expect("test profile is valid OCI")
}

/// A kernel that runs every convention of its family (x32 and IA-32 emulation built in).
fn runs_everything() -> HostFacts {
    HostFacts {
        config: Some("CONFIG_IA32_EMULATION=y\nCONFIG_X86_X32_ABI=y\nCONFIG_COMPAT=y\n".into()),
        ..HostFacts::default()
    }
}

fn compile_with(
    json: Value,
    native: TargetArch,
    facts: &HostFacts,
) -> Result<CompiledSeccomp, SeccompError> {
    compile_for(&profile(json), native, &mut |arch| {
        cannot_run(arch, native, facts)
    })
}

fn try_compile(json: Value) -> Result<CompiledSeccomp, SeccompError> {
    compile_with(json, TargetArch::X86_64, &runs_everything())
}

/// Compile for x86_64 and check every program as the kernel would before loading it.
fn compile(json: Value) -> CompiledSeccomp {
    compile_arch(json, TargetArch::X86_64)
}

fn compile_arch(json: Value, arch: TargetArch) -> CompiledSeccomp {
    checked(compile_with(json, arch, &runs_everything()).expect("profile compiles"))
}

/// `compiled`, after checking every program as the kernel would before loading it.
fn checked(compiled: CompiledSeccomp) -> CompiledSeccomp {
    for program in &compiled.programs {
        interp::check(program);
    }
    compiled
}

fn nr(arch: TargetArch, name: &str) -> u32 {
    arch.syscall_number(name)
        .unwrap_or_else(|| panic!("{name} is not in the table"))
}

fn data(arch: TargetArch, nr: u32, args: [u64; 6]) -> Data {
    Data {
        nr,
        arch: arch.audit_arch(),
        instruction_pointer: 0x7fff_0000_1234,
        args,
    }
}

/// The kernel's answer for the call numbered `nr` in convention `arch`.
fn call_in(compiled: &CompiledSeccomp, arch: TargetArch, nr: u32, args: [u64; 6]) -> u32 {
    interp::run_all(&compiled.programs, &data(arch, nr, args))
}

/// The kernel's answer for the x86_64 call `name` with `args`.
fn call(compiled: &CompiledSeccomp, name: &str, args: [u64; 6]) -> u32 {
    let arch = TargetArch::X86_64;
    interp::run_all(&compiled.programs, &data(arch, nr(arch, name), args))
}

fn call_nr(compiled: &CompiledSeccomp, nr: u32) -> u32 {
    interp::run_all(&compiled.programs, &data(TargetArch::X86_64, nr, [0; 6]))
}

fn arg0(value: u64) -> [u64; 6] {
    [value, 0, 0, 0, 0, 0]
}
