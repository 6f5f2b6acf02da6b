//! Reading the EDM/StyleGAN dataset format: an uncompressed ZIP or a folder of
//! PNGs, plus `dataset.json` = `{"labels": [[name, int], …]}` or
//! `{"labels": null}`. Images are listed and sorted as EDM's
//! `ImageFolderDataset` does, read on demand, and checked on open: same size
//! and channels throughout, square, power-of-two, 8-bit grayscale or RGB,
//! labels for exactly the images present. Sizes, counts and labels are
//! checked against [`crate::limits`] before anything is allocated for them.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use zip::ZipArchive;

use crate::bounded_read::read_at_most;
use crate::limits::{MAX_FILE_BYTES, MAX_FILES};
use crate::metadata::parse_labels;
use crate::pixels::{Pixels, decode_png, is_power_of_two, png_header};
use crate::walk::files_below;

pub use crate::metadata::METADATA;

enum Storage {
    Zip(RefCell<ZipArchive<BufReader<File>>>, HashMap<String, usize>),
    Folder(PathBuf),
}

/// An opened dataset in the EDM format.
pub struct ImageArchive {
    path: PathBuf,
    storage: Storage,
    names: Vec<String>,
    labels: Option<Vec<i64>>,
    label_dim: i64,
    /// `[C, H, W]` of every image.
    shape: [usize; 3],
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::checkpoint(path, message)
}

