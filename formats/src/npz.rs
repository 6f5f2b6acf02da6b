//! NumPy `.npy` and `.npz` files: arrays exchanged with other tools (samples,
//! features, FID statistics as EDM's reference `.npz` with `mu` and `sigma`).
//! Reading trusts nothing in the file (see [`crate::npy`] for one array);
//! an `.npz` is a zip of `.npy` entries, stored or deflated, each checked
//! against its declared size and CRC while it is read. Writes are atomic.

use std::io::{Read, Seek};
use std::path::Path;

use difi_core::error::{Error, Result};
use flate2::read::DeflateDecoder;
use tch::Tensor;
use zip::{CompressionMethod, ZipArchive};

use crate::npy;

/// Arrays in one `.npz`; numpy's own files hold a handful.
pub const MAX_NPZ_ENTRIES: usize = 4096;
/// Decompressed size of one `.npz` entry: a deflated entry could otherwise
/// expand a small download into any amount of memory.
pub const MAX_NPZ_ENTRY_BYTES: u64 = 4 << 30;

fn not_found(path: &Path) -> Error {
    Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
}

/// Every array of an `.npz`, by name, on the CPU.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        return Err(not_found(path));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    parse_npz(std::io::BufReader::new(file), path)
}

/// Every array of an `.npz` read from `reader`; `origin` names it in errors.
pub fn parse_npz<R: Read + Seek>(reader: R, origin: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |message: String| Error::checkpoint(origin, format!("not a readable .npz: {message}"));
    let mut archive = ZipArchive::new(reader).map_err(|e| bad(format!("{e}")))?;
    if archive.len() > MAX_NPZ_ENTRIES {
        return Err(bad(format!("{} entries (at most {MAX_NPZ_ENTRIES} accepted)", archive.len())));
    }
    let mut arrays: Vec<(String, Tensor)> = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        // Raw entries: the compression method is checked here, never
        // dispatched to whatever decoder the zip crate was built with.
        let entry = archive.by_index_raw(index).map_err(|e| bad(format!("entry {index}: {e}")))?;
        let name = entry.name().map_err(|e| bad(format!("entry {index}: {e}")))?.into_owned();
        let bad_entry = |message: String| bad(format!("entry `{name}`: {message}"));
        let Some(array_name) = name.strip_suffix(".npy") else {
            return Err(bad_entry("not an .npy array".into()));
        };
        if arrays.iter().any(|(n, _)| n == array_name) {
            return Err(bad_entry("appears twice".into()));
        }
        if entry.encrypted() {
            return Err(bad_entry("is encrypted".into()));
        }
        let declared = entry.size();
        if declared > MAX_NPZ_ENTRY_BYTES {
            return Err(bad_entry(format!("{declared} bytes (at most {MAX_NPZ_ENTRY_BYTES} accepted)")));
        }
        let expected_crc = entry.crc32();
        let method = entry.compression();
        let content: Box<dyn Read + '_> = if method == CompressionMethod::Stored {
            Box::new(entry)
        } else if method == CompressionMethod::DEFLATE {
            Box::new(DeflateDecoder::new(entry))
        } else {
            return Err(bad_entry(format!("compressed with {method}; only stored or deflated entries are read")));
        };
        let mut content = ChecksummedReader { inner: content.take(declared), crc: flate2::Crc::new() };
        let entry_origin = origin.join(&name);
        let (header, header_bytes) = npy::read_header(&mut content, &entry_origin)?;
        let needed = header_bytes.checked_add(header.data_bytes);
        if needed != Some(declared) {
            return Err(bad_entry(format!(
                "its zip entry holds {declared} bytes, its .npy header needs {header_bytes} + {}",
                header.data_bytes
            )));
        }
        // Capacity is granted only as bytes arrive: the declared size is not proof.
        let mut data = Vec::new();
        content.read_to_end(&mut data).map_err(|e| bad_entry(format!("reading its data: {e}")))?;
        if data.len() as u64 != header.data_bytes {
            return Err(bad_entry(npy::data_mismatch(&header, data.len() as u64)));
        }
        if content.crc.sum() != expected_crc {
            return Err(bad_entry("CRC mismatch: the entry is corrupt".into()));
        }
        let tensor = npy::to_tensor(&header, &data, &entry_origin)?;
        arrays.push((array_name.to_string(), tensor));
    }
    Ok(arrays)
}

/// Passes bytes through while summing their CRC-32.
struct ChecksummedReader<R> {
    inner: R,
    crc: flate2::Crc,
}

impl<R: Read> Read for ChecksummedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes named arrays as an `.npz`.
pub fn write_npz(path: &Path, arrays: &[(&str, &Tensor)]) -> Result<()> {
    crate::atomic::write_with(path, |tmp| {
        Tensor::write_npz(arrays, tmp).map_err(|e| Error::checkpoint(tmp, format!("writing .npz: {e}")))
    })
}

/// Reads one `.npy` array onto the CPU.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    if !path.is_file() {
        return Err(not_found(path));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = std::io::BufReader::new(file);
    let (header, header_bytes) = npy::read_header(&mut reader, path)?;
    let present = file_bytes.saturating_sub(header_bytes);
    if present != header.data_bytes {
        return Err(Error::checkpoint(
            path,
            format!("not a readable .npy array: {}", npy::data_mismatch(&header, present)),
        ));
    }
    // The file's length was checked above, so this allocation is backed by bytes on disk.
    let mut data = Vec::with_capacity(header.data_bytes as usize);
    reader.read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
    npy::to_tensor(&header, &data, path)
}

/// Writes one array as `.npy`.
pub fn write_npy(path: &Path, array: &Tensor) -> Result<()> {
    crate::atomic::write_with(path, |tmp| {
        array.write_npy(tmp).map_err(|e| Error::checkpoint(tmp, format!("writing .npy: {e}")))
    })
}
