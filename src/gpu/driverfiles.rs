//! Driver files under the driver root: libraries (ld.so.cache, then a directory scan),
//! binaries, GSP firmware, IPC sockets (research §1.5–§1.7).

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::elf;
use super::inventory::{HostFile, Library, BINARIES, IPC_SOCKETS, LIBRARIES};
use super::ldcache::{self, Arch};
use super::paths::{host_path, resolve_in_root};
use super::procfs::is_version;
use super::GpuError;

/// Where the directory scan looks when the driver root has no usable ld.so.cache.
const LIB_DIRS: &[&str] = &[
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu/nvidia/current",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/lib",
    "/usr/lib/i386-linux-gnu",
    "/usr/lib32",
    "/lib32",
];

const BIN_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// A versioned file that may be a driver library: in-root path of the real file.
struct Candidate {
    in_root: PathBuf,
    prefix: &'static str,
    /// The cache's key for it, used when the file has no `DT_SONAME`.
    cache_soname: Option<String>,
    cache_lib32: Option<bool>,
}

/// The driver version (from procfs, else inferred from library suffixes) and the driver's
/// libraries whose suffix is exactly that version.
pub fn libraries(
    root: &Path,
    proc_version: Option<&str>,
) -> Result<(String, Vec<Library>), GpuError> {
    let mut candidates = from_ldcache(root);
    if candidates.is_empty() {
        candidates = from_scan(root, LIB_DIRS)?;
    }
    let version = match proc_version {
        Some(v) => v.to_string(),
        None => infer_version(&candidates).ok_or_else(|| {
            GpuError::NoDriver(format!(
                "no /proc/driver/nvidia/version and no versioned libcuda.so or libnvidia-ml.so under {}",
                root.display()
            ))
        })?,
    };
    let mut libs: Vec<Library> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut native_dirs = BTreeSet::new();
    for c in candidates {
        let Some(lib) = to_library(root, &c, &version, None) else {
            continue;
        };
        if seen.insert(lib.host_path.clone()) {
            if !lib.lib32 {
                if let Some(d) = c.in_root.parent() {
                    native_dirs.insert(d.to_path_buf());
                }
            }
            libs.push(lib);
        }
    }
    // ldconfig does not index sub-directories: VDPAU drivers live in `<libdir>/vdpau`.
    for dir in native_dirs {
        let vdpau = dir.join("vdpau");
        for c in from_scan(root, &[vdpau.to_string_lossy().as_ref()])? {
            if let Some(lib) = to_library(root, &c, &version, Some("vdpau")) {
                if seen.insert(lib.host_path.clone()) {
                    libs.push(lib);
                }
            }
        }
    }
    libs.sort_by(|a, b| (a.lib32, &a.name).cmp(&(b.lib32, &b.name)));
    Ok((version, libs))
}

fn to_library(root: &Path, c: &Candidate, version: &str, subdir: Option<&str>) -> Option<Library> {
    let name = c.in_root.file_name()?.to_str()?.to_string();
    if name != format!("{}.{version}", c.prefix) {
        return None;
    }
    let host = host_path(root, &c.in_root);
    let info = elf::read(&host).ok();
    let lib32 = match &info {
        Some(i) if i.is_native() => false,
        Some(i) if i.is_native32() => true,
        Some(_) => return None,
        None => c.cache_lib32?,
    };
    let soname = info
        .and_then(|i| i.soname)
        .or_else(|| c.cache_soname.clone())
        .filter(|s| super::inventory::is_plain_name(s));
    Some(Library {
        prefix: c.prefix.to_string(),
        name,
        soname,
        subdir: subdir.map(str::to_string),
        host_path: host,
        lib32,
    })
}

