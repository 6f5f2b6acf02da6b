//! StyleGAN2-ADA's `Discriminator` (`training/networks.py`:
//! `Discriminator`, `DiscriminatorBlock`, `DiscriminatorEpilogue`,
//! `MinibatchStdLayer`) in the `orig`, `skip` and `resnet` architectures,
//! with the reference's `state_dict()` names (`b16.fromrgb.weight`,
//! `b8.conv1.resample_filter`, `b16.skip.weight`, `b4.conv.weight`,
//! `b4.fc.weight`, `b4.out.weight`, `mapping.embed.weight`; the minibatch
//! standard deviation `b4.mbstd` has no tensors). Conditioning projects the
//! output onto the label embedding of a mapping network (`D.mapping`, no
//! latents). Runs in float32 (`num_fp16_res` is accepted, as the generator's).

use std::collections::HashMap;
use std::path::Path as FsPath;

use difi_core::error::{Error, Result, TorchContext};
use difi_formats::weights;
use serde::{Deserialize, Deserializer, Serialize};
use tch::nn::{Path, VarStore};
use tch::{Device, Kind, Tensor};

use super::config::{Activation, Architecture, MappingArgs, MappingConfig};
use super::layers::{Conv2dLayer, ConvOptions, FullyConnected, resample_filter};
use super::mapping::{MappingDims, MappingNetwork};
use crate::nn::resample::downsample2d;

/// The filter of the layers the reference builds without passing the block's
/// `resample_filter` (FromRGB, `conv0`, the epilogue's convolution): its default.
const DEFAULT_FILTER: [f64; 4] = [1.0, 3.0, 3.0, 1.0];
/// Added to the variance before the square root, as the reference.
const MBSTD_EPS: f64 = 1e-8;

/// Reads a JSON `null` as `Some(None)`, so that "given as None" differs from "absent".
fn explicit_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Empty keyword groups are left out of a written config (RON has no empty struct value to read back).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `DiscriminatorBlock`'s keywords (`block_kwargs`), each optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resample_filter: Option<Vec<f64>>,
    /// A memory layout of the float16 blocks; no effect on the values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp16_channels_last: Option<bool>,
    /// Freeze-D; only 0 (every layer trained) is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_layers: Option<i64>,
}

/// `DiscriminatorEpilogue`'s keywords (`epilogue_kwargs`), each optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpilogueArgs {
    /// Absent: 4; `null`: the whole minibatch is one group.
    #[serde(default, deserialize_with = "explicit_null", skip_serializing_if = "Option::is_none")]
    pub mbstd_group_size: Option<Option<i64>>,
    /// Features of the minibatch standard deviation; 0 disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbstd_num_channels: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
}

/// `Discriminator`'s constructor keywords, as a pickle's `init_kwargs` gives them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_dim: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_resolution: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_channels: Option<i64>,
    /// Absent: `resnet` (the reference's default; its CIFAR-10 setup uses `orig`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_base: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_max: Option<i64>,
    /// Accepted; difi runs every resolution in float32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_fp16_res: Option<i64>,
    /// `None`: no clamping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv_clamp: Option<f64>,
    /// Size of the label embedding; `None`: the channels at 4×4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmap_dim: Option<i64>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub block_kwargs: BlockArgs,
    /// The label mapping's keywords (`w_avg_beta` is not one: D tracks no W).
    #[serde(default, skip_serializing_if = "is_default")]
    pub mapping_kwargs: MappingArgs,
    #[serde(default, skip_serializing_if = "is_default")]
    pub epilogue_kwargs: EpilogueArgs,
}

/// A StyleGAN2-ADA discriminator, every argument given and checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorConfig {
    pub c_dim: i64,
    pub img_resolution: i64,
    pub img_channels: i64,
    pub architecture: Architecture,
    pub channel_base: i64,
    pub channel_max: i64,
    pub conv_clamp: Option<f64>,
    /// 0 for an unconditional discriminator.
    pub cmap_dim: i64,
    pub activation: Activation,
    pub resample_filter: Vec<f64>,
    pub mapping: MappingConfig,
    /// `None`: the whole minibatch.
    pub mbstd_group_size: Option<i64>,
    pub mbstd_num_channels: i64,
    pub epilogue_activation: Activation,
}

impl DiscriminatorArgs {
    /// Arguments from constructor keywords (JSON).
    pub fn from_kwargs(kwargs: &serde_json::Value) -> Result<Self> {
        difi_core::params::decode_params(kwargs)
    }

