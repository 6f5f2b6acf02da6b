//! Resizing and cropping during conversion, as EDM's tool defines them:
//! without a transform an image is scaled to the requested size (if it
//! differs); `center-crop` crops the largest centred square first;
//! `center-crop-wide` crops to the target aspect and letterboxes it into a
//! square canvas. Shrinking by a whole factor in both directions averages
//! each block of pixels (area resampling, exact up to rounding half up);
//! other resizes are Lanczos-3 (EDM uses PIL's LANCZOS, so resized pixels
//! can differ from EDM's by rounding; without resizing they are identical).

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};

use crate::pixels::Pixels;

/// A crop applied before resizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The centred square of side min(H, W).
    CenterCrop,
    /// The centred band of the target aspect, on a square black canvas.
    CenterCropWide,
}

impl std::str::FromStr for Transform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "center-crop" => Ok(Transform::CenterCrop),
            "center-crop-wide" => Ok(Transform::CenterCropWide),
            other => Err(format!("unknown transform `{other}` (center-crop or center-crop-wide)")),
        }
    }
}

fn crop(p: &Pixels, top: usize, left: usize, height: usize, width: usize) -> Pixels {
    let mut data = Vec::with_capacity(height * width * p.channels);
    for row in top..top + height {
        let start = (row * p.width + left) * p.channels;
        data.extend_from_slice(&p.data[start..start + width * p.channels]);
    }
    Pixels { width, height, channels: p.channels, data }
}

/// The mean of each `fx × fy` block, rounded half up.
fn area_downsample(p: &Pixels, fx: usize, fy: usize) -> Pixels {
    let (width, height, c) = (p.width / fx, p.height / fy, p.channels);
    let count = (fx * fy) as u32;
    let mut data = Vec::with_capacity(width * height * c);
    for y in 0..height {
        for x in 0..width {
            for channel in 0..c {
                let mut sum = 0u32;
                for dy in 0..fy {
                    for dx in 0..fx {
                        sum += p.data[((y * fy + dy) * p.width + x * fx + dx) * c + channel] as u32;
                    }
                }
                data.push(((sum + count / 2) / count) as u8);
            }
        }
    }
    Pixels { width, height, channels: c, data }
}

fn resize(p: &Pixels, width: usize, height: usize) -> Pixels {
    if p.width == width && p.height == height {
        return p.clone();
    }
    if width > 0 && height > 0 && p.width.is_multiple_of(width) && p.height.is_multiple_of(height) {
        return area_downsample(p, p.width / width, p.height / height);
    }
    let (w, h) = (width as u32, height as u32);
    let data = match p.channels {
        1 => {
            let image = GrayImage::from_raw(p.width as u32, p.height as u32, p.data.clone()).expect("sizes match");
            image::imageops::resize(&image, w, h, FilterType::Lanczos3).into_raw()
        }
        _ => {
            let image = RgbImage::from_raw(p.width as u32, p.height as u32, p.data.clone()).expect("sizes match");
            image::imageops::resize(&image, w, h, FilterType::Lanczos3).into_raw()
        }
    };
    Pixels { width, height, channels: p.channels, data }
}

/// Applies the optional crop and the optional target size `(width, height)`
/// (without one, crops keep their own size); `None` means the image is
/// skipped (too small for `center-crop-wide`).
pub fn apply(p: &Pixels, transform: Option<Transform>, size: Option<(usize, usize)>) -> Option<Pixels> {
    match transform {
        None => {
            let (width, height) = size.unwrap_or((p.width, p.height));
            Some(resize(p, width, height))
        }
        Some(Transform::CenterCrop) => {
            let side = p.width.min(p.height);
            let cropped = crop(p, (p.height - side) / 2, (p.width - side) / 2, side, side);
            let (width, height) = size.unwrap_or((side, side));
            Some(resize(&cropped, width, height))
        }
        Some(Transform::CenterCropWide) => {
            let (width, height) = size.unwrap_or((p.width, p.height));
            let band = ((width as f64) * p.height as f64 / p.width as f64).round() as usize;
            if p.width < width || band < height {
                return None;
            }
            let top = (p.height - band) / 2;
            let cropped = crop(p, top, 0, band, p.width);
            let resized = resize(&cropped, width, height);
            let mut canvas =
                Pixels { width, height: width, channels: p.channels, data: vec![0; width * width * p.channels] };
            let offset = (width - height) / 2 * width * p.channels;
            canvas.data[offset..offset + resized.data.len()].copy_from_slice(&resized.data);
            Some(canvas)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_crop_takes_the_middle_square() {
        let data: Vec<u8> = (0..4 * 6).map(|i| i as u8).collect();
        let p = Pixels { width: 6, height: 4, channels: 1, data };
        let out = apply(&p, Some(Transform::CenterCrop), None).unwrap();
        assert_eq!((out.width, out.height), (4, 4));
        assert_eq!(&out.data[..4], &[1, 2, 3, 4]);
    }

    #[test]
    fn whole_factor_shrinking_averages_blocks() {
        let p = Pixels { width: 4, height: 2, channels: 1, data: vec![0, 2, 10, 11, 4, 6, 10, 12] };
        let out = apply(&p, None, Some((2, 1))).unwrap();
        assert_eq!(out.data, [3, 11]);
    }

    #[test]
    fn no_transform_without_resize_is_the_identity() {
        let p = Pixels { width: 2, height: 2, channels: 3, data: (0..12).collect() };
        assert_eq!(apply(&p, None, None).unwrap(), p);
        assert_eq!(apply(&p, None, Some((2, 2))).unwrap(), p);
        assert_eq!(apply(&p, None, Some((4, 4))).unwrap().data.len(), 48);
    }
}
