//! difi-core: the traits, registry, config, trainer and file formats of difi,
//! a framework that distills pre-trained diffusion models into one-step
//! generators without training data (Diff-Instruct).
//!
//! The method in one function: [`Trainer::iteration`](trainer::Trainer::iteration).

pub mod abi;
pub mod checkpoint;
pub mod components;
pub mod config;
pub mod denoiser_generator;
pub mod denoising_loss;
pub mod device;
pub mod divergence;
pub mod error;
pub mod image;
pub mod metrics;
pub mod optim;
pub mod pickle;
pub mod plugin_host;
pub mod registry;
pub mod run_dir;
pub mod sampler;
pub mod sampling;
pub mod torch_legacy;
pub mod trainer;
pub mod traits;

pub use error::{Error, Result};
pub use traits::{Dataset, Divergence, Generator, ScoreModel};

#[doc(hidden)]
pub use inventory;
