//! `update-ldcache` without ldconfig: the loader cache the container will read, made in
//! the parent from what the container will see, and mounted read-only over the image's
//! `/etc/ld.so.cache`.
//!
//! Its entries, first match winning: the CUDA compat libraries when `enable-cuda-compat`
//! chose them, then the libraries in the named folders (the spec's mounts there, read from
//! their host sources, and the image's own files there that its cache does not list), then
//! every entry of the image's own cache. Each folder library whose file name is not its
//! SONAME also gets the SONAME link ldconfig would make beside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::gpu::editor::{Editor, FILE_OPTIONS};
use crate::gpu::elf::{self, ElfInfo};
use crate::gpu::ldcache::{self, Entry};
use crate::gpu::ldcache_write;
use crate::gpu::paths::normalize;
use crate::gpu::GpuError;
use crate::linux::inroot::Root;

const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// What generating the cache added besides its mount.
#[derive(Debug, Default)]
pub(super) struct Made {
    /// SONAME links to make inside the root: (target, link).
    pub links: Vec<(String, String)>,
    pub log: Vec<String>,
}

pub(super) fn generate(
    spec: &mut Spec,
    root: &Root,
    folders: &[PathBuf],
    compat: Option<&Path>,
    store: &Path,
) -> Result<Made, GpuError> {
    let mut made = Made::default();
    let image = image_entries(root, &mut made.log);
    let mut entries: Vec<Entry> = Vec::new();
    if let Some(dir) = compat {
        for (name, soname) in image_libraries(root, dir, &[], &HashSet::new()) {
            entries.push(entry(&soname, &dir.join(name)));
        }
    }
    let known: HashSet<&str> = image.iter().map(|e| e.soname.as_str()).collect();
    for f in folders {
        let dir = normalize(f);
        let mounted = mounted_libraries(spec, &dir);
        let shadowed: Vec<PathBuf> = mounted.iter().map(|(p, _)| p.clone()).collect();
        let from_image = image_libraries(root, &dir, &shadowed, &known);
        let in_dir = from_image
            .into_iter()
            .map(|(name, so)| (dir.join(name), so));
        for (path, soname) in mounted.into_iter().chain(in_dir) {
            if path.file_name().and_then(|n| n.to_str()) != Some(soname.as_str()) {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    let link = dir.join(&soname).display().to_string();
                    made.links.push((name.to_string(), link));
                }
            }
            entries.push(entry(&soname, &path));
        }
    }
    let generated = entries.len();
    entries.extend(image);
    let data = ldcache_write::write(&entries);
    let file = super::generated(store, "ld.so.cache", data)?;
    Editor::new(spec).bind(&file, Path::new(LD_SO_CACHE), FILE_OPTIONS);
    made.log.push(format!(
        "update-ldcache: {generated} librar(ies) ahead of the image's cache, mounted at {LD_SO_CACHE}"
    ));
    Ok(made)
}

fn entry(soname: &str, path: &Path) -> Entry {
    ldcache_write::native_entry(soname, &path.display().to_string())
}

/// The most of the image's `ld.so.cache` that is read.
const MAX_IMAGE_CACHE: u64 = 64 << 20;

/// The image's own cache, read inside its root; none when it has none or it is damaged.
fn image_entries(root: &Root, log: &mut Vec<String>) -> Vec<Entry> {
    let Ok(f) = root.open_file(Path::new(LD_SO_CACHE), false) else {
        return Vec::new();
    };
    let mut data = Vec::new();
    // A real cache is well under a megabyte; an image cannot make create read gigabytes.
    let mut limited = std::io::Read::take(f, MAX_IMAGE_CACHE + 1);
    let read = std::io::Read::read_to_end(&mut limited, &mut data);
    if read.is_ok() && data.len() as u64 > MAX_IMAGE_CACHE {
        log.push(format!(
            "the image's {LD_SO_CACHE} is over {MAX_IMAGE_CACHE} bytes; its entries left out"
        ));
        return Vec::new();
    }
    if let Err(e) = read {
        log.push(format!(
            "the image's {LD_SO_CACHE}: {e}; its entries left out"
        ));
        return Vec::new();
    }
    ldcache::parse(&data).unwrap_or_else(|e| {
        log.push(format!(
            "the image's {LD_SO_CACHE}: {e}; its entries left out"
        ));
        Vec::new()
    })
}

/// The spec's mounts of native libraries directly in `dir` (as the container will see
/// them), and of a host directory over `dir` itself: (path inside, SONAME).
fn mounted_libraries(spec: &Spec, dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let (dest, Some(src)) = (normalize(m.destination()), m.source().as_ref()) else {
            continue;
        };
        if !is_bind(m) || !src.is_absolute() {
            continue;
        }
        if dest.parent() == Some(dir) && is_library_name(&dest) {
            if let Some(so) = native_soname(host_library(src)) {
                out.retain(|(p, _)| *p != dest);
                out.push((dest, so));
            }
        } else if dest == dir && src.is_dir() {
            for e in std::fs::read_dir(src).into_iter().flatten().flatten() {
                let p = e.path();
                let regular = e.file_type().is_ok_and(|t| t.is_file());
                if regular && is_library_name(&p) {
                    if let Some(so) = native_soname(host_library(&p)) {
                        out.push((dir.join(e.file_name()), so));
                    }
                }
            }
        }
    }
    out
}

