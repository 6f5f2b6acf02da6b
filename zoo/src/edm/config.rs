//! The architecture of an EDM network in EDM's own names (the constructor
//! arguments of `EDMPrecond`/`VPPrecond`/`VEPrecond` and of the backbone), with
//! EDM's defaults, and named presets for every released EDM checkpoint.

use difi_core::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The preconditioning wrapped around the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrecondKind {
    /// EDM's preconditioning (Karras et al. 2022).
    #[serde(rename = "EDMPrecond")]
    Edm,
    /// Variance preserving (Song et al. 2021).
    #[serde(rename = "VPPrecond")]
    Vp,
    /// Variance exploding (Song et al. 2021).
    #[serde(rename = "VEPrecond")]
    Ve,
}

impl PrecondKind {
    /// Parses EDM's class name.
    pub fn from_class_name(name: &str) -> Result<Self> {
        match name {
            "EDMPrecond" => Ok(PrecondKind::Edm),
            "VPPrecond" => Ok(PrecondKind::Vp),
            "VEPrecond" => Ok(PrecondKind::Ve),
            other => Err(Error::config(
                "precond",
                format!("`{other}` is not supported (EDMPrecond, VPPrecond or VEPrecond)"),
            )),
        }
    }

    fn default_model_type(self) -> ModelType {
        match self {
            PrecondKind::Edm => ModelType::DhariwalUNet,
            PrecondKind::Vp | PrecondKind::Ve => ModelType::SongUNet,
        }
    }
}

/// The backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelType {
    /// DDPM++ / NCSN++ (Song et al. 2021).
    SongUNet,
    /// ADM (Dhariwal & Nichol 2021).
    DhariwalUNet,
}

/// How SongUNet embeds the noise level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingType {
    /// Sinusoidal (DDPM++).
    Positional,
    /// Random Fourier features (NCSN++).
    Fourier,
}

/// SongUNet's encoder: plain, or with a downsampled copy of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderType {
    /// DDPM++.
    Standard,
    /// The input added at every resolution through a skip branch.
    Skip,
    /// NCSN++: the input added through residual branches.
    Residual,
}

/// SongUNet's decoder: plain, or with the output accumulated at every resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderType {
    /// DDPM++ and NCSN++.
    Standard,
    /// The output accumulated through upsampling skip branches.
    Skip,
}

/// An EDM network as its constructor arguments, every one given a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmNetworkConfig {
    pub precond: PrecondKind,
    pub img_resolution: i64,
    pub img_channels: i64,
    pub label_dim: i64,
    pub augment_dim: i64,
    pub use_fp16: bool,
    /// EDMPrecond: supported σ range and σ_data.
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub sigma_data: f64,
    /// VPPrecond: β_d, β_min, M, ε_t.
    pub beta_d: f64,
    pub beta_min: f64,
    #[serde(rename = "M")]
    pub m: f64,
    pub epsilon_t: f64,
    pub model_type: ModelType,
    pub model_channels: i64,
    pub channel_mult: Vec<i64>,
    pub channel_mult_emb: i64,
    pub num_blocks: i64,
    pub attn_resolutions: Vec<i64>,
    pub dropout: f64,
    pub label_dropout: f64,
    /// SongUNet only.
    pub embedding_type: EmbeddingType,
    pub channel_mult_noise: i64,
    /// SongUNet only.
    pub encoder_type: EncoderType,
    /// SongUNet only.
    pub decoder_type: DecoderType,
    pub resample_filter: Vec<f64>,
}

/// The same arguments with every one optional, as EDM's `init_kwargs`, the
/// fixtures' metadata and partial configs give them. Absent ones take EDM's
/// defaults, which depend on the preconditioning and the backbone.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmNetworkArgs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precond: Option<PrecondKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_resolution: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub img_channels: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_dim: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment_dim: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_fp16: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_data: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_d: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_min: Option<f64>,
    #[serde(rename = "M", skip_serializing_if = "Option::is_none")]
    pub m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_t: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<ModelType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_channels: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_mult: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_mult_emb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_blocks: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attn_resolutions: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_dropout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_type: Option<EmbeddingType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_mult_noise: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_type: Option<EncoderType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_type: Option<DecoderType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resample_filter: Option<Vec<f64>>,
}

impl EdmNetworkArgs {
    /// Arguments from EDM's constructor keywords (`kwargs` JSON of a fixture
    /// or a pickle's `init_kwargs`), with the precond class name.
    pub fn from_kwargs(precond: PrecondKind, kwargs: &serde_json::Value) -> Result<Self> {
        let mut args: EdmNetworkArgs = difi_core::params::decode_params(kwargs)?;
        args.precond = Some(precond);
        Ok(args)
    }

