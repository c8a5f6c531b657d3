//! The CDI specs found in the configured directories.
//!
//! Directories are read lowest priority first (`/etc/cdi`, then `/var/run/cdi`): a device
//! defined in a later directory replaces the earlier one; a device defined twice in the
//! same directory is a conflict and cannot be used. A file that fails to parse is kept as
//! an error and reported when a requested device cannot be found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CdiSpec, Format};

#[derive(Clone, Debug)]
struct Entry {
    spec: usize,
    device: usize,
    dir: usize,
    file: PathBuf,
    conflict: Option<PathBuf>,
}

/// Loaded specs and an index of their fully-qualified device names.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub specs: Vec<(PathBuf, CdiSpec)>,
    /// `file: message` for every spec that failed to load.
    pub errors: Vec<String>,
    devices: BTreeMap<String, Entry>,
}

impl Registry {
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut r = Registry::default();
        for (priority, dir) in dirs.iter().enumerate() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for file in files {
                let format = match file.extension().and_then(|e| e.to_str()) {
                    Some("json") => Format::Json,
                    Some("yaml") | Some("yml") => Format::Yaml,
                    _ => continue,
                };
                if !file.is_file() {
                    continue;
                }
                match std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| CdiSpec::parse(&t, format))
                {
                    Ok(spec) => r.add(priority, file, spec),
                    Err(e) => r.errors.push(format!("{}: {e}", file.display())),
                }
            }
        }
        r
    }

    /// Adds a spec as if read from directory `priority`.
    pub fn add(&mut self, priority: usize, file: PathBuf, spec: CdiSpec) {
        let idx = self.specs.len();
        for (d, dev) in spec.devices.iter().enumerate() {
            let name = format!("{}={}", spec.kind, dev.name);
            let new = Entry {
                spec: idx,
                device: d,
                dir: priority,
                file: file.clone(),
                conflict: None,
            };
            match self.devices.get_mut(&name) {
                Some(old) if old.dir == priority => old.conflict = Some(file.clone()),
                Some(old) if old.dir > priority => {}
                _ => {
                    self.devices.insert(name, new);
                }
            }
        }
        self.specs.push((file, spec));
    }

    /// The spec index and device index of a fully-qualified name.
    pub fn lookup(&self, name: &str) -> Result<(usize, usize), String> {
        match self.devices.get(name) {
            Some(e) if e.conflict.is_some() => Err(format!(
                "{name} is defined in both {} and {}",
                e.file.display(),
                e.conflict.as_deref().unwrap_or(Path::new("?")).display()
            )),
            Some(e) => Ok((e.spec, e.device)),
            None if self.errors.is_empty() => Err(format!("unresolvable CDI device {name}")),
            None => Err(format!(
                "unresolvable CDI device {name} (specs that failed to load: {})",
                self.errors.join("; ")
            )),
        }
    }
}
