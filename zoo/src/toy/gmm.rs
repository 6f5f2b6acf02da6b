//! `gmm`: a Gaussian-mixture teacher in ℝᵈ whose denoiser is exact.
//!
//! For `p₀ = Σₖ wₖ N(μₖ, sₖ² I)`, the noisy marginal at level σ is
//! `Σₖ wₖ N(μₖ, (sₖ² + σ²) I)` and the posterior mean is
//! `D(x; σ) = Σₖ rₖ(x) (μₖ + sₖ²/(sₖ² + σ²) (x − μₖ))`, with `rₖ` the
//! responsibilities of the components for `x`. A perfect pre-trained diffusion
//! model, so distillation quality can be measured against exact samples.

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::ScoreModel;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Parameters of `gmm`. The default is 8 equal modes on a circle of radius 4.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GmmParams {
    /// Component means, one vector of d numbers each.
    pub means: Vec<Vec<f64>>,
    /// One isotropic standard deviation per component.
    pub stds: Vec<f64>,
    /// Mixture weights (normalised to sum to 1); equal when empty.
    pub weights: Vec<f64>,
}

impl Default for GmmParams {
    fn default() -> Self {
        let means = (0..8)
            .map(|k| {
                let angle = k as f64 * std::f64::consts::TAU / 8.0;
                vec![4.0 * angle.cos(), 4.0 * angle.sin()]
            })
            .collect();
        GmmParams { means, stds: vec![0.3; 8], weights: vec![1.0 / 8.0; 8] }
    }
}

/// The Gaussian-mixture teacher.
pub struct Gmm {
    /// `[K, d]`, float64.
    means: Tensor,
    /// `[K]` variances sₖ², float64.
    variances: Tensor,
    /// `[K]` log weights, float64.
    log_weights: Tensor,
    weights: Vec<f64>,
    dim: i64,
    sigma_data: f64,
}

