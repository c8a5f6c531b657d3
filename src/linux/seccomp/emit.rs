//! Resolved rule tables, one per system call convention → one classic-BPF program.
//!
//! Layout, top to bottom:
//!
//! ```text
//!   ld arch                                          one check per filtered arch:
//!   jeq AUDIT_ARCH_X86_64 ? +0 : +1; ja x86_64
//!   jeq AUDIT_ARCH_I386   ? +0 : +1; ja i386
//!   ret KILL_PROCESS                                 conventions the profile does not list
//! x86_64:
//!   ld nr
//!   jge 0x40000000 ? +0 : +1; ja x32 | ret ENOSYS    x32 calls: their own section, or ENOSYS
//!   jgt HIGHEST    → enosys                          calls newer than the profile
//!   enosys: ret ERRNO(ENOSYS)
//!   jge PIVOT ? ja right : left                      binary search on the call number
//!   left:  …                                         down to leaves of a few calls:
//!   leaf:  jeq nr₁ → t₁; jeq nr₂ → t₂; …; ret DEFAULT
//!          t: ret ACTION | ja body                   targets, right after their leaf
//!   right: …
//! x32:, i386: …                                      the same, with that convention's numbers
//!   body:  rules of one call with argument checks, most restrictive first
//! ```
//!
//! A call costs about two instructions per tree level plus a short scan (at most 26 for
//! containerd's profile on x86_64, against some 280 for a linear scan). Every conditional
//! jump stays within a leaf or skips one `ja`, well inside its 255-instruction reach; `ja`
//! reaches sections, subtrees and bodies at any distance.

use super::arch::{TargetArch, X32_SYSCALL_BIT};
use super::asm::{Asm, Cond, Label, Target, DATA_ARCH, DATA_ARGS, DATA_NR};
use super::translate::{precedence, Compare, CompareOp, Rule, Ruleset};
use super::SeccompError;

/// Calls a leaf of the search tree tests one after the other.
const LEAF: usize = 16;

const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// What a dispatch `jeq` jumps to.
#[derive(Clone, PartialEq)]
enum Tail {
    Ret(u32),
    Body(Label),
}

/// A call's rules with argument checks, laid out after every section.
struct Body {
    label: Label,
    rules: Vec<Rule>,
    default: u32,
    wide: bool,
}

/// The conventions that share one `seccomp_data.arch` value: x86_64 and x32 tell their
/// calls apart by [`X32_SYSCALL_BIT`] in the number.
struct Group<'a> {
    audit_arch: u32,
    main: Option<&'a Ruleset>,
    x32: Option<&'a Ruleset>,
}

fn groups(sets: &[Ruleset]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for set in sets {
        let audit_arch = set.arch.audit_arch();
        let at = match groups.iter().position(|g| g.audit_arch == audit_arch) {
            Some(at) => at,
            None => {
                groups.push(Group {
                    audit_arch,
                    main: None,
                    x32: None,
                });
                groups.len() - 1
            }
        };
        let slot = if set.arch == TargetArch::X32 {
            &mut groups[at].x32
        } else {
            &mut groups[at].main
        };
        slot.get_or_insert(set);
    }
    groups
}

/// The rules that can decide a call, most restrictive first; ties keep profile order, so
/// the first listed wins. Nothing after an unconditional rule can be reached, and a
/// conditional rule right before it with the same result changes nothing (i386's
/// `socketcall` allowed outright, beside the allowed socket calls routed through it).
fn ordered(rules: &[Rule]) -> Vec<Rule> {
    let mut rules = rules.to_vec();
    rules.sort_by_key(|rule| precedence(rule.action));
    if let Some(last) = rules.iter().position(|rule| rule.args.is_empty()) {
        rules.truncate(last + 1);
        while let [.., before, last] = rules.as_slice() {
            if before.action != last.action {
                break;
            }
            rules.remove(rules.len() - 2);
        }
    }
    rules
}

/// One program for `sets`, the native convention's first (it is checked first).
pub(crate) fn emit(sets: &[Ruleset]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut asm = Asm::default();
    let groups = groups(sets);

    asm.load(DATA_ARCH);
    let sections: Vec<Label> = groups.iter().map(|_| asm.label()).collect();
    for (group, &section) in groups.iter().zip(&sections) {
        let other = asm.label();
        asm.jump(Cond::Eq, group.audit_arch, Target::Next, Target::To(other));
        asm.ja(section);
        asm.bind(other);
    }
    asm.ret(libc::SECCOMP_RET_KILL_PROCESS);

    let mut bodies = Vec::new();
    for (group, section) in groups.iter().zip(sections) {
        asm.bind(section);
        emit_group(&mut asm, group, &mut bodies);
    }
    for body in bodies {
        asm.bind(body.label);
        emit_body(&mut asm, &body);
    }
    asm.assemble()
}

