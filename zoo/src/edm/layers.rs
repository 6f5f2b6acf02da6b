//! The building blocks of EDM's networks (`training/networks.py`): layers with
//! EDM's initialisation ([`crate::nn::init`]), resampling convolution (FIR
//! filters from [`crate::nn::resample`]), group norm, the unified U-Net block
//! and the noise embeddings. Parameter and buffer names are EDM's.
//!
//! Weights are stored in float32; each layer casts them to the input's dtype
//! as EDM does, so the same weights run in float32, float16 or bfloat16.

use std::rc::Rc;

use difi_core::error::{Error, Result, TorchContext};
use tch::nn::Path;
use tch::{Kind, Tensor};

use crate::nn::resample::{downsample_2x, filter_padding, fir_filter_2d, upsample_2x};
pub use crate::nn::{Init, InitMode};
use crate::nn::{buffer, parameter};

/// Fully connected layer (`Linear`): `weight` `[out, in]`, optional `bias` `[out]`.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Input features.
    pub in_features: i64,
}

impl Linear {
    pub fn new(path: &Path, in_features: i64, out_features: i64, bias: bool, init: Init) -> Result<Self> {
        let weight = init.draw(&[out_features, in_features], in_features, out_features, init.weight, path)?;
        let weight = parameter(path, "weight", weight)?;
        let bias = if bias {
            let b = init.draw(&[out_features], in_features, out_features, init.bias, path)?;
            Some(parameter(path, "bias", b)?)
        } else {
            None
        };
        Ok(Linear { weight, bias, in_features })
    }

    /// `x` `[N, in]` → `[N, out]`, in the dtype of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.kind();
        let w = self.weight.f_to_kind(kind).ctx("linear")?;
        let mut y = x.f_matmul(&w.f_transpose(0, 1).ctx("linear")?).ctx("linear")?;
        if let Some(b) = &self.bias {
            y = y.f_add(&b.f_to_kind(kind).ctx("linear")?).ctx("linear")?;
        }
        Ok(y)
    }
}

/// Convolution with optional 2× up- or downsampling through a separable FIR
/// filter (`Conv2d`). A kernel of 0 resamples only.
#[derive(Debug)]
pub struct Conv2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    resample_filter: Option<Tensor>,
    up: bool,
    down: bool,
    fused_resample: bool,
}

/// Options of [`Conv2d`] beyond channels and kernel.
#[derive(Clone, Debug)]
pub struct ConvOptions {
    pub bias: bool,
    pub up: bool,
    pub down: bool,
    pub resample_filter: Vec<f64>,
    pub fused_resample: bool,
    pub init: Init,
}

impl ConvOptions {
    /// No resampling, with bias, initialised by `init`.
    pub fn new(init: Init) -> Self {
        ConvOptions { bias: true, up: false, down: false, resample_filter: vec![1.0, 1.0], fused_resample: false, init }
    }
}

