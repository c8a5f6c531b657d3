//! A classic-BPF interpreter for seccomp programs, for the tests: what the kernel would
//! return for one system call.

use super::asm::MAX_INSNS;

/// `struct seccomp_data`, laid out little-endian as on x86_64 and aarch64.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Data {
    pub(crate) nr: u32,
    pub(crate) arch: u32,
    pub(crate) instruction_pointer: u64,
    pub(crate) args: [u64; 6],
}

impl Data {
    fn bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0..4].copy_from_slice(&self.nr.to_le_bytes());
        out[4..8].copy_from_slice(&self.arch.to_le_bytes());
        out[8..16].copy_from_slice(&self.instruction_pointer.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        out
    }
}

const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const AND_K: u32 = libc::BPF_ALU | libc::BPF_AND | libc::BPF_K;
const JA: u32 = libc::BPF_JMP | libc::BPF_JA;
const JEQ_K: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGT_K: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
const JGE_K: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JSET_K: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const RET_K: u32 = libc::BPF_RET | libc::BPF_K;

/// The static checks the kernel makes before accepting a program (`bpf_check_classic`
/// and `seccomp_check_filter`), for the instructions gpurun emits.
pub(crate) fn check(program: &[libc::sock_filter]) {
    assert!(!program.is_empty(), "empty program");
    assert!(program.len() <= MAX_INSNS, "{} instructions", program.len());
    for (pc, insn) in program.iter().enumerate() {
        let rest = program.len() - pc - 1;
        match u32::from(insn.code) {
            LD_W_ABS => assert!(insn.k % 4 == 0 && insn.k < 64, "load of {} at {pc}", insn.k),
            AND_K | RET_K => {}
            JA => assert!((insn.k as usize) < rest, "ja out of the program at {pc}"),
            JEQ_K | JGT_K | JGE_K | JSET_K => assert!(
                usize::from(insn.jt) < rest && usize::from(insn.jf) < rest,
                "jump out of the program at {pc}"
            ),
            code => panic!("instruction {code:#x} at {pc} is not allowed in seccomp"),
        }
    }
    let last = program[program.len() - 1];
    assert_eq!(
        u32::from(last.code),
        RET_K,
        "the last instruction must return"
    );
}

/// Run one program over `data`; returns the `SECCOMP_RET_*` value.
pub(crate) fn run(program: &[libc::sock_filter], data: &Data) -> u32 {
    run_counting(program, data).0
}

/// Like [`run`], also counting the instructions executed.
pub(crate) fn run_counting(program: &[libc::sock_filter], data: &Data) -> (u32, usize) {
    let mem = data.bytes();
    let mut a = 0u32;
    let mut pc = 0usize;
    let mut steps = 0usize;
    loop {
        let insn = program[pc];
        pc += 1;
        steps += 1;
        let k = insn.k;
        let (jt, jf) = (usize::from(insn.jt), usize::from(insn.jf));
        match u32::from(insn.code) {
            LD_W_ABS => {
                let at = k as usize;
                a = u32::from_le_bytes([mem[at], mem[at + 1], mem[at + 2], mem[at + 3]]);
            }
            AND_K => a &= k,
            JA => pc += k as usize,
            JEQ_K => pc += if a == k { jt } else { jf },
            JGT_K => pc += if a > k { jt } else { jf },
            JGE_K => pc += if a >= k { jt } else { jf },
            JSET_K => pc += if a & k != 0 { jt } else { jf },
            RET_K => return (k, steps),
            code => panic!("instruction {code:#x} is not allowed in seccomp"),
        }
    }
}

/// What the kernel returns with several programs installed (`seccomp_run_filters`): every
/// program runs, newest first, and the lowest action as a signed number wins; a strict
/// comparison keeps the newest among equal actions.
pub(crate) fn run_all(programs: &[Vec<libc::sock_filter>], data: &Data) -> u32 {
    let only = |ret: u32| (ret & libc::SECCOMP_RET_ACTION_FULL) as i32;
    let mut ret = libc::SECCOMP_RET_ALLOW;
    for program in programs.iter().rev() {
        let current = run(program, data);
        if only(current) < only(ret) {
            ret = current;
        }
    }
    ret
}
