//! Training a teacher: EDM's denoising score matching on dataset images
//! (Karras et al. 2022, `training/training_loop.py` with `EDMLoss`), with
//! the network's EMA kept as EDM keeps it. The trained EMA is a teacher for
//! Diff-Instruct.

use std::rc::Rc;

use difi_core::component::Component;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::registry::{Registry, ResolveContext, Role};
use difi_core::traits::{Dataset, Generator, ScoreModel};
use difi_zoo::heun_sampler::{HeunSampler, SampledGenerator};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::algorithm::{Algorithm, BuildEnv, NetworkMut};
use crate::augment::AugmentPipe;
use crate::denoising_loss::DenoisingLoss;
use crate::networks::{NetworkBuilder, check_dataset};
use crate::step::{Losses, Part, PartRole, Step, StepContext};

/// The teacher-training section of a config; the images come from the
/// config's `dataset`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmTeacherTraining {
    /// The score model to train (a score-model plugin, e.g. `edm`).
    pub network: Component,
    /// Noise levels of the denoising loss.
    #[serde(default)]
    pub loss: DenoisingLoss,
    /// Augment training images with EDM's pipeline, the labels fed to the
    /// network (it needs a matching `augment_dim`); `None`: off.
    #[serde(default)]
    pub augment: Option<AugmentPipe>,
    /// How metrics and sample grids sample the network's EMA (EDM's Heun
    /// sampler; 18 steps = 35 NFE by default).
    #[serde(default)]
    pub sampler: HeunSampler,
    /// Images per forward pass (EDM's `batch_gpu`): the batch is processed
    /// in rounds whose gradients add up, to fit memory; `None`: all at once.
    #[serde(default)]
    pub batch_per_pass: Option<i64>,
}

impl Algorithm for EdmTeacherTraining {
    const NAME: &'static str = "edm-teacher";

    fn trained_parts(&self) -> Vec<&'static str> {
        vec!["network"]
    }

    fn resolve(&mut self, registry: &Registry, ctx: &ResolveContext<'_>) -> Result<()> {
        self.network.resolve_plugin(registry, ctx, Role::ScoreModel, "network")
    }

    fn validate(&self) -> Result<()> {
        if let Some(pipe) = &self.augment {
            pipe.validate().map_err(|e| e.under("augment"))?;
        }
        if self.sampler.num_steps < 1 {
            return Err(Error::config("sampler.num_steps", "the sampler needs at least 1 step"));
        }
        if self.batch_per_pass.is_some_and(|b| b < 1) {
            return Err(Error::config("batch_per_pass", "must be at least 1"));
        }
        self.loss.validate().map_err(|e| e.under("loss"))?;
        self.loss.check_sigma_source(None).map_err(|e| e.under("loss"))
    }

    fn build(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Step>> {
        let dataset =
            env.dataset.clone().ok_or_else(|| Error::config("dataset", "teacher training needs a dataset"))?;
        let b = NetworkBuilder { registry: env.registry, device: env.device, seed: env.seed, base_dir: env.base_dir };
        let mut network = b.initialised_score_model(&self.network, "network", 0)?;
        env.checkpoint_activations(Self::NAME, vec![("network", NetworkMut::Score(network.as_mut()))])?;
        let network_ema = b.initialised_score_model(&self.network, "network", 0)?;
        check_dataset(dataset.as_ref(), network.as_ref())?;
        if network.var_store().is_none() {
            return Err(Error::config("network", "has no weights to train"));
        }
        if dataset.is_empty() {
            return Err(Error::config("dataset", "holds no images"));
        }
        if let Some(pipe) = &self.augment
            && pipe.label_dim() != network.augment_dim()
        {
            return Err(Error::config(
                "augment",
                format!(
                    "makes {} augmentation labels but the network takes {} (its augment_dim)",
                    pipe.label_dim(),
                    network.augment_dim()
                ),
            ));
        }
        let network_ema = SampledGenerator::new(network_ema, self.sampler.clone()).map_err(|e| e.under("sampler"))?;
        if let Some(per_pass) = self.batch_per_pass
            && env.batch_size % per_pass != 0
        {
            return Err(Error::config(
                "batch_per_pass",
                format!("{per_pass} does not divide the batch of {}", env.batch_size),
            ));
        }
        Ok(Box::new(EdmTeacherStep {
            network,
            network_ema,
            dataset,
            loss: self.loss.clone(),
            augment: self.augment.clone(),
            batch_per_pass: self.batch_per_pass,
        }))
    }
}

struct EdmTeacherStep {
    network: Box<dyn ScoreModel>,
    /// The network's EMA, sampled with Heun's method for metrics and grids.
    network_ema: SampledGenerator,
    dataset: Rc<dyn Dataset>,
    loss: DenoisingLoss,
    augment: Option<AugmentPipe>,
    batch_per_pass: Option<i64>,
}

impl EdmTeacherStep {
    /// `n` dataset images drawn uniformly (with replacement) as float
    /// `[n, C, H, W]` in [−1, 1], with one-hot labels for a conditional network.
    fn batch(&self, n: i64, device: Device) -> Result<(Tensor, Option<Tensor>)> {
        let len = self.dataset.len() as i64;
        // Each rank reads its rows of the global batch's random indices: the
        // dataset is sharded by rank, with replacement, as one process draws it.
        let indices = difi_core::shard::batch_draw(n, 0, |n| {
            Tensor::f_randint(len, [n], (Kind::Int64, Device::Cpu)).ctx("indices")
        })?;
        let indices = Vec::<i64>::try_from(indices).ctx("indices")?;
        let mut images = Vec::with_capacity(indices.len());
        let mut classes = Vec::with_capacity(indices.len());
        for index in indices {
            let (image, class) = self.dataset.get(index as usize)?;
            images.push(image);
            classes.push(class.unwrap_or(0));
        }
        let images = Tensor::f_stack(&images, 0).ctx("batch")?.f_to_device(device).ctx("batch")?;
        let images = images.f_to_kind(Kind::Float).ctx("batch")? / 127.5 - 1.0;
        let label_dim = self.network.label_dim();
        let labels = if label_dim > 0 {
            let classes = Tensor::from_slice(&classes).f_to_device(device).ctx("labels")?;
            Some(classes.f_one_hot(label_dim).ctx("labels")?.f_to_kind(Kind::Float).ctx("labels")?)
        } else {
            None
        };
        Ok((images, labels))
    }
}

impl Step for EdmTeacherStep {
    fn parts(&mut self) -> Vec<Part<'_>> {
        vec![
            Part {
                name: "network",
                vars: self.network.var_store_mut().expect("checked when built"),
                role: PartRole::Trained,
            },
            Part { name: "network_ema", vars: self.network_ema.var_store_mut(), role: PartRole::EmaOf("network") },
        ]
    }

    fn iteration(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses> {
        self.network.set_train(true);
        let per_pass = self.batch_per_pass.unwrap_or(ctx.batch_size).min(ctx.batch_size);
        let rounds = (ctx.batch_size / per_pass) as usize;
        let device = ctx.device;
        let value = ctx.update_in_rounds("network", rounds, |_| {
            let (images, labels) = self.batch(per_pass, device)?;
            let loss = self.loss.augmented_loss(
                self.network.as_ref(),
                &images,
                labels.as_ref(),
                self.augment.as_ref(),
                None,
            )?;
            Ok(loss / rounds as f64)
        })?;
        Ok(Losses(vec![("network", value)]))
    }

    fn evaluated_generator(&self) -> Option<&dyn Generator> {
        Some(&self.network_ema)
    }
}
