//! Image folders and existing dataset archives as sources. Labels come from
//! `dataset.json` when it gives them, else from the top-level folder names
//! (sorted, numbered from 0) when there are several, as EDM's tool does.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};

use super::{Source, SourceImage, limit};
use crate::archive::{ImageArchive, METADATA};
use crate::pixels::decode_image;

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn extension(path: &Path) -> Option<String> {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Files under `root`, sorted as Python sorts `Path.rglob('*')` (by path components).
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort_by(|a, b| a.components().cmp(b.components()));
    Ok(files)
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

/// `name → class` from a `dataset.json`, or none when it is absent or says `null`.
fn labels_from_metadata(bytes: &[u8], source: &Path) -> Result<HashMap<String, i64>> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::checkpoint(source, format!("{METADATA} is not JSON: {e}")))?;
    let mut labels = HashMap::new();
    if let Some(entries) = json.get("labels").and_then(|l| l.as_array()) {
        for entry in entries {
            let pair = entry.as_array().filter(|p| p.len() == 2);
            let (Some(name), Some(label)) = (pair.and_then(|p| p[0].as_str()), pair.and_then(|p| p[1].as_i64())) else {
                return Err(Error::checkpoint(source, format!("{METADATA}: `{entry}` is not a [name, class] pair")));
            };
            if label < 0 {
                return Err(Error::checkpoint(source, format!("{METADATA}: the label of {name} is negative")));
            }
            labels.insert(name.to_string(), label);
        }
    }
    Ok(labels)
}

/// An image folder (EDM's `open_image_folder`).
pub fn open(root: &Path, max_images: Option<usize>) -> Result<Source> {
    let images: Vec<PathBuf> = walk(root)?
        .into_iter()
        .filter(|p| extension(p).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())))
        .collect();
    let names: Vec<String> = images.iter().map(|p| relative(root, p)).collect();
    let metadata = root.join(METADATA);
    let mut labels = if metadata.is_file() {
        labels_from_metadata(&std::fs::read(&metadata).map_err(|e| Error::io(&metadata, e))?, &metadata)?
    } else {
        HashMap::new()
    };
    if labels.is_empty() {
        let top = |name: &str| name.split_once('/').map_or(String::new(), |(t, _)| t.to_string());
        let folders: BTreeSet<String> = names.iter().map(|n| top(n)).collect();
        if folders.len() > 1 {
            let index: HashMap<&String, i64> = folders.iter().enumerate().map(|(i, f)| (f, i as i64)).collect();
            labels = names.iter().map(|n| (n.clone(), index[&top(n)])).collect();
        }
    }
    let count = limit(images.len(), max_images);
    let iter = images.into_iter().zip(names).take(count).map(move |(path, name)| {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
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
