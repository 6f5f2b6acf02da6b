//! Checks a StyleGAN2 generator against reference outputs stored in a
//! safetensors file (the format of `tests/fixtures/stylegan2/`): weights under
//! the reference's `state_dict()` names, inputs `z` and (conditional
//! generators) `c`, outputs `expected_ws` (the mapping, truncated by the
//! `truncation_psi` metadata), `expected_img` (`noise_mode='const'`) and
//! `expected_img_nonoise` (`noise_mode='none'`), and the constructor
//! arguments as `kwargs` metadata.

use std::path::Path;

use difi_core::error::{Error, Result, TorchContext};
use difi_formats::weights;
use serde::Serialize;
use tch::{Device, Tensor};

use super::config::NoiseMode;
use super::mapping::Truncation;
use super::network::{Sampling, StyleGan2Generator};
use super::{architecture_in_metadata, ensure_enough_values, generator_tensors};
use crate::edm::fixture::relative_l2;

/// Relative L2 errors of a generator against a reference file.
#[derive(Clone, Debug, Serialize)]
pub struct GeneratorReport {
    /// `‖ws − ws_ref‖₂ / ‖ws_ref‖₂` of the mapping (truncated) against `expected_ws`.
    pub ws_rel_l2: f64,
    /// The image with the stored noise against `expected_img`.
    pub img_rel_l2: f64,
    /// The image without noise against `expected_img_nonoise`.
    pub img_nonoise_rel_l2: f64,
    /// The file's `truncation_psi`.
    pub truncation_psi: f64,
    /// Trainable parameters of the generator.
    pub parameters: i64,
}

impl GeneratorReport {
    /// The largest of the three errors.
    pub fn worst(&self) -> f64 {
        self.ws_rel_l2.max(self.img_rel_l2).max(self.img_nonoise_rel_l2)
    }
}

/// Builds the generator a reference file describes, loads its weights and
/// compares W and both images with the reference, in float32 on `device`.
pub fn verify(path: &Path, device: Device) -> Result<GeneratorReport> {
    let args = architecture_in_metadata(path)?
        .ok_or_else(|| Error::checkpoint(path, "no `kwargs` metadata describing the generator"))?;
    let config = args.resolve().map_err(|e| Error::checkpoint(path, format!("metadata `kwargs`: {e}")))?;
    if device.is_cuda() {
        // Full float32 on the GPU, as the reference runs.
        difi_torch_ext::set_allow_tf32(false)
            .map_err(|e| Error::Plugin { plugin: "libtorch".into(), message: e.to_string() })?;
    }
    let file = weights::load(path)?;
    let truncation_psi = match file.metadata.get("truncation_psi") {
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|psi| psi.is_finite())
            .ok_or_else(|| Error::checkpoint(path, format!("metadata `truncation_psi` is not a number: {text}")))?,
        None => 1.0,
    };
    let tensors = file.into_map();
    let weights = generator_tensors(&tensors);
    ensure_enough_values(&config, weights.values(), path)?;
    let mut generator = StyleGan2Generator::new(&config, Sampling::default(), device)?;
    generator.load_weights(&weights, path)?;

    let required = |name: &str| -> Result<Tensor> {
        tensors
            .get(name)
            .ok_or_else(|| Error::checkpoint(path, format!("no reference tensor `{name}`")))?
            .f_to_device(device)
            .ctx(name)
    };
    let z = required("z")?;
    let c = if config.c_dim > 0 { Some(required("c")?) } else { None };
    let truncation = Truncation { psi: truncation_psi, cutoff: None };
    let (ws, img, img_nonoise) = tch::no_grad(|| -> Result<(Tensor, Tensor, Tensor)> {
        let ws = generator.map(&z, c.as_ref(), truncation)?;
        let img = generator.synthesize(&ws, NoiseMode::Const)?;
        let img_nonoise = generator.synthesize(&ws, NoiseMode::None)?;
        Ok((ws, img, img_nonoise))
    })?;
    Ok(GeneratorReport {
        ws_rel_l2: relative_l2(&ws, &required("expected_ws")?)?,
        img_rel_l2: relative_l2(&img, &required("expected_img")?)?,
        img_nonoise_rel_l2: relative_l2(&img_nonoise, &required("expected_img_nonoise")?)?,
        truncation_psi,
        parameters: generator.parameter_count(),
    })
}