    /// Fills in the reference's defaults and checks the result.
    pub fn resolve(&self) -> Result<DiscriminatorConfig> {
        let required = |value: Option<i64>, key: &str| value.ok_or_else(|| Error::config(key, "missing"));
        let img_resolution = required(self.img_resolution, "img_resolution")?;
        let c_dim = self.c_dim.unwrap_or(0);
        let channel_base = self.channel_base.unwrap_or(32768);
        let channel_max = self.channel_max.unwrap_or(512);
        let channels_4 = (channel_base / 4).min(channel_max);
        let cmap_dim = if c_dim == 0 { 0 } else { self.cmap_dim.unwrap_or(channels_4) };
        let m = &self.mapping_kwargs;
        if m.w_avg_beta.is_some() {
            return Err(Error::config("mapping_kwargs.w_avg_beta", "the discriminator's mapping tracks no W"));
        }
        if self.block_kwargs.freeze_layers.is_some_and(|f| f != 0) {
            return Err(Error::config("block_kwargs.freeze_layers", "Freeze-D is not supported (only 0)"));
        }
        let e = &self.epilogue_kwargs;
        let config = DiscriminatorConfig {
            c_dim,
            img_resolution,
            img_channels: required(self.img_channels, "img_channels")?,
            architecture: self.architecture.unwrap_or(Architecture::Resnet),
            channel_base,
            channel_max,
            conv_clamp: self.conv_clamp,
            cmap_dim,
            activation: self.block_kwargs.activation.unwrap_or(Activation::Lrelu),
            resample_filter: self.block_kwargs.resample_filter.clone().unwrap_or_else(|| DEFAULT_FILTER.to_vec()),
            mapping: MappingConfig {
                num_layers: m.num_layers.unwrap_or(8),
                embed_features: m.embed_features.unwrap_or(cmap_dim),
                layer_features: m.layer_features.unwrap_or(cmap_dim),
                activation: m.activation.unwrap_or(Activation::Lrelu),
                lr_multiplier: m.lr_multiplier.unwrap_or(0.01),
                w_avg_beta: None,
            },
            mbstd_group_size: e.mbstd_group_size.unwrap_or(Some(4)),
            mbstd_num_channels: e.mbstd_num_channels.unwrap_or(1),
            epilogue_activation: e.activation.unwrap_or(Activation::Lrelu),
        };
        config.validate()?;
        Ok(config)
    }
}

impl DiscriminatorConfig {
    fn validate(&self) -> Result<()> {
        let r = self.img_resolution;
        // The reference's epilogue needs a block's features: 8×8 at least.
        if !(8..=1 << 14).contains(&r) || r & (r - 1) != 0 {
            return Err(Error::config("img_resolution", format!("must be a power of 2 from 8 to 16384, not {r}")));
        }
        for (key, value) in [
            ("img_channels", self.img_channels),
            ("channel_base", self.channel_base),
            ("channel_max", self.channel_max),
        ] {
            if value < 1 {
                return Err(Error::config(key, format!("must be at least 1, not {value}")));
            }
        }
        if self.channel_base / r < 1 {
            return Err(Error::config("channel_base", format!("gives no channels at {r}x{r}")));
        }
        if self.c_dim < 0 || (self.c_dim > 0 && self.cmap_dim < 1) {
            return Err(Error::config("c_dim", "must be at least 0, with a positive cmap_dim"));
        }
        if self.c_dim > 0 && (self.mapping.num_layers < 1 || self.mapping.layer_features < 1) {
            return Err(Error::config("mapping_kwargs", "needs at least one layer of at least one feature"));
        }
        if self.mbstd_group_size.is_some_and(|g| g < 1) || self.mbstd_num_channels < 0 {
            return Err(Error::config("epilogue_kwargs", "mbstd_group_size must be positive, mbstd_num_channels ≥ 0"));
        }
        let filter = &self.resample_filter;
        if filter.is_empty() || filter.len() > 64 || filter.iter().sum::<f64>() == 0.0 {
            return Err(Error::config("block_kwargs.resample_filter", "must be 1 to 64 taps with a nonzero sum"));
        }
        if self.conv_clamp.is_some_and(|c| c.is_nan() || c < 0.0) {
            return Err(Error::config("conv_clamp", "must be at least 0"));
        }
        Ok(())
    }

    /// Block resolutions from `img_resolution` down to 8 (the epilogue is 4×4).
    pub fn block_resolutions(&self) -> Vec<i64> {
        (3..=self.img_resolution.trailing_zeros()).rev().map(|log2| 1 << log2).collect()
    }

