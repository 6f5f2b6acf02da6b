//! An EDM network: a preconditioning around a SongUNet or DhariwalUNet
//! backbone, with its own VarStore, usable as teacher, fake score or the
//! backbone of a generator.

use std::collections::HashMap;
use std::path::Path;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::ScoreModel;
use difi_formats::weights;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::{EdmNetworkConfig, ModelType, PrecondKind};
use super::dhariwal_unet::DhariwalUNet;
use super::song_unet::SongUNet;
use crate::precond::{Precond, vp_sigma};

/// The dtype the backbone runs in (preconditioning and output stay float32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float16 where the network says `use_fp16` and runs on CUDA (as EDM), else float32.
    #[default]
    Auto,
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    fn kind(self, use_fp16: bool, device: Device) -> Kind {
        match self {
            Precision::Auto if use_fp16 && device.is_cuda() => Kind::Half,
            Precision::Auto | Precision::Fp32 => Kind::Float,
            Precision::Fp16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

enum Backbone {
    Song(SongUNet),
    Dhariwal(DhariwalUNet),
}

/// An EDM network (`EDMPrecond`, `VPPrecond` or `VEPrecond` around its backbone).
pub struct EdmNetwork {
    vs: VarStore,
    config: EdmNetworkConfig,
    backbone: Backbone,
    precond: Precond,
    kind: Kind,
    sigma_range: (f64, f64),
    train: bool,
}

impl EdmNetwork {
    /// Builds the network with EDM's initialisation on `device`.
    pub fn new(config: &EdmNetworkConfig, precision: Precision, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let model = vs.root() / "model";
        let backbone = match config.model_type {
            ModelType::SongUNet => Backbone::Song(SongUNet::new(&model, config)?),
            ModelType::DhariwalUNet => Backbone::Dhariwal(DhariwalUNet::new(&model, config)?),
        };
        let (precond, sigma_range) = match config.precond {
            PrecondKind::Edm => (Precond::Edm { sigma_data: config.sigma_data }, (config.sigma_min, config.sigma_max)),
            PrecondKind::Vp => (
                Precond::Vp { beta_d: config.beta_d, beta_min: config.beta_min, m: config.m },
                (
                    vp_sigma(config.epsilon_t, config.beta_d, config.beta_min),
                    vp_sigma(1.0, config.beta_d, config.beta_min),
                ),
            ),
            PrecondKind::Ve => (Precond::Ve, (config.sigma_min, config.sigma_max)),
        };
        Ok(EdmNetwork {
            vs,
            config: config.clone(),
            backbone,
            precond,
            kind: precision.kind(config.use_fp16, device),
            sigma_range,
            train: false,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &EdmNetworkConfig {
        &self.config
    }

    /// The dtype the backbone runs in.
    pub fn compute_kind(&self) -> Kind {
        self.kind
    }

    /// The precision the backbone runs in, `Auto` resolved.
    pub fn backbone_precision(&self) -> Precision {
        match self.kind {
            Kind::Half => Precision::Fp16,
            Kind::BFloat16 => Precision::Bf16,
            _ => Precision::Fp32,
        }
    }

    /// Number of trainable parameters (EDM's `sum(p.numel() for p in net.parameters())`).
    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// Copies weights named as EDM's `state_dict()` into the network: every
    /// key must be present with its shape, and no other key may be.
    pub fn load_weights(&mut self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        weights::copy_into(&mut self.vs, tensors, source)
    }

    /// `D(x; σ)` as EDM's preconditioners compute it, with augmentation
    /// labels for the backbone. `x` `[N, C, H, W]`, `sigma` `[N]` or `[1]`,
    /// `class_labels` `[N, label_dim]` (zeros when absent on a conditional
    /// network, as EDM), `augment_labels` `[N, augment_dim]`. Returns float32.
    pub fn forward(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let size = x.size();
        if size.len() != 4 || size[1] != c.img_channels || size[2] != c.img_resolution || size[3] != c.img_resolution {
            return Err(Error::Shape {
                what: "EDM network input".into(),
                expected: vec![-1, c.img_channels, c.img_resolution, c.img_resolution],
                actual: size,
            });
        }
        let x = x.f_to_kind(Kind::Float).ctx("edm input")?;
        let labels = if c.label_dim == 0 {
            None
        } else {
            Some(match class_labels {
                Some(labels) => {
                    labels.f_to_kind(Kind::Float).ctx("labels")?.f_reshape([-1, c.label_dim]).ctx("labels")?
                }
                None => Tensor::f_zeros([1, c.label_dim], (Kind::Float, x.device())).ctx("labels")?,
            })
        };
        let coefficients = self.precond.coefficients(sigma, 4)?;
        let input = (&x * &coefficients.c_in).f_to_kind(self.kind).ctx("edm input")?;
        let noise_labels = coefficients.c_noise.f_flatten(0, -1).ctx("noise labels")?;
        let f = match &self.backbone {
            Backbone::Song(net) => net.forward(&input, &noise_labels, labels.as_ref(), augment_labels, self.train)?,
            Backbone::Dhariwal(net) => {
                net.forward(&input, &noise_labels, labels.as_ref(), augment_labels, self.train)?
            }
        };
        Ok(coefficients.c_skip * x + coefficients.c_out * f.f_to_kind(Kind::Float).ctx("edm output")?)
    }
}

impl ScoreModel for EdmNetwork {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let kind = x.f_kind().ctx("edm")?;
        self.forward(x, sigma, labels, None)?.f_to_kind(kind).ctx("edm output")
    }

    fn denoise_augmented(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        labels: Option<&Tensor>,
        augment_labels: &Tensor,
    ) -> Result<Tensor> {
        let expected = [x.size().first().copied().unwrap_or(0), self.config.augment_dim];
        if augment_labels.size() != expected {
            return Err(Error::Shape {
                what: "augmentation labels (the network's augment_dim)".into(),
                expected: expected.to_vec(),
                actual: augment_labels.size(),
            });
        }
        let kind = x.f_kind().ctx("edm")?;
        self.forward(x, sigma, labels, Some(augment_labels))?.f_to_kind(kind).ctx("edm output")
    }

    fn augment_dim(&self) -> i64 {
        self.config.augment_dim
    }

    fn sigma_data(&self) -> f64 {
        self.config.sigma_data
    }

    fn sigma_range(&self) -> (f64, f64) {
        self.sigma_range
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.config.img_channels, self.config.img_resolution, self.config.img_resolution]
    }

    fn label_dim(&self) -> i64 {
        self.config.label_dim
    }

    fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    /// Dropout and label dropout act in train mode only.
    fn draws_random_numbers(&self) -> bool {
        let label_dropout = self.config.label_dim > 0 && self.config.label_dropout > 0.0;
        self.train && (self.config.dropout > 0.0 || label_dropout)
    }

    fn set_activation_checkpointing(&mut self, on: bool) -> bool {
        match &mut self.backbone {
            Backbone::Song(net) => net.set_checkpoint_blocks(on),
            Backbone::Dhariwal(net) => net.set_checkpoint_blocks(on),
        }
        true
    }

    fn var_store(&self) -> Option<&VarStore> {
        Some(&self.vs)
    }

    fn var_store_mut(&mut self) -> Option<&mut VarStore> {
        Some(&mut self.vs)
    }
}
