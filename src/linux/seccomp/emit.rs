//! A resolved rule table → one classic-BPF program.
//!
//! Layout, top to bottom:
//!
//! ```text
//!   ld arch; jeq NATIVE ? +1 : ret KILL_PROCESS     other architectures are killed
//!   ld nr
//!   jge 0x40000000 → enosys                          x86_64 only: x32 calls
//!   jgt HIGHEST    → enosys                          calls newer than the profile
//!   enosys: ret ERRNO(ENOSYS)
//!   jge PIVOT ? ja right : left                      binary search on the call number
//!   left:  …                                         down to leaves of a few calls:
//!   leaf:  jeq nr₁ → t₁; jeq nr₂ → t₂; …; ret DEFAULT
//!          t: ret ACTION | ja body                   targets, right after their leaf
//!   right: …
//!   body:  rules of one call with argument checks, most restrictive first
//! ```
//!
//! A call costs about two instructions per tree level plus a short scan (at most 26 for
//! containerd's profile, against some 280 for a linear scan). Every conditional jump stays
//! within a leaf or skips one `ja`, well inside its 255-instruction reach; `ja` reaches
//! subtrees and bodies at any distance.

use super::asm::{Asm, Cond, Label, Target, DATA_ARCH, DATA_ARGS, DATA_NR};
use super::translate::{precedence, Compare, CompareOp, Rule, Ruleset, TargetArch};
use super::SeccompError;

/// x32 system calls are x86_64 calls with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Calls a leaf of the search tree tests one after the other.
const LEAF: usize = 16;

/// What a dispatch `jeq` jumps to.
#[derive(Clone, PartialEq)]
enum Tail {
    Ret(u32),
    Body(Label),
}

/// The rules that can decide a call, most restrictive first; ties keep profile order, so
/// the first listed wins. Nothing after an unconditional rule can be reached.
fn ordered(rules: &[Rule]) -> Vec<Rule> {
    let mut rules = rules.to_vec();
    rules.sort_by_key(|rule| precedence(rule.action));
    if let Some(last) = rules.iter().position(|rule| rule.args.is_empty()) {
        rules.truncate(last + 1);
    }
    rules
}

pub(crate) fn emit(set: &Ruleset) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut asm = Asm::default();

    let native = asm.label();
    asm.load(DATA_ARCH);
    asm.jump(
        Cond::Eq,
        set.arch.audit_arch(),
        Target::To(native),
        Target::Next,
    );
    asm.ret(libc::SECCOMP_RET_KILL_PROCESS);
    asm.bind(native);
    asm.load(DATA_NR);

    let mut guards = Vec::new();
    if set.arch == TargetArch::X86_64 {
        guards.push((Cond::Ge, X32_SYSCALL_BIT));
    }
    if let Some(highest) = set.enosys_above {
        guards.push((Cond::Gt, highest));
    }
    if !guards.is_empty() {
        let enosys = asm.label();
        let dispatch = asm.label();
        let last = guards.len() - 1;
        for (i, (cond, k)) in guards.into_iter().enumerate() {
            let otherwise = if i == last {
                Target::To(dispatch)
            } else {
                Target::Next
            };
            asm.jump(cond, k, Target::To(enosys), otherwise);
        }
        asm.bind(enosys);
        asm.ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        asm.bind(dispatch);
    }

    let mut bodies = Vec::new();
    let mut entries = Vec::with_capacity(set.rules.len());
    for (&nr, rules) in &set.rules {
        let rules = ordered(rules);
        let tail = match rules.as_slice() {
            [only] if only.args.is_empty() => Tail::Ret(only.action),
            _ => {
                let body = asm.label();
                bodies.push((body, rules));
                Tail::Body(body)
            }
        };
        entries.push((nr, tail));
    }
    dispatch(&mut asm, &entries, set.default);

    for (label, rules) in bodies {
        asm.bind(label);
        emit_body(&mut asm, &rules, set.default);
    }
    asm.assemble()
}

