//! 2× up- and downsampling through a separable FIR filter, applied per
//! channel (depthwise). EDM builds its filter as the normalised outer product
//! of `resample_filter` ([1, 1] in DDPM++, [1, 3, 3, 1] in NCSN++, the
//! filter StyleGAN2 uses too).
//!
//! StyleGAN2 resamples through the general `upfirdn2d` (upsample by zero
//! insertion, pad or crop, filter, downsample by dropping pixels), which
//! [`upfirdn2d`] implements with the semantics of StyleGAN2-ADA's reference
//! (CPU) op; [`upsample_2x`] is the same operation as [`upsample2d`] for the
//! even filters EDM uses (a test holds them equal).

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

/// Up- and downsampling factors, padding and gain of one [`upfirdn2d`] call.
#[derive(Clone, Copy, Debug)]
pub struct Upfirdn {
    pub up: i64,
    pub down: i64,
    /// `[x_before, x_after, y_before, y_after]`, after upsampling; negative crops.
    pub padding: [i64; 4],
    /// Multiplies the filter (the reference's `gain`: `up²` keeps the mean when upsampling).
    pub gain: f64,
}

/// The 2-D filter of a `resample_filter` buffer: `[k, k]` as the reference
/// stores filters of fewer than 8 taps, or the separable `[k]` of longer ones
/// (whose outer product is the same filter). Any leading unit dimensions
/// (EDM's `[1, 1, k, k]`) are dropped.
pub fn filter_2d(filter: &Tensor) -> Result<Tensor> {
    let size = filter.size();
    match size.as_slice() {
        [_] => filter.f_outer(filter).ctx("filter"),
        [.., kh, kw] => filter.f_reshape([*kh, *kw]).ctx("filter"),
        [] => Err(difi_core::error::Error::Shape { what: "FIR filter".into(), expected: vec![-1, -1], actual: size }),
    }
}

/// `upfirdn2d` of StyleGAN2-ADA (`torch_utils/ops/upfirdn2d.py`, its reference
/// implementation): `[N, C, H, W]` upsampled by inserting `up − 1` zeros after
/// every pixel, padded (or cropped) by `padding`, convolved per channel with
/// `filter` (`[kh, kw]`, or any shape [`filter_2d`] takes) times `gain`, and
/// downsampled by keeping every `down`-th pixel. Output
/// `[N, C, (H·up + py0 + py1 − kh) / down + 1, (W·up + px0 + px1 − kw) / down + 1]`.
pub fn upfirdn2d(x: &Tensor, filter: &Tensor, op: Upfirdn) -> Result<Tensor> {
    let context = "upfirdn2d";
    let [n, c, h, w] = x.size()[..] else {
        return Err(difi_core::error::Error::Shape {
            what: context.into(),
            expected: vec![-1, -1, -1, -1],
            actual: x.size(),
        });
    };
    let mut x = x.shallow_clone();
    if op.up > 1 {
        x = x
            .f_reshape([n, c, h, 1, w, 1])
            .ctx(context)?
            .f_constant_pad_nd([0, op.up - 1, 0, 0, 0, op.up - 1])
            .ctx(context)?
            .f_reshape([n, c, h * op.up, w * op.up])
            .ctx(context)?;
    }
    // constant_pad_nd crops where the padding is negative, as the reference's pad-then-slice does.
    let [px0, px1, py0, py1] = op.padding;
    x = x.f_constant_pad_nd([px0, px1, py0, py1]).ctx(context)?;
    // The reference convolves (flips the filter); conv2d correlates.
    let f = (filter_2d(filter)?.f_to_kind(x.kind()).ctx(context)?.f_to_device(x.device()).ctx(context)? * op.gain)
        .f_flip([0, 1])
        .ctx(context)?;
    let (kh, kw) = (f.size()[0], f.size()[1]);
    let weight = f.f_reshape([1, 1, kh, kw]).ctx(context)?.f_repeat([c, 1, 1, 1]).ctx(context)?;
    x = x.f_conv2d(&weight, None::<&Tensor>, 1, 0, 1, c).ctx(context)?;
    if op.down > 1 {
        x = x.f_slice(2, 0, None, op.down).ctx(context)?.f_slice(3, 0, None, op.down).ctx(context)?;
    }
    Ok(x)
}

/// `[N, C, H, W]` → `[N, C, 2H, 2W]` as the reference's `upsample2d(x, f)`:
/// [`upfirdn2d`] with `up = 2`, gain 4 and the padding that keeps the image
/// centred and its size exactly doubled.
pub fn upsample2d(x: &Tensor, filter: &Tensor) -> Result<Tensor> {
    let f = filter_2d(filter)?;
    let (kh, kw) = (f.size()[0], f.size()[1]);
    // Floor division, as the reference's `//` (a 1-tap filter pads −1 after).
    let padding = [(kw + 1) / 2, (kw - 2).div_euclid(2), (kh + 1) / 2, (kh - 2).div_euclid(2)];
    upfirdn2d(x, &f, Upfirdn { up: 2, down: 1, padding, gain: 4.0 })
}

