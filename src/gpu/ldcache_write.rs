//! A writer for glibc's `/etc/ld.so.cache` in the format the loader of glibc 2.32 and
//! later reads by default ("glibc-ld.so.cache1.1" alone, no old block), the layout
//! [`super::ldcache`] reads.
//!
//! The loader binary-searches the entry table, so the order is the loader's, not ours:
//! names descending by glibc's `_dl_cache_libcmp` (runs of digits compare as numbers and
//! above any other character), and among entries with the same name the loader takes the
//! first one whose flags fit its architecture. So the caller's order of equal names is
//! its priority, and a stable sort keeps it.

use std::cmp::Ordering;

use super::ldcache::{Entry, NEW_ENTRY, NEW_HEADER, NEW_MAGIC};

/// `FLAG_ELF_LIBC6`: a glibc shared object.
const FLAG_ELF_LIBC6: i32 = 0x0003;
/// Bit 62 of an entry's hwcap: a glibc-hwcaps subdirectory entry, which points into an
/// extension section this writer does not carry.
pub const HWCAP_EXTENSION: u64 = 1 << 62;

/// The flags the loader of this program's architecture accepts (`_DL_CACHE_DEFAULT_ID`).
pub fn native_flags() -> i32 {
    FLAG_ELF_LIBC6 | super::ldcache::Arch::native().flag_bits()
}

/// glibc's `_dl_cache_libcmp`.
pub fn libcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() {
        let (ca, cb) = (a[i], b.get(j).copied().unwrap_or(0));
        match (ca.is_ascii_digit(), cb.is_ascii_digit()) {
            (true, true) => {
                let (va, ni) = number(a, i);
                let (vb, nj) = number(b, j);
                if va != vb {
                    return va.cmp(&vb);
                }
                (i, j) = (ni, nj);
            }
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (false, false) if ca != cb => return ca.cmp(&cb),
            (false, false) => (i, j) = (i + 1, j + 1),
        }
    }
    0u8.cmp(&b.get(j).copied().unwrap_or(0))
}

/// The decimal number starting at `at`, and the index after it.
fn number(s: &[u8], mut at: usize) -> (u128, usize) {
    let mut v: u128 = 0;
    while let Some(d) = s.get(at).filter(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(u128::from(d - b'0'));
        at += 1;
    }
    (v, at)
}

/// The cache holding `entries`, earlier entries winning over later ones of the same
/// name. glibc-hwcaps entries and exact repeats are left out.
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut kept: Vec<&Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        let repeat = kept
            .iter()
            .any(|k| k.soname == e.soname && k.flags == e.flags && k.path == e.path);
        if e.hwcap & HWCAP_EXTENSION == 0 && !repeat && !e.soname.contains('\0') {
            kept.push(e);
        }
    }
    // Stable: equal names keep the caller's priority. Higher flags first, as ldconfig.
    kept.sort_by(|x, y| libcmp(&y.soname, &x.soname).then(y.flags.cmp(&x.flags)));
    let strings_base = NEW_HEADER + kept.len() * NEW_ENTRY;
    let mut strings: Vec<u8> = Vec::new();
    let mut table = Vec::with_capacity(kept.len() * NEW_ENTRY);
    for e in &kept {
        let key = (strings_base + strings.len()) as u32;
        strings.extend_from_slice(e.soname.as_bytes());
        strings.push(0);
        let value = (strings_base + strings.len()) as u32;
        strings.extend_from_slice(e.path.as_bytes());
        strings.push(0);
        table.extend_from_slice(&e.flags.to_ne_bytes());
        table.extend_from_slice(&key.to_ne_bytes());
        table.extend_from_slice(&value.to_ne_bytes());
        table.extend_from_slice(&0u32.to_ne_bytes());
        table.extend_from_slice(&e.hwcap.to_ne_bytes());
    }
    let endian: u8 = if cfg!(target_endian = "little") { 2 } else { 3 };
    let mut out = NEW_MAGIC.to_vec();
    out.extend_from_slice(&(kept.len() as u32).to_ne_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    out.extend_from_slice(&[endian, 0, 0, 0]);
    // No extension section, and three unused words.
    out.extend_from_slice(&[0; 16]);
    out.extend(table);
    out.extend(strings);
    out
}

/// An entry for a library of this program's architecture.
pub fn native_entry(soname: &str, path: &str) -> Entry {
    let flags = native_flags();
    Entry {
        soname: soname.to_string(),
        path: path.to_string(),
        arch: super::ldcache::Arch::native(),
        flags,
        hwcap: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::ldcache;

    #[test]
    fn libcmp_compares_digits_as_numbers_and_above_letters() {
        assert_eq!(libcmp("libc.so.6", "libc.so.6"), Ordering::Equal);
        assert_eq!(libcmp("libfoo.so.10", "libfoo.so.9"), Ordering::Greater);
        assert_eq!(libcmp("lib1", "liba"), Ordering::Greater);
        assert_eq!(libcmp("liba", "libab"), Ordering::Less);
        assert_eq!(libcmp("libab", "liba"), Ordering::Greater);
    }

    #[test]
    fn what_is_written_reads_back_in_the_loaders_order() {
        let entries = vec![
            native_entry("libcuda.so.1", "/compat/libcuda.so.1"),
            native_entry("libc.so.6", "/lib/libc.so.6"),
            native_entry("libcuda.so.1", "/usr/lib/libcuda.so.1"),
            native_entry("libcuda.so.1", "/compat/libcuda.so.1"),
            native_entry("libz.so.1", "/lib/libz.so.1"),
        ];
        let data = write(&entries);
        let back = ldcache::parse(&data).expect("the written cache parses");
        let names: Vec<(&str, &str)> = back
            .iter()
            .map(|e| (e.soname.as_str(), e.path.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("libz.so.1", "/lib/libz.so.1"),
                ("libcuda.so.1", "/compat/libcuda.so.1"),
                ("libcuda.so.1", "/usr/lib/libcuda.so.1"),
                ("libc.so.6", "/lib/libc.so.6"),
            ]
        );
        assert!(back.iter().all(|e| e.flags == native_flags()));
    }

    #[test]
    fn hwcaps_subdirectory_entries_are_left_out() {
        let mut e = native_entry("libm.so.6", "/lib/glibc-hwcaps/x86-64-v3/libm.so.6");
        e.hwcap = HWCAP_EXTENSION | 2;
        let data = write(&[e, native_entry("libm.so.6", "/lib/libm.so.6")]);
        let back = ldcache::parse(&data).expect("parses");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].path, "/lib/libm.so.6");
    }
}