    /// `min(channel_base / res, channel_max)`.
    pub fn channels(&self, resolution: i64) -> i64 {
        (self.channel_base / resolution).min(self.channel_max)
    }

    /// Back to constructor keywords, every one given (the `kwargs` a file records).
    pub fn to_args(&self) -> DiscriminatorArgs {
        let m = &self.mapping;
        DiscriminatorArgs {
            c_dim: Some(self.c_dim),
            img_resolution: Some(self.img_resolution),
            img_channels: Some(self.img_channels),
            architecture: Some(self.architecture),
            channel_base: Some(self.channel_base),
            channel_max: Some(self.channel_max),
            num_fp16_res: None,
            conv_clamp: self.conv_clamp,
            cmap_dim: (self.c_dim > 0).then_some(self.cmap_dim),
            block_kwargs: BlockArgs {
                activation: Some(self.activation),
                resample_filter: Some(self.resample_filter.clone()),
                fp16_channels_last: None,
                freeze_layers: None,
            },
            mapping_kwargs: MappingArgs {
                num_layers: Some(m.num_layers),
                embed_features: (self.c_dim > 0).then_some(m.embed_features),
                layer_features: (self.c_dim > 0).then_some(m.layer_features),
                activation: Some(m.activation),
                lr_multiplier: Some(m.lr_multiplier),
                w_avg_beta: None,
            },
            epilogue_kwargs: EpilogueArgs {
                mbstd_group_size: Some(self.mbstd_group_size),
                mbstd_num_channels: Some(self.mbstd_num_channels),
                activation: Some(self.epilogue_activation),
            },
        }
    }
}

/// `DiscriminatorBlock` at one resolution (`b{res}`): FromRGB (first block,
/// or every block of `skip`), two 3×3 convolutions, the second halving the
/// image, and the resnet shortcut.
struct DiscriminatorBlock {
    fromrgb: Option<Conv2dLayer>,
    conv0: Conv2dLayer,
    conv1: Conv2dLayer,
    skip: Option<Conv2dLayer>,
    /// Downsamples the image for the next block (`skip`).
    resample_filter: Tensor,
    architecture: Architecture,
}

impl DiscriminatorBlock {
    fn new(path: &Path, config: &DiscriminatorConfig, resolution: i64, first: bool) -> Result<Self> {
        let tmp = config.channels(resolution);
        let out = config.channels(resolution / 2);
        let resample_filter = resample_filter(path, &config.resample_filter)?;
        fn layer<'a>(config: &DiscriminatorConfig, kernel_size: i64, down: bool, filter: &'a [f64]) -> ConvOptions<'a> {
            ConvOptions {
                kernel_size,
                bias: true,
                activation: config.activation,
                down,
                resample_filter: filter,
                conv_clamp: config.conv_clamp,
            }
        }
        let fromrgb = if first || config.architecture == Architecture::Skip {
            Some(Conv2dLayer::new(
                &(path / "fromrgb"),
                config.img_channels,
                tmp,
                &layer(config, 1, false, &DEFAULT_FILTER),
            )?)
        } else {
            None
        };
        let conv0 = Conv2dLayer::new(&(path / "conv0"), tmp, tmp, &layer(config, 3, false, &DEFAULT_FILTER))?;
        let conv1 = Conv2dLayer::new(&(path / "conv1"), tmp, out, &layer(config, 3, true, &config.resample_filter))?;
        let skip = if config.architecture == Architecture::Resnet {
            let options = ConvOptions {
                kernel_size: 1,
                bias: false,
                activation: Activation::Linear,
                down: true,
                resample_filter: &config.resample_filter,
                conv_clamp: None,
            };
            Some(Conv2dLayer::new(&(path / "skip"), tmp, out, &options)?)
        } else {
            None
        };
        Ok(DiscriminatorBlock { fromrgb, conv0, conv1, skip, resample_filter, architecture: config.architecture })
    }

    /// Features `x` `[N, C, R, R]` (`None` before the first block) and the
    /// image `[N, img_channels, R, R]` (`None` once no block needs it) → the
    /// next block's `[N, C', R/2, R/2]` and image.
    fn forward(&self, x: Option<Tensor>, img: Option<Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let (mut x, mut img) = (x, img);
        if let Some(fromrgb) = &self.fromrgb {
            let image = img.as_ref().ok_or_else(|| Error::config("discriminator", "a FromRGB layer without image"))?;
            let y = fromrgb.forward(image, 1.0)?;
            x = Some(match x {
                Some(x) => x + y,
                None => y,
            });
            img = match self.architecture {
                Architecture::Skip => Some(downsample2d(image, &self.resample_filter)?),
                _ => None,
            };
        }
        let x = x.ok_or_else(|| Error::config("discriminator", "a block after the first needs features"))?;
        let x = match &self.skip {
            Some(skip) => {
                let half = std::f64::consts::FRAC_1_SQRT_2;
                let shortcut = skip.forward(&x, half)?;
                let y = self.conv1.forward(&self.conv0.forward(&x, 1.0)?, half)?;
                shortcut + y
            }
            None => self.conv1.forward(&self.conv0.forward(&x, 1.0)?, 1.0)?,
        };
        Ok((x, img))
    }
}

