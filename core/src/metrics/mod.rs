//! Metrics of generated samples: FID (and proxy FIDs in other feature
//! spaces), precision/recall, and the energy distance for vector data.

pub mod detector;
pub mod energy;
pub mod fid;
pub mod precision_recall;
pub mod schedule;

pub use energy::{energy_distance, mean_distance};
pub use fid::{FeatureStats, frechet_distance};
