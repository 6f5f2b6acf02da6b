//! One module per subcommand. Commands parse arguments, call the libraries
//! and print; the training loop, resuming and Ctrl-C live in difi-train.

pub mod bench;
pub mod check;
pub mod compare;
pub mod convert;
pub mod dataset;
pub mod distill;
pub mod evaluate;
pub mod fid;
pub mod info;
pub mod launch;
pub mod plugins;
pub mod report;
pub mod sample;
pub mod showcase;
pub mod train_gan;
pub mod train_teacher;
pub mod training;
pub mod zoo;

use std::path::Path;

use anyhow::{Context, Result};
use difi_core::registry::{Registry, ResolveContext};
use difi_train::{ConfigSource, DiffInstruct, RunConfig};

use crate::ConfigArgs;

impl ConfigArgs {
    /// The `--set` overrides and `--plugin` libraries as a config source.
    pub fn source(&self) -> ConfigSource {
        ConfigSource { overrides: self.overrides.clone(), plugins: self.plugins.clone() }
    }
}

/// Reads a distillation config and resolves only its teacher (enough to sample it).
pub fn load_teacher(path: &Path, args: &ConfigArgs) -> Result<(RunConfig<DiffInstruct>, Registry)> {
    let context = || format!("checking config {}", path.display());
    let (mut config, registry) = args.source().read::<DiffInstruct>(path).with_context(context)?;
    let base_dir = config.base_dir().to_path_buf();
    config.algorithm.resolve_teacher(&registry, &ResolveContext { base_dir: &base_dir }).with_context(context)?;
    Ok((config, registry))
}