impl Conv2d {
    pub fn new(path: &Path, in_channels: i64, out_channels: i64, kernel: i64, o: &ConvOptions) -> Result<Self> {
        if o.up && o.down {
            return Err(Error::config("conv", "a convolution cannot both up- and downsample"));
        }
        let fan_in = in_channels * kernel * kernel;
        let fan_out = out_channels * kernel * kernel;
        let (weight, bias) = if kernel > 0 {
            let w = o.init.draw(&[out_channels, in_channels, kernel, kernel], fan_in, fan_out, o.init.weight, path)?;
            let weight = Some(parameter(path, "weight", w)?);
            let bias = if o.bias {
                Some(parameter(path, "bias", o.init.draw(&[out_channels], fan_in, fan_out, o.init.bias, path)?)?)
            } else {
                None
            };
            (weight, bias)
        } else {
            (None, None)
        };
        let resample_filter = if o.up || o.down {
            Some(buffer(path, "resample_filter", fir_filter_2d(&o.resample_filter)?)?)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, resample_filter, up: o.up, down: o.down, fused_resample: o.fused_resample })
    }

    /// `x` `[N, in, H, W]` → `[N, out, H', W']` (H' = 2H up, H/2 down).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.kind();
        let w = self.weight.as_ref().map(|w| w.f_to_kind(kind)).transpose().ctx("conv")?;
        let w_pad = w.as_ref().map_or(0, |w| w.size()[3] / 2);
        let none = None::<&Tensor>;
        let mut x = x.shallow_clone();
        match (&w, &self.resample_filter) {
            (Some(w), Some(f)) if self.fused_resample && self.up => {
                x = upsample_2x(&x, f, w_pad + filter_padding(f))?;
                x = x.f_conv2d(w, none, 1, 0, 1, 1).ctx("conv")?;
            }
            (Some(w), Some(f)) if self.fused_resample && self.down => {
                x = x.f_conv2d(w, none, 1, w_pad + filter_padding(f), 1, 1).ctx("conv")?;
                x = downsample_2x(&x, f, 0)?;
            }
            (w, f) => {
                if let Some(f) = f {
                    if self.up {
                        x = upsample_2x(&x, f, filter_padding(f))?;
                    }
                    if self.down {
                        x = downsample_2x(&x, f, filter_padding(f))?;
                    }
                }
                if let Some(w) = w {
                    x = x.f_conv2d(w, none, 1, w_pad, 1, 1).ctx("conv")?;
                }
            }
        }
        if let Some(b) = &self.bias {
            x = x.f_add(&b.f_to_kind(kind).ctx("conv")?.f_reshape([1, -1, 1, 1]).ctx("conv")?).ctx("conv")?;
        }
        Ok(x)
    }
}

/// Group normalisation with EDM's group count: `min(32, channels / 4)`.
#[derive(Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn new(path: &Path, channels: i64, eps: f64) -> Result<Self> {
        let groups = 32.min(channels / 4).max(1);
        let weight = parameter(path, "weight", Tensor::f_ones([channels], (Kind::Float, path.device())).ctx("norm")?)?;
        let bias = parameter(path, "bias", Tensor::f_zeros([channels], (Kind::Float, path.device())).ctx("norm")?)?;
        Ok(GroupNorm { weight, bias, groups, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.kind();
        let w = self.weight.f_to_kind(kind).ctx("norm")?;
        let b = self.bias.f_to_kind(kind).ctx("norm")?;
        x.f_group_norm(self.groups, Some(&w), Some(&b), self.eps, true).ctx("group norm")
    }
}

/// Settings of [`UNetBlock`] shared by a whole network.
#[derive(Clone, Debug)]
pub struct BlockOptions {
    pub emb_channels: i64,
    /// Heads when the block has attention: a fixed number, or channels / `channels_per_head`.
    pub num_heads: Option<i64>,
    pub channels_per_head: i64,
    pub dropout: f64,
    pub skip_scale: f64,
    pub eps: f64,
    pub resample_filter: Vec<f64>,
    pub resample_proj: bool,
    pub adaptive_scale: bool,
    pub init: Init,
    pub init_zero: Init,
    pub init_attn: Option<Init>,
}

/// EDM's unified U-Net block (DDPM++, NCSN++ and ADM): two convolutions
/// conditioned on the embedding, an optional skip projection, optional
/// self-attention.
#[derive(Debug)]
pub struct UNetBlock {
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    attention: Option<(GroupNorm, Conv2d, Conv2d)>,
    num_heads: i64,
    dropout: f64,
    skip_scale: f64,
    adaptive_scale: bool,
    /// Input channels (the decoder concatenates a skip when they differ).
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
}

