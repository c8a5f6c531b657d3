//! OCI `linux.seccomp` → a per-architecture rule table.
//!
//! Everything the profile says is checked here, so the emitter only lays out code.
//! Conversions follow runc where the runtime spec is silent (each noted where it happens).

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::arch::{Muxed, TargetArch};
use super::SeccompError;

/// System call arguments per call (`seccomp_data.args`).
const MAX_ARGS: usize = 6;

/// One argument comparison; on the 64-bit conventions on the full 64-bit value, on the
/// 32-bit ones on the low half (as libseccomp does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Compare {
    pub(crate) index: u32,
    pub(crate) op: CompareOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Ne(u64),
    Lt(u64),
    Le(u64),
    Eq(u64),
    Ge(u64),
    Gt(u64),
    /// `(arg & mask) == value`; OCI writes it `{value: mask, valueTwo: value}`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

/// A rule for one system call: `action` when every comparison holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) action: u32,
    pub(crate) args: Vec<Compare>,
}

/// A profile resolved for one architecture.
#[derive(Debug)]
pub(crate) struct Ruleset {
    pub(crate) arch: TargetArch,
    /// The kernel return value (`SECCOMP_RET_*` | data) when no rule matches.
    pub(crate) default: u32,
    /// Rules per system call number, in profile order.
    pub(crate) rules: BTreeMap<u32, Vec<Rule>>,
    /// Calls numbered above this get ENOSYS instead of the default action.
    pub(crate) enosys_above: Option<u32>,
    /// `SECCOMP_FILTER_FLAG_*` for seccomp(2).
    pub(crate) flags: libc::c_ulong,
    /// Names the architecture's table does not know (and that are not multiplexed), in
    /// profile order, once each.
    pub(crate) skipped: Vec<String>,
}

/// The action value and its data, as the kernel reads a filter's return.
pub(crate) fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
) -> Result<u32, SeccompError> {
    // runc's defaults: ERRNO and TRACE carry EPERM unless errnoRet says otherwise; other
    // actions ignore errnoRet.
    let data = || -> Result<u32, SeccompError> {
        match errno_ret {
            None => Ok(libc::EPERM as u32),
            Some(value) if value <= libc::SECCOMP_RET_DATA => Ok(value),
            Some(value) => Err(SeccompError::ErrnoRet {
                field: field.to_string(),
                value,
            }),
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data()?,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            libc::SECCOMP_RET_KILL_THREAD
        }
        LinuxSeccompAction::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        LinuxSeccompAction::ScmpActTrace => libc::SECCOMP_RET_TRACE | data()?,
        LinuxSeccompAction::ScmpActLog => libc::SECCOMP_RET_LOG,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Notify {
                field: field.to_string(),
            })
        }
    })
}

/// The kernel's precedence of an action: lower is more restrictive (`ACTION_ONLY` in
/// kernel/seccomp.c compares the action bits as a signed 32-bit number).
pub(crate) fn precedence(action: u32) -> i32 {
    (action & libc::SECCOMP_RET_ACTION_FULL) as i32
}

/// Actions for which runc adds no ENOSYS stub: a tracer or a permissive default should see
/// new system calls as they are.
fn is_permissive(action: u32) -> bool {
    matches!(
        action & libc::SECCOMP_RET_ACTION_FULL,
        libc::SECCOMP_RET_ALLOW | libc::SECCOMP_RET_LOG | libc::SECCOMP_RET_TRACE
    )
}

fn flag_bits(flags: &[LinuxSeccompFilterFlag]) -> Result<libc::c_ulong, SeccompError> {
    let mut bits = 0;
    for flag in flags {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Harmless in the single-threaded init; passed on so a threaded caller gets
            // what it asked for.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            // The kernel accepts it only together with a notification listener, which
            // gpurun does not create.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::UnsupportedFlag {
                    flag: flag.to_string(),
                })
            }
        };
    }
    Ok(bits)
}

fn compare(arg: &LinuxSeccompArg, field: &str) -> Result<Compare, SeccompError> {
    let index = arg.index();
    if index >= MAX_ARGS {
        return Err(SeccompError::ArgIndex {
            field: field.to_string(),
            index,
        });
    }
    let value = arg.value();
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => CompareOp::Ne(value),
        LinuxSeccompOperator::ScmpCmpLt => CompareOp::Lt(value),
        LinuxSeccompOperator::ScmpCmpLe => CompareOp::Le(value),
        LinuxSeccompOperator::ScmpCmpEq => CompareOp::Eq(value),
        LinuxSeccompOperator::ScmpCmpGe => CompareOp::Ge(value),
        LinuxSeccompOperator::ScmpCmpGt => CompareOp::Gt(value),
        LinuxSeccompOperator::ScmpCmpMaskedEq => CompareOp::MaskedEq {
            mask: value,
            value: arg.value_two().unwrap_or(0),
        },
    };
    Ok(Compare {
        index: index as u32,
        op,
    })
}