/// `[N, C, H, W]` → `[N, C, H/2, W/2]` as the reference's `downsample2d(x, f)`:
/// [`upfirdn2d`] with `down = 2`, gain 1 and the padding that keeps the
/// image centred and its size exactly halved.
pub fn downsample2d(x: &Tensor, filter: &Tensor) -> Result<Tensor> {
    let f = filter_2d(filter)?;
    let (kh, kw) = (f.size()[0], f.size()[1]);
    let padding = [(kw - 1).div_euclid(2), (kw - 2).div_euclid(2), (kh - 1).div_euclid(2), (kh - 2).div_euclid(2)];
    upfirdn2d(x, &f, Upfirdn { up: 1, down: 2, padding, gain: 1.0 })
}

/// The 2-D FIR filter of `filter` with its size `[fh, fw]`, and the spatial
/// size `[kh, kw]` of `weight` `[O, I, kh, kw]`: what both resampling
/// convolutions derive their padding from.
fn filter_and_kernel(filter: &Tensor, weight: &Tensor, context: &str) -> Result<(Tensor, [i64; 2], [i64; 2])> {
    let f = filter_2d(filter)?;
    let (fh, fw) = (f.size()[0], f.size()[1]);
    let [_, _, kh, kw] = weight.size()[..] else {
        return Err(difi_core::error::Error::Shape {
            what: context.into(),
            expected: vec![-1, -1, -1, -1],
            actual: weight.size(),
        });
    };
    Ok((f, [fh, fw], [kh, kw]))
}

/// A correlation (`conv2d`) of `x` `[N, I, H, W]` by `weight` `[O, I, k, k]`
/// that halves the image, as the reference's `conv2d_resample(x, w, f,
/// down=2, padding)` of StyleGAN2's discriminator computes it: a 1×1 weight
/// downsamples first ([`upfirdn2d`] with `down = 2`) and then convolves,
/// a larger one filters the padded image and convolves with stride 2.
/// Returns `[N, O, (H + 2·padding − k) / 2 + 1, …]` (`H/2` for `padding = k/2`).
pub fn conv2d_down_2x(x: &Tensor, weight: &Tensor, filter: &Tensor, padding: i64) -> Result<Tensor> {
    let context = "conv2d down 2x";
    let (f, [fh, fw], [kh, kw]) = filter_and_kernel(filter, weight, context)?;
    let (px0, px1) = (padding + (fw - 1).div_euclid(2), padding + (fw - 2).div_euclid(2));
    let (py0, py1) = (padding + (fh - 1).div_euclid(2), padding + (fh - 2).div_euclid(2));
    if kh == 1 && kw == 1 {
        let y = upfirdn2d(x, &f, Upfirdn { up: 1, down: 2, padding: [px0, px1, py0, py1], gain: 1.0 })?;
        return y.f_conv2d(weight, None::<&Tensor>, 1, 0, 1, 1).ctx(context);
    }
    let y = upfirdn2d(x, &f, Upfirdn { up: 1, down: 1, padding: [px0, px1, py0, py1], gain: 1.0 })?;
    y.f_conv2d(weight, None::<&Tensor>, 2, 0, 1, 1).ctx(context)
}

