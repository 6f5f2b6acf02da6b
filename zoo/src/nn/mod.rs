//! Neural-network pieces shared by the zoo's network families: EDM's weight
//! initialisation, FIR resampling (EDM's U-Nets and StyleGAN2 both resample
//! through separable FIR filters), and registering tensors under the
//! reference implementations' names.

pub mod init;
pub mod resample;

use difi_core::error::{Result, TorchContext};
use tch::Tensor;
use tch::nn::Path;

pub use init::{Init, InitMode};

/// Registers `value` as the trainable parameter `name` under `path` (the
/// reference's `state_dict()` key `path.name`).
pub fn parameter(path: &Path, name: &str, value: Tensor) -> Result<Tensor> {
    path.f_var_copy(name, &value).ctx(name)
}

/// Registers `value` as the non-trainable buffer `name` under `path`.
pub fn buffer(path: &Path, name: &str, value: Tensor) -> Result<Tensor> {
    Ok(path.add(name, value.f_to_device(path.device()).ctx(name)?, false))
}
