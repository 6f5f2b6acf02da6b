//! Listing the files below a folder from a stranger without following it
//! anywhere else: links to folders are refused (one `ln -s . x` would
//! otherwise list everything again and again), links to files are listed,
//! anything but regular files is refused, and depth and file count are
//! bounded by [`MAX_FOLDER_DEPTH`] and [`MAX_FILES`]. The walk uses an
//! explicit stack, never recursion.

use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};

use crate::limits::{MAX_FILES, MAX_FOLDER_DEPTH};

/// Every regular file below `root` (or a link to one), unsorted.
pub fn files_below(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                if depth + 1 > MAX_FOLDER_DEPTH {
                    return Err(Error::checkpoint(
                        &path,
                        format!("nested more than {MAX_FOLDER_DEPTH} folders deep; difi walks no deeper"),
                    ));
                }
                stack.push((path, depth + 1));
                continue;
            }
            let target = if kind.is_symlink() {
                std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.file_type()
            } else {
                kind
            };
            if target.is_dir() {
                return Err(Error::checkpoint(
                    &path,
                    "is a link to a folder; difi does not follow those (they can loop): copy the folder instead",
                ));
            }
            if !target.is_file() {
                return Err(Error::checkpoint(&path, "is not a regular file (a device, pipe or socket?)"));
            }
            if files.len() == MAX_FILES {
                return Err(Error::checkpoint(root, format!("holds more than {MAX_FILES} files; difi reads no more")));
            }
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("difi-walk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn links_to_folders_are_refused_and_links_to_files_listed() {
        let dir = scratch("links");
        std::fs::create_dir(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/1.png"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("a/1.png"), dir.join("2.png")).unwrap();
        let mut files = files_below(&dir).unwrap();
        files.sort();
        assert_eq!(files, [dir.join("2.png"), dir.join("a/1.png")]);
        std::os::unix::fs::symlink(".", dir.join("a/loop")).unwrap();
        let err = files_below(&dir).unwrap_err().to_string();
        assert!(err.contains("a/loop") && err.contains("link to a folder"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deep_nesting_and_special_files_are_refused() {
        let dir = scratch("deep");
        let mut deep = dir.clone();
        for _ in 0..MAX_FOLDER_DEPTH + 1 {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = files_below(&dir).unwrap_err().to_string();
        assert!(err.contains("more than 32 folders deep"), "{err}");
        std::fs::remove_dir_all(dir.join("d")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.png")).unwrap();
        let err = files_below(&dir).unwrap_err().to_string();
        assert!(err.contains("zero.png") && err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
