//! Training a StyleGAN2 GAN on dataset images (Karras et al. 2020,
//! NVlabs/stylegan2-ada-pytorch `training/loss.py` `StyleGAN2Loss` and
//! `training/training_loop.py`): the non-saturating logistic loss, R1 on
//! real images every `d_reg_interval` iterations (lazy regularisation, with
//! the reference's learning-rate and β adjustment of the discriminator's
//! Adam), and the generator's EMA (the runner's `EmaOf`). One iteration runs
//! the reference's phases in its order:
//!
//! 1. `Gmain`: `softplus(−D(G(z), c))`, the discriminator frozen;
//! 2. `Dmain`: `softplus(D(G(z), c)) + softplus(−D(x, c))`;
//! 3. `Dreg` (every `d_reg_interval`-th iteration): `γ/2 ‖∇ₓD(x, c)‖²`
//!    times the interval.
//!
//! Left out: style mixing and path-length regularisation (the reference's
//! CIFAR-10 setup disables both), and ADA's augmentation. X-flips of the real
//! images are the dataset's (`xflip: true` of the `zip` plugin, as the
//! reference's `--mirror`).

use std::rc::Rc;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::registry::{Registry, ResolveContext};
use difi_core::rng::{RngStream, reseed};
use difi_core::shard::batch_draw;
use difi_core::traits::{Dataset, Generator};
use difi_zoo::stylegan2::config::{GeneratorArgs, GeneratorConfig, NoiseMode};
use difi_zoo::stylegan2::discriminator::{DiscriminatorArgs, DiscriminatorConfig, StyleGan2Discriminator};
use difi_zoo::stylegan2::mapping::Truncation;
use difi_zoo::stylegan2::network::{Sampling, StyleGan2Generator};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::algorithm::{Algorithm, BuildEnv};
use crate::optim::AdamConfig;
use crate::step::{Losses, Part, PartRole, Step, StepContext};

/// The GAN section of a config; the real images come from the config's `dataset`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StyleGan2Gan {
    /// The generator: `Generator`'s constructor keywords in the reference's
    /// names (`z_dim`, `w_dim`, `img_resolution`, `mapping_kwargs`, …).
    pub generator: GeneratorArgs,
    /// The discriminator: `Discriminator`'s constructor keywords;
    /// `c_dim`, `img_resolution` and `img_channels` default to the generator's.
    #[serde(default)]
    pub discriminator: DiscriminatorArgs,
    /// R1 weight γ (the reference's `r1_gamma`; its CIFAR-10 setup 0.01,
    /// its `auto` setup 0.0002·R²/batch).
    #[serde(default = "default_r1_gamma")]
    pub r1_gamma: f64,
    /// R1 every this many iterations (lazy regularisation; the reference's
    /// `D_reg_interval` 16); 1 regularises every iteration in a separate update.
    #[serde(default = "default_reg_interval")]
    pub d_reg_interval: u64,
}

fn default_r1_gamma() -> f64 {
    10.0
}

fn default_reg_interval() -> u64 {
    16
}

impl StyleGan2Gan {
    /// The generator's architecture, checked.
    pub fn generator_config(&self) -> Result<GeneratorConfig> {
        self.generator.resolve().map_err(|e| e.under("generator"))
    }

    /// The discriminator's architecture: its keywords, with the generator's
    /// classes, resolution and channels where they are not given.
    pub fn discriminator_config(&self) -> Result<DiscriminatorConfig> {
        let g = self.generator_config()?;
        let mut args = self.discriminator.clone();
        args.c_dim = args.c_dim.or(Some(g.c_dim));
        args.img_resolution = args.img_resolution.or(Some(g.img_resolution));
        args.img_channels = args.img_channels.or(Some(g.img_channels));
        let config = args.resolve().map_err(|e| e.under("discriminator"))?;
        if (config.c_dim, config.img_resolution, config.img_channels) != (g.c_dim, g.img_resolution, g.img_channels) {
            return Err(Error::config(
                "discriminator",
                "its c_dim, img_resolution and img_channels must be the generator's",
            ));
        }
        Ok(config)
    }

    /// The generator alone (for sampling a run), initialised from the run's seed.
    pub fn build_generator(&self, device: Device, seed: u64) -> Result<StyleGan2Generator> {
        reseed(seed, RngStream::Init, 0);
        StyleGan2Generator::new(&self.generator_config()?, training_sampling(), device)
    }
}

