//! The evaluation every divergence starts from: draw noise levels σ, form
//! `x_t = x + σ ε`, and ask the teacher and the fake score for their
//! denoised estimates `D_r(x_t; σ)` and `D_f(x_t; σ)`.
//!
//! Noise levels are written as the papers write them, for EDM's σ_data = 0.5,
//! and scaled by the teacher's `σ_data / 0.5` by default, so a divergence's
//! defaults carry over to data of another scale (the 2-D mixture has
//! σ_data ≈ 2.8).

use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::shard::{self, batch_draw};
use difi_core::traits::{ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The σ_data that EDM's and the papers' noise-level parameters assume.
pub const EDM_SIGMA_DATA: f64 = 0.5;

/// EDM's training distribution, ln σ ~ N(−1.2, 1.2²): where SiD's code (and
/// so SIM, which builds on it) trains the fake score.
pub const EDM_TRAINING_LEVELS: NoiseLevels = NoiseLevels::LogNormal { p_mean: -1.2, p_std: 1.2 };

/// How σ is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoiseLevels {
    /// ln σ ~ N(p_mean, p_std²): EDM's training distribution (IKL, DMD, SIM).
    LogNormal { p_mean: f64, p_std: f64 },
    /// SiD's: t ~ U(0, t_max) and σ on EDM's sampling schedule
    /// `(σ_max^{1/ρ} + (1 − t)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`, so t = 0 is
    /// σ_min and t_max = 0.8 reaches σ ≈ 24.4 with EDM's σ_max = 80.
    Schedule { sigma_min: f64, sigma_max: f64, rho: f64, t_max: f64 },
    /// DMD2's: a grid of `steps` noise levels on the same schedule, from
    /// σ_min (index 0) to σ_max (index steps − 1), and an index drawn
    /// uniformly from `[first, last]`.
    Grid { sigma_min: f64, sigma_max: f64, rho: f64, steps: i64, first: i64, last: i64 },
}

impl NoiseLevels {
    /// Checks the parameters; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let positive = Error::ensure_positive;
        match *self {
            NoiseLevels::LogNormal { p_mean, p_std } => {
                positive("p_std", p_std)?;
                if !p_mean.is_finite() {
                    return Err(Error::config("p_mean", "must be finite"));
                }
            }
            NoiseLevels::Schedule { sigma_min, sigma_max, rho, t_max } => {
                positive("sigma_min", sigma_min)?;
                positive("sigma_max", sigma_max)?;
                positive("rho", rho)?;
                if sigma_max <= sigma_min {
                    return Err(Error::config("sigma_max", "must exceed sigma_min"));
                }
                if !(t_max > 0.0 && t_max <= 1.0) {
                    return Err(Error::config("t_max", format!("must lie in (0, 1], got {t_max}")));
                }
            }
            NoiseLevels::Grid { sigma_min, sigma_max, rho, steps, first, last } => {
                positive("sigma_min", sigma_min)?;
                positive("sigma_max", sigma_max)?;
                positive("rho", rho)?;
                if sigma_max <= sigma_min || steps < 2 {
                    return Err(Error::config("sigma_max", "the grid needs σ_max > σ_min and at least 2 steps"));
                }
                if !(0 <= first && first <= last && last < steps) {
                    return Err(Error::config("min_step", format!("steps {first}..={last} do not lie in 0..{steps}")));
                }
            }
        }
        Ok(())
    }

    /// σ `[n]` (float32, on the device of `like`) for data of `sigma_data`
    /// when `relative`, else as written.
    pub fn sample(&self, n: i64, like: &Tensor, sigma_data: f64, relative: bool) -> Result<Tensor> {
        let options = (Kind::Float, like.device());
        let sigma = match *self {
            NoiseLevels::LogNormal { p_mean, p_std } => log_normal_sigma(n, p_mean, p_std, like)?,
            NoiseLevels::Schedule { sigma_min, sigma_max, rho, t_max } => {
                let t = batch_draw(n, 0, |n| Tensor::f_rand([n], options).ctx("sample sigma"))? * t_max;
                let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
                ((t.f_neg().ctx("sample sigma")? + 1.0) * (lo - hi) + hi)
                    .f_pow_tensor_scalar(rho)
                    .ctx("sample sigma")?
            }
            NoiseLevels::Grid { sigma_min, sigma_max, rho, steps, first, last } => {
                let k = batch_draw(n, 0, |n| {
                    Tensor::f_randint_low(first, last + 1, [n], (Kind::Int64, like.device())).ctx("sample sigma")
                })?;
                let fraction = k.f_to_kind(Kind::Float).ctx("sample sigma")? / (steps - 1) as f64;
                let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
                (fraction * (hi - lo) + lo).f_pow_tensor_scalar(rho).ctx("sample sigma")?
            }
        };
        Ok(if relative { sigma * (sigma_data / EDM_SIGMA_DATA) } else { sigma })
    }
}

