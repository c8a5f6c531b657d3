//! The cgroup v2 device controller: gpurun's own `BPF_PROG_TYPE_CGROUP_DEVICE` program,
//! generated from a [`DevicePolicy`] and attached with `BPF_F_ALLOW_MULTI`.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (device type in the low 16 bits of `access_type`, access bits in the high 16), tests the
//! exceptions one block each, and returns 1 (allow) or 0 (deny):
//!
//! ```text
//!   w2 = ctx.access_type & 0xffff      w3 = ctx.access_type >> 16
//!   w4 = ctx.major                     w5 = ctx.minor
//!   per exception:  if w2 != type goto next
//!                   access test (see below)              goto next if it fails
//!                   if w4 != major goto next             (omitted for a wildcard)
//!                   if w5 != minor goto next             (omitted for a wildcard)
//!                   w0 = exception's verdict; exit
//!   w0 = default verdict; exit
//! ```
//!
//! The access test mirrors the v1 kernel so both enforce the same policy: an allow exception
//! must hold every requested bit (`if w3 & ~access goto next`); a deny exception needs to
//! touch one (`w0 = w3 & access; if w0 == 0 goto next`). Comparisons use 32-bit jumps
//! (`BPF_JMP32`, Linux 5.1) so majors and minors above 2^31 compare correctly.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use super::devices::DevicePolicy;
use super::error::CgroupError;
use crate::linux::sys::bpf::{self, BpfInsn, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI};

pub(crate) const LDX_MEM_W: u8 = 0x61;
pub(crate) const ALU32_AND_K: u8 = 0x54;
pub(crate) const ALU32_RSH_K: u8 = 0x74;
pub(crate) const ALU32_MOV_K: u8 = 0xb4;
pub(crate) const ALU32_MOV_X: u8 = 0xbc;
pub(crate) const JMP32_JEQ_K: u8 = 0x16;
pub(crate) const JMP32_JNE_K: u8 = 0x56;
pub(crate) const JMP32_JSET_K: u8 = 0x46;
pub(crate) const JMP_EXIT: u8 = 0x95;

const ACC_ALL: i32 = 7;
/// The license string the program is loaded with; device programs call no GPL-only helper.
const LICENSE: &std::ffi::CStr = c"Apache-2.0";

/// A conditional jump to the end of the current block, patched once the block is complete.
const TO_NEXT: i16 = i16::MIN;