/// How the generator samples in training and evaluation: fresh noise, no truncation.
fn training_sampling() -> Sampling {
    Sampling { truncation: Truncation::default(), noise_mode: NoiseMode::Random }
}

impl Algorithm for StyleGan2Gan {
    const NAME: &'static str = "stylegan2-gan";

    fn trained_parts(&self) -> Vec<&'static str> {
        vec!["generator", "discriminator"]
    }

    fn resolve(&mut self, _registry: &Registry, _ctx: &ResolveContext<'_>) -> Result<()> {
        self.discriminator_config().map(|_| ())
    }

    fn validate(&self) -> Result<()> {
        if !(self.r1_gamma.is_finite() && self.r1_gamma >= 0.0) {
            return Err(Error::config("r1_gamma", "must be finite and at least 0"));
        }
        if self.d_reg_interval == 0 {
            return Err(Error::config("d_reg_interval", "must be at least 1"));
        }
        Ok(())
    }

    /// Lazy regularisation: the discriminator's Adam also takes the R1
    /// steps, so, as the reference, its learning rate is scaled by
    /// `c = interval / (interval + 1)` and its βs raised to the power `c`.
    fn optimizer_settings(&self, part: &str, mut config: AdamConfig) -> AdamConfig {
        if part == "discriminator" && self.r1_gamma > 0.0 {
            let ratio = self.d_reg_interval as f64 / (self.d_reg_interval as f64 + 1.0);
            config.lr *= ratio;
            config.betas = (config.betas.0.powf(ratio), config.betas.1.powf(ratio));
        }
        config
    }

    fn build(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Step>> {
        env.checkpoint_activations(Self::NAME, Vec::new())?;
        let dataset = env.dataset.clone().ok_or_else(|| Error::config("dataset", "GAN training needs a dataset"))?;
        let g_config = self.generator_config()?;
        let d_config = self.discriminator_config()?;
        let shape = vec![g_config.img_channels, g_config.img_resolution, g_config.img_resolution];
        if dataset.image_shape() != shape.as_slice() {
            return Err(Error::Shape {
                what: "dataset images (the generator's sample shape)".into(),
                expected: shape,
                actual: dataset.image_shape().to_vec(),
            });
        }
        if dataset.is_empty() {
            return Err(Error::config("dataset", "holds no images"));
        }
        if g_config.c_dim > 0 && dataset.label_dim() != g_config.c_dim {
            return Err(Error::config(
                "dataset",
                format!("has {} classes; the conditional generator has {}", dataset.label_dim(), g_config.c_dim),
            ));
        }
        if let Some(group) = d_config.mbstd_group_size
            && d_config.mbstd_num_channels > 0
            && env.batch_size % group.min(env.batch_size) != 0
        {
            return Err(Error::config(
                "discriminator.epilogue_kwargs.mbstd_group_size",
                format!("{group} does not divide the batch of {}", env.batch_size),
            ));
        }
        let generator = self.build_generator(env.device, env.seed)?;
        let generator_ema = self.build_generator(env.device, env.seed)?;
        reseed(env.seed, RngStream::Init, 1);
        let discriminator = StyleGan2Discriminator::new(&d_config, env.device)?;
        tracing::info!(
            "StyleGAN2: generator {} parameters, discriminator {} parameters",
            generator.parameter_count(),
            discriminator.parameter_count()
        );
        Ok(Box::new(GanStep {
            generator,
            generator_ema,
            discriminator,
            dataset,
            c_dim: g_config.c_dim,
            z_dim: g_config.z_dim,
            num_ws: g_config.num_ws(),
            r1_gamma: self.r1_gamma,
            d_reg_interval: self.d_reg_interval,
        }))
    }
}

struct GanStep {
    generator: StyleGan2Generator,
    /// The generator's EMA: what metrics and grids sample.
    generator_ema: StyleGan2Generator,
    discriminator: StyleGan2Discriminator,
    dataset: Rc<dyn Dataset>,
    c_dim: i64,
    z_dim: i64,
    num_ws: i64,
    r1_gamma: f64,
    d_reg_interval: u64,
}

