//! StyleGAN2-ADA's layers (`training/networks.py`): the equalised-learning-rate
//! fully connected layer, the modulated convolution of the synthesis layers
//! and ToRGB, the resnet shortcut, the discriminator's plain (optionally
//! downsampling) convolution, and `bias_act`.

use difi_core::error::{Result, TorchContext};
use tch::nn::Path;
use tch::{Kind, Tensor};

use super::config::{Activation, NoiseMode};
use crate::nn::resample::{conv2d_down_2x, conv2d_up_2x, fir_filter_2d};
use crate::nn::{buffer, parameter};

/// Leaky ReLU's slope in the reference's `bias_act`.
const LRELU_SLOPE: f64 = 0.2;
/// Added under the square root of demodulation, as the reference.
const DEMODULATION_EPS: f64 = 1e-8;

/// `activation(x + b) · gain`, clamped to `±clamp`: the reference's
/// `bias_act`. `bias` `[C]` is added along dimension 1 of `x` `[N, C, …]`.
pub fn bias_act(
    x: &Tensor,
    bias: Option<&Tensor>,
    activation: Activation,
    gain: f64,
    clamp: Option<f64>,
) -> Result<Tensor> {
    let mut x = x.shallow_clone();
    if let Some(bias) = bias {
        let mut shape = vec![1i64; x.dim()];
        shape[1] = -1;
        x = x + bias.f_reshape(shape.as_slice()).ctx("bias")?;
    }
    x = match activation {
        Activation::Linear => x,
        Activation::Relu => x.f_relu().ctx("relu")?,
        // max(x, 0.2x) is leaky ReLU for a slope below 1 (tch's leaky_relu has a fixed slope).
        Activation::Lrelu => x.f_maximum(&(&x * LRELU_SLOPE)).ctx("lrelu")?,
        Activation::Tanh => x.f_tanh().ctx("tanh")?,
        Activation::Sigmoid => x.f_sigmoid().ctx("sigmoid")?,
        Activation::Elu => x.f_elu().ctx("elu")?,
        Activation::Selu => x.f_selu().ctx("selu")?,
        Activation::Softplus => x.f_softplus().ctx("softplus")?,
        Activation::Swish => x.f_sigmoid().ctx("swish")? * &x,
    };
    if gain != 1.0 {
        x = x * gain;
    }
    match clamp {
        Some(c) => x.f_clamp(-c, c).ctx("clamp"),
        None => Ok(x),
    }
}

/// `FullyConnectedLayer`: `activation(x Wᵀ · lr/√in + b · lr)` with the
/// activation's default gain; weights are stored divided by the learning-rate
/// multiplier, so Adam's steps on them are scaled by it.
pub struct FullyConnected {
    weight: Tensor,
    bias: Tensor,
    weight_gain: f64,
    bias_gain: f64,
    activation: Activation,
}

impl FullyConnected {
    /// `weight` `[out, in]` ~ N(0, 1/lr²), `bias` `[out]` = `bias_init`, as the reference initialises them.
    pub fn new(
        path: &Path,
        in_features: i64,
        out_features: i64,
        activation: Activation,
        lr_multiplier: f64,
        bias_init: f64,
    ) -> Result<Self> {
        let options = (Kind::Float, path.device());
        let weight = parameter(
            path,
            "weight",
            Tensor::f_randn([out_features, in_features], options).ctx("weight")? / lr_multiplier,
        )?;
        let bias = parameter(path, "bias", Tensor::f_full([out_features], bias_init, options).ctx("bias")?)?;
        Ok(FullyConnected {
            weight,
            bias,
            weight_gain: lr_multiplier / (in_features.max(1) as f64).sqrt(),
            bias_gain: lr_multiplier,
            activation,
        })
    }

    /// `[N, in]` → `[N, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = (&self.weight * self.weight_gain).f_transpose(0, 1).ctx("fc")?;
        let bias = &self.bias * self.bias_gain;
        let y = x.f_matmul(&weight).ctx("fc")?;
        bias_act(&y, Some(&bias), self.activation, self.activation.default_gain(), None)
    }
}

/// A registered `resample_filter` buffer of the reference's shape: `[k, k]`
/// for fewer than 8 taps, the separable `[k]` otherwise (`setup_filter`).
pub fn resample_filter(path: &Path, taps: &[f64]) -> Result<Tensor> {
    let filter = if taps.len() >= 8 {
        let f = Tensor::from_slice(taps).f_to_kind(Kind::Float).ctx("filter")?;
        let sum = f.f_sum(Kind::Float).ctx("filter")?;
        f / sum
    } else {
        let k = taps.len() as i64;
        fir_filter_2d(taps)?.f_reshape([k, k]).ctx("filter")?
    };
    buffer(path, "resample_filter", filter)
}

