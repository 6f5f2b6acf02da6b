//! Diff-Instruct (Luo et al., "Diff-Instruct: A Universal Approach for
//! Transferring Knowledge From Pre-trained Diffusion Models", NeurIPS 2023,
//! Algorithm 1): a one-step generator learns from a frozen teacher without
//! any data. Each iteration
//!
//! 1. trains the fake score `D_f` by denoising score matching (EDM's loss) on
//!    detached generator samples, so it tracks the generator's distribution;
//! 2. updates the generator through the divergence's loss (IKL in the paper:
//!    the gradient `E[w(σ) (s_f(x_t) − s_r(x_t))ᵀ ∂x_g/∂θ]`), the fake score
//!    frozen;
//!
//! and the runner then updates the generator's EMA. Before the first
//! iteration the fake score may warm up alone.
//!
//! The reference (`pkulwj1994/diff_instruct`, `training/di_training_loop.py`
//! and `di_loss.py`) is followed point by point, each a config setting:
//! fake-score samples drawn with the generator in eval mode, optionally
//! augmented by EDM's pipeline; teacher and fake score in train mode in the
//! generator loss with shared dropout masks; labels from the dataset; the
//! generator initialised as `D(σ_init z; σ_init)`; non-finite gradients
//! clamped (`optim.*.nonfinite: "clamp"`).

use std::rc::Rc;

use difi_core::component::{Component, InitFrom};
use difi_core::draws::random_labels;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::params::{Params, resolve_params};
use difi_core::registry::{BuildContext, Registry, ResolveContext, Role};
use difi_core::traits::{Dataset, Divergence, Generator, ScoreModel};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::algorithm::{Algorithm, BuildEnv, NetworkMut};
use crate::augment::AugmentPipe;
use crate::denoiser_generator::DenoiserGeneratorParams;
use crate::denoising_loss::DenoisingLoss;
use crate::networks::{NetworkBuilder, check_dataset};
use crate::step::{Losses, Part, PartRole, Step, StepContext};

/// The Diff-Instruct section of a config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffInstruct {
    /// The pre-trained diffusion model (a score-model plugin), frozen.
    pub teacher: Component,
    /// The one-step generator (a generator plugin, or `init_from: "teacher"`:
    /// `G(z) = D(σ_init z; σ_init)` around a copy of the teacher).
    #[serde(default, skip_serializing_if = "Component::is_empty")]
    pub generator: Component,
    /// The fake score tracking the generator (a score-model plugin, or
    /// `init_from: "teacher"`).
    #[serde(default, skip_serializing_if = "Component::is_empty")]
    pub fake_score: Component,
    /// The divergence whose gradient trains the generator.
    #[serde(default = "default_divergence")]
    pub divergence: Component,
    /// Noise levels of the fake score's denoising loss.
    #[serde(default)]
    pub fake_loss: DenoisingLoss,
    /// Fake-score updates before the first generator update.
    #[serde(default)]
    pub fake_warmup_iters: u64,
    /// Fake-score updates per generator update.
    #[serde(default = "one")]
    pub fake_updates_per_iter: u64,
    /// Augment the fake score's training samples with EDM's pipeline, the
    /// augmentation labels fed to it (the reference: `p` 0.12 with x-flips,
    /// y-flips, scaling, rotation, anisotropy and translation); `None`: off.
    #[serde(default)]
    pub fake_augment: Option<AugmentPipe>,
    /// Draw the fake score's training samples with the generator in eval
    /// mode (no dropout), as the reference does; `false`: in train mode.
    #[serde(default = "yes")]
    pub fake_samples_in_eval_mode: bool,
    /// The teacher and the fake score in the generator loss: `"train"`
    /// (dropout on, the same masks for both, as the reference) or `"eval"`.
    #[serde(default)]
    pub generator_loss_mode: NetworkMode,
    /// Class labels of a conditional generator: `"dataset"` (drawn from the
    /// dataset's labels, as the reference) or `"uniform"`.
    #[serde(default)]
    pub labels: LabelSource,
}

