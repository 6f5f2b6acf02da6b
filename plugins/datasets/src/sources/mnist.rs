//! MNIST-format idx files (`*-images-idx3-ubyte.gz` and the matching
//! `*-labels-idx1-ubyte.gz`), as MNIST and Fashion-MNIST ship them. Images
//! are padded with 2 zero pixels on every side (28×28 → 32×32), as EDM's tool does.

use std::io::Read;
use std::path::Path;

use difi_core::error::{Error, Result};
use flate2::read::GzDecoder;

use super::{Source, SourceImage, limit};
use crate::bounded_read::read_at_most;
use crate::limits::{MAX_IDX_BYTES, check_image_size};
use crate::pixels::Pixels;

const PAD: usize = 2;
const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

/// An idx file: its header read and checked first, then its data inflated
/// with the size the header announces as a bound.
struct Idx {
    path: std::path::PathBuf,
    stream: GzDecoder<std::fs::File>,
}

impl Idx {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Idx { path: path.to_path_buf(), stream: GzDecoder::new(file) })
    }

    /// The next `N` big-endian u32 header fields.
    fn header<const N: usize>(&mut self, what: &str) -> Result<[u32; N]> {
        let mut fields = [0u32; N];
        for field in &mut fields {
            let mut bytes = [0u8; 4];
            self.stream.read_exact(&mut bytes).map_err(|e| self.bad(format!("not a readable {what} ({e})")))?;
            *field = u32::from_be_bytes(bytes);
        }
        Ok(fields)
    }

    /// The rest of the file, which must be exactly `expected` bytes; at most
    /// `expected + 1` are inflated to find out.
    fn data(self, expected: u64, announced: &str) -> Result<Vec<u8>> {
        let Idx { path, stream } = self;
        let data = read_at_most(stream, expected).map_err(|e| {
            Error::checkpoint(&path, format!("holds more data than its header announces ({announced}): {e}"))
        })?;
        if data.len() as u64 != expected {
            return Err(Error::checkpoint(
                &path,
                format!("holds {} bytes of data, its header announces {announced}", data.len()),
            ));
        }
        Ok(data)
    }

    fn bad(&self, message: String) -> Error {
        Error::checkpoint(&self.path, message)
    }
}

/// Opens an idx image file and its label file.
pub fn open(images_path: &Path, max_images: Option<usize>) -> Result<Source> {
    let name =
        images_path.file_name().ok_or_else(|| Error::checkpoint(images_path, "not a file name"))?.to_string_lossy();
    let labels_path = images_path.with_file_name(name.replace("-images-idx3-ubyte.gz", "-labels-idx1-ubyte.gz"));
    let mut image_file = Idx::open(images_path)?;
    let mut label_file = Idx::open(&labels_path)?;
    let [magic, count, rows, cols] = image_file.header::<4>("idx3 image file")?;
    if magic != IMAGES_MAGIC {
        return Err(image_file.bad(format!("not an idx3 image file (magic {IMAGES_MAGIC})")));
    }
    let [magic, label_count] = label_file.header::<2>("idx1 label file")?;
    if magic != LABELS_MAGIC {
        return Err(label_file.bad(format!("not an idx1 label file (magic {LABELS_MAGIC})")));
    }
    let (count, rows, cols) = (count as usize, rows as usize, cols as usize);
    let announced = format!("{count}×{rows}×{cols}");
    // Padding must keep the images within the limits too.
    check_image_size(cols.saturating_add(2 * PAD), rows.saturating_add(2 * PAD))
        .map_err(|e| image_file.bad(format!("its header announces {announced}: images of {e}")))?;
    let pixel_bytes = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(count))
        .map(|n| n as u64)
        .filter(|n| *n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            image_file
                .bad(format!("its header announces {announced} pixels, more than the {MAX_IDX_BYTES} bytes difi reads"))
        })?;
    if label_count as usize != count {
        return Err(label_file.bad(format!("holds {label_count} labels for {count} images")));
    }
    let images = image_file.data(pixel_bytes, &announced)?;
    let labels = label_file.data(count as u64, &format!("{count} labels"))?;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(Error::checkpoint(&labels_path, format!("label {l} of image {i} is out of range 0–9")));
    }
    let count_out = limit(count, max_images);
    let (height, width) = (rows + 2 * PAD, cols + 2 * PAD);
    let iter = (0..count_out).map(move |i| {
        let mut data = vec![0u8; height * width];
        let source = &images[i * rows * cols..(i + 1) * rows * cols];
        for r in 0..rows {
            data[(r + PAD) * width + PAD..(r + PAD) * width + PAD + cols]
                .copy_from_slice(&source[r * cols..(r + 1) * cols]);
        }
        Ok(SourceImage { pixels: Pixels { width, height, channels: 1, data }, label: Some(labels[i] as i64) })
    });
    Ok(Source { count: count_out, images: Box::new(iter) })
}