/// The table prefix a file name or SONAME belongs to: `libcuda.so.1` → `libcuda.so`.
fn prefix_of(name: &str) -> Option<&'static str> {
    LIBRARIES.iter().map(|(p, _)| *p).find(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn from_ldcache(root: &Path) -> Vec<Candidate> {
    let Ok(cache) = resolve_in_root(root, Path::new("/etc/ld.so.cache")) else {
        return Vec::new();
    };
    let Ok(Ok(entries)) = ldcache::read(&host_path(root, &cache)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let lib32 = if e.arch == Arch::native() {
            false
        } else if Some(e.arch) == Arch::native32() {
            true
        } else {
            continue;
        };
        let Some(prefix) = prefix_of(&e.soname) else {
            continue;
        };
        // The cache names the SONAME link; follow it (inside the root) to the real file.
        let Ok(real) = resolve_in_root(root, Path::new(&e.path)) else {
            continue;
        };
        out.push(Candidate {
            in_root: real,
            prefix,
            cache_soname: Some(e.soname),
            cache_lib32: Some(lib32),
        });
    }
    out
}

fn from_scan(root: &Path, dirs: &[&str]) -> Result<Vec<Candidate>, GpuError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for dir in dirs {
        let Ok(real_dir) = resolve_in_root(root, Path::new(dir)) else {
            continue;
        };
        if !seen.insert(real_dir.clone()) {
            continue;
        }
        let host_dir = host_path(root, &real_dir);
        let Ok(entries) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(ft) = entry.file_type() else { continue };
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(prefix) = prefix_of(&name) else {
                continue;
            };
            // Only real files: the SONAME and dev links point at them.
            if !ft.is_file() || !is_version(&name[prefix.len() + 1..]) {
                continue;
            }
            out.push(Candidate {
                in_root: real_dir.join(&name),
                prefix,
                cache_soname: None,
                cache_lib32: None,
            });
        }
    }
    Ok(out)
}

/// The driver version from `libcuda.so.<v>` or `libnvidia-ml.so.<v>` (research §1.4).
fn infer_version(candidates: &[Candidate]) -> Option<String> {
    let mut versions: BTreeSet<String> = BTreeSet::new();
    for c in candidates {
        if c.prefix != "libcuda.so" && c.prefix != "libnvidia-ml.so" {
            continue;
        }
        let name = c.in_root.file_name()?.to_str()?;
        let v = &name[c.prefix.len() + 1..];
        if is_version(v) {
            versions.insert(v.to_string());
        }
    }
    // Several versions means a leftover install; the highest is what ldconfig points at.
    versions
        .into_iter()
        .max_by(|a, b| version_key(a).cmp(&version_key(b)))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Binaries by name: the first directory that has a regular file of that name.
pub fn binaries(root: &Path) -> Result<Vec<HostFile>, GpuError> {
    let mut out = Vec::new();
    for (name, _) in BINARIES {
        for dir in BIN_DIRS {
            let Ok(real) = resolve_in_root(root, &Path::new(dir).join(name)) else {
                continue;
            };
            let host = host_path(root, &real);
            if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_file()) {
                out.push(HostFile {
                    name: name.to_string(),
                    path: PathBuf::from("/usr/bin").join(name),
                    host_path: host,
                });
                break;
            }
        }
    }
    Ok(out)
}

/// GSP firmware: `/lib/firmware/nvidia/<version>/gsp*.bin`, mounted at the same path.
pub fn firmware(root: &Path, version: &str) -> Result<Vec<HostFile>, GpuError> {
    let dir = PathBuf::from("/lib/firmware/nvidia").join(version);
    let Ok(real) = resolve_in_root(root, &dir) else {
        return Ok(Vec::new());
    };
    let host_dir = host_path(root, &real);
    let Ok(entries) = std::fs::read_dir(&host_dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && name.starts_with("gsp") && name.ends_with(".bin") {
            out.push(HostFile {
                path: dir.join(&name),
                host_path: host_dir.join(&name),
                name,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// IPC sockets that exist (as sockets) under `/run` or `/var/run` in the driver root.
pub fn ipc_sockets(root: &Path) -> Result<Vec<HostFile>, GpuError> {
    let mut out = Vec::new();
    for (path, _) in IPC_SOCKETS {
        let var = format!("/var{path}");
        for candidate in [*path, var.as_str()] {
            let Ok(real) = resolve_in_root(root, Path::new(candidate)) else {
                continue;
            };
            let host = host_path(root, &real);
            if std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_socket()) {
                out.push(HostFile {
                    name: "socket".to_string(),
                    path: PathBuf::from(path),
                    host_path: host,
                });
                break;
            }
        }
    }
    Ok(out)
}
