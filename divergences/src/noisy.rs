//! The evaluation every divergence starts from: draw noise levels σ, form
//! `x_t = x + σ ε`, and ask the teacher and the fake score for their
//! denoised estimates `D_r(x_t; σ)` and `D_f(x_t; σ)`.

use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Noise levels with ln σ ~ N(p_mean, p_std²), EDM's training distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogNormal {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
}

impl LogNormal {
    /// Checks the parameters; `p_std` must be positive.
    pub fn new(p_mean: f64, p_std: f64) -> Result<Self> {
        if !(p_std > 0.0 && p_std.is_finite() && p_mean.is_finite()) {
            return Err(Error::config("p_std", format!("must be positive (p_mean {p_mean}, p_std {p_std})")));
        }
        Ok(LogNormal { p_mean, p_std })
    }

    /// σ `[n]` on the device of `like`.
    pub fn sample(&self, n: i64, like: &Tensor) -> Result<Tensor> {
        log_normal_sigma(n, self.p_mean, self.p_std, like)
    }
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

/// Draws σ (first) and ε (second) from libtorch's generator, forms
/// `x_t = x + σ ε` and evaluates both denoisers. `x` `[N, *shape]` may carry
/// the generator's graph: gradients then flow through `x_t` into both
/// estimates (SiD); detach it or call under `no_grad` when they must not (IKL).
///
/// Both denoisers see the same random stream (libtorch's generator is
/// reseeded identically before each), so networks run in train mode get the
/// same dropout masks, as Diff-Instruct's reference arranges by restoring
/// the RNG state between its two calls.
pub fn evaluate_noisy(
    x: &Tensor,
    labels: Option<&Tensor>,
    teacher: &dyn ScoreModel,
    fake: &dyn ScoreModel,
    noise: &LogNormal,
) -> Result<NoisyEvaluation> {
    let n = x.size().first().copied().unwrap_or(0);
    let sigma = noise.sample(n, x)?;
    let sigma_b = broadcast_per_sample(&sigma, x.dim())?;
    let x_t = x + x.f_randn_like().ctx("noise")? * &sigma_b;
    let stream = Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).ctx("dropout stream")?.int64_value(&[0]);
    tch::manual_seed(stream);
    let d_real = teacher.denoise(&x_t, &sigma, labels)?;
    tch::manual_seed(stream);
    let d_fake = fake.denoise(&x_t, &sigma, labels)?;
    Ok(NoisyEvaluation { sigma, sigma_b, x_t, d_real, d_fake })
}
