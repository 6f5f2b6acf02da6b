//! Checks on where a command is about to write, shared by `convert` and
//! `export` so both refuse the same things in the same words: nothing that
//! exists is replaced, and two outputs never name the same file.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use difi_core::error::{Error, Result};

/// `Ok` when nothing is at `path` (not even a dangling link), so writing
/// there loses nothing.
pub fn refuse_existing(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(Error::io(
            path,
            std::io::Error::new(ErrorKind::AlreadyExists, "exists; remove it or choose another destination"),
        ));
    }
    Ok(())
}

/// `Ok` when `a` and `b` are different files, comparing absolute paths with
/// links resolved where they exist (`x.npy`, `./x.npy`, `d/../x.npy` and a
/// link to `x.npy` are all the same).
pub fn refuse_same_file(a: &Path, b: &Path) -> Result<()> {
    if resolved(a)? == resolved(b)? {
        return Err(Error::io(
            b,
            std::io::Error::new(
                ErrorKind::InvalidInput,
                format!("is the same file as {}; one would overwrite the other", a.display()),
            ),
        ));
    }
    Ok(())
}

/// The absolute form of `path`: the part that exists with its links
/// resolved, the rest with `.` and `..` applied lexically.
fn resolved(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => {
                out.push(other);
                if out.symlink_metadata().is_ok() {
                    out = out.canonicalize().map_err(|e| Error::io(&out, e))?;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_file_are_the_same_and_others_differ() {
        let dir = std::env::temp_dir().join(format!("difi-destination-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), dir.join("link")).unwrap();
        let x = dir.join("x.npy");
        for same in [dir.join("./x.npy"), dir.join("sub/../x.npy"), dir.join("link/../x.npy")] {
            let err = refuse_same_file(&x, &same).unwrap_err().to_string();
            assert!(err.contains("is the same file as"), "{}: {err}", same.display());
        }
        assert!(refuse_same_file(&dir.join("sub/y.npy"), &dir.join("link/y.npy")).is_err());
        assert!(refuse_same_file(&x, &dir.join("y.npy")).is_ok());
        assert!(refuse_existing(&x).is_ok());
        assert!(refuse_existing(&dir.join("sub")).unwrap_err().to_string().contains("exists; remove it"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
