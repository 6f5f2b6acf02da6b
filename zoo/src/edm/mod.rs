//! `edm`: NVIDIA's EDM networks (Karras et al. 2022, `training/networks.py`),
//! exact to the reference and loaded from its checkpoints.
//!
//! | EDM | difi |
//! | --- | --- |
//! | `EDMPrecond`, `VPPrecond`, `VEPrecond` | [`crate::precond::Precond`], [`network::EdmNetwork`] |
//! | `SongUNet` (DDPM++, NCSN++) | [`song_unet::SongUNet`] |
//! | `DhariwalUNet` (ADM) | [`dhariwal_unet::DhariwalUNet`] |
//! | `UNetBlock`, `Conv2d`, `Linear`, `GroupNorm`, embeddings | [`layers`] |
//!
//! Parameter and buffer names equal EDM's `state_dict()` keys
//! (`model.enc.32x32_block0.conv0.weight`), so converted checkpoints load one
//! to one. A checkpoint written by `difi convert edm` carries the network's
//! architecture in its metadata (`precond` and `kwargs`, EDM's constructor
//! arguments), so `(plugin: "edm", params: (checkpoint: "x.safetensors"))` is
//! a complete teacher.

// Activations are combined out of place (`x = x + y`), as EDM does: `+=` on
// a tch tensor runs in place, which would change tensors kept as skip
// connections (shallow clones) or saved by autograd for the backward pass.
#![allow(clippy::assign_op_pattern)]

pub mod config;
pub mod convert;
pub mod dhariwal_unet;
pub mod fixture;
pub mod layers;
pub mod network;
pub mod song_unet;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_core::params::{Params, decode_params};
use difi_core::registry::{BuildContext, ResolveContext};
use difi_formats::weights;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use config::{EdmNetworkArgs, EdmNetworkConfig, PrecondKind};
use network::{EdmNetwork, Precision};

/// The preset used when a config names neither a preset, a network nor a checkpoint.
pub const DEFAULT_PRESET: &str = "cifar10-32x32-uncond-vp";

/// Parameters of `edm`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmParams {
    /// The architecture of a released EDM checkpoint (`cifar10-32x32-cond-vp`, …).
    pub preset: Option<String>,
    /// Architecture in EDM's constructor names; overrides the checkpoint's and the preset's.
    pub network: EdmNetworkArgs,
    /// Weights under EDM's `state_dict()` names (safetensors, from `difi convert edm`).
    pub checkpoint: Option<PathBuf>,
    /// `auto`, `fp32`, `fp16` or `bf16` for the backbone.
    pub precision: Precision,
}

impl EdmParams {
    /// The architecture: the checkpoint's metadata, then the preset, then
    /// `network`, each overriding the one before, with EDM's defaults.
    pub fn architecture(&self, base_dir: &Path) -> Result<EdmNetworkConfig> {
        let mut args = EdmNetworkArgs::default();
        if let Some(path) = &self.checkpoint {
            let path = base_dir.join(path);
            // A config that names its architecture can be checked before its
            // checkpoint is downloaded; building the network still needs it.
            let described = self.preset.is_some() || self.network.precond.is_some();
            if !path.exists() && described {
                tracing::warn!("{} does not exist yet; the architecture comes from the config", path.display());
            } else if let Some(from_file) = architecture_in_metadata(&path)? {
                args = from_file;
            }
        }
        let preset = self
            .preset
            .clone()
            .or_else(|| (args.precond.is_none() && self.network.precond.is_none()).then(|| DEFAULT_PRESET.to_string()));
        if let Some(name) = &preset {
            args = args.overridden_by(&EdmNetworkConfig::preset(name)?.to_args());
        }
        args.overridden_by(&self.network).resolve().map_err(|e| e.under("network"))
    }
}

/// The architecture a safetensors file records (`precond` + `kwargs`
/// metadata, as `difi convert edm` and EDM's fixtures write), if any.
pub fn architecture_in_metadata(path: &Path) -> Result<Option<EdmNetworkArgs>> {
    let metadata = weights::read_metadata(path)?;
    let (Some(precond), Some(kwargs)) = (metadata.get("precond"), metadata.get("kwargs")) else {
        return Ok(None);
    };
    let precond = PrecondKind::from_class_name(precond).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let kwargs: serde_json::Value = serde_json::from_str(kwargs)
        .map_err(|e| Error::checkpoint(path, format!("metadata `kwargs` is not JSON: {e}")))?;
    EdmNetworkArgs::from_kwargs(precond, &kwargs)
        .map(Some)
        .map_err(|e| Error::checkpoint(path, format!("metadata `kwargs`: {e}")))
}

fn resolve(params: &Params, ctx: &ResolveContext<'_>) -> Result<Params> {
    let mut typed: EdmParams = decode_params(params)?;
    let architecture = typed.architecture(ctx.base_dir)?;
    if typed.preset.is_none() && typed.checkpoint.is_none() && typed.network.precond.is_none() {
        typed.preset = Some(DEFAULT_PRESET.to_string());
    }
    typed.network = architecture.to_args();
    serde_json::to_value(&typed).map_err(|e| Error::config("", e.to_string()))
}

fn build_network(params: EdmParams, ctx: &BuildContext<'_>) -> Result<EdmNetwork> {
    let architecture = params.architecture(ctx.base_dir)?;
    // The file is read (and measured against the architecture) before the
    // network is allocated: its size is what a stranger's file can claim.
    let checkpoint = match &params.checkpoint {
        Some(path) => {
            let path = ctx.base_dir.join(path);
            // EDM's state_dict() keys all lie under `model.`; anything else in
            // the file (reference inputs and outputs) is not the network's.
            let tensors: HashMap<String, Tensor> =
                weights::load(&path)?.into_map().into_iter().filter(|(k, _)| k.starts_with("model.")).collect();
            ensure_enough_values(&architecture, tensors.values(), &path)?;
            Some((path, tensors))
        }
        None => None,
    };
    let mut network = EdmNetwork::new(&architecture, params.precision, ctx.device)?;
    match checkpoint {
        Some((path, tensors)) => network.load_weights(&tensors, &path)?,
        None => tracing::warn!("edm network without a checkpoint: EDM's random initialisation"),
    }
    Ok(network)
}

/// Refuses `tensors` (from `path`) for `architecture` when they hold fewer
/// values than the network's [lower bound](EdmNetworkConfig::parameter_lower_bound).
pub fn ensure_enough_values<'a>(
    architecture: &EdmNetworkConfig,
    tensors: impl IntoIterator<Item = &'a Tensor>,
    path: &Path,
) -> Result<()> {
    weights::ensure_holds_values(tensors, architecture.parameter_lower_bound(), path, "network", || {
        format!(
            "{:?}, {} channels × {:?}",
            architecture.model_type, architecture.model_channels, architecture.channel_mult
        )
    })
}

difi_core::register_plugin!(
    ScoreModel,
    "edm",
    EdmParams,
    |params, ctx| Ok(Box::new(build_network(params, ctx)?)),
    resolve = resolve
);