impl ImageArchive {
    /// Opens a ZIP archive or folder, reads `dataset.json` and checks every
    /// image's header. Errors name the file and the problem.
    pub fn open(path: &Path) -> Result<Self> {
        let (storage, files) = if path.is_dir() {
            (Storage::Folder(path.to_path_buf()), list_folder(path)?)
        } else if path.is_file() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let mut archive = ZipArchive::new(BufReader::new(file))
                .map_err(|e| bad(path, format!("not a readable ZIP archive ({e}); truncated or corrupt?")))?;
            if archive.len() > MAX_FILES {
                return Err(bad(path, format!("holds {} entries; difi reads at most {MAX_FILES}", archive.len())));
            }
            let mut index = HashMap::new();
            let mut files = Vec::new();
            for i in 0..archive.len() {
                let entry = archive.by_index_raw(i).map_err(|e| bad(path, format!("entry {i}: {e}")))?;
                let name = entry.name().map_err(|e| bad(path, format!("entry {i}: {e}")))?.into_owned();
                if entry.is_dir() {
                    continue;
                }
                if entry.compression() != zip::CompressionMethod::Stored {
                    return Err(bad(
                        path,
                        format!(
                            "{name} is compressed ({}); dataset archives store entries uncompressed",
                            entry.compression()
                        ),
                    ));
                }
                index.insert(name.clone(), i);
                files.push(name);
            }
            (Storage::Zip(RefCell::new(archive), index), files)
        } else {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such dataset (a .zip or a folder)"),
            ));
        };
        let mut archive = ImageArchive {
            path: path.to_path_buf(),
            storage,
            names: Vec::new(),
            labels: None,
            label_dim: 0,
            shape: [0; 3],
        };
        let mut names: Vec<String> = files.iter().filter(|n| is_image_name(n)).cloned().collect();
        if let Some(other) = files.iter().find(|n| is_other_image(n)) {
            return Err(bad(
                path,
                format!(
                    "{other} is not a PNG; the format holds PNGs only (convert the source with `difi dataset convert`)"
                ),
            ));
        }
        names.sort();
        if names.is_empty() {
            return Err(bad(path, "holds no PNG images"));
        }
        archive.names = names;
        archive.check_images()?;
        archive.read_labels(files.iter().any(|n| n == METADATA))?;
        Ok(archive)
    }

    fn check_images(&mut self) -> Result<()> {
        let progress = if self.names.len() > 20_000 {
            indicatif::ProgressBar::new(self.names.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut first: Option<(usize, usize, usize, &str)> = None;
        for name in &self.names {
            let bytes = self.read_head(name, 64)?;
            let (w, h, c) = png_header(&bytes).map_err(|e| bad(&self.path, format!("{name}: {e}")))?;
            match first {
                None => {
                    if w != h {
                        return Err(bad(&self.path, format!("{name} is {w}x{h}; images must be square")));
                    }
                    if !is_power_of_two(w) {
                        return Err(bad(&self.path, format!("{name} is {w}x{h}; the size must be a power of two")));
                    }
                    first = Some((w, h, c, name));
                }
                Some((fw, fh, fc, fname)) => {
                    if (w, h, c) != (fw, fh, fc) {
                        return Err(bad(
                            &self.path,
                            format!(
                                "{name} is {w}x{h} with {c} channels, but {fname} is {fw}x{fh} with {fc}; all images must match"
                            ),
                        ));
                    }
                }
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        let (w, h, c, _) = first.ok_or_else(|| bad(&self.path, "holds no PNG images"))?;
        self.shape = [c, h, w];
        Ok(())
    }

    fn read_labels(&mut self, has_metadata: bool) -> Result<()> {
        if !has_metadata {
            return Ok(());
        }
        let bytes = self.read(METADATA)?;
        // Each name must be an image present and labelled once, checked as
        // the file is parsed: so no more entries than images are ever held.
        let present: HashSet<&str> = self.names.iter().map(String::as_str).collect();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut check = |name: &str| {
            let Some(known) = present.get(name) else {
                return Err(format!("labels {name}, which is not in the dataset"));
            };
            if !seen.insert(known) {
                return Err(format!("labels {name} twice"));
            }
            Ok(())
        };
        let Some(pairs) = parse_labels(&bytes, self.names.len(), &mut check).map_err(|e| bad(&self.path, e))? else {
            return Ok(());
        };
        let by_name: HashMap<&str, i64> = pairs.iter().map(|(name, label)| (name.as_str(), *label)).collect();
        let mut labels = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let label = by_name
                .get(name.as_str())
                .ok_or_else(|| bad(&self.path, format!("{METADATA} has no label for {name}")))?;
            labels.push(*label);
        }
        // Labels are below MAX_CLASSES, so this cannot overflow; checked all the same.
        self.label_dim = match labels.iter().max() {
            None => 0,
            Some(largest) => largest
                .checked_add(1)
                .ok_or_else(|| bad(&self.path, format!("{METADATA}: the label {largest} is too large")))?,
        };
        self.labels = Some(labels);
        Ok(())
    }

    /// Bytes of the file `name`; a file larger than
    /// [`MAX_FILE_BYTES`] is an error (whatever its header claims, no more is read).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        match &self.storage {
            Storage::Folder(root) => {
                let path = root.join(name);
                let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
                read_at_most(file, MAX_FILE_BYTES).map_err(|e| Error::io(&path, e))
            }
            Storage::Zip(archive, index) => {
                let i = *index.get(name).ok_or_else(|| bad(&self.path, format!("no entry {name}")))?;
                let mut archive = archive.borrow_mut();
                let entry = archive.by_index(i).map_err(|e| bad(&self.path, format!("{name}: {e}")))?;
                read_at_most(entry, MAX_FILE_BYTES)
                    .map_err(|e| bad(&self.path, format!("{name}: {e} (corrupt archive?)")))
            }
        }
    }

    /// The first `n` bytes of `name` (enough for a PNG header).
    fn read_head(&self, name: &str, n: usize) -> Result<Vec<u8>> {
        match &self.storage {
            Storage::Folder(root) => {
                let path = root.join(name);
                let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
                let mut bytes = Vec::with_capacity(n);
                file.by_ref().take(n as u64).read_to_end(&mut bytes).map_err(|e| Error::io(&path, e))?;
                Ok(bytes)
            }
            Storage::Zip(archive, index) => {
                let i = *index.get(name).ok_or_else(|| bad(&self.path, format!("no entry {name}")))?;
                let mut archive = archive.borrow_mut();
                let entry = archive.by_index(i).map_err(|e| bad(&self.path, format!("{name}: {e}")))?;
                let mut bytes = Vec::with_capacity(n);
                entry.take(n as u64).read_to_end(&mut bytes).map_err(|e| bad(&self.path, format!("{name}: {e}")))?;
                Ok(bytes)
            }
        }
    }

    /// Decodes image `index` (in sorted order).
    pub fn pixels(&self, index: usize) -> Result<Pixels> {
        let name = self
            .names
            .get(index)
            .ok_or_else(|| bad(&self.path, format!("no image {index} of {}", self.names.len())))?;
        let bytes = self.read(name)?;
        // The file may have changed since it was opened: its header, not the
        // one seen then, decides what decoding allocates.
        let (w, h, c) = png_header(&bytes).map_err(|e| bad(&self.path, format!("{name}: {e}")))?;
        if [c, h, w] != self.shape {
            return Err(bad(&self.path, format!("{name} does not match the dataset's shape {:?}", self.shape)));
        }
        let pixels = decode_png(&bytes).map_err(|e| bad(&self.path, format!("{name}: {e}")))?;
        if [pixels.channels, pixels.height, pixels.width] != self.shape {
            return Err(bad(&self.path, format!("{name} does not match the dataset's shape {:?}", self.shape)));
        }
        Ok(pixels)
    }

    /// Where the dataset is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Image names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Class indices in image order, if labelled.
    pub fn labels(&self) -> Option<&[i64]> {
        self.labels.as_deref()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no images (never: opening refuses that).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Number of classes (largest label + 1; 0 when unlabelled).
    pub fn label_dim(&self) -> i64 {
        self.label_dim
    }

    /// Whether it is a ZIP archive (else a folder).
    pub fn is_zip(&self) -> bool {
        matches!(self.storage, Storage::Zip(..))
    }
}

fn extension(name: &str) -> Option<String> {
    Path::new(name).extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn is_image_name(name: &str) -> bool {
    extension(name).as_deref() == Some("png")
}

fn is_other_image(name: &str) -> bool {
    matches!(extension(name).as_deref(), Some("jpg" | "jpeg" | "bmp" | "gif" | "webp" | "tif" | "tiff"))
}

/// Every file under `root`, relative and '/'-separated (see [`files_below`]
/// for links, depth and count).
fn list_folder(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for path in files_below(root)? {
        let relative = path.strip_prefix(root).map_err(|_| bad(root, format!("{} is outside", path.display())))?;
        let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        out.push(parts.join("/"));
    }
    Ok(out)
}
