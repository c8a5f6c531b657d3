//! Test helpers: a reference evaluator of OCI device rules, a small eBPF interpreter for the
//! instructions gpurun's device program uses, and a deterministic rule generator.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::devices::{parse_rule, DevKind, ACC_MKNOD, ACC_READ, ACC_WRITE};
use super::ebpf::{
    ALU32_AND_K, ALU32_MOV_K, ALU32_MOV_X, ALU32_RSH_K, JMP32_JEQ_K, JMP32_JNE_K, JMP32_JSET_K,
    JMP_EXIT, LDX_MEM_W,
};
use crate::linux::sys::bpf::BpfInsn;

pub fn rule(
    allow: bool,
    typ: char,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(match typ {
        'a' => LinuxDeviceType::A,
        'b' => LinuxDeviceType::B,
        'c' => LinuxDeviceType::C,
        'u' => LinuxDeviceType::U,
        _ => LinuxDeviceType::P,
    }));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// The meaning of the OCI list, evaluated directly: for each requested bit the last matching
/// rule holding that bit decides; no match denies.
pub fn reference(
    rules: &[LinuxDeviceCgroup],
    kind: DevKind,
    major: u32,
    minor: u32,
    access: u8,
) -> bool {
    let parsed: Vec<_> = rules
        .iter()
        .map(|r| parse_rule(r).expect("valid rule"))
        .collect();
    [ACC_MKNOD, ACC_READ, ACC_WRITE]
        .into_iter()
        .filter(|bit| access & bit != 0)
        .all(|bit| {
            let mut allowed = false;
            for r in &parsed {
                let hit = r.kind.is_none_or(|k| k == kind)
                    && r.major.is_none_or(|m| m == major)
                    && r.minor.is_none_or(|m| m == minor)
                    && r.access & bit != 0;
                if hit {
                    allowed = r.allow;
                }
            }
            allowed
        })
}

/// Runs a device program on one access. Supports exactly the instructions gpurun emits and
/// panics on anything else, so a stray opcode fails the test.
pub fn run_program(prog: &[BpfInsn], kind: DevKind, major: u32, minor: u32, access: u8) -> u32 {
    let access_type = (kind as u32) | (u32::from(access) << 16);
    let ctx = [access_type, major, minor];
    const CTX: u64 = 0xc0de_0000;
    let mut r = [0u64; 11];
    r[1] = CTX;
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let insn = prog[pc];
        let (dst, src) = (insn.dst() as usize, insn.src() as usize);
        let imm32 = insn.imm as u32;
        let w = |v: u64| v as u32;
        let mut next = pc + 1;
        let jump = |cond: bool| {
            if cond {
                (pc as i64 + 1 + i64::from(insn.off)) as usize
            } else {
                pc + 1
            }
        };
        match insn.code {
            LDX_MEM_W => {
                assert_eq!(r[src], CTX, "load from a non-context register at {pc}");
                let off = usize::try_from(insn.off).expect("non-negative offset");
                assert!(
                    off % 4 == 0 && off / 4 < ctx.len(),
                    "bad context offset {off}"
                );
                r[dst] = u64::from(ctx[off / 4]);
            }
            ALU32_AND_K => r[dst] = u64::from(w(r[dst]) & imm32),
            ALU32_RSH_K => r[dst] = u64::from(w(r[dst]) >> imm32),
            ALU32_MOV_K => r[dst] = u64::from(imm32),
            ALU32_MOV_X => r[dst] = u64::from(w(r[src])),
            JMP32_JEQ_K => next = jump(w(r[dst]) == imm32),
            JMP32_JNE_K => next = jump(w(r[dst]) != imm32),
            JMP32_JSET_K => next = jump(w(r[dst]) & imm32 != 0),
            JMP_EXIT => return w(r[0]),
            other => panic!("unexpected opcode {other:#04x} at {pc}"),
        }
        assert!(next > pc, "backward jump at {pc}");
        pc = next;
    }
    panic!("program did not exit");
}

/// A small deterministic generator (xorshift) for rule lists.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A rule over a small universe (majors 1, 2; minors 3, 4), so rules overlap often.
    pub fn device_rule(&mut self) -> LinuxDeviceCgroup {
        let typ = self.pick(&['a', 'b', 'c', 'c']);
        let major = self.pick(&[None, Some(1), Some(2)]);
        let minor = self.pick(&[None, Some(3), Some(4)]);
        let access = self.pick(&["r", "w", "m", "rw", "rm", "wm", "rwm", "rwm"]);
        let allow = self.below(3) != 0;
        rule(allow, typ, major, minor, access)
    }
}

/// Every (kind, major, minor, access) probe over the generator's universe plus outsiders.
pub fn probes() -> Vec<(DevKind, u32, u32, u8)> {
    let mut out = Vec::new();
    for kind in [DevKind::Block, DevKind::Char] {
        for major in [1, 2, 7] {
            for minor in [3, 4, 9] {
                for access in [ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE] {
                    out.push((kind, major, minor, access));
                }
            }
        }
    }
    out
}
