//! `enable-cuda-compat`: whether the image's CUDA forward-compatibility libraries go
//! ahead of the host driver's, decided as NVIDIA's hook decides it. The image is read
//! inside its root only; nothing is written.

use std::path::{Path, PathBuf};

use super::{CompatArgs, CODE_COMPAT_UNUSED};
use crate::gpu::elf::{self, CudaCompatNote};
use crate::linux::inroot::Root;

/// A version as NVIDIA compares them: up to three numeric parts, missing ones zero.
type Version = (u64, u64, u64);

pub(super) fn parse_version(s: &str) -> Option<Version> {
    let parts: Vec<&str> = s.trim().trim_start_matches('v').split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut v = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v[i] = p.parse().ok()?;
    }
    Some((v[0], v[1], v[2]))
}

/// The compat directory to put first, or `None` (with a log line saying why).
pub(super) fn decide(root: &Root, args: &CompatArgs, log: &mut Vec<String>) -> Option<PathBuf> {
    if args.host_driver_version.is_none() && args.host_cuda_version.is_none() {
        log.push(format!(
            "{CODE_COMPAT_UNUSED} enable-cuda-compat names no host driver or CUDA version"
        ));
        return None;
    }
    let libs = compat_libcuda(root, &args.dir);
    let [lib] = libs.as_slice() else {
        log.push(format!(
            "{CODE_COMPAT_UNUSED} enable-cuda-compat: {} libcuda.so.*.* file(s) in the image's {}, \
             not exactly one",
            libs.len(),
            args.dir.display()
        ));
        return None;
    };
    let path = args.dir.join(lib);
    let note = root
        .open_file(&path, false)
        .ok()
        .and_then(|f| elf::cuda_compat_note(f).ok().flatten());
    let compat = lib.strip_prefix("libcuda.so.").and_then(parse_version);
    let use_it = use_compat(note.as_ref(), compat, args);
    if use_it {
        log.push(format!(
            "enable-cuda-compat: the image's {} goes ahead of the host driver",
            path.display()
        ));
        Some(args.dir.clone())
    } else {
        log.push(format!(
            "{CODE_COMPAT_UNUSED} enable-cuda-compat: the image's {} does not apply to host driver {}",
            path.display(),
            args.host_driver_version.as_deref().unwrap_or("(unknown)")
        ));
        None
    }
}

/// With the note: the host driver's major must be one it lists, and the compat driver
/// newer than the host's (without a host driver version, the note's CUDA version newer
/// than the host's). Without one: the compat major above the host's, and only when no
/// host CUDA version was given (that case needs the note).
pub(super) fn use_compat(
    note: Option<&CudaCompatNote>,
    compat: Option<Version>,
    args: &CompatArgs,
) -> bool {
    let host = args.host_driver_version.as_deref().and_then(parse_version);
    let host_cuda = args.host_cuda_version.as_deref().and_then(parse_version);
    if let Some(note) = note {
        return match (compat, host) {
            (Some(c), Some(h)) => note.drivers.contains(&h.0) && c > h,
            _ => match (parse_version(&note.cuda_version), host_cuda) {
                (Some(n), Some(h)) => n > h,
                _ => false,
            },
        };
    }
    if args.host_cuda_version.is_some() {
        return false;
    }
    matches!((compat, host), (Some(c), Some(h)) if h.0 < c.0)
}

/// Names of the regular files `libcuda.so.*.*` in `dir` inside the root, sorted.
fn compat_libcuda(root: &Root, dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = super::cache::list_dir(root, dir)
        .into_iter()
        .filter(|(name, regular)| *regular && is_versioned_libcuda(name))
        .map(|(name, _)| name)
        .collect();
    out.sort();
    out
}

/// `libcuda.so.*.*`, as the shell's glob matches it.
fn is_versioned_libcuda(name: &str) -> bool {
    name.strip_prefix("libcuda.so.")
        .is_some_and(|rest| rest.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(host: Option<&str>, cuda: Option<&str>) -> CompatArgs {
        CompatArgs {
            host_driver_version: host.map(str::to_string),
            host_cuda_version: cuda.map(str::to_string),
            dir: PathBuf::from("/usr/local/cuda/compat"),
        }
    }

    fn note(drivers: &[u64]) -> CudaCompatNote {
        CudaCompatNote {
            cuda_version: "12.8".into(),
            drivers: drivers.to_vec(),
        }
    }

    #[test]
    fn the_note_decides_when_present() {
        let compat = parse_version("570.86.10");
        let a = args(Some("535.104.05"), None);
        assert!(use_compat(Some(&note(&[470, 535])), compat, &a));
        assert!(
            !use_compat(Some(&note(&[470, 525])), compat, &a),
            "the host's major is not one the note lists"
        );
        let newer_host = args(Some("575.1.2"), None);
        assert!(
            !use_compat(Some(&note(&[575])), compat, &newer_host),
            "the compat driver is older than the host's"
        );
        let cuda_only = args(None, Some("12.2"));
        assert!(use_compat(Some(&note(&[])), compat, &cuda_only));
        assert!(!use_compat(
            Some(&note(&[])),
            compat,
            &args(None, Some("12.9"))
        ));
    }

    #[test]
    fn without_a_note_the_major_decides() {
        let compat = parse_version("570.86.10");
        assert!(use_compat(None, compat, &args(Some("535.104.05"), None)));
        assert!(!use_compat(None, compat, &args(Some("570.1.1"), None)));
        assert!(!use_compat(None, compat, &args(Some("580.1"), None)));
        assert!(
            !use_compat(None, compat, &args(Some("535.1"), Some("12.2"))),
            "a host CUDA version needs the note"
        );
        assert!(!use_compat(None, None, &args(Some("535.1"), None)));
    }

    #[test]
    fn versions_and_names() {
        assert_eq!(parse_version("550.54.15"), Some((550, 54, 15)));
        assert_eq!(parse_version("550"), Some((550, 0, 0)));
        assert_eq!(parse_version("5x0"), None);
        assert!(is_versioned_libcuda("libcuda.so.570.86.10"));
        assert!(!is_versioned_libcuda("libcuda.so.1"));
    }
}
