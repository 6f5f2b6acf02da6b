//! The bounds every reader in this crate enforces on files from strangers,
//! checked against headers before anything is allocated or decoded, so a
//! small hostile file can never ask for gigabytes or hours. They are far
//! above what real datasets need (ImageNet: 1.3 million images, 1,000
//! classes; EDM's largest datasets: 512×512). `docs/security.md`
//! lists them with the tests that cover each.

/// Largest width or height of an image, in pixels.
pub const MAX_SIDE: usize = 8192;

/// Largest number of pixels in an image (32 Mi: a 5792² square, a
/// 6000×4000 photo); decoded RGB it is 96 MiB.
pub const MAX_PIXELS: usize = 1 << 25;

/// Largest file read whole: an image or a `dataset.json` (an uncompressed
/// PNG of [`MAX_PIXELS`] RGB pixels is about 97 MiB; `dataset.json` for a
/// million images about 40 MB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Largest number of files in a dataset archive or below a source folder.
pub const MAX_FILES: usize = 5_000_000;

/// Deepest folder nesting walked below a dataset or source folder.
pub const MAX_FOLDER_DEPTH: usize = 32;

/// Labels are class indices in `0..MAX_CLASSES`.
pub const MAX_CLASSES: i64 = 1_000_000;

/// Largest pixel data of an idx (MNIST-format) image file, after inflating.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Largest CIFAR-10 tarball after inflating (the real one is 178 MB) and
/// largest batch member in it (the real ones are 31 MB).
pub const MAX_CIFAR_TAR_BYTES: u64 = 1 << 30;
pub const MAX_CIFAR_BATCH_BYTES: u64 = 64 << 20;

/// `Ok` when a `width × height` image is within [`MAX_SIDE`] and
/// [`MAX_PIXELS`], else why not.
pub fn check_image_size(width: usize, height: usize) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("{width}x{height} pixels; an image needs some"));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("{width}x{height} pixels, more than the {MAX_SIDE} per side difi reads"));
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(format!("{width}x{height} pixels, more than the {MAX_PIXELS} in all difi reads"));
    }
    Ok(())
}

/// `Ok` when `label` is a class index in `0..MAX_CLASSES`, else why not.
pub fn check_label(label: i64) -> Result<i64, String> {
    if (0..MAX_CLASSES).contains(&label) {
        Ok(label)
    } else {
        Err(format!("`{label}`, not a class index in 0..{MAX_CLASSES}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_bounds_are_refused() {
        assert!(check_image_size(4096, 4096).is_ok());
        assert!(check_image_size(8192, 10).is_ok());
        assert!(check_image_size(8193, 1).unwrap_err().contains("more than the 8192 per side"));
        assert!(check_image_size(8192, 8192).unwrap_err().contains("more than the 33554432 in all"));
        assert!(check_image_size(1 << 30, 1 << 30).is_err());
        assert!(check_image_size(0, 8).is_err());
    }

    #[test]
    fn labels_beyond_the_bounds_are_refused() {
        assert_eq!(check_label(0), Ok(0));
        assert_eq!(check_label(MAX_CLASSES - 1), Ok(MAX_CLASSES - 1));
        assert!(check_label(MAX_CLASSES).is_err());
        assert!(check_label(-1).is_err());
        assert!(check_label(i64::MAX).unwrap_err().contains("9223372036854775807"));
    }
}
