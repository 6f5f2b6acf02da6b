//! What a plugin library file must look like before it is handed to the
//! dynamic loader. `dlopen` maps the file's segments where its headers say
//! and runs the library's constructors: a truncated file faults (SIGBUS) on
//! the first page past its end, so the headers are checked against the bytes
//! actually there first. This only guards against broken files; a library
//! is code, and loading one runs it (docs/security.md).

use std::io::Read;
use std::path::Path;

/// Largest plugin library accepted (difi's own example is a few MB).
pub const MAX_LIBRARY_BYTES: u64 = 1 << 30;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const HEADER_BYTES: usize = 64;
const SHARED_OBJECT: u16 = 3;
const LOADABLE_SEGMENT: u32 = 1;
/// Program headers read at most (real libraries have about ten).
const MAX_PROGRAM_HEADERS: u64 = 4096;

/// The ELF machine this binary runs on.
const HOST_MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else {
    0
};

/// Checks that `path` is a regular file holding a complete 64-bit
/// little-endian ELF shared object for this machine, every loadable segment
/// within the file; says what is wrong otherwise.
pub fn check_library_file(path: &Path) -> std::result::Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no such file".into()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    if meta.is_dir() {
        return Err("is a directory, not a library file".into());
    }
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let size = meta.len();
    if size > MAX_LIBRARY_BYTES {
        return Err(format!("is {size} bytes, more than the {MAX_LIBRARY_BYTES} a plugin library may have"));
    }
    let bytes = read_all(path, size)?;
    check_elf(&bytes)
}

fn read_all(path: &Path, size: u64) -> std::result::Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(size).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}

/// The checks of [`check_library_file`] on the file's bytes.
pub fn check_elf(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != ELF_MAGIC {
        return Err("not a shared library (no ELF header)".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF library".into());
    }
    let u16_at = |offset: usize| u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
    if u16_at(16) != SHARED_OBJECT {
        return Err("an ELF file but not a shared library (build the plugin as a cdylib)".into());
    }
    let machine = u16_at(18);
    if machine != HOST_MACHINE {
        return Err(format!("built for ELF machine {machine}, this computer is {HOST_MACHINE}"));
    }
    let file_len = bytes.len() as u64;
    let program_offset = u64_at(bytes, 32)?;
    let (entry_size, count) = (u64::from(u16_at(54)), u64::from(u16_at(56)));
    if count > MAX_PROGRAM_HEADERS || (count > 0 && entry_size < 56) {
        return Err(format!("malformed program headers ({count} of {entry_size} bytes)"));
    }
    let table_end = entry_size.checked_mul(count).and_then(|n| n.checked_add(program_offset));
    if table_end.is_none_or(|end| end > file_len) {
        return Err(truncated(file_len));
    }
    for index in 0..count {
        let at = (program_offset + index * entry_size) as usize;
        let kind = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if kind != LOADABLE_SEGMENT {
            continue;
        }
        let (offset, file_size) = (u64_at(bytes, at + 8)?, u64_at(bytes, at + 32)?);
        if offset.checked_add(file_size).is_none_or(|end| end > file_len) {
            return Err(truncated(file_len));
        }
    }
    Ok(())
}

fn u64_at(bytes: &[u8], offset: usize) -> std::result::Result<u64, String> {
    let slice = bytes.get(offset..offset + 8).ok_or_else(|| truncated(bytes.len() as u64))?;
    let mut word = [0u8; 8];
    word.copy_from_slice(slice);
    Ok(u64::from_le_bytes(word))
}

fn truncated(len: u64) -> String {
    format!("truncated or corrupt: its headers describe more than its {len} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal shared object for this machine: the ELF header, one
    /// loadable segment covering the whole file, and `payload` bytes.
    fn library(payload: usize) -> Vec<u8> {
        let total = (HEADER_BYTES + 56 + payload) as u64;
        let mut bytes = vec![0u8; total as usize];
        bytes[..4].copy_from_slice(ELF_MAGIC);
        (bytes[4], bytes[5], bytes[6]) = (2, 1, 1);
        bytes[16..18].copy_from_slice(&SHARED_OBJECT.to_le_bytes());
        bytes[18..20].copy_from_slice(&HOST_MACHINE.to_le_bytes());
        bytes[32..40].copy_from_slice(&(HEADER_BYTES as u64).to_le_bytes());
        bytes[54..56].copy_from_slice(&56u16.to_le_bytes());
        bytes[56..58].copy_from_slice(&1u16.to_le_bytes());
        let segment = HEADER_BYTES;
        bytes[segment..segment + 4].copy_from_slice(&LOADABLE_SEGMENT.to_le_bytes());
        bytes[segment + 32..segment + 40].copy_from_slice(&total.to_le_bytes());
        bytes
    }

    #[test]
    fn directories_and_missing_files_are_named_as_such() {
        let dir = std::env::temp_dir();
        assert_eq!(check_library_file(&dir).unwrap_err(), "is a directory, not a library file");
        assert_eq!(check_library_file(&dir.join("difi-no-such-plugin.so")).unwrap_err(), "no such file");
    }

    #[test]
    fn complete_libraries_pass_and_truncated_ones_are_refused() {
        let bytes = library(1000);
        assert_eq!(check_elf(&bytes), Ok(()));
        for cut in [bytes.len() - 1, HEADER_BYTES + 56, HEADER_BYTES + 10, 40] {
            let err = check_elf(&bytes[..cut]).unwrap_err();
            assert!(err.contains("truncated") || err.contains("no ELF header"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        assert!(check_elf(b"#!/bin/sh\necho hi\n").unwrap_err().contains("no ELF header"));
        let mut executable = library(10);
        executable[16] = 2;
        assert!(check_elf(&executable).unwrap_err().contains("not a shared library"));
        let mut foreign = library(10);
        foreign[18..20].copy_from_slice(&(HOST_MACHINE ^ 1).to_le_bytes());
        assert!(check_elf(&foreign).unwrap_err().contains("ELF machine"));
        let mut huge_segment = library(10);
        huge_segment[HEADER_BYTES + 32..HEADER_BYTES + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_elf(&huge_segment).unwrap_err().contains("truncated"));
    }
}
