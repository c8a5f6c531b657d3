//! Accumulating plain OCI spec edits: mounts, device nodes with their allow rules, and
//! env, each skipped when the spec already has it. Shared by native grants and CDI edits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxDevice, LinuxDeviceCgroup, LinuxResources, Mount, Spec,
};

use super::paths::normalize;

/// Options of every injected file mount (libraries, binaries, firmware, generated files).
pub const FILE_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "rbind", "rprivate"];
/// IPC sockets: connecting needs write access, so no `ro`; nothing there is executable.
pub const IPC_OPTIONS: &[&str] = &["nosuid", "nodev", "noexec", "rbind", "rprivate"];
/// `/proc/driver/nvidia` replacements.
pub const PROC_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "noexec", "rbind", "rprivate"];

/// Accumulates edits on a spec, skipping what is already there.
pub struct Editor<'a> {
    spec: &'a mut Spec,
    destinations: BTreeSet<PathBuf>,
    pub log: Vec<String>,
}

impl<'a> Editor<'a> {
    pub fn new(spec: &'a mut Spec) -> Editor<'a> {
        let destinations = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| normalize(m.destination()))
            .collect();
        Editor {
            spec,
            destinations,
            log: Vec::new(),
        }
    }

    pub fn spec(&mut self) -> &mut Spec {
        self.spec
    }

    /// Adds a bind mount unless something is already mounted at `dest`.
    pub fn bind(&mut self, source: &Path, dest: &Path, options: &[&str]) {
        self.mount(
            source,
            dest,
            Some("bind"),
            options.iter().map(|s| s.to_string()).collect(),
        );
    }

    /// Adds a mount unless something is already mounted at `dest`.
    pub fn mount(&mut self, source: &Path, dest: &Path, typ: Option<&str>, options: Vec<String>) {
        let key = normalize(dest);
        if !self.destinations.insert(key) {
            self.log.push(format!(
                "{} already has a mount; not adding another",
                dest.display()
            ));
            return;
        }
        let mut m = Mount::default();
        m.set_destination(dest.to_path_buf());
        m.set_source(Some(source.to_path_buf()));
        m.set_typ(typ.map(str::to_string));
        m.set_options(Some(options));
        self.spec.mounts_mut().get_or_insert_with(Vec::new).push(m);
    }

    /// Adds a device node (unless one is already at its path) and its allow rule.
    pub fn device(&mut self, dev: LinuxDevice, access: &str) {
        if self.spec.linux().is_none() {
            self.spec.set_linux(LinuxBuilder::default().build().ok());
        }
        let Some(linux) = self.spec.linux_mut().as_mut() else {
            return;
        };
        let devices = linux.devices_mut().get_or_insert_with(Vec::new);
        if devices
            .iter()
            .any(|d| normalize(d.path()) == normalize(dev.path()))
        {
            self.log.push(format!(
                "{} is already in linux.devices; not adding another",
                dev.path().display()
            ));
        } else {
            devices.push(dev.clone());
        }
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(dev.typ()));
        rule.set_major(Some(dev.major()));
        rule.set_minor(Some(dev.minor()));
        rule.set_access(Some(access.to_string()));
        let resources = linux
            .resources_mut()
            .get_or_insert_with(LinuxResources::default);
        let rules = resources.devices_mut().get_or_insert_with(Vec::new);
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }

    /// Adds groups to the process's `additionalGids`, keeping those there and adding none
    /// twice.
    pub fn add_gids(&mut self, gids: &[u32]) {
        if gids.is_empty() {
            return;
        }
        let Some(p) = self.spec.process_mut().as_mut() else {
            return;
        };
        let mut user = p.user().clone();
        let mut extra = user.additional_gids().clone().unwrap_or_default();
        for g in gids {
            if !extra.contains(g) {
                extra.push(*g);
            }
        }
        user.set_additional_gids(Some(extra));
        p.set_user(user);
    }

    /// Sets an env variable, replacing every earlier definition.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let Some(process) = self.spec.process_mut().as_mut() else {
            return;
        };
        let mut env = process.env().clone().unwrap_or_default();
        let prefix = format!("{key}=");
        env.retain(|kv| !kv.starts_with(&prefix));
        env.push(format!("{key}={value}"));
        process.set_env(Some(env));
    }
}