/// A convolution of `x` `[N, I, H, W]` by `weight` `[O, I, k, k]` on the 2×
/// upsampled image, as the reference's `conv2d_resample(x, w, f, up=2,
/// padding, flip_weight=False)` of StyleGAN2's upsampling layers computes it:
/// a true convolution (the weight flipped relative to `conv2d`), as a transposed
/// convolution with stride 2, then the FIR `filter` with gain 4, the
/// padding (`padding` on each side, with respect to the upsampled image)
/// split between the two. Returns `[N, O, 2H + 2·padding − k + 1, …]`.
pub fn conv2d_up_2x(x: &Tensor, weight: &Tensor, filter: &Tensor, padding: i64) -> Result<Tensor> {
    let context = "conv2d up 2x";
    let (f, [fh, fw], [kh, kw]) = filter_and_kernel(filter, weight, context)?;
    // The padding the filter needs around the zero-inserted image, less what
    // the transposed convolution already adds (k − 1 before, k − 2 after).
    let (px0, px1) = (padding + (fw + 1) / 2 - (kw - 1), padding + (fw - 2).div_euclid(2) - (kw - 2));
    let (py0, py1) = (padding + (fh + 1) / 2 - (kh - 1), padding + (fh - 2).div_euclid(2) - (kh - 2));
    let pxt = (-px0).min(-px1).max(0);
    let pyt = (-py0).min(-py1).max(0);
    // conv_transpose2d takes [I, O, k, k] and, unlike conv2d, convolves,
    // which is what the reference's flip_weight=False asks for.
    let transposed = weight.f_transpose(0, 1).ctx(context)?;
    let y = x.f_conv_transpose2d(&transposed, None::<&Tensor>, 2, [pyt, pxt], 0, 1, 1).ctx(context)?;
    let padding = [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt];
    upfirdn2d(&y, &f, Upfirdn { up: 1, down: 1, padding, gain: 4.0 })
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

    #[test]
    fn upsample_2x_is_upfirdn2d_upsampling() {
        for taps in [&[1.0, 1.0][..], &[1.0, 3.0, 3.0, 1.0][..]] {
            let filter = fir_filter_2d(taps).unwrap();
            let x = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu));
            let edm = upsample_2x(&x, &filter, filter_padding(&filter)).unwrap();
            let reference = upsample2d(&x, &filter).unwrap();
            assert_eq!(edm.size(), reference.size());
            assert!((edm - reference).abs().max().double_value(&[]) < 1e-6, "{taps:?}");
        }
    }

    #[test]
    fn upfirdn2d_spreads_an_impulse_into_the_filter() {
        // One pixel at (1, 2) of a 4×4 image, upsampled 2× by [1, 3, 3, 1]:
        // zero insertion puts it at (2, 4); the padding of 2 before shifts it
        // to (4, 6) and the 4×4 filter (× gain 4) covers rows 1..5, cols 3..7.
        let filter = fir_filter_2d(&[1.0, 3.0, 3.0, 1.0]).unwrap();
        let x = Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu));
        let _ = x.narrow(2, 1, 1).narrow(3, 2, 1).fill_(1.0);
        let y = upsample2d(&x, &filter).unwrap();
        assert_eq!(y.size(), [1, 1, 8, 8]);
        let window = y.narrow(2, 1, 4).narrow(3, 3, 4).reshape([4, 4]);
        let expected = filter.reshape([4, 4]) * 4.0;
        assert!((&window - expected).abs().max().double_value(&[]) < 1e-6);
        assert!((y.sum(Kind::Float) - window.sum(Kind::Float)).abs().double_value(&[]) < 1e-6);
    }

    #[test]
    fn conv2d_down_2x_equals_a_convolution_then_downsampling() {
        let filter = fir_filter_2d(&[1.0, 3.0, 3.0, 1.0]).unwrap();
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        for (k, padding) in [(3, 1), (1, 0)] {
            let weight = Tensor::randn([5, 3, k, k], (Kind::Float, Device::Cpu));
            let fused = conv2d_down_2x(&x, &weight, &filter, padding).unwrap();
            // The reference's generic path: filter the padded image, convolve, keep every other pixel.
            let p = [padding + 1, padding + 1, padding + 1, padding + 1];
            let filtered = upfirdn2d(&x, &filter, Upfirdn { up: 1, down: 1, padding: p, gain: 1.0 }).unwrap();
            let plain = filtered.conv2d(&weight, None::<&Tensor>, 1, 0, 1, 1).slice(2, 0, None, 2).slice(3, 0, None, 2);
            assert_eq!(fused.size(), [2, 5, 4, 4]);
            assert!((fused - plain).abs().max().double_value(&[]) < 1e-4, "k = {k}");
        }
        let down = downsample2d(&Tensor::ones([1, 1, 8, 8], (Kind::Float, Device::Cpu)), &filter).unwrap();
        assert_eq!(down.size(), [1, 1, 4, 4]);
        assert!((down.narrow(2, 1, 2).narrow(3, 1, 2) - 1.0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn conv2d_up_2x_equals_a_convolution_of_the_upsampled_image() {
        let filter = fir_filter_2d(&[1.0, 3.0, 3.0, 1.0]).unwrap();
        let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        for (k, padding) in [(3, 1), (1, 0)] {
            let weight = Tensor::randn([5, 3, k, k], (Kind::Float, Device::Cpu));
            let fused = conv2d_up_2x(&x, &weight, &filter, padding).unwrap();
            // The reference's generic path: upsample (zero insertion, FIR with
            // the padding of the upsampled image), then a true convolution.
            let up = upfirdn2d(
                &x,
                &filter,
                Upfirdn { up: 2, down: 1, padding: [2 + padding, 1 + padding, 2 + padding, 1 + padding], gain: 4.0 },
            )
            .unwrap();
            let plain = up.conv2d(&weight.flip([2, 3]), None::<&Tensor>, 1, 0, 1, 1);
            assert_eq!(fused.size(), [2, 5, 8, 8]);
            assert!((fused - plain).abs().max().double_value(&[]) < 1e-4, "k = {k}");
        }
    }
}
