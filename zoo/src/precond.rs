//! Preconditioning of a denoiser around a raw network F (Karras et al. 2022,
//! "Elucidating the Design Space…", Table 1):
//! `D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))`.

use difi_core::error::{Result, TorchContext};
use difi_core::traits::broadcast_per_sample;
use tch::{Kind, Tensor};

/// Per-sample coefficients, each `[N, 1, …, 1]` to broadcast against `x`,
/// except `c_noise` which is `[N]`. All float32.
pub struct Coefficients {
    pub c_skip: Tensor,
    pub c_out: Tensor,
    pub c_in: Tensor,
    pub c_noise: Tensor,
}

/// The preconditionings of EDM's `networks.py`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Precond {
    /// `EDMPrecond`, for data of standard deviation `sigma_data`.
    Edm { sigma_data: f64 },
    /// `VPPrecond`: the variance-preserving SDE's noise schedule.
    Vp { beta_d: f64, beta_min: f64, m: f64 },
    /// `VEPrecond`: the variance-exploding SDE.
    Ve,
}

impl Precond {
    /// Coefficients for noise levels `sigma` `[N]`, for samples with `dims`
    /// dimensions (batch included). Computed in float32, as EDM does.
    pub fn coefficients(&self, sigma: &Tensor, dims: usize) -> Result<Coefficients> {
        let sigma = sigma.f_to_kind(Kind::Float).ctx("sigma")?.f_reshape([-1]).ctx("sigma")?;
        let s2 = sigma.f_square().ctx("precond")?;
        let ones = sigma.f_ones_like().ctx("precond")?;
        let (c_skip, c_out, c_in, c_noise) = match *self {
            Precond::Edm { sigma_data } => {
                let sd2 = sigma_data * sigma_data;
                let c_skip = (&s2 + sd2).f_reciprocal().ctx("precond")? * sd2;
                let c_out = &sigma * sigma_data / (&s2 + sd2).f_sqrt().ctx("precond")?;
                let c_in = (&s2 + sd2).f_sqrt().ctx("precond")?.f_reciprocal().ctx("precond")?;
                let c_noise = sigma.f_log().ctx("precond")? / 4.0;
                (c_skip, c_out, c_in, c_noise)
            }
            Precond::Vp { beta_d, beta_min, m } => {
                let c_in = (&s2 + 1.0).f_sqrt().ctx("precond")?.f_reciprocal().ctx("precond")?;
                // σ⁻¹(σ) = (√(β_min² + 2 β_d ln(1 + σ²)) − β_min) / β_d
                let inv = (((&s2 + 1.0).f_log().ctx("precond")? * (2.0 * beta_d) + beta_min * beta_min)
                    .f_sqrt()
                    .ctx("precond")?
                    - beta_min)
                    / beta_d;
                (ones, -&sigma, c_in, inv * (m - 1.0))
            }
            Precond::Ve => {
                let c_noise = (&sigma * 0.5).f_log().ctx("precond")?;
                (ones.shallow_clone(), sigma.shallow_clone(), ones, c_noise)
            }
        };
        Ok(Coefficients {
            c_skip: broadcast_per_sample(&c_skip, dims)?,
            c_out: broadcast_per_sample(&c_out, dims)?,
            c_in: broadcast_per_sample(&c_in, dims)?,
            c_noise,
        })
    }
}

/// `VPPrecond.sigma(t) = √(exp(½ β_d t² + β_min t) − 1)`, evaluated in
/// float32 as EDM evaluates its σ range.
pub fn vp_sigma(t: f64, beta_d: f64, beta_min: f64) -> f64 {
    let t = t as f32;
    let (beta_d, beta_min) = (beta_d as f32, beta_min as f32);
    ((0.5 * beta_d * t * t + beta_min * t).exp() - 1.0).sqrt() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(t: &Tensor, i: i64) -> f64 {
        t.reshape([-1]).double_value(&[i])
    }

    #[test]
    fn edm_matches_table_1() {
        let c = Precond::Edm { sigma_data: 0.5 }.coefficients(&Tensor::from_slice(&[0.5f32, 2.0]), 2).unwrap();
        // σ = σ_data: c_skip = 1/2, c_out = σ_d/√2, c_in = 1/(σ_d√2), c_noise = ln(0.5)/4.
        assert!((value(&c.c_skip, 0) - 0.5).abs() < 1e-6);
        assert!((value(&c.c_out, 0) - 0.5 / 2f64.sqrt()).abs() < 1e-6);
        assert!((value(&c.c_in, 0) - 1.0 / (0.5 * 2f64.sqrt())).abs() < 1e-6);
        assert!((value(&c.c_noise, 0) - 0.5f64.ln() / 4.0).abs() < 1e-6);
        assert!((value(&c.c_skip, 1) - 0.25 / 4.25).abs() < 1e-6);
    }

    #[test]
    fn vp_noise_label_inverts_the_schedule() {
        let (beta_d, beta_min) = (19.9, 0.1);
        let t = 0.3;
        let sigma = vp_sigma(t, beta_d, beta_min);
        let c =
            Precond::Vp { beta_d, beta_min, m: 1000.0 }.coefficients(&Tensor::from_slice(&[sigma as f32]), 4).unwrap();
        assert!((value(&c.c_noise, 0) - 999.0 * t).abs() < 1e-3, "{}", value(&c.c_noise, 0));
        assert!((value(&c.c_out, 0) + sigma).abs() < 1e-6);
        let c = Precond::Ve.coefficients(&Tensor::from_slice(&[4.0f32]), 4).unwrap();
        assert!((value(&c.c_noise, 0) - 2f64.ln()).abs() < 1e-6 && value(&c.c_in, 0) == 1.0);
    }
}
