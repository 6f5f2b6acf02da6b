//! Images as the dataset format holds them: 8-bit grayscale or RGB, stored
//! HWC in memory as decoders give them, exposed as uint8 `[C, H, W]` tensors.

use std::io::Cursor;

use difi_core::error::{Error, Result, TorchContext};
use tch::{Kind, Tensor};

use crate::limits::{MAX_PIXELS, MAX_SIDE, check_image_size};

/// A decoded 8-bit image, pixels row-major with interleaved channels (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    /// The image as a uint8 tensor `[C, H, W]`.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let hwc = Tensor::f_from_data_size(
            &self.data,
            &[self.height as i64, self.width as i64, self.channels as i64],
            Kind::Uint8,
        )
        .ctx("image")?;
        hwc.f_permute([2, 0, 1]).ctx("image")?.f_contiguous().ctx("image")
    }

    /// An image from a uint8 tensor `[C, H, W]`.
    pub fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let size = tensor.size();
        let [c, h, w] = size[..] else {
            return Err(Error::Shape { what: "image [C, H, W]".into(), expected: vec![-1, -1, -1], actual: size });
        };
        let hwc = tensor
            .f_to_kind(Kind::Uint8)
            .ctx("image")?
            .f_permute([1, 2, 0])
            .ctx("image")?
            .f_contiguous()
            .ctx("image")?;
        let mut data = vec![0u8; (c * h * w) as usize];
        let count = data.len();
        hwc.f_copy_data_u8(&mut data, count).ctx("image")?;
        Ok(Pixels { width: w as usize, height: h as usize, channels: c as usize, data })
    }
}

/// Width, height and channels of a PNG from its header, or why it is not an
/// 8-bit grayscale or RGB PNG within [`MAX_SIDE`](crate::limits::MAX_SIDE)
/// and [`MAX_PIXELS`](crate::limits::MAX_PIXELS).
pub fn png_header(bytes: &[u8]) -> std::result::Result<(usize, usize, usize), String> {
    let mut decoder = png_decoder(bytes);
    let info = decoder.read_header_info().map_err(|e| format!("not a readable PNG ({e})"))?;
    let (width, height) = (info.width as usize, info.height as usize);
    check_image_size(width, height)?;
    let channels = channels_of(info.color_type, info.bit_depth)?;
    Ok((width, height, channels))
}

/// A PNG decoder whose own buffers are bounded by what an image within the
/// limits needs.
fn png_decoder(bytes: &[u8]) -> png::Decoder<Cursor<&[u8]>> {
    png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: MAX_DECODED_BYTES })
}

/// The bytes of the largest decoded image allowed, with room for the
/// decoder's row buffers.
const MAX_DECODED_BYTES: usize = MAX_PIXELS * 4 + (1 << 20);

fn channels_of(color: png::ColorType, depth: png::BitDepth) -> std::result::Result<usize, String> {
    if depth != png::BitDepth::Eight {
        return Err(format!("{depth:?}-bit PNG; the format holds 8-bit grayscale or RGB"));
    }
    match color {
        png::ColorType::Grayscale => Ok(1),
        png::ColorType::Rgb => Ok(3),
        other => Err(format!("{other:?} PNG; the format holds 8-bit grayscale or RGB")),
    }
}

/// Decodes an 8-bit grayscale or RGB PNG, refusing one whose header
/// announces more than the limits before anything is allocated for pixels.
pub fn decode_png(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    let mut decoder = png_decoder(bytes);
    let header = decoder.read_header_info().map_err(|e| format!("not a readable PNG ({e})"))?;
    check_image_size(header.width as usize, header.height as usize)?;
    let mut reader = decoder.read_info().map_err(|e| format!("not a readable PNG ({e})"))?;
    let (color, depth) = (reader.info().color_type, reader.info().bit_depth);
    let channels = channels_of(color, depth)?;
    let size = reader.output_buffer_size().ok_or("PNG too large")?;
    let mut data = vec![0u8; size];
    let frame = reader.next_frame(&mut data).map_err(|e| format!("corrupt PNG data ({e})"))?;
    data.truncate(frame.buffer_size());
    Ok(Pixels { width: frame.width as usize, height: frame.height as usize, channels, data })
}

/// Decodes any image the converter accepts from a folder: 8-bit PNG exactly
/// as above, JPEG (and palette or alpha PNGs are refused, as EDM's tool does).
/// The size is checked from the header before decoding.
pub fn decode_image(bytes: &[u8], extension: &str) -> std::result::Result<Pixels, String> {
    if extension.eq_ignore_ascii_case("png") {
        return decode_png(bytes);
    }
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("not a readable image ({e})"))
    };
    let (width, height) = reader()?.into_dimensions().map_err(|e| format!("not a readable image ({e})"))?;
    check_image_size(width as usize, height as usize)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE as u32);
    limits.max_image_height = Some(MAX_SIDE as u32);
    limits.max_alloc = Some(MAX_DECODED_BYTES as u64);
    let mut decoder = reader()?;
    decoder.limits(limits);
    let image = decoder.decode().map_err(|e| format!("not a readable image ({e})"))?;
    match image {
        image::DynamicImage::ImageLuma8(gray) => Ok(Pixels {
            width: gray.width() as usize,
            height: gray.height() as usize,
            channels: 1,
            data: gray.into_raw(),
        }),
        image::DynamicImage::ImageRgb8(rgb) => {
            Ok(Pixels { width: rgb.width() as usize, height: rgb.height() as usize, channels: 3, data: rgb.into_raw() })
        }
        other => Err(format!("{:?} image; the format holds 8-bit grayscale or RGB", other.color())),
    }
}

/// Encodes as PNG without compression (EDM's tool writes `compress_level=0`).
pub fn encode_png(pixels: &Pixels) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(pixels.data.len() + 1024);
    {
        let mut encoder = png::Encoder::new(&mut out, pixels.width as u32, pixels.height as u32);
        encoder.set_color(if pixels.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::NoCompression);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&pixels.data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Whether `n` is a power of two.
pub fn is_power_of_two(n: usize) -> bool {
    n > 0 && n & (n - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_gray_and_rgb() {
        for channels in [1, 3] {
            let data: Vec<u8> = (0..4 * 4 * channels).map(|i| (i * 7) as u8).collect();
            let pixels = Pixels { width: 4, height: 4, channels, data };
            let bytes = encode_png(&pixels).unwrap();
            assert_eq!(png_header(&bytes).unwrap(), (4, 4, channels));
            assert_eq!(decode_png(&bytes).unwrap(), pixels);
            let tensor = pixels.to_tensor().unwrap();
            assert_eq!(tensor.size(), vec![channels as i64, 4, 4]);
            assert_eq!(Pixels::from_tensor(&tensor).unwrap(), pixels);
        }
        assert!(decode_png(b"not a png").unwrap_err().contains("not a readable PNG"));
    }

    /// A PNG signature and an IHDR chunk announcing `width × height` 8-bit
    /// grayscale, and no pixel data.
    fn header_only_png(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        let mut crc = flate2::Crc::new();
        crc.update(&ihdr);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc.sum().to_be_bytes());
        png
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        assert_eq!(png_header(&header_only_png(64, 64)).unwrap(), (64, 64, 1));
        for (width, height) in [(32768, 32768), (1 << 30, 1 << 30), (8192, 8192), (1, 9000)] {
            let png = header_only_png(width, height);
            let err = png_header(&png).unwrap_err();
            assert!(err.contains(&format!("{width}x{height} pixels, more than")), "{err}");
            assert_eq!(decode_png(&png).unwrap_err(), err);
        }
    }
}
