//! difi-metrics: how good a generator is.
//!
//! | module | what |
//! | --- | --- |
//! | [`fid`] | feature statistics and the Fréchet distance, as EDM's `fid.py` |
//! | [`precision_recall`] | improved precision and recall (k-NN manifolds) |
//! | [`energy`] | energy distance between vector sample sets |
//! | [`detector`] | the feature-detector trait, TorchScript detectors, features of datasets and batches |
//! | [`detectors`] | detectors by name: a typed spec and the registry of built-in ones |
//! | [`fmnist_classifier`] | the built-in Fashion-MNIST proxy detector |
//! | [`metric`] | metric names (`fid50k_full`, `pr50k3_full`) as types |

pub mod detector;
pub mod detectors;
pub mod energy;
pub mod fid;
pub mod fmnist_classifier;
pub mod metric;
pub mod precision_recall;

pub use energy::{energy_distance, mean_distance};
pub use fid::{FeatureStats, frechet_distance};
pub use metric::Metric;
