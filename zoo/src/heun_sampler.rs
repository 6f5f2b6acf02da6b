//! EDM's Heun sampler (Karras et al. 2022, Algorithm 2; `generate.py`
//! `edm_sampler`), for any [`ScoreModel`], in float64 as the reference.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{Generator, ScoreModel};

/// Settings of the sampler, EDM's names and defaults. Deterministic unless
/// `s_churn > 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeunSampler {
    /// Number of noise levels (the last step is Euler): NFE = 2·steps − 1.
    pub num_steps: usize,
    /// Lowest and highest noise level (clamped to the model's range).
    pub sigma_min: f64,
    pub sigma_max: f64,
    /// Exponent of the noise-level spacing.
    pub rho: f64,
    /// Stochasticity: total churn, the σ range it applies to (`None`: no upper bound) and the noise scale.
    pub s_churn: f64,
    pub s_min: f64,
    pub s_max: Option<f64>,
    pub s_noise: f64,
}

impl Default for HeunSampler {
    fn default() -> Self {
        HeunSampler {
            num_steps: 18,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: None,
            s_noise: 1.0,
        }
    }
}

impl HeunSampler {
    /// Network evaluations per sample.
    pub fn nfe(&self) -> usize {
        (2 * self.num_steps).saturating_sub(1)
    }

    /// The noise levels `t_0 > … > t_{N−1}` followed by 0, for `model`.
    pub fn time_steps(&self, model: &dyn ScoreModel) -> Result<Vec<f64>> {
        if self.num_steps < 1 {
            return Err(Error::config("num_steps", "the sampler needs at least 1 step"));
        }
        let (model_min, model_max) = model.sigma_range();
        let sigma_min = self.sigma_min.max(model_min);
        let sigma_max = self.sigma_max.min(model_max);
        // One step: a single Euler step from σ_max to 0, i.e. D(σ_max z; σ_max)
        // (EDM's formula divides by num_steps − 1).
        if self.num_steps == 1 {
            return Ok(vec![model.round_sigma(sigma_max), 0.0]);
        }
        let inv_rho = 1.0 / self.rho;
        let mut steps: Vec<f64> = (0..self.num_steps)
            .map(|i| {
                let fraction = i as f64 / (self.num_steps - 1) as f64;
                let t = (sigma_max.powf(inv_rho) + fraction * (sigma_min.powf(inv_rho) - sigma_max.powf(inv_rho)))
                    .powf(self.rho);
                model.round_sigma(t)
            })
            .collect();
        steps.push(0.0);
        Ok(steps)
    }

    /// Samples from `latents` `[N, *shape]` ~ N(0, I) with optional one-hot
    /// `labels`; returns float64 `[N, *shape]`. Churn noise comes from
    /// libtorch's global generator.
    pub fn sample(&self, model: &dyn ScoreModel, latents: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let steps = self.time_steps(model)?;
        let n = latents.size()[0];
        let denoise = |x: &Tensor, sigma: f64| -> Result<Tensor> {
            let sigma = Tensor::f_full([n], sigma, (Kind::Double, x.device())).ctx("sampler")?;
            model.denoise(x, &sigma, labels)?.f_to_kind(Kind::Double).ctx("sampler")
        };
        let _guard = tch::no_grad_guard();
        let mut x_next = latents.f_to_kind(Kind::Double).ctx("sampler")? * steps[0];
        for i in 0..self.num_steps {
            let (t_cur, t_next) = (steps[i], steps[i + 1]);
            let x_cur = x_next;
            let in_range = self.s_min <= t_cur && t_cur <= self.s_max.unwrap_or(f64::INFINITY);
            let gamma = if in_range { (self.s_churn / self.num_steps as f64).min(2f64.sqrt() - 1.0) } else { 0.0 };
            let t_hat = model.round_sigma(t_cur + gamma * t_cur);
            let x_hat = if t_hat > t_cur {
                let noise = x_cur.f_randn_like().ctx("sampler")?;
                &x_cur + noise * ((t_hat * t_hat - t_cur * t_cur).sqrt() * self.s_noise)
            } else {
                x_cur
            };
            let d_cur = (&x_hat - denoise(&x_hat, t_hat)?) / t_hat;
            x_next = &x_hat + &d_cur * (t_next - t_hat);
            if i < self.num_steps - 1 {
                let d_prime = (&x_next - denoise(&x_next, t_next)?) / t_next;
                x_next = &x_hat + (d_cur * 0.5 + d_prime * 0.5) * (t_next - t_hat);
            }
        }
        Ok(x_next)
    }
}

