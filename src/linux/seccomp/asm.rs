//! A tiny classic-BPF assembler with forward labels.
//!
//! Seccomp programs only jump forward; a conditional jump reaches at most 255 instructions
//! ahead, `ja` any distance. The emitter lays code out so that conditional targets stay
//! near; `assemble` checks every offset and reports the first one out of reach rather than
//! truncating it.

use super::SeccompError;

/// Byte offsets into `struct seccomp_data` (`linux/seccomp.h`).
pub(crate) const DATA_NR: u32 = 0;
pub(crate) const DATA_ARCH: u32 = 4;
pub(crate) const DATA_ARGS: u32 = 16;

/// The kernel's limit on one classic-BPF program (`BPF_MAXINSNS`).
pub(crate) const MAX_INSNS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Label(usize);

#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The instruction right after the jump.
    Next,
    To(Label),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Cond {
    Eq,
    Gt,
    Ge,
}

impl Cond {
    fn code(self) -> u16 {
        let op = match self {
            Cond::Eq => libc::BPF_JEQ,
            Cond::Gt => libc::BPF_JGT,
            Cond::Ge => libc::BPF_JGE,
        };
        (libc::BPF_JMP | op | libc::BPF_K) as u16
    }
}

#[derive(Clone, Copy, Debug)]
enum Item {
    /// `A = *(u32 *)(seccomp_data + off)`
    Load(u32),
    /// `A &= k`
    And(u32),
    Jump {
        cond: Cond,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Always(Label),
    Ret(u32),
    Bind(Label),
}

#[derive(Default)]
pub(crate) struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    pub(crate) fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    pub(crate) fn bind(&mut self, label: Label) {
        self.items.push(Item::Bind(label));
    }

    pub(crate) fn load(&mut self, offset: u32) {
        self.items.push(Item::Load(offset));
    }

    pub(crate) fn and(&mut self, mask: u32) {
        self.items.push(Item::And(mask));
    }

    pub(crate) fn jump(&mut self, cond: Cond, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Jump { cond, k, jt, jf });
    }

    pub(crate) fn ja(&mut self, to: Label) {
        self.items.push(Item::Always(to));
    }

    pub(crate) fn ret(&mut self, action: u32) {
        self.items.push(Item::Ret(action));
    }

    /// Instructions emitted so far (labels take no room).
    pub(crate) fn len(&self) -> usize {
        self.items
            .iter()
            .filter(|item| !matches!(item, Item::Bind(_)))
            .count()
    }

    /// Resolve labels into relative offsets. Fails if the program is over the kernel's
    /// size limit or a jump cannot reach its target.
    pub(crate) fn assemble(self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let count = self.len();
        if count > MAX_INSNS {
            return Err(SeccompError::TooLarge {
                instructions: count,
            });
        }
        let mut at = vec![None; self.labels];
        let mut pc = 0usize;
        for item in &self.items {
            match item {
                Item::Bind(label) => at[label.0] = Some(pc),
                _ => pc += 1,
            }
        }
        let offset = |pc: usize, target: Target| -> Result<usize, SeccompError> {
            let Target::To(label) = target else {
                return Ok(0);
            };
            match at[label.0] {
                Some(to) if to > pc => Ok(to - pc - 1),
                _ => Err(SeccompError::JumpOutOfRange { at: pc }),
            }
        };
        let mut out = Vec::with_capacity(count);
        for item in &self.items {
            let pc = out.len();
            let insn = match *item {
                Item::Bind(_) => continue,
                Item::Load(off) => stmt((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, off),
                Item::And(k) => stmt((libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16, k),
                Item::Ret(k) => stmt((libc::BPF_RET | libc::BPF_K) as u16, k),
                Item::Always(label) => {
                    let off = offset(pc, Target::To(label))?;
                    let k =
                        u32::try_from(off).map_err(|_| SeccompError::JumpOutOfRange { at: pc })?;
                    stmt((libc::BPF_JMP | libc::BPF_JA) as u16, k)
                }
                Item::Jump { cond, k, jt, jf } => {
                    let near = |off: usize| {
                        u8::try_from(off).map_err(|_| SeccompError::JumpOutOfRange { at: pc })
                    };
                    libc::sock_filter {
                        code: cond.code(),
                        jt: near(offset(pc, jt)?)?,
                        jf: near(offset(pc, jf)?)?,
                        k,
                    }
                }
            };
            out.push(insn);
        }
        Ok(out)
    }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
