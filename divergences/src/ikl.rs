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

use crate::noisy::{LogNormal, evaluate_noisy};

/// Parameters of `ikl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IklParams {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
    /// w(σ): `"sigma2"` (w = σ², the reference) or `"unit"` (w = 1).
    pub weighting: Weighting,
}

/// The weighting w(σ) of the integral over noise levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// w(σ) = σ²: the surrogate uses `D_f − D_r` unscaled (the reference).
    Sigma2,
    /// w(σ) = 1: the surrogate uses the score difference `(D_f − D_r)/σ²`.
    Unit,
}

impl Default for IklParams {
    fn default() -> Self {
        IklParams { p_mean: -1.2, p_std: 1.2, weighting: Weighting::Sigma2 }
    }
}

/// The IKL divergence.
pub struct Ikl {
    noise: LogNormal,
    weighting: Weighting,
}

impl Ikl {
    /// IKL with the given noise distribution and weighting.
    pub fn new(params: IklParams) -> Result<Self> {
        Ok(Ikl { noise: LogNormal::new(params.p_mean, params.p_std)?, weighting: params.weighting })
    }
}

impl Divergence for Ikl {
    fn generator_loss(
        &self,
        x_g: &Tensor,
        labels: Option<&Tensor>,
        teacher: &dyn ScoreModel,
        fake: &dyn ScoreModel,
    ) -> Result<Tensor> {
        let n = x_g.size()[0];
        let direction = tch::no_grad(|| -> Result<Tensor> {
            let noisy = evaluate_noisy(&x_g.detach(), labels, teacher, fake, &self.noise)?;
            let difference = noisy.d_fake - noisy.d_real;
            Ok(match self.weighting {
                Weighting::Sigma2 => difference,
                Weighting::Unit => difference / noisy.sigma_b.f_square().ctx("ikl weight")?,
            })
        })?;
        (direction * x_g).f_sum(tch::Kind::Float).ctx("ikl loss").map(|s| s / n as f64)
    }
}

difi_core::register_plugin!(Divergence, "ikl", IklParams, |params, _ctx| Ok(Box::new(Ikl::new(params)?)));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::Gaussian;
    use difi_core::traits::broadcast_per_sample;
    use tch::{Device, Kind};

    /// libtorch's generator is global and tests run in parallel threads.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
        let _rng = RNG.lock().unwrap();
        let model = Gaussian { variance: 1.0, dim: 3 };
        let (grad, _) = gradient(Weighting::Sigma2, &model, &model, 1);
        assert_eq!(grad.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn gradient_is_the_weighted_score_difference() {
        let _rng = RNG.lock().unwrap();
        let (teacher, fake) = (Gaussian { variance: 1.0, dim: 3 }, Gaussian { variance: 2.0, dim: 3 });
        for weighting in [Weighting::Sigma2, Weighting::Unit] {
            let (grad, x_g) = gradient(weighting, &teacher, &fake, 5);
            // Replay the same draws: σ, then ε.
            tch::manual_seed(5);
            let sigma = difi_core::draws::log_normal_sigma(64, -1.2, 1.2, &x_g).unwrap();
            let sigma_b = broadcast_per_sample(&sigma, 2).unwrap();
            let x_t = &x_g + x_g.randn_like() * &sigma_b;
            let w = match weighting {
                Weighting::Sigma2 => sigma_b.to_kind(Kind::Double).square(),
                Weighting::Unit => sigma_b.ones_like(),
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
    fn a_non_positive_spread_is_refused() {
        let err = Ikl::new(IklParams { p_std: 0.0, ..Default::default() }).err().unwrap().to_string();
        assert!(err.contains("p_std"), "{err}");
    }
}