/// The eBPF program enforcing `policy`.
pub fn device_program(policy: &DevicePolicy) -> Vec<BpfInsn> {
    let mut p = vec![
        BpfInsn::new(LDX_MEM_W, 2, 1, 0, 0),
        BpfInsn::new(ALU32_AND_K, 2, 0, 0, 0xffff),
        BpfInsn::new(LDX_MEM_W, 3, 1, 0, 0),
        BpfInsn::new(ALU32_RSH_K, 3, 0, 0, 16),
        BpfInsn::new(LDX_MEM_W, 4, 1, 4, 0),
        BpfInsn::new(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let verdict = i32::from(!policy.default_allow);
    for e in &policy.exceptions {
        let start = p.len();
        p.push(BpfInsn::new(JMP32_JNE_K, 2, 0, TO_NEXT, e.key.kind as i32));
        let access = i32::from(e.access);
        if access != ACC_ALL {
            if policy.default_allow {
                p.push(BpfInsn::new(ALU32_MOV_X, 0, 3, 0, 0));
                p.push(BpfInsn::new(ALU32_AND_K, 0, 0, 0, access));
                p.push(BpfInsn::new(JMP32_JEQ_K, 0, 0, TO_NEXT, 0));
            } else {
                p.push(BpfInsn::new(JMP32_JSET_K, 3, 0, TO_NEXT, !access & ACC_ALL));
            }
        }
        if let Some(major) = e.key.major {
            p.push(BpfInsn::new(JMP32_JNE_K, 4, 0, TO_NEXT, major as i32));
        }
        if let Some(minor) = e.key.minor {
            p.push(BpfInsn::new(JMP32_JNE_K, 5, 0, TO_NEXT, minor as i32));
        }
        p.push(BpfInsn::new(ALU32_MOV_K, 0, 0, 0, verdict));
        p.push(BpfInsn::new(JMP_EXIT, 0, 0, 0, 0));
        let next = p.len();
        for (i, insn) in p.iter_mut().enumerate().skip(start) {
            if insn.off == TO_NEXT {
                // Blocks are a handful of instructions, far below i16::MAX.
                insn.off = (next - i - 1) as i16;
            }
        }
    }
    p.push(BpfInsn::new(
        ALU32_MOV_K,
        0,
        0,
        0,
        i32::from(policy.default_allow),
    ));
    p.push(BpfInsn::new(JMP_EXIT, 0, 0, 0, 0));
    p
}

fn open_dir(dir: &Path) -> Result<OwnedFd, CgroupError> {
    File::open(dir)
        .map(OwnedFd::from)
        .map_err(|source| CgroupError::Open {
            path: dir.to_path_buf(),
            source,
        })
}

fn bpf_err<'a>(what: &'static str, dir: &'a Path) -> impl Fn(bpf::BpfError) -> CgroupError + 'a {
    move |source| CgroupError::Bpf {
        what,
        path: dir.to_path_buf(),
        source,
    }
}

/// Ids of the device programs attached to the cgroup directory itself.
pub fn device_program_ids(cgroup_dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let dir = open_dir(cgroup_dir)?;
    bpf::prog_query(dir.as_fd(), BPF_CGROUP_DEVICE)
        .map(|q| q.ids)
        .map_err(bpf_err("listing device programs", cgroup_dir))
}

/// First half of a replacement: loads the program for `rules` and attaches it beside what is
/// already there. Returns the ids of the programs attached before, which still filter too
/// (every program must allow an access) until [`detach_device_programs`] removes them.
pub fn attach_device_filter(
    cgroup_dir: &Path,
    rules: &[LinuxDeviceCgroup],
) -> Result<Vec<u32>, CgroupError> {
    let policy = DevicePolicy::from_rules(rules)?;
    attach_policy(cgroup_dir, &policy)
}

pub(crate) fn attach_policy(
    cgroup_dir: &Path,
    policy: &DevicePolicy,
) -> Result<Vec<u32>, CgroupError> {
    let dir = open_dir(cgroup_dir)?;
    let insns = device_program(policy);
    let prog = bpf::load_cgroup_device_prog(&insns, LICENSE)
        .map_err(bpf_err("loading the device filter", cgroup_dir))?;
    let before = bpf::prog_query(dir.as_fd(), BPF_CGROUP_DEVICE)
        .map_err(bpf_err("listing device programs", cgroup_dir))?;
    if before.ids.is_empty() || before.attach_flags & BPF_F_ALLOW_MULTI != 0 {
        bpf::prog_attach(
            dir.as_fd(),
            prog.as_fd(),
            BPF_CGROUP_DEVICE,
            BPF_F_ALLOW_MULTI,
        )
        .map_err(bpf_err("attaching the device filter", cgroup_dir))?;
        Ok(before.ids)
    } else {
        // Someone attached a single program without BPF_F_ALLOW_MULTI; the kernel refuses
        // a multi attach beside it, but attaching with the same flags replaces it in one step.
        bpf::prog_attach(
            dir.as_fd(),
            prog.as_fd(),
            BPF_CGROUP_DEVICE,
            before.attach_flags,
        )
        .map_err(bpf_err("replacing the device filter", cgroup_dir))?;
        Ok(Vec::new())
    }
}

/// Second half of a replacement: detaches the programs `ids` (those that are gone already
/// are skipped).
pub fn detach_device_programs(cgroup_dir: &Path, ids: &[u32]) -> Result<(), CgroupError> {
    let dir = open_dir(cgroup_dir)?;
    for &id in ids {
        let prog = match bpf::prog_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.errno == nix::errno::Errno::ENOENT => continue,
            Err(e) => return Err(bpf_err("opening an old device filter", cgroup_dir)(e)),
        };
        match bpf::prog_detach(dir.as_fd(), prog.as_fd(), BPF_CGROUP_DEVICE) {
            Ok(()) => {}
            Err(e) if e.errno == nix::errno::Errno::ENOENT => {}
            Err(e) => return Err(bpf_err("detaching an old device filter", cgroup_dir)(e)),
        }
    }
    Ok(())
}

/// Puts `rules` in force on a cgroup2 directory: the new program is attached before the old
/// ones are detached, so there is no moment without a filter. Used on a v2 host, and on the
/// unified leaf of a hybrid host when the runtime asks for it.
pub fn apply_device_filter_v2(
    cgroup_dir: &Path,
    rules: &[LinuxDeviceCgroup],
) -> Result<(), CgroupError> {
    let old = attach_device_filter(cgroup_dir, rules)?;
    detach_device_programs(cgroup_dir, &old)
}

pub(crate) fn apply_policy_v2(cgroup_dir: &Path, policy: &DevicePolicy) -> Result<(), CgroupError> {
    let old = attach_policy(cgroup_dir, policy)?;
    detach_device_programs(cgroup_dir, &old)
}

#[cfg(test)]
#[path = "ebpf_tests.rs"]
mod tests;