/// Whether a divergence's noise levels follow the teacher's scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigmaScale {
    /// σ as written for σ_data = 0.5, times the teacher's σ_data / 0.5.
    #[default]
    Teacher,
    /// σ exactly as written.
    Absolute,
}

/// Both denoisers at one noisy version of a batch.
pub struct NoisyEvaluation {
    /// Noise levels `[N]`.
    pub sigma: Tensor,
    /// The same, shaped `[N, 1, …, 1]` to broadcast against the batch.
    pub sigma_b: Tensor,
    /// The noisy samples `[N, *shape]`.
    pub x_t: Tensor,
    /// The teacher's estimate `D_r(x_t; σ)` `[N, *shape]`.
    pub d_real: Tensor,
    /// The fake score's estimate `D_f(x_t; σ)` `[N, *shape]`.
    pub d_fake: Tensor,
}

/// Draws σ (first, as `noise` and `scale` say) and ε (second) from
/// libtorch's generator, forms `x_t = x + σ ε` and evaluates both
/// denoisers. `x` `[N, *shape]` may carry the generator's graph: gradients
/// then flow through `x_t` into both estimates (SiD); detach it or call
/// under `no_grad` when they must not (IKL).
///
/// Both denoisers see the same random stream (libtorch's generator is
/// reseeded identically before each), so networks run in train mode get the
/// same dropout masks, as Diff-Instruct's reference arranges by restoring
/// the RNG state between its two calls. Denoisers that draw nothing
/// ([`ScoreModel::draws_random_numbers`]) are not reseeded for: no
/// divergence draws after this, so that changes no result, and it keeps
/// the evaluation free of host-chosen seeds, which a CUDA graph of the
/// iteration could not replay. The reseed does change what is drawn after
/// it, so a caller drawing after this within one iteration would get
/// results that depend on the denoisers' dropout: keep evaluations last
/// (the generator update ends every step's iteration).
pub fn evaluate_noisy(
    x: &Tensor,
    labels: Option<&Tensor>,
    teacher: &dyn ScoreModel,
    fake: &dyn ScoreModel,
    noise: &NoiseLevels,
    scale: SigmaScale,
) -> Result<NoisyEvaluation> {
    let n = x.size().first().copied().unwrap_or(0);
    let sigma = noise.sample(n, x, teacher.sigma_data(), scale == SigmaScale::Teacher)?;
    let sigma_b = broadcast_per_sample(&sigma, x.dim())?;
    let x_t = x + shard::randn_like(x)? * &sigma_b;
    // Drawn either way, so the CPU generator's stream does not depend on the models.
    let stream = Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).ctx("dropout stream")?.int64_value(&[0]);
    if !(teacher.draws_random_numbers() || fake.draws_random_numbers()) {
        let d_real = teacher.denoise(&x_t, &sigma, labels)?;
        let d_fake = fake.denoise(&x_t, &sigma, labels)?;
        return Ok(NoisyEvaluation { sigma, sigma_b, x_t, d_real, d_fake });
    }
    // Dropout masks differ by rank (they cannot be sliced from a global draw).
    let dropout_seed = shard::per_rank_seed(stream);
    tch::manual_seed(dropout_seed);
    let d_real = teacher.denoise(&x_t, &sigma, labels)?;
    tch::manual_seed(dropout_seed);
    let d_fake = fake.denoise(&x_t, &sigma, labels)?;
    shard::rejoin_shared_stream(stream);
    Ok(NoisyEvaluation { sigma, sigma_b, x_t, d_real, d_fake })
}