/// Whether networks run with dropout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Dropout on.
    #[default]
    Train,
    /// Dropout off.
    Eval,
}

/// Where a conditional generator's class labels come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// The labels of random dataset images: the dataset's class frequencies.
    #[default]
    Dataset,
    /// Every class equally likely.
    Uniform,
}

fn default_divergence() -> Component {
    Component::plugin("ikl", Params::Null)
}

fn one() -> u64 {
    1
}

fn yes() -> bool {
    true
}

impl DiffInstruct {
    /// Checks the teacher against the registry and fills in its defaults:
    /// enough to sample the teacher, not to distill.
    pub fn resolve_teacher(&mut self, registry: &Registry, ctx: &ResolveContext<'_>) -> Result<()> {
        self.teacher.resolve_plugin(registry, ctx, Role::ScoreModel, "teacher")
    }

    /// The teacher alone, frozen, on `env.device`.
    pub fn build_teacher(&self, env: &BuildEnv<'_>) -> Result<Box<dyn ScoreModel>> {
        builder(env).teacher(&self.teacher, "teacher", 0)
    }

    /// The generator alone (with its teacher-derived initialisation), as
    /// sampling a trained run needs it before loading its weights.
    pub fn build_generator(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Generator>> {
        let teacher = self.build_teacher(env)?;
        builder(env).generator(&self.generator, "generator", &self.teacher, teacher.as_ref(), 1)
    }

    /// The teacher, the generator and the fake score as a run builds them
    /// (the same initialisation streams), outside a step: what
    /// `difi bench --write-check` evaluates.
    pub fn build_networks(&self, env: &BuildEnv<'_>) -> Result<Networks> {
        let b = builder(env);
        let teacher = b.teacher(&self.teacher, "teacher", 0)?;
        let generator = b.generator(&self.generator, "generator", &self.teacher, teacher.as_ref(), 1)?;
        let fake_score = b.trainable_score_model(&self.fake_score, "fake_score", &self.teacher, teacher.as_ref(), 2)?;
        check_roles(teacher.as_ref(), generator.as_ref(), fake_score.as_ref())?;
        Ok(Networks { teacher, generator, fake_score })
    }
}

/// A Diff-Instruct run's three networks, built outside a step.
pub struct Networks {
    pub teacher: Box<dyn ScoreModel>,
    pub generator: Box<dyn Generator>,
    pub fake_score: Box<dyn ScoreModel>,
}

fn builder<'a>(env: &BuildEnv<'a>) -> NetworkBuilder<'a> {
    NetworkBuilder { registry: env.registry, device: env.device, seed: env.seed, base_dir: env.base_dir }
}

impl Algorithm for DiffInstruct {
    const NAME: &'static str = "diff-instruct";

