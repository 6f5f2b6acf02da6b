//! The denoising score-matching losses of EDM (Karras et al. 2022,
//! `training/loss.py`): `EDMLoss`, and the `VPLoss` and `VELoss` of Song et
//! al.'s formulations. They train Diff-Instruct's fake score on the
//! generator's detached samples, and a teacher on dataset images.

use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::shard::{self, batch_draw};
use difi_core::traits::{Divergence, ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::augment::AugmentPipe;

/// Which of EDM's losses: how σ is drawn and how each σ is weighted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// `EDMLoss`: ln σ ~ N(p_mean, p_std²), λ(σ) = (σ² + σ_d²)/(σ σ_d)².
    #[default]
    Edm,
    /// `VPLoss`: σ = σ_VP(t), t ~ U(ε_t, 1), λ(σ) = 1/σ².
    Vp,
    /// `VELoss`: σ = σ_min (σ_max/σ_min)^u, u ~ U(0, 1), λ(σ) = 1/σ².
    Ve,
    /// σ where the run's divergence trains its fake score
    /// ([`Divergence::fake_score_sigma`]), λ(σ) as `Edm` (the weighting of
    /// Diff-Instruct's, DMD2's and SiD's fake-score losses). Only for the
    /// fake score of a distillation.
    Divergence,
}

/// A denoising loss with EDM's parameter names and defaults; only the
/// parameters of its `kind` are used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenoisingLoss {
    /// `"edm"` (default), `"vp"`, `"ve"` or `"divergence"`.
    pub kind: LossKind,
    /// edm: mean of ln σ.
    pub p_mean: f64,
    /// edm: standard deviation of ln σ.
    pub p_std: f64,
    /// vp: β_d, β_min and ε_t of the VP schedule.
    pub beta_d: f64,
    pub beta_min: f64,
    pub epsilon_t: f64,
    /// ve: the range of σ.
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Default for DenoisingLoss {
    fn default() -> Self {
        DenoisingLoss {
            kind: LossKind::Edm,
            p_mean: -1.2,
            p_std: 1.2,
            beta_d: 19.9,
            beta_min: 0.1,
            epsilon_t: 1e-5,
            sigma_min: 0.02,
            sigma_max: 100.0,
        }
    }
}

