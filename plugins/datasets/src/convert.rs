//! `difi dataset convert`: a source to the EDM/StyleGAN format, as EDM's
//! `dataset_tool.py` writes it. Image `i` (counting skipped ones) is stored as
//! `{i/1000:05}/img{i:08}.png` — EDM's `f'{idx:08d}'[:5]` directory — and
//! `dataset.json` holds `[name, label]` for every image, or `null` when any
//! image lacks a label. The first image fixes size and channels; it must be
//! square, a power of two, and grayscale or RGB; all others must match.

use std::path::Path;

use difi_core::error::{Error, Result};

use crate::limits::check_image_size;
use crate::pixels::{encode_png, is_power_of_two};
use crate::sources;
use crate::transform::{Transform, apply};
use crate::writer::DatasetWriter;

/// Options of a conversion.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Convert at most this many source images.
    pub max_images: Option<usize>,
    /// Output `(width, height)`.
    pub resolution: Option<(usize, usize)>,
    /// Crop before resizing.
    pub transform: Option<Transform>,
}

/// What a conversion wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertSummary {
    pub images: usize,
    pub skipped: usize,
    pub resolution: usize,
    pub channels: usize,
    pub labelled: bool,
}

/// Converts `source` into a new dataset at `dest` (`.zip` or a folder).
/// The destination appears only once complete.
pub fn convert(source: &Path, dest: &Path, options: &ConvertOptions) -> Result<ConvertSummary> {
    if let Some((width, height)) = options.resolution {
        check_image_size(width, height).map_err(|e| Error::config("resolution", e))?;
    }
    let source_images = sources::open(source, options.max_images)?;
    let mut writer = DatasetWriter::create(dest)?;
    let progress = indicatif::ProgressBar::new(source_images.count as u64);
    let mut labels: Vec<Option<(String, i64)>> = Vec::new();
    let mut attributes: Option<(usize, usize, usize)> = None;
    let mut skipped = 0;
    for (index, image) in source_images.images.enumerate() {
        let image = image?;
        progress.inc(1);
        let Some(pixels) = apply(&image.pixels, options.transform, options.resolution) else {
            skipped += 1;
            continue;
        };
        let digits = format!("{index:08}");
        let name = format!("{}/img{digits}.png", &digits[..5]);
        let current = (pixels.width, pixels.height, pixels.channels);
        match attributes {
            None => {
                if pixels.width != pixels.height {
                    return Err(Error::checkpoint(
                        source,
                        format!(
                            "image {index} is {}x{} after scaling and cropping; images must be square (use --resolution or --transform)",
                            pixels.width, pixels.height
                        ),
                    ));
                }
                if !is_power_of_two(pixels.width) {
                    return Err(Error::checkpoint(
                        source,
                        format!(
                            "image {index} is {0}x{0}; the size must be a power of two (use --resolution)",
                            pixels.width
                        ),
                    ));
                }
                attributes = Some(current);
            }
            Some(first) if first != current => {
                return Err(Error::checkpoint(
                    source,
                    format!(
                        "image {index} is {}x{} with {} channels, the first was {}x{} with {}; all images must match",
                        current.0, current.1, current.2, first.0, first.1, first.2
                    ),
                ));
            }
            Some(_) => {}
        }
        let bytes = encode_png(&pixels).map_err(|e| Error::checkpoint(dest, format!("{name}: {e}")))?;
        writer.add(&name, &bytes)?;
        labels.push(image.label.map(|l| (name, l)));
    }
    progress.finish_and_clear();
    let (resolution, _, channels) = attributes.ok_or_else(|| Error::checkpoint(source, "no images to convert"))?;
    let written = labels.len();
    let labelled = labels.iter().all(Option::is_some);
    let metadata = if labelled {
        let pairs: Vec<serde_json::Value> =
            labels.into_iter().flatten().map(|(name, label)| serde_json::json!([name, label])).collect();
        serde_json::json!({ "labels": pairs })
    } else {
        serde_json::json!({ "labels": null })
    };
    writer.add(crate::archive::METADATA, metadata.to_string().as_bytes())?;
    writer.finish()?;
    Ok(ConvertSummary { images: written, skipped, resolution, channels, labelled })
}
