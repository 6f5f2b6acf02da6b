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
