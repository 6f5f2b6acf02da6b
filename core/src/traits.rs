//! The four roles of a run. Configs build them as trait objects through the
//! registry; the training steps use them as `&dyn …`.
//!
//! Shapes: a batch of N samples is `[N, *sample_shape]` (`[N, D]` for vectors,
//! `[N, C, H, W]` for images); noise levels σ are `[N]`; class labels are
//! one-hot `[N, label_dim]` or absent.

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TorchContext};

/// A denoiser `D(x; σ) ≈ E[x₀ | x₀ + σε = x]` (EDM convention). Its score is
/// `(D(x; σ) − x) / σ²`.
pub trait ScoreModel {
    /// Denoises `x` `[N, *sample_shape]` at noise levels `sigma` `[N]`, with
    /// one-hot `labels` `[N, label_dim]` when the model is conditional.
    /// Returns `[N, *sample_shape]` in the dtype of `x`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor>;

    /// `D(x; σ)` conditioned on augmentation labels `[N, augment_dim]` that
    /// describe how `x` was augmented (EDM's AugmentPipe), so the model can
    /// learn to undo them. Models with `augment_dim() == 0` take none.
    fn denoise_augmented(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        labels: Option<&Tensor>,
        augment_labels: &Tensor,
    ) -> Result<Tensor> {
        let _ = (x, sigma, labels, augment_labels);
        Err(crate::error::Error::config("augment", "this score model takes no augmentation labels (augment_dim 0)"))
    }

    /// Number of augmentation labels the model is conditioned on (EDM's
    /// `augment_dim`; 0: none).
    fn augment_dim(&self) -> i64 {
        0
    }

    /// The data standard deviation σ_data the model is preconditioned for.
    fn sigma_data(&self) -> f64;

    /// The noise levels the model supports, `(σ_min, σ_max)`.
    fn sigma_range(&self) -> (f64, f64) {
        (0.0, f64::INFINITY)
    }

    /// The nearest noise level the model supports exactly (identity for
    /// continuous-time models; EDM's `round_sigma`).
    fn round_sigma(&self, sigma: f64) -> f64 {
        sigma
    }

    /// Shape of one sample: `[D]` or `[C, H, W]`.
    fn sample_shape(&self) -> Vec<i64>;

    /// Number of classes (0 when unconditional).
    fn label_dim(&self) -> i64 {
        0
    }

    /// Switches dropout and similar train-only behaviour on or off.
    fn set_train(&mut self, _train: bool) {}

    /// Whether [`denoise`](Self::denoise), as the model is set now, draws
    /// from libtorch's generator (dropout in train mode). Callers that give
    /// two models the same random stream (the divergences' shared dropout
    /// masks) reseed only when one of them draws; a CUDA graph cannot hold
    /// a reseed. The default, yes, is always safe.
    fn draws_random_numbers(&self) -> bool {
        true
    }

    /// Recompute activations in backward instead of keeping them (less
    /// memory for one more forward pass per backward). Returns whether the
    /// model can; the default cannot.
    fn set_activation_checkpointing(&mut self, _on: bool) -> bool {
        false
    }

    /// The model's variables, `None` for analytic models without any.
    fn var_store(&self) -> Option<&VarStore>;

    /// Mutable access to the model's variables.
    fn var_store_mut(&mut self) -> Option<&mut VarStore>;

    /// The score `∇ₓ log p_σ(x) = (D(x; σ) − x) / σ²`, shape of `x`.
    fn score(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let denoised = self.denoise(x, sigma, labels)?;
        let sigma = broadcast_per_sample(sigma, x.dim())?;
        (denoised - x).f_div(&sigma.f_square().ctx("score")?).ctx("score")
    }
}

/// A one-step generator `x = G_θ(z, labels)`.
pub trait Generator {
    /// Shape of one latent.
    fn latent_shape(&self) -> Vec<i64>;

    /// Shape of one sample: `[D]` or `[C, H, W]`.
    fn sample_shape(&self) -> Vec<i64>;

    /// Number of classes (0 when unconditional).
    fn label_dim(&self) -> i64 {
        0
    }

    /// Draws `n` latents `[n, *latent_shape]` from libtorch's global
    /// generator (this rank's rows of the global batch's, when sharded).
    fn sample_latents(&self, n: i64, device: Device) -> Result<Tensor> {
        let latent_shape = self.latent_shape();
        crate::shard::batch_draw(n, 0, |n| {
            let mut shape = vec![n];
            shape.extend(&latent_shape);
            Tensor::f_randn(&shape, (Kind::Float, device)).ctx("sample latents")
        })
    }

    /// Maps latents `[N, *latent_shape]` (and labels `[N, label_dim]`) to
    /// samples `[N, *sample_shape]`.
    fn generate(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor>;

    /// The generator's variables.
    fn var_store(&self) -> &VarStore;

    /// Mutable access to the generator's variables.
    fn var_store_mut(&mut self) -> &mut VarStore;

    /// Switches dropout and similar train-only behaviour on or off.
    fn set_train(&mut self, _train: bool) {}

    /// Recompute activations in backward instead of keeping them (less
    /// memory for one more forward pass per backward). Returns whether the
    /// model can; the default cannot.
    fn set_activation_checkpointing(&mut self, _on: bool) -> bool {
        false
    }
}

/// A divergence between the generator's and the teacher's distributions,
/// expressed through the generator loss whose gradient is its gradient.
/// The divergence owns its noise-level sampling and weighting.
pub trait Divergence {
    /// The generator loss (a scalar) for samples `x_g` `[N, *sample_shape]`
    /// that carry the generator's graph. `teacher` is frozen; `fake` tracks
    /// the generator's distribution and is frozen during this call.
    fn generator_loss(
        &self,
        x_g: &Tensor,
        labels: Option<&Tensor>,
        teacher: &dyn ScoreModel,
        fake: &dyn ScoreModel,
    ) -> Result<Tensor>;

    /// Noise levels σ `[n]` (float32, on the device of `like`) at which this
    /// divergence's paper trains the fake score, for a teacher of
    /// `sigma_data`; `None` when it names none. The fake score's loss draws
    /// from here under `fake_loss.kind: "divergence"`, so it is accurate
    /// where the generator loss queries it.
    fn fake_score_sigma(&self, _n: i64, _like: &Tensor, _sigma_data: f64) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Whether the loss may be captured in a CUDA graph: device work only,
    /// nothing read back or copied from the host, no reseeding when the
    /// denoisers draw nothing. The default, no, is always safe.
    fn capturable(&self) -> bool {
        false
    }
}

/// A set of images with optional class labels.
pub trait Dataset {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one image `[C, H, W]`.
    fn image_shape(&self) -> [i64; 3];

    /// Number of classes (0 when unlabelled).
    fn label_dim(&self) -> i64;

    /// Image `index` as uint8 `[C, H, W]` and its class index, if labelled.
    fn get(&self, index: usize) -> Result<(Tensor, Option<i64>)>;

    /// The class index of image `index`, if labelled (without decoding the image
    /// where the dataset can).
    fn label(&self, index: usize) -> Result<Option<i64>> {
        Ok(self.get(index)?.1)
    }
}

/// Reshapes per-sample values `[N]` to `[N, 1, …, 1]` with `dims` dimensions
/// in all, so they broadcast against a batch.
pub fn broadcast_per_sample(values: &Tensor, dims: usize) -> Result<Tensor> {
    let mut shape = vec![-1i64];
    shape.resize(dims.max(1), 1);
    values.f_reshape(&shape).ctx("broadcast per-sample values")
}