impl UNetBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &Path,
        in_channels: i64,
        out_channels: i64,
        up: bool,
        down: bool,
        attention: bool,
        o: &BlockOptions,
    ) -> Result<Self> {
        let num_heads = if attention { o.num_heads.unwrap_or(out_channels / o.channels_per_head) } else { 0 };
        let resampling =
            ConvOptions { up, down, resample_filter: o.resample_filter.clone(), ..ConvOptions::new(o.init) };
        let norm0 = GroupNorm::new(&(path / "norm0"), in_channels, o.eps)?;
        let conv0 = Conv2d::new(&(path / "conv0"), in_channels, out_channels, 3, &resampling)?;
        let affine_out = out_channels * if o.adaptive_scale { 2 } else { 1 };
        let affine = Linear::new(&(path / "affine"), o.emb_channels, affine_out, true, o.init)?;
        let norm1 = GroupNorm::new(&(path / "norm1"), out_channels, o.eps)?;
        let conv1 = Conv2d::new(&(path / "conv1"), out_channels, out_channels, 3, &ConvOptions::new(o.init_zero))?;
        let skip = if out_channels != in_channels || up || down {
            let kernel = if o.resample_proj || out_channels != in_channels { 1 } else { 0 };
            Some(Conv2d::new(&(path / "skip"), in_channels, out_channels, kernel, &resampling)?)
        } else {
            None
        };
        let attention = if num_heads > 0 {
            let norm2 = GroupNorm::new(&(path / "norm2"), out_channels, o.eps)?;
            let qkv_init = o.init_attn.unwrap_or(o.init);
            let qkv = Conv2d::new(&(path / "qkv"), out_channels, out_channels * 3, 1, &ConvOptions::new(qkv_init))?;
            let proj = Conv2d::new(&(path / "proj"), out_channels, out_channels, 1, &ConvOptions::new(o.init_zero))?;
            Some((norm2, qkv, proj))
        } else {
            None
        };
        Ok(UNetBlock {
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            attention,
            num_heads,
            dropout: o.dropout,
            skip_scale: o.skip_scale,
            adaptive_scale: o.adaptive_scale,
            in_channels,
            out_channels,
        })
    }

    /// `x` `[N, in, H, W]`, `emb` `[N, emb_channels]` → `[N, out, H', W']`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Result<Tensor> {
        let orig = x;
        let mut x = self.conv0.forward(&self.norm0.forward(x)?.f_silu().ctx("silu")?)?;
        let params = self.affine.forward(emb)?.f_unsqueeze(2).ctx("affine")?.f_unsqueeze(3).ctx("affine")?;
        let params = params.f_to_kind(x.kind()).ctx("affine")?;
        x = if self.adaptive_scale {
            let halves = params.f_chunk(2, 1).ctx("affine")?;
            let (scale, shift) = (&halves[0], &halves[1]);
            shift.f_addcmul(&self.norm1.forward(&x)?, &(scale + 1.0)).ctx("adaptive scale")?.f_silu().ctx("silu")?
        } else {
            self.norm1.forward(&(x + params))?.f_silu().ctx("silu")?
        };
        x = self.conv1.forward(&x.f_dropout(self.dropout, train).ctx("dropout")?)?;
        x = match &self.skip {
            Some(skip) => x + skip.forward(orig)?,
            None => x + orig,
        };
        x = x * self.skip_scale;

        if let Some((norm2, qkv, proj)) = &self.attention {
            let size = x.size();
            let (n, c) = (size[0], size[1]);
            let heads = self.num_heads;
            let qkv = qkv.forward(&norm2.forward(&x)?)?.f_reshape([n * heads, c / heads, 3, -1]).ctx("attention")?;
            let parts = qkv.f_unbind(2).ctx("attention")?;
            let (q, k, v) = (&parts[0], &parts[1], &parts[2]);
            let w = attention_weights(q, k)?;
            let a = Tensor::f_einsum("nqk,nck->ncq", &[&w, v], None::<i64>).ctx("attention")?;
            x = proj.forward(&a.f_reshape(&size).ctx("attention")?)? + x;
            x = x * self.skip_scale;
        }
        Ok(x)
    }
}

