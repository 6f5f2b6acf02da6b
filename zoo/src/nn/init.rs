//! EDM's weight initialisation (`training/networks.py` `weight_init`):
//! Xavier or Kaiming, uniform or normal, from fan-in and fan-out.

use difi_core::error::{Result, TorchContext};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// A `weight_init` mode with the scales of weights and biases.
#[derive(Clone, Copy, Debug)]
pub struct Init {
    pub mode: InitMode,
    pub weight: f64,
    pub bias: f64,
}

/// The distributions of `weight_init`.
#[derive(Clone, Copy, Debug)]
pub enum InitMode {
    XavierUniform,
    XavierNormal,
    KaimingUniform,
    KaimingNormal,
}

impl Init {
    /// `init_mode` with `init_weight = 1`, `init_bias = 0` (EDM's default).
    pub const fn mode(mode: InitMode) -> Self {
        Init { mode, weight: 1.0, bias: 0.0 }
    }

    /// A float32 tensor of `shape` on the device of `path`, drawn for the
    /// given fans and multiplied by `scale`.
    pub fn draw(&self, shape: &[i64], fan_in: i64, fan_out: i64, scale: f64, path: &Path) -> Result<Tensor> {
        let options = (Kind::Float, path.device());
        let (fan_in, fan_out) = (fan_in as f64, fan_out as f64);
        let uniform =
            |bound: f64| -> Result<Tensor> { Ok((Tensor::f_rand(shape, options).ctx("init")? * 2.0 - 1.0) * bound) };
        let normal = |std: f64| -> Result<Tensor> { Ok(Tensor::f_randn(shape, options).ctx("init")? * std) };
        let t = match self.mode {
            InitMode::XavierUniform => uniform((6.0 / (fan_in + fan_out)).sqrt())?,
            InitMode::XavierNormal => normal((2.0 / (fan_in + fan_out)).sqrt())?,
            InitMode::KaimingUniform => uniform((3.0 / fan_in).sqrt())?,
            InitMode::KaimingNormal => normal((1.0 / fan_in).sqrt())?,
        };
        Ok(t * scale)
    }
}
