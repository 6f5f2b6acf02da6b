//! NumPy `.npy` and `.npz` files: arrays exchanged with other tools (samples,
//! features, FID statistics as EDM's reference `.npz` with `mu` and `sigma`).
//! Writes are atomic.

use std::path::Path;

use difi_core::error::{Error, Result};
use tch::Tensor;

/// Every array of an `.npz`, by name, on the CPU.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    Tensor::read_npz(path).map_err(|e| Error::checkpoint(path, format!("not a readable .npz ({e})")))
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
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    Tensor::read_npy(path).map_err(|e| Error::checkpoint(path, format!("not a readable .npy ({e})")))
}

/// Writes one array as `.npy`.
pub fn write_npy(path: &Path, array: &Tensor) -> Result<()> {
    crate::atomic::write_with(path, |tmp| {
        array.write_npy(tmp).map_err(|e| Error::checkpoint(tmp, format!("writing .npy: {e}")))
    })
}
