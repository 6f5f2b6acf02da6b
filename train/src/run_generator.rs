//! The generator of a finished (or running) Diff-Instruct run, loaded from a
//! snapshot for sampling and evaluation.

use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_core::traits::Generator;
use difi_formats::weights;
use tch::Device;

use crate::algorithms::diff_instruct::DiffInstruct;
use crate::config::RunConfig;
use crate::run_dir::RunDir;
use crate::session::ConfigSource;
use crate::snapshot::weights_file;

/// A trained generator: the run's config, the generator with a snapshot's
/// weights (in eval mode), its device, and the weights file.
pub struct RunGenerator {
    pub config: RunConfig<DiffInstruct>,
    pub generator: Box<dyn Generator>,
    pub device: Device,
    pub weights: PathBuf,
}

impl RunGenerator {
    /// Loads the generator of the run in `run_dir` from `snapshot` (default:
    /// the latest), its EMA weights unless `raw`, on `device` (default: the
    /// run's).
    pub fn load(
        run_dir: &Path,
        snapshot: Option<&Path>,
        raw: bool,
        device: Option<Device>,
        source: &ConfigSource,
    ) -> Result<Self> {
        let run = RunDir::open(run_dir)?;
        let snapshot = match snapshot {
            Some(path) => path.to_path_buf(),
            None => run.latest_snapshot()?.ok_or_else(|| Error::checkpoint(run_dir, "has no snapshot yet"))?,
        };
        let (config, registry) = source.load::<DiffInstruct>(&run.config_path())?;
        let device = match device {
            Some(device) => device,
            None => config.run.resolve_device()?,
        };
        let mut generator = config.algorithm.build_generator(&config.build_env(&registry, device, None))?;
        let weights = snapshot.join(weights_file(if raw { "generator" } else { "generator_ema" }));
        weights::load_into(generator.var_store_mut(), &weights)?;
        generator.set_train(false);
        Ok(RunGenerator { config, generator, device, weights })
    }
}
