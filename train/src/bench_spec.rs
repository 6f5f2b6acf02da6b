//! What an outside implementation of difi's iterations (the PyTorch eager
//! script `benches/pytorch_eager.py`) needs to run the same iteration as
//! `difi bench` and to check its networks against difi's:
//!
//! - the *spec*: the resolved config as JSON (every default filled in, the
//!   algorithm named), its base directory and libtorch's thread count;
//! - the *check file* of a distillation config: the networks' weights under
//!   their VarStore names (EDM's `state_dict()` names), fixed inputs and
//!   difi's outputs on them (a teacher-training config's is written by
//!   [`crate::bench_teacher_check`]).

use std::collections::HashMap;
use std::path::Path;

use difi_core::component::InitFrom;
use difi_core::draws::{log_normal_sigma, random_labels};
use difi_core::error::{Error, Result, TorchContext};
use difi_core::registry::Registry;
use difi_core::traits::{ScoreModel, broadcast_per_sample};
use tch::{Device, Kind, Tensor};

use crate::algorithm::Algorithm;
use crate::algorithms::diff_instruct::DiffInstruct;
use crate::config::RunConfig;

/// The spec of a resolved config: `{"config": …, "base_dir": …, "threads": …}`;
/// `config.algorithm` names the algorithm (`diff-instruct`, `edm-teacher`).
pub fn spec<A: Algorithm>(config: &RunConfig<A>) -> Result<serde_json::Value> {
    let base_dir = std::path::absolute(config.base_dir()).map_err(|e| Error::io(config.base_dir(), e))?;
    Ok(serde_json::json!({
        "config": config.to_tree(),
        "base_dir": base_dir,
        "threads": tch::get_num_threads(),
    }))
}

/// Writes [`spec`] to `path` as JSON.
pub fn write_spec<A: Algorithm>(config: &RunConfig<A>, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&spec(config)?).map_err(|e| Error::config("", e.to_string()))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Samples in a check file.
pub(crate) const CHECK_SAMPLES: i64 = 4;

/// Builds the config's teacher, generator and fake score on `device` as a
/// run does, evaluates each in eval mode on fixed inputs (seed 0) and writes
/// a safetensors file: `teacher.NAME`, `generator.NAME` and
/// `fake_score.NAME` weights (the generator's and fake score's only when they
/// are not copies of the teacher), inputs `check.x` `[n, *shape]`,
/// `check.sigma` `[n]`, `check.z` `[n, *latent_shape]`, `check.labels`
/// `[n, label_dim]` (conditional teachers), and outputs `check.teacher`,
/// `check.fake_score`, `check.generator`, all float32 on the CPU.
pub fn write_check(config: &RunConfig<DiffInstruct>, registry: &Registry, device: Device, path: &Path) -> Result<()> {
    let env = config.build_env(registry, device, config.dataset(registry)?);
    let algorithm = &config.algorithm;
    let networks = algorithm.build_networks(&env)?;
    let (mut teacher, mut generator, mut fake) = (networks.teacher, networks.generator, networks.fake_score);
    teacher.set_train(false);
    generator.set_train(false);
    fake.set_train(false);
    let _guard = tch::no_grad_guard();
    let (x, sigma, labels) = check_inputs(teacher.as_ref(), device)?;
    let z = generator.sample_latents(CHECK_SAMPLES, device)?;

    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut add_weights = |prefix: &str, vars: Option<&tch::nn::VarStore>| {
        if let Some(vs) = vars {
            let mut named: Vec<_> = vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            tensors.extend(named.into_iter().map(|(name, t)| (format!("{prefix}.{name}"), t)));
        }
    };
    add_weights("teacher", teacher.var_store());
    if algorithm.generator.init_from != Some(InitFrom::Teacher) {
        add_weights("generator", Some(generator.var_store()));
    }
    if algorithm.fake_score.init_from != Some(InitFrom::Teacher) {
        add_weights("fake_score", fake.var_store());
    }
    let outputs = [
        ("check.teacher", teacher.denoise(&x, &sigma, labels.as_ref())?),
        ("check.fake_score", fake.denoise(&x, &sigma, labels.as_ref())?),
        ("check.generator", generator.generate(&z, labels.as_ref())?),
    ];
    tensors.extend(outputs.into_iter().map(|(name, t)| (name.to_string(), t)));
    tensors.push(("check.x".into(), x));
    tensors.push(("check.sigma".into(), sigma));
    tensors.push(("check.z".into(), z));
    if let Some(labels) = labels {
        tensors.push(("check.labels".into(), labels));
    }
    save_check(path, tensors, &HashMap::new())
}

