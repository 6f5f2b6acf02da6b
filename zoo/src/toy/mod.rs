//! Toy networks with exact answers or tiny sizes: a Gaussian-mixture teacher
//! whose denoiser is closed-form, and MLPs for vector data.

pub mod gmm;
pub mod gmm_report;
pub mod mlp;
pub mod mlp_denoiser;
pub mod mlp_generator;
