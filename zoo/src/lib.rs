//! difi-zoo: the networks of difi, each registered with difi-core's registry.
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | `edm` | score model | EDM's networks (DDPM++, NCSN++, ADM; EDM/VP/VE preconditioning) |
//! | `gmm` | score model | exact Gaussian-mixture teacher in ℝᵈ |
//! | `mlp-generator` | generator | MLP one-step generator for vector data |
//! | `mlp-denoiser` | score model | EDM-preconditioned MLP denoiser for vector data |

pub mod detectors;
pub mod edm;
pub mod fmnist_classifier;
pub mod gmm;
pub mod gmm_report;
pub mod mlp;
pub mod mlp_denoiser;
pub mod mlp_generator;
pub mod precond;

/// Keeps this crate's registrations in a binary that uses nothing else from
/// it: the linker drops unreferenced crates, and their `inventory` entries
/// with them. Binaries call it once.
pub fn link() {
    std::hint::black_box(gmm::GmmParams::default);
}
