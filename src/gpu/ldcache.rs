//! A reader for glibc's `/etc/ld.so.cache` ("glibc-ld.so.cache1.1", with or without the
//! old "ld.so-1.7.0" block in front).
//!
//! Layout (glibc `sysdeps/generic/dl-cache.h`, described in research §1.5): a 48-byte
//! header — magic (17), version (3), `nlibs` u32, `len_strings` u32, flags u8, 3 bytes of
//! padding, `extension_offset` u32, 3 × u32 unused — then `nlibs` entries of 24 bytes —
//! `flags` i32, `key` u32, `value` u32, `osversion` u32, `hwcap` u64 — then the strings.
//! In the new format the string offsets count from the start of the new header.

use std::path::Path;

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
pub(crate) const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
pub(crate) const NEW_HEADER: usize = 48;
pub(crate) const NEW_ENTRY: usize = 24;
const OLD_ENTRY: usize = 12;

/// The type bits of an entry's flags: an ELF library (libc5 and libc6 both set bit 0).
const FLAG_ELF: i32 = 0x0001;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_ARCH_MASK: i32 = 0xff00;

/// The architecture an entry was built for (the `0xff00` bits of its flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// No architecture bits: i386 (and 32-bit arm without hard float).
    I386,
    X8664,
    X32,
    Ppc64,
    ArmHf,
    Aarch64,
    Other(i32),
}

impl Arch {
    fn from_flags(flags: i32) -> Arch {
        match flags & FLAG_ARCH_MASK {
            0x0000 => Arch::I386,
            0x0300 => Arch::X8664,
            0x0800 => Arch::X32,
            0x0500 => Arch::Ppc64,
            0x0900 => Arch::ArmHf,
            0x0a00 => Arch::Aarch64,
            other => Arch::Other(other),
        }
    }

    /// The architecture bits of an entry's flags: the inverse of reading them.
    pub fn flag_bits(self) -> i32 {
        match self {
            Arch::I386 => 0x0000,
            Arch::X8664 => 0x0300,
            Arch::X32 => 0x0800,
            Arch::Ppc64 => 0x0500,
            Arch::ArmHf => 0x0900,
            Arch::Aarch64 => 0x0a00,
            Arch::Other(bits) => bits & FLAG_ARCH_MASK,
        }
    }

    /// The 64-bit architecture this program runs on.
    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else if cfg!(target_arch = "powerpc64") {
            Arch::Ppc64
        } else {
            Arch::X8664
        }
    }

    /// The 32-bit companion architecture used for `compat32`, if any.
    pub fn native32() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::I386)
        } else {
            None
        }
    }
}

/// One library entry: a SONAME and the path the loader would open for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub soname: String,
    pub path: String,
    pub arch: Arch,
    /// The entry's flags as written (type and architecture bits).
    pub flags: i32,
    /// The hardware capabilities it needs; bit 62 marks a glibc-hwcaps subdirectory.
    pub hwcap: u64,
}

/// Why a cache could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LdCacheError {
    #[error("no glibc-ld.so.cache1.1 header")]
    NoNewFormat,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("written for the other byte order")]
    ForeignEndian,
    #[error("string offset {0} outside the cache")]
    BadString(u32),
}

/// Parses a whole cache file.
pub fn parse(data: &[u8]) -> Result<Vec<Entry>, LdCacheError> {
    let base = new_header_offset(data)?;
    let hdr = data
        .get(base..base + NEW_HEADER)
        .ok_or(LdCacheError::Truncated("header"))?;
    if &hdr[..NEW_MAGIC.len()] != NEW_MAGIC {
        return Err(LdCacheError::NoNewFormat);
    }
    let nlibs = u32_at(hdr, 20) as usize;
    // glibc 2.33+ records the byte order in the low two bits: 2 little, 3 big, 0 unknown.
    let endian = hdr[28] & 3;
    let native = if cfg!(target_endian = "little") { 2 } else { 3 };
    if endian != 0 && endian != native {
        return Err(LdCacheError::ForeignEndian);
    }
    let entries_end = nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(base + NEW_HEADER))
        .ok_or(LdCacheError::Truncated("entries"))?;
    let table = data
        .get(base + NEW_HEADER..entries_end)
        .ok_or(LdCacheError::Truncated("entries"))?;
    let strings = &data[base..];
    let mut out = Vec::with_capacity(nlibs);
    for e in table.chunks_exact(NEW_ENTRY) {
        let flags = u32_at(e, 0) as i32;
        if flags & FLAG_TYPE_MASK & FLAG_ELF == 0 {
            continue;
        }
        out.push(Entry {
            soname: string_at(strings, u32_at(e, 4))?,
            path: string_at(strings, u32_at(e, 8))?,
            arch: Arch::from_flags(flags),
            flags,
            hwcap: u64_at(e, 16),
        });
    }
    Ok(out)
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> std::io::Result<Result<Vec<Entry>, LdCacheError>> {
    Ok(parse(&std::fs::read(path)?))
}

