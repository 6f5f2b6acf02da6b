//! A StyleGAN2-ADA `Generator`: mapping and synthesis networks in one
//! VarStore under the reference's `state_dict()` names, usable as difi's
//! one-step generator.

use std::collections::HashMap;
use std::path::Path;

use difi_core::error::{Result, TorchContext};
use difi_core::traits::Generator;
use difi_formats::weights;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::{GeneratorConfig, NoiseMode};
use super::mapping::{MappingNetwork, Truncation};
use super::synthesis::SynthesisNetwork;

/// How the generator samples: truncation of W and the synthesis noise.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sampling {
    pub truncation: Truncation,
    pub noise_mode: NoiseMode,
}

/// `G(z, c)`: the StyleGAN2-ADA generator, in float32.
pub struct StyleGan2Generator {
    vs: VarStore,
    config: GeneratorConfig,
    mapping: MappingNetwork,
    synthesis: SynthesisNetwork,
    sampling: Sampling,
}

impl StyleGan2Generator {
    /// Builds the generator with the reference's initialisation on `device`.
    pub fn new(config: &GeneratorConfig, sampling: Sampling, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let synthesis = SynthesisNetwork::new(&(&root / "synthesis"), config)?;
        let mapping = MappingNetwork::new(&(&root / "mapping"), config)?;
        Ok(StyleGan2Generator { vs, config: config.clone(), mapping, synthesis, sampling })
    }

    /// The architecture.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Truncation and noise used by [`Generator::generate`].
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    pub fn set_sampling(&mut self, sampling: Sampling) {
        self.sampling = sampling;
    }

    /// Number of trainable parameters (the reference's `sum(p.numel() for p in G.parameters())`).
    pub fn parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// Copies weights named as the reference's `state_dict()` into the
    /// generator: every key must be present with its shape, and no other.
    pub fn load_weights(&mut self, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        weights::copy_into(&mut self.vs, tensors, source)
    }

    /// The mapping network (W, truncation, the tracked `w_avg`).
    pub fn mapping(&self) -> &MappingNetwork {
        &self.mapping
    }

    /// The truncated W vectors `[N, num_ws, w_dim]` of `z` `[N, z_dim]` and
    /// one-hot `c` `[N, c_dim]` (conditional generators).
    pub fn map(&self, z: &Tensor, c: Option<&Tensor>, truncation: Truncation) -> Result<Tensor> {
        self.mapping.forward(&z.f_to_device(self.vs.device()).ctx("z")?, c, truncation)
    }

    /// The image `[N, img_channels, R, R]` of W vectors `[N, num_ws, w_dim]`.
    pub fn synthesize(&self, ws: &Tensor, noise_mode: NoiseMode) -> Result<Tensor> {
        self.synthesis.forward(ws, noise_mode)
    }

    /// `G(z, c)` with the given sampling: `[N, img_channels, R, R]`, float32,
    /// in the data range of the training images scaled to [−1, 1] (not clamped).
    pub fn forward(&self, z: &Tensor, c: Option<&Tensor>, sampling: Sampling) -> Result<Tensor> {
        let c = c.map(|c| c.f_to_device(self.vs.device()).ctx("c")).transpose()?;
        let ws = self.map(z, c.as_ref(), sampling.truncation)?;
        self.synthesize(&ws, sampling.noise_mode)
    }
}

impl Generator for StyleGan2Generator {
    fn latent_shape(&self) -> Vec<i64> {
        vec![self.config.z_dim]
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.config.img_channels, self.config.img_resolution, self.config.img_resolution]
    }

    fn label_dim(&self) -> i64 {
        self.config.c_dim
    }

    fn generate(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let kind = z.f_kind().ctx("stylegan2")?;
        // An unconditional generator ignores labels, as the reference ignores `c` when c_dim = 0.
        let labels = if self.config.c_dim > 0 { labels } else { None };
        let image = self.forward(z, labels, self.sampling)?;
        match kind {
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => image.f_to_kind(kind).ctx("stylegan2 output"),
            _ => Ok(image),
        }
    }

    fn var_store(&self) -> &VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }
}
