//! Which conventions a kernel runs, decided from what it shows.

use super::*;

fn facts(
    config: Option<&str>,
    cmdline: &str,
    vsyscall32: bool,
    x32_probe: Option<bool>,
) -> HostFacts {
    HostFacts {
        config: config.map(str::to_string),
        cmdline: cmdline.to_string(),
        vsyscall32,
        x32_probe,
    }
}

fn why(arch: TargetArch, facts: &HostFacts) -> Option<String> {
    cannot_run(arch, TargetArch::X86_64, facts)
}

#[test]
fn x32_is_judged_by_the_kernel_config_then_by_a_probe() {
    let off = Some("the kernel is built without x32 support (CONFIG_X86_X32_ABI)".to_string());
    let built = facts(Some("CONFIG_X86_X32_ABI=y\n"), "", true, None);
    assert_eq!(why(TargetArch::X32, &built), None);
    let not_set = facts(
        Some("# CONFIG_X86_X32_ABI is not set\n"),
        "",
        true,
        Some(true),
    );
    assert_eq!(why(TargetArch::X32, &not_set), off);
    // Kernels before 5.18 name it X86_X32.
    let old = facts(Some("CONFIG_X86_X32=y\n"), "", true, None);
    assert_eq!(why(TargetArch::X32, &old), None);
    let probed_off = facts(None, "", true, Some(false));
    assert_eq!(
        why(TargetArch::X32, &probed_off).as_deref(),
        Some("the kernel answers x32 calls with ENOSYS (no CONFIG_X86_X32_ABI)")
    );
    assert_eq!(
        why(TargetArch::X32, &facts(None, "", true, Some(true))),
        None
    );
    // Nothing tells: kept.
    assert_eq!(why(TargetArch::X32, &facts(None, "", true, None)), None);
}

#[test]
fn ia32_is_judged_by_config_command_line_and_abi_sysctl() {
    let no_emulation =
        Some("the kernel is built without IA-32 emulation (CONFIG_IA32_EMULATION)".to_string());
    assert_eq!(why(TargetArch::X86, &facts(None, "", true, None)), None);
    assert_eq!(
        why(TargetArch::X86, &facts(None, "", false, None)),
        no_emulation
    );
    let not_set = facts(Some("# CONFIG_IA32_EMULATION is not set\n"), "", true, None);
    assert_eq!(why(TargetArch::X86, &not_set), no_emulation);
    let off = facts(None, "quiet ia32_emulation=off", true, None);
    assert!(why(TargetArch::X86, &off).is_some_and(|w| w.contains("ia32_emulation=")));
    // The last value given wins; words after `--` belong to init.
    let on_again = facts(
        None,
        "ia32_emulation=0 ia32_emulation=1 -- ia32_emulation=0",
        true,
        None,
    );
    assert_eq!(why(TargetArch::X86, &on_again), None);
    let default_off = "CONFIG_IA32_EMULATION=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n";
    assert!(
        why(TargetArch::X86, &facts(Some(default_off), "", true, None))
            .is_some_and(|w| w.contains("DEFAULT_DISABLED"))
    );
    let enabled = facts(Some(default_off), "ia32_emulation=true", true, None);
    assert_eq!(why(TargetArch::X86, &enabled), None);
}

#[test]
fn other_families_and_arm_compat_are_named() {
    let any = facts(None, "", true, None);
    assert_eq!(
        why(TargetArch::Arm, &any).as_deref(),
        Some("this is an x86_64 kernel")
    );
    assert_eq!(
        cannot_run(TargetArch::X86, TargetArch::Aarch64, &any).as_deref(),
        Some("this is an arm64 kernel")
    );
    assert_eq!(cannot_run(TargetArch::Arm, TargetArch::Aarch64, &any), None);
    let no_compat = facts(Some("# CONFIG_COMPAT is not set\n"), "", false, None);
    assert!(cannot_run(TargetArch::Arm, TargetArch::Aarch64, &no_compat)
        .is_some_and(|w| w.contains("CONFIG_COMPAT")));
    assert_eq!(why(TargetArch::X86_64, &any), None);
}

#[test]
fn the_x32_probe_agrees_with_this_kernels_config() {
    let facts = HostFacts::read();
    let unfiltered =
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp:\t0"));
    if !cfg!(target_arch = "x86_64") || facts.config.is_some() || !unfiltered {
        return;
    }
    let Ok(out) = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
    else {
        return;
    };
    if !out.status.success() {
        return;
    }
    let config = String::from_utf8_lossy(&out.stdout);
    let built = config.lines().any(|l| l == "CONFIG_X86_X32_ABI=y");
    assert_eq!(facts.x32_probe, Some(built));
}

#[test]
fn only_the_options_asked_about_are_kept_from_a_kernel_config() {
    let config = "CONFIG_64BIT=y\n# CONFIG_X86_X32_ABI is not set\nCONFIG_IA32_EMULATION=y\n\
                  CONFIG_COMPAT=y\nCONFIG_COMPAT_BINFMT_ELF=y\nCONFIG_X86_X32=y\n";
    let kept = crate::linux::seccomp::host::relevant_options(config);
    assert_eq!(
        kept,
        "# CONFIG_X86_X32_ABI is not set\nCONFIG_IA32_EMULATION=y\nCONFIG_COMPAT=y\nCONFIG_X86_X32=y\n"
    );
    let facts = facts(Some(&kept), "", true, None);
    assert_eq!(why(TargetArch::X86, &facts), None);
    // The old option name still counts.
    assert_eq!(why(TargetArch::X32, &facts), None);
}
