//! The generated `/proc/driver/nvidia` a container sees, kept content-addressed under a
//! store directory: one copy per distinct content (driver version, params, the granted
//! GPUs and MIG devices), made once and bind-mounted read-only into every container that
//! needs that content. Nothing is written or removed per container; a different driver or
//! another GPU set gives another directory. The store lives in the host-wide GPU state
//! directory (`/run/gpurun-gpus` by default, a tmpfs), so it is gone at reboot.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::GpuError;

/// What goes into one generated directory: files (relative path, content) and empty
/// directories that later mounts cover.
#[derive(Default)]
pub struct Content {
    pub files: Vec<(String, Vec<u8>)>,
    pub dirs: Vec<String>,
}

impl Content {
    /// SHA-256 over the file count, then every name and content, each length-prefixed: the store trusts a
    /// directory found by its key, and image-derived content (a generated `ld.so.cache`)
    /// goes into it, so the key must not be one an image could collide with.
    fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut part = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        part(&(self.files.len() as u64).to_le_bytes());
        for (rel, data) in &self.files {
            part(rel.as_bytes());
            part(data);
        }
        for d in &self.dirs {
            part(d.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The directory in `store` holding `content`, made now (in a temporary directory renamed
/// into place, so a concurrent create sees all of it or none) or found from an earlier
/// container.
pub fn materialize(store: &Path, content: &Content) -> Result<PathBuf, GpuError> {
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| GpuError::io(what, &p, e)
    };
    let dir = store.join(content.key());
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(store).map_err(io("creating", store))?;
    let tmp = store.join(format!(".tmp-{}-{}", content.key(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
    let fill = || -> Result<(), GpuError> {
        for d in &content.dirs {
            let p = tmp.join(d);
            std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        for (rel, data) in &content.files {
            let p = tmp.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            std::fs::write(&p, data).map_err(io("writing", &p))?;
        }
        Ok(())
    };
    let made = fill().and_then(|()| match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(()),
        // Another create made the same directory first: use that one.
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(GpuError::io("renaming into place", &dir, e)),
    });
    let _ = std::fs::remove_dir_all(&tmp);
    made.map(|()| dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn content(params: &str) -> Content {
        Content {
            files: vec![
                ("params".into(), params.as_bytes().to_vec()),
                ("capabilities/gpu0/mig/gi1/access".into(), Vec::new()),
            ],
            dirs: vec!["gpus/0000:3b:00.0".into()],
        }
    }

    #[test]
    fn the_same_content_is_made_once_and_other_content_elsewhere() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let a = materialize(&store, &content("ModifyDeviceFiles: 0\n")).unwrap();
        assert_eq!(
            std::fs::read_to_string(a.join("params")).unwrap(),
            "ModifyDeviceFiles: 0\n"
        );
        assert!(a.join("gpus/0000:3b:00.0").is_dir());
        assert!(a.join("capabilities/gpu0/mig/gi1/access").is_file());
        // Made once: a marker left in it is still there the second time.
        std::fs::write(a.join("marker"), "").unwrap();
        let again = materialize(&store, &content("ModifyDeviceFiles: 0\n")).unwrap();
        assert_eq!(again, a);
        assert!(again.join("marker").exists());
        let b = materialize(&store, &content("ModifyDeviceFiles: 0\nX: 1\n")).unwrap();
        assert_ne!(a, b);
        // No temporary directory is left behind.
        let names: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp")), "{names:?}");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn moving_a_name_between_files_and_directories_changes_the_key() {
        let file = Content {
            files: vec![("a".into(), b"b".to_vec())],
            dirs: Vec::new(),
        };
        let dirs = Content {
            files: Vec::new(),
            dirs: vec!["a".into(), "b".into()],
        };
        assert_ne!(file.key(), dirs.key());
        assert_eq!(file.key().len(), 64, "a SHA-256 in hex");
    }
}