impl Gmm {
    /// Validates the parameters and builds the mixture on `device`.
    pub fn new(params: &GmmParams, device: Device) -> Result<Self> {
        let k = params.means.len();
        if k == 0 {
            return Err(Error::config("means", "needs at least one component"));
        }
        let dim = params.means[0].len();
        if dim == 0 {
            return Err(Error::config("means", "components need at least one dimension"));
        }
        if let Some((i, m)) = params.means.iter().enumerate().find(|(_, m)| m.len() != dim) {
            return Err(Error::config(
                format!("means[{i}]"),
                format!("has {} numbers, the first mean has {dim}", m.len()),
            ));
        }
        if params.means.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::config("means", "must be finite"));
        }
        if params.stds.len() != k {
            return Err(Error::config("stds", format!("has {} values for {k} components", params.stds.len())));
        }
        if let Some((i, s)) = params.stds.iter().enumerate().find(|(_, s)| !(**s > 0.0 && s.is_finite())) {
            return Err(Error::config(format!("stds[{i}]"), format!("must be positive, got {s}")));
        }
        let weights = if params.weights.is_empty() { vec![1.0; k] } else { params.weights.clone() };
        if weights.len() != k {
            return Err(Error::config("weights", format!("has {} values for {k} components", weights.len())));
        }
        if weights.iter().any(|w| !(*w >= 0.0 && w.is_finite())) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(Error::config("weights", "must be non-negative with a positive sum"));
        }
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();

        let flat: Vec<f64> = params.means.iter().flatten().copied().collect();
        let means = Tensor::from_slice(&flat).reshape([k as i64, dim as i64]).to_device(device);
        let variances: Vec<f64> = params.stds.iter().map(|s| s * s).collect();
        // σ_data: root mean square of one coordinate (EDM's preconditioning assumes centred data).
        let second_moment: f64 = weights
            .iter()
            .zip(&params.means)
            .zip(&variances)
            .map(|((w, m), v)| w * (v + m.iter().map(|x| x * x).sum::<f64>() / dim as f64))
            .sum();
        Ok(Gmm {
            means,
            variances: Tensor::from_slice(&variances).to_device(device),
            log_weights: Tensor::from_slice(&weights).to_device(device).log(),
            weights,
            dim: dim as i64,
            sigma_data: second_moment.sqrt(),
        })
    }

    /// Normalised mixture weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Number of components.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// Dimension d.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// `n` exact samples `[n, d]` (float32) drawn from libtorch's global generator.
    pub fn sample(&self, n: i64) -> Result<Tensor> {
        let probs = self.log_weights.f_exp().ctx("gmm weights")?;
        let component = probs.f_multinomial(n, true).ctx("gmm components")?;
        let means = self.means.f_index_select(0, &component).ctx("gmm sample")?;
        let stds = self.variances.f_sqrt().ctx("gmm")?.f_index_select(0, &component).ctx("gmm")?;
        let noise = Tensor::f_randn([n, self.dim], (Kind::Double, self.means.device())).ctx("gmm noise")?;
        (means + noise * stds.unsqueeze(1)).f_to_kind(Kind::Float).ctx("gmm sample")
    }

    /// Index `[n]` of the most likely component of each sample of `x` `[n, d]`
    /// (without noise): how samples are assigned to modes.
    pub fn assign(&self, x: &Tensor) -> Result<Tensor> {
        let zero = Tensor::f_zeros([x.size()[0]], (Kind::Double, x.device())).ctx("gmm")?;
        self.log_responsibilities(&x.f_to_kind(Kind::Double).ctx("gmm")?, &zero)?.f_argmax(1, false).ctx("gmm assign")
    }

    /// `log rₖ(x)` `[N, K]` at noise levels σ `[N]`, in float64.
    fn log_responsibilities(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        // total variance per sample and component: [N, K]
        let total = self.variances.unsqueeze(0) + sigma.f_square().ctx("gmm")?.unsqueeze(1);
        let diff = x.unsqueeze(1) - self.means.unsqueeze(0); // [N, K, d]
        let sq = diff.f_square().ctx("gmm")?.f_sum_dim_intlist(2, false, Kind::Double).ctx("gmm")?;
        let log_density: Tensor =
            -0.5 * (sq / &total) - 0.5 * self.dim as f64 * (total * std::f64::consts::TAU).f_log().ctx("gmm")?;
        let logits = log_density + self.log_weights.unsqueeze(0);
        logits.f_log_softmax(1, Kind::Double).ctx("gmm responsibilities")
    }
}

impl ScoreModel for Gmm {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, _labels: Option<&Tensor>) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 2 || size[1] != self.dim {
            return Err(Error::Shape { what: "gmm input".into(), expected: vec![-1, self.dim], actual: size });
        }
        let kind = x.f_kind().ctx("gmm")?;
        let x = x.f_to_kind(Kind::Double).ctx("gmm")?;
        let sigma = sigma.f_to_kind(Kind::Double).ctx("gmm")?.f_reshape([-1]).ctx("gmm sigma")?;
        let r = self.log_responsibilities(&x, &sigma)?.f_exp().ctx("gmm")?; // [N, K]
        let total = self.variances.unsqueeze(0) + sigma.f_square().ctx("gmm")?.unsqueeze(1); // [N, K]
        let shrink = self.variances.unsqueeze(0) / &total; // sₖ²/(sₖ²+σ²)
        // Σₖ rₖ (μₖ + shrinkₖ (x − μₖ)) = Σₖ rₖ (1 − shrinkₖ) μₖ + (Σₖ rₖ shrinkₖ) x
        let weight: Tensor = &r * (1.0 - &shrink);
        let pull = weight.f_matmul(&self.means).ctx("gmm")?; // [N, d]
        let keep = (&r * &shrink).f_sum_dim_intlist(1, true, Kind::Double).ctx("gmm")?; // [N, 1]
        (pull + keep * x).f_to_kind(kind).ctx("gmm")
    }

    fn sigma_data(&self) -> f64 {
        self.sigma_data
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.dim]
    }

    /// Exact, with nothing random in it.
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

