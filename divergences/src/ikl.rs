//! The Integral KL divergence of Diff-Instruct (Luo et al., "Diff-Instruct:
//! A Universal Approach for Transferring Knowledge From Pre-trained Diffusion
//! Models", NeurIPS 2023, eq. 3.4).
//!
//! Its generator gradient is `E[w(σ) (s_f(x_t) − s_r(x_t))ᵀ ∂x_g/∂θ]` with
//! `x_t = x_g + σε`. Since `s_f − s_r = (D_f − D_r)/σ²`, the surrogate loss
//! `Σ sg(w(σ)/σ² · (D_f − D_r)) · x_g / N` has exactly that gradient; the
//! reference (`pkulwj1994/diff_instruct`, `di_loss.py`) uses w(σ) = σ².

use difi_core::error::{Result, TorchContext};
use difi_core::traits::{Divergence, ScoreModel};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::noisy::{NoiseLevels, SigmaScale, evaluate_noisy};

/// Parameters of `ikl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IklParams {
    /// Mean of ln σ (for σ_data 0.5).
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
    /// w(σ): `"sigma2"` (w = σ², the reference), `"constant"` (w = 1) or
    /// `"edm"` (EDM's loss weight λ(σ) = (σ² + σ_d²)/(σ σ_d)²).
    pub weighting: Weighting,
    /// `"teacher"`: σ scaled by the teacher's σ_data / 0.5; `"absolute"`: as written.
    pub sigma_scale: SigmaScale,
}

/// The weighting w(σ) of the integral over noise levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// w(σ) = σ²: the surrogate uses `D_f − D_r` unscaled (the reference).
    Sigma2,
    /// w(σ) = 1: the surrogate uses the score difference `(D_f − D_r)/σ²`.
    #[serde(alias = "unit")]
    Constant,
    /// w(σ) = λ(σ) = (σ² + σ_d²)/(σ σ_d)², EDM's denoising-loss weight.
    Edm,
}

impl Default for IklParams {
    fn default() -> Self {
        IklParams { p_mean: -1.2, p_std: 1.2, weighting: Weighting::Sigma2, sigma_scale: SigmaScale::Teacher }
    }
}

/// The IKL divergence.
pub struct Ikl {
    noise: NoiseLevels,
    weighting: Weighting,
    sigma_scale: SigmaScale,
}

impl Ikl {
    /// IKL with the given noise distribution and weighting.
    pub fn new(params: IklParams) -> Result<Self> {
        let noise = NoiseLevels::LogNormal { p_mean: params.p_mean, p_std: params.p_std };
        noise.validate()?;
        Ok(Ikl { noise, weighting: params.weighting, sigma_scale: params.sigma_scale })
    }
}

impl Divergence for Ikl {
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
        let direction = tch::no_grad(|| -> Result<Tensor> {
            let noisy = evaluate_noisy(&x_g.detach(), labels, teacher, fake, &self.noise, self.sigma_scale)?;
            let difference = noisy.d_fake - noisy.d_real;
            let sigma2 = noisy.sigma_b.f_square().ctx("ikl weight")?;
            // The surrogate's factor is w(σ)/σ².
            Ok(match self.weighting {
                Weighting::Sigma2 => difference,
                Weighting::Constant => difference / sigma2,
                Weighting::Edm => {
                    let sd2 = teacher.sigma_data().powi(2);
                    difference * (&sigma2 + sd2) / (sigma2.f_square().ctx("ikl weight")? * sd2)
                }
            })
        })?;
        (direction * x_g).f_sum(tch::Kind::Float).ctx("ikl loss").map(|s| s / n as f64)
    }

    /// The reference trains its fake score at the generator loss's levels.
    fn fake_score_sigma(&self, n: i64, like: &Tensor, sigma_data: f64) -> Result<Option<Tensor>> {
        self.noise.sample(n, like, sigma_data, self.sigma_scale == SigmaScale::Teacher).map(Some)
    }
}

difi_core::register_plugin!(Divergence, "ikl", IklParams, |params, _ctx| Ok(Box::new(Ikl::new(params)?)));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::Gaussian;
    use difi_core::traits::broadcast_per_sample;
    use tch::{Device, Kind};

    fn gradient(weighting: Weighting, teacher: &Gaussian, fake: &Gaussian, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(0);
        // Float64 samples, so the check against the exact scores is tight.
        let x_g = Tensor::randn([64, 3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let ikl = Ikl::new(IklParams { weighting, ..Default::default() }).unwrap();
        tch::manual_seed(seed);
        let loss = ikl.generator_loss(&x_g, None, teacher, fake).unwrap();
        loss.backward();
        (x_g.grad(), x_g.detach())
    }

    #[test]
    fn gradient_vanishes_when_the_fake_score_equals_the_teacher() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let model = Gaussian { variance: 1.0, dim: 3 };
        let (grad, _) = gradient(Weighting::Sigma2, &model, &model, 1);
        assert_eq!(grad.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn gradient_is_the_weighted_score_difference() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (teacher, fake) = (Gaussian { variance: 1.0, dim: 3 }, Gaussian { variance: 2.0, dim: 3 });
        for weighting in [Weighting::Sigma2, Weighting::Constant, Weighting::Edm] {
            let (grad, x_g) = gradient(weighting, &teacher, &fake, 5);
            // Replay the same draws: σ, then ε.
            tch::manual_seed(5);
            // σ_data of the teacher is 1: σ scales by 1/0.5.
            let sigma = difi_core::draws::log_normal_sigma(64, -1.2, 1.2, &x_g).unwrap() * 2.0;
            let sigma_b = broadcast_per_sample(&sigma, 2).unwrap();
            let x_t = &x_g + x_g.randn_like() * &sigma_b;
            let s2 = sigma_b.to_kind(Kind::Double).square();
            let w = match weighting {
                Weighting::Sigma2 => s2,
                Weighting::Constant => sigma_b.ones_like(),
                Weighting::Edm => (&s2 + 1.0) / &s2,
            };
            let exact = |m: &Gaussian| m.exact_score(&x_t, &sigma).unwrap();
            let expected = w * (exact(&fake) - exact(&teacher)) / 64.0;
            let scale = expected.abs().max().double_value(&[]);
            let error = (grad - &expected).abs().max().double_value(&[]) / scale;
            // The divergence divides by σ² in float32 (σ is drawn in float32).
            assert!(error < 1e-6, "{weighting:?}: relative error {error}");
            assert!(scale > 1e-3);
        }
    }

    #[test]
    fn the_reference_weighting_is_the_default_and_unit_reads_as_constant() {
        let params: IklParams = difi_core::params::decode_params(&serde_json::json!({"weighting": "unit"})).unwrap();
        assert_eq!(params.weighting, Weighting::Constant);
        assert_eq!(IklParams::default().weighting, Weighting::Sigma2);
    }

    #[test]
    fn a_non_positive_spread_is_refused() {
        let err = Ikl::new(IklParams { p_std: 0.0, ..Default::default() }).err().unwrap().to_string();
        assert!(err.contains("p_std"), "{err}");
    }
}
