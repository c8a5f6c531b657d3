//! Compiled programs run through the BPF interpreter: the action for each call, argument
//! and architecture.

mod default_profile;
mod equivalence;
mod profile;
mod rules;

use oci_spec::runtime::LinuxSeccomp;
use serde_json::Value;

use super::interp::{self, Data};
use super::translate::TargetArch;
use super::{compile_for, CompiledSeccomp, SeccompError};

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const LOG: u32 = libc::SECCOMP_RET_LOG;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
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

fn try_compile(json: Value) -> Result<CompiledSeccomp, SeccompError> {
    compile_for(&profile(json), TargetArch::X86_64)
}

/// Compile for x86_64 and check every program as the kernel would before loading it.
fn compile(json: Value) -> CompiledSeccomp {
    compile_arch(json, TargetArch::X86_64)
}

fn compile_arch(json: Value, arch: TargetArch) -> CompiledSeccomp {
    let compiled = compile_for(&profile(json), arch).expect("profile compiles");
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