/// One iteration's random draws, each with the batch first and drawn in one
/// call through `difi_core::shard::batch_draw`, so that data-parallel ranks
/// draw their rows of what one process draws.
struct Draws {
    /// Real images `[N, C, R, R]` in [−1, 1].
    real: Tensor,
    /// Their one-hot labels `[N, c_dim]` (conditional).
    real_c: Option<Tensor>,
    /// Latents `[N, 2, z_dim]`: index 0 for the generator's phase, 1 for the discriminator's.
    z: Tensor,
    /// Labels of the generated images `[N, 2, c_dim]`, from random dataset images (conditional).
    gen_c: Option<Tensor>,
}

impl GanStep {
    fn draw(&self, n: i64, device: Device) -> Result<Draws> {
        let len = self.dataset.len() as i64;
        // Data-parallel ranks take their rows of the global batch's draws.
        let real_indices =
            batch_draw(n, 0, |n| Tensor::f_randint(len, [n], (Kind::Int64, Device::Cpu)).ctx("real indices"))?;
        let z = batch_draw(n, 0, |n| Tensor::f_randn([n, 2, self.z_dim], (Kind::Float, device)).ctx("latents"))?;
        let label_indices =
            batch_draw(n, 0, |n| Tensor::f_randint(len, [n, 2], (Kind::Int64, Device::Cpu)).ctx("label indices"))?;
        let mut images = Vec::with_capacity(n as usize);
        let mut classes = Vec::with_capacity(n as usize);
        for index in Vec::<i64>::try_from(real_indices).ctx("real indices")? {
            let (image, class) = self.dataset.get(index as usize)?;
            images.push(image);
            classes.push(class.unwrap_or(0));
        }
        let real = Tensor::f_stack(&images, 0).ctx("real")?.f_to_device(device).ctx("real")?;
        let real = real.f_to_kind(Kind::Float).ctx("real")? / 127.5 - 1.0;
        if self.c_dim == 0 {
            return Ok(Draws { real, real_c: None, z, gen_c: None });
        }
        let gen_classes = Vec::<i64>::try_from(label_indices.f_flatten(0, -1).ctx("label indices")?)
            .ctx("label indices")?
            .into_iter()
            .map(|i| self.dataset.label(i as usize).map(|l| l.unwrap_or(0)))
            .collect::<Result<Vec<_>>>()?;
        let one_hot = |classes: &[i64]| -> Result<Tensor> {
            let t = Tensor::from_slice(classes).f_to_device(device).ctx("labels")?;
            t.f_one_hot(self.c_dim).ctx("labels")?.f_to_kind(Kind::Float).ctx("labels")
        };
        let gen_c = one_hot(&gen_classes)?.f_reshape([n, 2, self.c_dim]).ctx("labels")?;
        Ok(Draws { real, real_c: Some(one_hot(&classes)?), z, gen_c: Some(gen_c) })
    }

    /// Generated images `[N, C, R, R]` of phase `phase`'s latents and labels;
    /// moves the tracked `w_avg` as the reference's mapping does in training.
    fn generate(&self, draws: &Draws, phase: i64) -> Result<(Tensor, Option<Tensor>)> {
        let z = draws.z.f_select(1, phase).ctx("latents")?;
        let c = draws.gen_c.as_ref().map(|c| c.f_select(1, phase).ctx("labels")).transpose()?;
        let w = self.generator.mapping().map(&z, c.as_ref())?;
        self.generator.mapping().track_w_avg(&w)?;
        // Every synthesis layer gets the same W (no style mixing).
        let ws = w.f_unsqueeze(1).ctx("broadcast")?.f_repeat([1, self.num_ws, 1]).ctx("broadcast")?;
        Ok((self.generator.synthesize(&ws, NoiseMode::Random)?, c))
    }

    /// `Gmain`: the generator makes the discriminator call its images real.
    fn generator_phase(&mut self, draws: &Draws, ctx: &mut StepContext<'_>) -> Result<Tensor> {
        let (images, c) = self.generate(draws, 0)?;
        self.discriminator.var_store_mut().freeze();
        let loss = self.discriminator.forward(&images, c.as_ref()).and_then(|logits| {
            logits.f_neg().ctx("g loss")?.f_softplus().ctx("g loss")?.f_mean(Kind::Float).ctx("g loss")
        });
        let value = loss.and_then(|loss| ctx.update("generator", &loss));
        self.discriminator.var_store_mut().unfreeze();
        value
    }

