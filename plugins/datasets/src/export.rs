//! `difi dataset export`: a dataset as `.npy` arrays for other tools, uint8
//! images `[N, C, H, W]` and int64 labels `[N]`, streamed image by image.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result, TorchContext};

use crate::archive::ImageArchive;
use crate::destination::{refuse_existing, refuse_same_file};

/// Writes the `.npy` version 1.0 header of a C-ordered array.
fn npy_header(out: &mut impl Write, descr: &str, shape: &[usize]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())
}

/// A file being written under a hidden sibling name, removed unless it is
/// moved into place.
struct Partial {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl Partial {
    fn create(dest: &Path) -> Result<Self> {
        let name = dest.file_name().ok_or_else(|| {
            Error::io(dest, std::io::Error::new(std::io::ErrorKind::InvalidInput, "needs a file name"))
        })?;
        let path = dest.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        // A leftover of an interrupted export; ours to replace.
        let _ = std::fs::remove_file(&path);
        let file = File::create_new(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Partial { path, out: Some(BufWriter::new(file)) })
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes).map_err(|e| Error::io(&self.path, e)),
            None => Err(Error::io(&self.path, std::io::Error::other("already closed"))),
        }
    }

    fn header(&mut self, descr: &str, shape: &[usize]) -> Result<()> {
        let mut bytes = Vec::new();
        npy_header(&mut bytes, descr, shape).map_err(|e| Error::io(&self.path, e))?;
        self.write_all(&bytes)
    }

    /// Flushes and closes the file; it stays under its hidden name.
    fn close(&mut self) -> Result<()> {
        if let Some(out) = self.out.take() {
            let file = out.into_inner().map_err(|e| Error::io(&self.path, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.out = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Streams every image into `images` (uint8 `[N, C, H, W]`) and, when asked,
/// the labels into `labels` (int64 `[N]`; refused for unlabelled datasets).
/// Existing files are refused, as is one path for both; both files are
/// written under hidden names and appear only once complete, so a failure
/// leaves nothing behind.
pub fn export(archive: &ImageArchive, images: &Path, labels: Option<&Path>) -> Result<()> {
    if labels.is_some() && archive.labels().is_none() {
        return Err(Error::checkpoint(archive.path(), "is unlabelled; there are no labels to export"));
    }
    refuse_existing(images)?;
    if let Some(labels) = labels {
        refuse_existing(labels)?;
        refuse_same_file(images, labels)?;
    }
    let [c, h, w] = archive.shape();
    let mut image_file = Partial::create(images)?;
    image_file.header("|u1", &[archive.len(), c, h, w])?;
    let progress = indicatif::ProgressBar::new(archive.len() as u64);
    let mut chw = Vec::new();
    for i in 0..archive.len() {
        let pixels = archive.pixels(i)?;
        // HWC → CHW
        chw.clear();
        chw.resize(pixels.data.len(), 0);
        for (p, px) in pixels.data.chunks(c).enumerate() {
            for (k, v) in px.iter().enumerate() {
                chw[k * h * w + p] = *v;
            }
        }
        image_file.write_all(&chw)?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    image_file.close()?;
    let label_file = match (labels, archive.labels()) {
        (Some(path), Some(values)) => {
            let mut file = Partial::create(path)?;
            file.header("<i8", &[values.len()])?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            file.write_all(&bytes)?;
            file.close()?;
            Some((file, path))
        }
        _ => None,
    };
    std::fs::rename(&image_file.path, images).map_err(|e| Error::io(images, e))?;
    if let Some((file, path)) = label_file
        && let Err(e) = std::fs::rename(&file.path, path)
    {
        let _ = std::fs::remove_file(images);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// The whole dataset in memory: uint8 images `[N, C, H, W]` and int64 labels
/// `[N]` (for small datasets; training loops use [`crate::loader`]).
pub fn to_tensors(archive: &ImageArchive) -> Result<(tch::Tensor, Option<tch::Tensor>)> {
    let [c, h, w] = archive.shape();
    let too_large = || Error::checkpoint(archive.path(), "is too large to hold in memory");
    let total = [c, h, w].iter().try_fold(archive.len(), |n, d| n.checked_mul(*d)).ok_or_else(too_large)?;
    let mut data: Vec<u8> = Vec::new();
    data.try_reserve_exact(total).map_err(|_| too_large())?;
    for i in 0..archive.len() {
        let pixels = archive.pixels(i)?;
        for k in 0..c {
            data.extend(pixels.data.iter().skip(k).step_by(c));
        }
    }
    let images = tch::Tensor::from_slice(&data)
        .f_reshape([archive.len() as i64, c as i64, h as i64, w as i64])
        .ctx("dataset images")?;
    let labels = archive.labels().map(tch::Tensor::from_slice);
    Ok((images, labels))
}
