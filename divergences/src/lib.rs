//! difi-divergences: the generator losses of data-free distillation, each a
//! [`Divergence`](difi_core::Divergence) plugin.
//!
//! | name | divergence |
//! | --- | --- |
//! | `ikl` | the Integral KL of Diff-Instruct (Luo et al., NeurIPS 2023) |
//! | `sid` | Score identity Distillation (Zhou et al., ICML 2024) |
//! | `dmd` | Distribution Matching Distillation (Yin et al., CVPR 2024), as DMD2's code |
//! | `sim` | Score Implicit Matching (Luo et al., NeurIPS 2024), difi's reading of the paper |
//!
//! Every divergence evaluates the teacher and the fake score at a noisy
//! version of the generator's samples; [`noisy`] does that one way for all.
//! [`gaussian`] is a score model with a closed-form answer for their tests.

pub mod dmd;
pub mod gaussian;
pub mod ikl;
pub mod noisy;
pub mod sid;
pub mod sim;

/// Keeps this crate's registrations in a binary (see `difi_zoo::link`).
pub fn link() {
    std::hint::black_box(ikl::IklParams::default);
}

/// libtorch's generator is global and the unit tests of this crate run in
/// parallel threads; tests that draw from it or replay its draws take turns.
#[cfg(test)]
pub(crate) static TEST_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