difi_core::register_plugin!(ScoreModel, "gmm", GmmParams, |params, ctx| {
    Ok(Box::new(Gmm::new(&params, ctx.device)?))
});

#[cfg(test)]
mod tests {
    use super::*;

    fn two_modes() -> Gmm {
        let params =
            GmmParams { means: vec![vec![-2.0, 0.0], vec![3.0, 1.0]], stds: vec![0.5, 1.0], weights: vec![0.3, 0.7] };
        Gmm::new(&params, Device::Cpu).unwrap()
    }

    #[test]
    fn denoiser_is_the_posterior_mean() {
        // Monte-Carlo check: E[x0 | x_t ∈ small ball] is hard; instead check the
        // Tweedie identity D = x + σ² ∇ log p_σ against a finite-difference score.
        let gmm = two_modes();
        let x = Tensor::from_slice(&[0.3f64, -0.7, 1.5, 2.0]).reshape([2, 2]);
        let sigma = Tensor::from_slice(&[0.8f64, 2.5]);
        let d = gmm.denoise(&x, &sigma, None).unwrap();
        let log_p = |x: &Tensor| -> Tensor {
            let total = gmm.variances.unsqueeze(0) + sigma.square().unsqueeze(1);
            let sq = (x.unsqueeze(1) - gmm.means.unsqueeze(0)).square().sum_dim_intlist(2, false, Kind::Double);
            let log: Tensor =
                -0.5 * (sq / &total) - (total * std::f64::consts::TAU).log() + gmm.log_weights.unsqueeze(0);
            log.logsumexp(1, false)
        };
        let eps = 1e-5;
        for j in 0..2 {
            let e = Tensor::zeros([2, 2], (Kind::Double, Device::Cpu));
            let _ = e.narrow(1, j, 1).fill_(eps);
            let grad = (log_p(&(&x + &e)) - log_p(&(&x - &e))) / (2.0 * eps);
            let tweedie = x.select(1, j) + sigma.square() * grad;
            let diff = (tweedie - d.select(1, j)).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "coordinate {j}: {diff}");
        }
    }

    #[test]
    fn small_sigma_returns_the_input_and_large_sigma_the_mean() {
        let gmm = two_modes();
        let x = Tensor::from_slice(&[0.1f32, 0.2]).reshape([1, 2]);
        let d = gmm.denoise(&x, &Tensor::from_slice(&[1e-4f32]), None).unwrap();
        assert!((d - &x).abs().max().double_value(&[]) < 1e-4);
        let d = gmm.denoise(&x, &Tensor::from_slice(&[1e4f32]), None).unwrap();
        let mean = [0.3 * -2.0 + 0.7 * 3.0, 0.7];
        assert!((d.double_value(&[0, 0]) - mean[0]).abs() < 1e-3 && (d.double_value(&[0, 1]) - mean[1]).abs() < 1e-3);
    }

    #[test]
    fn samples_follow_the_weights() {
        tch::manual_seed(0);
        let gmm = two_modes();
        let x = gmm.sample(20000).unwrap();
        let assigned = gmm.assign(&x).unwrap();
        let share = assigned.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((share - 0.7).abs() < 0.02, "{share}");
    }

    #[test]
    fn bad_params_name_the_field() {
        let mut params = GmmParams::default();
        params.stds.pop();
        let err = Gmm::new(&params, Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("stds") && err.contains("7 values for 8"), "{err}");
        let mut params = GmmParams::default();
        params.means[3] = vec![1.0];
        let err = Gmm::new(&params, Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("means[3]"), "{err}");
        let mut params = GmmParams::default();
        params.stds[0] = -1.0;
        assert!(Gmm::new(&params, Device::Cpu).err().unwrap().to_string().contains("stds[0]"));
    }
}
