//! CDI (Container Device Interface, spec 1.1.0): read specs strictly, apply devices'
//! container edits, generate a spec from an inventory (research §3.7).

mod apply;
mod generate;
mod registry;
mod stale;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use apply::{apply, Applied};
pub use generate::{generate, without_additional_gids, CDI_KIND};
pub use registry::Registry;
pub use stale::{check as check_specs, StaleDevice};

/// The versions this reader accepts (the oldest CDI still supports is 0.3.0).
pub const VERSIONS: &[&str] = &[
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// Hook names a CDI spec may use.
pub const HOOK_NAMES: &[&str] = &[
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CdiSpec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    pub devices: Vec<CdiDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_edits: Option<ContainerEdits>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CdiDevice {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    pub container_edits: ContainerEdits,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNodeEdit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookEdit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountEdit>,
    /// Parsed so a spec using it loads; applying it is refused by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// Parsed so a spec using it loads; applying it is refused by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_devices: Vec<serde_json::Value>,
}

impl ContainerEdits {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
            && self.net_devices.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNodeEdit {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountEdit {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HookEdit {
    pub hook_name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// The format of a spec file, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl CdiSpec {
    /// Parses and validates a spec: unknown fields, unknown versions, a version older than
    /// the fields used, malformed names and edits are all errors.
    pub fn parse(text: &str, format: Format) -> Result<CdiSpec, String> {
        let spec: CdiSpec = match format {
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string())?,
            Format::Yaml => serde_norway::from_str(text).map_err(|e| e.to_string())?,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| e.to_string())
    }

    pub fn to_yaml(&self) -> Result<String, String> {
        serde_norway::to_string(self).map_err(|e| e.to_string())
    }

    /// `(vendor, class)` of the kind.
    pub fn vendor_class(&self) -> Option<(&str, &str)> {
        self.kind.split_once('/')
    }

    pub fn validate(&self) -> Result<(), String> {
        if !VERSIONS.contains(&self.cdi_version.as_str()) {
            return Err(format!("invalid cdiVersion {:?}", self.cdi_version));
        }
        let min = self.minimum_version();
        if version_key(min) > version_key(&self.cdi_version) {
            return Err(format!(
                "cdiVersion {} is older than the fields used need ({min})",
                self.cdi_version
            ));
        }
        let (vendor, class) = self
            .vendor_class()
            .ok_or_else(|| format!("kind {:?} is not vendor/class", self.kind))?;
        check_vendor(vendor).map_err(|e| format!("kind {:?}: vendor {e}", self.kind))?;
        check_label(class, "-_.").map_err(|e| format!("kind {:?}: class {e}", self.kind))?;
        if self.devices.is_empty() {
            return Err("no devices".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.devices {
            check_label(&d.name, "-_.:").map_err(|e| format!("device name {:?}: {e}", d.name))?;
            if !names.insert(d.name.as_str()) {
                return Err(format!("device {:?} defined twice", d.name));
            }
            if d.container_edits.is_empty() {
                return Err(format!("device {:?} has no container edits", d.name));
            }
            validate_edits(&d.container_edits).map_err(|e| format!("device {:?}: {e}", d.name))?;
        }
        if let Some(e) = &self.container_edits {
            validate_edits(e)?;
        }
        Ok(())
    }

    /// The oldest CDI version that has every field this spec uses.
    fn minimum_version(&self) -> &'static str {
        let all_edits: Vec<&ContainerEdits> = self
            .devices
            .iter()
            .map(|d| &d.container_edits)
            .chain(self.container_edits.iter())
            .collect();
        if all_edits.iter().any(|e| !e.net_devices.is_empty()) {
            return "1.1.0";
        }
        if all_edits
            .iter()
            .any(|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty())
        {
            return "0.7.0";
        }
        let class_dot = self.vendor_class().is_some_and(|(_, c)| c.contains('.'));
        if self.annotations.is_some()
            || self.devices.iter().any(|d| d.annotations.is_some())
            || class_dot
        {
            return "0.6.0";
        }
        let digit_name = self.devices.iter().any(|d| {
            d.name
                .chars()
                .next()
                .is_some_and(|c| !c.is_ascii_alphabetic())
        });
        if digit_name
            || all_edits
                .iter()
                .any(|e| e.device_nodes.iter().any(|n| n.host_path.is_some()))
        {
            return "0.5.0";
        }
        if all_edits
            .iter()
            .any(|e| e.mounts.iter().any(|m| m.typ.is_some()))
        {
            return "0.4.0";
        }
        "0.3.0"
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Alphanumeric first and last character, `extra` allowed inside, at most 63 characters.
fn check_label(s: &str, extra: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("must start and end with a letter or digit".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !extra.contains(*c))
    {
        return Err(format!("contains {c:?}"));
    }
    Ok(())
}

/// A vendor is a DNS-like name: dot-separated labels.
fn check_vendor(s: &str) -> Result<(), String> {
    if !s.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(format!("{s:?} must start with a letter"));
    }
    s.split('.')
        .try_for_each(|l| check_label(l, "-_"))
        .map_err(|e| format!("{s:?}: {e}"))
}

fn validate_edits(e: &ContainerEdits) -> Result<(), String> {
    for kv in &e.env {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(format!("env {kv:?} is not KEY=VALUE")),
        }
    }
    for n in &e.device_nodes {
        if !n.path.starts_with('/') {
            return Err(format!("device node path {:?} is not absolute", n.path));
        }
        if let Some(t) = &n.typ {
            if !matches!(t.as_str(), "b" | "c" | "u" | "p") {
                return Err(format!("device node {:?}: invalid type {t:?}", n.path));
            }
        }
        if let Some(p) = &n.permissions {
            if p.is_empty() || !p.chars().all(|c| "rwm".contains(c)) {
                return Err(format!(
                    "device node {:?}: invalid permissions {p:?}",
                    n.path
                ));
            }
        }
    }
    for m in &e.mounts {
        if m.host_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(format!(
                "mount {:?} -> {:?}: hostPath required, containerPath must be absolute",
                m.host_path, m.container_path
            ));
        }
    }
    for h in &e.hooks {
        if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
            return Err(format!("invalid hookName {:?}", h.hook_name));
        }
        if !h.path.starts_with('/') {
            return Err(format!("hook path {:?} is not absolute", h.path));
        }
    }
    Ok(())
}

/// Splits a fully-qualified name `vendor/class=name` into (kind, name).
pub fn parse_qualified(name: &str) -> Option<(&str, &str)> {
    let (kind, dev) = name.split_once('=')?;
    let (vendor, class) = kind.split_once('/')?;
    (!vendor.is_empty() && !class.is_empty() && !dev.is_empty()).then_some((kind, dev))
}
