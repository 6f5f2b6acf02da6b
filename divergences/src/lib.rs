//! difi-divergences: the generator losses of data-free distillation, each a
//! [`Divergence`](difi_core::Divergence) plugin.
//!
//! | name | divergence |
//! | --- | --- |
//! | `ikl` | the Integral KL of Diff-Instruct (Luo et al., NeurIPS 2023) |
//!
//! Every divergence evaluates the teacher and the fake score at a noisy
//! version of the generator's samples; [`noisy`] does that one way for all.
//! [`gaussian`] is a score model with a closed-form answer for their tests.

pub mod gaussian;
pub mod ikl;
pub mod noisy;

/// Keeps this crate's registrations in a binary (see `difi_zoo::link`).
pub fn link() {
    std::hint::black_box(ikl::IklParams::default);
}
