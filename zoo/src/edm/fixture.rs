//! Checks an EDM network against reference outputs stored in a safetensors
//! file (the format of the EDM reference fixtures, `tests/fixtures/edm/`): weights under EDM's
//! `state_dict()` names, inputs `x`, `sigma`, optional `class_labels` and
//! `augment_labels`, the reference output `expected_f64`, optionally
//! `latents` and `expected_samples` from EDM's Heun sampler, and metadata
//! `precond`, `kwargs` and `sampler`.

use std::collections::HashMap;
use std::path::Path;

use crate::heun_sampler::HeunSampler;
use difi_core::error::{Error, Result, TorchContext};
use difi_formats::weights;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::architecture_in_metadata;
use super::network::{EdmNetwork, Precision};

/// Relative L2 errors of a network against a reference file.
#[derive(Clone, Debug, Serialize)]
pub struct FixtureReport {
    /// `‖D − D_ref‖₂ / ‖D_ref‖₂` of the forward pass against `expected_f64`.
    pub forward_rel_l2: f64,
    /// The same for the reference's own float32 forward (`f32_vs_f64_rel_l2`), when recorded.
    pub reference_f32_rel_l2: Option<f64>,
    /// Relative L2 of the sampler's output against `expected_samples`, when present.
    pub sampler_rel_l2: Option<f64>,
    /// Network evaluations per sample of that sampler run.
    pub sampler_nfe: Option<usize>,
    /// Trainable parameters of the network.
    pub parameters: i64,
    /// The precision the backbone ran in (`auto` resolved).
    pub precision: Precision,
}

/// `‖a − b‖₂ / ‖b‖₂` in float64.
pub fn relative_l2(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.f_to_kind(Kind::Double).ctx("compare")?.f_to_device(Device::Cpu).ctx("compare")?;
    let b = b.f_to_kind(Kind::Double).ctx("compare")?.f_to_device(Device::Cpu).ctx("compare")?;
    let diff = (&a - &b).f_norm().ctx("compare")?.f_double_value(&[]).ctx("compare")?;
    let norm = b.f_norm().ctx("compare")?.f_double_value(&[]).ctx("compare")?;
    Ok(diff / norm)
}

/// Builds the network a reference file describes, loads its weights and
/// compares forward pass (and sampler, when recorded) with the reference.
pub fn verify(path: &Path, precision: Precision, device: Device) -> Result<FixtureReport> {
    let args = architecture_in_metadata(path)?
        .ok_or_else(|| Error::checkpoint(path, "no `precond` and `kwargs` metadata describing the network"))?;
    let config = args.resolve().map_err(|e| Error::checkpoint(path, e.to_string()))?;
    if device.is_cuda() {
        // Full float32 on the GPU, as the reference runs.
        difi_torch_ext::set_allow_tf32(false)
            .map_err(|e| Error::Plugin { plugin: "libtorch".into(), message: e.to_string() })?;
    }
    let file = weights::load(path)?;
    let metadata = file.metadata.clone();
    let tensors = file.into_map();
    let weights: HashMap<String, Tensor> =
        tensors.iter().filter(|(k, _)| k.starts_with("model.")).map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    let mut network = EdmNetwork::new(&config, precision, device)?;
    network.load_weights(&weights, path)?;
    let input = |name: &str| -> Result<Option<Tensor>> {
        tensors.get(name).map(|t| t.f_to_device(device).ctx(name)).transpose()
    };
    let required = |name: &str| -> Result<Tensor> {
        input(name)?.ok_or_else(|| Error::checkpoint(path, format!("no reference tensor `{name}`")))
    };
    let (x, sigma, expected) = (required("x")?, required("sigma")?, required("expected_f64")?);
    let class_labels = input("class_labels")?;
    let augment_labels = input("augment_labels")?;
    let output = tch::no_grad(|| network.forward(&x, &sigma, class_labels.as_ref(), augment_labels.as_ref()))?;
    let forward_rel_l2 = relative_l2(&output, &expected)?;

    let (mut sampler_rel_l2, mut sampler_nfe) = (None, None);
    if let (Some(latents), Some(expected_samples)) = (input("latents")?, input("expected_samples")?) {
        let sampler = sampler_from_metadata(metadata.get("sampler"), path)?;
        let samples = sampler.sample(&network, &latents, class_labels.as_ref())?;
        sampler_rel_l2 = Some(relative_l2(&samples, &expected_samples)?);
        sampler_nfe = Some(sampler.nfe());
    }
    Ok(FixtureReport {
        forward_rel_l2,
        reference_f32_rel_l2: metadata.get("f32_vs_f64_rel_l2").and_then(|v| v.parse().ok()),
        sampler_rel_l2,
        sampler_nfe,
        parameters: network.parameter_count(),
        precision: network.backbone_precision(),
    })
}

/// The sampler settings recorded as JSON in EDM's names (`num_steps`,
/// `sigma_min`, `sigma_max`, `rho`, `S_churn`, `S_min`, `S_max`, `S_noise`).
fn sampler_from_metadata(json: Option<&String>, path: &Path) -> Result<HeunSampler> {
    let json = json.ok_or_else(|| Error::checkpoint(path, "sampler outputs without `sampler` metadata"))?;
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| Error::checkpoint(path, format!("`sampler` metadata: {e}")))?;
    let mut sampler = HeunSampler::default();
    let number = |key: &str| value.get(key).and_then(|v| v.as_f64());
    if let Some(steps) = value.get("num_steps").and_then(|v| v.as_u64()) {
        sampler.num_steps = steps as usize;
    }
    sampler.sigma_min = number("sigma_min").unwrap_or(sampler.sigma_min);
    sampler.sigma_max = number("sigma_max").unwrap_or(sampler.sigma_max);
    sampler.rho = number("rho").unwrap_or(sampler.rho);
    sampler.s_churn = number("S_churn").unwrap_or(sampler.s_churn);
    sampler.s_min = number("S_min").unwrap_or(sampler.s_min);
    sampler.s_max = number("S_max").or(sampler.s_max);
    sampler.s_noise = number("S_noise").unwrap_or(sampler.s_noise);
    Ok(sampler)
}
