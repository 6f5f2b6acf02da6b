//! Score Implicit Matching (Luo, Huang, Geng, Zhang and Qi, "One-Step
//! Diffusion Distillation through Score Implicit Matching", NeurIPS 2024):
//! the divergence `∫ w(σ) E d(s_r(x_t) − s_f(x_t)) dσ` for a distance `d` on
//! the score difference, trained through the paper's score-gradient
//! theorem, whose surrogate is `⟨d′(y), s_f(x_t) − ∇ log q(x_t | x_g)⟩` with
//! `y = s_r − s_f`. In denoiser terms, `y = (D_r − D_f)/σ²` and
//! `s_f − ∇ log q(x_t | x_g) = (D_f − x_g)/σ²`.
//!
//! The authors released no training code; this is difi's reading of the
//! paper, with SiD's conventions where SIM builds on SiD (the paper calls
//! SiD a special case): σ from SiD's schedule, gradients flowing through
//! `x_t` into both networks, and the loss of a sample divided by
//! `sg(mean |x_g − D_r|)`. Per sample,
//!
//! - `"l2"`, `d(y) = ‖y‖²`: `2 ⟨D_r − D_f, D_f − x_g⟩ / w`, twice SiD's loss at α = 1;
//! - `"pseudo-huber"`, `d(y) = √(‖y‖² + c²) − c`:
//!   `σ² ⟨D_r − D_f, D_f − x_g⟩ / (√(‖D_r − D_f‖² + c² σ⁴) · w)`, which is
//!   L2-like while `‖y‖ ≪ c` and follows only the direction of `y` beyond.

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{Divergence, ScoreModel};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::noisy::{EDM_TRAINING_LEVELS, NoiseLevels, SigmaScale, evaluate_noisy, per_sample_mean_abs};

/// The distance on the score difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distance {
    /// `√(‖y‖² + c²) − c`, the paper's choice.
    PseudoHuber,
    /// `‖y‖²`.
    L2,
}

/// Parameters of `sim`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimParams {
    /// `"pseudo-huber"` or `"l2"`.
    pub distance: Distance,
    /// The pseudo-Huber constant, in score units (σ_data 0.5).
    pub c: f64,
    /// SiD's schedule that σ is drawn on (for σ_data 0.5).
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    pub t_max: f64,
    /// `"teacher"`: σ scaled by the teacher's σ_data / 0.5; `"absolute"`: as written.
    pub sigma_scale: SigmaScale,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            distance: Distance::PseudoHuber,
            c: 1.0,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            t_max: 0.8,
            sigma_scale: SigmaScale::Teacher,
        }
    }
}

/// The SIM divergence.
pub struct Sim {
    distance: Distance,
    c: f64,
    noise: NoiseLevels,
    sigma_scale: SigmaScale,
}

impl Sim {
    /// SIM with the given distance and noise levels.
    pub fn new(params: SimParams) -> Result<Self> {
        let noise = NoiseLevels::Schedule {
            sigma_min: params.sigma_min,
            sigma_max: params.sigma_max,
            rho: params.rho,
            t_max: params.t_max,
        };
        noise.validate()?;
        Error::ensure_positive("c", params.c)?;
        Ok(Sim { distance: params.distance, c: params.c, noise, sigma_scale: params.sigma_scale })
    }
}

