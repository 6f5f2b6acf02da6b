//! A training session as a command runs it: a new run directory or a
//! resumed one, the step built from the config, metrics, Ctrl-C, the loop.
//! Commands stay thin: they parse arguments and print the outcome.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use difi_core::error::{Error, Result};
use difi_core::registry::Registry;
use difi_core::traits::Dataset;
use tch::Device;

use crate::algorithm::Algorithm;
use crate::config::RunConfig;
use crate::distributed::{Distributed, Launch, timeout_from_env};
use crate::run_dir::{RunDir, RunLock};
use crate::runner::{Outcome, Runner};
use crate::snapshot::TrainState;
use crate::snapshot_metrics::SnapshotMetrics;
use crate::stop::stop_flag;

/// Where a config comes from: a file, `--set` overrides and `--plugin` libraries.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub overrides: Vec<String>,
    pub plugins: Vec<PathBuf>,
}

impl ConfigSource {
    /// Reads the config at `path` and adds the plugin libraries (recorded in
    /// the config, so the run can be resumed and sampled without repeating
    /// them); returns it unresolved with a registry holding those libraries.
    pub fn read<A: Algorithm>(&self, path: &Path) -> Result<(RunConfig<A>, Registry)> {
        let mut config = RunConfig::<A>::load(path, &self.overrides)?;
        for plugin in &self.plugins {
            let absolute = std::path::absolute(plugin).map_err(|e| Error::io(plugin, e))?;
            if !config.run.plugins.iter().any(|p| config.path(p) == absolute) {
                config.run.plugins.push(absolute);
            }
        }
        let registry = config.registry()?;
        Ok((config, registry))
    }

    /// [`read`](Self::read), then resolves everything.
    pub fn load<A: Algorithm>(&self, path: &Path) -> Result<(RunConfig<A>, Registry)> {
        let (config, registry) = self.read::<A>(path)?;
        let resolved = config.resolve(&registry)?;
        Ok((resolved, registry))
    }
}

/// A runner ready to train, with its run directory and config.
pub struct Session<A> {
    pub run: RunDir,
    pub config: RunConfig<A>,
    runner: Runner,
    /// Held by the process that writes the run (rank 0, or the only one).
    _lock: Option<RunLock>,
    /// What to remove if the run fails before its first snapshot.
    created: Option<Created>,
}

/// What [`Session::create`] made.
#[derive(Clone, Copy)]
enum Created {
    /// The directory was absent.
    Directory,
    /// The directory existed, empty.
    Contents,
}

/// How a session ended.
pub struct Finished {
    pub outcome: Outcome,
    pub state: TrainState,
    /// The newest snapshot.
    pub snapshot: Option<PathBuf>,
}

/// Builds the runner of a resolved config.
pub fn build_runner<A: Algorithm>(config: &RunConfig<A>, registry: &Registry) -> Result<Runner> {
    build_runner_with(config, registry, config.dataset(registry)?, None)
}

fn build_runner_with<A: Algorithm>(
    config: &RunConfig<A>,
    registry: &Registry,
    dataset: Option<Rc<dyn Dataset>>,
    launch: Option<&Launch>,
) -> Result<Runner> {
    let device = training_device(config, launch)?;
    let step = config.algorithm.build(&config.build_env(registry, device, dataset))?;
    let mut settings = config.run.clone();
    for (part, adam) in settings.optim.iter_mut() {
        *adam = config.algorithm.optimizer_settings(part, adam.clone());
    }
    Runner::new(step, &settings, device)
}

/// The config's device; for a rank of a data-parallel run on CUDA, the GPU
/// of its local rank (as torchrun arranges one process per GPU).
fn training_device<A>(config: &RunConfig<A>, launch: Option<&Launch>) -> Result<Device> {
    let device = config.run.resolve_device()?;
    match (device, launch) {
        (Device::Cuda(_), Some(launch)) => {
            let index = launch.local_rank as usize;
            let available = tch::Cuda::device_count();
            if index as i64 >= available {
                return Err(Error::config(
                    "device",
                    format!("LOCAL_RANK {index} needs CUDA device {index}, but {available} are available"),
                ));
            }
            Ok(Device::Cuda(index))
        }
        _ => Ok(device),
    }
}

/// On a rank other than 0: its share of the snapshot metrics, if any.
fn add_rank_metrics<A: Algorithm>(config: &RunConfig<A>, runner: &mut Runner) -> Result<()> {
    if config.run.metrics.list.is_empty() {
        return Ok(());
    }
    let metrics =
        SnapshotMetrics::for_other_rank(&config.run.metrics, config.base_dir(), config.run.seed, runner.device())?;
    runner.set_metrics(metrics)
}

/// Joins the group of `launch` and makes `runner` one of its ranks.
fn join_group(runner: &mut Runner, launch: Launch) -> Result<()> {
    let group = Distributed::join(launch, runner.device(), timeout_from_env()?)?;
    runner.set_distributed(Rc::new(group))
}

