//! EDM's denoising score-matching loss (Karras et al. 2022, `training/loss.py`
//! `EDMLoss`): trains Diff-Instruct's fake score on the generator's detached
//! samples, and a teacher on dataset images.

use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `EDMLoss`'s noise levels: ln σ ~ N(p_mean, p_std²).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmLoss {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
}

impl Default for EdmLoss {
    fn default() -> Self {
        EdmLoss { p_mean: -1.2, p_std: 1.2 }
    }
}

impl EdmLoss {
    /// Checks the parameters; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.p_std > 0.0 && self.p_std.is_finite()) {
            return Err(Error::config("p_std", format!("must be a positive number, got {}", self.p_std)));
        }
        if !self.p_mean.is_finite() {
            return Err(Error::config("p_mean", "must be finite"));
        }
        Ok(())
    }

    /// `λ(σ) ‖D(y + σε; σ) − y‖²` with `λ(σ) = (σ² + σ_d²) / (σ σ_d)²`,
    /// summed over each sample's elements and averaged over the batch. Draws
    /// σ, then ε. `y` `[N, *sample_shape]`: clean samples (no graph);
    /// returns a scalar.
    pub fn loss(&self, model: &dyn ScoreModel, y: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let n = y.size()[0];
        let sigma = log_normal_sigma(n, self.p_mean, self.p_std, y)?;
        let sigma_data = model.sigma_data();
        let weight = (sigma.f_square().ctx("loss weight")? + sigma_data * sigma_data)
            / (&sigma * sigma_data).f_square().ctx("loss weight")?;
        let noisy = y + y.f_randn_like().ctx("noise")? * broadcast_per_sample(&sigma, y.dim())?;
        let denoised = model.denoise(&noisy, &sigma, labels)?;
        let per_sample = (denoised - y)
            .f_square()
            .ctx("denoising loss")?
            .f_flatten(1, -1)
            .ctx("denoising loss")?
            .f_sum_dim_intlist(1, false, Kind::Float)
            .ctx("denoising loss")?;
        (per_sample * weight).f_mean(Kind::Float).ctx("denoising loss")
    }
}
