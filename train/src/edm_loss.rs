//! EDM's denoising score-matching loss (Karras et al. 2022, `training/loss.py`
//! `EDMLoss`): trains Diff-Instruct's fake score on the generator's detached
//! samples, and a teacher on dataset images.

use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::augment::AugmentPipe;

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
        self.augmented_loss(model, y, labels, None)
    }

    /// [`loss`](Self::loss) on `y` augmented by `augment` (when given), the
    /// augmentation labels passed to the model, as EDM's `EDMLoss`: draws σ,
    /// then the augmentation, then ε.
    pub fn augmented_loss(
        &self,
        model: &dyn ScoreModel,
        y: &Tensor,
        labels: Option<&Tensor>,
        augment: Option<&AugmentPipe>,
    ) -> Result<Tensor> {
        let n = y.size()[0];
        let sigma = log_normal_sigma(n, self.p_mean, self.p_std, y)?;
        let sigma_data = model.sigma_data();
        let weight = (sigma.f_square().ctx("loss weight")? + sigma_data * sigma_data)
            / (&sigma * sigma_data).f_square().ctx("loss weight")?;
        let (y, augment_labels) = match augment {
            Some(pipe) => {
                let (augmented, augment_labels) = pipe.apply(y)?;
                (augmented, Some(augment_labels))
            }
            None => (y.shallow_clone(), None),
        };
        let y = &y;
        let noisy = y + y.f_randn_like().ctx("noise")? * broadcast_per_sample(&sigma, y.dim())?;
        let denoised = match &augment_labels {
            Some(augment_labels) => model.denoise_augmented(&noisy, &sigma, labels, augment_labels)?,
            None => model.denoise(&noisy, &sigma, labels)?,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use difi_divergences::gaussian::Gaussian;
    use tch::Device;

    /// EDM's loss written out independently for the exact Gaussian denoiser,
    /// on the same draws: σ = exp(p_mean + p_std·n₁), x = y + σ·n₂.
    #[test]
    fn matches_edms_loss_computed_by_hand() {
        let model = Gaussian { variance: 0.25, dim: 4 };
        let loss = EdmLoss { p_mean: -1.2, p_std: 1.2 };
        let y = Tensor::from_slice(&[0.5f64, -0.25, 0.75, 0.0, -0.5, 0.1, 0.2, 0.3]).reshape([2, 4]);
        tch::manual_seed(11);
        let value = loss.loss(&model, &y, None).unwrap().double_value(&[]);

        tch::manual_seed(11);
        let n1 = Vec::<f32>::try_from(Tensor::randn([2], (Kind::Float, Device::Cpu))).unwrap();
        let n2 = Vec::<f64>::try_from(y.randn_like().reshape([-1])).unwrap();
        let y: Vec<f64> = Vec::try_from(y.reshape([-1])).unwrap();
        let (s2, sd) = (0.25f64, 0.5f64);
        let mut expected = 0.0;
        for i in 0..2 {
            let sigma = (n1[i] * 1.2f32 + -1.2f32).exp() as f64;
            let weight = (sigma * sigma + sd * sd) / (sigma * sd).powi(2);
            let mut squared = 0.0;
            for j in 0..4 {
                let x = y[i * 4 + j] + sigma * n2[i * 4 + j];
                let denoised = x * s2 / (sigma * sigma + s2);
                squared += (denoised - y[i * 4 + j]).powi(2);
            }
            expected += weight * squared / 2.0;
        }
        assert!(((value - expected) / expected).abs() < 1e-6, "{value} vs {expected}");
    }
}
