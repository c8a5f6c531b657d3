//! The system call conventions gpurun can filter, and their numbers.
//!
//! A kernel built for one CPU family runs programs of several conventions: x86_64 also
//! runs i386 (IA-32 emulation) and x32, aarch64 also runs 32-bit arm. Each convention has
//! its own table of numbers, so a profile is resolved once per convention it lists. Names
//! come from the `syscalls` crate (Linux 6.18); x32 and arm's private calls are derived
//! here from the kernel's tables (`arch/x86/entry/syscalls/syscall_64.tbl`,
//! `arch/arm/include/uapi/asm/unistd.h`).

use std::str::FromStr;

use oci_spec::runtime::Arch;

/// `linux/audit.h`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `linux/audit.h`: `EM_386 | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `linux/audit.h`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `linux/audit.h`: `EM_ARM | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// x32 calls arrive as x86_64 calls with this bit set in the number
/// (`__X32_SYSCALL_BIT`).
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Calls x32 makes under numbers of its own (512 to 547), where x86_64's number takes
/// 64-bit structures.
const X32_OWN: [(&str, u32); 36] = [
    ("rt_sigaction", 512),
    ("rt_sigreturn", 513),
    ("ioctl", 514),
    ("readv", 515),
    ("writev", 516),
    ("recvfrom", 517),
    ("sendmsg", 518),
    ("recvmsg", 519),
    ("execve", 520),
    ("ptrace", 521),
    ("rt_sigpending", 522),
    ("rt_sigtimedwait", 523),
    ("rt_sigqueueinfo", 524),
    ("sigaltstack", 525),
    ("timer_create", 526),
    ("mq_notify", 527),
    ("kexec_load", 528),
    ("waitid", 529),
    ("set_robust_list", 530),
    ("get_robust_list", 531),
    ("vmsplice", 532),
    ("move_pages", 533),
    ("preadv", 534),
    ("pwritev", 535),
    ("rt_tgsigqueueinfo", 536),
    ("recvmmsg", 537),
    ("sendmmsg", 538),
    ("process_vm_readv", 539),
    ("process_vm_writev", 540),
    ("setsockopt", 541),
    ("getsockopt", 542),
    ("io_setup", 543),
    ("io_submit", 544),
    ("execveat", 545),
    ("preadv2", 546),
    ("pwritev2", 547),
];

/// x86_64 calls that do not exist for x32 at all.
const X32_ABSENT: [&str; 11] = [
    "uselib",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "set_thread_area",
    "get_thread_area",
    "epoll_ctl_old",
    "epoll_wait_old",
    "vserver",
];

/// arm's private calls (`__ARM_NR_BASE` 0x0f0000 + n), which the `syscalls` crate lacks.
const ARM_PRIVATE: [(&str, u32); 6] = [
    ("breakpoint", 0x0f_0001),
    ("cacheflush", 0x0f_0002),
    ("usr26", 0x0f_0003),
    ("usr32", 0x0f_0004),
    ("set_tls", 0x0f_0005),
    ("get_tls", 0x0f_0006),
];

/// i386's `socketcall(call, args)` multiplexer (`linux/net.h` `SYS_*`): the calls a
/// program may make through it instead of their own numbers.
const SOCKETCALL: [(&str, u32); 20] = [
    ("socket", 1),
    ("bind", 2),
    ("connect", 3),
    ("listen", 4),
    ("accept", 5),
    ("getsockname", 6),
    ("getpeername", 7),
    ("socketpair", 8),
    ("send", 9),
    ("recv", 10),
    ("sendto", 11),
    ("recvfrom", 12),
    ("shutdown", 13),
    ("setsockopt", 14),
    ("getsockopt", 15),
    ("sendmsg", 16),
    ("recvmsg", 17),
    ("accept4", 18),
    ("recvmmsg", 19),
    ("sendmmsg", 20),
];

/// i386's `ipc(call, …)` multiplexer (`linux/ipc.h`); the kernel reads the call from the
/// low 16 bits of the first argument (the high ones carry a version).
const IPC: [(&str, u32); 12] = [
    ("semop", 1),
    ("semget", 2),
    ("semctl", 3),
    ("semtimedop", 4),
    ("msgsnd", 11),
    ("msgrcv", 12),
    ("msgget", 13),
    ("msgctl", 14),
    ("shmat", 21),
    ("shmdt", 22),
    ("shmget", 23),
    ("shmctl", 24),
];

/// A multiplexed form of a call: `syscall` with `(arg0 & mask) == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Muxed {
    pub(crate) syscall: u32,
    pub(crate) mask: u64,
    pub(crate) value: u64,
}

