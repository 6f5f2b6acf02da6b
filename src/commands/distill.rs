//! `difi distill CONFIG --outdir DIR` and `difi distill --resume DIR`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use difi_core::components::build_trainer;
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