    fn trained_parts(&self) -> Vec<&'static str> {
        vec!["generator", "fake_score"]
    }

    fn resolve(&mut self, registry: &Registry, ctx: &ResolveContext<'_>) -> Result<()> {
        self.resolve_teacher(registry, ctx)?;
        if self.generator.init_from == Some(InitFrom::Teacher) && self.generator.plugin.is_none() {
            self.generator.params = resolve_params::<DenoiserGeneratorParams>(&self.generator.params)
                .map_err(|e| e.under("generator.params"))?;
        } else {
            self.generator.resolve_plugin(registry, ctx, Role::Generator, "generator")?;
        }
        if self.fake_score.init_from == Some(InitFrom::Teacher) && self.fake_score.plugin.is_none() {
            if !self.fake_score.params.is_null() {
                return Err(Error::config(
                    "fake_score.params",
                    "a copy of the teacher takes the teacher's params; remove these",
                ));
            }
        } else {
            self.fake_score.resolve_plugin(registry, ctx, Role::ScoreModel, "fake_score")?;
        }
        self.divergence.resolve_plugin(registry, ctx, Role::Divergence, "divergence")
    }

    fn validate(&self) -> Result<()> {
        if self.fake_updates_per_iter == 0 {
            return Err(Error::config("fake_updates_per_iter", "must be at least 1"));
        }
        if let Some(pipe) = &self.fake_augment {
            pipe.validate().map_err(|e| e.under("fake_augment"))?;
        }
        self.fake_loss.validate().map_err(|e| e.under("fake_loss"))
    }

    fn build(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Step>> {
        let b = builder(env);
        let mut teacher = b.teacher(&self.teacher, "teacher", 0)?;
        let mut generator = b.generator(&self.generator, "generator", &self.teacher, teacher.as_ref(), 1)?;
        let generator_ema = b.generator(&self.generator, "generator", &self.teacher, teacher.as_ref(), 1)?;
        let mut fake_score =
            b.trainable_score_model(&self.fake_score, "fake_score", &self.teacher, teacher.as_ref(), 2)?;
        let ctx = BuildContext { device: env.device, teacher: Some(teacher.as_ref()), base_dir: env.base_dir };
        let divergence = env
            .registry
            .build_divergence(self.divergence.plugin_name("divergence")?, &self.divergence.params, &ctx)
            .map_err(|e| e.under("divergence.params"))?;
        check_roles(teacher.as_ref(), generator.as_ref(), fake_score.as_ref())?;
        env.checkpoint_activations(
            Self::NAME,
            vec![
                ("teacher", NetworkMut::Score(teacher.as_mut())),
                ("generator", NetworkMut::Generator(generator.as_mut())),
                ("fake_score", NetworkMut::Score(fake_score.as_mut())),
            ],
        )?;
        self.fake_loss.check_sigma_source(Some(divergence.as_ref())).map_err(|e| e.under("fake_loss"))?;
        if let Some(dataset) = &env.dataset {
            check_dataset(dataset.as_ref(), teacher.as_ref())?;
        }
        if let Some(pipe) = &self.fake_augment
            && pipe.label_dim() != fake_score.augment_dim()
        {
            return Err(Error::config(
                "fake_augment",
                format!(
                    "makes {} augmentation labels but the fake score takes {} (its augment_dim)",
                    pipe.label_dim(),
                    fake_score.augment_dim()
                ),
            ));
        }
        let label_dim = teacher.label_dim();
        let labels = match (self.labels, &env.dataset) {
            (_, _) if label_dim == 0 => Labels::None,
            (LabelSource::Uniform, _) => Labels::Uniform,
            (LabelSource::Dataset, Some(dataset)) if dataset.label_dim() > 0 => Labels::Dataset(dataset.clone()),
            (LabelSource::Dataset, _) => {
                return Err(Error::config(
                    "labels",
                    "the teacher is conditional: labels from the dataset need a labelled `dataset`; \
                     give one or set labels: \"uniform\"",
                ));
            }
        };
        Ok(Box::new(DiffInstructStep {
            labels,
            label_dim,
            teacher,
            generator,
            generator_ema,
            fake_score,
            divergence,
            fake_loss: self.fake_loss.clone(),
            fake_warmup_iters: self.fake_warmup_iters,
            fake_updates_per_iter: self.fake_updates_per_iter,
            fake_augment: self.fake_augment.clone(),
            fake_samples_in_eval_mode: self.fake_samples_in_eval_mode,
            generator_loss_mode: self.generator_loss_mode,
        }))
    }
}

/// The generator and the fake score must produce the teacher's samples and
/// classes, and the fake score must be trainable.
fn check_roles(teacher: &dyn ScoreModel, generator: &dyn Generator, fake_score: &dyn ScoreModel) -> Result<()> {
    let shape = teacher.sample_shape();
    for (role, got) in [("generator", generator.sample_shape()), ("fake score", fake_score.sample_shape())] {
        if got != shape {
            return Err(Error::Shape {
                what: format!("{role} samples (the teacher's shape)"),
                expected: shape,
                actual: got,
            });
        }
    }
    let label_dim = teacher.label_dim();
    for (role, got) in [("generator", generator.label_dim()), ("fake_score", fake_score.label_dim())] {
        if got != label_dim {
            return Err(Error::config(role, format!("has {got} classes but the teacher has {label_dim}")));
        }
    }
    if fake_score.var_store().is_none() {
        return Err(Error::config("fake_score", "the fake score must have trainable weights"));
    }
    Ok(())
}