/// Fixed inputs of a check (seed 0) for `model`: noisy samples `x`
/// `[n, *sample_shape]` around N(0, σ_data²) draws, their noise levels
/// `sigma` `[n]` (EDM's log-normal, scaled to σ_data) and one-hot `labels`
/// `[n, label_dim]` when `model` is conditional; n = [`CHECK_SAMPLES`].
pub(crate) fn check_inputs(model: &dyn ScoreModel, device: Device) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    tch::manual_seed(0);
    let n = CHECK_SAMPLES;
    let mut shape = vec![n];
    shape.extend(model.sample_shape());
    let clean = Tensor::f_randn(&shape, (Kind::Float, device)).ctx("check inputs")? * model.sigma_data();
    let sigma = log_normal_sigma(n, -1.2, 1.2, &clean)? * (model.sigma_data() / 0.5);
    let x = &clean + clean.f_randn_like().ctx("check inputs")? * broadcast_per_sample(&sigma, clean.dim())?;
    let labels = random_labels(n, model.label_dim(), device)?;
    Ok((x, sigma, labels))
}

/// Writes the named `tensors` to the safetensors file `path`, on the CPU
/// and floating ones as float32, with `metadata`.
pub(crate) fn save_check(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.f_to_device(Device::Cpu).ctx("check file")?;
            let t = if t.is_floating_point() { t.f_to_kind(Kind::Float).ctx("check file")? } else { t };
            Ok((name, t))
        })
        .collect::<Result<Vec<_>>>()?;
    difi_formats::weights::save(path, &tensors, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOY: &str = r#"(
        version: 1,
        teacher: (plugin: "gmm"),
        generator: (plugin: "mlp-generator", params: (latent_dim: 4, hidden: [8])),
        fake_score: (plugin: "mlp-denoiser", params: (hidden: [8])),
        schedule: (batch_size: 16),
    )"#;

    fn toy() -> (RunConfig<DiffInstruct>, Registry) {
        difi_zoo::link();
        difi_divergences::link();
        let mut config = RunConfig::<DiffInstruct>::parse(TOY, &[]).unwrap();
        config.run.base_dir = Some(std::env::temp_dir());
        let registry = config.registry().unwrap();
        (config.resolve(&registry).unwrap(), registry)
    }

    #[test]
    fn the_spec_carries_the_resolved_config() {
        let (config, _) = toy();
        let spec = spec(&config).unwrap();
        assert_eq!(spec["config"]["schedule"]["batch_size"], 16);
        assert_eq!(spec["config"]["generator"]["params"]["latent_dim"], 4);
        // Defaults are filled in: the divergence and the optimisers.
        assert_eq!(spec["config"]["divergence"]["plugin"], "ikl");
        assert!(spec["config"]["optim"]["fake_score"]["lr"].is_number());
        assert!(spec["threads"].as_i64().unwrap() >= 1);
    }

    #[test]
    fn the_check_file_holds_weights_inputs_and_outputs() {
        let _rng = crate::lock_test_rng();
        let (config, registry) = toy();
        let path = std::env::temp_dir().join(format!("difi-check-{}.safetensors", std::process::id()));
        write_check(&config, &registry, Device::Cpu, &path).unwrap();
        let tensors = difi_formats::weights::load(&path).unwrap().into_map();
        std::fs::remove_file(&path).unwrap();
        for name in ["check.x", "check.sigma", "check.z", "check.teacher", "check.generator", "check.fake_score"] {
            assert!(tensors.contains_key(name), "{name} missing");
        }
        assert_eq!(tensors["check.z"].size(), [CHECK_SAMPLES, 4]);
        assert_eq!(tensors["generator.net.0.weight"].size(), [8, 4]);
        assert!(tensors.keys().any(|k| k.starts_with("fake_score.net.")));
        assert!(!tensors.keys().any(|k| k.starts_with("teacher.")), "the mixture has no weights");
    }
}
