//! 2× up- and downsampling through a separable FIR filter, applied per
//! channel (depthwise). EDM builds its filter as the normalised outer product
//! of `resample_filter` ([1, 1] in DDPM++, [1, 3, 3, 1] in NCSN++, the
//! filter StyleGAN2 uses too).

use difi_core::error::{Result, TorchContext};
use tch::{Kind, Tensor};

/// The 2-D filter `f fᵀ / (Σf)²` of the 1-D taps `f`, shaped `[1, 1, k, k]`
/// (float32, CPU).
pub fn fir_filter_2d(taps: &[f64]) -> Result<Tensor> {
    let f = Tensor::from_slice(taps).f_to_kind(Kind::Float).ctx("filter")?;
    let sum = f.f_sum(Kind::Float).ctx("filter")?;
    let outer = f.f_outer(&f).ctx("filter")? / sum.f_square().ctx("filter")?;
    outer.f_reshape([1, 1, taps.len() as i64, taps.len() as i64]).ctx("filter")
}

/// Half the filter's support, the padding that keeps resampling centred.
pub fn filter_padding(filter: &Tensor) -> i64 {
    (filter.size()[3] - 1) / 2
}

/// `[N, C, H, W]` → `[N, C, 2H, 2W]`: a transposed depthwise convolution
/// with stride 2 by `filter` `[1, 1, k, k]` × 4 (the gain that keeps the mean),
/// padded by `padding`.
pub fn upsample_2x(x: &Tensor, filter: &Tensor, padding: i64) -> Result<Tensor> {
    let channels = x.size()[1];
    let weight = (filter.f_to_kind(x.kind()).ctx("upsample")? * 4.0).f_tile([channels, 1, 1, 1]).ctx("upsample")?;
    x.f_conv_transpose2d(&weight, None::<&Tensor>, 2, padding, 0, channels, 1).ctx("upsample")
}

/// `[N, C, H, W]` → `[N, C, H/2, W/2]`: a depthwise convolution with stride 2
/// by `filter` `[1, 1, k, k]`, padded by `padding`.
pub fn downsample_2x(x: &Tensor, filter: &Tensor, padding: i64) -> Result<Tensor> {
    let channels = x.size()[1];
    let weight = filter.f_to_kind(x.kind()).ctx("downsample")?.f_tile([channels, 1, 1, 1]).ctx("downsample")?;
    x.f_conv2d(&weight, None::<&Tensor>, 2, padding, 1, channels).ctx("downsample")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn resampling_keeps_a_constant_image_constant() {
        for taps in [&[1.0, 1.0][..], &[1.0, 3.0, 3.0, 1.0][..]] {
            let filter = fir_filter_2d(taps).unwrap();
            let pad = filter_padding(&filter);
            let x = Tensor::ones([1, 2, 16, 16], (Kind::Float, Device::Cpu)) * 3.0;
            let up = upsample_2x(&x, &filter, pad).unwrap();
            let down = downsample_2x(&x, &filter, pad).unwrap();
            assert_eq!(up.size(), [1, 2, 32, 32]);
            assert_eq!(down.size(), [1, 2, 8, 8]);
            // Away from the zero-padded border both stay at 3.
            let inner = |t: &Tensor, n: i64| t.narrow(2, 2, n - 4).narrow(3, 2, n - 4);
            assert!((inner(&up, 32) - 3.0).abs().max().double_value(&[]) < 1e-5);
            assert!((inner(&down, 8) - 3.0).abs().max().double_value(&[]) < 1e-5);
        }
    }
}
