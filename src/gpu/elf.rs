//! Just enough ELF to read a shared object's class, machine and `DT_SONAME`, and the note
//! CUDA's forward-compatibility `libcuda` carries (`.note.cuda.fwd_compatibility`).
//!
//! Only the ELF header, the section headers, the dynamic section, the SONAME string and
//! that note are read (a driver library is tens of MiB). Every offset comes from the file and is bounds
//! checked: a malformed file is an error, never a panic.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_SONAME: u64 = 14;
const MAX_SECTIONS: usize = 4096;
const MAX_DYNAMIC: u64 = 1 << 20;
const MAX_SONAME: usize = 255;

pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// What discovery needs to know about a shared object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub class64: bool,
    pub machine: u16,
    pub soname: Option<String>,
}

impl ElfInfo {
    /// True for this program's own 64-bit architecture.
    pub fn is_native(&self) -> bool {
        let m = if cfg!(target_arch = "aarch64") {
            EM_AARCH64
        } else {
            EM_X86_64
        };
        self.class64 && self.machine == m
    }

    /// True for the 32-bit architecture `compat32` serves (i386 on x86-64).
    pub fn is_native32(&self) -> bool {
        cfg!(target_arch = "x86_64") && !self.class64 && self.machine == EM_386
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

struct Reader {
    file: File,
    class64: bool,
    little: bool,
}

impl Reader {
    fn bytes(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    fn u16(&self, b: &[u8], off: usize) -> u16 {
        let a = [b[off], b[off + 1]];
        if self.little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }

    fn u32(&self, b: &[u8], off: usize) -> u32 {
        let a = [b[off], b[off + 1], b[off + 2], b[off + 3]];
        if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }

    fn u64(&self, b: &[u8], off: usize) -> u64 {
        let mut a = [0; 8];
        a.copy_from_slice(&b[off..off + 8]);
        if self.little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }

    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, b: &[u8], off: usize) -> u64 {
        if self.class64 {
            self.u64(b, off)
        } else {
            u64::from(self.u32(b, off))
        }
    }
}

/// Reads `path`'s ELF class, machine and SONAME.
pub fn read(path: &Path) -> io::Result<ElfInfo> {
    read_file(File::open(path)?)
}

/// Reads an open file's ELF class, machine and SONAME.
pub fn read_file(file: File) -> io::Result<ElfInfo> {
    let (r, ident) = reader(file)?;
    let machine = r.u16(&ident, 18);
    let (shoff, shentsize, shnum) = section_table(&r, &ident);
    let soname = read_soname(&r, shoff, shentsize, shnum)?;
    Ok(ElfInfo {
        class64: r.class64,
        machine,
        soname,
    })
}

/// The ELF header's first 64 bytes and a reader for the file's class and byte order.
fn reader(file: File) -> io::Result<(Reader, [u8; 64])> {
    let mut ident = [0u8; 64];
    let n = file.read_at(&mut ident, 0)?;
    if n < 52 || &ident[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    let class64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown ELF class")),
    };
    if class64 && n < 64 {
        return Err(bad("truncated ELF header"));
    }
    let little = match ident[5] {
        1 => true,
        2 => false,
        _ => return Err(bad("unknown ELF byte order")),
    };
    let r = Reader {
        file,
        class64,
        little,
    };
    Ok((r, ident))
}

/// (e_shoff, e_shentsize, e_shnum).
fn section_table(r: &Reader, ident: &[u8]) -> (u64, usize, usize) {
    if r.class64 {
        (
            r.u64(ident, 0x28),
            r.u16(ident, 0x3a) as usize,
            r.u16(ident, 0x3c) as usize,
        )
    } else {
        (
            u64::from(r.u32(ident, 0x20)),
            r.u16(ident, 0x2e) as usize,
            r.u16(ident, 0x30) as usize,
        )
    }
}

/// The section header table (`None` when the file has none), bounds checked.
fn section_headers(
    r: &Reader,
    shoff: u64,
    shentsize: usize,
    shnum: usize,
) -> io::Result<Option<Vec<u8>>> {
    let min = if r.class64 { 64 } else { 40 };
    if shoff == 0 || shnum == 0 {
        return Ok(None);
    }
    if shentsize < min || shnum > MAX_SECTIONS {
        return Err(bad("bad section header table"));
    }
    r.bytes(shoff, shentsize * shnum).map(Some)
}

fn read_soname(
    r: &Reader,
    shoff: u64,
    shentsize: usize,
    shnum: usize,
) -> io::Result<Option<String>> {
    let Some(table) = section_headers(r, shoff, shentsize, shnum)? else {
        return Ok(None);
    };
    // (sh_type, sh_offset, sh_size, sh_link) per section.
    let section = |i: usize| -> (u32, u64, u64, u32) {
        let s = &table[i * shentsize..];
        if r.class64 {
            (r.u32(s, 4), r.u64(s, 24), r.u64(s, 32), r.u32(s, 40))
        } else {
            (
                r.u32(s, 4),
                u64::from(r.u32(s, 16)),
                u64::from(r.u32(s, 20)),
                r.u32(s, 24),
            )
        }
    };
    let Some(dynamic) = (0..shnum).map(section).find(|s| s.0 == SHT_DYNAMIC) else {
        return Ok(None);
    };
    let (_, dyn_off, dyn_size, link) = dynamic;
    if dyn_size > MAX_DYNAMIC || link as usize >= shnum {
        return Err(bad("bad dynamic section"));
    }
    let (_, str_off, str_size, _) = section(link as usize);
    let dynamic = r.bytes(dyn_off, dyn_size as usize)?;
    let entry = if r.class64 { 16 } else { 8 };
    let half = entry / 2;
    for d in dynamic.chunks_exact(entry) {
        let tag = r.word(d, 0);
        if tag == DT_NULL {
            break;
        }
        if tag == DT_SONAME {
            let off = r.word(d, half);
            if off >= str_size {
                return Err(bad("SONAME outside the string table"));
            }
            let len = (str_size - off).min(MAX_SONAME as u64 + 1) as usize;
            let s = r.bytes(str_off + off, len)?;
            let end = s
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("SONAME too long"))?;
            return Ok(Some(String::from_utf8_lossy(&s[..end]).into_owned()));
        }
    }
    Ok(None)
}

const SHT_NOTE: u32 = 7;
const FWD_COMPAT_SECTION: &[u8] = b".note.cuda.fwd_compatibility";
const FWD_COMPAT_OWNER: &str = "NVIDIA Corporation";
const MAX_NOTE: u64 = 1 << 16;

/// What a CUDA forward-compatibility `libcuda` says about itself: the CUDA version it
/// brings and the majors of the host drivers it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct CudaCompatNote {
    #[serde(rename = "CUDA Version", default)]
    pub cuda_version: String,
    #[serde(rename = "Driver", default)]
    pub drivers: Vec<u64>,
}