    /// `self` with the values `over` gives replacing its own.
    pub fn overridden_by(self, over: &EdmNetworkArgs) -> Self {
        macro_rules! pick {
            ($($field:ident),*) => { EdmNetworkArgs { $($field: over.$field.clone().or(self.$field)),* } };
        }
        pick!(
            precond,
            img_resolution,
            img_channels,
            label_dim,
            augment_dim,
            use_fp16,
            sigma_min,
            sigma_max,
            sigma_data,
            beta_d,
            beta_min,
            m,
            epsilon_t,
            model_type,
            model_channels,
            channel_mult,
            channel_mult_emb,
            num_blocks,
            attn_resolutions,
            dropout,
            label_dropout,
            embedding_type,
            channel_mult_noise,
            encoder_type,
            decoder_type,
            resample_filter
        )
    }

    /// Fills in EDM's defaults and checks the result.
    pub fn resolve(&self) -> Result<EdmNetworkConfig> {
        let precond =
            self.precond.ok_or_else(|| Error::config("precond", "missing (EDMPrecond, VPPrecond or VEPrecond)"))?;
        let img_resolution = self.img_resolution.ok_or_else(|| Error::config("img_resolution", "missing"))?;
        let img_channels = self.img_channels.ok_or_else(|| Error::config("img_channels", "missing"))?;
        let model_type = self.model_type.unwrap_or(precond.default_model_type());
        let song = model_type == ModelType::SongUNet;
        let config = EdmNetworkConfig {
            precond,
            img_resolution,
            img_channels,
            label_dim: self.label_dim.unwrap_or(0),
            augment_dim: self.augment_dim.unwrap_or(0),
            use_fp16: self.use_fp16.unwrap_or(false),
            sigma_min: self.sigma_min.unwrap_or(match precond {
                PrecondKind::Ve => 0.02,
                _ => 0.0,
            }),
            sigma_max: self.sigma_max.unwrap_or(match precond {
                PrecondKind::Ve => 100.0,
                _ => f64::INFINITY,
            }),
            sigma_data: self.sigma_data.unwrap_or(0.5),
            beta_d: self.beta_d.unwrap_or(19.9),
            beta_min: self.beta_min.unwrap_or(0.1),
            m: self.m.unwrap_or(1000.0),
            epsilon_t: self.epsilon_t.unwrap_or(1e-5),
            model_type,
            model_channels: self.model_channels.unwrap_or(if song { 128 } else { 192 }),
            channel_mult: self.channel_mult.clone().unwrap_or(if song { vec![1, 2, 2, 2] } else { vec![1, 2, 3, 4] }),
            channel_mult_emb: self.channel_mult_emb.unwrap_or(4),
            num_blocks: self.num_blocks.unwrap_or(if song { 4 } else { 3 }),
            attn_resolutions: self.attn_resolutions.clone().unwrap_or(if song { vec![16] } else { vec![32, 16, 8] }),
            dropout: self.dropout.unwrap_or(0.1),
            label_dropout: self.label_dropout.unwrap_or(0.0),
            embedding_type: self.embedding_type.unwrap_or(EmbeddingType::Positional),
            channel_mult_noise: self.channel_mult_noise.unwrap_or(1),
            encoder_type: self.encoder_type.unwrap_or(EncoderType::Standard),
            decoder_type: self.decoder_type.unwrap_or(DecoderType::Standard),
            resample_filter: self.resample_filter.clone().unwrap_or_else(|| vec![1.0, 1.0]),
        };
        if !song {
            for (key, given) in [
                ("embedding_type", self.embedding_type.is_some()),
                ("channel_mult_noise", self.channel_mult_noise.is_some()),
                ("encoder_type", self.encoder_type.is_some()),
                ("decoder_type", self.decoder_type.is_some()),
                ("resample_filter", self.resample_filter.is_some()),
            ] {
                if given {
                    return Err(Error::config(key, "is a SongUNet argument; DhariwalUNet does not take it"));
                }
            }
        }
        config.validate()?;
        Ok(config)
    }
}

impl EdmNetworkConfig {
    /// The same network as optional arguments: every one given, except
    /// SongUNet's own for a DhariwalUNet.
    pub fn to_args(&self) -> EdmNetworkArgs {
        let value = serde_json::to_value(self).expect("configs serialise");
        let mut args: EdmNetworkArgs = difi_core::params::decode_params(&value).expect("a config is valid args");
        if self.model_type == ModelType::DhariwalUNet {
            args.embedding_type = None;
            args.channel_mult_noise = None;
            args.encoder_type = None;
            args.decoder_type = None;
            args.resample_filter = None;
        }
        args
    }

    fn validate(&self) -> Result<()> {
        let levels = self.channel_mult.len() as u32;
        if self.img_resolution < 1 || levels == 0 || self.img_resolution % (1 << (levels - 1)) != 0 {
            return Err(Error::config(
                "img_resolution",
                format!("{} is not divisible by 2^(levels − 1) for {levels} levels", self.img_resolution),
            ));
        }
        for (key, value) in [
            ("img_channels", self.img_channels),
            ("model_channels", self.model_channels),
            ("num_blocks", self.num_blocks),
            ("channel_mult_emb", self.channel_mult_emb),
            ("channel_mult_noise", self.channel_mult_noise),
        ] {
            if value < 1 {
                return Err(Error::config(key, format!("must be at least 1, got {value}")));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("dropout", "must lie in [0, 1)"));
        }
        Ok(())
    }

