//! EDM's denoising score-matching loss, which trains the fake score on the
//! generator's (detached) samples.

use tch::{Kind, Tensor};

use crate::config::FakeLoss;
use crate::error::{Result, TorchContext};
use crate::traits::{ScoreModel, broadcast_per_sample};

/// Draws σ `[n]` with ln σ ~ N(p_mean, p_std²) from libtorch's global generator.
pub fn sample_log_normal_sigma(n: i64, p_mean: f64, p_std: f64, like: &Tensor) -> Result<Tensor> {
    let normal = Tensor::f_randn([n], (Kind::Float, like.device())).ctx("sample sigma")?;
    (normal * p_std + p_mean).f_exp().ctx("sample sigma")
}

/// EDM loss `λ(σ) ‖D(y + σε; σ) − y‖²` with `λ(σ) = (σ² + σ_d²) / (σ σ_d)²`,
/// summed over each sample's elements and averaged over the batch.
/// `y`: `[N, *sample_shape]` clean samples (no graph); returns a scalar.
pub fn edm_denoising_loss(
    model: &dyn ScoreModel,
    y: &Tensor,
    labels: Option<&Tensor>,
    noise: &FakeLoss,
) -> Result<Tensor> {
    let n = y.size()[0];
    let sigma = sample_log_normal_sigma(n, noise.p_mean, noise.p_std, y)?;
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