impl<A: Algorithm> Session<A> {
    /// A new run of `config` in `outdir`, which must be empty or absent. The
    /// networks are built before the directory is created, so a config that
    /// cannot be built leaves nothing behind.
    pub fn create(config: RunConfig<A>, registry: &Registry, outdir: &Path) -> Result<Self> {
        let launch = Launch::from_env()?;
        let dataset = config.dataset(registry)?;
        let mut runner = build_runner_with(&config, registry, dataset.clone(), launch.as_ref())?;
        if let Some(launch) = launch {
            join_group(&mut runner, launch)?;
            if !runner.is_writer() {
                runner.sync_from_rank0()?;
                add_rank_metrics(&config, &mut runner)?;
                let run = RunDir::of_rank0(outdir);
                return Ok(Session { run, config, runner, _lock: None, created: None });
            }
        }
        let created = if outdir.exists() { Created::Contents } else { Created::Directory };
        let run = RunDir::create(outdir)?;
        let lock = run.lock()?;
        let session = run
            .write_config(&config.to_ron())
            .and_then(|()| runner.sync_from_rank0())
            .and_then(|()| Self::prepared(run.clone(), config, dataset, runner, lock, Some(created)));
        if session.is_err()
            && let Err(cleanup) = run.remove_unfinished(matches!(created, Created::Directory))
        {
            tracing::warn!("{cleanup}");
        }
        session
    }

    /// The run in `dir`, from its latest snapshot (from the start if it has
    /// none). Overrides change the recorded config, but only once the run
    /// has been built and its snapshot loaded: a resume that fails changes
    /// nothing in the run.
    pub fn resume(dir: &Path, source: &ConfigSource) -> Result<Self> {
        let launch = Launch::from_env()?;
        if launch.as_ref().is_some_and(|l| l.rank != 0) {
            return Self::resume_other_rank(dir, source, launch);
        }
        let run = RunDir::open(dir)?;
        let lock = run.lock()?;
        let (config, registry) = source.load::<A>(&run.config_path())?;
        let dataset = config.dataset(&registry)?;
        let mut runner = build_runner_with(&config, &registry, dataset.clone(), launch.as_ref())?;
        if let Some(launch) = launch {
            join_group(&mut runner, launch)?;
        }
        let resumed_from = match run.latest_snapshot()? {
            Some(snapshot) => {
                runner.load_snapshot(&snapshot)?;
                let state = runner.state();
                tracing::info!(
                    "resuming {} at kimg {:.3} (iteration {})",
                    snapshot.display(),
                    state.nimg as f64 / 1000.0,
                    state.iteration
                );
                Some((state.iteration, state.tick))
            }
            None => {
                tracing::warn!("{} has no snapshot yet; starting from the beginning", dir.display());
                None
            }
        };
        let was = runner.state().world_size.max(1);
        let now = runner.world_size();
        if resumed_from.is_some() && was != now {
            tracing::warn!(
                "the snapshot was written by {was} process(es), this run has {now}: the global batch is unchanged, \
                 so training continues the same trajectory (dropout masks aside)"
            );
        }
        runner.sync_from_rank0()?;
        let session = Self::prepared(run, config, dataset, runner, lock, None)?;
        session.run.discard_incomplete(resumed_from)?;
        if !source.overrides.is_empty() {
            tracing::warn!("overrides change the recorded config of {}", dir.display());
            session.run.write_config(&session.config.to_ron())?;
        }
        Ok(session)
    }

    /// A rank other than 0 resuming: it reads the recorded config (the run
    /// directory must be visible to every node) and receives everything
    /// else from rank 0.
    fn resume_other_rank(dir: &Path, source: &ConfigSource, launch: Option<Launch>) -> Result<Self> {
        let run = RunDir::of_rank0(dir);
        let (config, registry) = source.load::<A>(&run.config_path())?;
        let dataset = config.dataset(&registry)?;
        let mut runner = build_runner_with(&config, &registry, dataset, launch.as_ref())?;
        if let Some(launch) = launch {
            join_group(&mut runner, launch)?;
        }
        runner.sync_from_rank0()?;
        add_rank_metrics(&config, &mut runner)?;
        Ok(Session { run, config, runner, _lock: None, created: None })
    }

    fn prepared(
        run: RunDir,
        config: RunConfig<A>,
        dataset: Option<Rc<dyn Dataset>>,
        mut runner: Runner,
        lock: RunLock,
        created: Option<Created>,
    ) -> Result<Self> {
        if !config.run.metrics.list.is_empty() {
            let device = runner.device();
            let metrics = SnapshotMetrics::new(
                &config.run.metrics,
                config.base_dir(),
                dataset.as_deref(),
                &run,
                config.run.seed,
                device,
            )?;
            runner.set_metrics(metrics)?;
        }
        Ok(Session { run, config, runner, _lock: Some(lock), created })
    }

    /// Trains until the schedule ends or Ctrl-C. A new run that fails before
    /// its first snapshot is removed, so the same command can be run again.
    pub fn run(mut self) -> Result<Finished> {
        let stop = stop_flag()?;
        tracing::info!("run directory {}", self.run.root().display());
        let outcome = match self.runner.run(&self.run, &stop) {
            Ok(outcome) => outcome,
            Err(err) => {
                if let Some(created) = self.created
                    && matches!(self.run.latest_snapshot(), Ok(None))
                {
                    tracing::warn!("removing {}: the run failed before its first snapshot", self.run.root().display());
                    if let Err(cleanup) = self.run.remove_unfinished(matches!(created, Created::Directory)) {
                        tracing::warn!("{cleanup}");
                    }
                }
                return Err(err);
            }
        };
        // Ranks other than 0 wrote nothing to point at.
        let snapshot = if self.runner.is_writer() { self.run.latest_snapshot()? } else { None };
        Ok(Finished { outcome, state: self.runner.state().clone(), snapshot })
    }
}
