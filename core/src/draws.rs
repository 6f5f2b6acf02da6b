//! Random draws that every role makes the same way: class labels and noise
//! levels. They come from libtorch's global generator, which the runner
//! reseeds per iteration (see [`crate::rng`]), drawn for the global batch
//! when data-parallel (see [`crate::shard`]).

use tch::{Device, Kind, Tensor};

use crate::error::{Result, TorchContext};
use crate::shard::batch_draw;

/// Uniformly random one-hot labels `[n, label_dim]`, or `None` when
/// unconditional (`label_dim == 0`).
pub fn random_labels(n: i64, label_dim: i64, device: Device) -> Result<Option<Tensor>> {
    if label_dim == 0 {
        return Ok(None);
    }
    let classes = batch_draw(n, 0, |n| Tensor::f_randint(label_dim, [n], (Kind::Int64, device)).ctx("sample labels"))?;
    Ok(Some(classes.f_one_hot(label_dim).ctx("one-hot labels")?.f_to_kind(Kind::Float).ctx("labels")?))
}

/// Noise levels σ `[n]` with ln σ ~ N(p_mean, p_std²) (EDM's training
/// distribution), float32 on the device of `like`.
pub fn log_normal_sigma(n: i64, p_mean: f64, p_std: f64, like: &Tensor) -> Result<Tensor> {
    let normal = batch_draw(n, 0, |n| Tensor::f_randn([n], (Kind::Float, like.device())).ctx("sample sigma"))?;
    (normal * p_std + p_mean).f_exp().ctx("sample sigma")
}
