//! The cgroup record a container's state file keeps: [`CgroupState`] with a version, from
//! which every later call rebuilds the container's [`Cgroup`].
//!
//! Version rule: the record carries `"version"`; a record without one was written before
//! the field existed and is version 1 (the same fields). A reader decodes every version up
//! to [`RECORD_VERSION`] and refuses a newer one, so a downgraded gpurun never half-reads
//! a record it does not understand. A change to the fields' meaning bumps the version.
//!
//! A record that cannot be decoded is kept as it was read (a later save writes it back
//! unchanged) and reported by [`StoredCgroup::open`]: gpurun never goes on as if the
//! container had no cgroup.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::CgroupError;
use super::{Cgroup, CgroupState};

/// The newest record version this gpurun writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// The record as stored: the version beside the state's own fields.
#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    #[serde(default = "first_version")]
    version: u32,
    #[serde(flatten)]
    state: T,
}

fn first_version() -> u32 {
    1
}

/// A container's cgroup record, decoded or not.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredCgroup {
    Known(CgroupState),
    Undecodable(Undecodable),
}

/// A record this gpurun cannot use, with the reason and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Undecodable {
    raw: serde_json::Value,
    reason: String,
    file: Option<PathBuf>,
}

impl StoredCgroup {
    /// The container's cgroup, rebuilt from the record.
    pub fn open(&self) -> Result<Cgroup, CgroupError> {
        match self {
            StoredCgroup::Known(st) => Ok(Cgroup::from_state(st)),
            StoredCgroup::Undecodable(u) => Err(u.error()),
        }
    }

    /// Names the state file the record was read from, for the errors about it.
    pub fn set_source(&mut self, file: &Path) {
        if let StoredCgroup::Undecodable(u) = self {
            u.file = Some(file.to_path_buf());
        }
    }

    /// For an undecodable record: the directories it names that gpurun created, where they
    /// can still be read. Used only to remove empty parents of a cgroup found another way.
    pub fn readable_created(&self) -> Vec<PathBuf> {
        let StoredCgroup::Undecodable(u) = self else {
            return Vec::new();
        };
        u.raw
            .get("created")
            .and_then(serde_json::Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(serde_json::Value::as_str)
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For an undecodable record: every string in it that could be a path.
    pub fn readable_paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let StoredCgroup::Undecodable(u) = self {
            strings(&u.raw, &mut out);
        }
        out
    }

    fn decode(raw: serde_json::Value) -> StoredCgroup {
        let undecodable = |raw, reason| {
            StoredCgroup::Undecodable(Undecodable {
                raw,
                reason,
                file: None,
            })
        };
        match Versioned::<CgroupState>::deserialize(&raw) {
            Ok(v) if v.version > RECORD_VERSION || v.version == 0 => undecodable(
                raw,
                format!(
                    "record version {}, this gpurun reads versions 1 to {RECORD_VERSION}",
                    v.version
                ),
            ),
            Ok(v) => StoredCgroup::Known(v.state),
            Err(e) => undecodable(raw, e.to_string()),
        }
    }
}

fn strings(v: &serde_json::Value, out: &mut Vec<PathBuf>) {
    match v {
        serde_json::Value::String(s) if s.starts_with('/') => out.push(PathBuf::from(s)),
        serde_json::Value::Array(list) => list.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

impl Undecodable {
    fn error(&self) -> CgroupError {
        CgroupError::Undecodable {
            file: self
                .file
                .as_deref()
                .map_or_else(|| "(unknown)".to_string(), |f| f.display().to_string()),
            reason: self.reason.clone(),
        }
    }
}

impl From<CgroupState> for StoredCgroup {
    fn from(st: CgroupState) -> Self {
        StoredCgroup::Known(st)
    }
}

impl Serialize for StoredCgroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoredCgroup::Known(state) => Versioned {
                version: RECORD_VERSION,
                state,
            }
            .serialize(s),
            StoredCgroup::Undecodable(u) => u.raw.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StoredCgroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(StoredCgroup::decode)
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
