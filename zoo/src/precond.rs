//! Preconditioning of a denoiser around a raw network F (Karras et al. 2022,
//! "Elucidating the Design Space…", Table 1):
//! `D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))`.

use difi_core::error::{Result, TorchContext};
use difi_core::traits::broadcast_per_sample;
use tch::Tensor;

/// Per-sample preconditioning coefficients, each `[N, 1, …, 1]` so they
/// broadcast against `x`, except `c_noise` which is `[N]`.
pub struct Coefficients {
    pub c_skip: Tensor,
    pub c_out: Tensor,
    pub c_in: Tensor,
    pub c_noise: Tensor,
}

/// EDM's preconditioning for data of standard deviation `sigma_data`.
#[derive(Clone, Copy, Debug)]
pub struct EdmPrecond {
    /// Standard deviation of the data.
    pub sigma_data: f64,
}

impl EdmPrecond {
    /// Coefficients for noise levels `sigma` `[N]` and samples with `dims` dimensions (batch included).
    pub fn coefficients(&self, sigma: &Tensor, dims: usize) -> Result<Coefficients> {
        let sd2 = self.sigma_data * self.sigma_data;
        let sigma = sigma.f_to_kind(tch::Kind::Float).ctx("sigma")?;
        let s2 = sigma.f_square().ctx("precond")?;
        let norm = (&s2 + sd2).f_sqrt().ctx("precond")?;
        let c_skip = (&s2 + sd2).f_reciprocal().ctx("precond")? * sd2;
        let c_out = &sigma * self.sigma_data / &norm;
        let c_in = norm.f_reciprocal().ctx("precond")?;
        let c_noise = sigma.f_log().ctx("precond")? / 4.0;
        Ok(Coefficients {
            c_skip: broadcast_per_sample(&c_skip, dims)?,
            c_out: broadcast_per_sample(&c_out, dims)?,
            c_in: broadcast_per_sample(&c_in, dims)?,
            c_noise,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_edm_table_1() {
        let precond = EdmPrecond { sigma_data: 0.5 };
        let sigma = Tensor::from_slice(&[0.5f32, 2.0]);
        let c = precond.coefficients(&sigma, 2).unwrap();
        let get = |t: &Tensor, i: i64| t.reshape([-1]).double_value(&[i]);
        // σ = σ_data: c_skip = 1/2, c_out = σ_d/√2, c_in = 1/(σ_d√2), c_noise = ln(0.5)/4.
        assert!((get(&c.c_skip, 0) - 0.5).abs() < 1e-6);
        assert!((get(&c.c_out, 0) - 0.5 / 2f64.sqrt()).abs() < 1e-6);
        assert!((get(&c.c_in, 0) - 1.0 / (0.5 * 2f64.sqrt())).abs() < 1e-6);
        assert!((get(&c.c_noise, 0) - 0.5f64.ln() / 4.0).abs() < 1e-6);
        assert!((get(&c.c_skip, 1) - 0.25 / 4.25).abs() < 1e-6);
    }
}
