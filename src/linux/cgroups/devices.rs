//! Device rules (`linux.resources.devices`): the OCI list turned into one policy that the v1
//! devices controller and the v2 eBPF filter both enforce identically.
//!
//! Meaning of the list (runc's): it starts from "deny everything"; rules apply in order; for
//! each device and each access bit (r, w, m) the last rule that matches decides. Type `a`
//! matches block and character devices; an omitted major or minor matches any.
//!
//! The v1 kernel cannot express every such list: it keeps a default (allow or deny all) plus
//! a set of exceptions, and it removes an exception only when a rule names exactly the same
//! device. So the list is first reduced to that form (a default and exceptions), the form
//! both enforcers are built from, and a rule that would punch a hole in a wider exception
//! (`allow c *:* rwm` then `deny c 1:3 w`) is rejected, as runc rejects it, instead of being
//! silently ignored by the kernel.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::CgroupError;

/// Access bits, with the values of `BPF_DEVCG_ACC_*`.
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;
const ACC_OPEN: u8 = ACC_READ | ACC_WRITE;

/// Device kinds, with the values of `BPF_DEVCG_DEV_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DevKind {
    Block = 1,
    Char = 2,
}

impl DevKind {
    pub fn letter(self) -> char {
        match self {
            DevKind::Block => 'b',
            DevKind::Char => 'c',
        }
    }
}

/// One parsed OCI rule. `kind: None` is type `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: Option<DevKind>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

/// Which devices an exception covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevKey {
    pub kind: DevKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

fn part_covers(wide: Option<u32>, narrow: Option<u32>) -> bool {
    wide.is_none() || wide == narrow
}

fn part_meets(a: Option<u32>, b: Option<u32>) -> bool {
    a.is_none() || b.is_none() || a == b
}

impl DevKey {
    /// Every device `other` matches, `self` matches too.
    pub fn covers(&self, other: &DevKey) -> bool {
        self.kind == other.kind
            && part_covers(self.major, other.major)
            && part_covers(self.minor, other.minor)
    }

    /// Some device matches both.
    pub fn meets(&self, other: &DevKey) -> bool {
        self.kind == other.kind
            && part_meets(self.major, other.major)
            && part_meets(self.minor, other.minor)
    }

    fn intersection(&self, other: &DevKey) -> DevKey {
        DevKey {
            kind: self.kind,
            major: self.major.or(other.major),
            minor: self.minor.or(other.minor),
        }
    }

    pub fn matches(&self, kind: DevKind, major: u32, minor: u32) -> bool {
        self.kind == kind
            && part_covers(self.major, Some(major))
            && part_covers(self.minor, Some(minor))
    }
}

/// An exception to the default: the opposite action for `access` on the devices of `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub key: DevKey,
    pub access: u8,
}

/// The reduced form: a default action and exceptions that all take the other action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePolicy {
    pub default_allow: bool,
    pub exceptions: Vec<Exception>,
}

pub fn access_string(access: u8) -> String {
    let mut s = String::new();
    if access & ACC_READ != 0 {
        s.push('r');
    }
    if access & ACC_WRITE != 0 {
        s.push('w');
    }
    if access & ACC_MKNOD != 0 {
        s.push('m');
    }
    s
}

fn num(n: Option<u32>) -> String {
    n.map_or_else(|| "*".to_string(), |n| n.to_string())
}

/// The v1 `devices.allow`/`devices.deny` line for one exception: `c 195:* rw`.
pub fn v1_line(key: &DevKey, access: u8) -> String {
    format!(
        "{} {}:{} {}",
        key.kind.letter(),
        num(key.major),
        num(key.minor),
        access_string(access)
    )
}

fn show(rule: &LinuxDeviceCgroup) -> String {
    format!(
        "{{allow: {}, type: {}, major: {}, minor: {}, access: {:?}}}",
        rule.allow(),
        rule.typ()
            .map_or_else(|| "a".to_string(), |t| t.as_str().to_string()),
        rule.major().map_or("*".to_string(), |m| m.to_string()),
        rule.minor().map_or("*".to_string(), |m| m.to_string()),
        rule.access().as_deref().unwrap_or("")
    )
}