    /// A lower bound on the number of parameters the network has, computed
    /// without building it. Each level has `num_blocks` encoder and
    /// `num_blocks + 1` decoder blocks of `c = model_channels × mult`
    /// output channels; each block's second 3×3 convolution is `c → c`, and
    /// so is the first one of every encoder block but the level's first
    /// (its input is the previous block's output) and of every decoder block
    /// but the level's first (at least `c` inputs, plus a skip): `4 ×
    /// num_blocks` convolutions of `9c²` weights per level, 50–80% of the
    /// total for EDM's presets. A checkpoint holding fewer values cannot be
    /// this network, which is known before gigabytes of weights are
    /// allocated for an architecture a file's metadata made up.
    pub fn parameter_lower_bound(&self) -> u128 {
        let convolutions = 4u128.saturating_mul(self.num_blocks.max(0) as u128);
        self.channel_mult
            .iter()
            .map(|&mult| {
                let channels = (self.model_channels.max(0) as u128).saturating_mul(mult.max(0) as u128);
                channels.saturating_mul(channels).saturating_mul(9).saturating_mul(convolutions)
            })
            .fold(0u128, u128::saturating_add)
    }

    /// The preset named `name` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        let args = preset_args(name).ok_or_else(|| {
            Error::config("preset", format!("unknown preset `{name}` (known: {})", PRESETS.join(", ")))
        })?;
        args.resolve()
    }
}

/// Presets: the architectures of NVIDIA's released EDM checkpoints
/// (`edm-<name>.pkl`). "vp" is DDPM++, "ve" NCSN++, both with EDMPrecond, as
/// EDM's `train.py --arch=ddpmpp|ncsnpp --precond=edm` builds them.
pub const PRESETS: [&str; 9] = [
    "cifar10-32x32-cond-vp",
    "cifar10-32x32-cond-ve",
    "cifar10-32x32-uncond-vp",
    "cifar10-32x32-uncond-ve",
    "ffhq-64x64-uncond-vp",
    "ffhq-64x64-uncond-ve",
    "afhqv2-64x64-uncond-vp",
    "afhqv2-64x64-uncond-ve",
    "imagenet-64x64-cond-adm",
];

fn preset_args(name: &str) -> Option<EdmNetworkArgs> {
    let ddpmpp = EdmNetworkArgs {
        model_type: Some(ModelType::SongUNet),
        embedding_type: Some(EmbeddingType::Positional),
        encoder_type: Some(EncoderType::Standard),
        decoder_type: Some(DecoderType::Standard),
        channel_mult_noise: Some(1),
        resample_filter: Some(vec![1.0, 1.0]),
        model_channels: Some(128),
        channel_mult: Some(vec![2, 2, 2]),
        ..Default::default()
    };
    let ncsnpp = EdmNetworkArgs {
        embedding_type: Some(EmbeddingType::Fourier),
        encoder_type: Some(EncoderType::Residual),
        channel_mult_noise: Some(2),
        resample_filter: Some(vec![1.0, 3.0, 3.0, 1.0]),
        ..ddpmpp.clone()
    };
    let base = |arch: &EdmNetworkArgs, resolution: i64, labels: i64| EdmNetworkArgs {
        precond: Some(PrecondKind::Edm),
        img_resolution: Some(resolution),
        img_channels: Some(3),
        label_dim: Some(labels),
        ..arch.clone()
    };
    let cifar = |arch: &EdmNetworkArgs, labels: i64| EdmNetworkArgs {
        augment_dim: Some(9),
        dropout: Some(0.13),
        ..base(arch, 32, labels)
    };
    let faces = |arch: &EdmNetworkArgs, dropout: f64| EdmNetworkArgs {
        augment_dim: Some(9),
        dropout: Some(dropout),
        channel_mult: Some(vec![1, 2, 2, 2]),
        ..base(arch, 64, 0)
    };
    Some(match name {
        "cifar10-32x32-cond-vp" => cifar(&ddpmpp, 10),
        "cifar10-32x32-cond-ve" => cifar(&ncsnpp, 10),
        "cifar10-32x32-uncond-vp" => cifar(&ddpmpp, 0),
        "cifar10-32x32-uncond-ve" => cifar(&ncsnpp, 0),
        "ffhq-64x64-uncond-vp" => faces(&ddpmpp, 0.05),
        "ffhq-64x64-uncond-ve" => faces(&ncsnpp, 0.05),
        "afhqv2-64x64-uncond-vp" => faces(&ddpmpp, 0.25),
        "afhqv2-64x64-uncond-ve" => faces(&ncsnpp, 0.25),
        "imagenet-64x64-cond-adm" => EdmNetworkArgs {
            model_type: Some(ModelType::DhariwalUNet),
            model_channels: Some(192),
            channel_mult: Some(vec![1, 2, 3, 4]),
            dropout: Some(0.1),
            use_fp16: Some(true),
            ..base(&EdmNetworkArgs::default(), 64, 1000)
        },
        _ => return None,
    })
}
