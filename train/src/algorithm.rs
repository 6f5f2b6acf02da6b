//! An algorithm: its section of the config, and how it builds its [`Step`].

use std::fmt::Debug;
use std::path::Path;
use std::rc::Rc;

use difi_core::error::{Error, Result};
use difi_core::registry::{Registry, ResolveContext};
use difi_core::traits::{Dataset, Generator, ScoreModel};
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
    /// The roles whose networks recompute activations in backward
    /// (`checkpoint_activations`); apply with [`BuildEnv::checkpoint_activations`].
    pub checkpoint_activations: &'a [String],
}

/// A network of a step, for [`BuildEnv::checkpoint_activations`].
pub enum NetworkMut<'n> {
    Score(&'n mut dyn ScoreModel),
    Generator(&'n mut dyn Generator),
}

impl BuildEnv<'_> {
    /// Switches activation checkpointing on in every network of `networks`
    /// (by role name) that the config's `checkpoint_activations` lists.
    /// Errors name a listed role that is not among them, or a network that
    /// cannot checkpoint.
    pub fn checkpoint_activations(&self, algorithm: &str, networks: Vec<(&str, NetworkMut<'_>)>) -> Result<()> {
        let roles: Vec<&str> = networks.iter().map(|(role, _)| *role).collect();
        if let Some(unknown) = self.checkpoint_activations.iter().find(|r| !roles.contains(&r.as_str())) {
            let known = if roles.is_empty() {
                "it checkpoints none".to_string()
            } else {
                format!("its networks are `{}`", roles.join("`, `"))
            };
            return Err(Error::config(
                "checkpoint_activations",
                format!("{algorithm} has no network `{unknown}`; {known}"),
            ));
        }
        for (role, network) in networks {
            if !self.checkpoint_activations.iter().any(|r| r == role) {
                continue;
            }
            let can = match network {
                NetworkMut::Score(model) => model.set_activation_checkpointing(true),
                NetworkMut::Generator(generator) => generator.set_activation_checkpointing(true),
            };
            if !can {
                return Err(Error::config(
                    "checkpoint_activations",
                    format!("the {role} cannot recompute its activations (EDM's SongUNet and DhariwalUNet can)"),
                ));
            }
        }
        Ok(())
    }
}
