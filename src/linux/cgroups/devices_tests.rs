use super::*;
use crate::linux::cgroups::test_support::{probes, reference, rule, Rng};

fn writes(rules: &[LinuxDeviceCgroup]) -> Vec<(&'static str, String)> {
    DevicePolicy::from_rules(rules)
        .expect("valid rules")
        .v1_writes()
}

fn w(file: &'static str, line: &str) -> (&'static str, String) {
    (file, line.to_string())
}

#[test]
fn container_rules_become_deny_all_then_allow_lines() {
    let rules = [
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'c', None, None, "m"),
        rule(true, 'c', Some(1), Some(3), "rwm"),
        rule(true, 'c', Some(136), None, "rwm"),
        rule(true, 'b', Some(7), Some(0), "r"),
    ];
    assert_eq!(
        writes(&rules),
        [
            w("devices.deny", "a"),
            w("devices.allow", "c *:* m"),
            w("devices.allow", "c 1:3 rwm"),
            w("devices.allow", "c 136:* rwm"),
            w("devices.allow", "b 7:0 r"),
        ]
    );
}

#[test]
fn an_empty_list_denies_everything() {
    assert_eq!(writes(&[]), [w("devices.deny", "a")]);
    let policy = DevicePolicy::from_rules(&[]).expect("empty list");
    assert!(!policy.allows(DevKind::Char, 1, 3, ACC_READ));
}

#[test]
fn allow_all_switches_to_an_allow_default_with_deny_exceptions() {
    let rules = [
        rule(true, 'a', None, None, "rwm"),
        rule(false, 'c', Some(10), Some(200), "rw"),
    ];
    assert_eq!(
        writes(&rules),
        [w("devices.allow", "a"), w("devices.deny", "c 10:200 rw")]
    );
}

#[test]
fn omitted_type_and_numbers_are_wildcards() {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_access(Some("r".to_string()));
    let parsed = parse_rule(&r).expect("valid");
    assert_eq!(
        (parsed.kind, parsed.major, parsed.minor),
        (None, None, None)
    );
    // Type a with partial access is two exceptions, not a reset of the cgroup.
    assert_eq!(
        writes(&[r]),
        [
            w("devices.deny", "a"),
            w("devices.allow", "b *:* r"),
            w("devices.allow", "c *:* r")
        ]
    );
}

#[test]
fn a_later_deny_takes_bits_off_an_earlier_allow() {
    let rules = [
        rule(true, 'c', Some(1), Some(3), "rwm"),
        rule(false, 'c', Some(1), Some(3), "w"),
    ];
    assert_eq!(
        writes(&rules),
        [w("devices.deny", "a"), w("devices.allow", "c 1:3 rm")]
    );
}

#[test]
fn a_later_wide_deny_removes_narrower_allows() {
    let rules = [
        rule(true, 'c', Some(1), Some(3), "rwm"),
        rule(true, 'c', Some(1), Some(5), "rw"),
        rule(false, 'c', Some(1), None, "rwm"),
    ];
    assert_eq!(writes(&rules), [w("devices.deny", "a")]);
}

#[test]
fn punching_a_hole_in_a_wider_allow_is_rejected() {
    let rules = [
        rule(true, 'c', None, None, "rwm"),
        rule(false, 'c', Some(1), Some(3), "w"),
    ];
    let err = DevicePolicy::from_rules(&rules).expect_err("hole in c *:*");
    assert!(err.to_string().contains("c *:* rwm"), "{err}");
}

#[test]
fn separately_allowed_bits_combine_for_one_device() {
    // r from a wide rule and w from a narrow one: O_RDWR on c 1:3 is allowed, which the v1
    // kernel only does when one exception holds both bits.
    let rules = [
        rule(true, 'c', None, None, "r"),
        rule(true, 'c', Some(1), Some(3), "w"),
    ];
    let policy = DevicePolicy::from_rules(&rules).expect("valid");
    assert!(policy.allows(DevKind::Char, 1, 3, ACC_READ | ACC_WRITE));
    assert!(!policy.allows(DevKind::Char, 1, 4, ACC_READ | ACC_WRITE));
    assert!(policy.v1_writes().contains(&w("devices.allow", "c 1:3 rw")));
}

#[test]
fn an_access_string_is_kept_as_given_beside_the_default_mknod_rule() {
    // runc's defaults end with `b *:* m`: mknod of 8:20 comes from that line, and the
    // rule the config gave keeps exactly its own `rw`.
    let mut rules = vec![
        rule(false, 'a', None, None, "rwm"),
        rule(true, 'b', Some(8), Some(20), "rw"),
    ];
    rules.extend(default_device_rules());
    let policy = DevicePolicy::from_rules(&rules).expect("valid");
    let lines = policy.v1_writes();
    assert!(
        lines.contains(&w("devices.allow", "b 8:20 rw")),
        "{lines:?}"
    );
    assert!(lines.contains(&w("devices.allow", "b *:* m")), "{lines:?}");
    assert!(!lines.iter().any(|(_, l)| l == "b 8:20 rwm"), "{lines:?}");
    for access in [ACC_READ, ACC_WRITE, ACC_READ | ACC_WRITE, ACC_MKNOD] {
        assert!(policy.allows(DevKind::Block, 8, 20, access), "{access}");
    }
    assert!(!policy.allows(DevKind::Block, 8, 21, ACC_READ));
}

#[test]
fn invalid_rules_are_rejected_with_the_rule() {
    for (bad, why) in [
        (rule(true, 'c', Some(1), Some(3), ""), "access is empty"),
        (rule(true, 'c', Some(1), Some(3), "rx"), "unknown access"),
        (rule(true, 'u', Some(1), Some(3), "r"), "types a, b and c"),
        (rule(true, 'c', Some(1 << 33), Some(3), "r"), "out of range"),
    ] {
        let err = DevicePolicy::from_rules(&[bad]).expect_err(why);
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn default_rules_are_runcs_allow_list() {
    let policy = DevicePolicy::from_rules(&default_device_rules()).expect("valid");
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 2),
        (136, 4),
        (10, 200),
    ] {
        assert!(
            policy.allows(DevKind::Char, major, minor, ACC_READ | ACC_WRITE),
            "{major}:{minor}"
        );
    }
    assert!(policy.allows(DevKind::Block, 8, 0, ACC_MKNOD));
    assert!(!policy.allows(DevKind::Block, 8, 0, ACC_READ));
    assert!(!policy.allows(DevKind::Char, 195, 0, ACC_READ));
}

#[test]
fn reduced_policy_matches_the_rule_list_or_refuses_it() {
    let mut rng = Rng::new(0x5eed);
    let (mut checked, mut refused) = (0, 0);
    for _ in 0..3000 {
        let len = 1 + rng.below(6) as usize;
        let mut rules: Vec<LinuxDeviceCgroup> = (0..len).map(|_| rng.device_rule()).collect();
        if rng.below(2) == 0 {
            rules.insert(0, rule(false, 'a', None, None, "rwm"));
        }
        let policy = match DevicePolicy::from_rules(&rules) {
            Ok(p) => p,
            Err(e) => {
                assert!(e.to_string().contains("punch a hole"), "{e}");
                refused += 1;
                continue;
            }
        };
        for (kind, major, minor, access) in probes() {
            assert_eq!(
                policy.allows(kind, major, minor, access),
                reference(&rules, kind, major, minor, access),
                "rules {rules:?} probe {kind:?} {major}:{minor} {access}"
            );
        }
        checked += 1;
    }
    assert!(
        checked > 1000 && refused > 0,
        "checked {checked}, refused {refused}"
    );
}
