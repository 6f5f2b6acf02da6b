//! The Integral KL divergence of Diff-Instruct (Luo et al., NeurIPS 2023).
//!
//! Its generator gradient is `E[w(σ) (s_f(x_t) − s_r(x_t))ᵀ ∂x_g/∂θ]` with
//! `x_t = x_g + σε`. Since `s_f − s_r = (D_f − D_r)/σ²`, the surrogate loss
//! `Σ sg(w(σ)/σ² · (D_f − D_r)) · x_g / N` has exactly that gradient.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::denoising_loss::sample_log_normal_sigma;
use crate::error::{Error, Result, TorchContext};
use crate::traits::{Divergence, ScoreModel, broadcast_per_sample};

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
    params: IklParams,
}

impl Ikl {
    /// IKL with the given noise distribution and weighting.
    pub fn new(params: IklParams) -> Result<Self> {
        if params.p_std.is_nan() || params.p_std <= 0.0 {
            return Err(Error::config("p_std", "must be positive"));
        }
        Ok(Ikl { params })
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
            let sigma = sample_log_normal_sigma(n, self.params.p_mean, self.params.p_std, x_g)?;
            let sigma_b = broadcast_per_sample(&sigma, x_g.dim())?;
            let x_t = x_g.detach() + x_g.f_randn_like().ctx("ikl noise")? * &sigma_b;
            let d_real = teacher.denoise(&x_t, &sigma, labels)?;
            let d_fake = fake.denoise(&x_t, &sigma, labels)?;
            let difference = d_fake - d_real;
            Ok(match self.params.weighting {
                Weighting::Sigma2 => difference,
                Weighting::Unit => difference / sigma_b.f_square().ctx("ikl weight")?,
            })
        })?;
        (direction * x_g).f_sum(tch::Kind::Float).ctx("ikl loss").map(|s| s / n as f64)
    }
}

crate::register_plugin!(Divergence, "ikl", IklParams, |params, _ctx| Ok(Box::new(Ikl::new(params)?)));

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The exact denoiser of N(0, s²) data: D(x; σ) = s² x / (s² + σ²).
    struct Gaussian {
        variance: f64,
    }

    impl ScoreModel for Gaussian {
        fn denoise(&self, x: &Tensor, sigma: &Tensor, _labels: Option<&Tensor>) -> Result<Tensor> {
            let sigma = broadcast_per_sample(sigma, x.dim())?;
            Ok(x * self.variance / (sigma.square() + self.variance))
        }
        fn sigma_data(&self) -> f64 {
            self.variance.sqrt()
        }
        fn sample_shape(&self) -> Vec<i64> {
            vec![3]
        }
        fn var_store(&self) -> Option<&tch::nn::VarStore> {
            None
        }
        fn var_store_mut(&mut self) -> Option<&mut tch::nn::VarStore> {
            None
        }
    }

    /// libtorch's generator is global and tests run in parallel threads.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn gradient(weighting: Weighting, teacher: &Gaussian, fake: &Gaussian, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(0);
        let x_g = Tensor::randn([64, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let ikl = Ikl::new(IklParams { weighting, ..Default::default() }).unwrap();
        tch::manual_seed(seed);
        let loss = ikl.generator_loss(&x_g, None, teacher, fake).unwrap();
        loss.backward();
        (x_g.grad(), x_g.detach())
    }

    #[test]
    fn gradient_vanishes_when_the_fake_score_equals_the_teacher() {
        let _rng = RNG.lock().unwrap();
        let model = Gaussian { variance: 1.0 };
        let (grad, _) = gradient(Weighting::Sigma2, &model, &model, 1);
        assert_eq!(grad.abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn gradient_is_the_weighted_score_difference() {
        let _rng = RNG.lock().unwrap();
        let (teacher, fake) = (Gaussian { variance: 1.0 }, Gaussian { variance: 2.0 });
        for weighting in [Weighting::Sigma2, Weighting::Unit] {
            let (grad, x_g) = gradient(weighting, &teacher, &fake, 5);
            // Replay the same draws: σ, then ε.
            tch::manual_seed(5);
            let sigma = sample_log_normal_sigma(64, -1.2, 1.2, &x_g).unwrap();
            let sigma_b = broadcast_per_sample(&sigma, 2).unwrap();
            let x_t = &x_g + x_g.randn_like() * &sigma_b;
            let score = |m: &Gaussian| m.score(&x_t, &sigma, None).unwrap();
            let w = match weighting {
                Weighting::Sigma2 => sigma_b.square(),
                Weighting::Unit => sigma_b.ones_like(),
            };
            let expected = w * (score(&fake) - score(&teacher)) / 64.0;
            let error = (grad - &expected).abs().max().double_value(&[]);
            assert!(error < 1e-6, "{weighting:?}: {error}");
            assert!(expected.abs().max().double_value(&[]) > 1e-3);
        }
    }
}
