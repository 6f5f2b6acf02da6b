//! The check file of a teacher-training config (`difi bench CONFIG
//! --write-check FILE` for `edm-teacher`): what the PyTorch eager script
//! `benches/pytorch_eager.py` needs to show that it builds the same network
//! and trains it the same way (EDM loss on dataset batches, Adam, EMA) as
//! difi's runner.

use std::collections::HashMap;
use std::path::Path;

use difi_core::error::{Error, Result};
use difi_core::registry::Registry;
use difi_core::rng::{RngStream, reseed};
use tch::{Device, Tensor};

use crate::algorithms::edm_teacher::EdmTeacherTraining;
use crate::bench_spec::{check_inputs, save_check};
use crate::config::RunConfig;
use crate::networks::NetworkBuilder;
use crate::session::build_runner;

/// Training iterations a teacher check runs (three: the first EMA update
/// of a ramp-up copies the network, later ones average).
pub const CHECK_STEPS: u64 = 3;

fn error(message: String) -> Error {
    Error::Plugin { plugin: "bench --write-check".into(), message }
}

/// The device as the script names it (`cpu`, `cuda:0`).
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(index) => format!("cuda:{index}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Builds the runner of a teacher-training config as a run does, evaluates
/// its network's starting weights in eval mode on fixed inputs (seed 0),
/// then trains it for [`CHECK_STEPS`] iterations exactly as `difi bench`
/// times them (the runner's iteration i, seeded as a run's iteration i).
/// Writes a safetensors file with the starting weights `network.NAME`, the
/// inputs `check.x` `[n, *shape]`, `check.sigma` `[n]` and `check.labels`
/// `[n, label_dim]` (conditional networks), the output `check.network`
/// `[n, *shape]`, and the weights after the iterations, `step.network.NAME`
/// and `step.network_ema.NAME`; all float32 on the CPU. Its metadata holds
/// `device` (where difi ran, `cpu` or `cuda:N`), `steps` and `losses` (a
/// JSON list of each iteration's loss value, as the runner read it).
pub fn write_teacher_check(config: &RunConfig<EdmTeacherTraining>, registry: &Registry, path: &Path) -> Result<()> {
    let mut runner = build_runner(config, registry)?;
    let start: Vec<(String, Tensor)> = runner
        .part_variables("network")
        .ok_or_else(|| error("the step has no part `network`".into()))?
        .iter()
        .map(|(name, t)| (name.clone(), t.detach().copy()))
        .collect();

    // The same network built on its own, with the runner's starting weights.
    let device = config.run.resolve_device()?;
    let builder = NetworkBuilder { registry, device, seed: config.run.seed, base_dir: config.base_dir() };
    let mut model = builder.initialised_score_model(&config.algorithm.network, "network", 0)?;
    let vars = model.var_store().ok_or_else(|| error("the network has no weights to train".into()))?;
    let vars: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
    let weights: HashMap<String, Tensor> = start.iter().map(|(name, t)| (name.clone(), t.shallow_clone())).collect();
    difi_formats::weights::copy_into_variables(&vars, &weights, Path::new("the runner's network"))?;
    model.set_train(false);
    let (x, sigma, labels) = check_inputs(model.as_ref(), device)?;
    let output = tch::no_grad(|| model.denoise(&x, &sigma, labels.as_ref()))?;

    let mut tensors: Vec<(String, Tensor)> =
        start.into_iter().map(|(name, t)| (format!("network.{name}"), t)).collect();
    let mut losses = Vec::with_capacity(CHECK_STEPS as usize);
    for i in 0..CHECK_STEPS {
        reseed(config.run.seed, RngStream::Iteration, i);
        let value = runner
            .iteration()?
            .values()?
            .get("network")
            .ok_or_else(|| error("the step reports no network loss".into()))?;
        losses.push(value);
    }
    for part in ["network", "network_ema"] {
        let vars = runner.part_variables(part).ok_or_else(|| error(format!("the step has no part `{part}`")))?;
        tensors.extend(vars.iter().map(|(name, t)| (format!("step.{part}.{name}"), t.detach().copy())));
    }
    tensors.push(("check.network".into(), output));
    tensors.push(("check.x".into(), x));
    tensors.push(("check.sigma".into(), sigma));
    if let Some(labels) = labels {
        tensors.push(("check.labels".into(), labels));
    }
    let metadata = HashMap::from([
        ("device".to_string(), device_name(device)),
        ("steps".to_string(), CHECK_STEPS.to_string()),
        ("losses".to_string(), serde_json::json!(losses).to_string()),
    ]);
    save_check(path, tensors, &metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small conditional U-Net on the digits fixture (8×8, 10 classes).
    const DIGITS: &str = r#"(
        version: 1,
        seed: 3,
        device: "cpu",
        network: (plugin: "edm", params: (network: (
            precond: "EDMPrecond", img_resolution: 8, img_channels: 1, label_dim: 10,
            model_type: "SongUNet", model_channels: 8, channel_mult: [1, 2], num_blocks: 1,
            attn_resolutions: [], dropout: 0.1,
        ))),
        dataset: (plugin: "zip", params: (path: "tests/fixtures/data/digits-8x8-labelled.zip", xflip: true)),
        optim: (network: (lr: 1e-3, betas: (0.9, 0.999))),
        schedule: (batch_size: 8),
    )"#;

    #[test]
    fn the_teacher_check_holds_inputs_outputs_losses_and_trained_weights() {
        difi_zoo::link();
        difi_datasets::link();
        let mut config = RunConfig::<EdmTeacherTraining>::parse(DIGITS, &[]).unwrap();
        config.run.base_dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        let registry = config.registry().unwrap();
        let config = config.resolve(&registry).unwrap();
        let path = std::env::temp_dir().join(format!("difi-teacher-check-{}.safetensors", std::process::id()));
        write_teacher_check(&config, &registry, &path).unwrap();
        let metadata = difi_formats::weights::read_metadata(&path).unwrap();
        let tensors = difi_formats::weights::load(&path).unwrap().into_map();
        std::fs::remove_file(&path).unwrap();

        assert_eq!(metadata["device"], "cpu");
        let losses: Vec<f64> = serde_json::from_str(&metadata["losses"]).unwrap();
        assert_eq!(losses.len(), CHECK_STEPS as usize);
        assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
        assert_eq!(tensors["check.x"].size(), [4, 1, 8, 8]);
        assert_eq!(tensors["check.network"].size(), [4, 1, 8, 8]);
        assert_eq!(tensors["check.labels"].size(), [4, 10]);
        let name = "model.enc.8x8_conv.weight";
        let (start, trained, ema) = (
            &tensors[&format!("network.{name}")],
            &tensors[&format!("step.network.{name}")],
            &tensors[&format!("step.network_ema.{name}")],
        );
        // Adam moved the weights; the EMA (ramping up from a copy) lies between.
        assert!(!start.equal(trained));
        assert!(!ema.equal(trained) && !ema.equal(start));
        assert_eq!(
            tensors.keys().filter(|k| k.starts_with("network.")).count(),
            tensors.keys().filter(|k| k.starts_with("step.network_ema.")).count()
        );
    }
}
