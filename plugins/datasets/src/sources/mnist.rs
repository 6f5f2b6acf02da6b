//! MNIST-format idx files (`*-images-idx3-ubyte.gz` and the matching
//! `*-labels-idx1-ubyte.gz`), as MNIST and Fashion-MNIST ship them. Images
//! are padded with 2 zero pixels on every side (28×28 → 32×32), as EDM's tool does.

use std::io::Read;
use std::path::Path;

use difi_core::error::{Error, Result};
use flate2::read::GzDecoder;

use super::{Source, SourceImage, limit};
use crate::pixels::Pixels;

const PAD: usize = 2;

fn read_gz(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a readable .gz ({e})")))?;
    Ok(bytes)
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Opens an idx image file and its label file.
pub fn open(images_path: &Path, max_images: Option<usize>) -> Result<Source> {
    let name = images_path.file_name().expect("a file").to_string_lossy();
    let labels_path = images_path.with_file_name(name.replace("-images-idx3-ubyte.gz", "-labels-idx1-ubyte.gz"));
    let images = read_gz(images_path)?;
    let labels = read_gz(&labels_path)?;
    if images.len() < 16 || be32(&images, 0) != 2051 {
        return Err(Error::checkpoint(images_path, "not an idx3 image file (magic 2051)"));
    }
    if labels.len() < 8 || be32(&labels, 0) != 2049 {
        return Err(Error::checkpoint(&labels_path, "not an idx1 label file (magic 2049)"));
    }
    let (count, rows, cols) = (be32(&images, 4) as usize, be32(&images, 8) as usize, be32(&images, 12) as usize);
    if images.len() != 16 + count * rows * cols {
        return Err(Error::checkpoint(
            images_path,
            format!("holds {} bytes of pixels, its header announces {count}×{rows}×{cols}", images.len() - 16),
        ));
    }
    if be32(&labels, 4) as usize != count || labels.len() != 8 + count {
        return Err(Error::checkpoint(&labels_path, format!("does not hold {count} labels")));
    }
    if let Some((i, l)) = labels[8..].iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(Error::checkpoint(&labels_path, format!("label {l} of image {i} is out of range 0–9")));
    }
    let count_out = limit(count, max_images);
    let (height, width) = (rows + 2 * PAD, cols + 2 * PAD);
    let iter = (0..count_out).map(move |i| {
        let mut data = vec![0u8; height * width];
        let source = &images[16 + i * rows * cols..16 + (i + 1) * rows * cols];
        for r in 0..rows {
            data[(r + PAD) * width + PAD..(r + PAD) * width + PAD + cols]
                .copy_from_slice(&source[r * cols..(r + 1) * cols]);
        }
        Ok(SourceImage { pixels: Pixels { width, height, channels: 1, data }, label: Some(labels[8 + i] as i64) })
    });
    Ok(Source { count: count_out, images: Box::new(iter) })
}