/// Where the new-format header starts: 0, or after the old block when one is present.
fn new_header_offset(data: &[u8]) -> Result<usize, LdCacheError> {
    if data.starts_with(NEW_MAGIC) {
        return Ok(0);
    }
    if !data.starts_with(OLD_MAGIC) {
        return Err(LdCacheError::NoNewFormat);
    }
    let n = data
        .get(OLD_MAGIC.len() + 1..OLD_MAGIC.len() + 5)
        .ok_or(LdCacheError::Truncated("old header"))?;
    // The old header is magic (11 bytes) padded to 12, then nlibs u32, then 12-byte
    // entries; the new header follows aligned to 8 (the alignment of its u64 field).
    let nlibs = u32::from_ne_bytes([n[0], n[1], n[2], n[3]]) as usize;
    let end = nlibs
        .checked_mul(OLD_ENTRY)
        .and_then(|n| n.checked_add(OLD_MAGIC.len() + 5))
        .ok_or(LdCacheError::Truncated("old entries"))?;
    let aligned = end.div_ceil(8) * 8;
    if data.len() < aligned {
        return Err(LdCacheError::Truncated("old entries"));
    }
    Ok(aligned)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn string_at(strings: &[u8], off: u32) -> Result<String, LdCacheError> {
    let tail = strings
        .get(off as usize..)
        .ok_or(LdCacheError::BadString(off))?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(LdCacheError::BadString(off))?;
    Ok(String::from_utf8_lossy(&tail[..len]).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn architecture_bits_read_back_as_written() {
        for a in [
            Arch::I386,
            Arch::X8664,
            Arch::X32,
            Arch::Ppc64,
            Arch::ArmHf,
            Arch::Aarch64,
            Arch::Other(0x0f00),
        ] {
            assert_eq!(Arch::from_flags(0x0003 | a.flag_bits()), a, "{a:?}");
        }
        if cfg!(target_arch = "x86_64") {
            assert_eq!(Arch::native().flag_bits(), 0x0300);
        }
    }

    use super::*;

    /// Builds a new-format cache by hand: (flags, key, value) entries.
    pub(crate) fn build(entries: &[(i32, &str, &str)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let strings_base = NEW_HEADER + entries.len() * NEW_ENTRY;
        let mut table = Vec::new();
        for (flags, key, value) in entries {
            let k = (strings_base + strings.len()) as u32;
            strings.extend_from_slice(key.as_bytes());
            strings.push(0);
            let v = (strings_base + strings.len()) as u32;
            strings.extend_from_slice(value.as_bytes());
            strings.push(0);
            table.extend_from_slice(&flags.to_ne_bytes());
            table.extend_from_slice(&k.to_ne_bytes());
            table.extend_from_slice(&v.to_ne_bytes());
            table.extend_from_slice(&0u32.to_ne_bytes());
            table.extend_from_slice(&0u64.to_ne_bytes());
        }
        let mut out = NEW_MAGIC.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        out.extend_from_slice(&[2, 0, 0, 0]);
        out.extend_from_slice(&[0; 16]);
        assert_eq!(out.len(), NEW_HEADER);
        out.extend(table);
        out.extend(strings);
        out
    }

    #[test]
    fn parses_entries_and_arches() {
        let data = build(&[
            (
                0x0303,
                "libcuda.so.1",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            ),
            (
                0x0003,
                "libcuda.so.1",
                "/usr/lib/i386-linux-gnu/libcuda.so.1",
            ),
            (0x0a03, "libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"),
        ]);
        let e = parse(&data).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].soname, "libcuda.so.1");
        assert_eq!(e[0].path, "/usr/lib/x86_64-linux-gnu/libcuda.so.1");
        assert_eq!(e[0].arch, Arch::X8664);
        assert_eq!(e[1].arch, Arch::I386);
        assert_eq!(e[2].arch, Arch::Aarch64);
    }

    #[test]
    fn parses_after_an_old_block() {
        let new = build(&[(0x0303, "libnvidia-ml.so.1", "/lib64/libnvidia-ml.so.1")]);
        let mut data = OLD_MAGIC.to_vec();
        data.push(0);
        data.extend_from_slice(&1u32.to_ne_bytes());
        data.extend_from_slice(&[0; OLD_ENTRY]);
        while !data.len().is_multiple_of(8) {
            data.push(0);
        }
        data.extend(new);
        let e = parse(&data).unwrap();
        assert_eq!(e[0].soname, "libnvidia-ml.so.1");
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert_eq!(parse(b"garbage"), Err(LdCacheError::NoNewFormat));
        let mut data = build(&[(0x0303, "a", "b")]);
        data.truncate(NEW_HEADER + 4);
        assert_eq!(parse(&data), Err(LdCacheError::Truncated("entries")));
        let mut data = build(&[(0x0303, "a", "b")]);
        data[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse(&data), Err(LdCacheError::BadString(u32::MAX)));
        let mut data = build(&[]);
        data[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse(&data).is_err());
    }

    #[test]
    fn reads_this_hosts_cache_when_present() {
        let Ok(data) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let e = parse(&data).unwrap();
        assert!(e.iter().any(|e| e.soname.starts_with("libc.so.")));
    }
}
