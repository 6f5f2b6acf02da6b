//! The architecture of a StyleGAN2-ADA generator in the reference's own names
//! (the constructor arguments of `Generator`, with its `mapping_kwargs` and
//! `synthesis_kwargs`), the reference's defaults, and presets for the
//! configurations of its `train.py`.

use difi_core::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// The synthesis network's way of producing the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Only the last block has a ToRGB layer.
    Orig,
    /// Every block adds its ToRGB output to the upsampled image (the default).
    #[default]
    Skip,
    /// Blocks add a 1×1 upsampled shortcut; only the last has a ToRGB layer.
    Resnet,
}

/// The activations of the reference's `bias_act` (`activation_funcs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Linear,
    Relu,
    /// Leaky ReLU with slope 0.2.
    Lrelu,
    Tanh,
    Sigmoid,
    Elu,
    Selu,
    Softplus,
    Swish,
}

impl Activation {
    /// The reference's `def_gain`: √2 for the ReLU family, 1 otherwise.
    pub fn default_gain(self) -> f64 {
        match self {
            Activation::Relu | Activation::Lrelu | Activation::Swish => std::f64::consts::SQRT_2,
            _ => 1.0,
        }
    }
}

/// How the synthesis layers draw their per-pixel noise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseMode {
    /// Fresh Gaussian noise per sample and call (libtorch's global generator).
    #[default]
    Random,
    /// The stored `noise_const` buffers: a deterministic generator.
    Const,
    /// No noise.
    None,
}

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

/// `MappingNetwork`'s keywords (`mapping_kwargs`), each optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<i64>,
    /// `None` (or absent): `w_dim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_features: Option<i64>,
    /// `None` (or absent): `w_dim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_features: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_multiplier: Option<f64>,
    /// Absent: 0.995; `null`: W is not tracked and the network has no `w_avg`.
    #[serde(default, deserialize_with = "explicit_null", skip_serializing_if = "Option::is_none")]
    pub w_avg_beta: Option<Option<f64>>,
}

/// `SynthesisNetwork`'s keywords (`synthesis_kwargs`, including those it
/// passes on to its blocks and layers), each optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthesisArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_base: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_max: Option<i64>,
    /// Accepted; difi runs every resolution in float32 (the reference's `force_fp32`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_fp16_res: Option<i64>,
    /// `None`: no clamping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv_clamp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resample_filter: Option<Vec<f64>>,
    /// A memory layout of the float16 blocks; no effect on the values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp16_channels_last: Option<bool>,
    /// `SynthesisLayer` keywords.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_noise: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
}

/// `Generator`'s constructor keywords, as a pickle's `init_kwargs` and the
/// fixtures' `kwargs` metadata give them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z_dim: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_dim: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub w_dim: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_resolution: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_channels: Option<i64>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub mapping_kwargs: MappingArgs,
    #[serde(default, skip_serializing_if = "is_default")]
    pub synthesis_kwargs: SynthesisArgs,
}

/// The mapping network, every argument given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MappingConfig {
    pub num_layers: i64,
    pub embed_features: i64,
    pub layer_features: i64,
    pub activation: Activation,
    pub lr_multiplier: f64,
    pub w_avg_beta: Option<f64>,
}

/// The synthesis network, every argument given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthesisConfig {
    pub channel_base: i64,
    pub channel_max: i64,
    pub num_fp16_res: i64,
    pub conv_clamp: Option<f64>,
    pub architecture: Architecture,
    pub resample_filter: Vec<f64>,
    pub kernel_size: i64,
    pub use_noise: bool,
    pub activation: Activation,
}

/// A StyleGAN2-ADA generator, every argument given and checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub z_dim: i64,
    pub c_dim: i64,
    pub w_dim: i64,
    pub img_resolution: i64,
    pub img_channels: i64,
    pub mapping: MappingConfig,
    pub synthesis: SynthesisConfig,
}

/// The presets' names: `train.py`'s `--cfg` at its resolution.
pub const PRESETS: [&str; 4] = ["cifar-32x32-cond", "paper256-256x256", "paper512-512x512", "paper1024-1024x1024"];