/// `x · s` convolved with `weight` (optionally on the 2× upsampled image),
/// then each output channel scaled by its demodulation coefficient: the
/// reference's `modulated_conv2d` in its non-fused form, the same values as
/// its fused (grouped) form. `x` `[N, I, H, W]`, `styles` `[N, I]`,
/// `weight` `[O, I, k, k]`; `up_filter` upsamples 2× through that filter.
fn modulated_conv2d(
    x: &Tensor,
    weight: &Tensor,
    styles: &Tensor,
    demodulate: bool,
    padding: i64,
    up_filter: Option<&Tensor>,
) -> Result<Tensor> {
    let context = "modulated conv";
    let (n, i) = (styles.size()[0], styles.size()[1]);
    let x = x * styles.f_reshape([n, i, 1, 1]).ctx(context)?;
    let y = match up_filter {
        Some(filter) => conv2d_up_2x(&x, weight, filter, padding)?,
        None => x.f_conv2d(weight, None::<&Tensor>, 1, padding, 1, 1).ctx(context)?,
    };
    if !demodulate {
        return Ok(y);
    }
    // Σ_{i,k} (w_oik s_i)² = Σ_i s_i² Σ_k w_oik²: the norm of each sample's
    // modulated weight without materialising it.
    let weight_energy =
        weight.f_square().ctx(context)?.f_sum_dim_intlist(&[2i64, 3][..], false, Kind::Float).ctx(context)?;
    let energy =
        styles.f_square().ctx(context)?.f_matmul(&weight_energy.f_transpose(0, 1).ctx(context)?).ctx(context)?;
    let dcoefs = (energy + DEMODULATION_EPS).f_rsqrt().ctx(context)?;
    let o = dcoefs.size()[1];
    Ok(y * dcoefs.f_reshape([n, o, 1, 1]).ctx(context)?)
}

/// How a [`SynthesisLayer`] is built.
pub struct LayerOptions {
    pub w_dim: i64,
    pub resolution: i64,
    pub kernel_size: i64,
    pub up: bool,
    pub use_noise: bool,
    pub activation: Activation,
    pub resample_filter: Vec<f64>,
    pub conv_clamp: Option<f64>,
}

/// `SynthesisLayer`: a modulated, demodulated 3×3 convolution (upsampling
/// 2× in a block's first layer), noise, bias, activation and clamp.
pub struct SynthesisLayer {
    affine: FullyConnected,
    weight: Tensor,
    bias: Tensor,
    /// `(noise_const [res, res], noise_strength [])`.
    noise: Option<(Tensor, Tensor)>,
    resample_filter: Tensor,
    up: bool,
    padding: i64,
    resolution: i64,
    activation: Activation,
    conv_clamp: Option<f64>,
}

impl SynthesisLayer {
    pub fn new(path: &Path, in_channels: i64, out_channels: i64, o: &LayerOptions) -> Result<Self> {
        let options = (Kind::Float, path.device());
        let resample_filter = resample_filter(path, &o.resample_filter)?;
        let affine = FullyConnected::new(&(path / "affine"), o.w_dim, in_channels, Activation::Linear, 1.0, 1.0)?;
        let k = o.kernel_size;
        let weight =
            parameter(path, "weight", Tensor::f_randn([out_channels, in_channels, k, k], options).ctx("weight")?)?;
        let noise = if o.use_noise {
            let constant =
                buffer(path, "noise_const", Tensor::f_randn([o.resolution, o.resolution], options).ctx("noise")?)?;
            let strength = parameter(path, "noise_strength", Tensor::f_zeros([0i64; 0], options).ctx("noise")?)?;
            Some((constant, strength))
        } else {
            None
        };
        let bias = parameter(path, "bias", Tensor::f_zeros([out_channels], options).ctx("bias")?)?;
        Ok(SynthesisLayer {
            affine,
            weight,
            bias,
            noise,
            resample_filter,
            up: o.up,
            padding: k / 2,
            resolution: o.resolution,
            activation: o.activation,
            conv_clamp: o.conv_clamp,
        })
    }

    /// `x` `[N, I, R/up, R/up]`, `w` `[N, w_dim]` → `[N, O, R, R]`; `gain`
    /// scales the activation and the clamp (the resnet blocks' √½).
    pub fn forward(&self, x: &Tensor, w: &Tensor, noise_mode: NoiseMode, gain: f64) -> Result<Tensor> {
        let styles = self.affine.forward(w)?;
        let filter = self.up.then_some(&self.resample_filter);
        let mut y = modulated_conv2d(x, &self.weight, &styles, true, self.padding, filter)?;
        if let Some((constant, strength)) = &self.noise {
            let r = self.resolution;
            match noise_mode {
                NoiseMode::Random => {
                    let n = x.size()[0];
                    let noise = difi_core::shard::batch_draw(n, 0, |n| {
                        Tensor::f_randn([n, 1, r, r], (Kind::Float, x.device())).ctx("noise")
                    })?;
                    y = y + noise * strength;
                }
                NoiseMode::Const => y = y + constant * strength,
                NoiseMode::None => {}
            }
        }
        let gain = self.activation.default_gain() * gain;
        let clamp = self.conv_clamp.map(|c| c * gain);
        bias_act(&y, Some(&self.bias), self.activation, gain, clamp)
    }
}

/// `ToRGBLayer`: a modulated 1×1 convolution without demodulation, bias, clamp.
pub struct ToRgb {
    affine: FullyConnected,
    weight: Tensor,
    bias: Tensor,
    weight_gain: f64,
    conv_clamp: Option<f64>,
}