impl DenoisingLoss {
    /// Checks the parameters of its kind; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let positive = Error::ensure_positive;
        match self.kind {
            LossKind::Edm => {
                positive("p_std", self.p_std)?;
                if !self.p_mean.is_finite() {
                    return Err(Error::config("p_mean", "must be finite"));
                }
            }
            LossKind::Vp => {
                positive("beta_d", self.beta_d)?;
                positive("beta_min", self.beta_min)?;
                positive("epsilon_t", self.epsilon_t)?;
                if self.epsilon_t >= 1.0 {
                    return Err(Error::config("epsilon_t", "must be below 1"));
                }
            }
            LossKind::Divergence => {}
            LossKind::Ve => {
                positive("sigma_min", self.sigma_min)?;
                positive("sigma_max", self.sigma_max)?;
                if self.sigma_max <= self.sigma_min {
                    return Err(Error::config("sigma_max", "must exceed sigma_min"));
                }
            }
        }
        Ok(())
    }

    /// Refuses `kind: "divergence"` where no divergence supplies σ (`divergence`
    /// `None`, e.g. teacher training) or where it names no levels. Draws
    /// nothing.
    pub fn check_sigma_source(&self, divergence: Option<&dyn Divergence>) -> Result<()> {
        if self.kind != LossKind::Divergence {
            return Ok(());
        }
        // Asking for no levels at all tells whether it names any.
        let none = Tensor::f_zeros([0], (Kind::Float, tch::Device::Cpu)).ctx("fake_loss")?;
        match divergence {
            Some(divergence) if divergence.fake_score_sigma(0, &none, 1.0)?.is_some() => Ok(()),
            _ => Err(Error::config(
                "kind",
                "\"divergence\" takes σ from the run's divergence, and there is none here that names \
                 noise levels for the fake score; use \"edm\", \"vp\" or \"ve\"",
            )),
        }
    }

    /// σ `[n]` drawn as the kind says, and the weight λ(σ) `[n]`.
    fn noise_levels(
        &self,
        n: i64,
        like: &Tensor,
        sigma_data: f64,
        divergence: Option<&dyn Divergence>,
    ) -> Result<(Tensor, Tensor)> {
        let uniform = || batch_draw(n, 0, |n| Tensor::f_rand([n], (Kind::Float, like.device())).ctx("sample sigma"));
        let sigma = match self.kind {
            LossKind::Edm => log_normal_sigma(n, self.p_mean, self.p_std, like)?,
            LossKind::Vp => {
                let t = uniform()? * (self.epsilon_t - 1.0) + 1.0;
                ((t.f_square().ctx("vp sigma")? * (0.5 * self.beta_d) + &t * self.beta_min).f_exp().ctx("vp sigma")?
                    - 1.0)
                    .f_sqrt()
                    .ctx("vp sigma")?
            }
            LossKind::Ve => {
                let u = uniform()?;
                Tensor::f_pow_scalar(self.sigma_max / self.sigma_min, &u).ctx("ve sigma")? * self.sigma_min
            }
            LossKind::Divergence => divergence
                .map(|d| d.fake_score_sigma(n, like, sigma_data))
                .transpose()?
                .flatten()
                .ok_or_else(|| Error::config("kind", "\"divergence\" needs a divergence that names noise levels"))?,
        };
        let weight = match self.kind {
            LossKind::Edm | LossKind::Divergence => {
                (sigma.f_square().ctx("loss weight")? + sigma_data * sigma_data)
                    / (&sigma * sigma_data).f_square().ctx("loss weight")?
            }
            LossKind::Vp | LossKind::Ve => sigma.f_square().ctx("loss weight")?.f_reciprocal().ctx("loss weight")?,
        };
        Ok((sigma, weight))
    }

    /// `λ(σ) ‖D(y + σε; σ) − y‖²`, summed over each sample's elements and
    /// averaged over the batch. Draws σ, then ε. `y` `[N, *sample_shape]`: clean samples (no graph);
    /// returns a scalar.
    pub fn loss(&self, model: &dyn ScoreModel, y: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.augmented_loss(model, y, labels, None, None)
    }

    /// [`loss`](Self::loss) on `y` augmented by `augment` (when given), the
    /// augmentation labels passed to the model, as EDM's losses: draws σ,
    /// then the augmentation, then ε. `divergence` supplies σ under
    /// `kind: "divergence"`.
    pub fn augmented_loss(
        &self,
        model: &dyn ScoreModel,
        y: &Tensor,
        labels: Option<&Tensor>,
        augment: Option<&AugmentPipe>,
        divergence: Option<&dyn Divergence>,
    ) -> Result<Tensor> {
        let n = y.size()[0];
        let (sigma, weight) = self.noise_levels(n, y, model.sigma_data(), divergence)?;
        let (y, augment_labels) = match augment {
            Some(pipe) => {
                let (augmented, augment_labels) = pipe.apply(y)?;
                (augmented, Some(augment_labels))
            }
            None => (y.shallow_clone(), None),
        };
        let y = &y;
        let noisy = y + shard::randn_like(y)? * broadcast_per_sample(&sigma, y.dim())?;
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
    fn vp_and_ve_draw_their_noise_levels_and_weights() {
        let _rng = crate::lock_test_rng();
        tch::manual_seed(0);
        let like = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        // VP's largest level is σ(t = 1) = √(exp(β_d/2 + β_min) − 1) = 152.17.
        for (kind, lo, hi) in [(LossKind::Vp, 0.0, 152.2), (LossKind::Ve, 0.02, 100.0)] {
            let loss = DenoisingLoss { kind, ..Default::default() };
            loss.validate().unwrap();
            let (sigma, weight) = loss.noise_levels(1000, &like, 0.5, None).unwrap();
            let (min, max) = (sigma.min().double_value(&[]), sigma.max().double_value(&[]));
            assert!(min >= lo && max <= hi && max > 10.0 * min, "{kind:?}: {min}..{max}");
            let error = (weight * sigma.square() - 1.0).abs().max().double_value(&[]);
            assert!(error < 1e-5, "{kind:?}: λ(σ) = 1/σ²: {error}");
        }
        let err = DenoisingLoss { kind: LossKind::Ve, sigma_max: 0.01, ..Default::default() }.validate();
        assert!(err.unwrap_err().to_string().contains("sigma_max"));
    }

    #[test]
    fn the_divergence_kind_draws_where_the_divergence_trains_its_fake_score() {
        let _rng = crate::lock_test_rng();
        let like = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let dmd = difi_divergences::dmd::Dmd::new(Default::default()).unwrap();
        let loss = DenoisingLoss { kind: LossKind::Divergence, ..Default::default() };
        loss.validate().unwrap();
        loss.check_sigma_source(Some(&dmd)).unwrap();
        tch::manual_seed(5);
        let (sigma, weight) = loss.noise_levels(500, &like, 2.0, Some(&dmd)).unwrap();
        tch::manual_seed(5);
        let expected = dmd.fake_score_sigma(500, &like, 2.0).unwrap().unwrap();
        assert_eq!((&sigma - expected).abs().max().double_value(&[]), 0.0);
        // EDM's λ(σ) = (σ² + σ_d²)/(σ σ_d)², σ_d = 2.
        let lambda = (sigma.square() + 4.0) / (&sigma * 2.0).square();
        assert!(((weight - lambda).abs().max().double_value(&[])) < 1e-6);
    }

    /// A divergence that names no levels for its fake score (the trait's default).
    struct Silent;

    impl Divergence for Silent {
        fn generator_loss(
            &self,
            x_g: &Tensor,
            _labels: Option<&Tensor>,
            _teacher: &dyn ScoreModel,
            _fake: &dyn ScoreModel,
        ) -> Result<Tensor> {
            Ok(x_g.sum(Kind::Float))
        }
    }

    #[test]
    fn the_divergence_kind_is_refused_without_a_divergence_that_names_levels() {
        let loss = DenoisingLoss { kind: LossKind::Divergence, ..Default::default() };
        for divergence in [None, Some(&Silent as &dyn Divergence)] {
            let message = loss.check_sigma_source(divergence).unwrap_err().to_string();
            assert!(message.contains("kind") && message.contains("\"edm\""), "{message}");
        }
        let edm = DenoisingLoss::default();
        edm.check_sigma_source(None).unwrap();
    }

    #[test]
    fn matches_edms_loss_computed_by_hand() {
        let _rng = crate::lock_test_rng();
        let model = Gaussian { variance: 0.25, dim: 4 };
        let loss = DenoisingLoss::default();
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