/// Resolutions above this are refused (the reference trains up to 1024²).
const MAX_RESOLUTION: i64 = 1 << 14;

impl GeneratorArgs {
    /// Arguments from constructor keywords (JSON).
    pub fn from_kwargs(kwargs: &serde_json::Value) -> Result<Self> {
        difi_core::params::decode_params(kwargs)
    }

    /// Fills in the reference's defaults and checks the result.
    pub fn resolve(&self) -> Result<GeneratorConfig> {
        let required = |value: Option<i64>, key: &str| value.ok_or_else(|| Error::config(key, "missing"));
        let w_dim = required(self.w_dim, "w_dim")?;
        let c_dim = self.c_dim.unwrap_or(0);
        let m = &self.mapping_kwargs;
        let s = &self.synthesis_kwargs;
        let config = GeneratorConfig {
            z_dim: required(self.z_dim, "z_dim")?,
            c_dim,
            w_dim,
            img_resolution: required(self.img_resolution, "img_resolution")?,
            img_channels: required(self.img_channels, "img_channels")?,
            mapping: MappingConfig {
                num_layers: m.num_layers.unwrap_or(8),
                embed_features: if c_dim == 0 { 0 } else { m.embed_features.unwrap_or(w_dim) },
                layer_features: m.layer_features.unwrap_or(w_dim),
                activation: m.activation.unwrap_or(Activation::Lrelu),
                lr_multiplier: m.lr_multiplier.unwrap_or(0.01),
                w_avg_beta: m.w_avg_beta.unwrap_or(Some(0.995)),
            },
            synthesis: SynthesisConfig {
                channel_base: s.channel_base.unwrap_or(32768),
                channel_max: s.channel_max.unwrap_or(512),
                num_fp16_res: s.num_fp16_res.unwrap_or(0),
                conv_clamp: s.conv_clamp,
                architecture: s.architecture.unwrap_or_default(),
                resample_filter: s.resample_filter.clone().unwrap_or_else(|| vec![1.0, 3.0, 3.0, 1.0]),
                kernel_size: s.kernel_size.unwrap_or(3),
                use_noise: s.use_noise.unwrap_or(true),
                activation: s.activation.unwrap_or(Activation::Lrelu),
            },
        };
        config.validate()?;
        Ok(config)
    }
}

impl GeneratorConfig {
    /// Checks what the reference asserts, and what difi needs on top.
    fn validate(&self) -> Result<()> {
        let positive = [
            ("z_dim", self.z_dim),
            ("w_dim", self.w_dim),
            ("img_channels", self.img_channels),
            ("mapping_kwargs.num_layers", self.mapping.num_layers),
            ("mapping_kwargs.layer_features", self.mapping.layer_features),
            ("synthesis_kwargs.channel_base", self.synthesis.channel_base),
            ("synthesis_kwargs.channel_max", self.synthesis.channel_max),
        ];
        for (key, value) in positive {
            if value < 1 {
                return Err(Error::config(key, format!("must be at least 1, not {value}")));
            }
        }
        if self.c_dim < 0 || (self.c_dim > 0 && self.mapping.embed_features < 1) {
            return Err(Error::config("c_dim", "must be at least 0, with at least one embedding feature"));
        }
        let r = self.img_resolution;
        if !(4..=MAX_RESOLUTION).contains(&r) || r & (r - 1) != 0 {
            return Err(Error::config(
                "img_resolution",
                format!("must be a power of 2 from 4 to {MAX_RESOLUTION}, not {r}"),
            ));
        }
        if self.synthesis.channel_base / r < 1 {
            return Err(Error::config("synthesis_kwargs.channel_base", format!("gives no channels at {r}x{r}")));
        }
        let k = self.synthesis.kernel_size;
        if k < 1 || k % 2 == 0 {
            return Err(Error::config("synthesis_kwargs.kernel_size", format!("must be odd and positive, not {k}")));
        }
        let filter = &self.synthesis.resample_filter;
        if filter.is_empty()
            || filter.len() > 64
            || filter.iter().sum::<f64>() == 0.0
            || filter.iter().any(|t| !t.is_finite())
        {
            return Err(Error::config(
                "synthesis_kwargs.resample_filter",
                "must be 1 to 64 finite taps with a nonzero sum",
            ));
        }
        if self.synthesis.conv_clamp.is_some_and(|c| c.is_nan() || c < 0.0) {
            return Err(Error::config("synthesis_kwargs.conv_clamp", "must be at least 0"));
        }
        if self.synthesis.num_fp16_res < 0 {
            return Err(Error::config("synthesis_kwargs.num_fp16_res", "must be at least 0"));
        }
        if !(self.mapping.lr_multiplier.is_finite() && self.mapping.lr_multiplier > 0.0) {
            return Err(Error::config("mapping_kwargs.lr_multiplier", "must be positive"));
        }
        Ok(())
    }

