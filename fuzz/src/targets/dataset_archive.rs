//! A dataset in the EDM format as `difi` opens it: a ZIP (written to a file,
//! opened, and its first images decoded), or, for input that is not a ZIP,
//! one PNG image through the dataset crate's decoder.

use difi_datasets::ImageArchive;
use difi_datasets::pixels::{decode_png, png_header};

use super::{Verdict, scratch_dir};

/// Images decoded per archive: enough to reach every code path.
const IMAGES_DECODED: usize = 8;

pub fn run(data: &[u8]) -> Verdict {
    if !data.starts_with(b"PK") {
        return Verdict::of_message(png_header(data)).and(Verdict::of_message(decode_png(data)));
    }
    let path = scratch_dir().join("dataset.zip");
    if let Err(err) = std::fs::write(&path, data) {
        return Verdict::Refused(format!("writing the input: {err}"));
    }
    Verdict::of(ImageArchive::open(&path).and_then(|archive| {
        for index in 0..archive.len().min(IMAGES_DECODED) {
            archive.pixels(index)?;
        }
        Ok(())
    }))
}
