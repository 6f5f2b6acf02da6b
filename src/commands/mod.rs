//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod convert;
pub mod dataset;
pub mod distill;
pub mod evaluate;
pub mod fid;
pub mod info;
pub mod plugins;
pub mod sample;
pub mod zoo;

use std::path::Path;

use anyhow::{Context, Result};
use difi_core::config::Config;
use difi_core::registry::Registry;

use crate::ConfigArgs;

/// Reads a config with overrides, loads its plugins and resolves it.
pub fn load_resolved(path: &Path, args: &ConfigArgs) -> Result<(Config, Registry)> {
    let (config, registry) = load_with_plugins(path, args)?;
    let resolved = config.resolve(&registry).with_context(|| format!("checking config {}", path.display()))?;
    Ok((resolved, registry))
}

/// Reads a config and resolves only its teacher (enough to sample it).
pub fn load_teacher(path: &Path, args: &ConfigArgs) -> Result<(Config, Registry)> {
    let (config, registry) = load_with_plugins(path, args)?;
    let resolved = config.resolve_teacher(&registry).with_context(|| format!("checking config {}", path.display()))?;
    Ok((resolved, registry))
}

fn load_with_plugins(path: &Path, args: &ConfigArgs) -> Result<(Config, Registry)> {
    let mut config =
        Config::load(path, &args.overrides).with_context(|| format!("reading config {}", path.display()))?;
    // Libraries given with --plugin become part of the config, so the run
    // directory's config can be resumed and sampled without repeating them.
    for plugin in &args.plugins {
        let absolute = std::path::absolute(plugin).with_context(|| format!("plugin path {}", plugin.display()))?;
        if !config.plugins.iter().any(|p| config.path(p) == absolute) {
            config.plugins.push(absolute);
        }
    }
    let registry = difi_core::components::registry_for(&config)?;
    Ok((config, registry))
}

/// A trained generator loaded from a run: its config, the generator with the
/// snapshot's weights (EMA unless `raw`), the device, and the weights file.
pub struct LoadedGenerator {
    pub config: Config,
    pub generator: Box<dyn difi_core::traits::Generator>,
    pub device: tch::Device,
    pub weights: std::path::PathBuf,
}

/// Loads the generator of `run` (a run directory) from `snapshot` (default:
/// the latest) on `device` (default: the run's).
pub fn load_generator(
    run: &Path,
    snapshot: Option<&Path>,
    raw: bool,
    device: Option<tch::Device>,
    args: &ConfigArgs,
) -> Result<LoadedGenerator> {
    use difi_core::run_dir::RunDir;
    use difi_core::trainer::{GENERATOR, GENERATOR_EMA};
    let run = RunDir::open(run)?;
    let snapshot = match snapshot {
        Some(path) => path.to_path_buf(),
        None => run.latest_snapshot()?.with_context(|| format!("{} has no snapshot yet", run.root().display()))?,
    };
    let (config, registry) = load_resolved(&run.config_path(), args)?;
    let device = match device {
        Some(device) => device,
        None => difi_core::device::parse_device(&config.device)?,
    };
    let teacher = difi_core::components::build_teacher(&config, &registry, device)?;
    let mut generator = difi_core::components::build_generator(&config, &registry, device, teacher.as_ref())?;
    let weights = snapshot.join(if raw { GENERATOR } else { GENERATOR_EMA });
    difi_core::checkpoint::load_into(generator.var_store_mut(), &weights)?;
    generator.set_train(false);
    Ok(LoadedGenerator { config, generator, device, weights })
}
