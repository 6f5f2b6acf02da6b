//! `stylegan2`: the StyleGAN2-ADA generator (Karras et al. 2020,
//! NVlabs/stylegan2-ada-pytorch `training/networks.py`), exact to the
//! reference and loaded from its network pickles, as a one-step generator.
//!
//! | reference | difi |
//! | --- | --- |
//! | `Generator` | [`network::StyleGan2Generator`] |
//! | `MappingNetwork`, `normalize_2nd_moment` | [`mapping`] |
//! | `SynthesisNetwork`, `SynthesisBlock` | [`synthesis`] |
//! | `SynthesisLayer`, `ToRGBLayer`, `FullyConnectedLayer`, `Conv2dLayer` (resnet skip), `modulated_conv2d`, `bias_act` | [`layers`] |
//! | `Discriminator`, `DiscriminatorBlock`, `DiscriminatorEpilogue`, `MinibatchStdLayer` | [`discriminator`] |
//! | `Conv2dLayer` (discriminator) | [`layers::Conv2dLayer`] |
//! | `upfirdn2d`, `upsample2d`, `downsample2d`, `conv2d_resample` (up or down = 2) | [`crate::nn::resample`] |
//!
//! Parameter and buffer names equal the reference's `state_dict()` keys
//! (`mapping.fc0.weight`, `mapping.w_avg`, `synthesis.b4.const`,
//! `synthesis.b8.conv0.noise_const`, `synthesis.b8.resample_filter`, …). A
//! file written by `difi convert stylegan2` carries the constructor arguments
//! as `kwargs` metadata, so `(plugin: "stylegan2", params: (checkpoint:
//! "g.safetensors"))` is a complete generator. Every resolution runs in
//! float32 (`num_fp16_res` is accepted and does not change that: the values
//! are those of the reference run with `force_fp32=True`).

// Activations are combined out of place (`x = x + y`): `+=` on a tch tensor
// runs in place, which would change tensors autograd saved for the backward pass.
#![allow(clippy::assign_op_pattern)]

pub mod config;
pub mod convert;
pub mod discriminator;
pub mod fixture;
pub mod layers;
pub mod mapping;
pub mod network;
pub mod synthesis;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_core::registry::BuildContext;
use difi_formats::weights;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use config::{GeneratorArgs, GeneratorConfig, NoiseMode};
use mapping::Truncation;
use network::{Sampling, StyleGan2Generator};

/// Parameters of `stylegan2`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StyleGan2Params {
    /// Weights under the reference's `state_dict()` names, with `kwargs`
    /// metadata (safetensors, from `difi convert stylegan2`).
    pub checkpoint: Option<PathBuf>,
    /// A preset architecture (`cifar-32x32-cond`, …), for a generator without checkpoint.
    pub preset: Option<String>,
    /// The constructor arguments in the reference's names; replaces the
    /// checkpoint's `kwargs` and the preset when given.
    pub generator: Option<GeneratorArgs>,
    /// Pulls W towards `w_avg`; 1 (the default) is no truncation, as in training.
    pub truncation_psi: f64,
    /// Truncates only the first this many W vectors (all when absent).
    pub truncation_cutoff: Option<i64>,
    /// `random` (the default: the distribution the GAN was trained to
    /// produce, reproducible through difi's seeded generators), `const` or `none`.
    pub noise_mode: NoiseMode,
}

impl Default for StyleGan2Params {
    fn default() -> Self {
        StyleGan2Params {
            checkpoint: None,
            preset: None,
            generator: None,
            truncation_psi: 1.0,
            truncation_cutoff: None,
            noise_mode: NoiseMode::Random,
        }
    }
}

impl StyleGan2Params {
    /// The architecture: `generator`, else the preset, else the checkpoint's `kwargs`.
    pub fn architecture(&self, base_dir: &Path) -> Result<GeneratorConfig> {
        if let Some(args) = &self.generator {
            return args.resolve().map_err(|e| e.under("generator"));
        }
        if let Some(name) = &self.preset {
            return GeneratorConfig::preset(name);
        }
        let path = self.checkpoint.as_ref().ok_or_else(|| {
            Error::config("checkpoint", "stylegan2 needs a checkpoint, a preset or the generator's arguments")
        })?;
        let path = base_dir.join(path);
        let args = architecture_in_metadata(&path)?.ok_or_else(|| {
            Error::checkpoint(&path, "no `kwargs` metadata; give the architecture as `generator: (…)`")
        })?;
        args.resolve().map_err(|e| Error::checkpoint(&path, format!("metadata `kwargs`: {e}")))
    }

