use super::*;
use crate::linux::cgroups::devices::{DevKind, ACC_MKNOD, ACC_READ, ACC_WRITE};
use crate::linux::cgroups::test_support::{probes, reference, rule, run_program, Rng};

fn program(rules: &[LinuxDeviceCgroup]) -> Vec<BpfInsn> {
    device_program(&DevicePolicy::from_rules(rules).expect("valid rules"))
}

#[test]
fn prologue_loads_type_access_major_minor_from_the_context() {
    let p = program(&[]);
    let shape: Vec<(u8, u8, u8, i16, i32)> = p
        .iter()
        .map(|i| (i.code, i.dst(), i.src(), i.off, i.imm))
        .collect();
    assert_eq!(
        shape,
        [
            (LDX_MEM_W, 2, 1, 0, 0),
            (ALU32_AND_K, 2, 0, 0, 0xffff),
            (LDX_MEM_W, 3, 1, 0, 0),
            (ALU32_RSH_K, 3, 0, 0, 16),
            (LDX_MEM_W, 4, 1, 4, 0),
            (LDX_MEM_W, 5, 1, 8, 0),
            (ALU32_MOV_K, 0, 0, 0, 0),
            (JMP_EXIT, 0, 0, 0, 0),
        ]
    );
}

#[test]
fn one_exact_allow_rule_is_one_block() {
    let p = program(&[
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'c', Some(1), Some(3), "rw"),
    ]);
    let block: Vec<(u8, u8, i16, i32)> = p[6..]
        .iter()
        .map(|i| (i.code, i.dst(), i.off, i.imm))
        .collect();
    assert_eq!(
        block,
        [
            (JMP32_JNE_K, 2, 5, DevKind::Char as i32),
            (JMP32_JSET_K, 3, 4, i32::from(ACC_MKNOD)),
            (JMP32_JNE_K, 4, 3, 1),
            (JMP32_JNE_K, 5, 2, 3),
            (ALU32_MOV_K, 0, 0, 1),
            (JMP_EXIT, 0, 0, 0),
            (ALU32_MOV_K, 0, 0, 0),
            (JMP_EXIT, 0, 0, 0),
        ]
    );
}

#[test]
fn the_program_allows_and_denies_per_device_and_access() {
    let rules = [
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'c', None, None, "m"),
        rule(true, 'c', Some(195), None, "rw"),
        rule(false, 'c', Some(195), None, "w"),
        rule(true, 'b', Some(8), Some(0), "r"),
    ];
    let p = program(&rules);
    let cases = [
        (DevKind::Char, 195, 0, ACC_READ, 1),
        (DevKind::Char, 195, 0, ACC_READ | ACC_WRITE, 0),
        (DevKind::Char, 195, 255, ACC_WRITE, 0),
        (DevKind::Char, 195, 255, ACC_MKNOD, 1),
        (DevKind::Char, 196, 0, ACC_READ, 0),
        (DevKind::Char, 196, 0, ACC_MKNOD, 1),
        (DevKind::Block, 8, 0, ACC_READ, 1),
        (DevKind::Block, 8, 0, ACC_WRITE, 0),
        (DevKind::Block, 8, 0, ACC_READ | ACC_WRITE, 0),
        (DevKind::Block, 8, 1, ACC_MKNOD, 0),
    ];
    for (kind, major, minor, access, want) in cases {
        assert_eq!(
            run_program(&p, kind, major, minor, access),
            want,
            "{kind:?} {major}:{minor} {access}"
        );
    }
}

#[test]
fn a_read_write_rule_allows_opens_but_not_mknod() {
    let p = program(&[
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'b', Some(8), Some(20), "rw"),
    ]);
    for (access, want) in [
        (ACC_READ, 1),
        (ACC_WRITE, 1),
        (ACC_READ | ACC_WRITE, 1),
        (ACC_MKNOD, 0),
    ] {
        assert_eq!(
            run_program(&p, DevKind::Block, 8, 20, access),
            want,
            "{access}"
        );
    }
    // With runc's defaults mknod comes from `b *:* m`, the opens still from `rw` alone.
    let mut rules = vec![
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'b', Some(8), Some(20), "rw"),
    ];
    rules.extend(crate::linux::cgroups::default_device_rules());
    let p = program(&rules);
    assert_eq!(run_program(&p, DevKind::Block, 8, 20, ACC_MKNOD), 1);
    assert_eq!(
        run_program(&p, DevKind::Block, 8, 20, ACC_READ | ACC_WRITE),
        1
    );
    assert_eq!(run_program(&p, DevKind::Block, 8, 21, ACC_READ), 0);
}

#[test]
fn allow_default_programs_deny_only_the_exceptions() {
    let rules = [
        rule(true, 'a', None, None, "rwm"),
        rule(false, 'c', Some(10), Some(200), "w"),
    ];
    let p = program(&rules);
    assert_eq!(run_program(&p, DevKind::Char, 10, 200, ACC_READ), 1);
    assert_eq!(
        run_program(&p, DevKind::Char, 10, 200, ACC_READ | ACC_WRITE),
        0
    );
    assert_eq!(run_program(&p, DevKind::Block, 10, 200, ACC_WRITE), 1);
}

#[test]
fn numbers_above_two_to_the_31_compare_as_unsigned() {
    let big = 0xffff_fff0_u32;
    let p = program(&[rule(true, 'c', Some(i64::from(big)), Some(0), "r")]);
    assert_eq!(run_program(&p, DevKind::Char, big, 0, ACC_READ), 1);
    assert_eq!(run_program(&p, DevKind::Char, 16, 0, ACC_READ), 0);
}

#[test]
fn program_agrees_with_the_rule_list_on_generated_cases() {
    let mut rng = Rng::new(0xdecaf);
    let mut checked = 0;
    for _ in 0..3000 {
        let len = 1 + rng.below(7) as usize;
        let rules: Vec<LinuxDeviceCgroup> = (0..len).map(|_| rng.device_rule()).collect();
        let Ok(policy) = DevicePolicy::from_rules(&rules) else {
            continue;
        };
        let p = device_program(&policy);
        for (kind, major, minor, access) in probes() {
            let want = u32::from(reference(&rules, kind, major, minor, access));
            assert_eq!(
                run_program(&p, kind, major, minor, access),
                want,
                "rules {rules:?} probe {kind:?} {major}:{minor} {access}"
            );
        }
        checked += 1;
    }
    assert!(checked > 1000, "checked {checked}");
}
