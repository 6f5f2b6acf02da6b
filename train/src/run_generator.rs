//! What a run trained, loaded from a snapshot for sampling and measuring: a
//! Diff-Instruct run's one-step generator, a GAN run's generator, or a
//! teacher run's network sampled with EDM's Heun sampler.

use std::path::{Path, PathBuf};

use difi_core::error::{Error, Result};
use difi_core::traits::Generator;
use difi_formats::weights;
use difi_zoo::heun_sampler::{HeunSampler, SampledGenerator};
use tch::Device;

use crate::algorithm::Algorithm;
use crate::algorithms::diff_instruct::DiffInstruct;
use crate::algorithms::edm_teacher::EdmTeacherTraining;
use crate::algorithms::stylegan2_gan::StyleGan2Gan;
use crate::config::{RunConfig, algorithm_of};
use crate::networks::NetworkBuilder;
use crate::run_dir::RunDir;
use crate::session::ConfigSource;
use crate::snapshot::weights_file;

/// The config of a run, by algorithm.
pub enum RunKind {
    DiffInstruct(Box<RunConfig<DiffInstruct>>),
    EdmTeacher(Box<RunConfig<EdmTeacherTraining>>),
    StyleGan2Gan(Box<RunConfig<StyleGan2Gan>>),
}

/// A trained generator (in eval mode), the run's config, its device and the
/// weights file it was loaded from.
pub struct RunGenerator {
    pub kind: RunKind,
    pub generator: Box<dyn Generator>,
    pub device: Device,
    pub weights: PathBuf,
    /// Network evaluations per sample (1 for a one-step generator).
    pub nfe: usize,
}

impl RunGenerator {
    /// Loads what the run in `run_dir` trained from `snapshot` (default: the
    /// latest): EMA weights unless `raw`, on `device` (default: the run's).
    /// A teacher run is sampled with `sampler`, or its config's sampler.
    pub fn load(
        run_dir: &Path,
        snapshot: Option<&Path>,
        raw: bool,
        device: Option<Device>,
        sampler: Option<HeunSampler>,
        source: &ConfigSource,
    ) -> Result<Self> {
        let run = RunDir::open(run_dir)?;
        let snapshot = match snapshot {
            Some(path) => path.to_path_buf(),
            None => run.latest_snapshot()?.ok_or_else(|| Error::checkpoint(run_dir, "has no snapshot yet"))?,
        };
        let algorithm = algorithm_of(&run.config_path())?;
        match algorithm.as_str() {
            DiffInstruct::NAME => {
                let (config, registry) = source.load::<DiffInstruct>(&run.config_path())?;
                let device = device.map_or_else(|| config.run.resolve_device(), Ok)?;
                let mut generator = config.algorithm.build_generator(&config.build_env(&registry, device, None))?;
                let weights = snapshot.join(weights_file(if raw { "generator" } else { "generator_ema" }));
                weights::load_into(generator.var_store_mut(), &weights)?;
                generator.set_train(false);
                Ok(RunGenerator { kind: RunKind::DiffInstruct(Box::new(config)), generator, device, weights, nfe: 1 })
            }
            EdmTeacherTraining::NAME => {
                let (config, registry) = source.load::<EdmTeacherTraining>(&run.config_path())?;
                let device = device.map_or_else(|| config.run.resolve_device(), Ok)?;
                let builder =
                    NetworkBuilder { registry: &registry, device, seed: config.run.seed, base_dir: config.base_dir() };
                let mut network = builder.initialised_score_model(&config.algorithm.network, "network", 0)?;
                let weights = snapshot.join(weights_file(if raw { "network" } else { "network_ema" }));
                let vars = network.var_store_mut().ok_or_else(|| Error::config("network", "has no weights"))?;
                weights::load_into(vars, &weights)?;
                network.set_train(false);
                let sampler = sampler.unwrap_or_else(|| config.algorithm.sampler.clone());
                let nfe = sampler.nfe();
                let generator = Box::new(SampledGenerator::new(network, sampler)?);
                Ok(RunGenerator { kind: RunKind::EdmTeacher(Box::new(config)), generator, device, weights, nfe })
            }
            StyleGan2Gan::NAME => {
                let (config, _) = source.load::<StyleGan2Gan>(&run.config_path())?;
                let device = device.map_or_else(|| config.run.resolve_device(), Ok)?;
                let mut generator = Box::new(config.algorithm.build_generator(device, config.run.seed)?);
                let weights = snapshot.join(weights_file(if raw { "generator" } else { "generator_ema" }));
                weights::load_into(generator.var_store_mut(), &weights)?;
                Ok(RunGenerator { kind: RunKind::StyleGan2Gan(Box::new(config)), generator, device, weights, nfe: 1 })
            }
            other => Err(Error::config("algorithm", format!("`{other}` runs have nothing to sample"))),
        }
    }
}