impl ToRgb {
    pub fn new(path: &Path, in_channels: i64, img_channels: i64, w_dim: i64, conv_clamp: Option<f64>) -> Result<Self> {
        let options = (Kind::Float, path.device());
        let affine = FullyConnected::new(&(path / "affine"), w_dim, in_channels, Activation::Linear, 1.0, 1.0)?;
        let weight =
            parameter(path, "weight", Tensor::f_randn([img_channels, in_channels, 1, 1], options).ctx("weight")?)?;
        let bias = parameter(path, "bias", Tensor::f_zeros([img_channels], options).ctx("bias")?)?;
        Ok(ToRgb { affine, weight, bias, weight_gain: 1.0 / (in_channels as f64).sqrt(), conv_clamp })
    }

    /// `x` `[N, I, R, R]`, `w` `[N, w_dim]` → `[N, img_channels, R, R]`.
    pub fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let styles = self.affine.forward(w)? * self.weight_gain;
        let y = modulated_conv2d(x, &self.weight, &styles, false, 0, None)?;
        bias_act(&y, Some(&self.bias), Activation::Linear, 1.0, self.conv_clamp)
    }
}

/// The resnet blocks' shortcut (`skip`, a `Conv2dLayer`): a 1×1 convolution
/// without bias on the 2× upsampled input, scaled by √½.
pub struct ResnetSkip {
    weight: Tensor,
    resample_filter: Tensor,
    weight_gain: f64,
}

impl ResnetSkip {
    pub fn new(path: &Path, in_channels: i64, out_channels: i64, taps: &[f64]) -> Result<Self> {
        let resample_filter = resample_filter(path, taps)?;
        let options = (Kind::Float, path.device());
        let weight =
            parameter(path, "weight", Tensor::f_randn([out_channels, in_channels, 1, 1], options).ctx("weight")?)?;
        Ok(ResnetSkip { weight, resample_filter, weight_gain: 1.0 / (in_channels as f64).sqrt() })
    }

    /// `[N, I, R, R]` → `[N, O, 2R, 2R]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = &self.weight * self.weight_gain;
        let y = conv2d_up_2x(x, &weight, &self.resample_filter, 0)?;
        Ok(y * std::f64::consts::FRAC_1_SQRT_2)
    }
}

/// `Conv2dLayer` as the discriminator uses it: an equalised-learning-rate
/// convolution (weight `[O, I, k, k]` used × 1/√(I k²), correlation as
/// `conv2d`), optionally halving the image through the FIR filter, then
/// `bias_act` with the activation's default gain and clamp. Every layer
/// holds its `resample_filter` buffer, as the reference's.
pub struct Conv2dLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    resample_filter: Tensor,
    weight_gain: f64,
    down: bool,
    padding: i64,
    activation: Activation,
    conv_clamp: Option<f64>,
}

/// How a [`Conv2dLayer`] is built.
pub struct ConvOptions<'a> {
    pub kernel_size: i64,
    pub bias: bool,
    pub activation: Activation,
    /// Halve the image (the reference's `down=2`).
    pub down: bool,
    pub resample_filter: &'a [f64],
    pub conv_clamp: Option<f64>,
}

impl Conv2dLayer {
    /// `weight` ~ N(0, 1), `bias` = 0, as the reference initialises them.
    pub fn new(path: &Path, in_channels: i64, out_channels: i64, o: &ConvOptions<'_>) -> Result<Self> {
        let options = (Kind::Float, path.device());
        let resample_filter = resample_filter(path, o.resample_filter)?;
        let k = o.kernel_size;
        let weight =
            parameter(path, "weight", Tensor::f_randn([out_channels, in_channels, k, k], options).ctx("weight")?)?;
        let bias = if o.bias {
            Some(parameter(path, "bias", Tensor::f_zeros([out_channels], options).ctx("bias")?)?)
        } else {
            None
        };
        Ok(Conv2dLayer {
            weight,
            bias,
            resample_filter,
            weight_gain: 1.0 / ((in_channels * k * k).max(1) as f64).sqrt(),
            down: o.down,
            padding: k / 2,
            activation: o.activation,
            conv_clamp: o.conv_clamp,
        })
    }

    /// `[N, I, R, R]` → `[N, O, R, R]` (`[N, O, R/2, R/2]` when downsampling);
    /// `gain` scales the activation and the clamp (the resnet blocks' √½).
    pub fn forward(&self, x: &Tensor, gain: f64) -> Result<Tensor> {
        let weight = &self.weight * self.weight_gain;
        let y = if self.down {
            conv2d_down_2x(x, &weight, &self.resample_filter, self.padding)?
        } else {
            x.f_conv2d(&weight, None::<&Tensor>, 1, self.padding, 1, 1).ctx("conv2d")?
        };
        let gain = self.activation.default_gain() * gain;
        let clamp = self.conv_clamp.map(|c| c * gain);
        bias_act(&y, self.bias.as_ref(), self.activation, gain, clamp)
    }
}
