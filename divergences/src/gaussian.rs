//! A score model whose every answer is known in closed form, for testing
//! divergences: the exact denoiser of isotropic Gaussian data N(0, s² I),
//! `D(x; σ) = s² x / (s² + σ²)`, with score `−x / (s² + σ²)`.

use difi_core::error::{Result, TorchContext};
use difi_core::traits::{ScoreModel, broadcast_per_sample};
use tch::Tensor;

/// The exact denoiser of N(0, `variance`·I) in `dim` dimensions.
#[derive(Clone, Copy, Debug)]
pub struct Gaussian {
    /// Data variance s².
    pub variance: f64,
    /// Dimension of one sample.
    pub dim: i64,
}

impl Gaussian {
    /// The exact score `−x / (s² + σ²)` of the noised distribution, shape of `x`.
    pub fn exact_score(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let sigma = broadcast_per_sample(&sigma.f_to_kind(x.kind()).ctx("sigma")?, x.dim())?;
        Ok(-x / (sigma.square() + self.variance))
    }
}

impl ScoreModel for Gaussian {
    /// Computed in the dtype of `x` (float64 inputs give float64 answers).
    fn denoise(&self, x: &Tensor, sigma: &Tensor, _labels: Option<&Tensor>) -> Result<Tensor> {
        let sigma = broadcast_per_sample(&sigma.f_to_kind(x.kind()).ctx("sigma")?, x.dim())?;
        Ok(x * self.variance / (sigma.square() + self.variance))
    }

    fn sigma_data(&self) -> f64 {
        self.variance.sqrt()
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.dim]
    }

    fn draws_random_numbers(&self) -> bool {
        false
    }

    fn var_store(&self) -> Option<&tch::nn::VarStore> {
        None
    }

    fn var_store_mut(&mut self) -> Option<&mut tch::nn::VarStore> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn the_score_from_the_denoiser_is_the_exact_score() {
        let model = Gaussian { variance: 2.0, dim: 3 };
        // Not from libtorch's generator: other tests of this crate replay its draws.
        let x = Tensor::arange(15, (Kind::Double, Device::Cpu)).reshape([5, 3]) / 7.0 - 1.0;
        let sigma = Tensor::from_slice(&[0.1f64, 0.5, 1.0, 2.0, 5.0]);
        let error = (model.score(&x, &sigma, None).unwrap() - model.exact_score(&x, &sigma).unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert!(error < 1e-12, "{error}");
    }
}
