//! `gpurun run`'s target: a bundle path or runc's id and `-b`. The runtime runs it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `gpurun run ./bundle` (an argument with a `/`, and no `-b`): the bundle is that
/// directory and the id is its name plus a short random suffix. Otherwise runc's form:
/// the argument is the id and the bundle comes from `-b` (default: the current dir).
pub fn resolve_target(arg: &str, bundle: Option<PathBuf>) -> Result<(String, PathBuf)> {
    if bundle.is_none() && arg.contains('/') {
        let dir = Path::new(arg);
        let abs = crate::spec::lexical_clean(
            &std::env::current_dir()
                .map_err(|e| Error::io("resolving", arg, e))?
                .join(dir),
        );
        let base: String = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "container".into())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = base.trim_matches('.').to_string();
        let base = if base.is_empty() {
            "container".to_string()
        } else {
            base
        };
        return Ok((format!("{base}-{}", random_suffix()), abs));
    }
    Ok((
        arg.to_string(),
        bundle.unwrap_or_else(|| PathBuf::from(".")),
    ))
}

fn random_suffix() -> String {
    use std::io::Read;
    let mut b = [0u8; 3];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let n = std::process::id() ^ t.subsec_nanos();
        b = [n as u8, (n >> 8) as u8, (n >> 16) as u8];
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_argument_is_a_bundle_with_a_derived_id() {
        let (id, b) = resolve_target("./my bundle/", None).expect("resolve");
        assert!(
            id.starts_with("my-bundle-") && id.len() == "my-bundle-".len() + 6,
            "{id}"
        );
        assert!(b.is_absolute() && b.ends_with("my bundle"));
        crate::state::validate_id(&id).expect("derived id is valid");
        let (id, b) = resolve_target("c1", Some(PathBuf::from("/x"))).expect("resolve");
        assert_eq!((id.as_str(), b.as_path()), ("c1", Path::new("/x")));
    }
}
