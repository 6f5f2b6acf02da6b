//! Builds networks and datasets from config components through the registry.
//! Each network's weights are initialised from its own seeded stream, so a
//! run's initial weights depend only on its seed.

use std::path::Path;
use std::rc::Rc;

use difi_core::component::Component;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::params::decode_params;
use difi_core::registry::{BuildContext, Registry};
use difi_core::rng::{RngStream, reseed};
use difi_core::traits::{Dataset, Generator, ScoreModel};
use tch::Device;

use crate::denoiser_generator::{DenoiserGenerator, DenoiserGeneratorParams};

/// Builds networks from components: the registry, device, seed and base directory.
pub struct NetworkBuilder<'a> {
    pub registry: &'a Registry,
    pub device: Device,
    pub seed: u64,
    pub base_dir: &'a Path,
}

impl NetworkBuilder<'_> {
    /// The teacher `component` (at config key `key`), frozen and in eval mode;
    /// its random initialisation (if it has no checkpoint) is stream `init_index`.
    pub fn teacher(&self, component: &Component, key: &str, init_index: u64) -> Result<Box<dyn ScoreModel>> {
        reseed(self.seed, RngStream::Init, init_index);
        let mut teacher = self.score_model(component, key, None)?;
        if let Some(vs) = teacher.var_store_mut() {
            vs.freeze();
        }
        teacher.set_train(false);
        Ok(teacher)
    }

    /// The score model `component` names, built with `teacher` as context.
    pub fn score_model(
        &self,
        component: &Component,
        key: &str,
        teacher: Option<&dyn ScoreModel>,
    ) -> Result<Box<dyn ScoreModel>> {
        let ctx = BuildContext { device: self.device, teacher, base_dir: self.base_dir };
        let name = component.plugin_name(key)?;
        self.registry.build_score_model(name, &component.params, &ctx).map_err(|e| e.under(&format!("{key}.params")))
    }

    /// The score model `component` names, its random initialisation drawn
    /// from stream `init_index`.
    pub fn initialised_score_model(
        &self,
        component: &Component,
        key: &str,
        init_index: u64,
    ) -> Result<Box<dyn ScoreModel>> {
        reseed(self.seed, RngStream::Init, init_index);
        self.score_model(component, key, None)
    }

    /// A trainable copy of the teacher: built by the teacher's own component,
    /// its weights copied from `teacher`.
    pub fn copy_of_teacher(
        &self,
        teacher_component: &Component,
        teacher: &dyn ScoreModel,
        key: &str,
    ) -> Result<Box<dyn ScoreModel>> {
        let source = teacher
            .var_store()
            .ok_or_else(|| Error::config(key, "the teacher has no weights to copy (it is analytic); name a plugin"))?;
        let mut copy = self.score_model(teacher_component, "teacher", None)?;
        let vs = copy
            .var_store_mut()
            .ok_or_else(|| Error::config(key, "the teacher's plugin builds networks without weights"))?;
        vs.copy(source).ctx("copy the teacher")?;
        vs.unfreeze();
        Ok(copy)
    }

    /// The generator `component` names, or `G(z) = D(σ_init z; σ_init)`
    /// around a copy of the teacher for `init_from: "teacher"`; its random
    /// initialisation is stream `init_index`.
    pub fn generator(
        &self,
        component: &Component,
        key: &str,
        teacher_component: &Component,
        teacher: &dyn ScoreModel,
        init_index: u64,
    ) -> Result<Box<dyn Generator>> {
        reseed(self.seed, RngStream::Init, init_index);
        if component.init_from.is_some() {
            let params_key = format!("{key}.params");
            let params: DenoiserGeneratorParams = decode_params(&component.params).map_err(|e| e.under(&params_key))?;
            let model = self.copy_of_teacher(teacher_component, teacher, &format!("{key}.init_from"))?;
            return Ok(Box::new(DenoiserGenerator::new(model, &params).map_err(|e| e.under(&params_key))?));
        }
        let ctx = BuildContext { device: self.device, teacher: Some(teacher), base_dir: self.base_dir };
        let name = component.plugin_name(key)?;
        self.registry.build_generator(name, &component.params, &ctx).map_err(|e| e.under(&format!("{key}.params")))
    }

    /// A trainable score model: `component`'s plugin, or a copy of the teacher
    /// for `init_from: "teacher"`; its random initialisation is stream `init_index`.
    pub fn trainable_score_model(
        &self,
        component: &Component,
        key: &str,
        teacher_component: &Component,
        teacher: &dyn ScoreModel,
        init_index: u64,
    ) -> Result<Box<dyn ScoreModel>> {
        reseed(self.seed, RngStream::Init, init_index);
        if component.init_from.is_some() {
            return self.copy_of_teacher(teacher_component, teacher, &format!("{key}.init_from"));
        }
        self.score_model(component, key, Some(teacher))
    }
}

/// Builds the dataset `component` names (`dataset` in a config).
pub fn build_dataset(component: &Component, registry: &Registry, base_dir: &Path) -> Result<Rc<dyn Dataset>> {
    let ctx = BuildContext { device: Device::Cpu, teacher: None, base_dir };
    let name = component.plugin_name("dataset")?;
    let dataset = registry.build_dataset(name, &component.params, &ctx).map_err(|e| e.under("dataset.params"))?;
    Ok(Rc::from(dataset))
}

/// A dataset must hold images of the model's shape, and labels for as many
/// classes as the model's (or none).
pub fn check_dataset(dataset: &dyn Dataset, model: &dyn ScoreModel) -> Result<()> {
    let shape = dataset.image_shape().to_vec();
    if shape != model.sample_shape() {
        return Err(Error::Shape {
            what: "dataset images (the teacher's sample shape)".into(),
            expected: model.sample_shape(),
            actual: shape,
        });
    }
    let (classes, expected) = (dataset.label_dim(), model.label_dim());
    if classes != 0 && classes > expected {
        return Err(Error::config("dataset", format!("has {classes} classes, the teacher {expected}")));
    }
    Ok(())
}
