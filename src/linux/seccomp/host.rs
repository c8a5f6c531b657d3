//! Which of its family's conventions this kernel runs.
//!
//! A profile may list conventions the kernel cannot run (x32 is off in most distribution
//! kernels, IA-32 emulation can be switched off at boot, many arm64 CPUs have no 32-bit
//! mode): gpurun skips those with a warning instead of filtering calls that cannot
//! happen. The answer comes from what the kernel shows, strongest first: its build
//! configuration (`/boot/config-$(uname -r)`), its command line, `/proc/sys/abi`, and for
//! x32 one probing call. Where none of them tells, the convention is kept: filtering
//! calls that never come is harmless.

use std::path::Path;

use super::arch::TargetArch;
use crate::linux::sys;

/// What the running kernel shows about the conventions it runs.
#[derive(Debug, Default, Clone)]
pub(crate) struct HostFacts {
    /// The kernel's build configuration, where a plain-text copy is readable.
    pub(crate) config: Option<String>,
    /// `/proc/cmdline`.
    pub(crate) cmdline: String,
    /// `/proc/sys/abi/vsyscall32` exists: the kernel is built with IA-32 emulation.
    pub(crate) vsyscall32: bool,
    /// An x32 `getpid` succeeded (`Some(true)`) or got ENOSYS (`Some(false)`); `None` when
    /// not probed (another architecture, or gpurun itself runs under a seccomp filter,
    /// which could kill it for the attempt).
    pub(crate) x32_probe: Option<bool>,
}

impl HostFacts {
    /// Read the facts of the running kernel. Only reads files, plus one x32 call where no
    /// seccomp filter applies to gpurun.
    pub(crate) fn read() -> HostFacts {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        // Only the few options asked about are kept: a distribution's config is some
        // 10,000 lines.
        let config = std::fs::read_to_string(Path::new("/boot").join(format!("config-{release}")))
            .ok()
            .map(|text| relevant_options(&text));
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let vsyscall32 = Path::new("/proc/sys/abi/vsyscall32").exists();
        let unfiltered = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.split_whitespace().eq(["Seccomp:", "0"]))
        });
        let x32_probe = (cfg!(target_arch = "x86_64") && config.is_none() && unfiltered)
            .then(sys::seccomp::x32_calls_work)
            .flatten();
        HostFacts {
            config,
            cmdline,
            vsyscall32,
            x32_probe,
        }
    }

    /// `CONFIG_<name>`: `Some(true)` when built in, `Some(false)` when the configuration
    /// is readable and says otherwise, `None` without one.
    fn config(&self, name: &str) -> Option<bool> {
        let config = self.config.as_deref()?;
        let set = format!("CONFIG_{name}=y");
        Some(config.lines().any(|l| l.trim() == set))
    }

    /// A boolean kernel parameter (`name=1`, `=y`, `=on`, `=true`; `=0`, `=n`, `=off`,
    /// `=false`), the last one given winning as in the kernel.
    fn param(&self, name: &str) -> Option<bool> {
        let prefix = format!("{name}=");
        let value = self
            .cmdline
            .split_whitespace()
            .take_while(|w| *w != "--")
            .filter_map(|w| w.strip_prefix(&prefix))
            .last()?;
        match value.to_ascii_lowercase().as_str() {
            "1" | "y" | "yes" | "on" | "true" => Some(true),
            "0" | "n" | "no" | "off" | "false" => Some(false),
            _ => None,
        }
    }
}

/// The lines of a kernel config that [`cannot_run`] reads.
pub(crate) fn relevant_options(config: &str) -> String {
    const ASKED: [&str; 3] = ["CONFIG_IA32_EMULATION", "CONFIG_X86_X32", "CONFIG_COMPAT="];
    config
        .lines()
        .filter(|l| ASKED.iter().any(|a| l.contains(a)))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Why a kernel whose own convention is `native` cannot run programs of `arch`, when the
/// facts show that it cannot; `None` when it can or nothing tells.
pub(crate) fn cannot_run(
    arch: TargetArch,
    native: TargetArch,
    facts: &HostFacts,
) -> Option<String> {
    if !TargetArch::family(native).contains(&arch) {
        return Some(foreign(native));
    }
    match arch {
        TargetArch::X86 => ia32_off(facts),
        TargetArch::X32 => x32_off(facts),
        TargetArch::Arm if facts.config("COMPAT") == Some(false) => {
            Some("the kernel is built without 32-bit support (CONFIG_COMPAT)".into())
        }
        _ => None,
    }
}

/// Why a kernel of `native`'s family runs no other family's programs.
pub(crate) fn foreign(native: TargetArch) -> String {
    let family = match native {
        TargetArch::Aarch64 | TargetArch::Arm => "arm64",
        TargetArch::X86_64 | TargetArch::X86 | TargetArch::X32 => "x86_64",
    };
    format!("this is an {family} kernel")
}

fn ia32_off(facts: &HostFacts) -> Option<String> {
    if facts.config("IA32_EMULATION") == Some(false)
        || (facts.config.is_none() && !facts.vsyscall32)
    {
        return Some("the kernel is built without IA-32 emulation (CONFIG_IA32_EMULATION)".into());
    }
    match facts.param("ia32_emulation") {
        Some(false) => {
            Some("IA-32 emulation is off (ia32_emulation= on the kernel command line)".into())
        }
        Some(true) => None,
        None if facts.config("IA32_EMULATION_DEFAULT_DISABLED") == Some(true) => Some(
            "IA-32 emulation is off by default (CONFIG_IA32_EMULATION_DEFAULT_DISABLED)".into(),
        ),
        None => None,
    }
}

fn x32_off(facts: &HostFacts) -> Option<String> {
    // Kernels before 5.18 call the option X86_X32.
    let built = facts
        .config("X86_X32_ABI")
        .map(|abi| abi || facts.config("X86_X32") == Some(true));
    match (built, facts.x32_probe) {
        (Some(false), _) => {
            Some("the kernel is built without x32 support (CONFIG_X86_X32_ABI)".into())
        }
        (None, Some(false)) => {
            Some("the kernel answers x32 calls with ENOSYS (no CONFIG_X86_X32_ABI)".into())
        }
        _ => None,
    }
}
