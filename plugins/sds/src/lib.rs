//! An example runtime plugin for difi: Score Distillation Sampling (Poole et
//! al., "DreamFusion: Text-to-3D using 2D Diffusion", 2022), built as a
//! shared library against difi-core alone and loaded with `--plugin` or the
//! config's `plugins: [...]`.
//!
//! SDS pulls each generated sample towards the teacher's denoised estimate,
//! with no fake score: its gradient is `E[w(σ)(ε̂(x_t) − ε) ∂x_g/∂θ]` with
//! `ε̂ = (x_t − D_r(x_t))/σ`, so `ε̂ − ε = (x_g − D_r(x_t))/σ`. With
//! `w(σ) = σ` the surrogate is `Σ sg(x_g − D_r(x_t)) · x_g / N`. It is
//! mode-seeking (the reverse of IKL without the fake score's entropy term),
//! which the Diff-Instruct paper discusses as a limit of IKL.

use difi_core::abi::ForeignDivergence;
use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{Divergence, ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Parameters of `sds`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SdsParams {
    /// Mean of ln σ, for σ_data 0.5 (σ is scaled by the teacher's σ_data / 0.5).
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
}

impl Default for SdsParams {
    fn default() -> Self {
        SdsParams { p_mean: -1.2, p_std: 1.2 }
    }
}

/// The SDS divergence.
pub struct Sds {
    params: SdsParams,
}

impl Divergence for Sds {
    fn generator_loss(
        &self,
        x_g: &Tensor,
        labels: Option<&Tensor>,
        teacher: &dyn ScoreModel,
        _fake: &dyn ScoreModel,
    ) -> Result<Tensor> {
        let n = x_g.size()[0];
        let direction = tch::no_grad(|| -> Result<Tensor> {
            let x = x_g.detach();
            let sigma = log_normal_sigma(n, self.params.p_mean, self.params.p_std, &x)? * (teacher.sigma_data() / 0.5);
            let x_t = &x + x.f_randn_like().ctx("sds noise")? * broadcast_per_sample(&sigma, x.dim())?;
            let d_real = teacher.denoise(&x_t, &sigma, labels)?;
            Ok(x - d_real)
        })?;
        Ok((direction * x_g).f_sum(Kind::Float).ctx("sds loss")? / n as f64)
    }
}

impl ForeignDivergence for Sds {
    const NAME: &'static std::ffi::CStr = c"sds";
    type Params = SdsParams;

    fn new(params: SdsParams) -> Result<Self> {
        if params.p_std.is_nan() || params.p_std <= 0.0 {
            return Err(Error::config("p_std", "must be positive"));
        }
        Ok(Sds { params })
    }
}

difi_core::export_plugin!(name: c"difi-plugin-sds", divergences: [Sds]);