/// One Diff-Instruct run's networks.
struct DiffInstructStep {
    /// Frozen pre-trained model.
    teacher: Box<dyn ScoreModel>,
    /// The one-step generator being trained.
    generator: Box<dyn Generator>,
    /// Exponential moving average of the generator's weights (what is sampled).
    generator_ema: Box<dyn Generator>,
    /// Score model of the generator's distribution, trained alongside.
    fake_score: Box<dyn ScoreModel>,
    /// Gives the generator loss.
    divergence: Box<dyn Divergence>,
    fake_loss: DenoisingLoss,
    fake_warmup_iters: u64,
    fake_updates_per_iter: u64,
    fake_augment: Option<AugmentPipe>,
    fake_samples_in_eval_mode: bool,
    generator_loss_mode: NetworkMode,
    labels: Labels,
    label_dim: i64,
}

/// How the step draws class labels.
enum Labels {
    /// The teacher is unconditional.
    None,
    /// Uniformly random classes.
    Uniform,
    /// The labels of uniformly random images of this dataset.
    Dataset(Rc<dyn Dataset>),
}

impl DiffInstructStep {
    /// One-hot labels `[n, label_dim]` for a batch, or `None` when unconditional.
    fn draw_labels(&self, n: i64, device: Device) -> Result<Option<Tensor>> {
        match &self.labels {
            Labels::None => Ok(None),
            Labels::Uniform => random_labels(n, self.label_dim, device),
            Labels::Dataset(dataset) => {
                let len = dataset.len() as i64;
                let indices = difi_core::shard::batch_draw(n, 0, |n| {
                    Tensor::f_randint(len, [n], (Kind::Int64, Device::Cpu)).ctx("label indices")
                })?;
                let classes = Vec::<i64>::try_from(indices)
                    .ctx("label indices")?
                    .into_iter()
                    .map(|i| dataset.label(i as usize).map(|l| l.unwrap_or(0)))
                    .collect::<Result<Vec<_>>>()?;
                let classes = Tensor::from_slice(&classes).f_to_device(device).ctx("labels")?;
                Ok(Some(classes.f_one_hot(self.label_dim).ctx("labels")?.f_to_kind(Kind::Float).ctx("labels")?))
            }
        }
    }

    /// Generator samples `[N, *shape]` and their one-hot labels.
    fn generator_batch(&self, n: i64, device: Device) -> Result<(Tensor, Option<Tensor>)> {
        let z = self.generator.sample_latents(n, device)?;
        let labels = self.draw_labels(n, device)?;
        let x = self.generator.generate(&z, labels.as_ref())?;
        Ok((x, labels))
    }

    /// Step 1: EDM's denoising loss of the fake score on detached generator
    /// samples (augmented when configured).
    fn fake_score_update(&mut self, ctx: &mut StepContext<'_>) -> Result<Tensor> {
        if self.fake_samples_in_eval_mode {
            self.generator.set_train(false);
        }
        let (x_g, labels) = tch::no_grad(|| self.generator_batch(ctx.batch_size, ctx.device))?;
        self.fake_score.set_train(true);
        let loss = self.fake_loss.augmented_loss(
            self.fake_score.as_ref(),
            &x_g,
            labels.as_ref(),
            self.fake_augment.as_ref(),
            Some(self.divergence.as_ref()),
        )?;
        ctx.update("fake_score", &loss)
    }

