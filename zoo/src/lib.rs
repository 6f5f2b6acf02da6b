//! difi-zoo: the networks of difi, each registered with difi-core's registry.
//!
//! | name | role | what |
//! | --- | --- | --- |
//! | `edm` | score model | EDM's networks (DDPM++, NCSN++, ADM; EDM/VP/VE preconditioning) |
//! | `gmm` | score model | exact Gaussian-mixture teacher in ℝᵈ |
//! | `mlp-generator` | generator | MLP one-step generator for vector data |
//! | `mlp-denoiser` | score model | EDM-preconditioned MLP denoiser for vector data |
//! | `stylegan2` | generator | StyleGAN2-ADA's generator (orig, skip, resnet), from its network pickles |
//!
//! [`nn`] holds the layers the families share, [`precond`] EDM's
//! preconditioning (any backbone), [`heun_sampler`] EDM's sampler for any
//! score model.

pub mod edm;
pub mod heun_sampler;
pub mod nn;
pub mod precond;
pub mod stylegan2;
pub mod toy;

/// Keeps this crate's registrations in a binary that uses nothing else from
/// it: the linker drops unreferenced crates, and their `inventory` entries
/// with them. Binaries call it once.
pub fn link() {
    std::hint::black_box(toy::gmm::GmmParams::default);
}