/// A score model sampled with [`HeunSampler`], used where a generator is
/// expected (metrics and sample grids of a teacher): `generate(z)` runs the
/// sampler from latents `z ~ N(0, I)` and returns float32.
pub struct SampledGenerator {
    model: Box<dyn ScoreModel>,
    sampler: HeunSampler,
}

impl SampledGenerator {
    /// Samples `model`, which must have weights, with `sampler`.
    pub fn new(model: Box<dyn ScoreModel>, sampler: HeunSampler) -> Result<Self> {
        if model.var_store().is_none() {
            return Err(Error::config("sampler", "the sampled model has no weights"));
        }
        sampler.time_steps(model.as_ref())?;
        Ok(SampledGenerator { model, sampler })
    }

    /// The sampled model.
    pub fn model(&self) -> &dyn ScoreModel {
        self.model.as_ref()
    }

    /// The sampler's settings.
    pub fn sampler(&self) -> &HeunSampler {
        &self.sampler
    }
}

impl Generator for SampledGenerator {
    fn latent_shape(&self) -> Vec<i64> {
        self.model.sample_shape()
    }

    fn sample_shape(&self) -> Vec<i64> {
        self.model.sample_shape()
    }

    fn label_dim(&self) -> i64 {
        self.model.label_dim()
    }

    fn generate(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.sampler.sample(self.model.as_ref(), z, labels)?.f_to_kind(Kind::Float).ctx("sampler output")
    }

    fn var_store(&self) -> &tch::nn::VarStore {
        self.model.var_store().expect("checked in new")
    }

    fn var_store_mut(&mut self) -> &mut tch::nn::VarStore {
        self.model.var_store_mut().expect("checked in new")
    }

    fn set_train(&mut self, train: bool) {
        self.model.set_train(train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use difi_core::traits::broadcast_per_sample;

    /// The exact denoiser of N(0, s²) data.
    struct Gaussian(f64);

    impl ScoreModel for Gaussian {
        fn denoise(&self, x: &Tensor, sigma: &Tensor, _labels: Option<&Tensor>) -> Result<Tensor> {
            let sigma = broadcast_per_sample(&sigma.to_kind(x.kind()), x.dim())?;
            Ok(x * (self.0 * self.0) / (sigma.square() + self.0 * self.0))
        }
        fn sigma_data(&self) -> f64 {
            self.0
        }
        fn sample_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn var_store(&self) -> Option<&tch::nn::VarStore> {
            None
        }
        fn var_store_mut(&mut self) -> Option<&mut tch::nn::VarStore> {
            None
        }
    }

    #[test]
    fn one_step_is_the_denoiser_at_the_highest_noise_level() {
        let sampler = HeunSampler { num_steps: 1, ..Default::default() };
        assert_eq!(sampler.nfe(), 1);
        let z = Tensor::from_slice(&[1.0f64, -2.0]).reshape([2, 1]);
        let out = sampler.sample(&Gaussian(0.5), &z, None).unwrap();
        let expected = &z * 80.0 * 0.25 / (80.0 * 80.0 + 0.25);
        assert!((out - expected).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn eighteen_steps_follow_edms_algorithm_written_out() {
        // EDM's Algorithm 2 (S_churn = 0) on scalars, for the exact Gaussian
        // denoiser: an independent transcription to compare the tensor code with.
        let (s, n, rho, lo, hi) = (0.5f64, 18usize, 7.0f64, 0.002f64, 80.0f64);
        let mut t: Vec<f64> = (0..n)
            .map(|i| {
                (hi.powf(1.0 / rho) + i as f64 / (n - 1) as f64 * (lo.powf(1.0 / rho) - hi.powf(1.0 / rho))).powf(rho)
            })
            .collect();
        t.push(0.0);
        let denoise = |x: f64, sigma: f64| x * s * s / (sigma * sigma + s * s);
        let mut x = hi * 1.5;
        for k in 0..n {
            let d = (x - denoise(x, t[k])) / t[k];
            let mut next = x + d * (t[k + 1] - t[k]);
            if k < n - 1 {
                let d2 = (next - denoise(next, t[k + 1])) / t[k + 1];
                next = x + (0.5 * d + 0.5 * d2) * (t[k + 1] - t[k]);
            }
            x = next;
        }
        let z = Tensor::from_slice(&[1.5f64]).reshape([1, 1]);
        let out = HeunSampler::default().sample(&Gaussian(0.5), &z, None).unwrap().double_value(&[0, 0]);
        assert!((out - x).abs() < 1e-12, "{out} vs {x}");
    }
}