    /// The block resolutions, 4 to `img_resolution`.
    pub fn block_resolutions(&self) -> Vec<i64> {
        (2..=self.img_resolution.trailing_zeros()).map(|log2| 1 << log2).collect()
    }

    /// Channels of the block at `resolution`: `min(channel_base / res, channel_max)`.
    pub fn channels(&self, resolution: i64) -> i64 {
        (self.synthesis.channel_base / resolution).min(self.synthesis.channel_max)
    }

    /// Whether the block at `resolution` has a ToRGB layer.
    pub fn has_torgb(&self, resolution: i64) -> bool {
        resolution == self.img_resolution || self.synthesis.architecture == Architecture::Skip
    }

    /// The number of W vectors the synthesis network takes: one per
    /// convolution and one for the last ToRGB.
    pub fn num_ws(&self) -> i64 {
        self.block_resolutions().iter().map(|&res| if res == 4 { 1 } else { 2 }).sum::<i64>() + 1
    }

    /// The number of values in the generator's `state_dict()` (parameters
    /// and buffers), computed without building it: what a weights file must
    /// hold before the network is allocated.
    pub fn value_count(&self) -> u128 {
        let n = |v: i64| v.max(0) as u128;
        let (w, k2) = (n(self.w_dim), n(self.synthesis.kernel_size).pow(2));
        let taps = n(self.synthesis.resample_filter.len() as i64);
        let filter = if taps >= 8 { taps } else { taps * taps };
        let fc = |i: u128, o: u128| i * o + o;
        let mut total = 0u128;
        let m = &self.mapping;
        if self.c_dim > 0 {
            total += fc(n(self.c_dim), n(m.embed_features));
        }
        let mut features = n(self.z_dim) + if self.c_dim > 0 { n(m.embed_features) } else { 0 };
        for index in 0..m.num_layers {
            let out = if index + 1 == m.num_layers { w } else { n(m.layer_features) };
            total += fc(features, out);
            features = out;
        }
        if m.w_avg_beta.is_some() {
            total += w;
        }
        let noise = |res: u128| if self.synthesis.use_noise { res * res + 1 } else { 0 };
        let layer = |i: u128, o: u128, res: u128| fc(w, i) + o * i * k2 + o + filter + noise(res);
        let mut previous = 0u128;
        for res in self.block_resolutions() {
            let (out, r) = (n(self.channels(res)), n(res));
            total += filter;
            if res == 4 {
                total += out * r * r;
            } else {
                total += layer(previous, out, r);
                if self.synthesis.architecture == Architecture::Resnet {
                    total += out * previous + filter;
                }
            }
            total += layer(out, out, r);
            if self.has_torgb(res) {
                total += fc(w, out) + n(self.img_channels) * out + n(self.img_channels);
            }
            previous = out;
        }
        total
    }