/// Parses one OCI rule: type a/b/c, numbers in u32, access a non-empty subset of `rwm`.
pub fn parse_rule(rule: &LinuxDeviceCgroup) -> Result<DeviceRule, CgroupError> {
    let invalid = |reason: &str| CgroupError::InvalidDeviceRule {
        rule: show(rule),
        reason: reason.to_string(),
    };
    let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(DevKind::Block),
        LinuxDeviceType::C => Some(DevKind::Char),
        LinuxDeviceType::U | LinuxDeviceType::P => {
            return Err(invalid("the device cgroup knows only types a, b and c"))
        }
    };
    let number = |n: Option<i64>, what: &str| -> Result<Option<u32>, CgroupError> {
        match n {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| invalid(&format!("{what} number {n} is out of range"))),
        }
    };
    let major = number(rule.major(), "major")?;
    let minor = number(rule.minor(), "minor")?;
    let text = rule.access().as_deref().unwrap_or("");
    if text.is_empty() {
        return Err(invalid("access is empty (use a subset of \"rwm\")"));
    }
    let mut access = 0;
    for c in text.chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(invalid(&format!(
                    "unknown access {c:?} (use a subset of \"rwm\")"
                )))
            }
        };
    }
    Ok(DeviceRule {
        allow: rule.allow(),
        kind,
        major,
        minor,
        access,
    })
}

impl DevicePolicy {
    /// Reduces the OCI list (in order) to a default and exceptions.
    pub fn from_rules(rules: &[LinuxDeviceCgroup]) -> Result<Self, CgroupError> {
        let mut policy = DevicePolicy {
            default_allow: false,
            exceptions: Vec::new(),
        };
        for rule in rules {
            let parsed = parse_rule(rule)?;
            policy
                .apply(&parsed)
                .map_err(|reason| CgroupError::InvalidDeviceRule {
                    rule: show(rule),
                    reason,
                })?;
        }
        Ok(policy)
    }

    fn apply(&mut self, rule: &DeviceRule) -> Result<(), String> {
        if rule.kind.is_none()
            && rule.major.is_none()
            && rule.minor.is_none()
            && rule.access == ACC_ALL
        {
            self.default_allow = rule.allow;
            self.exceptions.clear();
            return Ok(());
        }
        let kinds = match rule.kind {
            Some(k) => vec![k],
            None => vec![DevKind::Block, DevKind::Char],
        };
        for kind in kinds {
            let key = DevKey {
                kind,
                major: rule.major,
                minor: rule.minor,
            };
            if rule.allow == self.default_allow {
                self.remove(&key, rule.access)?;
            } else {
                self.add(key, rule.access);
            }
        }
        Ok(())
    }

    /// A rule taking the default action: takes `access` off every exception inside `key`.
    /// An exception that reaches outside `key` and still holds some of `access` would need a
    /// hole the kernel cannot make.
    fn remove(&mut self, key: &DevKey, access: u8) -> Result<(), String> {
        for e in &mut self.exceptions {
            if key.covers(&e.key) {
                e.access &= !access;
            }
        }
        self.exceptions.retain(|e| e.access != 0);
        if let Some(wide) = self
            .exceptions
            .iter()
            .find(|e| e.key.meets(key) && e.access & access != 0)
        {
            return Err(format!(
                "it would punch a hole in the wider rule \"{}\", which cgroup v1 cannot express",
                v1_line(&wide.key, wide.access)
            ));
        }
        Ok(())
    }

    /// A rule taking the other action: an exception for `access` on `key`.
    fn add(&mut self, key: DevKey, access: u8) {
        match self.exceptions.iter_mut().find(|e| e.key == key) {
            Some(e) => e.access |= access,
            None => self.exceptions.push(Exception { key, access }),
        }
        if !self.default_allow {
            self.close_allow_exceptions();
        }
    }