/// A system call convention gpurun has a table for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TargetArch {
    X86_64,
    X86,
    X32,
    Aarch64,
    Arm,
}

impl TargetArch {
    /// The convention this binary itself uses, if gpurun can filter it.
    pub(crate) fn native() -> Option<TargetArch> {
        if cfg!(target_arch = "x86_64") {
            Some(TargetArch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(TargetArch::Aarch64)
        } else {
            None
        }
    }

    /// Every convention a kernel of `native`'s family can run, native first.
    pub(crate) fn family(native: TargetArch) -> &'static [TargetArch] {
        match native {
            TargetArch::X86_64 | TargetArch::X86 | TargetArch::X32 => {
                &[TargetArch::X86_64, TargetArch::X86, TargetArch::X32]
            }
            TargetArch::Aarch64 | TargetArch::Arm => &[TargetArch::Aarch64, TargetArch::Arm],
        }
    }

    /// The convention an OCI name stands for; `None` for those gpurun has no table for.
    pub(crate) fn from_oci(arch: Arch, native: TargetArch) -> Option<TargetArch> {
        match arch {
            Arch::ScmpArchNative => Some(native),
            Arch::ScmpArchX86_64 => Some(TargetArch::X86_64),
            Arch::ScmpArchX86 => Some(TargetArch::X86),
            Arch::ScmpArchX32 => Some(TargetArch::X32),
            Arch::ScmpArchAarch64 => Some(TargetArch::Aarch64),
            Arch::ScmpArchArm => Some(TargetArch::Arm),
            _ => None,
        }
    }

    pub(crate) fn oci(self) -> Arch {
        match self {
            TargetArch::X86_64 => Arch::ScmpArchX86_64,
            TargetArch::X86 => Arch::ScmpArchX86,
            TargetArch::X32 => Arch::ScmpArchX32,
            TargetArch::Aarch64 => Arch::ScmpArchAarch64,
            TargetArch::Arm => Arch::ScmpArchArm,
        }
    }

    /// `seccomp_data.arch` for calls of this convention; x32 shares x86_64's.
    pub(crate) fn audit_arch(self) -> u32 {
        match self {
            TargetArch::X86_64 | TargetArch::X32 => AUDIT_ARCH_X86_64,
            TargetArch::X86 => AUDIT_ARCH_I386,
            TargetArch::Aarch64 => AUDIT_ARCH_AARCH64,
            TargetArch::Arm => AUDIT_ARCH_ARM,
        }
    }

    /// Whether arguments are compared on 64 bits. On the 32-bit conventions (x32
    /// included, as libseccomp treats it) only the low 32 bits are compared.
    pub(crate) fn wide_args(self) -> bool {
        matches!(self, TargetArch::X86_64 | TargetArch::Aarch64)
    }

    /// The kernel's number for `name` in this convention, as `seccomp_data.nr` shows it
    /// (x32's with [`X32_SYSCALL_BIT`] set).
    pub(crate) fn syscall_number(self, name: &str) -> Option<u32> {
        let id = match self {
            TargetArch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            TargetArch::X86 => syscalls::x86::Sysno::from_str(name).ok()?.id(),
            TargetArch::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
            TargetArch::X32 => return x32_number(name),
            TargetArch::Arm => {
                if let Some(&(_, nr)) = ARM_PRIVATE.iter().find(|(n, _)| *n == name) {
                    return Some(nr);
                }
                syscalls::arm::Sysno::from_str(name).ok()?.id()
            }
        };
        u32::try_from(id).ok()
    }

    /// The multiplexed form of `name`, where this convention has one (i386's `socketcall`
    /// and `ipc`).
    pub(crate) fn muxed(self, name: &str) -> Option<Muxed> {
        if self != TargetArch::X86 {
            return None;
        }
        let via = |table: &[(&str, u32)], mux: &str, mask: u64| {
            let &(_, value) = table.iter().find(|(n, _)| *n == name)?;
            Some(Muxed {
                syscall: self.syscall_number(mux)?,
                mask,
                value: u64::from(value),
            })
        };
        via(&SOCKETCALL, "socketcall", u64::from(u32::MAX)).or_else(|| via(&IPC, "ipc", 0xffff))
    }
}

fn x32_number(name: &str) -> Option<u32> {
    if X32_ABSENT.contains(&name) {
        return None;
    }
    let nr = match X32_OWN.iter().find(|(n, _)| *n == name) {
        Some(&(_, nr)) => nr,
        None => u32::try_from(syscalls::x86_64::Sysno::from_str(name).ok()?.id()).ok()?,
    };
    Some(X32_SYSCALL_BIT | nr)
}
