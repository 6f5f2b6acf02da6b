//! `difi distill CONFIG --outdir DIR` and `difi distill --resume DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use difi_core::components::{build_dataset, build_trainer};
use difi_core::config::Config;
use difi_core::device::parse_device;
use difi_core::metrics::FeatureStats;
use difi_core::metrics::detector::dataset_features;
use difi_core::metrics::schedule::{Metric, MetricsRunner};
use difi_core::registry::Registry;
use difi_core::run_dir::RunDir;
use difi_core::trainer::Outcome;

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The RON config (not with --resume).
    #[arg(required_unless_present = "resume", conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// The new run directory (created; must be empty or absent).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    outdir: Option<PathBuf>,
    /// Continue the run in this directory from its latest snapshot.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    config_args: ConfigArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (run, config, registry) = match (&args.resume, &args.config, &args.outdir) {
        (Some(dir), _, _) => {
            let run = RunDir::open(dir)?;
            let (config, registry) = super::load_resolved(&run.config_path(), &args.config_args)?;
            if !args.config_args.overrides.is_empty() {
                tracing::warn!("overrides change the recorded config of {}", dir.display());
                run.write_config(&config.to_ron())?;
            }
            (run, config, registry)
        }
        (None, Some(path), Some(outdir)) => {
            let (config, registry) = super::load_resolved(path, &args.config_args)?;
            // Build once before creating the run directory, so a config that
            // cannot be built leaves nothing behind.
            build_trainer(&config, &registry).context("building the networks")?;
            let run = RunDir::create(outdir)?;
            run.write_config(&config.to_ron())?;
            (run, config, registry)
        }
        _ => bail!("give a config and --outdir, or --resume RUN_DIR"),
    };

    let mut trainer = build_trainer(&config, &registry).context("building the networks")?;
    if args.resume.is_some() {
        match run.latest_snapshot()? {
            Some(snapshot) => {
                trainer.load_snapshot(&snapshot)?;
                tracing::info!(
                    "resuming {} at kimg {:.3} (iteration {})",
                    snapshot.display(),
                    trainer.state().nimg as f64 / 1000.0,
                    trainer.state().iteration
                );
            }
            None => tracing::warn!("{} has no snapshot yet; starting from the beginning", run.root().display()),
        }
    }

    if !config.metrics.list.is_empty() {
        trainer.set_metrics(metrics_runner(&config, &registry, &run).context("preparing the metrics")?);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without a snapshot");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: writing a snapshot after this iteration (Ctrl-C again to exit at once)");
    })
    .context("installing the Ctrl-C handler")?;

    tracing::info!("run directory {}", run.root().display());
    match trainer.run(&run, &stop)? {
        Outcome::Finished => {
            let state = trainer.state();
            let snapshot = run.latest_snapshot()?.map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!(
                "finished: {:.3} kimg in {:.1} s; latest snapshot {snapshot}",
                state.nimg as f64 / 1000.0,
                state.elapsed_s
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Stopped => {
            eprintln!(
                "stopped at kimg {:.3}; continue with `difi distill --resume {}`",
                trainer.state().nimg as f64 / 1000.0,
                run.root().display()
            );
            Ok(ExitCode::from(130))
        }
    }
}

/// The configured metrics: the detector, the reference statistics (given, or
/// computed from the dataset once and kept in the run directory) and, for
/// precision/recall, the dataset's features.
fn metrics_runner(config: &Config, registry: &Registry, run: &RunDir) -> Result<MetricsRunner> {
    let metrics = &config.metrics;
    let device = parse_device(&config.device)?;
    let spec = match metrics.detector.as_str() {
        "inception" | "fmnist-classifier" => metrics.detector.clone(),
        path => config.path(Path::new(path)).display().to_string(),
    };
    let inception = metrics.inception_path.as_ref().map(|p| config.path(p));
    let detector = difi_zoo::detectors::open(&spec, inception.as_deref(), device)?;
    let dataset = build_dataset(config, registry)?;
    let needs_real = metrics.list.iter().any(|m| m.starts_with("pr"));
    let largest = metrics
        .list
        .iter()
        .filter_map(|m| match Metric::parse(m) {
            Ok(Metric::PrecisionRecall { num, .. }) => Some(num),
            _ => None,
        })
        .max();
    let reference = match &metrics.reference {
        Some(path) => FeatureStats::load(&config.path(path))?,
        None => {
            let cached = run.root().join("metrics-reference.npz");
            if cached.is_file() {
                FeatureStats::load(&cached)?
            } else {
                let dataset = dataset.as_ref().context("metrics need a dataset or metrics.reference")?;
                tracing::info!("computing reference statistics of the dataset with {}", detector.name());
                let features = dataset_features(dataset.as_ref(), detector.as_ref(), metrics.batch_size, None)?;
                let stats = FeatureStats::from_features(&features)?;
                stats.save(&cached)?;
                stats
            }
        }
    };
    let real_features = match (needs_real, &dataset) {
        (true, Some(dataset)) => {
            Some(dataset_features(dataset.as_ref(), detector.as_ref(), metrics.batch_size, largest)?)
        }
        _ => None,
    };
    Ok(MetricsRunner::new(&metrics.list, detector, reference, real_features, metrics.batch_size, config.seed, device)?)
}