    /// Step 2: the divergence's generator loss, the fake score frozen.
    fn generator_update(&mut self, ctx: &mut StepContext<'_>) -> Result<Tensor> {
        self.generator.set_train(true);
        let train = self.generator_loss_mode == NetworkMode::Train;
        self.teacher.set_train(train);
        self.fake_score.set_train(train);
        let (x_g, labels) = self.generator_batch(ctx.batch_size, ctx.device)?;
        let fake_vars = self.fake_score.var_store_mut().expect("checked when built");
        fake_vars.freeze();
        // Frozen through backward too: checkpointed networks run again there.
        let updated = self
            .divergence
            .generator_loss(&x_g, labels.as_ref(), self.teacher.as_ref(), self.fake_score.as_ref())
            .and_then(|loss| ctx.update("generator", &loss));
        self.fake_score.var_store_mut().expect("checked when built").unfreeze();
        self.teacher.set_train(false);
        updated
    }
}

impl Step for DiffInstructStep {
    fn parts(&mut self) -> Vec<Part<'_>> {
        let mut parts = vec![
            Part { name: "generator", vars: self.generator.var_store_mut(), role: PartRole::Trained },
            Part {
                name: "generator_ema",
                vars: self.generator_ema.var_store_mut(),
                role: PartRole::EmaOf("generator"),
            },
            Part {
                name: "fake_score",
                vars: self.fake_score.var_store_mut().expect("checked when built"),
                role: PartRole::Trained,
            },
        ];
        if let Some(vars) = self.teacher.var_store_mut() {
            parts.push(Part { name: "teacher", vars, role: PartRole::Frozen });
        }
        parts
    }

    fn warmup_iterations(&self) -> u64 {
        self.fake_warmup_iters
    }

    fn warmup(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses> {
        Ok(Losses(vec![("fake_score", self.fake_score_update(ctx)?)]))
    }

    fn iteration(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses> {
        let updates = self.fake_updates_per_iter;
        let mut fake_score = self.fake_score_update(ctx)?;
        if updates > 1 {
            // The mean in float64, on the device (read at the tick).
            fake_score = fake_score.f_to_kind(Kind::Double).ctx("fake-score loss")?;
            for _ in 1..updates {
                let loss = self.fake_score_update(ctx)?.f_to_kind(Kind::Double).ctx("fake-score loss")?;
                fake_score = fake_score.f_add(&loss).ctx("fake-score loss")?;
            }
            fake_score = fake_score.f_div_scalar(updates as f64).ctx("fake-score loss")?;
        }
        let generator = self.generator_update(ctx)?;
        Ok(Losses(vec![("fake_score", fake_score), ("generator", generator)]))
    }

    fn evaluated_generator(&self) -> Option<&dyn Generator> {
        Some(self.generator_ema.as_ref())
    }

    fn capturable(&mut self) -> std::result::Result<(), String> {
        if matches!(self.labels, Labels::Dataset(_)) {
            return Err("labels drawn from the dataset are looked up on the host each iteration; \
                        set labels: \"uniform\" to capture"
                .into());
        }
        if self.fake_augment.is_some() {
            return Err("fake_augment has not been checked for capture".into());
        }
        if !self.divergence.capturable() {
            return Err("the divergence has not declared itself capturable (runtime plugins cannot yet)".into());
        }
        // The generator loss reseeds to share dropout masks between the two
        // denoisers, which a graph cannot replay; networks that draw nothing
        // need no reseed.
        let train = self.generator_loss_mode == NetworkMode::Train;
        self.teacher.set_train(train);
        self.fake_score.set_train(train);
        let reseeds = self.teacher.draws_random_numbers() || self.fake_score.draws_random_numbers();
        self.teacher.set_train(false);
        if reseeds {
            return Err("the generator loss gives the teacher and the fake score the same dropout masks by \
                        reseeding, which a graph cannot replay; set generator_loss_mode: \"eval\" or use \
                        networks without dropout to capture"
                .into());
        }
        Ok(())
    }
}
