//! A one-step generator made from a denoiser, as Diff-Instruct and its
//! successors initialise it from the teacher: `G(z) = D(σ_init · z; σ_init)`
//! with `z ~ N(0, I)` of the sample's shape.

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::{Generator, ScoreModel};

/// Parameters of a generator initialised from the teacher (`init_from: "teacher"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenoiserGeneratorParams {
    /// The noise level the denoiser is evaluated at (the reference's
    /// `init_sigma`, 1.0 in its runs).
    pub sigma_init: f64,
}

impl Default for DenoiserGeneratorParams {
    fn default() -> Self {
        DenoiserGeneratorParams { sigma_init: 1.0 }
    }
}

/// `G(z) = D(σ_init z; σ_init)` around a trainable denoiser.
pub struct DenoiserGenerator {
    model: Box<dyn ScoreModel>,
    sigma_init: f64,
}

impl DenoiserGenerator {
    /// Wraps `model`, which must have weights.
    pub fn new(model: Box<dyn ScoreModel>, params: &DenoiserGeneratorParams) -> Result<Self> {
        if !(params.sigma_init > 0.0 && params.sigma_init.is_finite()) {
            return Err(Error::config("sigma_init", format!("must be positive, got {}", params.sigma_init)));
        }
        if model.var_store().is_none() {
            return Err(Error::config("init_from", "the teacher has no weights to train as a generator"));
        }
        Ok(DenoiserGenerator { model, sigma_init: params.sigma_init })
    }
}

impl Generator for DenoiserGenerator {
    fn latent_shape(&self) -> Vec<i64> {
        self.model.sample_shape()
    }

    fn sample_shape(&self) -> Vec<i64> {
        self.model.sample_shape()
    }

    fn label_dim(&self) -> i64 {
        self.model.label_dim()
    }

    fn generate(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let n = z.size()[0];
        let sigma = Tensor::f_full([n], self.sigma_init, (Kind::Float, z.device())).ctx("generator sigma")?;
        self.model.denoise(&(z * self.sigma_init), &sigma, labels)
    }

    fn var_store(&self) -> &VarStore {
        self.model.var_store().expect("checked in new")
    }

    fn var_store_mut(&mut self) -> &mut VarStore {
        self.model.var_store_mut().expect("checked in new")
    }

    fn set_train(&mut self, train: bool) {
        self.model.set_train(train)
    }

    fn set_activation_checkpointing(&mut self, on: bool) -> bool {
        self.model.set_activation_checkpointing(on)
    }
}