/// Binary search over `entries`, sorted by call number; a leaf returns the default when
/// none of its calls matches.
fn dispatch(asm: &mut Asm, entries: &[(u32, Tail)], default: u32) {
    if entries.len() > LEAF {
        let (left, right) = entries.split_at(entries.len() / 2);
        let left_label = asm.label();
        let right_label = asm.label();
        asm.jump(Cond::Ge, right[0].0, Target::Next, Target::To(left_label));
        asm.ja(right_label);
        asm.bind(left_label);
        dispatch(asm, left, default);
        asm.bind(right_label);
        dispatch(asm, right, default);
        return;
    }
    let mut targets: Vec<(&Tail, Label)> = Vec::new();
    for (nr, tail) in entries {
        let label = match targets.iter().find(|(t, _)| *t == tail) {
            Some((_, label)) => *label,
            None => {
                let label = asm.label();
                targets.push((tail, label));
                label
            }
        };
        asm.jump(Cond::Eq, *nr, Target::To(label), Target::Next);
    }
    asm.ret(default);
    for (tail, label) in targets {
        asm.bind(label);
        match tail {
            Tail::Ret(action) => asm.ret(*action),
            Tail::Body(body) => asm.ja(*body),
        }
    }
}

fn emit_body(asm: &mut Asm, rules: &[Rule], default: u32) {
    for rule in rules {
        if rule.args.is_empty() {
            asm.ret(rule.action);
            return;
        }
        let fail = asm.label();
        for compare in &rule.args {
            emit_compare(asm, compare, fail);
        }
        asm.ret(rule.action);
        asm.bind(fail);
    }
    asm.ret(default);
}

/// Falls through when the comparison holds, jumps to `fail` otherwise. Arguments are
/// 64-bit, compared high half first; both supported architectures are little-endian, so
/// the low half is at the argument's offset and the high half 4 bytes above.
fn emit_compare(asm: &mut Asm, compare: &Compare, fail: Label) {
    let lo = DATA_ARGS + 8 * compare.index;
    let hi = lo + 4;
    let halves = |v: u64| ((v >> 32) as u32, v as u32);
    let fail = Target::To(fail);
    let next = Target::Next;
    match compare.op {
        CompareOp::Eq(v) => {
            let (vh, vl) = halves(v);
            asm.load(hi);
            asm.jump(Cond::Eq, vh, next, fail);
            asm.load(lo);
            asm.jump(Cond::Eq, vl, next, fail);
        }
        CompareOp::Ne(v) => {
            let (vh, vl) = halves(v);
            let holds = asm.label();
            asm.load(hi);
            asm.jump(Cond::Eq, vh, next, Target::To(holds));
            asm.load(lo);
            asm.jump(Cond::Eq, vl, fail, next);
            asm.bind(holds);
        }
        CompareOp::Gt(v) | CompareOp::Ge(v) => {
            let (vh, vl) = halves(v);
            let low = if matches!(compare.op, CompareOp::Gt(_)) {
                Cond::Gt
            } else {
                Cond::Ge
            };
            let holds = asm.label();
            asm.load(hi);
            asm.jump(Cond::Gt, vh, Target::To(holds), next);
            asm.jump(Cond::Eq, vh, next, fail);
            asm.load(lo);
            asm.jump(low, vl, next, fail);
            asm.bind(holds);
        }
        CompareOp::Lt(v) | CompareOp::Le(v) => {
            // a < v ⇔ ¬(a ≥ v); a ≤ v ⇔ ¬(a > v): the low half fails on the negation.
            let (vh, vl) = halves(v);
            let low_fails = if matches!(compare.op, CompareOp::Lt(_)) {
                Cond::Ge
            } else {
                Cond::Gt
            };
            let holds = asm.label();
            asm.load(hi);
            asm.jump(Cond::Gt, vh, fail, next);
            asm.jump(Cond::Eq, vh, next, Target::To(holds));
            asm.load(lo);
            asm.jump(low_fails, vl, fail, next);
            asm.bind(holds);
        }
        CompareOp::MaskedEq { mask, value } => {
            let (mh, ml) = halves(mask);
            let (xh, xl) = halves(value);
            asm.load(hi);
            asm.and(mh);
            asm.jump(Cond::Eq, xh, next, fail);
            asm.load(lo);
            asm.and(ml);
            asm.jump(Cond::Eq, xl, next, fail);
        }
    }
}