/// `softmax(qᵀ k / √c)` over keys, computed in float32 and returned in the
/// dtype of `q` (EDM's `AttentionOp`). `q`, `k`: `[N, C, L]` → `[N, L, L]`.
fn attention_weights(q: &Tensor, k: &Tensor) -> Result<Tensor> {
    let channels = k.size()[1] as f64;
    let q32 = q.f_to_kind(Kind::Float).ctx("attention")?;
    let k32 = (k / channels.sqrt()).f_to_kind(Kind::Float).ctx("attention")?;
    Tensor::f_einsum("ncq,nck->nqk", &[&q32, &k32], None::<i64>)
        .ctx("attention")?
        .f_softmax(2, Kind::Float)
        .ctx("attention")?
        .f_to_kind(q.kind())
        .ctx("attention")
}

/// Sinusoidal embedding of the noise level (DDPM++, ADM): `[cos(x f), sin(x f)]`
/// with `f = (1/max_positions)^(i / (C/2 − endpoint))`.
#[derive(Debug)]
pub struct PositionalEmbedding {
    channels: i64,
    max_positions: f64,
    endpoint: bool,
}

impl PositionalEmbedding {
    pub fn new(channels: i64, endpoint: bool) -> Self {
        PositionalEmbedding { channels, max_positions: 10000.0, endpoint }
    }

    /// `x` `[N]` → `[N, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let half = self.channels / 2;
        let freqs = Tensor::f_arange(half, (Kind::Float, x.device())).ctx("embedding")?;
        let freqs = freqs / (half - if self.endpoint { 1 } else { 0 }) as f64;
        let freqs = Tensor::f_pow_scalar(1.0 / self.max_positions, &freqs).ctx("embedding")?;
        let angles = x.f_outer(&freqs.f_to_kind(x.kind()).ctx("embedding")?).ctx("embedding")?;
        Tensor::f_cat(&[angles.f_cos().ctx("embedding")?, angles.f_sin().ctx("embedding")?], 1).ctx("embedding")
    }
}

/// Random Fourier features of the noise level (NCSN++): `[cos(2π x f), sin(2π x f)]`
/// with the buffer `freqs` `[C/2]` drawn from N(0, scale²).
#[derive(Debug)]
pub struct FourierEmbedding {
    freqs: Tensor,
}

impl FourierEmbedding {
    pub fn new(path: &Path, channels: i64, scale: f64) -> Result<Self> {
        let freqs = Tensor::f_randn([channels / 2], (Kind::Float, path.device())).ctx("fourier")? * scale;
        Ok(FourierEmbedding { freqs: buffer(path, "freqs", freqs)? })
    }

    /// `x` `[N]` → `[N, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let freqs = (&self.freqs * (2.0 * std::f64::consts::PI)).f_to_kind(x.kind()).ctx("fourier")?;
        let angles = x.f_outer(&freqs).ctx("fourier")?;
        Tensor::f_cat(&[angles.f_cos().ctx("fourier")?, angles.f_sin().ctx("fourier")?], 1).ctx("fourier")
    }
}

/// `block.forward(x, emb, train)`; with `checkpoint`, its activations are
/// recomputed in backward instead of kept (see `difi_torch_ext::checkpoint`).
/// `x` `[N, in, H, W]`, `emb` `[N, emb_channels]` → `[N, out, H', W']`.
pub fn run_block(block: &Rc<UNetBlock>, x: &Tensor, emb: &Tensor, train: bool, checkpoint: bool) -> Result<Tensor> {
    if !checkpoint {
        return block.forward(x, emb, train);
    }
    let block = Rc::clone(block);
    // SAFETY: the networks, their blocks and the graphs of their outputs live
    // on the thread that trains them, which waits in backward while libtorch
    // may recompute the block on its worker thread; nothing else touches the
    // block meanwhile.
    let mut outputs = unsafe {
        difi_torch_ext::checkpoint::checkpoint(&[x, emb], move |inputs| {
            block.forward(&inputs[0], &inputs[1], train).map(|y| vec![y]).map_err(|e| e.to_string())
        })
    }
    .map_err(|e| Error::Plugin { plugin: "activation checkpointing".into(), message: e.to_string() })?;
    outputs.pop().ok_or_else(|| Error::Plugin {
        plugin: "activation checkpointing".into(),
        message: "a U-Net block returned no tensor".into(),
    })
}