impl Divergence for Sim {
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
        let n = x_g.size()[0];
        let noisy = evaluate_noisy(x_g, labels, teacher, fake, &self.noise, self.sigma_scale)?;
        let normaliser = per_sample_mean_abs(&(x_g - &noisy.d_real), 1e-5)?;
        let gap = &noisy.d_real - &noisy.d_fake;
        let dims: Vec<i64> = (1..x_g.dim() as i64).collect();
        let inner = (&gap * (&noisy.d_fake - x_g)).f_sum_dim_intlist(dims.as_slice(), true, x_g.kind()).ctx("sim")?;
        let per_sample = match self.distance {
            Distance::L2 => inner * 2.0,
            Distance::PseudoHuber => {
                let sigma2 = noisy.sigma_b.f_square().ctx("sim")?.f_to_kind(x_g.kind()).ctx("sim")?;
                let gap2 =
                    gap.f_square().ctx("sim")?.f_sum_dim_intlist(dims.as_slice(), true, x_g.kind()).ctx("sim")?;
                let scale = (gap2 + (&sigma2 * self.c).f_square().ctx("sim")?).f_sqrt().ctx("sim")?;
                inner * sigma2 / scale
            }
        };
        Ok((per_sample / normaliser).f_sum(Kind::Float).ctx("sim loss")? / n as f64)
    }

    /// SiD's choice (SIM builds on SiD): EDM's levels.
    fn fake_score_sigma(&self, n: i64, like: &Tensor, sigma_data: f64) -> Result<Option<Tensor>> {
        EDM_TRAINING_LEVELS.sample(n, like, sigma_data, self.sigma_scale == SigmaScale::Teacher).map(Some)
    }
}

difi_core::register_plugin!(Divergence, "sim", SimParams, |params, _ctx| Ok(Box::new(Sim::new(params)?)));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::Gaussian;
    use crate::sid::{Sid, SidParams};
    use tch::Device;

    fn gradient(divergence: &dyn Divergence, teacher: &Gaussian, fake: &Gaussian) -> Tensor {
        let x_g =
            (Tensor::arange(48, (Kind::Double, Device::Cpu)).reshape([16, 3]) / 12.0 - 2.0).set_requires_grad(true);
        tch::manual_seed(5);
        divergence.generator_loss(&x_g, None, teacher, fake).unwrap().backward();
        x_g.grad()
    }

    #[test]
    fn gradient_vanishes_when_the_fake_score_equals_the_teacher() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let model = Gaussian { variance: 1.0, dim: 3 };
        for distance in [Distance::PseudoHuber, Distance::L2] {
            let sim = Sim::new(SimParams { distance, ..Default::default() }).unwrap();
            assert_eq!(gradient(&sim, &model, &model).abs().max().double_value(&[]), 0.0, "{distance:?}");
        }
    }

    #[test]
    fn l2_is_twice_sid_at_alpha_one() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (teacher, fake) = (Gaussian { variance: 1.0, dim: 3 }, Gaussian { variance: 2.0, dim: 3 });
        let sim = Sim::new(SimParams { distance: Distance::L2, ..Default::default() }).unwrap();
        let sid = Sid::new(SidParams { alpha: 1.0, ..Default::default() }).unwrap();
        let (a, b) = (gradient(&sim, &teacher, &fake), gradient(&sid, &teacher, &fake));
        let error = (&a - &b * 2.0).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
        assert!(error < 1e-9, "relative error {error}");
    }

    #[test]
    fn pseudo_huber_tends_to_l2_for_a_large_c_and_to_the_direction_for_a_small_one() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (teacher, fake) = (Gaussian { variance: 1.0, dim: 3 }, Gaussian { variance: 2.0, dim: 3 });
        let l2 =
            gradient(&Sim::new(SimParams { distance: Distance::L2, ..Default::default() }).unwrap(), &teacher, &fake);
        let huge = Sim::new(SimParams { c: 1e6, ..Default::default() }).unwrap();
        // For c → ∞, σ²/√(‖δ‖² + c²σ⁴) → 1/c: the pseudo-Huber gradient is the L2 one over 2c.
        let scaled = gradient(&huge, &teacher, &fake) * 2e6;
        let error = (&scaled - &l2).abs().max().double_value(&[]) / l2.abs().max().double_value(&[]);
        assert!(error < 1e-4, "relative error {error}");
        let tiny = gradient(&Sim::new(SimParams { c: 1e-9, ..Default::default() }).unwrap(), &teacher, &fake);
        assert!(tiny.isfinite().all().int64_value(&[]) == 1);
    }
}