    /// With a deny default the kernel allows an access only when one single exception holds
    /// every requested bit. It asks for `m` alone (mknod) and for `r`, `w` or both (open), so
    /// only the open bits have to be found together: every intersection of two exceptions
    /// that some covering exception grants an open bit becomes an exception too, and each
    /// exception also holds the open bits of every exception that covers it. Then for any
    /// device the narrowest matching exception holds the union of the open bits, and `m`
    /// stays exactly where the rules put it (`b 8:20 rw` beside `b *:* m` is not `rwm`).
    fn close_allow_exceptions(&mut self) {
        loop {
            let mut changed = false;
            let n = self.exceptions.len();
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (self.exceptions[i], self.exceptions[j]);
                    if i == j || !a.key.meets(&b.key) {
                        continue;
                    }
                    let key = a.key.intersection(&b.key);
                    if self.open_bits_covering(&key) != 0
                        && !self.exceptions.iter().any(|e| e.key == key)
                    {
                        self.exceptions.push(Exception { key, access: 0 });
                        changed = true;
                    }
                }
            }
            for i in 0..self.exceptions.len() {
                let e = self.exceptions[i];
                let access = e.access | self.open_bits_covering(&e.key);
                if access != e.access {
                    self.exceptions[i].access = access;
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    fn open_bits_covering(&self, key: &DevKey) -> u8 {
        self.exceptions
            .iter()
            .filter(|e| e.key.covers(key))
            .fold(0, |acc, e| acc | (e.access & ACC_OPEN))
    }

    /// What the v1 kernel (and gpurun's eBPF program) decides for one access, from the
    /// reduced form: with a deny default one exception must hold every requested bit; with
    /// an allow default any exception touching a requested bit denies.
    pub fn allows(&self, kind: DevKind, major: u32, minor: u32, access: u8) -> bool {
        let mut matching = self
            .exceptions
            .iter()
            .filter(|e| e.key.matches(kind, major, minor));
        if self.default_allow {
            !matching.any(|e| e.access & access != 0)
        } else {
            matching.any(|e| access & !e.access == 0)
        }
    }

    /// What to write into a fresh v1 devices cgroup, in order: the default as `a` to
    /// `devices.deny` or `devices.allow`, then each exception to the other file.
    pub fn v1_writes(&self) -> Vec<(&'static str, String)> {
        let (reset, other) = if self.default_allow {
            ("devices.allow", "devices.deny")
        } else {
            ("devices.deny", "devices.allow")
        };
        let mut out = vec![(reset, "a".to_string())];
        for e in &self.exceptions {
            out.push((other, v1_line(&e.key, e.access)));
        }
        out
    }
}

fn allow_rule(
    kind: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true);
    rule.set_typ(Some(kind));
    rule.set_major(major);
    rule.set_minor(minor);
    rule.set_access(Some(access.to_string()));
    rule
}

/// runc's default device rules (`specconv.AllowedDevices`), which runc adds to every
/// container: mknod of any device, `/dev/{null,random,full,tty,zero,urandom}`, `/dev/pts/*`,
/// `/dev/ptmx` and `/dev/net/tun`. The runtime puts them where it wants them in the list.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    vec![
        allow_rule(C, None, None, "m"),
        allow_rule(B, None, None, "m"),
        allow_rule(C, Some(1), Some(3), "rwm"),
        allow_rule(C, Some(1), Some(8), "rwm"),
        allow_rule(C, Some(1), Some(7), "rwm"),
        allow_rule(C, Some(5), Some(0), "rwm"),
        allow_rule(C, Some(1), Some(5), "rwm"),
        allow_rule(C, Some(1), Some(9), "rwm"),
        allow_rule(C, Some(136), None, "rwm"),
        allow_rule(C, Some(5), Some(2), "rwm"),
        allow_rule(C, Some(10), Some(200), "rwm"),
    ]
}

#[cfg(test)]
#[path = "devices_tests.rs"]
mod tests;
