//! Raw bpf(2) wrappers for the cgroup device filter: load a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program, attach it to a cgroup directory, list and detach what is attached there.
//!
//! Each `bpf_attr` variant is its own `#[repr(C)]` struct with every byte named (no implicit
//! padding) and a zeroed tail: the kernel rejects non-zero bytes it does not know, and some
//! commands (`BPF_PROG_QUERY` writes `query.revision`) write past the fields gpurun reads.

use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;

/// `enum bpf_attach_type` value of the cgroup device hook.
pub const BPF_CGROUP_DEVICE: u32 = 6;
/// Attach flag: the cgroup keeps a list of programs, all of which must allow an access.
pub const BPF_F_ALLOW_MULTI: u32 = 2;

const LOG_SIZE: usize = 64 * 1024;

/// One eBPF instruction, `struct bpf_insn` of `<linux/bpf.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        // `dst_reg:4, src_reg:4` is a bitfield: the first field takes the low nibble on
        // little-endian targets and the high nibble on big-endian ones.
        let regs = if cfg!(target_endian = "little") {
            (dst & 0x0f) | (src << 4)
        } else {
            (dst << 4) | (src & 0x0f)
        };
        BpfInsn {
            code,
            regs,
            off,
            imm,
        }
    }

    pub const fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    pub const fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }
}

/// A failed bpf(2) command, with the verifier's log when a program load was refused.
#[derive(Debug)]
pub struct BpfError {
    pub cmd: &'static str,
    pub errno: Errno,
    pub verifier_log: String,
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bpf({}): {}", self.cmd, self.errno)?;
        if !self.verifier_log.is_empty() {
            write!(f, "; verifier log: {}", self.verifier_log.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for BpfError {}

fn err(cmd: &'static str, errno: Errno) -> BpfError {
    BpfError {
        cmd,
        errno,
        verifier_log: String::new(),
    }
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    tail: [u8; 128],
}

#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: u32,
    tail: [u8; 128],
}

#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
    tail: [u8; 128],
}

#[repr(C)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
    pad: u32,
    tail: [u8; 128],
}

/// Runs one bpf(2) command on `attr`. Returns the syscall's non-negative result.
///
/// # Safety
/// `attr` must be the attribute struct the kernel expects for `cmd`, and every pointer it
/// holds must be valid for the kernel's reads and writes for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<libc::c_long, Errno> {
    let size = std::mem::size_of::<T>() as libc::c_uint;
    // SAFETY: the caller guarantees `attr` matches `cmd` and its pointers are valid; `size`
    // is the exact size of `*attr`, so the kernel reads and writes only inside it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn owned_fd(cmd: &'static str, ret: libc::c_long) -> Result<OwnedFd, BpfError> {
    let fd = libc::c_int::try_from(ret).map_err(|_| err(cmd, Errno::EBADF))?;
    // SAFETY: the kernel just returned `fd` as a new file descriptor of this process; nothing
    // else refers to it, so ownership passes to the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A borrowed fd is never negative.
    fd.as_raw_fd() as u32
}

fn prog_load(insns: &[BpfInsn], license: &CStr, log: Option<&mut [u8]>) -> Result<OwnedFd, Errno> {
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| Errno::E2BIG)?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *b"gpurun_devices\0\0",
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
        tail: [0; 128],
    };
    // SAFETY: ProgLoadAttr is the BPF_PROG_LOAD layout; `insns`, `license` and the log buffer
    // are borrowed for the whole call and their lengths are the ones passed.
    let ret = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    owned_fd("BPF_PROG_LOAD", ret).map_err(|e| e.errno)
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program. When the kernel refuses it, loads it again
/// with the verifier log on, so the error says why.
pub fn load_cgroup_device_prog(insns: &[BpfInsn], license: &CStr) -> Result<OwnedFd, BpfError> {
    match prog_load(insns, license, None) {
        Ok(fd) => Ok(fd),
        Err(errno) if errno == Errno::EACCES || errno == Errno::EINVAL => {
            let mut log = vec![0u8; LOG_SIZE];
            let second = prog_load(insns, license, Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let verifier_log = String::from_utf8_lossy(&log[..end]).into_owned();
            match second {
                Ok(fd) => Ok(fd),
                Err(errno) => Err(BpfError {
                    cmd: "BPF_PROG_LOAD",
                    errno,
                    verifier_log,
                }),
            }
        }
        Err(errno) => Err(err("BPF_PROG_LOAD", errno)),
    }
}

/// Attaches `prog` to the cgroup directory `cgroup` at `attach_type` with `flags`.
pub fn prog_attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> Result<(), BpfError> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
        pad: 0,
        tail: [0; 128],
    };
    // SAFETY: AttachAttr is the BPF_PROG_ATTACH layout and holds no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }
        .map(drop)
        .map_err(|e| err("BPF_PROG_ATTACH", e))
}