fn emit_group(asm: &mut Asm, group: &Group<'_>, bodies: &mut Vec<Body>) {
    asm.load(DATA_NR);
    let x32 = asm.label();
    if group.audit_arch == TargetArch::X86_64.audit_arch() {
        // Without an x32 section its calls get ENOSYS, whatever the default: it is what a
        // kernel without x32 answers, and their numbers mean nothing to x86_64's rules.
        let not_x32 = asm.label();
        asm.jump(Cond::Ge, X32_SYSCALL_BIT, Target::Next, Target::To(not_x32));
        match group.x32 {
            Some(_) => asm.ja(x32),
            None => asm.ret(RET_ENOSYS),
        }
        asm.bind(not_x32);
    }
    match group.main {
        Some(set) => emit_section(asm, set, bodies),
        None => asm.ret(libc::SECCOMP_RET_KILL_PROCESS),
    }
    if let Some(set) = group.x32 {
        asm.bind(x32);
        emit_section(asm, set, bodies);
    }
}

/// One convention's calls, with the call number already loaded.
fn emit_section(asm: &mut Asm, set: &Ruleset, bodies: &mut Vec<Body>) {
    if let Some(highest) = set.enosys_above {
        let enosys = asm.label();
        let dispatch = asm.label();
        asm.jump(Cond::Gt, highest, Target::To(enosys), Target::To(dispatch));
        asm.bind(enosys);
        asm.ret(RET_ENOSYS);
        asm.bind(dispatch);
    }
    let mut entries = Vec::with_capacity(set.rules.len());
    for (&nr, rules) in &set.rules {
        let rules = ordered(rules);
        let tail = match rules.as_slice() {
            [only] if only.args.is_empty() => Tail::Ret(only.action),
            _ => {
                let label = asm.label();
                bodies.push(Body {
                    label,
                    rules,
                    default: set.default,
                    wide: set.arch.wide_args(),
                });
                Tail::Body(label)
            }
        };
        entries.push((nr, tail));
    }
    dispatch(asm, &entries, set.default);
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

fn emit_body(asm: &mut Asm, body: &Body) {
    for rule in &body.rules {
        if rule.args.is_empty() {
            asm.ret(rule.action);
            return;
        }
        let fail = asm.label();
        for compare in &rule.args {
            if body.wide {
                emit_compare(asm, compare, fail);
            } else {
                emit_compare_low(asm, compare, fail);
            }
        }
        asm.ret(rule.action);
        asm.bind(fail);
    }
    asm.ret(body.default);
}

/// Falls through when the comparison holds, jumps to `fail` otherwise. Arguments are
/// 64-bit, compared high half first; every supported convention is little-endian, so the
/// low half is at the argument's offset and the high half 4 bytes above.
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

/// [`emit_compare`] for the 32-bit conventions: as libseccomp does there, only the low 32
/// bits of the argument and of the profile's values are compared.
fn emit_compare_low(asm: &mut Asm, compare: &Compare, fail: Label) {
    let lo = DATA_ARGS + 8 * compare.index;
    let fail = Target::To(fail);
    let next = Target::Next;
    asm.load(lo);
    match compare.op {
        CompareOp::Eq(v) => asm.jump(Cond::Eq, v as u32, next, fail),
        CompareOp::Ne(v) => asm.jump(Cond::Eq, v as u32, fail, next),
        CompareOp::Gt(v) => asm.jump(Cond::Gt, v as u32, next, fail),
        CompareOp::Ge(v) => asm.jump(Cond::Ge, v as u32, next, fail),
        CompareOp::Lt(v) => asm.jump(Cond::Ge, v as u32, fail, next),
        CompareOp::Le(v) => asm.jump(Cond::Gt, v as u32, fail, next),
        CompareOp::MaskedEq { mask, value } => {
            if mask as u32 != u32::MAX {
                asm.and(mask as u32);
            }
            asm.jump(Cond::Eq, value as u32, next, fail);
        }
    }
}