    /// The architecture of `train.py --cfg=NAME` at its resolution
    /// (`cifar-32x32-cond`: the released CIFAR-10 network, 10 classes).
    pub fn preset(name: &str) -> Result<Self> {
        let (resolution, c_dim, fmaps, mapping_layers) = match name {
            "cifar-32x32-cond" => (32, 10, 1.0, 2),
            "paper256-256x256" => (256, 0, 0.5, 8),
            "paper512-512x512" => (512, 0, 1.0, 8),
            "paper1024-1024x1024" => (1024, 0, 1.0, 8),
            other => {
                return Err(Error::config(
                    "preset",
                    format!("unknown preset `{other}` (one of {})", PRESETS.join(", ")),
                ));
            }
        };
        GeneratorArgs {
            z_dim: Some(512),
            c_dim: Some(c_dim),
            w_dim: Some(512),
            img_resolution: Some(resolution),
            img_channels: Some(3),
            mapping_kwargs: MappingArgs { num_layers: Some(mapping_layers), ..Default::default() },
            synthesis_kwargs: SynthesisArgs {
                channel_base: Some((fmaps * 32768.0) as i64),
                channel_max: Some(512),
                num_fp16_res: Some(4),
                conv_clamp: Some(256.0),
                ..Default::default()
            },
        }
        .resolve()
    }

    /// The same generator as constructor keywords, every one given.
    pub fn to_args(&self) -> GeneratorArgs {
        let m = &self.mapping;
        let s = &self.synthesis;
        GeneratorArgs {
            z_dim: Some(self.z_dim),
            c_dim: Some(self.c_dim),
            w_dim: Some(self.w_dim),
            img_resolution: Some(self.img_resolution),
            img_channels: Some(self.img_channels),
            mapping_kwargs: MappingArgs {
                num_layers: Some(m.num_layers),
                embed_features: (self.c_dim > 0).then_some(m.embed_features),
                layer_features: Some(m.layer_features),
                activation: Some(m.activation),
                lr_multiplier: Some(m.lr_multiplier),
                w_avg_beta: Some(m.w_avg_beta),
            },
            synthesis_kwargs: SynthesisArgs {
                channel_base: Some(s.channel_base),
                channel_max: Some(s.channel_max),
                num_fp16_res: Some(s.num_fp16_res),
                conv_clamp: s.conv_clamp,
                architecture: Some(s.architecture),
                resample_filter: Some(s.resample_filter.clone()),
                fp16_channels_last: None,
                kernel_size: Some(s.kernel_size),
                use_noise: Some(s.use_noise),
                activation: Some(s.activation),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_w_avg_beta_differs_from_an_absent_one() {
        let absent = GeneratorArgs::from_kwargs(&serde_json::json!({
            "z_dim": 8, "w_dim": 8, "img_resolution": 8, "img_channels": 3
        }))
        .unwrap();
        let null = GeneratorArgs::from_kwargs(&serde_json::json!({
            "z_dim": 8, "w_dim": 8, "img_resolution": 8, "img_channels": 3, "mapping_kwargs": {"w_avg_beta": null}
        }))
        .unwrap();
        assert_eq!(absent.resolve().unwrap().mapping.w_avg_beta, Some(0.995));
        assert_eq!(null.resolve().unwrap().mapping.w_avg_beta, None);
    }

    #[test]
    fn unknown_keywords_and_bad_resolutions_are_refused() {
        let base = serde_json::json!({"z_dim": 8, "w_dim": 8, "img_resolution": 8, "img_channels": 3});
        let mut unknown = base.clone();
        unknown["synthesis_kwargs"] = serde_json::json!({"channels_per_layer": 3});
        assert!(GeneratorArgs::from_kwargs(&unknown).is_err());
        let mut odd = base.clone();
        odd["img_resolution"] = serde_json::json!(24);
        assert!(GeneratorArgs::from_kwargs(&odd).unwrap().resolve().is_err());
    }

    #[test]
    fn presets_resolve_and_round_trip() {
        for name in PRESETS {
            let config = GeneratorConfig::preset(name).unwrap();
            assert_eq!(config.to_args().resolve().unwrap(), config, "{name}");
        }
        // cifar: 4, 8, 16, 32 → 1 + 2 + 2 + 2 convolutions and the last ToRGB.
        assert_eq!(GeneratorConfig::preset("cifar-32x32-cond").unwrap().num_ws(), 8);
    }
}