/// The image's native libraries in `dir` (regular files only, read inside the root), less
/// those a mount covers and those whose name starts with a SONAME in `known` (the image's
/// cache already resolves it; this spares reading most of a distribution's library
/// directory): (file name, SONAME).
fn image_libraries(
    root: &Root,
    dir: &Path,
    shadowed: &[PathBuf],
    known: &HashSet<&str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, regular) in list_dir(root, dir) {
        let path = dir.join(&name);
        if !regular
            || !is_library_name(&path)
            || shadowed.contains(&path)
            || soname_prefixes(&name).any(|p| known.contains(p))
        {
            continue;
        }
        let info = root
            .open_file(&path, true)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(elf::read_file);
        if let Some(so) = native_soname(info) {
            out.push((name, so));
        }
    }
    out.sort();
    out
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// A mount source's ELF facts: opened without blocking and only as a regular file, so a
/// source swapped for a FIFO in a volume the user controls cannot stall create.
fn host_library(path: &Path) -> std::io::Result<ElfInfo> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    elf::read_file(f)
}

fn native_soname(info: std::io::Result<ElfInfo>) -> Option<String> {
    info.ok()
        .filter(ElfInfo::is_native)
        .and_then(|i| i.soname)
        .filter(|s| !s.contains('/'))
}

/// The prefixes of a library file name that a SONAME could be: `libz.so.1.2.13` gives
/// `libz.so`, `libz.so.1`, `libz.so.1.2` and itself.
fn soname_prefixes(name: &str) -> impl Iterator<Item = &str> {
    let from = name.find(".so").map_or(name.len(), |i| i + 3);
    name.match_indices('.')
        .map(|(i, _)| i)
        .filter(move |i| *i >= from)
        .map(move |i| &name[..i])
        .chain(std::iter::once(name))
}

/// What ldconfig looks at: `lib*.so*`.
fn is_library_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("lib") && n.contains(".so"))
}

/// The entries of `dir` inside the root: (name, is a regular file). Nothing when it
/// cannot be opened.
pub(super) fn list_dir(root: &Root, dir: &Path) -> Vec<(String, bool)> {
    let Ok(f) = root.open_read(dir, false) else {
        return Vec::new();
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(std::os::fd::OwnedFd::from(f)) else {
        return Vec::new();
    };
    d.iter()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str().ok()?.to_string();
            if name == "." || name == ".." {
                return None;
            }
            let regular = e.file_type() == Some(nix::dir::Type::File);
            Some((name, regular))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_lists_the_folder_first_then_the_images_own_entries() {
        let Some(libc) = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            return;
        };
        let t = tempfile::tempdir().expect("tempdir");
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("etc");
        std::fs::create_dir_all(rootfs.join("opt/f")).expect("folder");
        let image = [
            ldcache_write::native_entry("libimage.so.1", "/opt/img/libimage.so.1"),
            ldcache_write::native_entry("libc.so.6", "/lib/libc.so.6"),
        ];
        std::fs::write(rootfs.join("etc/ld.so.cache"), ldcache_write::write(&image))
            .expect("the image's cache");
        std::fs::copy(libc, rootfs.join("opt/f/libc-copy.so.6")).expect("a library");
        let root = Root::open(&rootfs).expect("the root");
        let mut spec = Spec::default();
        let store = t.path().join("store");
        let known = HashSet::new();
        assert_eq!(
            image_libraries(&root, Path::new("/opt/f"), &[], &known),
            [("libc-copy.so.6".to_string(), "libc.so.6".to_string())]
        );
        let made = generate(&mut spec, &root, &[PathBuf::from("/opt/f")], None, &store)
            .expect("generated");
        assert_eq!(
            made.links,
            [("libc-copy.so.6".to_string(), "/opt/f/libc.so.6".to_string())]
        );
        let src = spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new(LD_SO_CACHE))
            .and_then(|m| m.source().clone())
            .expect("the cache is mounted");
        assert!(src.starts_with(&store), "{}", src.display());
        let back = ldcache::read(&src).expect("read").expect("parse");
        let libc_paths: Vec<&str> = back
            .iter()
            .filter(|e| e.soname == "libc.so.6")
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(libc_paths, ["/opt/f/libc-copy.so.6", "/lib/libc.so.6"]);
        assert!(back.iter().any(|e| e.soname == "libimage.so.1"));
    }

    #[test]
    fn a_file_name_gives_the_sonames_it_could_carry() {
        let p: Vec<&str> = soname_prefixes("libz.so.1.2.13").collect();
        assert_eq!(p, ["libz.so", "libz.so.1", "libz.so.1.2", "libz.so.1.2.13"]);
        let p: Vec<&str> = soname_prefixes("libfoo.so").collect();
        assert_eq!(p, ["libfoo.so"]);
    }
}