/// Detaches `prog` from the cgroup directory `cgroup` at `attach_type`.
pub fn prog_detach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<(), BpfError> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
        pad: 0,
        tail: [0; 128],
    };
    // SAFETY: BPF_PROG_DETACH uses the BPF_PROG_ATTACH layout; no pointers.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }
        .map(drop)
        .map_err(|e| err("BPF_PROG_DETACH", e))
}

/// What `BPF_PROG_QUERY` reports for one cgroup and attach type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgQuery {
    /// The flags the programs were attached with (0, `BPF_F_ALLOW_OVERRIDE` or multi).
    pub attach_flags: u32,
    /// Ids of the programs attached to this cgroup itself (not inherited ones).
    pub ids: Vec<u32>,
}

fn query_once(
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    ids: &mut [u32],
) -> Result<QueryAttr, Errno> {
    let mut attr = QueryAttr {
        target_fd: fd_u32(cgroup),
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: if ids.is_empty() {
            0
        } else {
            ids.as_mut_ptr() as u64
        },
        prog_cnt: ids.len() as u32,
        pad: 0,
        prog_attach_flags: 0,
        link_ids: 0,
        link_attach_flags: 0,
        revision: 0,
        tail: [0; 128],
    };
    // SAFETY: QueryAttr is the BPF_PROG_QUERY layout including the fields the kernel writes
    // back (attach_flags, prog_cnt, revision); `prog_ids` points at `ids`, whose length is
    // the `prog_cnt` passed, so the kernel writes at most that many ids.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    Ok(attr)
}

/// Lists the programs attached directly to the cgroup directory `cgroup` at `attach_type`.
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> Result<ProgQuery, BpfError> {
    loop {
        let count = query_once(cgroup, attach_type, &mut [])
            .map_err(|e| err("BPF_PROG_QUERY", e))?
            .prog_cnt;
        if count == 0 {
            let attr =
                query_once(cgroup, attach_type, &mut []).map_err(|e| err("BPF_PROG_QUERY", e))?;
            return Ok(ProgQuery {
                attach_flags: attr.attach_flags,
                ids: Vec::new(),
            });
        }
        let mut ids = vec![0u32; count as usize];
        match query_once(cgroup, attach_type, &mut ids) {
            Ok(attr) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ProgQuery {
                    attach_flags: attr.attach_flags,
                    ids,
                });
            }
            // A program was attached between the two calls: ask again.
            Err(Errno::ENOSPC) => continue,
            Err(e) => return Err(err("BPF_PROG_QUERY", e)),
        }
    }
}

/// Opens the program with id `id`.
pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd, BpfError> {
    let mut attr = GetIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
        pad: 0,
        tail: [0; 128],
    };
    // SAFETY: GetIdAttr is the BPF_PROG_GET_FD_BY_ID layout; no pointers.
    let ret = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }
        .map_err(|e| err("BPF_PROG_GET_FD_BY_ID", e))?;
    owned_fd("BPF_PROG_GET_FD_BY_ID", ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insn_register_nibbles_round_trip() {
        let insn = BpfInsn::new(0x61, 3, 1, 4, 0);
        assert_eq!((insn.dst(), insn.src()), (3, 1));
        assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
    }

    #[test]
    fn attr_structs_have_no_hidden_padding() {
        // Every byte is a named field, so a struct literal leaves no uninitialised byte that
        // the kernel would reject as a non-zero unknown field.
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72 + 128);
        assert_eq!(std::mem::size_of::<AttachAttr>(), 24 + 128);
        assert_eq!(std::mem::size_of::<QueryAttr>(), 64 + 128);
        assert_eq!(std::mem::size_of::<GetIdAttr>(), 16 + 128);
    }
}
