//! `difi dataset export`: a dataset as `.npy` arrays for other tools, uint8
//! images `[N, C, H, W]` and int64 labels `[N]`, streamed image by image.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use difi_core::error::{Error, Result};

use crate::archive::ImageArchive;

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

/// Streams every image into `images` (uint8 `[N, C, H, W]`) and, when asked,
/// the labels into `labels` (int64 `[N]`; refused for unlabelled datasets).
/// Each file is written through a temporary name.
pub fn export(archive: &ImageArchive, images: &Path, labels: Option<&Path>) -> Result<()> {
    if labels.is_some() && archive.labels().is_none() {
        return Err(Error::checkpoint(archive.path(), "is unlabelled; there are no labels to export"));
    }
    let [c, h, w] = archive.shape();
    let tmp = images.with_extension("npy.tmp");
    let write = |out: &mut BufWriter<File>| -> Result<()> {
        npy_header(out, "|u1", &[archive.len(), c, h, w]).map_err(|e| Error::io(&tmp, e))?;
        let progress = indicatif::ProgressBar::new(archive.len() as u64);
        for i in 0..archive.len() {
            let pixels = archive.pixels(i)?;
            // HWC → CHW
            let mut chw = vec![0u8; pixels.data.len()];
            for (p, px) in pixels.data.chunks(c).enumerate() {
                for (k, v) in px.iter().enumerate() {
                    chw[k * h * w + p] = *v;
                }
            }
            out.write_all(&chw).map_err(|e| Error::io(&tmp, e))?;
            progress.inc(1);
        }
        progress.finish_and_clear();
        out.flush().map_err(|e| Error::io(&tmp, e))
    };
    let mut out = BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    if let Err(err) = write(&mut out) {
        drop(out);
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    drop(out);
    std::fs::rename(&tmp, images).map_err(|e| Error::io(images, e))?;
    if let (Some(path), Some(values)) = (labels, archive.labels()) {
        let tmp = path.with_extension("npy.tmp");
        let mut out = BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
        npy_header(&mut out, "<i8", &[values.len()]).map_err(|e| Error::io(&tmp, e))?;
        for v in values {
            out.write_all(&v.to_le_bytes()).map_err(|e| Error::io(&tmp, e))?;
        }
        out.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(out);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// The whole dataset in memory: uint8 images `[N, C, H, W]` and int64 labels
/// `[N]` (for small datasets; training loops use [`crate::loader`]).
pub fn to_tensors(archive: &ImageArchive) -> Result<(tch::Tensor, Option<tch::Tensor>)> {
    let [c, h, w] = archive.shape();
    let mut data: Vec<u8> = Vec::with_capacity(archive.len() * c * h * w);
    for i in 0..archive.len() {
        let pixels = archive.pixels(i)?;
        for k in 0..c {
            data.extend(pixels.data.iter().skip(k).step_by(c));
        }
    }
    let images = tch::Tensor::from_slice(&data).reshape([archive.len() as i64, c as i64, h as i64, w as i64]);
    let labels = archive.labels().map(tch::Tensor::from_slice);
    Ok((images, labels))
}
