//! `mlp-denoiser`: an EDM-preconditioned MLP denoiser for vector data, the
//! fake score of vector teachers.

use difi_core::error::{Error, Result, TorchContext};
use difi_core::registry::BuildContext;
use difi_core::traits::ScoreModel;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::precond::Precond;
use crate::toy::mlp::Mlp;

/// Parameters of `mlp-denoiser`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpDenoiserParams {
    /// Widths of the hidden layers.
    pub hidden: Vec<i64>,
    /// Number of sinusoidal features of the noise level (even).
    pub noise_features: i64,
    /// σ_data of the preconditioning; `None` takes the teacher's.
    pub sigma_data: Option<f64>,
}

impl Default for MlpDenoiserParams {
    fn default() -> Self {
        MlpDenoiserParams { hidden: vec![256, 256, 256], noise_features: 32, sigma_data: None }
    }
}

/// `D(x; σ) = c_skip x + c_out MLP([c_in x, features(c_noise), labels])`.
pub struct MlpDenoiser {
    vs: VarStore,
    mlp: Mlp,
    precond: Precond,
    sigma_data: f64,
    /// `[noise_features / 2]` frequencies, geometric from 1 to 64.
    frequencies: Tensor,
    dim: i64,
    label_dim: i64,
    train: bool,
}

impl MlpDenoiser {
    /// A denoiser of `dim`-vectors for `label_dim` classes.
    pub fn new(
        params: &MlpDenoiserParams,
        dim: i64,
        label_dim: i64,
        sigma_data: f64,
        device: tch::Device,
    ) -> Result<Self> {
        if params.noise_features < 2 || params.noise_features % 2 != 0 {
            return Err(Error::config("noise_features", "must be an even number of at least 2"));
        }
        if params.hidden.iter().any(|&w| w < 1) {
            return Err(Error::config("hidden", "widths must be at least 1"));
        }
        if !(sigma_data > 0.0 && sigma_data.is_finite()) {
            return Err(Error::config("sigma_data", format!("must be positive, got {sigma_data}")));
        }
        let vs = VarStore::new(device);
        let input = dim.saturating_add(params.noise_features).saturating_add(label_dim);
        let mlp = Mlp::new(&vs.root(), input, &params.hidden, dim, true)?;
        let half = params.noise_features / 2;
        let frequencies = Tensor::f_linspace(0.0, 64f64.ln(), half, (Kind::Float, device))
            .ctx("frequencies")?
            .f_exp()
            .ctx("frequencies")?;
        Ok(MlpDenoiser {
            vs,
            mlp,
            precond: Precond::Edm { sigma_data },
            sigma_data,
            frequencies,
            dim,
            label_dim,
            train: false,
        })
    }

    fn from_context(params: MlpDenoiserParams, ctx: &BuildContext<'_>) -> Result<Self> {
        let teacher = ctx.teacher("mlp-denoiser")?;
        let shape = teacher.sample_shape();
        let [dim] = shape[..] else {
            return Err(Error::Plugin {
                plugin: "mlp-denoiser".into(),
                message: format!("denoises vectors, but the teacher's samples have shape {shape:?}"),
            });
        };
        let sigma_data = params.sigma_data.unwrap_or_else(|| teacher.sigma_data());
        Self::new(&params, dim, teacher.label_dim(), sigma_data, ctx.device)
    }
}

impl ScoreModel for MlpDenoiser {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 2 || size[1] != self.dim {
            return Err(Error::Shape { what: "mlp-denoiser input".into(), expected: vec![-1, self.dim], actual: size });
        }
        let kind = x.f_kind().ctx("mlp-denoiser")?;
        let x = x.f_to_kind(Kind::Float).ctx("mlp-denoiser")?;
        let c = self.precond.coefficients(&sigma.f_reshape([-1]).ctx("sigma")?, 2)?;
        let angles = c.c_noise.unsqueeze(1) * self.frequencies.unsqueeze(0);
        let mut parts =
            vec![&x * &c.c_in, angles.f_cos().ctx("noise features")?, angles.f_sin().ctx("noise features")?];
        if self.label_dim > 0 {
            let labels =
                labels.ok_or_else(|| Error::config("labels", "this denoiser is conditional and needs labels"))?;
            parts.push(labels.f_to_kind(Kind::Float).ctx("labels")?);
        }
        let input = Tensor::f_cat(&parts, 1).ctx("mlp-denoiser input")?;
        let out = self.mlp.forward(&input);
        (c.c_skip * &x + c.c_out * out).f_to_kind(kind).ctx("mlp-denoiser")
    }

    fn sigma_data(&self) -> f64 {
        self.sigma_data
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.dim]
    }

    fn label_dim(&self) -> i64 {
        self.label_dim
    }

    fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    /// No dropout, in either mode.
    fn draws_random_numbers(&self) -> bool {
        false
    }

    fn var_store(&self) -> Option<&VarStore> {
        Some(&self.vs)
    }

    fn var_store_mut(&mut self) -> Option<&mut VarStore> {
        Some(&mut self.vs)
    }
}

difi_core::register_plugin!(ScoreModel, "mlp-denoiser", MlpDenoiserParams, |params, ctx| {
    Ok(Box::new(MlpDenoiser::from_context(params, ctx)?))
});
