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
        return Err(naming_the_target(err, &tmp, path));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The user asked for `path`; an error about the hidden temporary file is
/// reported as about `path`.
fn naming_the_target(err: Error, tmp: &Path, path: &Path) -> Error {
    match err {
        Error::Io { path: p, source } if p == tmp => Error::Io { path: path.to_path_buf(), source },
        Error::Checkpoint { path: p, message } if p == tmp => Error::Checkpoint { path: path.to_path_buf(), message },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_names_the_target_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("difi-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A directory in the way of the rename's source: the write itself fails.
        let target = dir.join("out.bin");
        std::fs::create_dir_all(temporary_sibling(&target)).unwrap();
        let err = write_atomically(&target, b"data").unwrap_err().to_string();
        assert!(err.starts_with(&target.display().to_string()) && !err.contains(".tmp"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
