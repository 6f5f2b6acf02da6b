//! Where `difi dataset convert` reads images from, as EDM's `dataset_tool.py`
//! reads them: an image folder, a dataset archive, MNIST-format idx files,
//! CIFAR-10's python tarball. Each source yields images in EDM's order with
//! their labels, lazily.

pub mod cifar10;
pub mod folder;
pub mod mnist;

use std::path::Path;

use difi_core::error::{Error, Result};

use crate::pixels::Pixels;

/// One source image and its class, if the source is labelled.
pub struct SourceImage {
    pub pixels: Pixels,
    pub label: Option<i64>,
}

/// A source: how many images it holds and an iterator over them.
pub struct Source {
    pub count: usize,
    pub images: Box<dyn Iterator<Item = Result<SourceImage>>>,
}

/// Opens `path` as EDM's tool does: a directory is an image folder; a file
/// named `cifar-10-python.tar.gz` is CIFAR-10; `*-images-idx3-ubyte.gz` is
/// MNIST-format; a `.zip` is a dataset archive.
pub fn open(path: &Path, max_images: Option<usize>) -> Result<Source> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if path.is_dir() {
        return folder::open(path, max_images);
    }
    if !path.is_file() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such source")));
    }
    if name == "cifar-10-python.tar.gz" {
        cifar10::open(path, max_images)
    } else if name.ends_with("-images-idx3-ubyte.gz") {
        mnist::open(path, max_images)
    } else if name.ends_with(".zip") {
        folder::open_archive(path, max_images)
    } else {
        Err(Error::checkpoint(
            path,
            "unknown source: give an image folder, a .zip dataset, cifar-10-python.tar.gz or *-images-idx3-ubyte.gz",
        ))
    }
}

fn limit(count: usize, max_images: Option<usize>) -> usize {
    max_images.map_or(count, |m| m.min(count))
}