/// One section header: (sh_name, sh_type, sh_offset, sh_size, sh_addralign).
type Section = (u32, u32, u64, u64, u64);

fn section_at(r: &Reader, table: &[u8], shentsize: usize, i: usize) -> Section {
    let s = &table[i * shentsize..];
    if r.class64 {
        (
            r.u32(s, 0),
            r.u32(s, 4),
            r.u64(s, 24),
            r.u64(s, 32),
            r.u64(s, 48),
        )
    } else {
        (
            r.u32(s, 0),
            r.u32(s, 4),
            u64::from(r.u32(s, 16)),
            u64::from(r.u32(s, 20)),
            u64::from(r.u32(s, 32)),
        )
    }
}

/// The `.note.cuda.fwd_compatibility` note of an open library: `None` when it has none,
/// or one not owned by NVIDIA.
pub fn cuda_compat_note(file: File) -> io::Result<Option<CudaCompatNote>> {
    let (r, ident) = reader(file)?;
    let (shoff, shentsize, shnum) = section_table(&r, &ident);
    let Some(table) = section_headers(&r, shoff, shentsize, shnum)? else {
        return Ok(None);
    };
    let shstrndx = r.u16(&ident, if r.class64 { 0x3e } else { 0x32 }) as usize;
    if shstrndx >= shnum {
        return Ok(None);
    }
    let (_, _, names_off, names_size, _) = section_at(&r, &table, shentsize, shstrndx);
    if names_size > MAX_DYNAMIC {
        return Err(bad("bad section name table"));
    }
    let names = r.bytes(names_off, names_size as usize)?;
    let named = |off: u32| {
        names.get(off as usize..).is_some_and(|n| {
            n.starts_with(FWD_COMPAT_SECTION) && n.get(FWD_COMPAT_SECTION.len()) == Some(&0)
        })
    };
    let Some((_, _, off, size, align)) = (0..shnum)
        .map(|i| section_at(&r, &table, shentsize, i))
        .find(|s| s.1 == SHT_NOTE && named(s.0))
    else {
        return Ok(None);
    };
    if !(12..=MAX_NOTE).contains(&size) {
        return Ok(None);
    }
    parse_note(&r, &r.bytes(off, size as usize)?, align)
}

/// A note: namesz, descsz, type (4 bytes each), the owner's name and the description,
/// each padded to the section's alignment.
fn parse_note(r: &Reader, data: &[u8], align: u64) -> io::Result<Option<CudaCompatNote>> {
    let align = if align == 8 { 8 } else { 4 };
    let (namesz, descsz) = (r.u32(data, 0) as usize, r.u32(data, 4) as usize);
    if namesz == 0 || descsz == 0 {
        return Ok(None);
    }
    let name_end = 12 + namesz;
    let desc_at = 12 + namesz.div_ceil(align) * align;
    let (Some(name), Some(desc)) = (data.get(12..name_end), data.get(desc_at..desc_at + descsz))
    else {
        return Err(bad("note larger than its section"));
    };
    let trim = |b: &[u8]| -> Vec<u8> { b.iter().copied().filter(|&c| c != 0).collect() };
    if trim(name) != FWD_COMPAT_OWNER.as_bytes() {
        return Ok(None);
    }
    serde_json::from_slice(&trim(desc))
        .map(Some)
        .map_err(|e| bad(&format!("CUDA compatibility note: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_is_an_error() {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), b"#!/bin/sh\necho hi\n").unwrap();
        assert!(read(t.path()).is_err());
    }

    #[test]
    fn reads_a_system_library_soname() {
        let Some(libc) = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            return;
        };
        let info = read(Path::new(libc)).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert!(info.is_native());
    }
}
