//! An example runtime plugin for difi: the divergence of Distribution
//! Matching Distillation (Yin et al., CVPR 2024), built as a shared library
//! and loaded with `--plugin` or the config's `plugins: [...]`.
//!
//! DMD moves each generated sample along the difference of the fake and real
//! denoisers, normalised per sample by the mean distance of the sample to the
//! teacher's denoised estimate:
//! `grad = (D_f(x_t) − D_r(x_t)) / mean|x_g − D_r(x_t)|`, and trains the
//! generator with `½ ‖x_g − sg(x_g − grad)‖²` averaged over elements.

use difi_core::abi::ForeignDivergence;
use difi_core::draws::log_normal_sigma;
use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{Divergence, ScoreModel, broadcast_per_sample};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Parameters of `dmd`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DmdParams {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
}

impl Default for DmdParams {
    fn default() -> Self {
        DmdParams { p_mean: -1.2, p_std: 1.2 }
    }
}

/// The DMD divergence.
pub struct Dmd {
    params: DmdParams,
}

impl Divergence for Dmd {
    fn generator_loss(
        &self,
        x_g: &Tensor,
        labels: Option<&Tensor>,
        teacher: &dyn ScoreModel,
        fake: &dyn ScoreModel,
    ) -> Result<Tensor> {
        let n = x_g.size()[0];
        let target = tch::no_grad(|| -> Result<Tensor> {
            let x = x_g.detach();
            let sigma = log_normal_sigma(n, self.params.p_mean, self.params.p_std, &x)?;
            let x_t = &x + x.f_randn_like().ctx("dmd noise")? * broadcast_per_sample(&sigma, x.dim())?;
            let d_real = teacher.denoise(&x_t, &sigma, labels)?;
            let d_fake = fake.denoise(&x_t, &sigma, labels)?;
            let dims: Vec<i64> = (1..x.dim() as i64).collect();
            let normaliser = (&x - &d_real)
                .f_abs()
                .ctx("dmd")?
                .f_mean_dim(dims.as_slice(), true, Kind::Float)
                .ctx("dmd")?
                .f_clamp_min(1e-8)
                .ctx("dmd")?;
            let mut grad = (d_fake - d_real) / normaliser;
            let _ = grad.f_nan_to_num_(0.0, 0.0, 0.0).ctx("dmd")?;
            Ok(x - grad)
        })?;
        let loss = (x_g - target).f_square().ctx("dmd loss")?.f_mean(Kind::Float).ctx("dmd loss")?;
        Ok(loss * 0.5)
    }
}

impl ForeignDivergence for Dmd {
    const NAME: &'static std::ffi::CStr = c"dmd";
    type Params = DmdParams;

    fn new(params: DmdParams) -> Result<Self> {
        if params.p_std.is_nan() || params.p_std <= 0.0 {
            return Err(Error::config("p_std", "must be positive"));
        }
        Ok(Dmd { params })
    }
}

difi_core::export_plugin!(name: c"difi-plugin-dmd", divergences: [Dmd]);
