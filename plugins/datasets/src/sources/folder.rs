//! Image folders and existing dataset archives as sources. Labels come from
//! `dataset.json` when it gives them, else from the top-level folder names
//! (sorted, numbered from 0) when there are several, as EDM's tool does.
//! Links to folders are refused, sizes and labels bounded (see [`crate::walk`]
//! and [`crate::limits`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};

use super::{Source, SourceImage, limit};
use crate::archive::{ImageArchive, METADATA};
use crate::bounded_read::read_at_most;
use crate::limits::{MAX_CLASSES, MAX_FILE_BYTES, MAX_FILES};
use crate::metadata::parse_labels;
use crate::pixels::decode_image;
use crate::walk::files_below;

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn extension(path: &Path) -> Option<String> {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Files under `root`, sorted as Python sorts `Path.rglob('*')` (by path components).
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = files_below(root)?;
    files.sort_by(|a, b| a.components().cmp(b.components()));
    Ok(files)
}

/// The whole of a file, at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_at_most(file, MAX_FILE_BYTES).map_err(|e| Error::io(path, e))
}

fn relative(root: &Path, path: &Path) -> String {
    let parts: Vec<String> = path
        .strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// `name → class` from a `dataset.json`, or none when it says `null`.
fn labels_from_metadata(bytes: &[u8], source: &Path) -> Result<HashMap<String, i64>> {
    let pairs = parse_labels(bytes, MAX_FILES, &mut |_| Ok(())).map_err(|e| Error::checkpoint(source, e))?;
    Ok(pairs.unwrap_or_default().into_iter().collect())
}

/// An image folder (EDM's `open_image_folder`).
pub fn open(root: &Path, max_images: Option<usize>) -> Result<Source> {
    let images: Vec<PathBuf> = walk(root)?
        .into_iter()
        .filter(|p| extension(p).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())))
        .collect();
    let names: Vec<String> = images.iter().map(|p| relative(root, p)).collect();
    let metadata = root.join(METADATA);
    let mut labels =
        if metadata.is_file() { labels_from_metadata(&read_file(&metadata)?, &metadata)? } else { HashMap::new() };
    if labels.is_empty() {
        let top = |name: &str| name.split_once('/').map_or(String::new(), |(t, _)| t.to_string());
        let folders: BTreeSet<String> = names.iter().map(|n| top(n)).collect();
        if folders.len() as u64 > MAX_CLASSES as u64 {
            return Err(Error::checkpoint(
                root,
                format!("has {} top-level folders; as classes that is more than {MAX_CLASSES}", folders.len()),
            ));
        }
        if folders.len() > 1 {
            let index: HashMap<String, i64> = folders.into_iter().zip(0..).collect();
            labels = names.iter().filter_map(|n| Some((n.clone(), *index.get(&top(n))?))).collect();
        }
    }
    let count = limit(images.len(), max_images);
    let iter = images.into_iter().zip(names).take(count).map(move |(path, name)| {
        let bytes = read_file(&path)?;
        let pixels =
            decode_image(&bytes, &extension(&path).unwrap_or_default()).map_err(|e| Error::checkpoint(&path, e))?;
        Ok(SourceImage { pixels, label: labels.get(&name).copied() })
    });
    Ok(Source { count, images: Box::new(iter) })
}

/// An existing dataset archive or folder in the EDM format (EDM's
/// `open_image_zip`): its images in order with their labels.
pub fn open_archive(path: &Path, max_images: Option<usize>) -> Result<Source> {
    let archive = ImageArchive::open(path)?;
    let count = limit(archive.len(), max_images);
    let iter = (0..count).map(move |i| {
        let pixels = archive.pixels(i)?;
        Ok(SourceImage { pixels, label: archive.labels().map(|l| l[i]) })
    });
    Ok(Source { count, images: Box::new(iter) })
}
