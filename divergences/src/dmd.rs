//! Distribution Matching Distillation (Yin et al., "One-step Diffusion with
//! Distribution Matching Distillation", CVPR 2024), as DMD2's code computes
//! it (`tianweiy/DMD2`, `main/edm/edm_guidance.py`,
//! `compute_distribution_matching_loss`): the IKL direction normalised per
//! sample,
//!
//! `g = (D_f − D_r) / mean |x_g − D_r|`,  loss `½ mean (x_g − sg(x_g − g))²`,
//!
//! whose gradient moves each sample along `(D_r − D_f)/mean|x_g − D_r|`; no
//! gradient passes through the networks. σ is drawn from a grid of 1000
//! levels on EDM's schedule, indices 20 to 980 (σ ≈ 0.0032 to 72). DMD2
//! updates its fake score 5 times per generator update on ImageNet
//! (`fake_updates_per_iter` in the Diff-Instruct section).

use difi_core::error::{Result, TorchContext};
use difi_core::traits::{Divergence, ScoreModel};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::noisy::{NoiseLevels, SigmaScale, evaluate_noisy, per_sample_mean_abs};

/// Parameters of `dmd`, DMD2's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DmdParams {
    /// The grid's schedule (for σ_data 0.5).
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// Levels on the grid.
    pub num_steps: i64,
    /// The range of indices drawn, as fractions of the grid (DMD2's
    /// `min_step_percent`, `max_step_percent`).
    pub min_step_percent: f64,
    pub max_step_percent: f64,
    /// `"teacher"`: σ scaled by the teacher's σ_data / 0.5; `"absolute"`: as written.
    pub sigma_scale: SigmaScale,
}

impl Default for DmdParams {
    fn default() -> Self {
        DmdParams {
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            num_steps: 1000,
            min_step_percent: 0.02,
            max_step_percent: 0.98,
            sigma_scale: SigmaScale::Teacher,
        }
    }
}

/// The DMD divergence.
pub struct Dmd {
    noise: NoiseLevels,
    /// The whole grid: DMD2 trains its fake score at every level.
    fake_noise: NoiseLevels,
    sigma_scale: SigmaScale,
}

impl Dmd {
    /// DMD with the given grid.
    pub fn new(params: DmdParams) -> Result<Self> {
        let index = |fraction: f64| (fraction * params.num_steps as f64) as i64;
        let noise = NoiseLevels::Grid {
            sigma_min: params.sigma_min,
            sigma_max: params.sigma_max,
            rho: params.rho,
            steps: params.num_steps,
            first: index(params.min_step_percent),
            last: index(params.max_step_percent).min(params.num_steps - 1),
        };
        noise.validate()?;
        let fake_noise = NoiseLevels::Grid {
            sigma_min: params.sigma_min,
            sigma_max: params.sigma_max,
            rho: params.rho,
            steps: params.num_steps,
            first: 0,
            last: params.num_steps - 1,
        };
        Ok(Dmd { noise, fake_noise, sigma_scale: params.sigma_scale })
    }
}

impl Divergence for Dmd {
    /// Device work only; the shared dropout masks reseed only for denoisers that draw.
    fn capturable(&self) -> bool {
        true
    }

    fn generator_loss(
        &self,
        x_g: &Tensor,
        labels: Option<&Tensor>,
        teacher: &dyn ScoreModel,
        fake: &dyn ScoreModel,
    ) -> Result<Tensor> {
        let target = tch::no_grad(|| -> Result<Tensor> {
            let x = x_g.detach();
            let noisy = evaluate_noisy(&x, labels, teacher, fake, &self.noise, self.sigma_scale)?;
            // DMD2 divides without a floor (a zero normaliser is mended by nan_to_num below).
            let normaliser = per_sample_mean_abs(&(&x - &noisy.d_real), 0.0)?;
            let mut grad = (noisy.d_fake - noisy.d_real) / normaliser;
            let _ = grad.f_nan_to_num_(0.0, None, None).ctx("dmd")?;
            Ok(x - grad)
        })?;
        let loss = (x_g - target).f_square().ctx("dmd loss")?.f_mean(Kind::Float).ctx("dmd loss")?;
        Ok(loss * 0.5)
    }

    /// DMD2's `compute_loss_fake` draws any index of the grid.
    fn fake_score_sigma(&self, n: i64, like: &Tensor, sigma_data: f64) -> Result<Option<Tensor>> {
        self.fake_noise.sample(n, like, sigma_data, self.sigma_scale == SigmaScale::Teacher).map(Some)
    }
}

difi_core::register_plugin!(Divergence, "dmd", DmdParams, |params, _ctx| Ok(Box::new(Dmd::new(params)?)));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::Gaussian;
    use tch::Device;

    fn gradient(teacher: &Gaussian, fake: &Gaussian) -> (Tensor, Tensor) {
        let x_g =
            (Tensor::arange(48, (Kind::Double, Device::Cpu)).reshape([16, 3]) / 12.0 - 2.0).set_requires_grad(true);
        let dmd = Dmd::new(DmdParams::default()).unwrap();
        tch::manual_seed(3);
        dmd.generator_loss(&x_g, None, teacher, fake).unwrap().backward();
        (x_g.grad(), x_g.detach())
    }

    #[test]
    fn the_fake_score_is_trained_over_the_whole_grid_at_the_teachers_scale() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let dmd = Dmd::new(DmdParams::default()).unwrap();
        let like = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        tch::manual_seed(1);
        // σ_data 1.0: twice EDM's levels.
        let sigma = dmd.fake_score_sigma(20_000, &like, 1.0).unwrap().unwrap();
        let (min, max) = (sigma.min().double_value(&[]), sigma.max().double_value(&[]));
        assert!((min / 0.004 - 1.0).abs() < 1e-4, "the grid's first level, doubled: {min}");
        assert!((max / 160.0 - 1.0).abs() < 1e-4, "the grid's last level, doubled: {max}");
        let generator_levels = dmd.noise.sample(20_000, &like, 1.0, true).unwrap();
        assert!(generator_levels.min().double_value(&[]) > 1.5 * min, "the generator loss skips the lowest 2%");
    }

    #[test]
    fn gradient_vanishes_when_the_fake_score_equals_the_teacher() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let model = Gaussian { variance: 1.0, dim: 3 };
        assert_eq!(gradient(&model, &model).0.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn gradient_is_the_normalised_denoiser_difference() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (teacher, fake) = (Gaussian { variance: 1.0, dim: 3 }, Gaussian { variance: 2.0, dim: 3 });
        let (grad, x) = gradient(&teacher, &fake);
        tch::manual_seed(3);
        let noise =
            NoiseLevels::Grid { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0, steps: 1000, first: 20, last: 980 };
        let sigma = noise.sample(16, &x, 1.0, true).unwrap().to_kind(Kind::Double).reshape([16, 1]);
        let x_t = &x + x.randn_like() * &sigma;
        let a = |s: f64| (sigma.ones_like() * s) / (sigma.square() + s);
        let (d_r, d_f) = (a(1.0) * &x_t, a(2.0) * &x_t);
        let normaliser = (&x - &d_r).abs().mean_dim([1].as_slice(), true, Kind::Double);
        let expected = (d_f - d_r) / normaliser / 48.0;
        let scale = expected.abs().max().double_value(&[]);
        let error = (grad - &expected).abs().max().double_value(&[]) / scale;
        assert!(error < 1e-6 && scale > 1e-4, "relative error {error}");
    }
}