/// `MinibatchStdLayer`: appends, per group of `group_size` samples, the
/// standard deviation over the group averaged over channels (in
/// `num_channels` sets) and pixels, as `num_channels` constant feature maps.
/// `[N, C, H, W]` → `[N, C + F, H, W]`; N must be a multiple of the group.
pub fn minibatch_std(x: &Tensor, group_size: Option<i64>, num_channels: i64) -> Result<Tensor> {
    let context = "minibatch std";
    let [n, c, h, w] = x.size()[..] else {
        return Err(Error::Shape { what: context.into(), expected: vec![-1, -1, -1, -1], actual: x.size() });
    };
    let g = group_size.map_or(n, |g| g.min(n));
    if g < 1 || n % g != 0 || c % num_channels != 0 {
        return Err(Error::config(
            "epilogue_kwargs.mbstd_group_size",
            format!("a batch of {n} is not a multiple of the minibatch-std group of {g}"),
        ));
    }
    let f = num_channels;
    let y = x.f_reshape([g, -1, f, c / f, h, w]).ctx(context)?;
    let y = &y - y.f_mean_dim(0i64, false, Kind::Float).ctx(context)?;
    let y = y.f_square().ctx(context)?.f_mean_dim(0i64, false, Kind::Float).ctx(context)?;
    let y = (y + MBSTD_EPS).f_sqrt().ctx(context)?;
    let y = y.f_mean_dim(&[2i64, 3, 4][..], false, Kind::Float).ctx(context)?;
    let y = y.f_reshape([-1, f, 1, 1]).ctx(context)?.f_repeat([g, 1, h, w]).ctx(context)?;
    Tensor::f_cat(&[x.shallow_clone(), y], 1).ctx(context)
}

/// `DiscriminatorEpilogue` (`b4`): FromRGB (`skip`), minibatch std, a 3×3
/// convolution, a fully connected layer and the output layer, projected on
/// the label embedding when conditional.
struct Epilogue {
    fromrgb: Option<Conv2dLayer>,
    conv: Conv2dLayer,
    fc: FullyConnected,
    out: FullyConnected,
    mbstd_group_size: Option<i64>,
    mbstd_num_channels: i64,
    cmap_dim: i64,
}

impl Epilogue {
    fn new(path: &Path, config: &DiscriminatorConfig) -> Result<Self> {
        let channels = config.channels(4);
        let activation = config.epilogue_activation;
        let layer = |kernel_size, conv_clamp| ConvOptions {
            kernel_size,
            bias: true,
            activation,
            down: false,
            resample_filter: &DEFAULT_FILTER,
            conv_clamp,
        };
        let fromrgb = if config.architecture == Architecture::Skip {
            // The reference gives the epilogue's FromRGB no clamp.
            Some(Conv2dLayer::new(&(path / "fromrgb"), config.img_channels, channels, &layer(1, None))?)
        } else {
            None
        };
        let f = config.mbstd_num_channels;
        let conv = Conv2dLayer::new(&(path / "conv"), channels + f, channels, &layer(3, config.conv_clamp))?;
        let fc = FullyConnected::new(&(path / "fc"), channels * 16, channels, activation, 1.0, 0.0)?;
        let outputs = if config.cmap_dim == 0 { 1 } else { config.cmap_dim };
        let out = FullyConnected::new(&(path / "out"), channels, outputs, Activation::Linear, 1.0, 0.0)?;
        Ok(Epilogue {
            fromrgb,
            conv,
            fc,
            out,
            mbstd_group_size: config.mbstd_group_size,
            mbstd_num_channels: f,
            cmap_dim: config.cmap_dim,
        })
    }

