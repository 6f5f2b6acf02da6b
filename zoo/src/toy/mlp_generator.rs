//! `mlp-generator`: a one-step generator `ℝᵏ → ℝᵈ` for vector teachers,
//! trained from scratch.

use difi_core::error::{Error, Result, TorchContext};
use difi_core::registry::BuildContext;
use difi_core::traits::Generator;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::toy::mlp::Mlp;

/// Parameters of `mlp-generator`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpGeneratorParams {
    /// Dimension of the Gaussian latent.
    pub latent_dim: i64,
    /// Widths of the hidden layers.
    pub hidden: Vec<i64>,
}

impl Default for MlpGeneratorParams {
    fn default() -> Self {
        MlpGeneratorParams { latent_dim: 16, hidden: vec![256, 256, 256] }
    }
}

/// `x = MLP([z, labels])`.
pub struct MlpGenerator {
    vs: VarStore,
    mlp: Mlp,
    latent_dim: i64,
    dim: i64,
    label_dim: i64,
}

impl MlpGenerator {
    /// A generator of `dim`-vectors for `label_dim` classes (0: unconditional).
    pub fn new(params: &MlpGeneratorParams, dim: i64, label_dim: i64, device: tch::Device) -> Result<Self> {
        if params.latent_dim < 1 {
            return Err(Error::config("latent_dim", "must be at least 1"));
        }
        if params.hidden.iter().any(|&w| w < 1) {
            return Err(Error::config("hidden", "widths must be at least 1"));
        }
        let vs = VarStore::new(device);
        let mlp = Mlp::new(&vs.root(), params.latent_dim.saturating_add(label_dim), &params.hidden, dim, false)?;
        Ok(MlpGenerator { vs, mlp, latent_dim: params.latent_dim, dim, label_dim })
    }

    fn from_context(params: MlpGeneratorParams, ctx: &BuildContext<'_>) -> Result<Self> {
        let teacher = ctx.teacher("mlp-generator")?;
        let shape = teacher.sample_shape();
        let [dim] = shape[..] else {
            return Err(Error::Plugin {
                plugin: "mlp-generator".into(),
                message: format!("makes vectors, but the teacher's samples have shape {shape:?}"),
            });
        };
        Self::new(&params, dim, teacher.label_dim(), ctx.device)
    }
}

impl Generator for MlpGenerator {
    fn latent_shape(&self) -> Vec<i64> {
        vec![self.latent_dim]
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![self.dim]
    }

    fn label_dim(&self) -> i64 {
        self.label_dim
    }

    fn generate(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let input = match (self.label_dim, labels) {
            (0, _) => z.shallow_clone(),
            (_, Some(labels)) => {
                Tensor::f_cat(&[z, &labels.f_to_kind(Kind::Float).ctx("labels")?], 1).ctx("mlp-generator input")?
            }
            (_, None) => return Err(Error::config("labels", "this generator is conditional and needs labels")),
        };
        let size = input.size();
        if size.len() != 2 || size[1] != self.latent_dim + self.label_dim {
            return Err(Error::Shape {
                what: "mlp-generator latents (+labels)".into(),
                expected: vec![-1, self.latent_dim + self.label_dim],
                actual: size,
            });
        }
        Ok(self.mlp.forward(&input))
    }

    fn var_store(&self) -> &VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }
}

difi_core::register_plugin!(Generator, "mlp-generator", MlpGeneratorParams, |params, ctx| {
    Ok(Box::new(MlpGenerator::from_context(params, ctx)?))
});
