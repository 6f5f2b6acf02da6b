//! Builds a run's networks from a resolved config through the registry.

use std::path::Path;

use tch::Device;

use crate::config::{Component, Config};
use crate::denoiser_generator::{DenoiserGenerator, DenoiserGeneratorParams};
use crate::device::{Stream, parse_device, reseed};
use crate::error::{Error, Result, TorchContext};
use crate::registry::{BuildContext, Registry, decode_params};
use crate::trainer::{Networks, Trainer};
use crate::traits::{Dataset, Divergence, Generator, ScoreModel};

/// Networks as trait objects, as configs build them.
pub type DynNetworks = Networks<Box<dyn Generator>, Box<dyn ScoreModel>, Box<dyn ScoreModel>, Box<dyn Divergence>>;

/// A trainer over trait objects.
pub type DynTrainer = Trainer<Box<dyn Generator>, Box<dyn ScoreModel>, Box<dyn ScoreModel>, Box<dyn Divergence>>;

/// A registry with the built-in plugins and the runtime libraries that the
/// config names (resolved against its directory).
pub fn registry_for(config: &Config) -> Result<Registry> {
    let mut registry = Registry::with_builtins()?;
    for path in &config.plugins {
        registry.load_library(&config.path(path))?;
    }
    Ok(registry)
}

fn plugin_name<'a>(component: &'a Component, role: &str) -> Result<&'a str> {
    component.plugin.as_deref().ok_or_else(|| Error::config(role, "missing `plugin`"))
}

/// Builds the teacher (frozen, in eval mode).
pub fn build_teacher(config: &Config, registry: &Registry, device: Device) -> Result<Box<dyn ScoreModel>> {
    if device.is_cuda() {
        crate::device::configure_cuda(config.allow_tf32);
    }
    reseed(config.seed, Stream::Init, 0);
    let ctx = BuildContext { device, teacher: None, base_dir: config.base_dir() };
    let name = plugin_name(&config.teacher, "teacher")?;
    let mut teacher =
        registry.build_score_model(name, &config.teacher.params, &ctx).map_err(|e| e.under("teacher.params"))?;
    if let Some(vs) = teacher.var_store_mut() {
        vs.freeze();
    }
    teacher.set_train(false);
    Ok(teacher)
}

/// Builds the generator, with the teacher as context.
pub fn build_generator(
    config: &Config,
    registry: &Registry,
    device: Device,
    teacher: &dyn ScoreModel,
) -> Result<Box<dyn Generator>> {
    reseed(config.seed, Stream::Init, 1);
    if config.generator.init_from.is_some() {
        let params: DenoiserGeneratorParams =
            decode_params(&config.generator.params).map_err(|e| e.under("generator.params"))?;
        let model = copy_of_teacher(config, registry, device, teacher, "generator.init_from")?;
        return Ok(Box::new(DenoiserGenerator::new(model, &params).map_err(|e| e.under("generator.params"))?));
    }
    let ctx = BuildContext { device, teacher: Some(teacher), base_dir: config.base_dir() };
    let name = plugin_name(&config.generator, "generator")?;
    registry.build_generator(name, &config.generator.params, &ctx).map_err(|e| e.under("generator.params"))
}

/// A trainable copy of the teacher: built by the teacher's plugin, weights copied.
fn copy_of_teacher(
    config: &Config,
    registry: &Registry,
    device: Device,
    teacher: &dyn ScoreModel,
    key: &str,
) -> Result<Box<dyn ScoreModel>> {
    let source = teacher
        .var_store()
        .ok_or_else(|| Error::config(key, "the teacher has no weights to copy (it is analytic); name a plugin"))?;
    let ctx = BuildContext { device, teacher: None, base_dir: config.base_dir() };
    let name = plugin_name(&config.teacher, "teacher")?;
    let mut copy = registry.build_score_model(name, &config.teacher.params, &ctx)?;
    let vs = copy
        .var_store_mut()
        .ok_or_else(|| Error::config(key, "the teacher's plugin builds networks without weights"))?;
    vs.copy(source).ctx("copy the teacher")?;
    vs.unfreeze();
    Ok(copy)
}

fn build_fake_score(
    config: &Config,
    registry: &Registry,
    device: Device,
    teacher: &dyn ScoreModel,
) -> Result<Box<dyn ScoreModel>> {
    reseed(config.seed, Stream::Init, 2);
    let base_dir: &Path = config.base_dir();
    if config.fake_score.init_from.is_some() {
        return copy_of_teacher(config, registry, device, teacher, "fake_score.init_from");
    }
    let ctx = BuildContext { device, teacher: Some(teacher), base_dir };
    let name = plugin_name(&config.fake_score, "fake_score")?;
    registry.build_score_model(name, &config.fake_score.params, &ctx).map_err(|e| e.under("fake_score.params"))
}

/// Builds every network of a run on `device`.
pub fn build_networks(config: &Config, registry: &Registry, device: Device) -> Result<DynNetworks> {
    let teacher = build_teacher(config, registry, device)?;
    let generator = build_generator(config, registry, device, teacher.as_ref())?;
    let generator_ema = build_generator(config, registry, device, teacher.as_ref())?;
    let fake_score = build_fake_score(config, registry, device, teacher.as_ref())?;
    let ctx = BuildContext { device, teacher: Some(teacher.as_ref()), base_dir: config.base_dir() };
    let name = plugin_name(&config.divergence, "divergence")?;
    let divergence =
        registry.build_divergence(name, &config.divergence.params, &ctx).map_err(|e| e.under("divergence.params"))?;
    Ok(Networks { teacher, generator, generator_ema, fake_score, divergence })
}

/// Builds the config's dataset, if it names one.
pub fn build_dataset(config: &Config, registry: &Registry) -> Result<Option<Box<dyn Dataset>>> {
    let Some(component) = &config.dataset else { return Ok(None) };
    let ctx = BuildContext { device: Device::Cpu, teacher: None, base_dir: config.base_dir() };
    let name = plugin_name(component, "dataset")?;
    registry.build_dataset(name, &component.params, &ctx).map(Some).map_err(|e| e.under("dataset.params"))
}

/// A dataset must hold images of the teacher's shape, and labels for as many
/// classes as the teacher's (or none).
pub fn check_dataset(dataset: &dyn Dataset, teacher: &dyn ScoreModel) -> Result<()> {
    let shape = dataset.image_shape().to_vec();
    if shape != teacher.sample_shape() {
        return Err(Error::Shape {
            what: "dataset images (the teacher's sample shape)".into(),
            expected: teacher.sample_shape(),
            actual: shape,
        });
    }
    let (classes, expected) = (dataset.label_dim(), teacher.label_dim());
    if classes != 0 && classes > expected {
        return Err(Error::config("dataset", format!("has {classes} classes, the teacher {expected}")));
    }
    Ok(())
}

/// A trainer for a resolved config.
pub fn build_trainer(config: &Config, registry: &Registry) -> Result<DynTrainer> {
    let device = parse_device(&config.device)?;
    let networks = build_networks(config, registry, device)?;
    if let Some(dataset) = build_dataset(config, registry)? {
        check_dataset(dataset.as_ref(), networks.teacher.as_ref())?;
    }
    Trainer::new(networks, config.clone(), device)
}
