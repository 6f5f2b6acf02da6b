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
