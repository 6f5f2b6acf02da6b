//! difi-core: what a plugin author needs, and nothing else.
//!
//! - [`traits`]: the four roles of a run (`ScoreModel`, `Generator`,
//!   `Divergence`, `Dataset`);
//! - [`registry`] and [`component`]: named factories with typed params, and
//!   the `(plugin: "name", params: (…))` form that configs use to name them;
//! - [`ron_tree`]: RON text as an untyped tree, `--set` overrides, printing;
//! - [`draws`], [`rng`], [`device`]: random labels and noise levels, seeded
//!   streams, device names;
//! - [`error`]: the one error type;
//! - [`abi`] and [`plugin_host`]: runtime plugin libraries.
//!
//! Its version is the runtime-plugin fingerprint, so it holds no training
//! loop, file format or metric: those live in difi-train, difi-formats and
//! difi-metrics.

pub mod abi;
pub mod component;
pub mod device;
pub mod draws;
pub mod error;
pub mod params;
pub mod plugin_file;
pub mod plugin_host;
pub mod registry;
pub mod rng;
pub mod role;
pub mod ron_tree;
pub mod shard;
pub mod traits;

pub use error::{Error, Result};
pub use traits::{Dataset, Divergence, Generator, ScoreModel};

#[doc(hidden)]
pub use inventory;
