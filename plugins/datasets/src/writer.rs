//! Writing a dataset (uncompressed ZIP or folder) so that nothing half-written
//! is ever left at the destination: everything goes to a hidden sibling that
//! is renamed into place by [`DatasetWriter::finish`] and removed if the
//! writer is dropped before.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::destination::refuse_existing;

enum Target {
    Zip(Box<ZipWriter<BufWriter<File>>>),
    Folder,
}

/// A dataset being written.
pub struct DatasetWriter {
    dest: PathBuf,
    partial: PathBuf,
    target: Option<Target>,
}

impl DatasetWriter {
    /// Starts a ZIP archive (destination ends in `.zip`) or a folder. An
    /// existing destination is refused, so no earlier dataset is lost.
    pub fn create(dest: &Path) -> Result<Self> {
        refuse_existing(dest)?;
        let name = dest.file_name().ok_or_else(|| Error::config("dest", "the destination needs a file name"))?;
        let partial = dest.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if partial.is_dir() {
            std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        } else if partial.exists() {
            std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
        }
        let target = if dest.extension().is_some_and(|e| e == "zip") {
            let file = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
            Target::Zip(Box::new(ZipWriter::new(BufWriter::new(file))))
        } else {
            std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
            Target::Folder
        };
        Ok(DatasetWriter { dest: dest.to_path_buf(), partial, target: Some(target) })
    }

    /// Adds a file (`00000/img00000000.png`, `dataset.json`).
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.target.as_mut().expect("not finished") {
            Target::Zip(zip) => {
                let options = SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(bytes.len() as u64 >= u32::MAX as u64);
                zip.start_file(name, options).map_err(|e| Error::io(&self.partial, std::io::Error::other(e)))?;
                zip.write_all(bytes).map_err(|e| Error::io(&self.partial, e))
            }
            Target::Folder => {
                let path = self.partial.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))
            }
        }
    }

    /// Completes the dataset and moves it to its destination.
    pub fn finish(mut self) -> Result<()> {
        if let Some(Target::Zip(zip)) = self.target.take() {
            let mut file = zip.finish().map_err(|e| Error::io(&self.partial, std::io::Error::other(e)))?;
            file.flush().map_err(|e| Error::io(&self.partial, e))?;
        }
        std::fs::rename(&self.partial, &self.dest).map_err(|e| Error::io(&self.dest, e))
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        if self.target.is_some() {
            self.target = None;
            let _ = if self.partial.is_dir() {
                std::fs::remove_dir_all(&self.partial)
            } else {
                std::fs::remove_file(&self.partial)
            };
        }
    }
}