    /// `Dmain`: the discriminator tells generated images from real ones.
    fn discriminator_phase(&mut self, draws: &Draws, ctx: &mut StepContext<'_>) -> Result<Tensor> {
        let (images, c) = tch::no_grad(|| self.generate(draws, 1))?;
        let fake_logits = self.discriminator.forward(&images, c.as_ref())?;
        let real_logits = self.discriminator.forward(&draws.real, draws.real_c.as_ref())?;
        let loss = fake_logits.f_softplus().ctx("d loss")?.f_mean(Kind::Float).ctx("d loss")?
            + real_logits.f_neg().ctx("d loss")?.f_softplus().ctx("d loss")?.f_mean(Kind::Float).ctx("d loss")?;
        ctx.update("discriminator", &loss)
    }

    /// `Dreg`: R1, `γ/2 ‖∇ₓ D(x, c)‖²` on the real images, times the
    /// interval (the reference's `gain`). Returns the mean penalty ‖∇ₓD‖²,
    /// detached, on the device.
    fn r1_phase(&mut self, draws: &Draws, ctx: &mut StepContext<'_>) -> Result<Tensor> {
        let real = draws.real.f_detach().ctx("r1")?.set_requires_grad(true);
        let logits = self.discriminator.forward(&real, draws.real_c.as_ref())?;
        let sum = logits.f_sum(Kind::Float).ctx("r1")?;
        let grads = Tensor::f_run_backward(&[sum], &[&real], true, true).ctx("r1 gradient")?;
        let penalty =
            grads[0].f_square().ctx("r1")?.f_sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float).ctx("r1")?;
        let penalty_mean = penalty.f_mean(Kind::Float).ctx("r1")?;
        let loss = &penalty_mean * (self.r1_gamma / 2.0 * self.d_reg_interval as f64);
        let _regularisation_loss = ctx.update("discriminator", &loss)?;
        penalty_mean.f_detach().ctx("r1")
    }
}

impl Step for GanStep {
    fn parts(&mut self) -> Vec<Part<'_>> {
        vec![
            Part { name: "generator", vars: self.generator.var_store_mut(), role: PartRole::Trained },
            Part {
                name: "generator_ema",
                vars: self.generator_ema.var_store_mut(),
                role: PartRole::EmaOf("generator"),
            },
            Part { name: "discriminator", vars: self.discriminator.var_store_mut(), role: PartRole::Trained },
        ]
    }

    fn iteration(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses> {
        let draws = self.draw(ctx.batch_size, ctx.device)?;
        let generator = self.generator_phase(&draws, ctx)?;
        let discriminator = self.discriminator_phase(&draws, ctx)?;
        if self.r1_gamma > 0.0 && ctx.iteration.is_multiple_of(self.d_reg_interval) {
            let penalty = self.r1_phase(&draws, ctx)?;
            // Reading it waits for the device: only when someone listens.
            if tracing::enabled!(tracing::Level::DEBUG) {
                let penalty = penalty.f_double_value(&[]).ctx("r1")?;
                tracing::debug!(iteration = ctx.iteration, penalty, "R1");
            }
        }
        Ok(Losses(vec![("generator", generator), ("discriminator", discriminator)]))
    }

    fn evaluated_generator(&self) -> Option<&dyn Generator> {
        Some(&self.generator_ema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gan(r1_gamma: f64) -> StyleGan2Gan {
        StyleGan2Gan {
            generator: GeneratorArgs::default(),
            discriminator: DiscriminatorArgs::default(),
            r1_gamma,
            d_reg_interval: 16,
        }
    }

    #[test]
    fn lazy_regularisation_adjusts_only_the_discriminators_adam() {
        let configured = AdamConfig { lr: 0.0025, betas: (0.0, 0.99), ..AdamConfig::default() };
        let d = gan(10.0).optimizer_settings("discriminator", configured.clone());
        assert!((d.lr - 0.0025 * 16.0 / 17.0).abs() < 1e-15);
        assert!((d.betas.1 - 0.99f64.powf(16.0 / 17.0)).abs() < 1e-15 && d.betas.0 == 0.0);
        let g = gan(10.0).optimizer_settings("generator", configured.clone());
        assert_eq!((g.lr, g.betas), (configured.lr, configured.betas));
        // Without R1 there is no regularisation phase to make room for.
        assert_eq!(gan(0.0).optimizer_settings("discriminator", configured.clone()).lr, configured.lr);
    }
}