    /// `x` `[N, C, 4, 4]`, `img` `[N, img_channels, 4, 4]` (`skip`), `cmap`
    /// `[N, cmap_dim]` (conditional) → logits `[N, 1]`.
    fn forward(&self, x: &Tensor, img: Option<&Tensor>, cmap: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        if let Some(fromrgb) = &self.fromrgb {
            let img = img.ok_or_else(|| Error::config("discriminator", "the epilogue's FromRGB needs the image"))?;
            x = x + fromrgb.forward(img, 1.0)?;
        }
        if self.mbstd_num_channels > 0 {
            x = minibatch_std(&x, self.mbstd_group_size, self.mbstd_num_channels)?;
        }
        let x = self.conv.forward(&x, 1.0)?;
        let x = self.fc.forward(&x.f_flatten(1, -1).ctx("epilogue")?)?;
        let x = self.out.forward(&x)?;
        match (self.cmap_dim, cmap) {
            (0, _) => Ok(x),
            (_, Some(cmap)) => {
                let projected = (x * cmap).f_sum_dim_intlist(1i64, true, Kind::Float).ctx("projection")?;
                Ok(projected * (1.0 / (self.cmap_dim as f64).sqrt()))
            }
            (_, None) => Err(Error::config("labels", "this discriminator is conditional and needs labels")),
        }
    }
}

/// The discriminator, with its variables under the reference's names.
pub struct StyleGan2Discriminator {
    vs: VarStore,
    config: DiscriminatorConfig,
    blocks: Vec<DiscriminatorBlock>,
    mapping: Option<MappingNetwork>,
    epilogue: Epilogue,
}

impl StyleGan2Discriminator {
    /// A discriminator of `config` on `device`, initialised as the reference
    /// (from libtorch's global generator).
    pub fn new(config: &DiscriminatorConfig, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let mut blocks = Vec::new();
        for resolution in config.block_resolutions() {
            let first = resolution == config.img_resolution;
            blocks.push(DiscriminatorBlock::new(&(&root / format!("b{resolution}")), config, resolution, first)?);
        }
        let mapping = if config.c_dim > 0 {
            let dims = MappingDims { z_dim: 0, c_dim: config.c_dim, w_dim: config.cmap_dim, num_ws: 1 };
            Some(MappingNetwork::with_dims(&(&root / "mapping"), dims, &config.mapping)?)
        } else {
            None
        };
        let epilogue = Epilogue::new(&(&root / "b4"), config)?;
        Ok(StyleGan2Discriminator { vs, config: config.clone(), blocks, mapping, epilogue })
    }

    /// The architecture.
    pub fn config(&self) -> &DiscriminatorConfig {
        &self.config
    }

    /// Its variables.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Its variables, mutably (to freeze them while the generator trains).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// Copies weights named as the reference's `state_dict()` into the
    /// discriminator: every key must be present with its shape, and no other.
    pub fn load_weights(&mut self, tensors: &HashMap<String, Tensor>, source: &FsPath) -> Result<()> {
        weights::copy_into(&mut self.vs, tensors, source)
    }

    /// Logits `[N, 1]` of images `[N, img_channels, R, R]` (float, in the
    /// generator's range) with one-hot labels `c` `[N, c_dim]` (conditional
    /// discriminators). N must be a multiple of the minibatch-std group.
    pub fn forward(&self, img: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        let size = img.size();
        let r = self.config.img_resolution;
        if size.len() != 4 || size[1] != self.config.img_channels || size[2] != r || size[3] != r {
            return Err(Error::Shape {
                what: "discriminator images".into(),
                expected: vec![-1, self.config.img_channels, r, r],
                actual: size,
            });
        }
        let (mut x, mut img) = (None, Some(img.f_to_kind(Kind::Float).ctx("images")?));
        for block in &self.blocks {
            let (features, image) = block.forward(x, img)?;
            x = Some(features);
            img = image;
        }
        let x = x.ok_or_else(|| Error::config("img_resolution", "a discriminator needs at least one block"))?;
        let cmap = match (&self.mapping, c) {
            (Some(mapping), Some(c)) => Some(mapping.map_labels(&c.f_to_device(self.vs.device()).ctx("c")?)?),
            (Some(_), None) => {
                return Err(Error::config("labels", "this discriminator is conditional and needs labels"));
            }
            (None, _) => None,
        };
        self.epilogue.forward(&x, img.as_ref(), cmap.as_ref())
    }
}
