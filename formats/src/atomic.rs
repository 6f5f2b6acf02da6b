//! Writes that never leave a truncated file: data goes to a hidden sibling
//! (`dir/.name.tmp`) which is renamed over the target once complete, so a
//! crash, a full disk or Ctrl-C leaves either the old file or the new one.

use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};

/// `dir/.name.tmp` for `dir/name`.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

/// Lets `write` fill a temporary sibling of `path`, then renames it into
/// place; on failure the temporary file is removed and `path` is untouched.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_sibling(path);
    if let Err(err) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
