//! An algorithm: its section of the config, and how it builds its [`Step`].

use std::fmt::Debug;
use std::path::Path;
use std::rc::Rc;

use difi_core::error::Result;
use difi_core::registry::{Registry, ResolveContext};
use difi_core::traits::Dataset;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tch::Device;

use crate::optim::AdamConfig;
use crate::step::Step;

/// An algorithm's own config section (every top-level key of a config that
/// is not a run setting) and the step it builds.
pub trait Algorithm: Clone + Debug + Serialize + DeserializeOwned + 'static {
    /// Name in messages (`diff-instruct`).
    const NAME: &'static str;

    /// The parts it trains: each gets `optim.<name>`.
    fn trained_parts(&self) -> Vec<&'static str>;

    /// Checks its components against the registry and fills in their defaults.
    fn resolve(&mut self, registry: &Registry, ctx: &ResolveContext<'_>) -> Result<()>;

    /// Checks its hyper-parameters; errors name the key.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The optimiser settings part `part` trains with, from its configured
    /// `optim.<part>` (an algorithm that updates a part in more than one
    /// phase may rescale them; StyleGAN2's lazy regularisation does). The
    /// default keeps them.
    fn optimizer_settings(&self, _part: &str, config: AdamConfig) -> AdamConfig {
        config
    }

    /// Builds its networks and step on `env.device`.
    fn build(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Step>>;
}

/// What building a step may use.
pub struct BuildEnv<'a> {
    /// The registry the config was resolved with.
    pub registry: &'a Registry,
    /// Where the networks live.
    pub device: Device,
    /// The run's seed (weights are initialised from it).
    pub seed: u64,
    /// Directory that relative paths start from.
    pub base_dir: &'a Path,
    /// The config's dataset, if it names one.
    pub dataset: Option<Rc<dyn Dataset>>,
    /// Samples per iteration.
    pub batch_size: i64,
}