/// Per-sample mean of `|values|` over all but the first dimension, shaped
/// `[N, 1, …, 1]`, detached and at least `floor`: the normaliser of SiD and DMD.
pub fn per_sample_mean_abs(values: &Tensor, floor: f64) -> Result<Tensor> {
    let dims: Vec<i64> = (1..values.dim() as i64).collect();
    values
        .detach()
        .f_abs()
        .ctx("normaliser")?
        .f_mean_dim(dims.as_slice(), true, values.kind())
        .ctx("normaliser")?
        .f_clamp_min(floor)
        .ctx("normaliser")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::Gaussian;
    use difi_core::traits::Divergence;

    /// A [`Gaussian`] that says it draws random numbers (it does not), so
    /// evaluations take the reseeding path.
    struct SaysItDraws(Gaussian);

    impl ScoreModel for SaysItDraws {
        fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
            self.0.denoise(x, sigma, labels)
        }
        fn sigma_data(&self) -> f64 {
            self.0.sigma_data()
        }
        fn sample_shape(&self) -> Vec<i64> {
            self.0.sample_shape()
        }
        fn var_store(&self) -> Option<&tch::nn::VarStore> {
            None
        }
        fn var_store_mut(&mut self) -> Option<&mut tch::nn::VarStore> {
            None
        }
    }

    #[test]
    fn skipping_the_reseed_for_models_that_draw_nothing_changes_no_divergence() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (teacher, fake) = (Gaussian { variance: 1.0, dim: 3 }, Gaussian { variance: 2.0, dim: 3 });
        let divergences: Vec<(&str, Box<dyn Divergence>)> = vec![
            ("ikl", Box::new(crate::ikl::Ikl::new(Default::default()).unwrap())),
            ("sid", Box::new(crate::sid::Sid::new(Default::default()).unwrap())),
            ("dmd", Box::new(crate::dmd::Dmd::new(Default::default()).unwrap())),
            ("sim", Box::new(crate::sim::Sim::new(Default::default()).unwrap())),
        ];
        let run = |divergence: &dyn Divergence, teacher: &dyn ScoreModel, fake: &dyn ScoreModel| {
            let x =
                (Tensor::arange(48, (Kind::Double, Device::Cpu)).reshape([16, 3]) / 12.0 - 2.0).set_requires_grad(true);
            tch::manual_seed(3);
            let loss = divergence.generator_loss(&x, None, teacher, fake).unwrap();
            loss.backward();
            // What the iteration would draw next, after the loss.
            let next = Tensor::randn([4], (Kind::Double, Device::Cpu));
            (loss.detach(), x.grad(), next)
        };
        for (name, divergence) in &divergences {
            let plain = run(divergence.as_ref(), &teacher, &fake);
            assert!(!teacher.draws_random_numbers());
            let reseeding = run(divergence.as_ref(), &SaysItDraws(teacher), &SaysItDraws(fake));
            assert!(plain.0.equal(&reseeding.0), "{name}: the loss changed");
            assert!(plain.1.equal(&reseeding.1), "{name}: the gradient changed");
            // The stream after the loss differs, so nothing may draw from it
            // within an iteration: this documents it.
            assert!(!plain.2.equal(&reseeding.2), "{name}: the reseed no longer shows");
        }
    }

    #[test]
    fn the_grid_spans_dmd2s_range() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let noise =
            NoiseLevels::Grid { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0, steps: 1000, first: 20, last: 980 };
        noise.validate().unwrap();
        let like = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let sigma = noise.sample(50000, &like, 0.5, true).unwrap();
        let (lo, hi) = (sigma.min().double_value(&[]), sigma.max().double_value(&[]));
        // Index 20 and 980 of DMD2's 1000-step grid.
        assert!((lo - 0.003232).abs() < 1e-5 && (hi - 72.05).abs() < 0.01, "{lo}..{hi}");
    }

    #[test]
    fn the_schedule_spans_sids_range_and_scales_with_the_data() {
        let _rng = crate::TEST_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let noise = NoiseLevels::Schedule { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0, t_max: 0.8 };
        noise.validate().unwrap();
        let like = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let sigma = noise.sample(20000, &like, 0.5, true).unwrap();
        let (lo, hi) = (sigma.min().double_value(&[]), sigma.max().double_value(&[]));
        assert!((0.002..0.01).contains(&lo) && (20.0..24.42).contains(&hi), "{lo}..{hi}");
        let scaled = noise.sample(20000, &like, 2.0, true).unwrap().max().double_value(&[]);
        assert!((80.0..97.7).contains(&scaled), "{scaled}");
        let err = NoiseLevels::Schedule { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0, t_max: 1.5 }.validate();
        assert!(err.unwrap_err().to_string().contains("t_max"));
    }
}