    fn sampling(&self) -> Result<Sampling> {
        if !self.truncation_psi.is_finite() {
            return Err(Error::config("truncation_psi", "must be finite"));
        }
        if self.truncation_cutoff.is_some_and(|c| c < 0) {
            return Err(Error::config("truncation_cutoff", "must be at least 0"));
        }
        Ok(Sampling {
            truncation: Truncation { psi: self.truncation_psi, cutoff: self.truncation_cutoff },
            noise_mode: self.noise_mode,
        })
    }
}

/// The constructor arguments a safetensors file records (`kwargs` metadata,
/// as `difi convert stylegan2` and the reference fixtures write), if any.
pub fn architecture_in_metadata(path: &Path) -> Result<Option<GeneratorArgs>> {
    let metadata = weights::read_metadata(path)?;
    let Some(kwargs) = metadata.get("kwargs") else {
        return Ok(None);
    };
    let kwargs: serde_json::Value = serde_json::from_str(kwargs)
        .map_err(|e| Error::checkpoint(path, format!("metadata `kwargs` is not JSON: {e}")))?;
    GeneratorArgs::from_kwargs(&kwargs)
        .map(Some)
        .map_err(|e| Error::checkpoint(path, format!("metadata `kwargs`: {e}")))
}

/// Whether the file's metadata describes a StyleGAN2 generator (`kwargs`
/// with `z_dim` and `w_dim`, and no EDM `precond`).
pub fn is_generator_file(path: &Path) -> Result<bool> {
    let metadata = weights::read_metadata(path)?;
    if metadata.contains_key("precond") {
        return Ok(false);
    }
    let Some(kwargs) = metadata.get("kwargs") else {
        return Ok(false);
    };
    let kwargs: serde_json::Value = serde_json::from_str(kwargs).unwrap_or_default();
    Ok(kwargs.get("z_dim").is_some() && kwargs.get("w_dim").is_some())
}

/// The network's own tensors of a file (which may hold reference inputs and outputs too).
pub fn generator_tensors(tensors: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter(|(k, _)| k.starts_with("mapping.") || k.starts_with("synthesis."))
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect()
}

/// Refuses `tensors` (from `path`) for `config` unless they hold at least
/// the generator's number of values.
pub fn ensure_enough_values<'a>(
    config: &GeneratorConfig,
    tensors: impl IntoIterator<Item = &'a Tensor>,
    path: &Path,
) -> Result<()> {
    weights::ensure_holds_values(tensors, config.value_count(), path, "generator", || {
        format!("StyleGAN2 {}x{}, w_dim {}", config.img_resolution, config.img_resolution, config.w_dim)
    })
}

/// Builds the generator of `params` on `device`, with the checkpoint's weights when given.
pub fn build_generator(params: &StyleGan2Params, base_dir: &Path, device: tch::Device) -> Result<StyleGan2Generator> {
    let config = params.architecture(base_dir)?;
    let sampling = params.sampling()?;
    let checkpoint = match &params.checkpoint {
        Some(path) => {
            let path = base_dir.join(path);
            let tensors = generator_tensors(&weights::load(&path)?.into_map());
            ensure_enough_values(&config, tensors.values(), &path)?;
            Some((path, tensors))
        }
        None => None,
    };
    let mut generator = StyleGan2Generator::new(&config, sampling, device)?;
    match checkpoint {
        Some((path, tensors)) => generator.load_weights(&tensors, &path)?,
        None => tracing::warn!("stylegan2 generator without a checkpoint: the reference's random initialisation"),
    }
    Ok(generator)
}

fn build(params: StyleGan2Params, ctx: &BuildContext<'_>) -> Result<StyleGan2Generator> {
    build_generator(&params, ctx.base_dir, ctx.device)
}

difi_core::register_plugin!(Generator, "stylegan2", StyleGan2Params, |params, ctx| Ok(Box::new(build(params, ctx)?)));