/// The rules one OCI entry stands for. As runc does, several comparisons on the same
/// argument become one rule each (any of them matches); otherwise all must hold.
fn rules_of(syscall: &LinuxSyscall, action: u32, field: &str) -> Result<Vec<Rule>, SeccompError> {
    let args = syscall.args().as_deref().unwrap_or_default();
    let compares = args
        .iter()
        .map(|arg| compare(arg, field))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = [false; MAX_ARGS];
    let repeats = compares
        .iter()
        .any(|c| std::mem::replace(&mut seen[c.index as usize], true));
    Ok(if repeats {
        compares
            .into_iter()
            .map(|c| Rule {
                action,
                args: vec![c],
            })
            .collect()
    } else {
        vec![Rule {
            action,
            args: compares,
        }]
    })
}

/// The rule for a call made through its multiplexer (i386's `socketcall`, `ipc`). Only an
/// entry without argument comparisons is carried over: the multiplexed call's arguments
/// sit behind a pointer, where seccomp cannot read them, so a conditional rule cannot be
/// checked there and is left to the multiplexer's own rules and the default.
fn muxed_rule(entry: &[Rule], mux: Muxed) -> Option<Rule> {
    let [rule] = entry else { return None };
    rule.args.is_empty().then(|| Rule {
        action: rule.action,
        args: vec![Compare {
            index: 0,
            op: CompareOp::MaskedEq {
                mask: mux.mask,
                value: mux.value,
            },
        }],
    })
}

/// `syscalls[3] (mkdir, mkdirat)`, for errors; long name lists are cut short.
fn entry_name(index: usize, names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut shown = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        shown.push_str(", …");
    }
    format!("syscalls[{index}] ({shown})")
}

/// Resolve `profile` for `arch`. Pure: reads nothing from the host.
pub(crate) fn translate(profile: &LinuxSeccomp, arch: TargetArch) -> Result<Ruleset, SeccompError> {
    if let Some(path) = profile.listener_path() {
        return Err(SeccompError::ListenerPath { path: path.clone() });
    }
    let default = action_value(
        profile.default_action(),
        profile.default_errno_ret(),
        "defaultAction",
    )?;
    let flags = flag_bits(profile.flags().as_deref().unwrap_or_default())?;

    let mut rules: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut highest: Option<u32> = None;
    for (i, syscall) in profile.syscalls().iter().flatten().enumerate() {
        let field = entry_name(i, syscall.names());
        let action = action_value(syscall.action(), syscall.errno_ret(), &field)?;
        let entry = rules_of(syscall, action, &field)?;
        // runc drops a rule whose action is the default's (libseccomp refuses it);
        // dropping it here too makes overlapping rules resolve as they do under runc.
        let keep = action != default;
        for name in syscall.names() {
            let muxed = arch.muxed(name);
            if let Some(mux) = muxed {
                // The multiplexer must stay below the ENOSYS threshold, or the rules routed
                // through it could never be reached.
                highest = highest.max(Some(mux.syscall));
                match muxed_rule(&entry, mux) {
                    Some(rule) if keep => rules.entry(mux.syscall).or_default().push(rule),
                    _ => {}
                }
            }
            let Some(nr) = arch.syscall_number(name) else {
                if muxed.is_none() && !skipped.contains(name) {
                    skipped.push(name.clone());
                }
                continue;
            };
            highest = highest.max(Some(nr));
            if keep {
                rules.entry(nr).or_default().extend(entry.iter().cloned());
            }
        }
    }
    // Calls newer than any the profile names get ENOSYS when the default denies, so that
    // libc falls back to an older call (clone3 → clone) instead of failing with EPERM.
    // runc applies the same rule; an explicit defaultErrnoRet of ENOSYS needs no stub.
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let enosys_above = highest.filter(|_| !is_permissive(default) && default != enosys);
    Ok(Ruleset {
        arch,
        default,
        rules,
        enosys_above,
        flags,
        skipped,
    })
}
