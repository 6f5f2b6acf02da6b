//! Images as difi exchanges them: float `[N, C, H, W]` in [−1, 1] inside,
//! uint8 PNG (grayscale or RGB) outside, converted as EDM's `generate.py`
//! does (`x · 127.5 + 128`, clipped).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use difi_core::error::{Error, Result, TorchContext};

/// Float images `[N, C, H, W]` in [−1, 1] → uint8 `[N, C, H, W]` on the CPU.
pub fn to_uint8(images: &Tensor) -> Result<Tensor> {
    (images.f_to_kind(Kind::Float).ctx("images")? * 127.5 + 128.0)
        .f_clamp(0.0, 255.0)
        .ctx("images")?
        .f_to_kind(Kind::Uint8)
        .ctx("images")?
        .f_to_device(Device::Cpu)
        .ctx("images")
}

/// Writes one uint8 image `[C, H, W]` (C = 1 or 3) as PNG.
pub fn write_png(path: &Path, image: &Tensor) -> Result<()> {
    let size = image.size();
    let (channels, height, width) = match size[..] {
        [c, h, w] if c == 1 || c == 3 => (c, h, w),
        _ => {
            return Err(Error::Shape {
                what: "PNG image [C, H, W] with 1 or 3 channels".into(),
                expected: vec![3, -1, -1],
                actual: size,
            });
        }
    };
    let hwc = image.f_permute([1, 2, 0]).ctx("png")?.f_contiguous().ctx("png")?;
    let count = (channels * height * width) as usize;
    let mut pixels = vec![0u8; count];
    hwc.f_copy_data_u8(&mut pixels, count).ctx("png")?;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(if channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    writer.write_image_data(&pixels).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    writer.finish().map_err(|e| Error::io(path, std::io::Error::other(e)))
}

/// Tiles uint8 images `[N, C, H, W]` into one `[C, rows·H, cols·W]` grid,
/// `cols = ⌈√N⌉`, empty cells black.
pub fn grid(images: &Tensor) -> Result<Tensor> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(Error::Shape { what: "images [N, C, H, W]".into(), expected: vec![-1, -1, -1, -1], actual: size });
    };
    let cols = (n as f64).sqrt().ceil() as i64;
    let rows = (n + cols - 1) / cols;
    let padding = Tensor::f_zeros([rows * cols - n, c, h, w], (Kind::Uint8, images.device())).ctx("grid")?;
    Tensor::f_cat(&[images, &padding], 0)
        .ctx("grid")?
        .f_reshape([rows, cols, c, h, w])
        .ctx("grid")?
        .f_permute([2, 0, 3, 1, 4])
        .ctx("grid")?
        .f_reshape([c, rows * h, cols * w])
        .ctx("grid")
}
