//! Metrics of generated samples.

pub mod energy;

pub use energy::{energy_distance, mean_distance};
